//! `just demo`: a simulated back-in-stock program driven through the public API of a running
//! server (gRPC, the tracked links and the provider's webhooks), whose outcomes are drawn with a
//! known truth, then the reports read back. The api test `demo` runs the same simulation
//! against a test server and checks every count of the reports against [`Truth`].
//!
//! Per restock: shoppers subscribe, the storefront reports product views, stock comes back, the
//! server plans and sends (holding a share out), and then the "world" answers: the provider
//! reports deliveries and failures (signed webhooks), some shoppers reply STOP, some follow
//! their link (once or twice), and some buy. Buying is drawn without replacement: in each group
//! (texted, held out) exactly `round(rate × size)` shoppers buy, chosen by the seed, so the true
//! lift is [`TEXTED_RATE`] − [`HOLDOUT_RATE`] by construction, not just in expectation.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{stream, StreamExt, TryStreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::auth::Bearer;
use crate::proto::v1 as pb;
use crate::proto::v1::dispatch_service_client::DispatchServiceClient;
use crate::proto::v1::eligibility_service_client::EligibilityServiceClient;
use crate::proto::v1::waitlist_service_client::WaitlistServiceClient;

type Channel = tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;

/// Share of held-out shoppers who buy anyway, within the window.
pub const HOLDOUT_RATE: f64 = 0.06;
/// Share of texted shoppers (every recipient, delivered or not: intention to treat) who buy.
pub const TEXTED_RATE: f64 = 0.18;
/// Of texts handed over, the share the carrier reports delivered; the rest fail as below.
const DELIVERED: f64 = 0.92;
/// Undelivered: unreachable handset (30003), carrier filtering (30007, a complaint); failed
/// (30008, unknown error).
const UNREACHABLE: f64 = 0.03;
const FILTERED: f64 = 0.02;
/// Of delivered texts, the share whose shopper follows the link, and of those who click twice.
const CLICK: f64 = 0.30;
const CLICK_TWICE: f64 = 0.2;
/// Of delivered texts, the share answered STOP.
const STOP: f64 = 0.02;
/// Calls in flight at once.
const CONCURRENCY: usize = 24;

/// One restock of the program.
#[derive(Debug, Clone)]
pub struct Restock {
    /// The brand: its policy sets the release strategy (see `config/dev.toml`).
    pub tenant_id: &'static str,
    pub strategy: &'static str,
    pub title: &'static str,
    pub price_minor: i64,
    pub currency: &'static str,
    /// Units back in stock, as a share of the shoppers waiting.
    pub stock_share: f64,
}

/// The program: four restocks over three brands, one of them priced in euros so a brand's
/// period report has two currencies.
pub fn program() -> Vec<Restock> {
    vec![
        Restock {
            tenant_id: "sim-immediate",
            strategy: "IMMEDIATE",
            title: "Trail Runner 42",
            price_minor: 12_900,
            currency: "USD",
            stock_share: 0.5,
        },
        Restock {
            tenant_id: "sim-immediate",
            strategy: "IMMEDIATE",
            title: "Trail Runner 42 (EU)",
            price_minor: 11_900,
            currency: "EUR",
            stock_share: 0.5,
        },
        Restock {
            tenant_id: "sim-staged",
            strategy: "STAGED",
            title: "Rain Shell M",
            price_minor: 18_500,
            currency: "USD",
            stock_share: 0.6,
        },
        Restock {
            tenant_id: "sim-proportional",
            strategy: "PROPORTIONAL",
            title: "Wool Beanie",
            price_minor: 3_500,
            currency: "USD",
            // Waves of stock × 1.5: three waves for everyone waiting.
            stock_share: 0.25,
        },
    ]
}

