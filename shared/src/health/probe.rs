//! One HTTP(S) probe and what makes it pass: expected status codes, body
//! patterns, JSON values, time-outs, TLS settings, a body size limit.
//!
//! Every probe opens a fresh connection (no pooling), as a load balancer's
//! health check does, so a probe also proves the endpoint accepts connections.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use regex::Regex;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use reqwest::Method;
use serde_json::Value;
use tokio::time::Instant;

/// Input that cannot make a probe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeSpecError {
    #[error("invalid status set {0:?}; expected codes and ranges such as 200-399,404")]
    Status(String),
    #[error("invalid regular expression {pattern:?}: {error}")]
    Regex { pattern: String, error: String },
    #[error("invalid JSON check {0:?}; expected POINTER OP VALUE such as '/status == \"ok\"' or '/queue/depth < 100'")]
    Json(String),
    #[error("invalid header {0:?}; expected 'Name: value'")]
    Header(String),
    #[error(
        "invalid --resolve {0:?}; expected HOST:PORT:ADDRESS such as app.example.com:443:10.0.0.5"
    )]
    Resolve(String),
    #[error("invalid HTTP method {0:?}")]
    Method(String),
    #[error("cannot use the CA bundle {path}: {error}")]
    CaBundle { path: String, error: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// Status codes that count as healthy, e.g. `200-399` or `200,204,301-302`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(Vec<RangeInclusive<u16>>);

impl Default for StatusSet {
    fn default() -> Self {
        Self(vec![200..=399])
    }
}

impl FromStr for StatusSet {
    type Err = ProbeSpecError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || ProbeSpecError::Status(text.to_owned());
        let mut ranges = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            let lo: u16 = lo.trim().parse().map_err(|_| err())?;
            let hi: u16 = hi.trim().parse().map_err(|_| err())?;
            if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
                return Err(err());
            }
            ranges.push(lo..=hi);
        }
        if ranges.is_empty() {
            return Err(err());
        }
        Ok(Self(ranges))
    }
}

impl std::fmt::Display for StatusSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|r| {
                if r.start() == r.end() {
                    r.start().to_string()
                } else {
                    format!("{}-{}", r.start(), r.end())
                }
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl StatusSet {
    /// Whether `code` is in the set.
    pub fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|r| r.contains(&code))
    }
}

/// A rule on the response body.
#[derive(Debug, Clone)]
pub enum BodyRule {
    /// The body must match.
    Matches(Regex),
    /// The body must not match.
    NotMatches(Regex),
}

impl BodyRule {
    /// Compiles a pattern into a rule.
    pub fn new(pattern: &str, must_match: bool) -> Result<Self, ProbeSpecError> {
        let re = Regex::new(pattern).map_err(|e| ProbeSpecError::Regex {
            pattern: pattern.to_owned(),
            error: e.to_string(),
        })?;
        Ok(if must_match {
            Self::Matches(re)
        } else {
            Self::NotMatches(re)
        })
    }
}

/// A comparison of a JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A check of one value in a JSON body, addressed by a JSON pointer (RFC 6901).
#[derive(Debug, Clone, PartialEq)]
pub struct JsonCheck {
    /// The pointer, e.g. `/checks/db/status`.
    pub pointer: String,
    /// How to compare.
    pub op: Compare,
    /// The value to compare with (JSON; a bare word is a string).
    pub value: Value,
}

impl FromStr for JsonCheck {
    type Err = ProbeSpecError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || ProbeSpecError::Json(text.to_owned());
        let trimmed = text.trim();
        if !trimmed.starts_with('/') {
            return Err(err());
        }
        // The operator is the first of these found after the pointer.
        let ops = [
            ("==", Compare::Eq),
            ("!=", Compare::Ne),
            ("<=", Compare::Le),
            (">=", Compare::Ge),
            ("<", Compare::Lt),
            (">", Compare::Gt),
        ];
        let (at, len, op) = ops
            .iter()
            .filter_map(|(sym, op)| trimmed.find(sym).map(|i| (i, sym.len(), *op)))
            .min_by_key(|(i, len, _)| (*i, usize::MAX - len))
            .ok_or_else(err)?;
        let pointer = trimmed[..at].trim().to_owned();
        let raw = trimmed[at + len..].trim();
        if pointer.is_empty() || raw.is_empty() {
            return Err(err());
        }
        let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
        if matches!(op, Compare::Lt | Compare::Le | Compare::Gt | Compare::Ge) && !value.is_number()
        {
            return Err(err());
        }
        Ok(Self { pointer, op, value })
    }
}

