//! Who this host is: on EC2, read from the instance metadata service (IMDSv2
//! only: a session token from `PUT /latest/api/token`, then `GET`s that carry
//! it) with short time-outs, so that a machine that is not on EC2 hears so in
//! seconds; off AWS, given by the flags (`--provider NAME --host-id ID --address IP`).
//!
//! The client honours the settings every AWS SDK reads:
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT` (tests point it at moto's server),
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE` (`IPv4` or `IPv6`) and
//! `AWS_EC2_METADATA_DISABLED`. Other clouds' metadata services, and the
//! detection of which one a host is on, are in [`super::metadata`]. It is not `aws_config::imds::Client` because
//! that client refuses a token answer without the
//! `X-aws-ec2-metadata-token-ttl-seconds` header, which moto's server does not
//! send; this one asks for a TTL, uses the token at once, and does not insist
//! on hearing the TTL back. The token is never logged or kept.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::Url;
use serde::Serialize;

use super::InputError;
use crate::outcome::{Code, ExitStatus};

/// The provider name of EC2 hosts.
pub const AWS: &str = "aws";

/// Overrides the metadata endpoint (e.g. `http://127.0.0.1:5000`).
pub const ENDPOINT_ENV: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";
/// `IPv4` (default) or `IPv6`, when no endpoint is set.
pub const ENDPOINT_MODE_ENV: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE";
/// `true` turns the metadata service off for every AWS tool.
pub const DISABLED_ENV: &str = "AWS_EC2_METADATA_DISABLED";

const IPV4_ENDPOINT: &str = "http://169.254.169.254/";
const IPV6_ENDPOINT: &str = "http://[fd00:ec2::254]/";
const TOKEN_PATH: &str = "latest/api/token";
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";

/// Who a host is and where traffic reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// The instance id on EC2; the given id elsewhere.
    pub host_id: String,
    /// `aws`, or the name of the other provider or data center.
    pub provider: String,
    /// The instance's region (EC2 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The instance's availability zone (EC2 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// The address traffic reaches it at, which is registered (on a cloud
    /// its private address unless the public one is asked for).
    pub address: IpAddr,
    /// The public address another cloud's metadata names (shown, not registered
    /// unless asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_address: Option<IpAddr>,
}

impl Identity {
    /// Whether the host is an EC2 instance.
    pub fn is_aws(&self) -> bool {
        self.provider == AWS
    }

    /// A host off AWS, as the flags name it. Checked before any call.
    pub fn given(provider: &str, host_id: &str, address: &str) -> Result<Self, InputError> {
        check_provider(provider)?;
        if provider == AWS {
            return Err(InputError::Conflict(
                "--host-id and --address are for hosts off AWS; on EC2 the instance metadata \
                 says who the host is (drop them, or name the other provider with --provider)"
                    .to_owned(),
            ));
        }
        let invalid = |flag, value: &str, why: &str| InputError::Invalid {
            flag,
            value: value.to_owned(),
            why: why.to_owned(),
        };
        if host_id.is_empty() || host_id.len() > 128 {
            return Err(invalid("--host-id", host_id, "must be 1 to 128 characters"));
        }
        if let Some(c) = host_id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':')))
        {
            return Err(invalid(
                "--host-id",
                host_id,
                &format!("holds {c:?}; use letters, digits, '.', '_', '-' or ':'"),
            ));
        }
        let address = address.trim().parse::<IpAddr>().map_err(|_| {
            invalid(
                "--address",
                address,
                "is not an IP address; give the address the load balancer reaches the host at",
            )
        })?;
        Ok(Self {
            host_id: host_id.to_owned(),
            provider: provider.to_owned(),
            region: None,
            availability_zone: None,
            address,
            public_address: None,
        })
    }
}

