//! Report figures: what a set of releases sent, and what it earned, aggregated in a few
//! set-based statements. Read-only and lock-free (plain SELECTs in one repeatable-read,
//! read-only transaction), so they may later be served from a replica.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use deadpool_postgres::GenericClient;
use serde::{Deserialize, Serialize};
use tokio_postgres::IsolationLevel;
use uuid::Uuid;

use crate::cached::{query, query_one};
use crate::{Store, StoreError};

/// Which releases a report covers.
#[derive(Debug, Clone)]
pub enum Scope {
    /// One release.
    Release(Uuid),
    /// Every release of a variant whose restock happened in `[from, before)`.
    Variant {
        variant_id: String,
        from: Option<DateTime<Utc>>,
        before: Option<DateTime<Utc>>,
    },
    /// Every release of the tenant whose restock happened in `[from, before)`.
    Period {
        from: DateTime<Utc>,
        before: DateTime<Utc>,
    },
}

/// The windows and codes the figures are measured with.
#[derive(Debug, Clone)]
pub struct ReportWindows {
    /// An opt-out of a texted phone within this long after the text counts against the text.
    pub opt_out: Duration,
    /// The conversion window of both lift groups, measured from the restock (the release's
    /// creation), so the texted group and the holdout are measured alike.
    pub lift: Duration,
    /// Provider error codes of an undelivered text that count as a carrier complaint.
    pub complaint_codes: Vec<String>,
    /// The tenant's IANA time zone: what a day is for signups and product views.
    pub time_zone: String,
    /// Sell-through counts units bought within this long after each restock.
    pub sell_through: Duration,
}

/// Error codes of failed or undelivered texts, counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureCount {
    /// The provider's code; empty when none was recorded.
    pub code: String,
    pub count: u64,
}

/// Attributed purchases (TEXT or CLICK basis) in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencyFigures {
    pub currency: String,
    /// Orders with an attributed line in this currency.
    pub orders: u64,
    pub units: u64,
    /// Revenue of the attributed lines less their refunds.
    pub revenue_minor: i64,
    /// Of `orders`, those placed through a text's link (channel `sms_link`).
    pub last_click_orders: u64,
    /// Revenue of their attributed lines, less their refunds.
    pub last_click_revenue_minor: i64,
    /// Refund lines of attributed lines, and what they paid back (positive; already taken off
    /// the revenues). Absent from figures cached before refunds existed: none.
    #[serde(default)]
    pub refund_count: u64,
    #[serde(default)]
    pub refunded_minor: i64,
}

/// Signups and product views over whole days in the tenant's time zone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignupFigures {
    /// First and last day covered; `None` when unbounded.
    pub first_day: Option<NaiveDate>,
    pub last_day: Option<NaiveDate>,
    pub signups: u64,
    /// Whether any view count was reported for the scope on those days.
    pub views_reported: bool,
    pub views: u64,
    /// Signups on the days with a view count reported.
    pub signups_on_viewed_days: u64,
    /// Signups naming a variant.
    pub variant_signups: u64,
    /// Signups created waiting for a double opt-in confirmation, and those confirmed.
    pub confirmation_requested: u64,
    pub confirmed: u64,
    /// Median time from signup to confirmation (nearest rank).
    pub time_to_confirm_median: Option<std::time::Duration>,
    /// The current status of those signups, as stored (`active`, `notified`, ...), with its
    /// count, in no particular order.
    pub statuses: Vec<(String, u64)>,
}

/// The raw figures of a report; ratios and intervals are the domain's to compute. Every
/// figure but the signups is a sum over releases (or a union, or a maximum), so the figures of
/// settled releases are cached per release and added up ([`Figures::add`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    pub release_count: u64,
    /// First texts not held out (every status): the treatment group, intention to treat.
    pub recipient_count: u64,
    pub held_out_count: u64,
    /// Handed to the provider and accepted: SENT, DELIVERED or UNDELIVERED.
    pub sent_count: u64,
    pub delivered_count: u64,
    pub undelivered_count: u64,
    pub failed_count: u64,
    pub segment_count: u64,
    /// FAILED and UNDELIVERED messages by their last error code, most frequent first.
    pub failures: Vec<FailureCount>,
    /// Undelivered texts whose error code is a carrier complaint (filtered, blocked).
    pub complaint_count: u64,
    pub click_count: u64,
    /// Sent messages whose link was clicked at least once.
    pub clicked_count: u64,
    /// Sent messages blamed for an opt-out: each opt-out counts against the latest text to its
    /// phone before it, when that text is within the opt-out window.
    pub opt_out_count: u64,
    /// Distinct orders with a line attributed (TEXT or CLICK) to one of the releases' texts.
    pub conversion_count: u64,
    /// Of those, orders credited through a click.
    pub click_conversion_count: u64,
    /// Per currency, never summed across currencies.
    pub currencies: Vec<CurrencyFigures>,
    /// Time from the credited text to each attributed order (its first attributed line).
    pub times_to_purchase: Vec<std::time::Duration>,
    /// Treatment recipients who bought the variant within the lift window of the restock.
    pub treatment_conversions: u64,
    /// Holdout recipients who bought the variant within the lift window of the restock.
    pub holdout_conversions: u64,
    /// The latest text of the releases, to tell whether the windows have closed.
    pub last_sent_at: Option<DateTime<Utc>>,
    /// Not per release: computed for the whole scope, never cached.
    #[serde(skip)]
    pub signups: SignupFigures,
    /// Units available at the releases' restocks, summed.
    pub units_restocked: u64,
    /// Units of the releases' variants bought by anyone within the sell-through window after
    /// each restock, at its location or at no stated location.
    pub units_sold_after_restock: u64,
}

