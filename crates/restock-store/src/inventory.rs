//! Inventory: stock levels, restock detection and merchandising exclusions.
//!
//! Every change to one variant's stock locks that variant's `variant_stock` row first, so the
//! level update, the detector's state and the restock row are written atomically and two
//! replicas (or two streams) racing on a variant take turns: exactly one of them sees the
//! crossing and starts the restock.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use restock_domain::restock::{Detector, Hysteresis};
use uuid::Uuid;

use crate::cached::{execute, query, query_one, query_opt};
use crate::waitlist::VariantDetails;
use crate::{Store, StoreError};

/// How events of one (variant, location) are ordered by their sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Sequence(i64),
    Observed(DateTime<Utc>),
}

/// One validated stock level to apply.
#[derive(Debug, Clone)]
pub struct Level {
    pub variant_id: String,
    pub location_id: String,
    /// Available-to-sell: the only figure that counts as stock.
    pub available: i64,
    /// Never counted as stock; kept for reports.
    pub on_order: i64,
    pub order: Order,
    pub product_id: Option<String>,
    pub details: Option<VariantDetails>,
}

/// The tenant policy restock detection needs.
#[derive(Debug, Clone, Copy)]
pub struct RestockPolicy<'a> {
    pub hysteresis: Hysteresis,
    pub excluded_products: &'a [String],
    pub excluded_variants: &'a [String],
}

/// What applying one level did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelOutcome {
    /// A newer level is stored; nothing changed.
    Stale,
    /// Stored (possibly equal to the level before). `restock` is the restock it started, the
    /// variant-level one when both levels crossed; `started` counts every restock it started.
    Applied {
        changed: bool,
        restock: Option<Uuid>,
        started: u32,
    },
}

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    Applied {
        restock: Option<Uuid>,
    },
    /// The event id was seen before: the first answer about restocks, repeated.
    Duplicate {
        restock: Option<Uuid>,
    },
    Stale,
}

/// A variant's stored stock at one location.
#[derive(Debug, Clone)]
pub struct StockRow {
    pub location_id: String,
    pub available: i64,
    pub on_order: i64,
    pub last_sequence: Option<i64>,
    pub last_observed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub last_event_id: Option<String>,
    pub last_restock_id: Option<Uuid>,
    pub last_restock_at: Option<DateTime<Utc>>,
}

/// A variant's stock and what storefronts said about it.
#[derive(Debug, Clone, Default)]
pub struct Stock {
    pub product_id: Option<String>,
    pub details: VariantDetails,
    pub locations: Vec<StockRow>,
}

/// A merchandising exclusion made through the API.
#[derive(Debug, Clone)]
pub struct ExclusionRow {
    pub exclusion_id: Uuid,
    pub product_id: Option<String>,
    pub variant_id: Option<String>,
    pub reason: String,
    pub creator: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// Answer of [`Store::sync_inventory`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncCounts {
    pub changed: u64,
    pub unchanged: u64,
    pub stale: u64,
    pub zeroed: u64,
    pub restocks_started: u64,
}

async fn upsert_details(
    tx: &impl GenericClient,
    tenant_id: &str,
    level: &Level,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if level.product_id.is_none() && level.details.is_none() {
        return Ok(());
    }
    let details = level.details.clone().unwrap_or_default();
    crate::waitlist::upsert_variant(
        tx,
        tenant_id,
        &level.variant_id,
        level.product_id.as_deref(),
        &details,
        crate::waitlist::DetailsSource::Catalog,
        now,
    )
    .await
}

/// Whether merchandising excludes the variant (by tenant policy or by the API) at `now`.
async fn excluded(
    tx: &impl GenericClient,
    tenant_id: &str,
    variant_id: &str,
    product_id: Option<&str>,
    policy: &RestockPolicy<'_>,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    if policy.excluded_variants.iter().any(|v| v == variant_id)
        || product_id.is_some_and(|p| policy.excluded_products.iter().any(|x| x == p))
    {
        return Ok(true);
    }
    let row = query_opt(
        tx,
        "SELECT 1 FROM exclusions WHERE tenant_id = $1 AND deleted_at IS NULL \
         AND (expires_at IS NULL OR expires_at > $4) AND (variant_id = $2 OR product_id = $3) LIMIT 1",
        &[&tenant_id, &variant_id, &product_id, &now],
    )
    .await?;
    Ok(row.is_some())
}