/// Checks a provider name: `aws`, or another's in lower case letters, digits and `-`.
pub fn check_provider(name: &str) -> Result<(), InputError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(InputError::Invalid {
            flag: "--provider",
            value: name.to_owned(),
            why: "must be `aws` or another provider's name in lower case letters, digits and '-' \
                  (e.g. gcp, hetzner, dc-fra1)"
                .to_owned(),
        })
    }
}

/// Why the instance metadata could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Turned off by `AWS_EC2_METADATA_DISABLED`.
    #[error(
        "instance metadata is turned off ({DISABLED_ENV}={value}); on EC2 unset it, \
         off AWS pass --provider NAME --host-id ID --address IP"
    )]
    Disabled { value: String },
    /// A malformed endpoint setting.
    #[error("{setting}={value:?} {why}")]
    Endpoint {
        setting: &'static str,
        value: String,
        why: String,
    },
    /// No answer from the endpoint: not on EC2, or a network problem.
    #[error(
        "cannot reach the instance metadata service at {endpoint}: {detail}. Is this host \
         an EC2 instance? Off AWS, pass --provider NAME --host-id ID --address IP"
    )]
    Unreachable { endpoint: String, detail: String },
    /// The endpoint answered the token request with an error.
    #[error(
        "the instance metadata service at {endpoint} refused an IMDSv2 session token \
         (HTTP {status}): {hint}"
    )]
    TokenRefused {
        endpoint: String,
        status: u16,
        hint: &'static str,
    },
    /// A metadata path answered with an error.
    #[error("instance metadata {path} answered HTTP {status}{hint}")]
    Status {
        path: String,
        status: u16,
        hint: &'static str,
    },
    /// A metadata request failed on the way.
    #[error("instance metadata {path} could not be read: {detail}")]
    Request { path: String, detail: String },
    /// A metadata path answered something that cannot be right.
    #[error("instance metadata {path} returned {value:?}, which is not {expected}")]
    Unexpected {
        path: String,
        value: String,
        expected: &'static str,
    },
    /// No answer from another cloud's metadata service named by `--provider`.
    #[error(
        "cannot reach the {provider} metadata service at {endpoint}: {detail}. Is this host \
         on {provider}? Elsewhere pass --provider NAME --host-id ID --address IP (or point \
         {setting} at the service)"
    )]
    CloudUnreachable {
        provider: &'static str,
        endpoint: String,
        setting: &'static str,
        detail: String,
    },
    /// An answer without the header GCP's metadata server always sends.
    #[error(
        "{path} answered without the Metadata-Flavor: Google header, so it is not GCP's \
         metadata server"
    )]
    NotGoogle { path: String },
    /// `--provider auto` found no metadata service that answers as a known cloud's does.
    #[error(
        "no metadata service says who this host is (tried {tried}). Off EC2, DigitalOcean, \
         GCP and Azure pass --provider NAME --host-id ID --address IP; on one of them with an \
         unusual network point {ENDPOINT_ENV}, SWITCHYARD_METADATA_DIGITALOCEAN, \
         SWITCHYARD_METADATA_GCP or SWITCHYARD_METADATA_AZURE at its metadata service"
    )]
    NoneFound { tried: String },
    /// The metadata names no address of the kind asked for.
    #[error(
        "the {provider} metadata names no {kind} address for this host: register its {other} \
         address (--address-kind {other}), or pass --provider {provider} --host-id ID --address IP"
    )]
    NoAddress {
        provider: &'static str,
        kind: &'static str,
        other: &'static str,
    },
}

impl IdentityError {
    /// Why one candidate of `--provider auto` is not this host's cloud, in a few words.
    pub fn reason(&self) -> String {
        match self {
            Self::Unreachable { detail, .. }
            | Self::CloudUnreachable { detail, .. }
            | Self::Request { detail, .. } => detail.clone(),
            Self::TokenRefused { status, .. } => {
                format!("no IMDSv2 session token (HTTP {status})")
            }
            Self::Status { path, status, .. } => format!("{path} answered HTTP {status}"),
            Self::Unexpected { path, expected, .. } => format!("{path} is not {expected}"),
            Self::NotGoogle { path } => format!("{path} lacks the Metadata-Flavor: Google header"),
            other => other.to_string(),
        }
    }
}

