//! CloudWatch alarms as a gate: the named alarms (or every alarm with a name
//! prefix) must stay OK through a window. ALARM fails at once;
//! INSUFFICIENT_DATA has an explicit outcome, never a silent pass.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use aws_sdk_cloudwatch::types::StateValue;
use aws_sdk_cloudwatch::Client;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::aws::ProviderError;
use crate::outcome::{Code, ExitStatus};
use crate::state::Health;
use crate::wait::{self, WaitEnd};

/// What INSUFFICIENT_DATA counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InsufficientData {
    /// Unhealthy.
    Fail,
    /// Healthy (said out loud in the evidence).
    Pass,
    /// Neither: the verdict is inconclusive.
    Inconclusive,
}

impl InsufficientData {
    /// The policy as flags spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Pass => "pass",
            Self::Inconclusive => "inconclusive",
        }
    }
}

/// Which alarms gate, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmGate {
    /// Alarm names that must exist.
    pub names: Vec<String>,
    /// Name prefixes; each must match at least one alarm.
    pub prefixes: Vec<String>,
    /// How long the alarms must stay OK (zero: one look).
    pub window: Duration,
    /// Time between looks within the window.
    pub interval: Duration,
    /// What INSUFFICIENT_DATA counts as.
    pub insufficient: InsufficientData,
}

/// Errors of the alarm gate.
#[derive(Debug, thiserror::Error)]
pub enum AlarmError {
    #[error("no CloudWatch alarm named {0}")]
    Missing(String),
    #[error("no CloudWatch alarm name starts with {0:?}")]
    NoMatch(String),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

impl ExitStatus for AlarmError {
    fn exit_code(&self) -> Code {
        match self {
            Self::Missing(_) | Self::NoMatch(_) => Code::Usage,
            Self::Provider(_) => Code::Provider,
        }
    }
}

/// One alarm's evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlarmReport {
    /// Its name.
    pub name: String,
    /// Its state at the last look (`OK`, `ALARM`, `INSUFFICIENT_DATA`).
    pub state: String,
    /// Its state reason at the last look.
    pub reason: String,
    /// Whether it counts as passed.
    pub verdict: Health,
}

/// The alarms' verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlarmsReport {
    /// The combined verdict.
    pub verdict: Health,
    /// One line of evidence.
    pub summary: String,
    /// Looks made.
    pub looks: u32,
    /// Per alarm.
    pub alarms: Vec<AlarmReport>,
}

/// Reads the alarms' states: named ones in batches of 100, prefixes paged.
async fn describe(
    client: &Client,
    gate: &AlarmGate,
) -> Result<BTreeMap<String, (StateValue, String)>, AlarmError> {
    let mut found = BTreeMap::new();
    for chunk in gate.names.chunks(100) {
        let mut pages = client
            .describe_alarms()
            .set_alarm_names(Some(chunk.to_vec()))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| ProviderError::from_sdk("cloudwatch:DescribeAlarms", &e))?;
            add(&mut found, page.metric_alarms());
        }
    }
    for prefix in &gate.prefixes {
        let mut pages = client
            .describe_alarms()
            .alarm_name_prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| ProviderError::from_sdk("cloudwatch:DescribeAlarms", &e))?;
            add(&mut found, page.metric_alarms());
        }
        if !found.keys().any(|k| k.starts_with(prefix.as_str())) {
            return Err(AlarmError::NoMatch(prefix.clone()));
        }
    }
    if let Some(missing) = gate.names.iter().find(|n| !found.contains_key(*n)) {
        return Err(AlarmError::Missing(missing.clone()));
    }
    Ok(found)
}

fn add(
    found: &mut BTreeMap<String, (StateValue, String)>,
    alarms: &[aws_sdk_cloudwatch::types::MetricAlarm],
) {
    for a in alarms {
        if let (Some(name), Some(state)) = (a.alarm_name(), a.state_value()) {
            found.insert(
                name.to_owned(),
                (
                    state.clone(),
                    a.state_reason().unwrap_or_default().to_owned(),
                ),
            );
        }
    }
}

