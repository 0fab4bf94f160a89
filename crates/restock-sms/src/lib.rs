//! SMS for restock: what a text costs ([`encoding`]), the restock text itself ([`template`]),
//! the [`Provider`] trait every sender implements, a Twilio Messages client ([`twilio`]), a JSONL
//! file provider for development ([`log`]), and, behind the `fake` feature, a loopback Twilio for
//! tests (`fake`).

pub mod encoding;
pub mod failover;
#[cfg(feature = "fake")]
pub mod fake;
pub mod log;
pub mod provider;
pub mod template;
pub mod twilio;

pub use encoding::{analyze, fit_title, Analysis, Encoding, Fitted, TooLong};
pub use failover::Failover;
pub use log::LogProvider;
pub use provider::{
    MessageReport, MessageStatus, OutboundSms, Provider, SendError, SendReceipt, Sender,
};
pub use template::{Rendered, Template, TemplateError, TemplateInput};
pub use twilio::{TwilioClient, TwilioConfig};
