//! The inventory RPCs' requests as typed commands: StreamInventory and ReportInventory carry
//! events, SyncInventory a snapshot's header and its levels. A bad event or level is not an
//! error of the call: it is answered by its own rejection (a REJECTED ack, a `SyncRejection`),
//! so parsing one yields the typed event or the violations that reject it.

use chrono::{DateTime, Utc};
use restock_store::inventory::{Level, Order};

use super::eligibility::MAX_UNITS;
use crate::error::ApiError;
use crate::grpc::validate::Violations;
use crate::proto::v1 as pb;

/// Most events in one ReportInventory call.
pub const MAX_BATCH: usize = 1_000;
/// Most levels in one message of a SyncInventory stream, and in the whole sync.
pub const MAX_SYNC_CHUNK: usize = 1_000;
pub const MAX_SYNC_LEVELS: u64 = 1_000_000;

/// Why an event is rejected: its id as sent (possibly empty or bad) and the faults found.
#[derive(Debug)]
pub struct Rejection {
    pub event_id: String,
    pub field_violations: Vec<pb::FieldViolation>,
}

/// A valid inventory event: the use case's command, built from the request here.
pub use crate::app::inventory::InventoryEvent;

impl InventoryEvent {
    /// One event of `tenant_id` (an empty tenant is the event's fault); field paths start with
    /// `prefix`, and `now` bounds an observe time.
    pub fn parse(
        tenant_id: &str,
        event: Option<&pb::InventoryEvent>,
        prefix: &str,
        now: DateTime<Utc>,
    ) -> Result<Self, Rejection> {
        let Some(event) = event else {
            return Err(Rejection {
                event_id: String::new(),
                field_violations: vec![pb::FieldViolation {
                    field: prefix.trim_end_matches('.').into(),
                    description: "is required".into(),
                }],
            });
        };
        let mut v = Violations::default();
        let event_id = v.id(&format!("{prefix}event_id"), &event.event_id, true);
        let order = event_order(&mut v, prefix, event.order.as_ref(), now);
        let level = level(
            &mut v,
            prefix,
            &event.variant_id,
            &event.location_id,
            event.available_to_sell,
            event.on_order,
            order,
            &event.product_id,
            event.variant.as_ref(),
        );
        if tenant_id.is_empty() {
            v.add("tenant_id", "is required");
        }
        match (event_id, level, v.is_empty()) {
            (Some(event_id), Some(level), true) => Ok(InventoryEvent { event_id, level }),
            _ => Err(Rejection {
                event_id: event.event_id.clone(),
                field_violations: v.into_field_violations(),
            }),
        }
    }

    /// The event of one StreamInventory message.
    pub fn streamed(
        msg: &pb::StreamInventoryRequest,
        now: DateTime<Utc>,
    ) -> Result<Self, Rejection> {
        Self::parse(&msg.tenant_id, msg.event.as_ref(), "event.", now)
    }
}

/// A valid ReportInventory: a tenant and 1 to [`MAX_BATCH`] events, each parsed (a bad one is
/// answered by its REJECTED ack, not by failing the call).
#[derive(Debug)]
pub struct ReportInventory {
    pub tenant_id: String,
    pub events: Vec<Result<InventoryEvent, Rejection>>,
}

impl ReportInventory {
    pub fn parse(req: pb::ReportInventoryRequest, now: DateTime<Utc>) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        if req.events.is_empty() {
            v.add("events", "at least one event is required");
        } else if req.events.len() > MAX_BATCH {
            v.add("events", format!("at most {MAX_BATCH} events per call"));
        }
        let tenant_id = v.into_result(tenant_id)?;
        let events = req
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| InventoryEvent::parse(&tenant_id, Some(e), &format!("events[{i}]."), now))
            .collect();
        Ok(ReportInventory { tenant_id, events })
    }
}

/// The header of a SyncInventory stream, read from its first message.
#[derive(Debug)]
pub struct SyncHeader {
    pub tenant_id: String,
    /// Not in the future (beyond clock skew).
    pub snapshot_at: DateTime<Utc>,
    pub zero_missing: bool,
    /// Empty: every location.
    pub location_ids: Vec<String>,
}