/// The releases in scope: `$1` tenant, `$2` releases (an array), `$3` variant, `$4` from, `$5` before.
const SCOPE: &str = "scope AS ( \
    SELECT r.tenant_id, r.release_id, r.variant_id, r.created_at FROM releases r \
    WHERE r.tenant_id = $1 \
      AND ($2::uuid[] IS NULL OR r.release_id = ANY($2)) \
      AND ($3::text IS NULL OR r.variant_id = $3) \
      AND ($4::timestamptz IS NULL OR r.created_at >= $4) \
      AND ($5::timestamptz IS NULL OR r.created_at < $5))";

fn count(n: i64) -> u64 {
    n.max(0) as u64
}

impl Store {
    /// Whether the tenant has the release.
    pub async fn release_exists(
        &self,
        tenant_id: &str,
        release_id: Uuid,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = query_one(
            &client,
            "SELECT EXISTS (SELECT 1 FROM releases WHERE tenant_id = $1 AND release_id = $2)",
            &[&tenant_id, &release_id],
        )
        .await?;
        Ok(row.get(0))
    }

    /// The figures of the releases in `scope`; see the module header.
    pub async fn report_figures(
        &self,
        tenant_id: &str,
        scope: &Scope,
        windows: ReportWindows,
    ) -> Result<Figures, StoreError> {
        let mut client = self.client().await?;
        // One snapshot for every statement, so the figures agree with each other.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let (release_ids, variant_id, from, before) = match scope {
            Scope::Release(id) => (Some(vec![*id]), None, None, None),
            Scope::Variant {
                variant_id,
                from,
                before,
            } => (None, Some(variant_id.as_str()), *from, *before),
            Scope::Period { from, before } => (None, None, Some(*from), Some(*before)),
        };
        let p: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
            [&tenant_id, &release_ids, &variant_id, &from, &before];
        // Settled releases are added up from their cached figures; the others are read.
        let rows = query(
            &tx,
            &format!(
                "WITH {SCOPE} SELECT s.release_id, f.figures FROM scope s \
                 LEFT JOIN release_figures f ON f.tenant_id = s.tenant_id AND f.release_id = s.release_id"
            ),
            &p,
        )
        .await?;
        let mut total = Figures::default();
        let mut open = Vec::new();
        for r in &rows {
            match r.get::<_, Option<serde_json::Value>>(1) {
                Some(cached) => total.add(&serde_json::from_value(cached).map_err(|e| {
                    StoreError::Config(format!("cached release figures unreadable: {e}"))
                })?),
                None => open.push(r.get::<_, Uuid>(0)),
            }
        }
        if !open.is_empty() {
            total.add(&compute(&tx, tenant_id, open, &windows).await?);
        }
        total.release_count = rows.len() as u64;
        // One order whatever the releases were read from, so equal figures compare equal.
        total.times_to_purchase.sort_unstable();
        total.signups = signups(&tx, tenant_id, scope, &windows.time_zone).await?;
        tx.commit().await?;
        Ok(total)
    }

    /// Caches the figures of up to `limit` settled releases of the tenant that have none: ended
    /// (sold out, completed or cancelled) and past `horizon` after their last text (the longest
    /// window their figures depend on). Answers how many were cached. Each is computed in its
    /// own transaction, under the (tenant, variant) lock the invalidating triggers share.
    pub async fn settle_release_figures(
        &self,
        tenant_id: &str,
        windows: &ReportWindows,
        horizon: Duration,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<usize, StoreError> {
        let secs = horizon.num_seconds() as f64;
        let candidates = {
            let client = self.client().await?;
            query(
                &client,
                "SELECT r.release_id, r.variant_id, r.created_at FROM releases r \
                 WHERE r.tenant_id = $1 AND r.state IN ('sold_out', 'completed', 'cancelled') \
                   AND NOT EXISTS (SELECT 1 FROM release_figures f \
                                   WHERE f.tenant_id = r.tenant_id AND f.release_id = r.release_id) \
                   AND COALESCE((SELECT max(m.sent_at) FROM messages m \
                                 WHERE m.tenant_id = r.tenant_id AND m.release_id = r.release_id), r.created_at) \
                       + make_interval(secs => $2) <= $3 \
                 ORDER BY r.created_at LIMIT $4",
                &[&tenant_id, &secs, &now, &limit],
            )
            .await?
        };
        let mut n = 0;
        for c in &candidates {
            let (release_id, variant_id, created_at): (Uuid, String, DateTime<Utc>) =
                (c.get(0), c.get(1), c.get(2));
            let mut client = self.client().await?;
            let tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .start()
                .await?;
            // Before the snapshot (the first statement takes it): writers of this variant that
            // have not committed are waited for, and later ones wait for this transaction.
            query(
                &tx,
                "SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2, 7465737409))",
                &[&tenant_id, &variant_id],
            )
            .await?;
            let f = compute(&tx, tenant_id, vec![release_id], windows).await?;
            let window_end = f.last_sent_at.unwrap_or(created_at) + horizon;
            let json = serde_json::to_value(&f)
                .map_err(|e| StoreError::Config(format!("release figures: {e}")))?;
            crate::cached::execute(
                &tx,
                "INSERT INTO release_figures (tenant_id, release_id, variant_id, window_start, window_end, figures, computed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, release_id) DO NOTHING",
                &[&tenant_id, &release_id, &variant_id, &created_at, &window_end, &json, &now],
            )
            .await?;
            tx.commit().await?;
            n += 1;
        }
        Ok(n)
    }
}