/// Watches the alarms through the window. `Ok(Err(Cancelled))` when interrupted.
pub async fn watch(
    client: &Client,
    gate: &AlarmGate,
    cancel: &CancellationToken,
) -> Result<Result<AlarmsReport, WaitEnd>, AlarmError> {
    let end = Instant::now() + gate.window;
    let mut looks = 0;
    loop {
        looks += 1;
        let states = describe(client, gate).await?;
        let in_alarm: Vec<&String> = states
            .iter()
            .filter(|(_, (s, _))| *s == StateValue::Alarm)
            .map(|(n, _)| n)
            .collect();
        let last_look = !in_alarm.is_empty() || Instant::now() >= end;
        if last_look {
            return Ok(Ok(report(&states, gate, looks)));
        }
        match wait::sleep(gate.interval, end, cancel).await {
            Ok(()) | Err(WaitEnd::Deadline) => {}
            Err(WaitEnd::Cancelled) => return Ok(Err(WaitEnd::Cancelled)),
        }
    }
}

fn report(
    states: &BTreeMap<String, (StateValue, String)>,
    gate: &AlarmGate,
    looks: u32,
) -> AlarmsReport {
    let alarms: Vec<AlarmReport> = states
        .iter()
        .map(|(name, (state, reason))| AlarmReport {
            name: name.clone(),
            state: state.as_str().to_owned(),
            reason: reason.clone(),
            verdict: match state {
                StateValue::Ok => Health::Healthy,
                StateValue::InsufficientData => match gate.insufficient {
                    InsufficientData::Fail => Health::Unhealthy,
                    InsufficientData::Pass => Health::Healthy,
                    InsufficientData::Inconclusive => Health::Inconclusive,
                },
                _ => Health::Unhealthy,
            },
        })
        .collect();
    let names = |state: &str| -> Vec<String> {
        alarms
            .iter()
            .filter(|a| a.state == state)
            .map(|a| a.name.clone())
            .collect()
    };
    let (alarm, insufficient) = (names("ALARM"), names("INSUFFICIENT_DATA"));
    let verdict = if alarms.iter().any(|a| a.verdict == Health::Unhealthy) {
        Health::Unhealthy
    } else if alarms.iter().any(|a| a.verdict == Health::Inconclusive) {
        Health::Inconclusive
    } else {
        Health::Healthy
    };
    let mut summary = format!("{}/{} alarms OK", names("OK").len(), alarms.len());
    if !alarm.is_empty() {
        let _ = write!(summary, "; in ALARM: {}", alarm.join(", "));
    }
    if !insufficient.is_empty() {
        let outcome = match gate.insufficient {
            InsufficientData::Fail => "counted as failed",
            InsufficientData::Pass => "counted as passed, as --insufficient-data pass asks",
            InsufficientData::Inconclusive => "inconclusive",
        };
        let _ = write!(
            summary,
            "; INSUFFICIENT_DATA ({outcome}): {}",
            insufficient.join(", ")
        );
    }
    if verdict == Health::Healthy && !gate.window.is_zero() {
        let _ = write!(
            summary,
            " through {}",
            crate::wait::progress::short(gate.window)
        );
    }
    AlarmsReport {
        verdict,
        summary,
        looks,
        alarms,
    }
}

/// The IAM policy of watching the alarms `names` and those whose names
/// start with one of `prefixes`.
pub fn policy(names: &[String], prefixes: &[String]) -> crate::aws::iam::Policy {
    use crate::aws::iam::arn;
    let mut policy = crate::aws::iam::Policy::new();
    let alarms = names
        .iter()
        .map(|n| arn::alarm(n))
        .chain(prefixes.iter().map(|p| arn::alarm(&format!("{p}*"))));
    policy.allow("WatchAlarms", &["cloudwatch:DescribeAlarms"], alarms);
    policy
}
