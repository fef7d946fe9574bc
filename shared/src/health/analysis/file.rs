//! The analysis file (`--analysis FILE`): its JSON shape and every check of
//! it. Checks that belong to one value (a duration, a condition, a
//! placeholder) run while the value is read, so that serde_json puts the
//! line and column of the value in the message.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Deserializer};

use super::condition::Condition;
use super::{Metric, NoData, Source};

/// An analysis file that cannot be used: which file, where, and why.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read the analysis file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("analysis file {path}, line {line} column {column}: {reason}")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("analysis file {path}: {reason}")]
    Whole { path: String, reason: String },
}

/// The placeholders a file may use, filled in from the state at run time.
pub const PLACEHOLDERS: [&str; 4] = ["stack", "service", "version", "target_group"];

/// Reads and checks the file at `path`.
pub fn load(path: &Path) -> Result<Vec<Metric>, FileError> {
    let text = std::fs::read_to_string(path).map_err(|error| FileError::Read {
        path: path.display().to_string(),
        error,
    })?;
    parse(&text, &path.display().to_string())
}

/// Checks `text`, the content of the file `path`.
pub fn parse(text: &str, path: &str) -> Result<Vec<Metric>, FileError> {
    let file: RawFile = serde_json::from_str(text).map_err(|e| {
        let full = e.to_string();
        // serde_json appends " at line L column C" to its message.
        let reason = full
            .rsplit_once(" at line ")
            .map_or(full.as_str(), |(r, _)| r)
            .to_owned();
        FileError::Invalid {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            reason,
        }
    })?;
    let whole = |reason: String| FileError::Whole {
        path: path.to_owned(),
        reason,
    };
    if file.metrics.is_empty() {
        return Err(whole("`metrics` is empty: list at least one metric".into()));
    }
    for (i, m) in file.metrics.iter().enumerate() {
        if file.metrics[..i].iter().any(|o| o.name == m.name) {
            return Err(whole(format!("two metrics are named {:?}", m.name)));
        }
    }
    Ok(file.metrics)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    metrics: Vec<Metric>,
}

/// One metric as written; [`Metric`] is made from it by [`TryFrom`], so
/// that a check across fields reports the line where the metric ends.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetric {
    name: String,
    #[serde(default)]
    cloudwatch: Option<CloudWatchSpec>,
    #[serde(default)]
    prometheus: Option<PrometheusSpec>,
    #[serde(default)]
    success: Option<Parsed<Condition>>,
    #[serde(default)]
    failure: Option<Parsed<Condition>>,
    interval: Parsed<Duration>,
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    window: Option<Parsed<Duration>>,
    #[serde(default)]
    timeout: Option<Parsed<Duration>>,
    #[serde(default)]
    failure_limit: u32,
    #[serde(default = "default_error_limit")]
    consecutive_error_limit: u32,
    #[serde(default)]
    inconclusive_limit: u32,
    #[serde(default)]
    no_data: NoData,
}

fn default_error_limit() -> u32 {
    4
}

/// The longest a measurement may take unless the metric says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl TryFrom<RawMetric> for Metric {
    type Error = String;

    fn try_from(raw: RawMetric) -> Result<Self, String> {
        let name = raw.name;
        if name.trim().is_empty() {
            return Err("a metric's `name` is empty".into());
        }
        let source = match (raw.cloudwatch, raw.prometheus) {
            (Some(c), None) => Source::CloudWatch(c),
            (None, Some(p)) => Source::Prometheus(p),
            (None, None) => {
                return Err(format!(
                    "metric {name:?} names no provider: give one of `cloudwatch`, `prometheus`"
                ))
            }
            _ => {
                return Err(format!(
                    "metric {name:?} names more than one provider; give one per metric"
                ))
            }
        };
        let success = raw
            .success
            .ok_or_else(|| format!("metric {name:?} has no `success` condition"))?
            .0;
        let interval = raw.interval.0;
        if interval < Duration::from_millis(10) {
            return Err(format!("metric {name:?}: `interval` must be at least 10ms"));
        }
        if raw.count == Some(0) {
            return Err(format!("metric {name:?}: `count` must be at least 1"));
        }
        let window = raw.window.map(|w| w.0);
        if raw.count.is_some() && window.is_some() {
            return Err(format!(
                "metric {name:?}: give `count` or `window`, not both"
            ));
        }
        if window.is_some_and(|w| w < interval) {
            return Err(format!(
                "metric {name:?}: `window` is shorter than `interval`: no measurement would fit"
            ));
        }
        let timeout = raw.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0);
        if timeout.is_zero() {
            return Err(format!("metric {name:?}: `timeout` must be more than 0s"));
        }
        Ok(Self {
            name,
            source,
            success,
            failure: raw.failure.map(|f| f.0),
            interval,
            count: raw.count,
            window,
            timeout,
            failure_limit: raw.failure_limit,
            consecutive_error_limit: raw.consecutive_error_limit,
            inconclusive_limit: raw.inconclusive_limit,
            no_data: raw.no_data,
        })
    }
}

