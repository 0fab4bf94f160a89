//! Pure domain of restock: phones, consent, subscriptions, tenant policy and the eligibility
//! rules. No I/O lives here, so every business rule can be read and tested as plain code.

pub mod clock;
pub mod consent;
pub mod eligibility;
pub mod erasure;
pub mod fingerprint;
pub mod holdout;
pub mod link;
pub mod phone;
pub mod quiet_hours;
pub mod report;
pub mod restock;
pub mod states;
pub mod subscription;
pub mod tenant;
pub mod waves;

pub use consent::{ConsentEventKind, ConsentSource, ConsentState};
pub use phone::{Phone, PhoneError};
pub use states::{ConfirmationStatus, MessageStatus, ReleaseState, WaveState};
pub use subscription::{CancelReason, SubscriptionStatus, Target};
pub use tenant::TenantPolicy;
