//! The dispatch engine: plans releases into waves and sends their texts, exactly once, at the
//! pace the caps allow. Every replica runs it; Postgres row locks and leases coordinate them.