/// The figures of `releases` read from their messages, clicks and purchases (the signups
/// aside). `release_count` is left 0: the caller knows the scope.
async fn compute<C: GenericClient>(
    c: &C,
    tenant_id: &str,
    releases: Vec<Uuid>,
    windows: &ReportWindows,
) -> Result<Figures, StoreError> {
    let ids = Some(releases);
    let none_text: Option<&str> = None;
    let none_time: Option<DateTime<Utc>> = None;
    let p: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
        [&tenant_id, &ids, &none_text, &none_time, &none_time];
    let mut f = messaging(c, &p, windows).await?;
    f.release_count = 0;
    f.failures = failures(c, &p).await?;
    conversions(c, &p, &mut f).await?;
    lift(c, &p, windows.lift, &mut f).await?;
    sell_through(c, &p, windows.sell_through, &mut f).await?;
    Ok(f)
}

impl Figures {
    /// Adds `o`'s figures to these: counts summed, failures and currencies merged by key (in
    /// their report order), times pooled, the latest text the later of the two. The signups
    /// are the scope's, not a release's, and are left alone.
    pub fn add(&mut self, o: &Figures) {
        self.release_count += o.release_count;
        self.recipient_count += o.recipient_count;
        self.held_out_count += o.held_out_count;
        self.sent_count += o.sent_count;
        self.delivered_count += o.delivered_count;
        self.undelivered_count += o.undelivered_count;
        self.failed_count += o.failed_count;
        self.segment_count += o.segment_count;
        for x in &o.failures {
            match self.failures.iter_mut().find(|y| y.code == x.code) {
                Some(y) => y.count += x.count,
                None => self.failures.push(x.clone()),
            }
        }
        self.failures
            .sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.code.cmp(&b.code)));
        self.complaint_count += o.complaint_count;
        self.click_count += o.click_count;
        self.clicked_count += o.clicked_count;
        self.opt_out_count += o.opt_out_count;
        self.conversion_count += o.conversion_count;
        self.click_conversion_count += o.click_conversion_count;
        for x in &o.currencies {
            match self
                .currencies
                .iter_mut()
                .find(|y| y.currency == x.currency)
            {
                Some(y) => {
                    y.orders += x.orders;
                    y.units += x.units;
                    y.revenue_minor += x.revenue_minor;
                    y.last_click_orders += x.last_click_orders;
                    y.last_click_revenue_minor += x.last_click_revenue_minor;
                    y.refund_count += x.refund_count;
                    y.refunded_minor += x.refunded_minor;
                }
                None => self.currencies.push(x.clone()),
            }
        }
        self.currencies.sort_by(|a, b| a.currency.cmp(&b.currency));
        self.times_to_purchase
            .extend_from_slice(&o.times_to_purchase);
        self.treatment_conversions += o.treatment_conversions;
        self.holdout_conversions += o.holdout_conversions;
        self.last_sent_at = self.last_sent_at.max(o.last_sent_at);
        self.units_restocked += o.units_restocked;
        self.units_sold_after_restock += o.units_sold_after_restock;
    }
}