impl SyncHeader {
    pub fn parse(first: &pb::SyncInventoryRequest, now: DateTime<Utc>) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &first.tenant_id, true);
        let snapshot_at = v.past_time("snapshot_time", first.snapshot_time.as_ref(), now, true);
        for (i, l) in first.location_ids.iter().enumerate() {
            v.id(&format!("location_ids[{i}]"), l, true);
        }
        let parts = tenant_id
            .zip(snapshot_at)
            .map(|(tenant_id, snapshot_at)| SyncHeader {
                tenant_id,
                snapshot_at,
                zero_missing: first.zero_missing,
                location_ids: first.location_ids.clone(),
            });
        v.into_result(parts)
    }

    /// Checks a message of the stream (the first one too): the same tenant, at most
    /// [`MAX_SYNC_CHUNK`] levels. A bad message fails the whole sync.
    pub fn check_chunk(&self, msg: &pb::SyncInventoryRequest) -> Result<(), ApiError> {
        if msg.tenant_id != self.tenant_id {
            return Err(ApiError::field(
                "tenant_id",
                "must be the same on every message of a sync",
            ));
        }
        if msg.levels.len() > MAX_SYNC_CHUNK {
            return Err(ApiError::field(
                "levels",
                format!("at most {MAX_SYNC_CHUNK} levels per message"),
            ));
        }
        Ok(())
    }

    /// One level of the snapshot, or the violations that reject it (field paths relative to
    /// the level). A level without a sequence number is ordered by the snapshot's time.
    pub fn level(&self, l: &pb::StockLevel) -> Result<Level, Vec<pb::FieldViolation>> {
        let mut v = Violations::default();
        let order = match l.sequence_number {
            0 => Order::Observed(self.snapshot_at),
            n => match i64::try_from(n) {
                Ok(n) => Order::Sequence(n),
                Err(_) => {
                    v.add("sequence_number", "must be at most 2^63 - 1");
                    Order::Observed(self.snapshot_at)
                }
            },
        };
        let parsed = level(
            &mut v,
            "",
            &l.variant_id,
            &l.location_id,
            l.available_to_sell,
            l.on_order,
            Some(order),
            &l.product_id,
            l.variant.as_ref(),
        );
        match parsed {
            Some(level) if v.is_empty() => Ok(level),
            _ => Err(v.into_field_violations()),
        }
    }
}

/// Validates one stock level; field paths start with `prefix`.
#[allow(clippy::too_many_arguments)]
fn level(
    v: &mut Violations,
    prefix: &str,
    variant_id: &str,
    location_id: &str,
    available: i64,
    on_order: i64,
    order: Option<Order>,
    product_id: &str,
    details: Option<&pb::VariantDetails>,
) -> Option<Level> {
    let variant_id = v.id(&format!("{prefix}variant_id"), variant_id, true);
    let location_id = v.id(&format!("{prefix}location_id"), location_id, true);
    if available < 0 {
        v.add(
            format!("{prefix}available_to_sell"),
            "must not be negative: report an oversold level as 0",
        );
    } else if available > MAX_UNITS {
        v.add(
            format!("{prefix}available_to_sell"),
            format!("must be at most {MAX_UNITS}"),
        );
    }
    if on_order < 0 {
        v.add(format!("{prefix}on_order"), "must not be negative");
    } else if on_order > MAX_UNITS {
        v.add(
            format!("{prefix}on_order"),
            format!("must be at most {MAX_UNITS}"),
        );
    }
    let product_id = v.id(&format!("{prefix}product_id"), product_id, false);
    // The catalog's own links are not refused here (a stock level must not be lost over a
    // link); the tracked-link redirect never follows one off the brand's hosts.
    let details = details.map(|d| v.variant_details(&format!("{prefix}variant"), d, None));
    Some(Level {
        variant_id: variant_id?,
        location_id: location_id?,
        available,
        on_order,
        order: order?,
        product_id,
        details,
    })
}

