//! AWS access: SDK configuration (region, profile, endpoint, retry policy),
//! polling with backoff, and one file per service.

pub mod autoscaling;
pub mod config;
pub mod ec2;
pub mod elbv2;
pub mod iam;
mod keep;
pub mod launch_template;
pub mod metric_alarms;
#[cfg(test)]
pub mod mocked;
pub mod platform;
pub mod route53;

pub use config::{
    autoscaling_in, check_region, ec2_in, ec2_per_region, load, region_of, AwsSettings,
    RegionError, DEFAULT_REGION,
};
pub use keep::Keep;

use aws_smithy_types::error::display::DisplayErrorContext;

/// An AWS call that failed after the SDK's retries.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} failed: {message}")]
pub struct ProviderError {
    /// The API operation, e.g. `route53:ChangeResourceRecordSets`.
    pub operation: &'static str,
    /// The service's error code, when it sent one.
    pub code: Option<String>,
    /// The whole error chain as text.
    pub message: String,
}

impl ProviderError {
    /// Wraps an SDK error, keeping its code and whole cause chain.
    pub fn from_sdk<E, R>(
        operation: &'static str,
        err: &aws_smithy_runtime_api::client::result::SdkError<E, R>,
    ) -> Self
    where
        E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let code = err
            .as_service_error()
            .and_then(|e| e.code())
            .map(str::to_owned);
        let message = match err.as_service_error() {
            Some(service) => format!(
                "{}: {}",
                service.code().unwrap_or("error"),
                service.message().unwrap_or("no message")
            ),
            None => DisplayErrorContext(err).to_string(),
        };
        Self {
            operation,
            code,
            message,
        }
    }
}