/// Message counts, clicks and opt-outs.
async fn messaging<C: GenericClient>(
    c: &C,
    p: &[&(dyn tokio_postgres::types::ToSql + Sync); 5],
    windows: &ReportWindows,
) -> Result<Figures, StoreError> {
    // An opt-out is blamed on the latest text to its phone before it (of any release), inside
    // the window; it counts when that text is one of the scope's. Driven from the opt-outs in
    // the scope's texting time (an opt-out outside it cannot blame one of the scope's texts),
    // one index look-up each: starting from the scope's phones instead read every text of every
    // one of them (4 of the 6 s of a cold period report over 1,000,000 texts).
    let sql = format!(
        "WITH {SCOPE}, \
         m AS (SELECT m.tenant_id, m.message_id, m.contact_id, m.status, m.kind, m.segments, \
                 m.sent_at, m.last_error_code FROM messages m JOIN scope s \
                 ON s.tenant_id = m.tenant_id AND s.release_id = m.release_id), \
         span AS (SELECT min(sent_at) AS first, max(sent_at) AS last FROM m), \
         blamed AS (SELECT x.message_id FROM consent_events e CROSS JOIN span \
           CROSS JOIN LATERAL (SELECT x.message_id FROM messages x \
             WHERE x.tenant_id = e.tenant_id AND x.contact_id = e.contact_id \
               AND x.sent_at IS NOT NULL AND x.sent_at <= e.occurred_at \
               AND e.occurred_at < x.sent_at + make_interval(secs => $6) \
             ORDER BY x.sent_at DESC, x.message_id DESC LIMIT 1) x \
           WHERE e.tenant_id = $1 AND e.kind = 'opt_out' AND e.occurred_at >= span.first \
             AND e.occurred_at < span.last + make_interval(secs => $6)) \
         SELECT (SELECT count(*) FROM scope), \
           count(*) FILTER (WHERE status <> 'held_out' AND kind = 'first'), \
           count(*) FILTER (WHERE status = 'held_out' AND kind = 'first'), \
           count(*) FILTER (WHERE status IN ('sent', 'delivered', 'undelivered')), \
           count(*) FILTER (WHERE status = 'delivered'), \
           count(*) FILTER (WHERE status = 'undelivered'), \
           count(*) FILTER (WHERE status = 'failed'), \
           COALESCE(sum(segments) FILTER (WHERE status IN ('sent', 'delivered', 'undelivered')), 0)::bigint, \
           (SELECT count(*) FROM clicks k JOIN m ON k.tenant_id = m.tenant_id AND k.message_id = m.message_id), \
           (SELECT count(DISTINCT k.message_id) FROM clicks k JOIN m \
              ON k.tenant_id = m.tenant_id AND k.message_id = m.message_id WHERE m.sent_at IS NOT NULL), \
           (SELECT count(DISTINCT b.message_id) FROM blamed b JOIN m ON m.message_id = b.message_id), \
           max(sent_at), \
           count(*) FILTER (WHERE status = 'undelivered' AND last_error_code = ANY($7)) \
         FROM m"
    );
    let secs = windows.opt_out.num_seconds() as f64;
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = p.to_vec();
    params.push(&secs);
    params.push(&windows.complaint_codes);
    let r = query_one(c, &sql, &params).await?;
    Ok(Figures {
        release_count: count(r.get(0)),
        recipient_count: count(r.get(1)),
        held_out_count: count(r.get(2)),
        sent_count: count(r.get(3)),
        delivered_count: count(r.get(4)),
        undelivered_count: count(r.get(5)),
        failed_count: count(r.get(6)),
        segment_count: count(r.get(7)),
        click_count: count(r.get(8)),
        clicked_count: count(r.get(9)),
        opt_out_count: count(r.get(10)),
        last_sent_at: r.get(11),
        complaint_count: count(r.get(12)),
        ..Figures::default()
    })
}

/// FAILED and UNDELIVERED messages by error code.
async fn failures<C: GenericClient>(
    c: &C,
    p: &[&(dyn tokio_postgres::types::ToSql + Sync); 5],
) -> Result<Vec<FailureCount>, StoreError> {
    let sql = format!(
        "WITH {SCOPE} \
         SELECT COALESCE(m.last_error_code, ''), count(*) FROM messages m JOIN scope s \
           ON s.tenant_id = m.tenant_id AND s.release_id = m.release_id \
         WHERE m.status IN ('failed', 'undelivered') \
         GROUP BY 1 ORDER BY 2 DESC, 1"
    );
    Ok(query(c, &sql, p)
        .await?
        .iter()
        .map(|r| FailureCount {
            code: r.get(0),
            count: count(r.get(1)),
        })
        .collect())
}