/// Where and how to reach the server.
#[derive(Debug, Clone)]
pub struct Options {
    /// gRPC, e.g. `http://127.0.0.1:50051`.
    pub grpc_url: String,
    /// The HTTP listener as the server names it in links and signs webhooks with
    /// (`http.public_base_url`), e.g. `http://127.0.0.1:8080`.
    pub http_url: String,
    pub token: String,
    /// The provider auth token the server checks webhook signatures with.
    pub webhook_token: String,
    /// Seeds every draw.
    pub seed: u64,
    /// Shoppers waiting per restock.
    pub shoppers: usize,
    /// Distinguishes this run's variants, phones and orders from earlier runs on one server
    /// (it draws nothing).
    pub run_id: u64,
}

/// What the simulation did to one restock, counted by the simulation itself: what every
/// report figure must equal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Truth {
    pub signups: u64,
    pub views: u64,
    pub recipients: u64,
    pub held_out: u64,
    /// Handed over and accepted by the provider: sent, delivered or undelivered (not failed).
    pub sent: u64,
    pub delivered: u64,
    pub undelivered: u64,
    pub failed: u64,
    pub complaints: u64,
    /// By error code, as the failures of the report.
    pub failures: Vec<(String, u64)>,
    pub clicks: u64,
    pub unique_clicks: u64,
    pub opt_outs: u64,
    /// Orders credited to a text (TEXT or CLICK): buyers whose text was handed over and not
    /// failed.
    pub conversions: u64,
    /// Of those, orders placed through the link (last click).
    pub last_click_conversions: u64,
    pub revenue_minor: i64,
    pub last_click_revenue_minor: i64,
    pub units: u64,
    pub texted_buyers: u64,
    pub holdout_buyers: u64,
}

/// One restock's outcome: the truth and the report the server gave.
#[derive(Debug, Clone)]
pub struct RestockOutcome {
    pub restock: Restock,
    pub release_id: String,
    pub truth: Truth,
    pub report: pb::AttributionReport,
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub restocks: Vec<RestockOutcome>,
    /// Per brand, the period report of the days the run touched.
    pub periods: Vec<(String, pb::GetPeriodReportResponse)>,
    /// The true lift: [`TEXTED_RATE`] − [`HOLDOUT_RATE`].
    pub true_lift: f64,
}

/// How the simulation lets time pass while the server works: a real server is waited for; a
/// test server's clock is moved on.
pub trait Pace {
    fn pass(&self) -> impl Future<Output = ()> + Send;
}

/// Waits in real time.
#[derive(Debug, Clone, Copy)]
pub struct RealTime;

