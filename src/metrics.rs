//! Process metrics, exposed in the Prometheus text format on the HTTP listener's `/metrics`.

/// The process's counters and histograms.
#[derive(Debug, Default)]
pub struct Metrics {}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// A message reached `outcome` (sent, failed, suppressed, skipped, unknown, deferred,
    /// retried, held_out).
    pub fn message_outcome(&self, _tenant: &str, _outcome: &str) {}

    /// One hand-over to the provider took `seconds`.
    pub fn send_seconds(&self, _seconds: f64) {}

    /// A cap denied a text; `scope` is phone, sender or tenant.
    pub fn cap_denied(&self, _scope: &str) {}

    /// From the restock (inventory event committed) to the release's first text handed over.
    pub fn restock_to_first_text_seconds(&self, _seconds: f64) {}

    /// Releases planned, with their recipient count.
    pub fn release_planned(&self, _tenant: &str, _recipients: u64) {}

    /// The exposition text.
    pub fn render(&self) -> String {
        String::new()
    }
}