/// Attributed conversions, revenue per currency and times to purchase.
async fn conversions<C: GenericClient>(
    c: &C,
    p: &[&(dyn tokio_postgres::types::ToSql + Sync); 5],
    f: &mut Figures,
) -> Result<(), StoreError> {
    // Lines credited to a text of the scope, with the time since that text.
    let lines = format!(
        "WITH {SCOPE}, \
         l AS (SELECT pl.release_id, pl.order_id, pl.quantity, pl.total_minor, pl.currency, pl.basis, pl.purchased_at, pl.channel, \
                 pl.purchased_at - COALESCE(m.sent_at, m.created_at) AS since \
               FROM purchase_lines pl \
               JOIN scope s ON s.tenant_id = pl.tenant_id AND s.release_id = pl.release_id \
               JOIN messages m ON m.tenant_id = pl.tenant_id AND m.message_id = pl.message_id \
               WHERE pl.basis IN ('text', 'click'))"
    );
    let totals = format!(
        "{lines} SELECT count(DISTINCT (release_id, order_id)), \
           count(DISTINCT (release_id, order_id)) FILTER (WHERE basis = 'click'), \
           COALESCE(array_agg(since_secs) FILTER (WHERE since_secs IS NOT NULL), '{{}}') \
         FROM (SELECT release_id, order_id, basis, \
                 CASE WHEN row_number() OVER (PARTITION BY release_id, order_id ORDER BY purchased_at) = 1 \
                   THEN GREATEST(EXTRACT(EPOCH FROM since), 0)::float8 END AS since_secs \
               FROM l) t"
    );
    let r = query_one(c, &totals, p).await?;
    f.conversion_count = count(r.get(0));
    f.click_conversion_count = count(r.get(1));
    f.times_to_purchase = r
        .get::<_, Vec<f64>>(2)
        .into_iter()
        .map(std::time::Duration::from_secs_f64)
        .collect();
    let per_currency = format!(
        "{lines} SELECT currency, count(DISTINCT (release_id, order_id)), COALESCE(sum(quantity), 0)::bigint, \
           COALESCE(sum(total_minor), 0)::bigint, \
           count(DISTINCT (release_id, order_id)) FILTER (WHERE channel = 'sms_link'), \
           COALESCE(sum(total_minor) FILTER (WHERE channel = 'sms_link'), 0)::bigint \
         FROM l GROUP BY currency ORDER BY currency"
    );
    f.currencies = query(c, &per_currency, p)
        .await?
        .iter()
        .map(|r| CurrencyFigures {
            currency: r.get(0),
            orders: count(r.get(1)),
            units: count(r.get(2)),
            revenue_minor: r.get(3),
            last_click_orders: count(r.get(4)),
            last_click_revenue_minor: r.get(5),
            refund_count: 0,
            refunded_minor: 0,
        })
        .collect();
    // Refunds of attributed lines, whenever made: negative revenue of the refunded line's text.
    let refunds = format!(
        "WITH {SCOPE} \
         SELECT rl.currency, count(*), sum(rl.amount_minor)::bigint, \
           COALESCE(sum(rl.amount_minor) FILTER (WHERE rl.channel = 'sms_link'), 0)::bigint \
         FROM refund_lines rl JOIN scope s ON s.tenant_id = rl.tenant_id AND s.release_id = rl.release_id \
         WHERE rl.basis IN ('text', 'click') GROUP BY rl.currency"
    );
    for r in query(c, &refunds, p).await? {
        let currency: String = r.get(0);
        let i = match f.currencies.iter().position(|x| x.currency == currency) {
            Some(i) => i,
            None => {
                f.currencies.push(CurrencyFigures {
                    currency,
                    orders: 0,
                    units: 0,
                    revenue_minor: 0,
                    last_click_orders: 0,
                    last_click_revenue_minor: 0,
                    refund_count: 0,
                    refunded_minor: 0,
                });
                f.currencies.len() - 1
            }
        };
        let x = &mut f.currencies[i];
        let (amount, last_click): (i64, i64) = (r.get(2), r.get(3));
        x.refund_count += count(r.get(1));
        x.refunded_minor += amount;
        x.revenue_minor -= amount;
        x.last_click_revenue_minor -= last_click;
    }
    f.currencies.sort_by(|a, b| a.currency.cmp(&b.currency));
    Ok(())
}

/// Conversions of the treatment and holdout groups, measured alike: a recipient converts when
/// their phone or their subscription's customer id bought the release's variant within the
/// lift window after the restock, whatever the purchase was attributed to.
async fn lift<C: GenericClient>(
    c: &C,
    p: &[&(dyn tokio_postgres::types::ToSql + Sync); 5],
    window: Duration,
    f: &mut Figures,
) -> Result<(), StoreError> {
    // Two semi-joins (by phone, by customer id) united, rather than an OR per message, so
    // Postgres can hash the buyers once instead of probing an index per recipient.
    let sql = format!(
        "WITH {SCOPE}, \
         m AS (SELECT m.tenant_id, m.message_id, m.contact_id, m.status, sub.customer_id, \
                 s.variant_id, s.created_at \
               FROM scope s \
               JOIN messages m ON m.tenant_id = s.tenant_id AND m.release_id = s.release_id \
               JOIN subscriptions sub ON sub.tenant_id = m.tenant_id AND sub.subscription_id = m.subscription_id \
               WHERE m.kind = 'first'), \
         converted AS ( \
           SELECT m.message_id, m.status FROM m WHERE EXISTS ( \
             SELECT 1 FROM purchase_lines pl \
             WHERE pl.tenant_id = m.tenant_id AND pl.contact_id = m.contact_id AND pl.variant_id = m.variant_id \
               AND pl.purchased_at >= m.created_at \
               AND pl.purchased_at < m.created_at + make_interval(secs => $6)) \
           UNION \
           SELECT m.message_id, m.status FROM m WHERE EXISTS ( \
             SELECT 1 FROM purchase_lines pl \
             WHERE pl.tenant_id = m.tenant_id AND pl.customer_id = m.customer_id AND pl.variant_id = m.variant_id \
               AND pl.purchased_at >= m.created_at \
               AND pl.purchased_at < m.created_at + make_interval(secs => $6))) \
         SELECT count(*) FILTER (WHERE status <> 'held_out'), count(*) FILTER (WHERE status = 'held_out') \
         FROM converted"
    );
    let secs = window.num_seconds() as f64;
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = p.to_vec();
    params.push(&secs);
    let r = query_one(c, &sql, &params).await?;
    f.treatment_conversions = count(r.get(0));
    f.holdout_conversions = count(r.get(1));
    Ok(())
}