/// Applies one level inside the caller's transaction; see the module header for the locking.
async fn apply_level(
    tx: &impl GenericClient,
    tenant_id: &str,
    level: &Level,
    event_id: Option<&str>,
    traceparent: Option<&str>,
    policy: &RestockPolicy<'_>,
    now: DateTime<Utc>,
) -> Result<LevelOutcome, StoreError> {
    let variant = query_one(
        tx,
        "INSERT INTO variant_stock (tenant_id, variant_id, available, armed, updated_at) \
         VALUES ($1, $2, 0, true, $3) \
         ON CONFLICT (tenant_id, variant_id) DO UPDATE SET updated_at = variant_stock.updated_at \
         RETURNING available, armed",
        &[&tenant_id, &level.variant_id, &now],
    )
    .await?;
    let (variant_total, variant_armed): (i64, bool) = (variant.get(0), variant.get(1));
    let row = query_opt(
        tx,
        "SELECT available, on_order, last_sequence, last_observed_at, armed FROM inventory \
         WHERE tenant_id = $1 AND variant_id = $2 AND location_id = $3",
        &[&tenant_id, &level.variant_id, &level.location_id],
    )
    .await?;
    let (old_available, old_on_order, last_seq, last_obs, armed) = match &row {
        Some(r) => (
            r.get::<_, i64>(0),
            r.get::<_, i64>(1),
            r.get::<_, Option<i64>>(2),
            r.get::<_, Option<DateTime<Utc>>>(3),
            r.get::<_, bool>(4),
        ),
        None => (0, 0, None, None, Detector::default().armed),
    };
    let stale = match level.order {
        Order::Sequence(s) => last_seq.is_some_and(|l| s <= l),
        Order::Observed(t) => last_obs.is_some_and(|l| t <= l),
    };
    if stale {
        return Ok(LevelOutcome::Stale);
    }
    let h = policy.hysteresis;
    let (location_detector, location_started) = Detector { armed }.observe(level.available, h);
    // Saturating: the API bounds each level, but a total must not wrap (release) or panic
    // (debug) on levels stored before the bound, or on very many locations.
    let new_total = variant_total
        .saturating_sub(old_available)
        .saturating_add(level.available)
        .max(0);
    let (variant_detector, variant_started) = Detector {
        armed: variant_armed,
    }
    .observe(new_total, h);

    let mut location_restock = None;
    let mut variant_restock = None;
    if location_started || variant_started {
        let product_id = match &level.product_id {
            Some(p) => Some(p.clone()),
            None => query_opt(
                tx,
                "SELECT product_id FROM variants WHERE tenant_id = $1 AND variant_id = $2",
                &[&tenant_id, &level.variant_id],
            )
            .await?
            .and_then(|r| r.get::<_, Option<String>>(0)),
        };
        let is_excluded = excluded(
            tx,
            tenant_id,
            &level.variant_id,
            product_id.as_deref(),
            policy,
            now,
        )
        .await?;
        for (started, location, available, slot) in [
            (
                location_started,
                Some(level.location_id.as_str()),
                level.available,
                &mut location_restock,
            ),
            (variant_started, None, new_total, &mut variant_restock),
        ] {
            if !started {
                continue;
            }
            let id = Uuid::now_v7();
            execute(
                tx,
                "INSERT INTO restocks (tenant_id, restock_id, variant_id, product_id, location_id, available, excluded, started_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[&tenant_id, &id, &level.variant_id, &product_id, &location, &available, &is_excluded, &now],
            )
            .await?;
            // An excluded restock is recorded (so reports can say why nothing was sent) but
            // starts no release, so it is not announced as started.
            if !is_excluded {
                *slot = Some(id);
            }
        }
    }

    // One release per crossing: when the variant's total and the location both crossed, the
    // variant-level restock (which serves every location) is the one announced, so a phone is
    // not texted twice about one event.
    let announced = match (variant_restock, location_restock) {
        (Some(id), _) => Some((id, None, new_total)),
        (None, Some(id)) => Some((id, Some(level.location_id.as_str()), level.available)),
        (None, None) => None,
    };
    if let Some((restock_id, location, available)) = announced {
        let product_id: Option<String> = match &level.product_id {
            Some(p) => Some(p.clone()),
            None => query_opt(
                tx,
                "SELECT product_id FROM variants WHERE tenant_id = $1 AND variant_id = $2",
                &[&tenant_id, &level.variant_id],
            )
            .await?
            .and_then(|r| r.get::<_, Option<String>>(0)),
        };
        execute(
            tx,
            "INSERT INTO releases (tenant_id, release_id, restock_id, variant_id, product_id, location_id, \
               state, available_at_restock, available_now, created_at, updated_at, traceparent) \
             VALUES ($1, $2, $3, $4, $5, $6, 'planning', $7, $7, $8, $8, $9)",
            &[&tenant_id, &Uuid::now_v7(), &restock_id, &level.variant_id, &product_id, &location, &available, &now, &traceparent],
        )
        .await?;
    }

    let (seq, observed) = match level.order {
        Order::Sequence(s) => (Some(s), last_obs),
        Order::Observed(t) => (last_seq, Some(t)),
    };
    execute(
        tx,
        "INSERT INTO inventory (tenant_id, variant_id, location_id, available, on_order, last_sequence, \
           last_observed_at, armed, last_event_id, last_restock_id, last_restock_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, CASE WHEN $10::uuid IS NULL THEN NULL ELSE $11::timestamptz END, $11) \
         ON CONFLICT (tenant_id, variant_id, location_id) DO UPDATE SET \
           available = EXCLUDED.available, on_order = EXCLUDED.on_order, \
           last_sequence = EXCLUDED.last_sequence, last_observed_at = EXCLUDED.last_observed_at, \
           armed = EXCLUDED.armed, last_event_id = EXCLUDED.last_event_id, \
           last_restock_id = COALESCE(EXCLUDED.last_restock_id, inventory.last_restock_id), \
           last_restock_at = COALESCE(EXCLUDED.last_restock_at, inventory.last_restock_at), \
           updated_at = EXCLUDED.updated_at",
        &[
            &tenant_id,
            &level.variant_id,
            &level.location_id,
            &level.available,
            &level.on_order,
            &seq,
            &observed,
            &location_detector.armed,
            &event_id,
            &location_restock,
            &now,
        ],
    )
    .await?;
    execute(
        tx,
        "UPDATE variant_stock SET available = $3, armed = $4, \
           last_restock_id = COALESCE($5, last_restock_id), \
           last_restock_at = CASE WHEN $5::uuid IS NULL THEN last_restock_at ELSE $6 END, updated_at = $6 \
         WHERE tenant_id = $1 AND variant_id = $2",
        &[&tenant_id, &level.variant_id, &new_total, &variant_detector.armed, &variant_restock, &now],
    )
    .await?;
    upsert_details(tx, tenant_id, level, now).await?;
    let started = u32::from(location_restock.is_some()) + u32::from(variant_restock.is_some());
    Ok(LevelOutcome::Applied {
        changed: row.is_none()
            || old_available != level.available
            || old_on_order != level.on_order,
        restock: variant_restock.or(location_restock),
        started,
    })
}

