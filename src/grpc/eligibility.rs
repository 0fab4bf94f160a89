//! EligibilityService: declared in the public API; its RPCs answer UNIMPLEMENTED until the
//! inventory and eligibility issue lands.

use crate::proto::v1::eligibility_service_server::EligibilityService;

/// The service, with the generated default stubs.
pub struct EligibilityApi;

impl EligibilityService for EligibilityApi {}
