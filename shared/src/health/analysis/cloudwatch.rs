//! The `cloudwatch` provider: one GetMetricData call per measurement, for a
//! metric or a metric-math expression over named metrics. The result is
//! the latest datapoint in the lookback; none is no data.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};
use aws_sdk_cloudwatch::Client;

use super::file::{CloudWatchSpec, CloudWatchWhat, MetricStat as Stat};
use super::{Reading, Sample};
use crate::aws::ProviderError;
use crate::wait::progress::short;

/// The id of the query whose values are the result.
const RESULT: &str = "result";

/// A metric's GetMetricData request, placeholders filled in.
#[derive(Debug)]
pub struct Query {
    client: Client,
    queries: Vec<MetricDataQuery>,
    lookback: Duration,
    shown: String,
}

impl Query {
    /// The request for `spec`, placeholders filled by `lookup`; errs with
    /// the name of a placeholder it cannot fill.
    pub fn new(
        client: Client,
        spec: &CloudWatchSpec,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let period = i32::try_from(spec.period.as_secs()).unwrap_or(i32::MAX);
        let mut shown = String::from("GetMetricData ");
        let queries = match &spec.what {
            CloudWatchWhat::Metric(stat) => {
                let (query, text) = stat_query(RESULT, stat, period, true, lookup)?;
                shown.push_str(&text);
                vec![query]
            }
            CloudWatchWhat::Expression {
                expression,
                queries,
            } => {
                let expression = expression.fill(lookup)?;
                let _ = write!(shown, "{expression} where");
                let mut all = Vec::new();
                for (id, stat) in queries {
                    let (query, text) = stat_query(id, stat, period, false, lookup)?;
                    let _ = write!(shown, " {id} = {text};");
                    all.push(query);
                }
                shown.pop();
                all.push(
                    MetricDataQuery::builder()
                        .id(RESULT)
                        .expression(expression)
                        .return_data(true)
                        .build(),
                );
                all
            }
        };
        let _ = write!(
            shown,
            ", period {}, latest datapoint of the last {}",
            short(spec.period),
            short(spec.lookback)
        );
        Ok(Self {
            client,
            queries,
            lookback: spec.lookback,
            shown,
        })
    }

    /// The request as people read it.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// One GetMetricData call: the latest value of the result.
    pub async fn read(&self) -> Reading {
        let end = SystemTime::now();
        let start = end
            .checked_sub(self.lookback)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let out = self
            .client
            .get_metric_data()
            .set_metric_data_queries(Some(self.queries.clone()))
            .start_time(DateTime::from(start))
            .end_time(DateTime::from(end))
            .scan_by(ScanBy::TimestampDescending)
            .send()
            .await
            .map_err(|e| ProviderError::from_sdk("cloudwatch:GetMetricData", &e).to_string())?;
        if let Some(m) = out.messages().first() {
            tracing::debug!("GetMetricData says: {}", m.value().unwrap_or_default());
        }
        let Some(result) = out
            .metric_data_results()
            .iter()
            .find(|r| r.id() == Some(RESULT))
        else {
            return Ok(Vec::new());
        };
        let latest = result
            .timestamps()
            .iter()
            .zip(result.values())
            .max_by_key(|(t, _)| (t.secs(), t.subsec_nanos()));
        Ok(latest
            .map(|(t, v)| Sample {
                series: None,
                value: *v,
                at: chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()),
            })
            .into_iter()
            .collect())
    }
}

/// A MetricStat query with id `id`, and how it reads.
fn stat_query(
    id: &str,
    stat: &Stat,
    period: i32,
    return_data: bool,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(MetricDataQuery, String), String> {
    let namespace = stat.namespace.fill(lookup)?;
    let name = stat.metric.fill(lookup)?;
    let mut metric = Metric::builder().namespace(&namespace).metric_name(&name);
    let mut dims = Vec::new();
    for (k, v) in &stat.dimensions {
        let v = v.fill(lookup)?;
        dims.push(format!("{k}={v}"));
        metric = metric.dimensions(Dimension::builder().name(k).value(v).build());
    }
    let query = MetricDataQuery::builder()
        .id(id)
        .metric_stat(
            MetricStat::builder()
                .metric(metric.build())
                .period(period)
                .stat(&stat.stat)
                .build(),
        )
        .return_data(return_data)
        .build();
    Ok((
        query,
        format!("{} {namespace}/{name} {{{}}}", stat.stat, dims.join(",")),
    ))
}

/// The IAM policy of reading metrics (GetMetricData has no resource level).
pub fn policy() -> crate::aws::iam::Policy {
    let mut policy = crate::aws::iam::Policy::new();
    policy.allow("ReadMetrics", &["cloudwatch:GetMetricData"], ["*"]);
    policy
}