impl Store {
    /// Applies one inventory event exactly once: a resent event id is a duplicate whatever
    /// happened in between, and the event's effects and its id are committed together.
    pub async fn apply_inventory_event(
        &self,
        tenant_id: &str,
        event_id: &str,
        traceparent: Option<&str>,
        level: &Level,
        policy: &RestockPolicy<'_>,
        now: DateTime<Utc>,
    ) -> Result<EventOutcome, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let answer = apply_event(&tx, tenant_id, event_id, traceparent, level, policy, now).await?;
        tx.commit().await?;
        Ok(answer)
    }

    /// Applies events in order in one transaction (one commit for the lot, as a stream's
    /// burst arrives), each exactly as [`Store::apply_inventory_event`] would. Any failure
    /// rolls all of them back: the caller applies them one by one then.
    pub async fn apply_inventory_events(
        &self,
        events: &[(&str, &str, Option<&str>, &Level, &RestockPolicy<'_>)],
        now: DateTime<Utc>,
    ) -> Result<Vec<EventOutcome>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut answers = Vec::with_capacity(events.len());
        for (tenant_id, event_id, traceparent, level, policy) in events {
            answers.push(
                apply_event(&tx, tenant_id, event_id, *traceparent, level, policy, now).await?,
            );
        }
        tx.commit().await?;
        Ok(answers)
    }

    /// Starts reconciling a snapshot taken at `snapshot_at`. The whole sync is one
    /// transaction, fed chunk by chunk so memory stays flat in the snapshot's size: a sync that
    /// breaks off changes nothing.
    pub async fn begin_sync(
        &self,
        tenant_id: &str,
        snapshot_at: DateTime<Utc>,
    ) -> Result<SyncSession, StoreError> {
        let client = self.client().await?;
        client.batch_execute("BEGIN").await?;
        // Which (variant, location) the snapshot named, for `zero_missing`; in the database, not
        // in memory.
        client
            .batch_execute("CREATE TEMP TABLE sync_seen (variant_id text, location_id text, PRIMARY KEY (variant_id, location_id)) ON COMMIT DROP")
            .await?;
        Ok(SyncSession {
            client: Some(client),
            tenant_id: tenant_id.to_string(),
            snapshot_at,
            counts: SyncCounts::default(),
        })
    }

    /// A variant's stock, optionally at some locations only.
    pub async fn stock(
        &self,
        tenant_id: &str,
        variant_id: &str,
        locations: &[String],
    ) -> Result<Stock, StoreError> {
        let client = self.client().await?;
        let rows = query(
            &client,
            // A location crossing together with the variant's total starts two restocks, and
            // only the variant's has a release: name the one with the release.
            "SELECT location_id, available, on_order, last_sequence, last_observed_at, updated_at, \
               last_event_id, \
               COALESCE((SELECT r.restock_id FROM restocks r JOIN releases rel \
                           ON rel.tenant_id = r.tenant_id AND rel.restock_id = r.restock_id \
                         WHERE r.tenant_id = i.tenant_id AND r.variant_id = i.variant_id \
                           AND r.started_at = i.last_restock_at \
                         ORDER BY (r.restock_id = i.last_restock_id) DESC LIMIT 1), last_restock_id), \
               last_restock_at FROM inventory i \
             WHERE tenant_id = $1 AND variant_id = $2 AND (cardinality($3::text[]) = 0 OR location_id = ANY($3)) \
             ORDER BY location_id",
            &[&tenant_id, &variant_id, &locations],
        )
        .await?;
        let details = query_opt(
            &client,
            "SELECT product_id, title, options, deep_link FROM variants WHERE tenant_id = $1 AND variant_id = $2",
            &[&tenant_id, &variant_id],
        )
        .await?;
        let (product_id, details) = match details {
            Some(r) => {
                let options: serde_json::Value = r.get(2);
                (
                    r.get(0),
                    VariantDetails {
                        title: r.get(1),
                        options: serde_json::from_value::<BTreeMap<String, String>>(options)
                            .unwrap_or_default(),
                        deep_link: r.get(3),
                    },
                )
            }
            None => (None, VariantDetails::default()),
        };
        Ok(Stock {
            product_id,
            details,
            locations: rows
                .iter()
                .map(|r| StockRow {
                    location_id: r.get(0),
                    available: r.get(1),
                    on_order: r.get(2),
                    last_sequence: r.get(3),
                    last_observed_at: r.get(4),
                    updated_at: r.get(5),
                    last_event_id: r.get(6),
                    last_restock_id: r.get(7),
                    last_restock_at: r.get(8),
                })
                .collect(),
        })
    }

    /// Forgets event ids recorded before `before` (duplicates are caught for that long).
    pub async fn prune_inventory_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let client = self.client().await?;
        execute(
            &client,
            "DELETE FROM inventory_events WHERE recorded_at < $1",
            &[&before],
        )
        .await
    }

    /// Creates an exclusion, or answers the live one of the same target (`false`).
    #[allow(clippy::too_many_arguments)]
    pub async fn create_exclusion(
        &self,
        tenant_id: &str,
        product_id: Option<&str>,
        variant_id: Option<&str>,
        reason: &str,
        creator: &str,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(ExclusionRow, bool), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // A lapsed exclusion of the target steps aside for the new one.
        execute(
            &tx,
            "UPDATE exclusions SET deleted_at = expires_at WHERE tenant_id = $1 AND deleted_at IS NULL \
             AND expires_at <= $4 AND product_id IS NOT DISTINCT FROM $2 AND variant_id IS NOT DISTINCT FROM $3",
            &[&tenant_id, &product_id, &variant_id, &now],
        )
        .await?;
        let inserted = query_opt(
            &tx,
            &format!(
                "INSERT INTO exclusions (tenant_id, exclusion_id, product_id, variant_id, reason, creator, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING RETURNING {EXCLUSION_COLUMNS}"
            ),
            &[&tenant_id, &Uuid::now_v7(), &product_id, &variant_id, &reason, &creator, &now, &expires_at],
        )
        .await?;
        let answer = match inserted {
            Some(r) => (exclusion_from_row(&r), true),
            None => {
                let r = query_one(
                    &tx,
                    &format!(
                        "SELECT {EXCLUSION_COLUMNS} FROM exclusions WHERE tenant_id = $1 AND deleted_at IS NULL \
                         AND product_id IS NOT DISTINCT FROM $2 AND variant_id IS NOT DISTINCT FROM $3"
                    ),
                    &[&tenant_id, &product_id, &variant_id],
                )
                .await?;
                (exclusion_from_row(&r), false)
            }
        };
        tx.commit().await?;
        Ok(answer)
    }

    /// Lifts an exclusion; lifting a lifted one changes nothing.
    pub async fn delete_exclusion(
        &self,
        tenant_id: &str,
        exclusion_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            "UPDATE exclusions SET deleted_at = COALESCE(deleted_at, $3) WHERE tenant_id = $1 AND exclusion_id = $2 RETURNING 1",
            &[&tenant_id, &exclusion_id, &now],
        )
        .await?;
        row.map(|_| ()).ok_or(StoreError::NotFound("exclusion"))
    }

    /// A page of exclusions, newest first, after the (created_at, id) key `after`.
    #[allow(clippy::too_many_arguments)]
    pub async fn list_exclusions(
        &self,
        tenant_id: &str,
        product_id: Option<&str>,
        variant_id: Option<&str>,
        show_inactive: bool,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<ExclusionRow>, StoreError> {
        let client = self.client().await?;
        let variant_product: Option<String> = match variant_id {
            Some(v) => query_opt(
                &client,
                "SELECT product_id FROM variants WHERE tenant_id = $1 AND variant_id = $2",
                &[&tenant_id, &v],
            )
            .await?
            .and_then(|r| r.get(0)),
            None => None,
        };
        let (after_time, after_id) = after.map_or((None, None), |(t, id)| (Some(t), Some(id)));
        let rows = query(
            &client,
            &format!(
                "SELECT {EXCLUSION_COLUMNS} FROM exclusions WHERE tenant_id = $1 \
                 AND ($2::text IS NULL OR product_id = $2 OR variant_id IN (SELECT variant_id FROM variants WHERE tenant_id = $1 AND product_id = $2)) \
                 AND ($3::text IS NULL OR variant_id = $3 OR product_id = $4) \
                 AND ($5 OR (deleted_at IS NULL AND (expires_at IS NULL OR expires_at > $6))) \
                 AND ($7::timestamptz IS NULL OR (created_at, exclusion_id) < ($7, $8)) \
                 ORDER BY created_at DESC, exclusion_id DESC LIMIT $9"
            ),
            &[&tenant_id, &product_id, &variant_id, &variant_product, &show_inactive, &now, &after_time, &after_id, &limit],
        )
        .await?;
        Ok(rows.iter().map(exclusion_from_row).collect())
    }
}