impl ExitStatus for IdentityError {
    fn exit_code(&self) -> Code {
        match self {
            Self::Disabled { .. }
            | Self::Endpoint { .. }
            | Self::NoneFound { .. }
            | Self::NoAddress { .. } => Code::Usage,
            _ => Code::Provider,
        }
    }
}

/// Where and how patiently to ask the metadata service.
#[derive(Debug, Clone)]
pub struct ImdsSettings {
    /// The service's base URL.
    pub endpoint: Url,
    /// Time-out to connect (a machine off EC2 has nothing at 169.254.169.254).
    pub connect_timeout: Duration,
    /// Time-out of one request, answer included.
    pub timeout: Duration,
    /// Tries per request (the first included); server errors and failed connections are retried.
    pub attempts: u32,
    /// The lifetime asked for the session token.
    pub token_ttl: Duration,
}

impl ImdsSettings {
    /// One second to connect, as the AWS SDKs allow.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    /// Two seconds per request.
    pub const TIMEOUT: Duration = Duration::from_secs(2);
    /// One retry.
    pub const ATTEMPTS: u32 = 2;
    /// The token is used at once; five minutes is plenty.
    pub const TOKEN_TTL: Duration = Duration::from_secs(300);

    /// The settings from the environment (see the module documentation).
    pub fn from_env() -> Result<Self, IdentityError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// The settings from `lookup` (an environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, IdentityError> {
        if let Some(value) = lookup(DISABLED_ENV) {
            if value.trim().eq_ignore_ascii_case("true") {
                return Err(IdentityError::Disabled { value });
            }
        }
        if let Some(endpoint) = lookup(ENDPOINT_ENV).filter(|v| !v.trim().is_empty()) {
            return Self::with_endpoint(&endpoint);
        }
        match lookup(ENDPOINT_MODE_ENV).filter(|v| !v.trim().is_empty()) {
            None => Self::with_endpoint(IPV4_ENDPOINT),
            Some(mode) if mode.trim().eq_ignore_ascii_case("ipv4") => {
                Self::with_endpoint(IPV4_ENDPOINT)
            }
            Some(mode) if mode.trim().eq_ignore_ascii_case("ipv6") => {
                Self::with_endpoint(IPV6_ENDPOINT)
            }
            Some(mode) => Err(IdentityError::Endpoint {
                setting: ENDPOINT_MODE_ENV,
                value: mode,
                why: "is neither IPv4 nor IPv6".to_owned(),
            }),
        }
    }

    /// The default time-outs and retries against `endpoint`.
    pub fn with_endpoint(endpoint: &str) -> Result<Self, IdentityError> {
        Ok(Self {
            endpoint: base_url(ENDPOINT_ENV, endpoint)?,
            connect_timeout: Self::CONNECT_TIMEOUT,
            timeout: Self::TIMEOUT,
            attempts: Self::ATTEMPTS,
            token_ttl: Self::TOKEN_TTL,
        })
    }

    fn endpoint_text(&self) -> String {
        self.endpoint.as_str().trim_end_matches('/').to_owned()
    }
}