/// Signups, product views and confirmations over whole days in `time_zone`: the days of a
/// variant or period scope's range, or for one release the days after the day of the
/// variant's previous release up to the day of its own. Signups and views of a variant scope
/// (or a release's variant) are those naming the variant.
async fn signups<C: GenericClient>(
    c: &C,
    tenant_id: &str,
    scope: &Scope,
    time_zone: &str,
) -> Result<SignupFigures, StoreError> {
    // The last day of a range ending before `before` is the day of the instant just before it.
    let (variant_id, first_day, last_day): (Option<String>, Option<NaiveDate>, Option<NaiveDate>) =
        match scope {
            Scope::Release(release_id) => {
                let r = query_one(
                    c,
                    "SELECT r.variant_id, \
                       (SELECT max((p.created_at AT TIME ZONE $3)::date) + 1 FROM releases p \
                        WHERE p.tenant_id = r.tenant_id AND p.variant_id = r.variant_id \
                          AND (p.created_at AT TIME ZONE $3)::date < (r.created_at AT TIME ZONE $3)::date), \
                       (r.created_at AT TIME ZONE $3)::date \
                     FROM releases r WHERE r.tenant_id = $1 AND r.release_id = $2",
                    &[&tenant_id, release_id, &time_zone],
                )
                .await?;
                (Some(r.get(0)), r.get(1), Some(r.get(2)))
            }
            Scope::Variant {
                variant_id,
                from,
                before,
            } => {
                let r = query_one(
                    c,
                    "SELECT ($1::timestamptz AT TIME ZONE $3)::date, \
                       (($2::timestamptz - interval '1 microsecond') AT TIME ZONE $3)::date",
                    &[from, before, &time_zone],
                )
                .await?;
                (Some(variant_id.clone()), r.get(0), r.get(1))
            }
            Scope::Period { from, before } => {
                let r = query_one(
                    c,
                    "SELECT ($1::timestamptz AT TIME ZONE $3)::date, \
                       (($2::timestamptz - interval '1 microsecond') AT TIME ZONE $3)::date",
                    &[from, before, &time_zone],
                )
                .await?;
                (None, r.get(0), r.get(1))
            }
        };
    let r = query_one(
        c,
        // From the signup counts kept on write (V14): a row per variant and quarter hour, each
        // within one local day; the median wait alone reads the confirmed subscriptions.
        "WITH v AS ( \
           SELECT day, sum(view_count) AS n FROM product_views \
           WHERE tenant_id = $1 AND ($2::text IS NULL OR variant_id = $2) \
             AND ($3::date IS NULL OR day >= $3) AND ($4::date IS NULL OR day <= $4) \
           GROUP BY day), \
         c AS ( \
           SELECT (quarter AT TIME ZONE $5)::date AS day, sum(signups) AS signups, \
             sum(signups) FILTER (WHERE variant_id <> '') AS variant_signups, \
             sum(confirmation_requested) AS requested, sum(confirmed) AS confirmed \
           FROM signup_counts WHERE tenant_id = $1 AND ($2::text IS NULL OR variant_id = $2) \
             AND ($3::date IS NULL OR quarter >= ($3::date::timestamp AT TIME ZONE $5)) \
             AND ($4::date IS NULL OR quarter < (($4::date + 1)::timestamp AT TIME ZONE $5)) \
           GROUP BY 1) \
         SELECT (SELECT COALESCE(sum(signups), 0) FROM c)::bigint, \
           (SELECT EXISTS (SELECT 1 FROM v)), \
           (SELECT COALESCE(sum(n), 0) FROM v)::bigint, \
           (SELECT COALESCE(sum(c.signups), 0) FROM c JOIN v ON v.day = c.day)::bigint, \
           (SELECT COALESCE(sum(variant_signups), 0) FROM c)::bigint, \
           (SELECT COALESCE(sum(requested), 0) FROM c)::bigint, \
           (SELECT COALESCE(sum(confirmed), 0) FROM c)::bigint, \
           (SELECT percentile_disc(0.5) WITHIN GROUP ( \
              ORDER BY GREATEST(EXTRACT(EPOCH FROM s.confirmed_at - s.created_at), 0)::float8) \
            FROM subscriptions s WHERE s.tenant_id = $1 AND s.confirmation_requested \
              AND s.confirmed_at IS NOT NULL AND ($2::text IS NULL OR s.variant_id = $2) \
              AND ($3::date IS NULL OR s.created_at >= ($3::date::timestamp AT TIME ZONE $5)) \
              AND ($4::date IS NULL OR s.created_at < (($4::date + 1)::timestamp AT TIME ZONE $5)))",
        &[&tenant_id, &variant_id, &first_day, &last_day, &time_zone],
    )
    .await?;
    Ok(SignupFigures {
        first_day,
        last_day,
        signups: count(r.get(0)),
        views_reported: r.get(1),
        views: count(r.get(2)),
        signups_on_viewed_days: count(r.get(3)),
        variant_signups: count(r.get(4)),
        confirmation_requested: count(r.get(5)),
        confirmed: count(r.get(6)),
        time_to_confirm_median: r
            .get::<_, Option<f64>>(7)
            .map(std::time::Duration::from_secs_f64),
        statuses: query(
            c,
            "SELECT s.status, count(*) FROM subscriptions s WHERE s.tenant_id = $1 \
               AND ($2::text IS NULL OR s.variant_id = $2) \
               AND ($3::date IS NULL OR s.created_at >= ($3::date::timestamp AT TIME ZONE $5)) \
               AND ($4::date IS NULL OR s.created_at < (($4::date + 1)::timestamp AT TIME ZONE $5)) \
             GROUP BY s.status",
            &[&tenant_id, &variant_id, &first_day, &last_day, &time_zone],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), count(r.get(1))))
        .collect(),
    })
}