/// An event's order: a sequence number or an observe time (not in the future).
fn event_order(
    v: &mut Violations,
    prefix: &str,
    order: Option<&pb::inventory_event::Order>,
    now: DateTime<Utc>,
) -> Option<Order> {
    match order {
        None => {
            v.add(
                format!("{prefix}sequence_number"),
                "a sequence_number or an observe_time is required",
            );
            None
        }
        Some(pb::inventory_event::Order::SequenceNumber(n)) => match i64::try_from(*n) {
            Ok(n) => Some(Order::Sequence(n)),
            Err(_) => {
                v.add(
                    format!("{prefix}sequence_number"),
                    "must be at most 2^63 - 1",
                );
                None
            }
        },
        Some(pb::inventory_event::Order::ObserveTime(ts)) => v
            .past_time(&format!("{prefix}observe_time"), Some(ts), now, true)
            .map(Order::Observed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn field_names(v: &[pb::FieldViolation]) -> Vec<&str> {
        v.iter().map(|f| f.field.as_str()).collect()
    }

    #[test]
    fn an_event_is_typed_or_rejected_naming_every_fault() {
        let good = pb::InventoryEvent {
            event_id: "e-1".into(),
            variant_id: "sku-1".into(),
            location_id: "web".into(),
            available_to_sell: 3,
            order: Some(pb::inventory_event::Order::SequenceNumber(7)),
            ..Default::default()
        };
        let e = InventoryEvent::parse("demo", Some(&good), "event.", now()).unwrap();
        assert_eq!((e.event_id.as_str(), e.level.available), ("e-1", 3));
        assert!(matches!(e.level.order, Order::Sequence(7)));

        let bad = pb::InventoryEvent {
            available_to_sell: -1,
            on_order: MAX_UNITS + 1,
            order: Some(pb::inventory_event::Order::SequenceNumber(u64::MAX)),
            ..good.clone()
        };
        let r = InventoryEvent::parse("", Some(&bad), "events[2].", now()).unwrap_err();
        assert_eq!(r.event_id, "e-1");
        assert_eq!(
            field_names(&r.field_violations),
            [
                "events[2].sequence_number",
                "events[2].available_to_sell",
                "events[2].on_order",
                "tenant_id"
            ]
        );
        let missing = InventoryEvent::parse("demo", None, "event.", now()).unwrap_err();
        assert_eq!(field_names(&missing.field_violations), ["event"]);
    }

    #[test]
    fn report_inventory_bounds_its_batch_and_parses_each_event() {
        let req = pb::ReportInventoryRequest {
            tenant_id: "demo".into(),
            events: vec![pb::InventoryEvent::default(); MAX_BATCH + 1],
        };
        assert!(ReportInventory::parse(req, now()).is_err());
        let req = pb::ReportInventoryRequest {
            tenant_id: "demo".into(),
            events: vec![pb::InventoryEvent::default()],
        };
        let cmd = ReportInventory::parse(req, now()).unwrap();
        let r = cmd.events[0].as_ref().unwrap_err();
        assert!(field_names(&r.field_violations).contains(&"events[0].event_id"));
    }

    #[test]
    fn a_sync_checks_its_header_chunks_and_levels() {
        let snapshot = prost_types::Timestamp {
            seconds: 1_799_999_000,
            nanos: 0,
        };
        let first = pb::SyncInventoryRequest {
            tenant_id: "demo".into(),
            snapshot_time: Some(snapshot),
            ..Default::default()
        };
        let header = SyncHeader::parse(&first, now()).unwrap();
        assert!(header.check_chunk(&first).is_ok());
        let other = pb::SyncInventoryRequest {
            tenant_id: "other".into(),
            ..Default::default()
        };
        assert!(header.check_chunk(&other).is_err());
        let big = pb::SyncInventoryRequest {
            levels: vec![pb::StockLevel::default(); MAX_SYNC_CHUNK + 1],
            ..first.clone()
        };
        assert!(header.check_chunk(&big).is_err());
        let level = pb::StockLevel {
            variant_id: "sku-1".into(),
            location_id: "web".into(),
            ..Default::default()
        };
        let ok = header.level(&level).unwrap();
        assert!(matches!(ok.order, Order::Observed(t) if t == header.snapshot_at));
        let bad = pb::StockLevel {
            sequence_number: u64::MAX,
            available_to_sell: -5,
            ..level
        };
        assert_eq!(
            field_names(&header.level(&bad).unwrap_err()),
            ["sequence_number", "available_to_sell"]
        );
        let no_time = pb::SyncInventoryRequest {
            snapshot_time: None,
            ..first
        };
        assert!(SyncHeader::parse(&no_time, now()).is_err());
    }
}