/// A snapshot being reconciled; see [`Store::begin_sync`]. Dropped without
/// [`SyncSession::commit`], its connection is closed, which rolls everything back.
pub struct SyncSession {
    client: Option<deadpool_postgres::Object>,
    tenant_id: String,
    snapshot_at: DateTime<Utc>,
    counts: SyncCounts,
}

impl SyncSession {
    fn client(&self) -> &deadpool_postgres::Object {
        self.client
            .as_ref()
            .expect("a session is used until committed")
    }

    /// Applies one chunk of levels. A level named twice in one sync is a `DuplicateLevel`.
    pub async fn apply(
        &mut self,
        levels: &[Level],
        policy: &RestockPolicy<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        for level in levels {
            let client = self.client();
            let fresh = execute(
                client,
                "INSERT INTO sync_seen (variant_id, location_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&level.variant_id, &level.location_id],
            )
            .await?;
            if fresh == 0 {
                return Err(StoreError::DuplicateLevel(
                    level.variant_id.clone(),
                    level.location_id.clone(),
                ));
            }
            match apply_level(client, &self.tenant_id, level, None, None, policy, now).await? {
                LevelOutcome::Stale => self.counts.stale += 1,
                LevelOutcome::Applied {
                    changed, started, ..
                } => {
                    if changed {
                        self.counts.changed += 1;
                    } else {
                        self.counts.unchanged += 1;
                    }
                    self.counts.restocks_started += u64::from(started);
                }
            }
        }
        Ok(())
    }