/// A metadata service's base URL from `setting`: http(s) with a host, ending in `/`.
pub(super) fn base_url(setting: &'static str, endpoint: &str) -> Result<Url, IdentityError> {
    let bad = |why: String| IdentityError::Endpoint {
        setting,
        value: endpoint.to_owned(),
        why,
    };
    let mut url = Url::parse(endpoint.trim())
        .map_err(|e| bad(format!("is not a URL ({e}); e.g. http://169.254.169.254")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(bad("is not an http(s) URL with a host".to_owned()));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// An IMDSv2 session token; its `Debug` never shows it.
struct Token(HeaderValue);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(** withheld **)")
    }
}

/// A small IMDSv2 client: one session token, reused, refreshed once on a 401.
#[derive(Debug)]
pub struct Imds {
    http: reqwest::Client,
    settings: ImdsSettings,
    token: Option<Token>,
}

impl Imds {
    /// A client with these settings.
    pub fn new(settings: ImdsSettings) -> Result<Self, IdentityError> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            // The metadata service is link-local: never through a proxy, never redirected.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| IdentityError::Request {
                path: settings.endpoint_text(),
                detail: e.to_string(),
            })?;
        Ok(Self {
            http,
            settings,
            token: None,
        })
    }

    fn url(&self, path: &str) -> Result<Url, IdentityError> {
        self.settings
            .endpoint
            .join(path)
            .map_err(|e| IdentityError::Request {
                path: path.to_owned(),
                detail: e.to_string(),
            })
    }

    async fn pause(&self) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    async fn token(&mut self) -> Result<HeaderValue, IdentityError> {
        if let Some(token) = &self.token {
            return Ok(token.0.clone());
        }
        let url = self.url(TOKEN_PATH)?;
        let ttl = self.settings.token_ttl.as_secs().max(1).to_string();
        let mut attempt = 1;
        loop {
            let sent = self
                .http
                .put(url.clone())
                .header(TTL_HEADER, &ttl)
                .send()
                .await;
            match sent {
                Ok(answer) if answer.status().is_success() => {
                    let body = answer.text().await.map_err(|e| IdentityError::Request {
                        path: format!("/{TOKEN_PATH}"),
                        detail: describe(&e, self.settings.timeout),
                    })?;
                    let mut value = HeaderValue::from_str(body.trim())
                        .ok()
                        .filter(|v| !v.is_empty())
                        .ok_or_else(|| IdentityError::Unexpected {
                            path: format!("/{TOKEN_PATH}"),
                            value: "(token withheld)".to_owned(),
                            expected: "a session token",
                        })?;
                    value.set_sensitive(true);
                    self.token = Some(Token(value.clone()));
                    return Ok(value);
                }
                Ok(answer)
                    if answer.status().is_server_error() && attempt < self.settings.attempts =>
                {
                    tracing::debug!("IMDS token request answered {}; retrying", answer.status());
                }
                Ok(answer) => {
                    let status = answer.status().as_u16();
                    return Err(IdentityError::TokenRefused {
                        endpoint: self.settings.endpoint_text(),
                        status,
                        hint: token_hint(status),
                    });
                }
                Err(e) if attempt < self.settings.attempts => {
                    tracing::debug!(
                        "IMDS token request failed ({}); retrying",
                        describe(&e, self.settings.timeout)
                    );
                }
                Err(e) => {
                    return Err(IdentityError::Unreachable {
                        endpoint: self.settings.endpoint_text(),
                        detail: describe(&e, self.settings.timeout),
                    })
                }
            }
            attempt += 1;
            self.pause().await;
        }
    }

    /// The value at `path` (e.g. `latest/meta-data/instance-id`), trimmed.
    pub async fn get(&mut self, path: &str) -> Result<String, IdentityError> {
        let url = self.url(path)?;
        let shown = format!("/{}", path.trim_start_matches('/'));
        let mut attempt = 1;
        let mut refreshed = false;
        loop {
            let token = self.token().await?;
            let sent = self
                .http
                .get(url.clone())
                .header(TOKEN_HEADER, token)
                .send()
                .await;
            match sent {
                Ok(answer) if answer.status().is_success() => {
                    let text = answer.text().await.map_err(|e| IdentityError::Request {
                        path: shown.clone(),
                        detail: describe(&e, self.settings.timeout),
                    })?;
                    return Ok(text.trim().to_owned());
                }
                Ok(answer) if answer.status().as_u16() == 401 && !refreshed => {
                    // The token expired (or the service restarted): get a new one, once.
                    self.token = None;
                    refreshed = true;
                    continue;
                }
                Ok(answer)
                    if answer.status().is_server_error() && attempt < self.settings.attempts =>
                {
                    tracing::debug!("IMDS {shown} answered {}; retrying", answer.status());
                }
                Ok(answer) => {
                    let status = answer.status().as_u16();
                    return Err(IdentityError::Status {
                        path: shown,
                        status,
                        hint: match status {
                            404 => " (not found: this metadata is not served here)",
                            401 => " (the session token was refused twice)",
                            _ => "",
                        },
                    });
                }
                Err(e) if attempt < self.settings.attempts => {
                    tracing::debug!(
                        "IMDS {shown} failed ({}); retrying",
                        describe(&e, self.settings.timeout)
                    );
                }
                Err(e) => {
                    return Err(IdentityError::Request {
                        path: shown,
                        detail: describe(&e, self.settings.timeout),
                    })
                }
            }
            attempt += 1;
            self.pause().await;
        }
    }
}