impl JsonCheck {
    /// `None` when the document passes, else why not.
    pub fn failure(&self, doc: &Value) -> Option<String> {
        let Some(found) = doc.pointer(&self.pointer) else {
            return Some(format!("{} is missing", self.pointer));
        };
        let pass = match self.op {
            Compare::Eq => found == &self.value,
            Compare::Ne => found != &self.value,
            op => match (found.as_f64(), self.value.as_f64()) {
                (Some(a), Some(b)) => match op {
                    Compare::Lt => a < b,
                    Compare::Le => a <= b,
                    Compare::Gt => a > b,
                    _ => a >= b,
                },
                _ => false,
            },
        };
        if pass {
            None
        } else {
            let sym = match self.op {
                Compare::Eq => "==",
                Compare::Ne => "!=",
                Compare::Lt => "<",
                Compare::Le => "<=",
                Compare::Gt => ">",
                Compare::Ge => ">=",
            };
            Some(format!(
                "{} is {found}, expected {sym} {}",
                self.pointer, self.value
            ))
        }
    }
}

/// Everything that defines a probe.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    /// HTTP method.
    pub method: Method,
    /// Extra request headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Request body.
    pub body: Option<String>,
    /// Status codes that pass.
    pub expect: StatusSet,
    /// Body patterns.
    pub body_rules: Vec<BodyRule>,
    /// JSON value checks.
    pub json_checks: Vec<JsonCheck>,
    /// Time-out to connect.
    pub connect_timeout: Duration,
    /// Time-out for the whole exchange, body included.
    pub timeout: Duration,
    /// Bytes of body read at most; rules see only these.
    pub max_body: usize,
    /// Redirects followed (0: a 3xx answer is judged as it is).
    pub max_redirects: usize,
    /// PEM file of extra trusted certificate authorities.
    pub ca_bundle: Option<std::path::PathBuf>,
    /// Accept any certificate (only when asked).
    pub insecure: bool,
    /// `Host` header override.
    pub host_header: Option<String>,
    /// Host names resolved to fixed addresses (keeps SNI and certificate names).
    pub resolve: Vec<(String, SocketAddr)>,
}

impl Default for ProbeSpec {
    fn default() -> Self {
        Self {
            method: Method::GET,
            headers: Vec::new(),
            body: None,
            expect: StatusSet::default(),
            body_rules: Vec::new(),
            json_checks: Vec::new(),
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            max_body: 64 * 1024,
            max_redirects: 0,
            ca_bundle: None,
            insecure: false,
            host_header: None,
            resolve: Vec::new(),
        }
    }
}

/// Parses `Name: value`.
pub fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), ProbeSpecError> {
    let err = || ProbeSpecError::Header(text.to_owned());
    let (name, value) = text.split_once(':').ok_or_else(err)?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| err())?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| err())?;
    Ok((name, value))
}

/// Parses `HOST:PORT:ADDRESS` (as curl's --resolve).
pub fn parse_resolve(text: &str) -> Result<(String, SocketAddr), ProbeSpecError> {
    let err = || ProbeSpecError::Resolve(text.to_owned());
    let (host, rest) = text.split_once(':').ok_or_else(err)?;
    let (port, addr) = rest.split_once(':').ok_or_else(err)?;
    let port: u16 = port.parse().map_err(|_| err())?;
    let ip: std::net::IpAddr = addr.trim_matches(['[', ']']).parse().map_err(|_| err())?;
    if host.is_empty() {
        return Err(err());
    }
    Ok((host.to_owned(), SocketAddr::new(ip, port)))
}

