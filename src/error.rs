//! Errors as callers see them: one table from every error kind to its gRPC code, with
//! `google.rpc` details. Internal errors are logged with context and answered opaquely.

use std::time::Duration;

use restock_store::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// An error answered to a caller.
#[derive(Debug)]
pub enum ApiError {
    /// Bad input: one (field, description) per violation.
    InvalidArgument(Vec<(String, String)>),
    NotFound(String),
    /// The caller may not act for the request's tenant.
    PermissionDenied(String),
    /// Consent or state forbids the call: (type, subject, description).
    FailedPrecondition {
        kind: &'static str,
        subject: String,
        description: String,
    },
    /// The resource exists with other content (an order id recorded with other lines).
    AlreadyExists(String),
    /// A dependency is down; the caller may retry.
    Unavailable(String),
    /// Anything else: logged here, never shown.
    Internal(String),
}

impl ApiError {
    /// A tenant the caller may not act for.
    pub fn tenant_denied(caller: &crate::auth::Caller, tenant_id: &str) -> Self {
        ApiError::PermissionDenied(format!(
            "caller \"{}\" may not act for tenant \"{tenant_id}\"",
            caller.name
        ))
    }

    pub fn field(field: &str, description: impl Into<String>) -> Self {
        ApiError::InvalidArgument(vec![(field.to_string(), description.into())])
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        match e {
            ApiError::InvalidArgument(violations) => {
                let mut details = ErrorDetails::new();
                for (field, description) in &violations {
                    details.add_bad_request_violation(field.clone(), description.clone());
                }
                let summary = violations
                    .iter()
                    .map(|(f, d)| format!("{f}: {d}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                Status::with_error_details(Code::InvalidArgument, summary, details)
            }
            ApiError::NotFound(what) => Status::not_found(what),
            ApiError::PermissionDenied(why) => Status::permission_denied(why),
            ApiError::AlreadyExists(what) => Status::already_exists(what),
            ApiError::FailedPrecondition {
                kind,
                subject,
                description,
            } => {
                let mut details = ErrorDetails::new();
                details.add_precondition_failure_violation(kind, subject, description.clone());
                Status::with_error_details(Code::FailedPrecondition, description, details)
            }
            ApiError::Unavailable(why) => {
                tracing::warn!(error = %why, "dependency unavailable");
                let mut details = ErrorDetails::new();
                details.set_retry_info(Some(Duration::from_secs(1)));
                Status::with_error_details(
                    Code::Unavailable,
                    "a dependency is unavailable, retry later",
                    details,
                )
            }
            ApiError::Internal(why) => {
                tracing::error!(error = %why, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            StoreError::OptedOut => ApiError::FailedPrecondition {
                kind: "CONSENT",
                subject: "phone_number".into(),
                description:
                    "the phone opted out of this tenant; only a new opt-in (OptIn) lifts an opt-out"
                        .into(),
            },
            StoreError::IdempotencyKeyReused => {
                ApiError::field("idempotency_key", "already used for a different request")
            }
            StoreError::WrongState(state) => ApiError::FailedPrecondition {
                kind: "STATE",
                subject: "subscription_id".into(),
                description: format!("the subscription is {state}"),
            },
            StoreError::DuplicateLevel(variant, location) => ApiError::field(
                "levels",
                format!("variant {variant} at location {location} appears twice in the snapshot"),
            ),
            StoreError::Refused {
                kind,
                subject,
                description,
            } => ApiError::FailedPrecondition {
                kind,
                subject: subject.into(),
                description,
            },
            StoreError::Unavailable(why) => ApiError::Unavailable(why),
            e @ (StoreError::Config(_) | StoreError::Migration(_) | StoreError::Db(_)) => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}