/// Units restocked and units of the variant sold, by anyone, within `window` after each
/// restock of the scope (lines at the release's location or naming none). Two releases of one
/// variant within `window` of each other both count the units bought in their overlap.
async fn sell_through<C: GenericClient>(
    c: &C,
    p: &[&(dyn tokio_postgres::types::ToSql + Sync); 5],
    window: Duration,
    f: &mut Figures,
) -> Result<(), StoreError> {
    let sql = format!(
        "WITH {SCOPE} \
         SELECT COALESCE(sum(r.available_at_restock), 0)::bigint, COALESCE(sum(sold.units), 0)::bigint \
         FROM scope s JOIN releases r ON r.tenant_id = s.tenant_id AND r.release_id = s.release_id \
         CROSS JOIN LATERAL ( \
           SELECT sum(pl.quantity) AS units FROM purchase_lines pl \
           WHERE pl.tenant_id = r.tenant_id AND pl.variant_id = r.variant_id \
             AND pl.purchased_at >= r.created_at \
             AND pl.purchased_at < r.created_at + make_interval(secs => $6) \
             AND (pl.location_id IS NULL OR r.location_id IS NULL OR pl.location_id = r.location_id)) sold"
    );
    let secs = window.num_seconds() as f64;
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = p.to_vec();
    params.push(&secs);
    let r = query_one(c, &sql, &params).await?;
    f.units_restocked = count(r.get(0));
    f.units_sold_after_restock = count(r.get(1));
    Ok(())
}

/// Attributed revenue of one day in one currency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayRevenue {
    pub currency: String,
    pub orders: u64,
    pub revenue_minor: i64,
    pub last_click_revenue_minor: i64,
}

/// One day of a period, in the tenant's time zone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayFigures {
    pub day: NaiveDate,
    pub release_count: u64,
    pub recipient_count: u64,
    pub held_out_count: u64,
    pub sent_count: u64,
    pub delivered_count: u64,
    pub clicked_count: u64,
    pub conversion_count: u64,
    pub revenue: Vec<DayRevenue>,
    pub signups: u64,
    pub views_reported: bool,
    pub views: u64,
}

impl DayFigures {
    /// Adds a release's figures (cached) to the day of its restock.
    fn add_release(&mut self, f: &Figures) {
        self.release_count += 1;
        self.recipient_count += f.recipient_count;
        self.held_out_count += f.held_out_count;
        self.sent_count += f.sent_count;
        self.delivered_count += f.delivered_count;
        self.clicked_count += f.clicked_count;
        self.conversion_count += f.conversion_count;
        for c in &f.currencies {
            self.add_revenue(DayRevenue {
                currency: c.currency.clone(),
                orders: c.orders,
                revenue_minor: c.revenue_minor,
                last_click_revenue_minor: c.last_click_revenue_minor,
            });
        }
    }

    fn add_revenue(&mut self, r: DayRevenue) {
        match self.revenue.iter_mut().find(|x| x.currency == r.currency) {
            Some(x) => {
                x.orders += r.orders;
                x.revenue_minor += r.revenue_minor;
                x.last_click_revenue_minor += r.last_click_revenue_minor;
            }
            None => {
                self.revenue.push(r);
                self.revenue.sort_by(|a, b| a.currency.cmp(&b.currency));
            }
        }
    }
}

