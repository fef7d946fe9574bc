//! One HTTP probe: a GET that must answer 2xx within a time-out.

use std::time::Duration;

use tokio::time::Instant;

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// The URL probed.
    pub url: String,
    /// Whether it passed.
    pub ok: bool,
    /// What it saw: `200 in 12ms`, `500 in 3ms`, `timed out after 2s`, `connection refused`.
    pub observed: String,
}

/// Probes endpoints over HTTP(S) with certificate verification on.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    client: reqwest::Client,
}

impl HttpProbe {
    /// A probe whose requests give up after `timeout`.
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client })
    }

    /// Probes `url` once.
    pub async fn check(&self, url: &str) -> ProbeResult {
        let started = Instant::now();
        let result = self.client.get(url).send().await;
        let took = crate::cli::progress::short(started.elapsed());
        match result {
            Ok(response) => {
                let status = response.status();
                ProbeResult {
                    url: url.to_owned(),
                    ok: status.is_success(),
                    observed: format!("{} in {took}", status.as_u16()),
                }
            }
            Err(e) => {
                let why = if e.is_timeout() {
                    format!("timed out after {took}")
                } else if e.is_connect() {
                    "connection failed".to_owned()
                } else {
                    e.to_string()
                };
                ProbeResult {
                    url: url.to_owned(),
                    ok: false,
                    observed: why,
                }
            }
        }
    }
}