/// A value checked as it is read.
#[derive(Debug, Clone)]
pub(super) struct Parsed<T>(pub T);

impl<'de> Deserialize<'de> for Parsed<Duration> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(Parsed)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "{text:?} is not a duration ({e}); write e.g. 500ms, 30s, 5m"
                ))
            })
    }
}

impl<'de> Deserialize<'de> for Parsed<Condition> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Condition::parse(&text)
            .map(Parsed)
            .map_err(serde::de::Error::custom)
    }
}

/// A string that may hold placeholders (`{stack}`): only known ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(pub String);

static PLACEHOLDER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{([A-Za-z_][A-Za-z0-9_]*)\}").expect("a valid pattern"));

impl Template {
    /// The placeholders it uses.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        PLACEHOLDER
            .captures_iter(&self.0)
            .filter_map(|c| c.get(1).map(|m| m.as_str()))
    }

    /// The text with every placeholder replaced by `lookup`'s value for it.
    pub fn fill(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
        let mut missing = None;
        let filled = PLACEHOLDER.replace_all(&self.0, |c: &regex::Captures<'_>| {
            let name = &c[1];
            lookup(name).unwrap_or_else(|| {
                missing.get_or_insert_with(|| name.to_owned());
                String::new()
            })
        });
        match missing {
            Some(name) => Err(name),
            None => Ok(filled.into_owned()),
        }
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = Self(String::deserialize(d)?);
        if let Some(unknown) = t.placeholders().find(|p| !PLACEHOLDERS.contains(p)) {
            return Err(serde::de::Error::custom(format!(
                "unknown placeholder {{{unknown}}} in {:?}; known: {{stack}} {{service}} {{version}} {{target_group}}",
                t.0
            )));
        }
        Ok(t)
    }
}

/// A CloudWatch metric, or a metric-math expression over named metrics,
/// read with GetMetricData.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawCloudWatch")]
pub struct CloudWatchSpec {
    /// One metric, or an expression over `queries`.
    pub what: CloudWatchWhat,
    /// The period of the datapoints.
    pub period: Duration,
    /// How far back to look for the latest datapoint (default: 5 periods).
    pub lookback: Duration,
}

/// What a CloudWatch metric reads.
#[derive(Debug, Clone)]
pub enum CloudWatchWhat {
    /// One metric.
    Metric(MetricStat),
    /// `expression` over the named `queries` (ids: a lowercase letter, then letters, digits, `_`).
    Expression {
        expression: Template,
        queries: BTreeMap<String, MetricStat>,
    },
}

/// A metric and statistic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricStat {
    /// e.g. `App`, `AWS/ApplicationELB`.
    pub namespace: Template,
    /// e.g. `ErrorRate`.
    pub metric: Template,
    /// Dimension name to value.
    #[serde(default)]
    pub dimensions: BTreeMap<String, Template>,
    /// e.g. `Average`, `Sum`, `p99`.
    #[serde(deserialize_with = "stat")]
    pub stat: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCloudWatch {
    #[serde(default)]
    namespace: Option<Template>,
    #[serde(default)]
    metric: Option<Template>,
    #[serde(default)]
    dimensions: BTreeMap<String, Template>,
    #[serde(default, deserialize_with = "optional_stat")]
    stat: Option<String>,
    #[serde(default)]
    expression: Option<Template>,
    #[serde(default)]
    queries: BTreeMap<String, MetricStat>,
    period: Parsed<Duration>,
    #[serde(default)]
    lookback: Option<Parsed<Duration>>,
}

