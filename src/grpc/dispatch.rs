//! DispatchService: declared in the public API; its RPCs answer UNIMPLEMENTED until the
//! dispatch issue lands.

use crate::proto::v1::dispatch_service_server::DispatchService;

/// The service, with the generated default stubs.
pub struct DispatchApi;

impl DispatchService for DispatchApi {}