    /// With `zero_missing`, sets to 0 every stored level of the covered locations (all when
    /// `locations` is empty) that the snapshot left out and that was not observed after it;
    /// then commits the sync.
    pub async fn commit(
        mut self,
        zero_missing: bool,
        locations: &[String],
        policy: &RestockPolicy<'_>,
        now: DateTime<Utc>,
    ) -> Result<SyncCounts, StoreError> {
        if zero_missing {
            let missing = query(
                self.client(),
                "SELECT i.variant_id, i.location_id FROM inventory i \
                 WHERE i.tenant_id = $1 AND i.available > 0 \
                   AND (cardinality($2::text[]) = 0 OR i.location_id = ANY($2)) \
                   AND NOT EXISTS (SELECT 1 FROM sync_seen s WHERE s.variant_id = i.variant_id AND s.location_id = i.location_id) \
                 ORDER BY i.variant_id, i.location_id",
                &[&self.tenant_id, &locations],
            )
            .await?;
            for row in missing {
                let level = Level {
                    variant_id: row.get(0),
                    location_id: row.get(1),
                    available: 0,
                    on_order: 0,
                    order: Order::Observed(self.snapshot_at),
                    product_id: None,
                    details: None,
                };
                if let LevelOutcome::Applied { .. } = apply_level(
                    self.client(),
                    &self.tenant_id,
                    &level,
                    None,
                    None,
                    policy,
                    now,
                )
                .await?
                {
                    self.counts.zeroed += 1;
                }
            }
        }
        self.client().batch_execute("COMMIT").await?;
        self.client = None;
        Ok(self.counts)
    }
}