impl Pace for RealTime {
    async fn pass(&self) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Clients {
    waitlist: WaitlistServiceClient<Channel>,
    eligibility: EligibilityServiceClient<Channel>,
    dispatch: DispatchServiceClient<Channel>,
    http: reqwest::Client,
}

/// Runs the program; see the module header. `progress` is told what happens, a line at a time.
pub async fn run(
    opts: &Options,
    pace: &impl Pace,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<Outcome> {
    let channel = tonic::transport::Channel::from_shared(opts.grpc_url.clone())?
        .connect()
        .await
        .with_context(|| format!("connecting to {} (is `just run` serving?)", opts.grpc_url))?;
    let channel =
        tonic::service::interceptor::InterceptedService::new(channel, Bearer::new(&opts.token));
    // reqwest is built without a TLS crypto provider (see restock-sms); the demo speaks plain
    // HTTP, but a client cannot be built without one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = Clients {
        waitlist: WaitlistServiceClient::new(channel.clone()),
        eligibility: EligibilityServiceClient::new(channel.clone()),
        dispatch: DispatchServiceClient::new(channel),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?,
    };
    let mut restocks = Vec::new();
    for (k, r) in program().into_iter().enumerate() {
        progress(&format!(
            "restock {}: {} ({}, {}), {} shoppers waiting",
            k + 1,
            r.title,
            r.tenant_id,
            r.strategy,
            opts.shoppers
        ));
        restocks.push(one_restock(&c, opts, pace, k, r).await?);
    }
    let mut periods = Vec::new();
    let now = chrono::Utc::now();
    let day = |d: chrono::DateTime<chrono::Utc>| prost_types::Timestamp {
        seconds: d
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp(),
        nanos: 0,
    };
    let mut tenants: Vec<&str> = restocks.iter().map(|r| r.restock.tenant_id).collect();
    tenants.dedup();
    for t in tenants {
        let p = c
            .dispatch
            .clone()
            .get_period_report(pb::GetPeriodReportRequest {
                tenant_id: t.into(),
                start_time: Some(day(now - chrono::Duration::days(1))),
                end_time: Some(day(now + chrono::Duration::days(2))),
            })
            .await?
            .into_inner();
        periods.push((t.to_string(), p));
    }
    Ok(Outcome {
        restocks,
        periods,
        true_lift: TEXTED_RATE - HOLDOUT_RATE,
    })
}

/// A shopper of one restock, and everything drawn for them up front.
struct Shopper {
    phone: String,
    subscription_id: String,
    rng: StdRng,
}

fn phone(opts: &Options, k: usize, i: usize) -> String {
    // Distinct within a run (at most 10,000 shoppers per restock); exchanges 200-999.
    let n = (opts.run_id.wrapping_mul(7_919) % 8_000 * 10_000
        + (k as u64 * opts.shoppers as u64 + i as u64))
        % 8_000_000;
    format!("+1415{:03}{:04}", 200 + n / 10_000, n % 10_000)
}

async fn one_restock(
    c: &Clients,
    opts: &Options,
    pace: &impl Pace,
    k: usize,
    r: Restock,
) -> anyhow::Result<RestockOutcome> {
    let variant = format!("sim-{}-{k}", opts.run_id);
    let product = format!("sim-{}-p{k}", opts.run_id);
    let mut truth = Truth::default();
    let mut rng = StdRng::seed_from_u64(opts.seed ^ (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));

    // Signups.
    let shoppers: Vec<Shopper> = stream::iter(0..opts.shoppers)
        .map(|i| {
            let phone = phone(opts, k, i);
            let mut w = c.waitlist.clone();
            let variant = variant.clone();
            let product = product.clone();
            let title = r.title;
            let seed = rng_seed(opts.seed, k, i);
            async move {
                let s = w
                    .subscribe(pb::SubscribeRequest {
                        tenant_id: r.tenant_id.into(),
                        variant_id: variant,
                        product_id: product,
                        phone_number: phone.clone(),
                        default_region: "US".into(),
                        consent: Some(pb::Consent {
                            consent_text: "Text me when it's back. Reply STOP to opt out.".into(),
                            source: pb::ConsentSource::Web as i32,
                            capture_time: Some(now_ts()),
                            ..Default::default()
                        }),
                        variant: Some(pb::VariantDetails {
                            title: title.into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await
                    .context("Subscribe")?
                    .into_inner();
                let subscription_id = s
                    .subscription
                    .map(|s| s.subscription_id)
                    .unwrap_or_default();
                anyhow::Ok(Shopper {
                    phone,
                    subscription_id,
                    rng: StdRng::seed_from_u64(seed),
                })
            }
        })
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    truth.signups = shoppers.len() as u64;

    // Product views of today, as the storefront counts them.
    truth.views = opts.shoppers as u64 * rng.random_range(6..12);
    c.dispatch
        .clone()
        .record_product_views(pb::RecordProductViewsRequest {
            tenant_id: r.tenant_id.into(),
            counts: vec![pb::ProductViewCount {
                variant_id: variant.clone(),
                day: chrono::Utc::now().date_naive().to_string(),
                source: "web".into(),
                view_count: truth.views,
                ..Default::default()
            }],
        })
        .await
        .context("RecordProductViews")?;

    // The restock.
    let stock = ((opts.shoppers as f64 * r.stock_share).ceil() as i64).max(1);
    let ack = c
        .eligibility
        .clone()
        .report_inventory(pb::ReportInventoryRequest {
            tenant_id: r.tenant_id.into(),
            events: vec![pb::InventoryEvent {
                event_id: format!("sim-{}-{k}", opts.run_id),
                variant_id: variant.clone(),
                product_id: product.clone(),
                location_id: "web".into(),
                available_to_sell: stock,
                order: Some(pb::inventory_event::Order::SequenceNumber(1)),
                ..Default::default()
            }],
        })
        .await
        .context("ReportInventory")?
        .into_inner();
    let Some(ack) = ack.acks.first().filter(|a| a.restock_started) else {
        bail!("the restock of {variant} did not start: {ack:?}");
    };
    let release_id = release_of(c, r.tenant_id, &ack.restock_id, pace).await?;

    // Every text handed over (or held out): the release has ended and nothing waits.
    let messages = settled_messages(c, r.tenant_id, &release_id, pace).await?;
    let mut by_subscription: HashMap<String, Shopper> = shoppers
        .into_iter()
        .map(|s| (s.subscription_id.clone(), s))
        .collect();

    struct Texted {
        message: pb::Message,
        shopper: Shopper,
        outcome: &'static str,
        clicked: bool,
    }
    let mut texted = Vec::new();
    let mut held = Vec::new();
    for m in messages {
        if m.kind != pb::MessageKind::First as i32 {
            continue;
        }
        let Some(shopper) = by_subscription.remove(&m.subscription_id) else {
            bail!("message {} is for no shopper of this run", m.message_id);
        };
        if m.status == pb::MessageStatus::HeldOut as i32 {
            truth.held_out += 1;
            held.push((m, shopper));
        } else if m.status == pb::MessageStatus::Sent as i32 {
            truth.recipients += 1;
            truth.sent += 1;
            texted.push(Texted {
                message: m,
                shopper,
                outcome: "",
                clicked: false,
            });
        } else {
            bail!(
                "message {} ended {} rather than sent or held out",
                m.message_id,
                m.status
            );
        }
    }

    // Delivery reports and replies.
    let mut failures: HashMap<&str, u64> = HashMap::new();
    for t in &mut texted {
        let u: f64 = t.shopper.rng.random();
        t.outcome = if u < DELIVERED {
            "delivered"
        } else if u < DELIVERED + UNREACHABLE {
            "30003"
        } else if u < DELIVERED + UNREACHABLE + FILTERED {
            "30007"
        } else {
            "30008"
        };
        match t.outcome {
            "delivered" => truth.delivered += 1,
            "30008" => truth.failed += 1,
            _ => truth.undelivered += 1,
        }
        if t.outcome == "30007" {
            truth.complaints += 1;
        }
        if t.outcome != "delivered" {
            *failures.entry(t.outcome).or_default() += 1;
        }
    }
    // A text the provider reports failed was never accepted: not counted as sent.
    truth.sent -= truth.failed;
    truth.failures = failures.into_iter().map(|(k, v)| (k.into(), v)).collect();
    truth
        .failures
        .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    stream::iter(texted.iter())
        .map(|t| {
            let (status, code) = match t.outcome {
                "delivered" => ("delivered", None),
                "30008" => ("failed", Some(t.outcome)),
                code => ("undelivered", Some(code)),
            };
            let mut form = vec![
                ("MessageSid", t.message.provider_message_id.clone()),
                ("MessageStatus", status.to_string()),
                ("To", t.shopper.phone.clone()),
            ];
            if let Some(code) = code {
                form.push(("ErrorCode", code.to_string()));
            }
            webhook(c, opts, "status", form)
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;

    // Clicks and STOP replies from delivered texts.
    let mut clicks = Vec::new();
    let mut stops = Vec::new();
    for t in texted.iter_mut().filter(|t| t.outcome == "delivered") {
        if t.shopper.rng.random_bool(CLICK) {
            t.clicked = true;
            let times = if t.shopper.rng.random_bool(CLICK_TWICE) {
                2
            } else {
                1
            };
            truth.unique_clicks += 1;
            truth.clicks += times;
            let token = link_token(&t.message.body)
                .with_context(|| format!("no link in text {}", t.message.message_id))?;
            for _ in 0..times {
                clicks.push(token.clone());
            }
        }
        if t.shopper.rng.random_bool(STOP) {
            truth.opt_outs += 1;
            stops.push(vec![
                ("From", t.shopper.phone.clone()),
                ("To", t.message.sender_id.clone()),
                ("Body", "STOP".to_string()),
                (
                    "MessageSid",
                    format!("SMsim{}{:024x}", opts.run_id, stops.len() + 1_000 * k),
                ),
            ]);
        }
    }
    // Two clicks of one link go one after the other, so the first is the first click.
    stream::iter(clicks.chunk_by(|a, b| a == b).map(|g| g.to_vec()))
        .map(|tokens| async move {
            for token in tokens {
                let url = format!("{}/r/{token}", opts.http_url);
                let res = c.http.get(&url).send().await?;
                if !res.status().is_redirection() {
                    bail!("GET {url}: {}", res.status());
                }
            }
            anyhow::Ok(())
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    stream::iter(stops)
        .map(|form| webhook(c, opts, "inbound", form))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;

    // Who buys: exactly round(rate × size) of each group, chosen by the seed.
    let buyers = |n: usize, rate: f64, rng: &mut StdRng| -> Vec<bool> {
        let k = (n as f64 * rate).round() as usize;
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        let mut buys = vec![false; n];
        for &i in &order[..k] {
            buys[i] = true;
        }
        buys
    };
    let texted_buys = buyers(texted.len(), TEXTED_RATE, &mut rng);
    let held_buys = buyers(held.len(), HOLDOUT_RATE, &mut rng);
    // The click times the server recorded: a buyer through the link buys after clicking.
    let clicked_at: HashMap<String, prost_types::Timestamp> = if clicks.is_empty() {
        HashMap::new()
    } else {
        list_messages(c, r.tenant_id, &release_id)
            .await?
            .into_iter()
            .filter_map(|m| m.first_click_time.map(|t| (m.message_id, t)))
            .collect()
    };
    let mut orders = Vec::new();
    for (t, _) in texted.iter_mut().zip(&texted_buys).filter(|(_, b)| **b) {
        truth.texted_buyers += 1;
        let through_link = t.clicked;
        let channel = if through_link {
            pb::PurchaseChannel::SmsLink
        } else {
            [
                pb::PurchaseChannel::Web,
                pb::PurchaseChannel::App,
                pb::PurchaseChannel::Store,
            ][t.shopper.rng.random_range(0..3)]
        };
        let since = if through_link {
            clicked_at
                .get(&t.message.message_id)
                .cloned()
                .context("a clicked text without its click time")?
        } else {
            t.message
                .send_time
                .context("a sent text without its time")?
        };
        let quantity = if t.shopper.rng.random_bool(0.1) { 2 } else { 1 };
        let total = r.price_minor * i64::from(quantity);
        if t.outcome != "30008" {
            truth.conversions += 1;
            truth.units += u64::from(quantity);
            truth.revenue_minor += total;
            if through_link {
                truth.last_click_conversions += 1;
                truth.last_click_revenue_minor += total;
            }
        }
        let delay = t.shopper.rng.random_range(5..240);
        orders.push((
            t.shopper.phone.clone(),
            since,
            delay,
            quantity,
            total,
            channel,
        ));
    }
    for ((m, s), _) in held.iter_mut().zip(&held_buys).filter(|(_, b)| **b) {
        truth.holdout_buyers += 1;
        let quantity = 1;
        let delay = s.rng.random_range(5..240);
        let since = m.create_time.context("a message without its time")?;
        orders.push((
            s.phone.clone(),
            since,
            delay,
            quantity,
            r.price_minor,
            pb::PurchaseChannel::Web,
        ));
    }
    stream::iter(orders.into_iter().enumerate())
        .map(|(n, (phone, since, delay, quantity, total, channel))| {
            let mut d = c.dispatch.clone();
            let variant = variant.clone();
            async move {
                d.record_purchase(pb::RecordPurchaseRequest {
                    tenant_id: r.tenant_id.into(),
                    order_id: format!("sim-{}-{k}-{n}", opts.run_id),
                    phone_number: phone,
                    default_region: "US".into(),
                    lines: vec![pb::PurchaseLine {
                        variant_id: variant,
                        quantity,
                        total_price: Some(pb::Money {
                            amount_minor: total,
                            currency_code: r.currency.into(),
                        }),
                        location_id: String::new(),
                    }],
                    purchase_time: Some(prost_types::Timestamp {
                        seconds: since.seconds + delay,
                        nanos: since.nanos,
                    }),
                    channel: channel as i32,
                    ..Default::default()
                })
                .await
                .context("RecordPurchase")?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;

    let report = c
        .dispatch
        .clone()
        .get_release_report(pb::GetReleaseReportRequest {
            tenant_id: r.tenant_id.into(),
            release_id: release_id.clone(),
        })
        .await
        .context("GetReleaseReport")?
        .into_inner()
        .report
        .context("a report")?;
    Ok(RestockOutcome {
        restock: r,
        release_id,
        truth,
        report,
    })
}

fn rng_seed(seed: u64, k: usize, i: usize) -> u64 {
    // splitmix64 of the three, so neighbouring shoppers draw unrelated streams.
    let mut z = seed
        .wrapping_add((k as u64) << 32)
        .wrapping_add(i as u64)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn now_ts() -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() - 60,
        nanos: 0,
    }
}

/// The token of the tracked link in a text's body (`.../r/{token}`).
fn link_token(body: &str) -> Option<String> {
    let at = body.find("/r/")? + 3;
    let token: String = body[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    (!token.is_empty()).then_some(token)
}

/// Posts a provider webhook, signed as the provider signs it.
async fn webhook(
    c: &Clients,
    opts: &Options,
    kind: &str,
    form: Vec<(&str, String)>,
) -> anyhow::Result<()> {
    let url = format!("{}/webhooks/twilio/{kind}", opts.http_url);
    let params: Vec<(String, String)> = form
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let signature = crate::http::signature::twilio_signature(&opts.webhook_token, &url, &params);
    let res = c
        .http
        .post(&url)
        .header("X-Twilio-Signature", signature)
        .form(&params)
        .send()
        .await?;
    if !res.status().is_success() {
        bail!(
            "POST {url}: {} (is sms.twilio_auth_token the demo's --webhook-token?)",
            res.status()
        );
    }
    Ok(())
}

/// The release of `restock_id`, once planned.
async fn release_of(
    c: &Clients,
    tenant_id: &str,
    restock_id: &str,
    pace: &impl Pace,
) -> anyhow::Result<String> {
    for _ in 0..600 {
        let releases = c
            .dispatch
            .clone()
            .list_releases(pb::ListReleasesRequest {
                tenant_id: tenant_id.into(),
                restock_id: restock_id.into(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .releases;
        if let Some(r) = releases.first() {
            return Ok(r.release_id.clone());
        }
        pace.pass().await;
    }
    bail!("no release for restock {restock_id}")
}

async fn list_messages(
    c: &Clients,
    tenant_id: &str,
    release_id: &str,
) -> anyhow::Result<Vec<pb::Message>> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = c
            .dispatch
            .clone()
            .list_messages(pb::ListMessagesRequest {
                tenant_id: tenant_id.into(),
                release_id: release_id.into(),
                page_size: 500,
                page_token,
                ..Default::default()
            })
            .await?
            .into_inner();
        out.extend(page.messages);
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        page_token = page.next_page_token;
    }
}

/// The release's messages once it has ended and none waits to be sent.
async fn settled_messages(
    c: &Clients,
    tenant_id: &str,
    release_id: &str,
    pace: &impl Pace,
) -> anyhow::Result<Vec<pb::Message>> {
    use pb::ReleaseState as S;
    for _ in 0..1_500 {
        let release = c
            .dispatch
            .clone()
            .get_release(pb::GetReleaseRequest {
                tenant_id: tenant_id.into(),
                release_id: release_id.into(),
            })
            .await?
            .into_inner()
            .release
            .context("a release")?;
        if [S::Completed, S::SoldOut, S::Cancelled]
            .iter()
            .any(|s| *s as i32 == release.state)
        {
            let messages = list_messages(c, tenant_id, release_id).await?;
            let waiting = [
                pb::MessageStatus::Planned,
                pb::MessageStatus::Deferred,
                pb::MessageStatus::Sending,
            ];
            if !messages
                .iter()
                .any(|m| waiting.iter().any(|s| *s as i32 == m.status))
            {
                return Ok(messages);
            }
        }
        pace.pass().await;
    }
    bail!("release {release_id} did not finish sending")
}

/// A plain text table: a header, a rule, rows; columns padded to their widest cell, numbers
/// to the right.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            width[i] = width[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = width[i] - cell.chars().count();
            let numeric = i > 0
                && cell
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit() || c == '-' || c == '+');
            if i > 0 {
                s.push_str("  ");
            }
            if numeric {
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.push_str(&" ".repeat(pad));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    out.push_str(&line(
        width
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(|s| s.as_str())
            .collect(),
    ));
    for r in rows {
        out.push_str(&line(r.iter().map(|s| s.as_str()).collect()));
    }
    out
}

fn pct(r: &Option<pb::Ratio>) -> String {
    match r {
        Some(pb::Ratio {
            numerator,
            denominator,
            value: Some(v),
        }) => format!("{:.1}% ({numerator}/{denominator})", v * 100.0),
        Some(r) => format!("n/a ({}/{})", r.numerator, r.denominator),
        None => "n/a".into(),
    }
}

fn money(m: &Option<pb::Money>) -> String {
    match m {
        Some(m) => {
            let sign = if m.amount_minor < 0 { "-" } else { "" };
            let a = m.amount_minor.unsigned_abs();
            format!("{sign}{}.{:02} {}", a / 100, a % 100, m.currency_code)
        }
        None => "n/a".into(),
    }
}

fn secs(d: &Option<prost_types::Duration>) -> String {
    d.as_ref()
        .map(|d| format!("{}m{:02}s", d.seconds / 60, d.seconds % 60))
        .unwrap_or_else(|| "n/a".into())
}

/// The lift as "+12.3 pts [8.1, 16.4]", or why there is none.
fn lift_cell(l: &pb::ConversionLift) -> String {
    if !l.available {
        return format!(
            "n/a ({})",
            pb::LiftUnavailableReason::try_from(l.unavailable_reason)
                .map(|r| r.as_str_name())
                .unwrap_or("?")
        );
    }
    let i = l.difference_interval.unwrap_or_default();
    format!(
        "{:+.1} pts [{:+.1}, {:+.1}]{}",
        l.difference * 100.0,
        i.lower * 100.0,
        i.upper * 100.0,
        if l.significant {
            ""
        } else {
            " not significant"
        }
    )
}

/// The run's reports as the terminal shows them.
pub fn render(o: &Outcome) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "\nTrue lift drawn: {:+.1} pts (texted {:.0}% vs held out {:.0}%)\n\n",
        o.true_lift * 100.0,
        TEXTED_RATE * 100.0,
        HOLDOUT_RATE * 100.0
    ));
    out.push_str("Restocks (GetReleaseReport)\n");
    let rows: Vec<Vec<String>> = o
        .restocks
        .iter()
        .map(|r| {
            let p = &r.report;
            vec![
                r.restock.title.to_string(),
                r.restock.strategy.to_string(),
                p.recipient_count.to_string(),
                p.held_out_count.to_string(),
                p.sent_count.to_string(),
                pct(&p.delivery_rate),
                pct(&p.click_through_rate),
                p.opt_outs_per_thousand_texts
                    .map(|v| format!("{v:.1}"))
                    .unwrap_or_else(|| "n/a".into()),
                p.complaints_per_thousand_texts
                    .map(|v| format!("{v:.1}"))
                    .unwrap_or_else(|| "n/a".into()),
                pct(&p.conversion_rate),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "restock",
            "strategy",
            "texted",
            "held out",
            "sent",
            "delivered",
            "clicked",
            "opt-outs/1k",
            "complaints/1k",
            "converted/text",
        ],
        &rows,
    ));
    out.push_str("\nRevenue and incrementality (per currency, never summed across currencies)\n");
    let mut rows = Vec::new();
    for r in &o.restocks {
        let p = &r.report;
        let lift = p.lift.unwrap_or_default();
        for c in &p.revenue {
            let inc = c.incremental_revenue.as_ref();
            rows.push(vec![
                r.restock.title.to_string(),
                c.conversion_count.to_string(),
                money(&c.revenue),
                money(&c.last_click_revenue),
                money(&c.revenue_per_text),
                secs(&p.time_to_purchase_median),
                lift_cell(&lift),
                inc.map(|i| {
                    format!(
                        "{} [{}, {}]",
                        money(&i.estimate),
                        money(&i.lower),
                        money(&i.upper)
                    )
                })
                .unwrap_or_else(|| "n/a".into()),
            ]);
        }
    }
    out.push_str(&table(
        &[
            "restock",
            "orders",
            "revenue (assisted)",
            "last click",
            "per text",
            "median to buy",
            "lift, 95% CI (Newcombe)",
            "incremental revenue [95% CI]",
        ],
        &rows,
    ));
    out.push_str("\nDemand and messaging\n");
    let rows: Vec<Vec<String>> = o
        .restocks
        .iter()
        .map(|r| {
            let p = &r.report;
            let s = p.signups.clone().unwrap_or_default();
            let failures = p
                .failures
                .iter()
                .map(|f| format!("{}×{}", f.error_code, f.count))
                .collect::<Vec<_>>()
                .join(" ");
            vec![
                r.restock.title.to_string(),
                s.signup_count.to_string(),
                s.product_view_count.to_string(),
                pct(&s.signup_rate),
                p.segment_count.to_string(),
                p.click_count.to_string(),
                p.unique_click_count.to_string(),
                failures,
                pct(&p.sell_through),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "restock",
            "signups",
            "views",
            "signup rate",
            "segments",
            "clicks",
            "unique",
            "failed by code",
            "sell-through 24h",
        ],
        &rows,
    ));
    for (tenant, p) in &o.periods {
        let Some(r) = &p.report else { continue };
        out.push_str(&format!(
            "\nPeriod report of {tenant} (GetPeriodReport, days in {})\n",
            p.time_zone
        ));
        let rows: Vec<Vec<String>> = p
            .days
            .iter()
            .map(|d| {
                vec![
                    d.day.clone(),
                    d.release_count.to_string(),
                    d.signup_count.to_string(),
                    d.sent_count.to_string(),
                    pct(&d.delivery_rate),
                    pct(&d.click_through_rate),
                    d.conversion_count.to_string(),
                    d.revenue
                        .iter()
                        .map(|x| money(&x.revenue))
                        .collect::<Vec<_>>()
                        .join(" + "),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "day",
                "restocks",
                "signups",
                "sent",
                "delivered",
                "clicked",
                "orders",
                "revenue",
            ],
            &rows,
        ));
        out.push_str(&format!(
            "total: {} restocks, {} texts sent, lift {}\n",
            r.release_count,
            r.sent_count,
            lift_cell(&r.lift.unwrap_or_default())
        ));
    }
    out
}