impl Store {
    /// The period `[from, before)` day by day in `time_zone`: every day it touches, in order.
    /// Message figures go to the day of their release's restock (releases within the period),
    /// signups and views to their own day (whole days, like [`SignupFigures`]). Three grouped statements in one snapshot, whatever the number of days.
    pub async fn daily_figures(
        &self,
        tenant_id: &str,
        from: DateTime<Utc>,
        before: DateTime<Utc>,
        time_zone: &str,
    ) -> Result<Vec<DayFigures>, StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let p: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&tenant_id, &from, &before, &time_zone];
        let mut days: Vec<DayFigures> = query(
            &tx,
            "SELECT d::date FROM generate_series(($2::timestamptz AT TIME ZONE $4)::date, \
               (($3::timestamptz - interval '1 microsecond') AT TIME ZONE $4)::date, interval '1 day') d \
             WHERE $1::text IS NOT NULL",
            &p,
        )
        .await?
        .iter()
        .map(|r| DayFigures {
            day: r.get(0),
            ..DayFigures::default()
        })
        .collect();
        let index =
            |days: &[DayFigures], d: NaiveDate| days.binary_search_by_key(&d, |x| x.day).ok();
        // Releases with cached figures are added from the cache; the others are read.
        for r in query(
            &tx,
            "SELECT (r.created_at AT TIME ZONE $4)::date, f.figures FROM releases r \
             JOIN release_figures f ON f.tenant_id = r.tenant_id AND f.release_id = r.release_id \
             WHERE r.tenant_id = $1 AND r.created_at >= $2 AND r.created_at < $3",
            &p,
        )
        .await?
        {
            let f: Figures = serde_json::from_value(r.get(1)).map_err(|e| {
                StoreError::Config(format!("cached release figures unreadable: {e}"))
            })?;
            if let Some(i) = index(&days, r.get(0)) {
                days[i].add_release(&f);
            }
        }
        const RELEASES: &str = "scope AS (SELECT r.tenant_id, r.release_id, (r.created_at AT TIME ZONE $4)::date AS day \
            FROM releases r WHERE r.tenant_id = $1 AND r.created_at >= $2 AND r.created_at < $3 \
              AND NOT EXISTS (SELECT 1 FROM release_figures f \
                              WHERE f.tenant_id = r.tenant_id AND f.release_id = r.release_id))";
        for r in query(
            &tx,
            &format!(
                "WITH {RELEASES} \
                 SELECT s.day, count(DISTINCT s.release_id), \
                   count(m.message_id) FILTER (WHERE m.status <> 'held_out' AND m.kind = 'first'), \
                   count(m.message_id) FILTER (WHERE m.status = 'held_out' AND m.kind = 'first'), \
                   count(m.message_id) FILTER (WHERE m.status IN ('sent', 'delivered', 'undelivered')), \
                   count(m.message_id) FILTER (WHERE m.status = 'delivered'), \
                   count(m.message_id) FILTER (WHERE m.sent_at IS NOT NULL AND m.first_click_at IS NOT NULL) \
                 FROM scope s LEFT JOIN messages m ON m.tenant_id = s.tenant_id AND m.release_id = s.release_id \
                 GROUP BY s.day"
            ),
            &p,
        )
        .await?
        {
            if let Some(i) = index(&days, r.get(0)) {
                let d = &mut days[i];
                d.release_count += count(r.get(1));
                d.recipient_count += count(r.get(2));
                d.held_out_count += count(r.get(3));
                d.sent_count += count(r.get(4));
                d.delivered_count += count(r.get(5));
                d.clicked_count += count(r.get(6));
            }
        }
        // Per day (currency NULL) and per day and currency, in one pass.
        for r in query(
            &tx,
            &format!(
                "WITH {RELEASES} \
                 SELECT s.day, pl.currency, count(DISTINCT (pl.release_id, pl.order_id)), \
                   COALESCE(sum(pl.total_minor), 0)::bigint, \
                   COALESCE(sum(pl.total_minor) FILTER (WHERE pl.channel = 'sms_link'), 0)::bigint \
                 FROM scope s JOIN purchase_lines pl ON pl.tenant_id = s.tenant_id AND pl.release_id = s.release_id \
                 WHERE pl.basis IN ('text', 'click') \
                 GROUP BY GROUPING SETS ((s.day), (s.day, pl.currency)) ORDER BY 1, 2 NULLS FIRST"
            ),
            &p,
        )
        .await?
        {
            if let Some(i) = index(&days, r.get(0)) {
                let d = &mut days[i];
                match r.get::<_, Option<String>>(1) {
                    None => d.conversion_count += count(r.get(2)),
                    Some(currency) => d.add_revenue(DayRevenue {
                        currency,
                        orders: count(r.get(2)),
                        revenue_minor: r.get(3),
                        last_click_revenue_minor: r.get(4),
                    }),
                }
            }
        }
        // Refunds of the day's attributed lines, taken off its revenue.
        for r in query(
            &tx,
            &format!(
                "WITH {RELEASES} \
                 SELECT s.day, rl.currency, sum(rl.amount_minor)::bigint, \
                   COALESCE(sum(rl.amount_minor) FILTER (WHERE rl.channel = 'sms_link'), 0)::bigint \
                 FROM scope s JOIN refund_lines rl ON rl.tenant_id = s.tenant_id AND rl.release_id = s.release_id \
                 WHERE rl.basis IN ('text', 'click') GROUP BY 1, 2"
            ),
            &p,
        )
        .await?
        {
            if let Some(i) = index(&days, r.get(0)) {
                days[i].add_revenue(DayRevenue {
                    currency: r.get(1),
                    orders: 0,
                    revenue_minor: -r.get::<_, i64>(2),
                    last_click_revenue_minor: -r.get::<_, i64>(3),
                });
            }
        }
        // Signups and views by their own local day.
        for r in query(
            &tx,
            "WITH s AS (SELECT (quarter AT TIME ZONE $4)::date AS day, sum(signups) AS n FROM signup_counts \
                 WHERE tenant_id = $1 \
                   AND quarter >= (($2::timestamptz AT TIME ZONE $4)::date::timestamp AT TIME ZONE $4) \
                   AND quarter < (((($3::timestamptz - interval '1 microsecond') AT TIME ZONE $4)::date + 1)::timestamp AT TIME ZONE $4) \
                 GROUP BY 1), \
               v AS (SELECT day, sum(view_count) AS n FROM product_views WHERE tenant_id = $1 \
                 AND day >= ($2::timestamptz AT TIME ZONE $4)::date \
                 AND day <= (($3::timestamptz - interval '1 microsecond') AT TIME ZONE $4)::date GROUP BY day) \
             SELECT COALESCE(s.day, v.day), COALESCE(s.n, 0)::bigint, v.n IS NOT NULL, COALESCE(v.n, 0)::bigint \
             FROM s FULL JOIN v ON v.day = s.day",
            &p,
        )
        .await?
        {
            if let Some(i) = index(&days, r.get(0)) {
                let d = &mut days[i];
                d.signups = count(r.get(1));
                d.views_reported = r.get(2);
                d.views = count(r.get(3));
            }
        }
        tx.commit().await?;
        Ok(days)
    }
}