fn token_hint(status: u16) -> &'static str {
    match status {
        403 => {
            "the metadata service is turned off for this instance; turn it on with \
             `aws ec2 modify-instance-metadata-options --http-endpoint enabled`, \
             or pass --provider NAME --host-id ID --address IP"
        }
        400 => "the request was malformed (the TTL header was refused)",
        404 | 405 => "this endpoint does not speak IMDSv2",
        _ if status >= 500 => "the service failed; try again",
        _ => "unexpected answer",
    }
}

/// A transport error in a few words: the innermost cause, or the time-out.
pub(super) fn describe(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("no answer within {}", crate::wait::progress::short(timeout));
    }
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Reads this instance's identity: instance id, region, availability zone, private IPv4.
pub async fn from_imds(settings: &ImdsSettings) -> Result<Identity, IdentityError> {
    let mut imds = Imds::new(settings.clone())?;
    let host_id = imds.get("latest/meta-data/instance-id").await?;
    let region = imds.get("latest/meta-data/placement/region").await?;
    let zone = imds
        .get("latest/meta-data/placement/availability-zone")
        .await?;
    let address = imds.get("latest/meta-data/local-ipv4").await?;
    let unexpected = |path: &str, value: &str, expected| IdentityError::Unexpected {
        path: format!("/latest/meta-data/{path}"),
        value: value.to_owned(),
        expected,
    };
    let plain = |s: &str| {
        !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if !plain(&host_id) || !host_id.starts_with("i-") {
        return Err(unexpected(
            "instance-id",
            &host_id,
            "an instance id (i-...)",
        ));
    }
    if !plain(&region) {
        return Err(unexpected("placement/region", &region, "a region name"));
    }
    if !plain(&zone) {
        return Err(unexpected(
            "placement/availability-zone",
            &zone,
            "an availability zone name",
        ));
    }
    let address = address
        .parse::<IpAddr>()
        .map_err(|_| unexpected("local-ipv4", &address, "an IP address"))?;
    tracing::debug!("instance metadata: {host_id} in {zone} at {address}");
    Ok(Identity {
        host_id,
        provider: AWS.to_owned(),
        region: Some(region),
        availability_zone: Some(zone),
        address,
        public_address: None,
    })
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;
    use crate::host::stand_in::{env, Seen, StandIn};

    /// moto's answers: a token without a TTL header; metadata only with that token.
    fn moto_like(seen: &Seen, _: usize) -> (u16, Vec<(&'static str, String)>, String) {
        if seen.method == "PUT" && seen.path == "/latest/api/token" {
            return (200, vec![], "token-1".into());
        }
        if seen.headers.get(TOKEN_HEADER).map(String::as_str) != Some("token-1") {
            return (401, vec![], String::new());
        }
        let body = match seen.path.as_str() {
            "/latest/meta-data/instance-id" => "i-0123456789abcdef0",
            "/latest/meta-data/placement/region" => "eu-west-1",
            "/latest/meta-data/placement/availability-zone" => "eu-west-1b",
            "/latest/meta-data/local-ipv4" => "10.1.2.3\n",
            _ => return (404, vec![], String::new()),
        };
        (200, vec![], body.into())
    }

    #[tokio::test]
    async fn identity_is_read_with_one_token_whose_ttl_header_may_be_missing() {
        let imds = StandIn::start(Box::new(moto_like)).await;
        let identity = from_imds(&imds.settings()).await.unwrap();
        assert_eq!(
            identity,
            Identity {
                host_id: "i-0123456789abcdef0".into(),
                provider: "aws".into(),
                region: Some("eu-west-1".into()),
                availability_zone: Some("eu-west-1b".into()),
                address: "10.1.2.3".parse().unwrap(),
                public_address: None,
            }
        );
        let seen = imds.seen();
        assert_eq!(seen.len(), 5, "one token, four reads: {seen:?}");
        assert_eq!(seen[0].method, "PUT");
        assert_eq!(
            seen[0].headers.get(TTL_HEADER).map(String::as_str),
            Some("300")
        );
        assert!(seen[1..].iter().all(|s| s.method == "GET"));
    }

    #[tokio::test]
    async fn a_refused_token_is_a_clear_error_with_exit_3_and_is_not_retried() {
        let imds = StandIn::start(Box::new(|_, _| (403, vec![], String::new()))).await;
        let err = from_imds(&imds.settings()).await.unwrap_err();
        assert!(
            matches!(err, IdentityError::TokenRefused { status: 403, .. }),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("refused an IMDSv2 session token (HTTP 403)")
                && message.contains("modify-instance-metadata-options"),
            "{message}"
        );
        assert_eq!(err.exit_code(), Code::Provider);
        assert_eq!(imds.seen().len(), 1);
    }

    #[tokio::test]
    async fn server_errors_are_retried_a_few_times_then_reported() {
        let imds = StandIn::start(Box::new(|seen: &Seen, before| {
            if seen.method == "PUT" && before == 0 {
                (503, vec![], String::new())
            } else {
                moto_like(seen, before)
            }
        }))
        .await;
        assert!(from_imds(&imds.settings()).await.is_ok());

        let failing = StandIn::start(Box::new(|_, _| (500, vec![], String::new()))).await;
        let err = from_imds(&failing.settings()).await.unwrap_err();
        assert!(matches!(
            err,
            IdentityError::TokenRefused { status: 500, .. }
        ));
        assert_eq!(
            failing.seen().len(),
            2,
            "{} attempts",
            ImdsSettings::ATTEMPTS
        );
    }

    #[tokio::test]
    async fn an_expired_token_is_renewed_once() {
        let imds = StandIn::start(Box::new(|seen: &Seen, before| match seen.method.as_str() {
            "PUT" => (
                200,
                vec![(TTL_HEADER, "300".into())],
                format!("token-{before}"),
            ),
            // The first token (issued by request 0) has expired by the time it is used.
            _ if seen.headers.get(TOKEN_HEADER).map(String::as_str) == Some("token-0") => {
                (401, vec![], String::new())
            }
            _ => (200, vec![], "i-0abc".into()),
        }))
        .await;
        let mut client = Imds::new(imds.settings()).unwrap();
        assert_eq!(
            client.get("latest/meta-data/instance-id").await.unwrap(),
            "i-0abc"
        );
        let methods: Vec<String> = imds.seen().into_iter().map(|s| s.method).collect();
        assert_eq!(methods, ["PUT", "GET", "PUT", "GET"]);
        assert!(
            !format!("{client:?}").contains("token-2"),
            "the token is never shown"
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_unreachable_quickly_with_exit_3() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let began = std::time::Instant::now();
        let err = from_imds(&ImdsSettings::with_endpoint(&endpoint).unwrap())
            .await
            .unwrap_err();
        assert!(began.elapsed() < Duration::from_secs(5));
        assert!(matches!(err, IdentityError::Unreachable { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!(
                "cannot reach the instance metadata service at {endpoint}"
            )) && message.contains("Is this host an EC2 instance?"),
            "{message}"
        );
        assert_eq!(err.exit_code(), Code::Provider);
    }

    #[tokio::test]
    async fn a_silent_endpoint_times_out_within_the_short_time_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let _hold = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket); // accepted, never answered
            }
        });
        let mut settings = ImdsSettings::with_endpoint(&endpoint).unwrap();
        settings.timeout = Duration::from_millis(300);
        let began = std::time::Instant::now();
        let err = from_imds(&settings).await.unwrap_err();
        assert!(began.elapsed() < Duration::from_secs(3));
        assert!(err.to_string().contains("no answer within 300ms"), "{err}");
    }

    #[tokio::test]
    async fn answers_that_cannot_be_right_are_refused() {
        let imds = StandIn::start(Box::new(|seen: &Seen, before| {
            if seen.path == "/latest/meta-data/local-ipv4" {
                (200, vec![], "not-an-address".into())
            } else {
                moto_like(seen, before)
            }
        }))
        .await;
        let err = from_imds(&imds.settings()).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "instance metadata /latest/meta-data/local-ipv4 returned \"not-an-address\", which is not an IP address"
        );
    }

    #[test]
    fn settings_follow_the_sdk_environment() {
        let default = ImdsSettings::from_lookup(env(&[])).unwrap();
        assert_eq!(default.endpoint.as_str(), "http://169.254.169.254/");
        let v6 = ImdsSettings::from_lookup(env(&[(ENDPOINT_MODE_ENV, "IPv6")])).unwrap();
        assert_eq!(v6.endpoint.as_str(), "http://[fd00:ec2::254]/");
        let local =
            ImdsSettings::from_lookup(env(&[(ENDPOINT_ENV, "http://127.0.0.1:5000")])).unwrap();
        assert_eq!(
            local.endpoint.join(TOKEN_PATH).unwrap().as_str(),
            "http://127.0.0.1:5000/latest/api/token"
        );
        let off = ImdsSettings::from_lookup(env(&[(DISABLED_ENV, "true")])).unwrap_err();
        assert_eq!(off.exit_code(), Code::Usage);
        assert!(off
            .to_string()
            .contains("--provider NAME --host-id ID --address IP"));
        assert!(ImdsSettings::from_lookup(env(&[(DISABLED_ENV, "false")])).is_ok());
        assert!(ImdsSettings::from_lookup(env(&[(ENDPOINT_ENV, "not a url")])).is_err());
        assert!(ImdsSettings::from_lookup(env(&[(ENDPOINT_MODE_ENV, "ipx")])).is_err());
    }

    #[test]
    fn hosts_off_aws_are_checked() {
        let host = Identity::given("hetzner", "fsn1-web-7", "10.20.0.7").unwrap();
        assert!(!host.is_aws());
        assert_eq!(host.address.to_string(), "10.20.0.7");
        assert!(Identity::given("aws", "x", "10.0.0.1")
            .unwrap_err()
            .to_string()
            .contains("for hosts off AWS"));
        assert_eq!(
            Identity::given("dc-fra1", "web 7", "10.0.0.1")
                .unwrap_err()
                .to_string(),
            "--host-id \"web 7\" holds ' '; use letters, digits, '.', '_', '-' or ':'"
        );
        assert!(Identity::given("dc-fra1", "web-7", "10.0.0")
            .unwrap_err()
            .to_string()
            .starts_with("--address \"10.0.0\" is not an IP address"));
        assert!(check_provider("GCP").is_err());
        assert!(check_provider("").is_err());
        assert!(check_provider("dc-fra1").is_ok());
    }
}
