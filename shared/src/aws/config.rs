//! SDK configuration shared by every step.
//!
//! Credentials come only from the standard chain (environment, profile, SSO,
//! web identity, IMDS); `AWS_ENDPOINT_URL` (moto, LocalStack) works as in every
//! AWS SDK. The retry policy is the SDK's standard mode, whose classifier
//! already retries Route53's `Throttling` and `PriorRequestNotComplete`, with
//! exponential backoff and full jitter, bounded in attempts and delay.

use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

/// Attempts per call (the first try included) unless `AWS_MAX_ATTEMPTS` says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

/// Where and as whom to call AWS.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    /// Region; falls back to the standard chain, then `us-east-1`.
    pub region: Option<String>,
    /// Profile from the shared config files.
    pub profile: Option<String>,
}

/// The retry policy: standard mode, jittered exponential backoff from 200 ms up
/// to 20 s, `AWS_MAX_ATTEMPTS` (default 8) attempts per call.
pub fn retry_policy() -> RetryConfig {
    let attempts = std::env::var("AWS_MAX_ATTEMPTS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(DEFAULT_MAX_ATTEMPTS);
    RetryConfig::standard()
        .with_max_attempts(attempts)
        .with_initial_backoff(Duration::from_millis(200))
        .with_max_backoff(Duration::from_secs(20))
}

/// Per-attempt time-outs, so that a hung connection is retried rather than waited on forever.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(30))
        .build()
}

/// Loads the SDK configuration.
pub async fn load(settings: &AwsSettings) -> SdkConfig {
    let region = RegionProviderChain::first_try(settings.region.clone().map(Region::new))
        .or_default_provider()
        .or_else(Region::from_static("us-east-1"));
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .retry_config(retry_policy())
        .timeout_config(timeouts());
    if let Some(profile) = &settings.profile {
        loader = loader.profile_name(profile);
    }
    loader.load().await
}