impl Drop for SyncSession {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Mid-transaction: never hand this connection back to the pool. Closing it makes
            // Postgres roll the sync back.
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

const EXCLUSION_COLUMNS: &str =
    "exclusion_id, product_id, variant_id, reason, creator, created_at, expires_at, deleted_at";

fn exclusion_from_row(r: &tokio_postgres::Row) -> ExclusionRow {
    ExclusionRow {
        exclusion_id: r.get(0),
        product_id: r.get(1),
        variant_id: r.get(2),
        reason: r.get(3),
        creator: r.get(4),
        created_at: r.get(5),
        expires_at: r.get(6),
        deleted_at: r.get(7),
    }
}

/// One inventory event inside the caller's transaction: its id recorded (a duplicate is
/// answered as such), its level applied, a restock detected.
async fn apply_event(
    tx: &impl GenericClient,
    tenant_id: &str,
    event_id: &str,
    traceparent: Option<&str>,
    level: &Level,
    policy: &RestockPolicy<'_>,
    now: DateTime<Utc>,
) -> Result<EventOutcome, StoreError> {
    // A concurrent insert of the same id makes this one wait for it, then conflict.
    let fresh = execute(
        tx,
        "INSERT INTO inventory_events (tenant_id, event_id, outcome, recorded_at) \
         VALUES ($1, $2, 'applied', $3) ON CONFLICT DO NOTHING",
        &[&tenant_id, &event_id, &now],
    )
    .await?;
    if fresh == 0 {
        let first = query_one(
            tx,
            "SELECT restock_id FROM inventory_events WHERE tenant_id = $1 AND event_id = $2",
            &[&tenant_id, &event_id],
        )
        .await?;
        return Ok(EventOutcome::Duplicate {
            restock: first.get(0),
        });
    }
    let outcome = apply_level(
        tx,
        tenant_id,
        level,
        Some(event_id),
        traceparent,
        policy,
        now,
    )
    .await?;
    let answer = match outcome {
        LevelOutcome::Stale => {
            execute(
                tx,
                "UPDATE inventory_events SET outcome = 'stale' WHERE tenant_id = $1 AND event_id = $2",
                &[&tenant_id, &event_id],
            )
            .await?;
            EventOutcome::Stale
        }
        LevelOutcome::Applied { restock, .. } => {
            if restock.is_some() {
                execute(
                    tx,
                    "UPDATE inventory_events SET restock_id = $3 WHERE tenant_id = $1 AND event_id = $2",
                    &[&tenant_id, &event_id, &restock],
                )
                .await?;
            }
            EventOutcome::Applied { restock }
        }
    };
    Ok(answer)
}
