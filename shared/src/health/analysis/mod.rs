//! Metric analysis: judging a stack by what its metrics say while it takes
//! traffic (Argo Rollouts' AnalysisTemplate, Flagger's metric checks).
//!
//! An analysis file ([`file`]) lists metrics; each names a provider
//! (CloudWatch GetMetricData, a Prometheus query), the conditions its
//! `result` must meet, how often to measure and how many bad measurements
//! end it. The engine ([`engine`]) measures every metric at its interval,
//! all concurrently, and ends each metric Successful, Failed or
//! Inconclusive. Verdicts are never optimistic: missing data is
//! inconclusive unless the file says otherwise, an analysis whose every
//! measurement errored failed, and one with no successful measurement is
//! not a success.

pub mod cloudwatch;
pub mod condition;
pub mod engine;
pub mod file;
pub mod prometheus;

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, Serializer};

pub use condition::Condition;
pub use engine::{AnalysisReport, Background, Bound, MetricVerdict};
pub use file::FileError;

use crate::state::StateDocument;
use file::{CloudWatchSpec, PrometheusSpec, RawMetric};

/// What a metric's empty result counts as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoData {
    /// A successful measurement (said out loud in its record).
    Pass,
    /// A failed measurement.
    Fail,
    /// Neither (the default, as Kayenta's NODATA).
    #[default]
    Inconclusive,
}

impl NoData {
    /// The policy as the file spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Inconclusive => "inconclusive",
        }
    }
}

/// How a measurement, a metric or an analysis came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// It passed.
    Successful,
    /// It failed.
    Failed,
    /// It decided nothing (no data, neither condition met): not a pass.
    Inconclusive,
    /// The query itself failed (a measurement only).
    Error,
}

impl Phase {
    /// The phase as reports spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Successful => "successful",
            Self::Failed => "failed",
            Self::Inconclusive => "inconclusive",
            Self::Error => "error",
        }
    }
}

/// One metric of an analysis file, checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawMetric")]
pub struct Metric {
    /// Its name, unique in the file.
    pub name: String,
    /// Where its value comes from.
    pub source: Source,
    /// What a successful `result` meets.
    pub success: Condition,
    /// What a failed `result` meets; when given, a result meeting neither is inconclusive.
    pub failure: Option<Condition>,
    /// Time between measurements.
    pub interval: Duration,
    /// Measurements to take, then stop.
    pub count: Option<u32>,
    /// Time to measure for, then stop.
    pub window: Option<Duration>,
    /// Longest a measurement may take before it counts as an error.
    pub timeout: Duration,
    /// Failed measurements tolerated; one more fails the metric.
    pub failure_limit: u32,
    /// Query errors in a row tolerated; one more fails the metric.
    pub consecutive_error_limit: u32,
    /// Inconclusive measurements tolerated; one more makes the metric inconclusive.
    pub inconclusive_limit: u32,
    /// What an empty result counts as.
    pub no_data: NoData,
}

/// A metric's provider, as the file gives it.
#[derive(Debug, Clone)]
pub enum Source {
    /// CloudWatch GetMetricData.
    CloudWatch(CloudWatchSpec),
    /// A Prometheus instant query.
    Prometheus(PrometheusSpec),
}

/// A checked analysis file.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// Its metrics, in the file's order.
    pub metrics: Vec<Metric>,
}

impl Analysis {
    /// Reads and checks the file at `path` (exit 2 when it cannot be used).
    pub fn load(path: &Path) -> Result<Self, FileError> {
        Ok(Self {
            metrics: file::load(path)?,
        })
    }

    /// Checks `text` as the file `path` would be.
    pub fn parse(text: &str, path: &str) -> Result<Self, FileError> {
        Ok(Self {
            metrics: file::parse(text, path)?,
        })
    }

    /// Whether a metric reads CloudWatch.
    pub fn uses_cloudwatch(&self) -> bool {
        self.metrics
            .iter()
            .any(|m| matches!(m.source, Source::CloudWatch(_)))
    }

    /// One line per metric: what it measures and how it is judged.
    pub fn describe(&self) -> Vec<String> {
        self.metrics
            .iter()
            .map(|m| {
                let mut line = format!(
                    "{} ({}): success when {}",
                    m.name,
                    match m.source {
                        Source::CloudWatch(_) => "cloudwatch",
                        Source::Prometheus(_) => "prometheus",
                    },
                    m.success
                );
                if let Some(f) = &m.failure {
                    let _ = write!(line, ", failure when {f}");
                }
                let _ = write!(line, ", every {}", crate::wait::progress::short(m.interval));
                if let Some(c) = m.count {
                    let _ = write!(line, " x{c}");
                }
                if let Some(w) = m.window {
                    let _ = write!(line, " for {}", crate::wait::progress::short(w));
                }
                let _ = write!(
                    line,
                    "; failure_limit {}, no_data {}",
                    m.failure_limit,
                    m.no_data.name()
                );
                line
            })
            .collect()
    }
}