static QUERY_ID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("^[a-z][A-Za-z0-9_]{0,254}$").expect("a valid pattern"));

impl TryFrom<RawCloudWatch> for CloudWatchSpec {
    type Error = String;

    fn try_from(raw: RawCloudWatch) -> Result<Self, String> {
        let period = raw.period.0;
        let secs = period.as_secs();
        if period.subsec_nanos() != 0
            || !(matches!(secs, 1 | 5 | 10 | 30) || (secs >= 60 && secs % 60 == 0))
        {
            return Err(format!(
                "cloudwatch `period` {} is not one CloudWatch accepts: 1s, 5s, 10s, 30s or a multiple of 60s",
                humantime::format_duration(period)
            ));
        }
        let lookback = raw.lookback.map_or(period * 5, |l| l.0);
        if lookback < period {
            return Err("cloudwatch `lookback` is shorter than `period`".into());
        }
        let what = match (raw.metric, raw.expression) {
            (Some(metric), None) => {
                if !raw.queries.is_empty() {
                    return Err("cloudwatch `queries` go with an `expression`, not a `metric`".into());
                }
                CloudWatchWhat::Metric(MetricStat {
                    namespace: raw
                        .namespace
                        .ok_or("cloudwatch `metric` needs its `namespace`")?,
                    metric,
                    dimensions: raw.dimensions,
                    stat: raw.stat.ok_or(
                        "cloudwatch `metric` needs a `stat` (Average, Sum, Minimum, Maximum, SampleCount, p99..)",
                    )?,
                })
            }
            (None, Some(expression)) => {
                if raw.namespace.is_some() || raw.stat.is_some() || !raw.dimensions.is_empty() {
                    return Err("with an `expression`, each metric goes in `queries` (namespace, metric, dimensions, stat there)".into());
                }
                if let Some(bad) = raw.queries.keys().find(|id| !QUERY_ID.is_match(id)) {
                    return Err(format!(
                        "query id {bad:?}: CloudWatch ids start with a lowercase letter, then letters, digits and `_`"
                    ));
                }
                if raw.queries.contains_key("result") {
                    return Err("query id \"result\" is the expression's own; name the query otherwise".into());
                }
                CloudWatchWhat::Expression {
                    expression,
                    queries: raw.queries,
                }
            }
            (Some(_), Some(_)) => {
                return Err("cloudwatch takes a `metric` or an `expression`, not both".into())
            }
            (None, None) => {
                return Err("cloudwatch needs a `metric` (with namespace, dimensions, stat) or an `expression` over `queries`".into())
            }
        };
        Ok(Self {
            what,
            period,
            lookback,
        })
    }
}

static STAT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(SampleCount|Average|Sum|Minimum|Maximum|IQM|(p|tm|wm|tc|ts)\d{1,2}(\.\d+)?|(PR|TM|WM|TC|TS)\([^)]*\))$")
        .expect("a valid pattern")
});

fn check_stat(text: String) -> Result<String, String> {
    if STAT.is_match(&text) {
        Ok(text)
    } else {
        Err(format!(
            "{text:?} is not a CloudWatch statistic (SampleCount, Average, Sum, Minimum, Maximum, p99, tm90, ...)"
        ))
    }
}

fn stat<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    check_stat(String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn optional_stat<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(check_stat)
        .transpose()
        .map_err(serde::de::Error::custom)
}

/// A PromQL query against a Prometheus server.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawPrometheus")]
pub struct PrometheusSpec {
    /// The server, e.g. `http://127.0.0.1:9090`.
    pub url: reqwest::Url,
    /// The query, e.g. `sum(rate(http_requests_total{code=~"5..",stack="{stack}"}[1m]))`.
    pub query: Template,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrometheus {
    url: String,
    query: Template,
}

impl TryFrom<RawPrometheus> for PrometheusSpec {
    type Error = String;

    fn try_from(raw: RawPrometheus) -> Result<Self, String> {
        let url = reqwest::Url::parse(&raw.url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| format!("prometheus `url` {:?} is not an http(s) URL", raw.url))?;
        if raw.query.0.trim().is_empty() {
            return Err("prometheus `query` is empty".into());
        }
        Ok(Self {
            url,
            query: raw.query,
        })
    }
}
