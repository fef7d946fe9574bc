//! The analysis engine: measures every metric at its interval, all
//! concurrently, keeps each measurement, and ends each metric by its limits.
//!
//! Two ways to run it: [`Bound::run`] measures until every metric is done
//! (verify-health), [`Bound::start`] measures in the background for as long
//! as traffic is held (shift-weight), reports a failed or inconclusive
//! metric at once, and [`Background::finish`] takes a final round.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::Utc;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    cloudwatch, judge, prometheus, Analysis, Measurement, Metric, Phase, Placeholders, Source,
};
use crate::wait::progress::short;
use crate::wait::WaitEnd;

/// The clients the providers use, made once per run.
#[derive(Debug, Clone)]
pub struct Clients {
    /// CloudWatch, when a metric reads it.
    pub cloudwatch: Option<aws_sdk_cloudwatch::Client>,
    /// HTTP, for Prometheus (keeps its connections between rounds).
    pub http: reqwest::Client,
}

impl Clients {
    /// The clients, with `cloudwatch` when a metric needs it.
    pub fn new(cloudwatch: Option<aws_sdk_cloudwatch::Client>) -> Self {
        Self {
            cloudwatch,
            http: reqwest::Client::builder()
                .user_agent(concat!("switchyard-analysis/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_default(),
        }
    }
}

/// A metric's query, placeholders filled in.
#[derive(Debug)]
enum Query {
    CloudWatch(cloudwatch::Query),
    Prometheus(prometheus::Query),
}

impl Query {
    fn shown(&self) -> &str {
        match self {
            Self::CloudWatch(q) => q.shown(),
            Self::Prometheus(q) => q.shown(),
        }
    }

    async fn read(&self) -> super::Reading {
        match self {
            Self::CloudWatch(q) => q.read().await,
            Self::Prometheus(q) => q.read().await,
        }
    }
}

#[derive(Debug)]
struct BoundMetric {
    metric: Metric,
    query: Query,
}

/// An analysis ready to run: every query complete, every client made.
#[derive(Debug)]
pub struct Bound {
    metrics: Vec<BoundMetric>,
    /// Without `count` or `window`, take one measurement (verify-health).
    once_by_default: bool,
}

impl Bound {
    /// Fills in `analysis`'s placeholders from `values` and gives each
    /// metric its client. Errs naming the metric and the placeholder the
    /// state cannot fill.
    pub fn new(
        analysis: &Analysis,
        values: &Placeholders,
        clients: &Clients,
    ) -> Result<Self, String> {
        let lookup = |name: &str| values.get(name);
        let mut metrics = Vec::new();
        for metric in &analysis.metrics {
            let missing = |name: String| {
                format!(
                    "metric {:?} uses {{{name}}}, which the state does not give{}",
                    metric.name,
                    if name == "stack" {
                        " (name the stack: --to, or --stack)"
                    } else {
                        ""
                    }
                )
            };
            let query = match &metric.source {
                Source::CloudWatch(spec) => {
                    let client = clients
                        .cloudwatch
                        .clone()
                        .ok_or("a cloudwatch metric needs a CloudWatch client")?;
                    Query::CloudWatch(
                        cloudwatch::Query::new(client, spec, &lookup).map_err(missing)?,
                    )
                }
                Source::Prometheus(spec) => Query::Prometheus(
                    prometheus::Query::new(clients.http.clone(), spec, &lookup).map_err(missing)?,
                ),
            };
            metrics.push(BoundMetric {
                metric: metric.clone(),
                query,
            });
        }
        Ok(Self {
            metrics,
            once_by_default: false,
        })
    }

    /// Takes one measurement without `count` or `window` (verify-health)
    /// instead of measuring for as long as it runs.
    #[must_use]
    pub fn once_by_default(mut self) -> Self {
        self.once_by_default = true;
        self
    }

    /// The queries as sent, one per metric.
    pub fn queries(&self) -> Vec<(String, String)> {
        self.metrics
            .iter()
            .map(|m| (m.metric.name.clone(), m.query.shown().to_owned()))
            .collect()
    }

    /// One measurement of every metric, concurrently.
    pub async fn round(&self) -> Vec<Measurement> {
        futures::future::join_all(self.metrics.iter().map(measure)).await
    }

    /// Measures in the background until [`Background::finish`].
    pub fn start(self: &Arc<Self>, cancel: &CancellationToken) -> Background {
        let tallies = Arc::new(Mutex::new(
            self.metrics
                .iter()
                .map(|_| Tally::new())
                .collect::<Vec<_>>(),
        ));
        let (ended_tx, ended) = watch::channel(None);
        let stop = cancel.child_token();
        let task = tokio::spawn(measure_all(
            self.clone(),
            tallies.clone(),
            ended_tx,
            stop.clone(),
        ));
        Background {
            bound: self.clone(),
            tallies,
            ended,
            stop,
            task: Some(task),
        }
    }

    /// Measures until every metric is done (its count, its window, or a limit).
    pub async fn run(
        self: &Arc<Self>,
        cancel: &CancellationToken,
    ) -> Result<AnalysisReport, WaitEnd> {
        let mut background = self.start(cancel);
        if let Some(task) = background.task.take() {
            let _ = task.await;
        }
        if cancel.is_cancelled() {
            return Err(WaitEnd::Cancelled);
        }
        Ok(background.report())
    }

    fn done(&self, i: usize, tally: &Tally) -> bool {
        let m = &self.metrics[i].metric;
        let count = m
            .count
            .or((self.once_by_default && m.window.is_none()).then_some(1));
        tally.ended.is_some()
            || count.is_some_and(|c| tally.measured() >= c)
            || m.window.is_some_and(|w| tally.started.elapsed() >= w)
    }
}

async fn measure(m: &BoundMetric) -> Measurement {
    let started = Instant::now();
    let at = Utc::now();
    let timeout = m.metric.timeout;
    let reading = match tokio::time::timeout(timeout, m.query.read()).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer within {} (the metric's timeout)",
            short(timeout)
        )),
    };
    let (verdict, reason) = judge(&m.metric, &reading);
    Measurement {
        metric: m.metric.name.clone(),
        at,
        query: m.query.shown().to_owned(),
        values: reading.unwrap_or_default(),
        verdict,
        reason,
        took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

type Tallies = Arc<Mutex<Vec<Tally>>>;

fn lock(tallies: &Tallies) -> std::sync::MutexGuard<'_, Vec<Tally>> {
    tallies.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn measure_all(
    bound: Arc<Bound>,
    tallies: Tallies,
    ended: watch::Sender<Option<(Phase, String)>>,
    stop: CancellationToken,
) {
    let loops = (0..bound.metrics.len()).map(|i| {
        let (bound, tallies, ended, stop) = (&bound, &tallies, &ended, &stop);
        async move {
            loop {
                if bound.done(i, &lock(tallies)[i]) {
                    return;
                }
                let m = tokio::select! {
                    () = stop.cancelled() => return,
                    m = measure(&bound.metrics[i]) => m,
                };
                let end = lock(tallies)[i].record(&bound.metrics[i].metric, m);
                if let Some(end) = end {
                    ended.send_replace(Some(end));
                    return;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(bound.metrics[i].metric.interval) => {}
                }
            }
        }
    });
    futures::future::join_all(loops).await;
}

/// An analysis measuring in the background.
#[derive(Debug)]
pub struct Background {
    bound: Arc<Bound>,
    tallies: Tallies,
    ended: watch::Receiver<Option<(Phase, String)>>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Background {
    /// Resolves when a metric ends failed or inconclusive, with how and
    /// why; never while the metrics pass.
    pub async fn ended(&mut self) -> (Phase, String) {
        loop {
            if let Some(reason) = self.ended.borrow_and_update().clone() {
                return reason;
            }
            if self.ended.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// How and why a metric ended failed or inconclusive, if one has.
    pub fn ended_now(&self) -> Option<(Phase, String)> {
        self.ended.borrow().clone()
    }

    /// The measurements taken since the last call.
    pub fn take_new(&self) -> Vec<Measurement> {
        let mut tallies = lock(&self.tallies);
        let mut new: Vec<Measurement> = tallies
            .iter_mut()
            .flat_map(|t| {
                let from = t.reported;
                t.reported = t.measurements.len();
                t.measurements[from..].to_vec()
            })
            .collect();
        new.sort_by_key(|m| m.at);
        new
    }

    /// Stops measuring; with `final_round`, measures every metric not yet
    /// done once more. Returns the verdict.
    pub async fn finish(&mut self, final_round: bool) -> AnalysisReport {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if final_round {
            let due: Vec<usize> = {
                let tallies = lock(&self.tallies);
                (0..tallies.len())
                    .filter(|&i| !self.bound.done(i, &tallies[i]))
                    .collect()
            };
            let taken =
                futures::future::join_all(due.iter().map(|&i| measure(&self.bound.metrics[i])))
                    .await;
            let mut tallies = lock(&self.tallies);
            for (i, m) in due.into_iter().zip(taken) {
                tallies[i].record(&self.bound.metrics[i].metric, m);
            }
        }
        self.report()
    }

    /// The verdict as of now.
    pub fn report(&self) -> AnalysisReport {
        let tallies = lock(&self.tallies);
        let metrics: Vec<MetricVerdict> = self
            .bound
            .metrics
            .iter()
            .zip(tallies.iter())
            .map(|(m, t)| t.conclude(&m.metric))
            .collect();
        let mut measurements: Vec<Measurement> = tallies
            .iter()
            .flat_map(|t| t.measurements.clone())
            .collect();
        measurements.sort_by_key(|m| m.at);
        AnalysisReport::new(metrics, measurements)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What one metric's measurements came to.
#[derive(Debug)]
struct Tally {
    started: Instant,
    measurements: Vec<Measurement>,
    /// How many of them [`Background::take_new`] has handed out.
    reported: usize,
    successful: u32,
    failed: u32,
    inconclusive: u32,
    errors: u32,
    consecutive_errors: u32,
    ended: Option<(Phase, String)>,
}

impl Tally {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            measurements: Vec::new(),
            reported: 0,
            successful: 0,
            failed: 0,
            inconclusive: 0,
            errors: 0,
            consecutive_errors: 0,
            ended: None,
        }
    }

    fn measured(&self) -> u32 {
        u32::try_from(self.measurements.len()).unwrap_or(u32::MAX)
    }

    /// Counts `m`; returns how and why the metric ended when a limit ends it.
    fn record(&mut self, metric: &Metric, m: Measurement) -> Option<(Phase, String)> {
        if self.ended.is_some() {
            return None;
        }
        match m.verdict {
            Phase::Successful => self.successful += 1,
            Phase::Failed => self.failed += 1,
            Phase::Inconclusive => self.inconclusive += 1,
            Phase::Error => self.errors += 1,
        }
        if m.verdict == Phase::Error {
            self.consecutive_errors += 1;
        } else {
            self.consecutive_errors = 0;
        }
        let name = &metric.name;
        let end = if self.failed > metric.failure_limit {
            Some((
                Phase::Failed,
                format!(
                    "metric {name} failed: {} ({} failed measurement(s), failure_limit {})",
                    m.reason, self.failed, metric.failure_limit
                ),
            ))
        } else if self.consecutive_errors > metric.consecutive_error_limit {
            Some((
                Phase::Failed,
                format!(
                    "metric {name} failed: {} query errors in a row (consecutive_error_limit {}); last: {}",
                    self.consecutive_errors, metric.consecutive_error_limit, m.reason
                ),
            ))
        } else if self.inconclusive > metric.inconclusive_limit {
            Some((
                Phase::Inconclusive,
                format!(
                    "metric {name} inconclusive: {} ({} inconclusive measurement(s), inconclusive_limit {})",
                    m.reason, self.inconclusive, metric.inconclusive_limit
                ),
            ))
        } else {
            None
        };
        self.measurements.push(m);
        self.ended.clone_from(&end);
        end
    }

    fn conclude(&self, metric: &Metric) -> MetricVerdict {
        let name = &metric.name;
        let measured = self.measured();
        let (verdict, reason) = if let Some((phase, why)) = &self.ended {
            (*phase, why.clone())
        } else if measured == 0 {
            (
                Phase::Inconclusive,
                format!("metric {name} inconclusive: no measurement was taken"),
            )
        } else if self.errors == measured {
            let last = self
                .measurements
                .last()
                .map(|m| m.reason.as_str())
                .unwrap_or_default();
            (
                Phase::Failed,
                format!(
                    "metric {name} failed: every measurement ({measured}) errored; last: {last}"
                ),
            )
        } else if self.successful == 0 {
            (
                Phase::Inconclusive,
                format!(
                    "metric {name} inconclusive: no successful measurement ({} failed, {} inconclusive, {} errors)",
                    self.failed, self.inconclusive, self.errors
                ),
            )
        } else {
            (
                Phase::Successful,
                format!(
                    "metric {name}: {} of {measured} measurement(s) successful",
                    self.successful
                ),
            )
        };
        MetricVerdict {
            name: name.clone(),
            verdict,
            reason,
            measured,
            successful: self.successful,
            failed: self.failed,
            inconclusive: self.inconclusive,
            errors: self.errors,
        }
    }
}

/// One metric's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricVerdict {
    /// The metric.
    pub name: String,
    /// How it ended.
    pub verdict: Phase,
    /// Why, in one line.
    pub reason: String,
    /// Measurements taken.
    pub measured: u32,
    /// Of which successful.
    pub successful: u32,
    /// Failed.
    pub failed: u32,
    /// Inconclusive.
    pub inconclusive: u32,
    /// Errored.
    pub errors: u32,
}

/// An analysis' verdict, with every measurement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnalysisReport {
    /// Successful only when every metric is.
    pub verdict: Phase,
    /// One line: the first metric that did not succeed, or all that did.
    pub summary: String,
    /// Per metric.
    pub metrics: Vec<MetricVerdict>,
    /// Every measurement, in time order.
    pub measurements: Vec<Measurement>,
}

impl AnalysisReport {
    fn new(metrics: Vec<MetricVerdict>, measurements: Vec<Measurement>) -> Self {
        let worst = metrics
            .iter()
            .find(|m| m.verdict == Phase::Failed)
            .or_else(|| metrics.iter().find(|m| m.verdict != Phase::Successful));
        let (verdict, summary) = if let Some(m) = worst {
            (m.verdict, m.reason.clone())
        } else {
            let mut s = format!("{} metric(s) successful:", metrics.len());
            for m in &metrics {
                let _ = write!(s, " {} {}/{};", m.name, m.successful, m.measured);
            }
            (Phase::Successful, s.trim_end_matches(';').to_owned())
        };
        Self {
            verdict,
            summary,
            metrics,
            measurements,
        }
    }
}