/// Parses an HTTP method name.
pub fn parse_method(text: &str) -> Result<Method, ProbeSpecError> {
    Method::from_bytes(text.to_ascii_uppercase().as_bytes())
        .map_err(|_| ProbeSpecError::Method(text.to_owned()))
}

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// The URL probed.
    pub url: String,
    /// Whether it passed.
    pub ok: bool,
    /// The HTTP status, when an answer came.
    pub status: Option<u16>,
    /// Time to the whole answer (or to the failure).
    pub latency: Duration,
    /// What it saw: `200 in 12ms`, or why it failed.
    pub observed: String,
}

/// Probes endpoints by a [`ProbeSpec`].
#[derive(Debug, Clone)]
pub struct HttpProbe {
    client: reqwest::Client,
    spec: std::sync::Arc<ProbeSpec>,
}

impl HttpProbe {
    /// A probe with default settings (GET, 2xx-3xx) giving up after `timeout`.
    pub fn new(timeout: Duration) -> Result<Self, ProbeSpecError> {
        Self::with_spec(ProbeSpec {
            timeout,
            connect_timeout: timeout.min(Duration::from_secs(2)),
            ..ProbeSpec::default()
        })
    }

    /// A probe by `spec`.
    pub fn with_spec(spec: ProbeSpec) -> Result<Self, ProbeSpecError> {
        let mut headers = HeaderMap::new();
        for (k, v) in &spec.headers {
            headers.append(k.clone(), v.clone());
        }
        if let Some(host) = &spec.host_header {
            let value = HeaderValue::from_str(host)
                .map_err(|_| ProbeSpecError::Header(format!("Host: {host}")))?;
            headers.insert(HOST, value);
        }
        let redirect = if spec.max_redirects == 0 {
            reqwest::redirect::Policy::none()
        } else {
            reqwest::redirect::Policy::limited(spec.max_redirects)
        };
        let mut builder = reqwest::Client::builder()
            .timeout(spec.timeout)
            .connect_timeout(spec.connect_timeout)
            .redirect(redirect)
            .pool_max_idle_per_host(0)
            .default_headers(headers)
            .user_agent(concat!(
                "switchyard-verify-health/",
                env!("CARGO_PKG_VERSION")
            ));
        if let Some(path) = &spec.ca_bundle {
            let ca_err = |error: String| ProbeSpecError::CaBundle {
                path: path.display().to_string(),
                error,
            };
            let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_err("no PEM certificate in it".to_owned()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if spec.insecure {
            builder = builder.danger_accept_invalid_certs(true);
        }
        for (host, addr) in &spec.resolve {
            builder = builder.resolve(host, *addr);
        }
        let client = builder
            .build()
            .map_err(|e| ProbeSpecError::Client(e.to_string()))?;
        Ok(Self {
            client,
            spec: std::sync::Arc::new(spec),
        })
    }

    /// The spec it probes by.
    pub fn spec(&self) -> &ProbeSpec {
        &self.spec
    }

    /// Probes `url` once.
    pub async fn check(&self, url: &str) -> ProbeResult {
        let started = Instant::now();
        let mut request = self.client.request(self.spec.method.clone(), url);
        if let Some(body) = &self.spec.body {
            request = request.body(body.clone());
        }
        let outcome = match request.send().await {
            Ok(response) => self.judge(response).await,
            Err(e) => Err((None, describe_error(&e))),
        };
        let latency = started.elapsed();
        let took = crate::wait::progress::short(latency);
        match outcome {
            Ok(status) => ProbeResult {
                url: url.to_owned(),
                ok: true,
                status: Some(status),
                latency,
                observed: format!("{status} in {took}"),
            },
            Err((status, why)) => ProbeResult {
                url: url.to_owned(),
                ok: false,
                status,
                latency,
                observed: match status {
                    Some(s) => format!("{s} in {took}: {why}"),
                    None => format!("{why} after {took}"),
                },
            },
        }
    }

    async fn judge(&self, mut response: reqwest::Response) -> Result<u16, (Option<u16>, String)> {
        let status = response.status().as_u16();
        let needs_body = !self.spec.body_rules.is_empty() || !self.spec.json_checks.is_empty();
        let mut body = Vec::new();
        // Read the body (up to the limit) in every case: the answer is only
        // complete, and the latency honest, once it has arrived.
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = self.spec.max_body.saturating_sub(body.len());
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if body.len() >= self.spec.max_body {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => return Err((Some(status), describe_error(&e))),
            }
        }
        if !self.spec.expect.contains(status) {
            return Err((
                Some(status),
                format!("status {status} not in {}", self.spec.expect),
            ));
        }
        if !needs_body {
            return Ok(status);
        }
        let text = String::from_utf8_lossy(&body);
        for rule in &self.spec.body_rules {
            match rule {
                BodyRule::Matches(re) if !re.is_match(&text) => {
                    return Err((Some(status), format!("body does not match /{re}/")));
                }
                BodyRule::NotMatches(re) if re.is_match(&text) => {
                    return Err((
                        Some(status),
                        format!("body matches /{re}/, which it must not"),
                    ));
                }
                _ => {}
            }
        }
        if !self.spec.json_checks.is_empty() {
            let doc: Value = serde_json::from_slice(&body).map_err(|e| {
                (
                    Some(status),
                    format!("body is not JSON within {} bytes: {e}", self.spec.max_body),
                )
            })?;
            for check in &self.spec.json_checks {
                if let Some(why) = check.failure(&doc) {
                    return Err((Some(status), why));
                }
            }
        }
        Ok(status)
    }
}

/// The most useful words of a request error: time-out, refused, or the
/// innermost cause (where TLS and DNS errors say what is wrong).
fn describe_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_owned();
    }
    let mut inner: &dyn std::error::Error = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    let text = inner.to_string();
    if e.is_connect() && !text.to_lowercase().contains("certificate") {
        format!("connection failed ({text})")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_sets() {
        let set: StatusSet = "200-299, 301,404".parse().unwrap();
        assert!(set.contains(204) && set.contains(301) && set.contains(404));
        assert!(!set.contains(302) && !set.contains(500));
        assert_eq!(set.to_string(), "200-299,301,404");
        assert!("99".parse::<StatusSet>().is_err());
        assert!("300-200".parse::<StatusSet>().is_err());
        assert!("".parse::<StatusSet>().is_err());
        assert!("2xx".parse::<StatusSet>().is_err());
    }

    #[test]
    fn json_checks() {
        let doc: Value = serde_json::json!({"status": "ok", "queue": {"depth": 12}, "ready": true});
        let check = |t: &str| t.parse::<JsonCheck>().unwrap().failure(&doc);
        assert_eq!(check("/status == \"ok\""), None);
        assert_eq!(check("/status==ok"), None);
        assert_eq!(check("/ready == true"), None);
        assert_eq!(check("/queue/depth < 100"), None);
        assert_eq!(check("/queue/depth >= 12"), None);
        assert_eq!(check("/status != degraded"), None);
        assert_eq!(
            check("/queue/depth > 12").unwrap(),
            "/queue/depth is 12, expected > 12"
        );
        assert_eq!(check("/db == up").unwrap(), "/db is missing");
        assert!("status == ok".parse::<JsonCheck>().is_err());
        assert!("/a < high".parse::<JsonCheck>().is_err());
        assert!("/a ==".parse::<JsonCheck>().is_err());
    }

    #[test]
    fn headers_resolve_and_methods() {
        let (k, v) = parse_header("X-Probe: ci").unwrap();
        assert_eq!((k.as_str(), v.to_str().unwrap()), ("x-probe", "ci"));
        assert!(parse_header("nocolon").is_err());
        let (host, addr) = parse_resolve("app.example.com:443:127.0.0.1").unwrap();
        assert_eq!(
            (host.as_str(), addr.to_string().as_str()),
            ("app.example.com", "127.0.0.1:443")
        );
        assert!(parse_resolve("app:x:127.0.0.1").is_err());
        assert_eq!(parse_method("head").unwrap(), Method::HEAD);
    }
}
