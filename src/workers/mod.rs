//! The dispatch engine: plans releases into waves and sends their texts, exactly once, at the
//! pace the caps allow. Every replica runs it; Postgres row locks and leases coordinate them.
//!
//! - the scheduler ([`scheduler`]) plans new releases, opens due waves (reading the stock
//!   again each time), completes finished releases and reconciles expired leases;
//! - senders ([`sender`]) claim due messages in batches, check eligibility again, take capacity
//!   from the Redis caps, hand the texts to the provider with bounded concurrency, and record
//!   the outcomes.

pub mod confirm;
pub mod health;
pub mod janitor;
pub mod planner;
pub mod scheduler;
pub mod sender;

// The eligibility evaluation the sender, the planner and `Explain` share lives in the
// application layer; the workers use it from there.
pub use crate::app::eligibility::{evaluate, region_of, Known};

use std::sync::Arc;
use std::time::Duration;

use restock_caps::Caps;
use restock_sms::provider::Provider;
use restock_store::dispatch::Lane;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::DispatchSettings;
use crate::state::AppState;

/// What the engine's tasks share.
pub struct Engine {
    pub state: Arc<AppState>,
    pub provider: Arc<dyn Provider>,
    pub caps: Caps,
    pub settings: DispatchSettings,
    /// This process's name on the leases it holds.
    pub owner: String,
    /// Woken when a wave opens, so idle senders claim at once.
    pub work: Notify,
    /// Texts in flight to the provider, at most `settings.concurrency`.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Hand-over fences open at once (each holds a database connection; see `sender`).
    pub fences: Arc<tokio::sync::Semaphore>,
    /// The express lane's own provider slots and fence (see [`Lane`]): its texts never wait
    /// behind a bulk batch's hand-overs for either.
    pub express: Slots,
    /// Where the provider posts delivery reports (`None` for providers that have none).
    pub status_callback: Option<String>,
}

/// Provider requests and hand-over fences a sender may hold at once.
pub struct Slots {
    pub in_flight: Arc<tokio::sync::Semaphore>,
    pub fences: Arc<tokio::sync::Semaphore>,
}

impl Slots {
    /// The express lane's: each express sender's batch in flight together.
    pub fn express() -> Self {
        Self {
            in_flight: Arc::new(tokio::sync::Semaphore::new(EXPRESS_SLOTS)),
            fences: Arc::new(tokio::sync::Semaphore::new(EXPRESS_SENDERS as usize)),
        }
    }
}

/// The express sender's batch, and its texts in flight at once.
pub const EXPRESS_BATCH: u32 = 100;
const EXPRESS_SLOTS: usize = 32;
/// Express senders per process: while one records its batch's outcomes, the other claims.
const EXPRESS_SENDERS: u32 = 3;
/// How long a small release's due text is the express lane's alone.
pub const EXPRESS_FIRST_CALL: Duration = Duration::from_secs(1);

impl Engine {
    /// The lane of the process's bulk senders.
    pub fn bulk_lane(&self) -> Lane {
        match self.settings.express_max_texts {
            0 => Lane::Any,
            n => Lane::Bulk {
                small_max: n.min(i32::MAX as u32) as i32,
                first_call: EXPRESS_FIRST_CALL,
            },
        }
    }

    /// The express sender's lane, when there is one.
    pub fn express_lane(&self) -> Option<Lane> {
        match self.settings.express_max_texts {
            0 => None,
            n => Some(Lane::Express {
                small_max: n.min(i32::MAX as u32) as i32,
            }),
        }
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.settings.lease_seconds.into())
    }

    /// How long before its lease runs out a sender stops beginning hand-overs: the lease is
    /// judged on this process's monotonic clock from before the claim, and the margin absorbs
    /// the time between that check and the request, and clocks of replicas that disagree.
    pub fn margin(&self) -> Duration {
        (self.lease() / 5)
            .max(Duration::from_secs(1))
            .min(self.lease() / 2)
    }

    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.settings.poll_interval_ms)
    }
}

/// Starts the scheduler and the senders on `tasks`; they stop when `stop` is cancelled.
pub fn start(engine: Arc<Engine>, tasks: &TaskTracker, stop: CancellationToken) {
    tasks.spawn(scheduler::run(engine.clone(), stop.clone()));
    // A few senders, so one batch's database work overlaps another's hand-overs.
    let senders = engine.settings.concurrency.div_ceil(32).clamp(2, 8);
    let bulk = engine.bulk_lane();
    for i in 0..senders {
        tasks.spawn(sender::run(engine.clone(), i, bulk, stop.clone()));
    }
    if let Some(express) = engine.express_lane() {
        for i in senders..senders + EXPRESS_SENDERS {
            tasks.spawn(sender::run(engine.clone(), i, express, stop.clone()));
        }
    }
}

/// What one [`step`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Step {
    /// Releases planned.
    pub planned: u32,
    /// Waves opened.
    pub opened: u64,
    /// Messages the senders claimed and decided: sent, or deferred, skipped, failed, each
    /// one's outcome recorded.
    pub claimed: usize,
}

/// One pass of every worker, in the order the loops meet a restock: the scheduler (plans,
/// opens due waves, completes, reconciles), the confirmation texts, then the senders until no
/// message is due. For a process started without `dispatch.background`.
pub async fn step(engine: &Arc<Engine>) -> anyhow::Result<Step> {
    let pass = scheduler::run_once(engine).await?;
    confirm::run_once(engine).await?;
    let mut claimed = 0;
    // Bounded, so a message that stays due (a fault) ends the step rather than spinning.
    for _ in 0..10_000 {
        let batch = sender::send_once(engine).await?;
        if batch == 0 {
            break;
        }
        claimed += batch;
    }
    Ok(Step {
        planned: pass.planned,
        opened: pass.opened,
        claimed,
    })
}