/// The values placeholders stand for, from the state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placeholders {
    /// `{stack}`: the stack judged (the one gaining traffic).
    pub stack: Option<String>,
    /// `{service}`: the state's service.
    pub service: Option<String>,
    /// `{version}`: the stack's version, else the deployment's.
    pub version: Option<String>,
    /// `{target_group}`: the stack's target group as CloudWatch's
    /// `TargetGroup` dimension spells it (`targetgroup/NAME/ID`).
    pub target_group: Option<String>,
}

impl Placeholders {
    /// The values for `stack` in `doc`.
    pub fn from_state(doc: &StateDocument, stack: Option<&str>) -> Self {
        let entry = stack.and_then(|s| doc.stacks.get(s));
        let deployment = doc.deployment.as_ref();
        Self {
            stack: stack.map(str::to_owned),
            service: deployment.and_then(|d| d.service.clone()),
            version: entry
                .and_then(|s| s.version.clone())
                .or_else(|| deployment.and_then(|d| d.version.clone())),
            target_group: entry.and_then(|s| {
                s.ids
                    .iter()
                    .find_map(|id| id.split_once(":targetgroup/"))
                    .map(|(_, rest)| format!("targetgroup/{rest}"))
            }),
        }
    }

    /// The value of placeholder `name`.
    pub fn get(&self, name: &str) -> Option<String> {
        match name {
            "stack" => self.stack.clone(),
            "service" => self.service.clone(),
            "version" => self.version.clone(),
            "target_group" => self.target_group.clone(),
            _ => None,
        }
    }
}

/// One value of a measurement: a series (its labels, for a vector) and its value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// The series' labels, when the provider answers several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series: Option<String>,
    /// The value (`"NaN"`, `"+Inf"`, `"-Inf"` in JSON when not finite).
    #[serde(serialize_with = "number")]
    pub value: f64,
    /// The datapoint's time, when the provider says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `serialize_with` passes a reference
fn number<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
    if value.is_finite() {
        s.serialize_f64(*value)
    } else if value.is_nan() {
        s.serialize_str("NaN")
    } else if *value > 0.0 {
        s.serialize_str("+Inf")
    } else {
        s.serialize_str("-Inf")
    }
}

/// One measurement: the query as sent, what came back, the verdict, when.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measurement {
    /// The metric's name.
    pub metric: String,
    /// When it was taken.
    pub at: DateTime<Utc>,
    /// The query as sent (placeholders filled in).
    pub query: String,
    /// The values that came back (empty: no data, or an error).
    pub values: Vec<Sample>,
    /// How it was judged.
    pub verdict: Phase,
    /// Why, in a few words: the condition met or missed, no data, the error.
    pub reason: String,
    /// How long the query took.
    pub took_ms: u64,
}

/// What a provider answered: values (none: no data) or an error.
pub type Reading = Result<Vec<Sample>, String>;

/// Judges one reading of `metric`: every series must pass.
pub fn judge(metric: &Metric, reading: &Reading) -> (Phase, String) {
    let samples = match reading {
        Err(e) => return (Phase::Error, e.clone()),
        Ok(s) => s,
    };
    if samples.is_empty() {
        return match metric.no_data {
            NoData::Pass => (
                Phase::Successful,
                "no data, counted as passed (no_data: pass)".into(),
            ),
            NoData::Fail => (
                Phase::Failed,
                "no data, counted as failed (no_data: fail)".into(),
            ),
            NoData::Inconclusive => (
                Phase::Inconclusive,
                "no data (no_data: inconclusive)".into(),
            ),
        };
    }
    let mut worst = (Phase::Successful, String::new());
    for s in samples {
        let shown = match &s.series {
            Some(series) => format!("{series} = {}", show(s.value)),
            None => show(s.value),
        };
        let (phase, why) = if metric.failure.as_ref().is_some_and(|f| f.holds(s.value)) {
            (
                Phase::Failed,
                format!(
                    "{shown} meets the failure condition {}",
                    metric
                        .failure
                        .as_ref()
                        .map(Condition::as_str)
                        .unwrap_or_default()
                ),
            )
        } else if metric.success.holds(s.value) {
            (
                Phase::Successful,
                format!("{shown} meets {}", metric.success),
            )
        } else if metric.failure.is_some() {
            (
                Phase::Inconclusive,
                format!(
                    "{shown} meets neither {} nor the failure condition",
                    metric.success
                ),
            )
        } else {
            (
                Phase::Failed,
                format!("{shown} does not meet {}", metric.success),
            )
        };
        let rank = |p: Phase| match p {
            Phase::Failed => 2,
            Phase::Inconclusive => 1,
            _ => 0,
        };
        if worst.1.is_empty() || rank(phase) > rank(worst.0) {
            worst = (phase, why);
        }
    }
    if samples.len() > 1 && worst.0 == Phase::Successful {
        worst.1 = format!("all {} series meet {}", samples.len(), metric.success);
    }
    worst
}

/// A value as people read it.
pub fn show(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests;
