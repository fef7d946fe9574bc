//! SDK configuration shared by every step.
//!
//! Credentials come only from the standard chain (environment, profile, SSO,
//! web identity, IMDS); `AWS_ENDPOINT_URL` (moto, LocalStack) works as in every
//! AWS SDK. The retry policy is the SDK's standard mode, whose classifier
//! already retries Route53's `Throttling` and `PriorRequestNotComplete`, with
//! exponential backoff and full jitter, bounded in attempts and delay.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

/// Attempts per call (the first try included) unless `AWS_MAX_ATTEMPTS` says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

/// The region when neither a flag, `AWS_REGION` nor the profile names one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// A name that is not a region's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag} {value:?} is not a region name (e.g. us-east-1)")]
pub struct RegionError {
    /// The flag (or field) that named it.
    pub flag: String,
    /// What it said.
    pub value: String,
}

impl crate::outcome::ExitStatus for RegionError {
    fn exit_code(&self) -> crate::outcome::Code {
        crate::outcome::Code::Usage
    }
}

/// Checks that `value`, given by `flag`, is shaped as a region name: lower
/// case words and a number joined by dashes, e.g. `us-east-1`,
/// `ap-southeast-2`, `us-gov-west-1`. Whether the region exists is AWS's to say.
pub fn check_region(flag: &str, value: &str) -> Result<(), RegionError> {
    let parts: Vec<&str> = value.split('-').collect();
    let words = &parts[..parts.len().saturating_sub(1)];
    let ok = parts.len() >= 3
        && words
            .iter()
            .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(RegionError {
            flag: flag.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// The region a loaded configuration calls.
pub fn region_of(config: &SdkConfig) -> String {
    config
        .region()
        .map_or_else(|| DEFAULT_REGION.to_owned(), ToString::to_string)
}

/// An EC2 client per region of `regions`, or for the configured region when
/// none is named.
pub fn ec2_per_region(
    config: &SdkConfig,
    regions: &[String],
) -> Vec<(String, aws_sdk_ec2::Client)> {
    if regions.is_empty() {
        let region = region_of(config);
        return vec![(region.clone(), ec2_in(config, &region))];
    }
    regions
        .iter()
        .map(|r| (r.clone(), ec2_in(config, r)))
        .collect()
}

/// An EC2 client of `config` that calls `region`.
pub fn ec2_in(config: &SdkConfig, region: &str) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::from_conf(
        aws_sdk_ec2::config::Builder::from(config)
            .region(Region::new(region.to_owned()))
            .build(),
    )
}

/// An EC2 Auto Scaling client of `config` that calls `region`.
pub fn autoscaling_in(config: &SdkConfig, region: &str) -> aws_sdk_autoscaling::Client {
    aws_sdk_autoscaling::Client::from_conf(
        aws_sdk_autoscaling::config::Builder::from(config)
            .region(Region::new(region.to_owned()))
            .build(),
    )
}

/// Where and as whom to call AWS.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    /// Region; falls back to the standard chain, then [`DEFAULT_REGION`].
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

/// The HTTPS client every SDK client uses: hyper with rustls on ring (the
/// crypto stack reqwest uses too) and the system's root certificates. One
/// client, so connections are pooled across the services of a step.
pub fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// Loads the SDK configuration. Without a region from the settings, the SDK's
/// own chain (environment, the profile named, IMDS) runs with the same HTTP
/// client, then [`DEFAULT_REGION`].
pub async fn load(settings: &AwsSettings) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(if plain_http_only(std::env::vars()) {
            // An emulator on plain HTTP (moto, LocalStack): no TLS, so no
            // trust store read from disk at start-up (hundreds of files).
            aws_smithy_http_client::Builder::new().build_http()
        } else {
            http_client()
        })
        .retry_config(retry_policy())
        .timeout_config(timeouts());
    // Where the environment already answers what the standard chains would
    // find first (a region in AWS_REGION or AWS_DEFAULT_REGION, keys in
    // AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), the rest of the chain is
    // not built: no profile files read for them, no IMDS, ECS or web identity
    // clients made. With --profile the chains run as the SDK orders them.
    let region = settings
        .region
        .clone()
        .or_else(|| settings.profile.is_none().then(env_region).flatten());
    if let Some(region) = region {
        loader = loader.region(Region::new(region));
    }
    if let Some(profile) = &settings.profile {
        loader = loader.profile_name(profile);
    } else if env_keys() {
        loader = loader.credentials_provider(
            aws_config::environment::credentials::EnvironmentVariableCredentialsProvider::new(),
        );
    }
    let config = loader.load().await;
    if config.region().is_some() {
        return config;
    }
    config
        .into_builder()
        .region(Region::from_static(DEFAULT_REGION))
        .build()
}

/// The region the SDK's environment provider would read first.
fn env_region() -> Option<String> {
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.trim().is_empty())
}

/// Whether the environment holds access keys (the credential chain's first link).
fn env_keys() -> bool {
    ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
        .iter()
        .all(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()))
}

/// Whether every endpoint a step calls is plain `http://`, as the
/// environment says: `AWS_ENDPOINT_URL` is, every service-specific
/// `AWS_ENDPOINT_URL_<SERVICE>` is too, and they are not ignored.
fn plain_http_only(vars: impl Iterator<Item = (String, String)>) -> bool {
    let mut global = false;
    for (k, v) in vars {
        match k.as_str() {
            "AWS_ENDPOINT_URL" => global = v.starts_with("http://"),
            "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS" if v.eq_ignore_ascii_case("true") => {
                return false
            }
            _ if k.starts_with("AWS_ENDPOINT_URL_") && !v.starts_with("http://") => return false,
            _ => {}
        }
    }
    global
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_all_plain_http_setup_goes_without_tls() {
        let env = |vars: &[(&str, &str)]| {
            plain_http_only(
                vars.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<Vec<_>>()
                    .into_iter(),
            )
        };
        let moto = ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000");
        assert!(env(&[moto]));
        assert!(env(&[
            moto,
            ("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:5001")
        ]));
        assert!(!env(&[("AWS_ENDPOINT_URL", "https://proxy.example.com")]));
        assert!(!env(&[]));
        assert!(!env(&[
            moto,
            ("AWS_ENDPOINT_URL_S3", "https://s3.example.com")
        ]));
        assert!(!env(&[
            moto,
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
        ]));
    }

    #[test]
    fn region_names_are_checked_in_one_place() {
        for good in [
            "us-east-1",
            "eu-west-1",
            "ap-southeast-2",
            "us-gov-west-1",
            "cn-north-1",
        ] {
            assert_eq!(check_region("--region", good), Ok(()), "{good}");
        }
        for bad in [
            "nowhere",
            "EU",
            "us-east",
            "us-east-1a",
            "us--1",
            "",
            "us-east-1 ",
        ] {
            assert!(check_region("--region", bad).is_err(), "{bad}");
        }
        assert_eq!(
            check_region("--regions", "EU").unwrap_err().to_string(),
            "--regions \"EU\" is not a region name (e.g. us-east-1)"
        );
    }
}
