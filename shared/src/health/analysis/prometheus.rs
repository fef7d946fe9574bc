//! The `prometheus` provider: an instant query (`/api/v1/query`) per
//! measurement. A vector is judged per series (all must pass), a scalar
//! as one value; an empty vector is no data; NaN stays NaN.

use serde::Deserialize;
use serde_json::Value;

use super::file::PrometheusSpec;
use super::{Reading, Sample};

/// A metric's PromQL query, placeholders filled in.
#[derive(Debug)]
pub struct Query {
    client: reqwest::Client,
    endpoint: reqwest::Url,
    promql: String,
    shown: String,
}

impl Query {
    /// The query of `spec`, placeholders filled by `lookup`; errs with the
    /// name of a placeholder it cannot fill.
    pub fn new(
        client: reqwest::Client,
        spec: &PrometheusSpec,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let query = spec.query.fill(lookup)?;
        let mut endpoint = spec.url.clone();
        let path = format!("{}/api/v1/query", endpoint.path().trim_end_matches('/'));
        endpoint.set_path(&path);
        endpoint.set_query(None);
        Ok(Self {
            shown: format!("{query} at {endpoint}"),
            client,
            endpoint,
            promql: query,
        })
    }

    /// The query as people read it.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// One instant query.
    pub async fn read(&self) -> Reading {
        let response = self
            .client
            .get(self.endpoint.clone())
            .query(&[("query", self.promql.as_str())])
            .send()
            .await
            .map_err(|e| {
                format!(
                    "Prometheus at {} did not answer: {}",
                    self.endpoint,
                    chain(&e)
                )
            })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("Prometheus answer cut short: {}", chain(&e)))?;
        let answer: Answer = serde_json::from_slice(&body).map_err(|_| {
            format!(
                "Prometheus answered HTTP {status} with no query result: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
            )
        })?;
        if answer.status != "success" {
            return Err(format!(
                "Prometheus refused the query (HTTP {status}, {}): {}",
                answer.error_type.unwrap_or_default(),
                answer.error.unwrap_or_default()
            ));
        }
        let data = answer
            .data
            .ok_or("Prometheus answered success without data")?;
        match data.result_type.as_str() {
            "vector" => {
                let series: Vec<Series> = serde_json::from_value(data.result)
                    .map_err(|e| format!("Prometheus vector not understood: {e}"))?;
                series
                    .into_iter()
                    .map(|s| {
                        let mut sample = sample(&s.value)?;
                        if !s.metric.is_empty() {
                            let labels: Vec<String> = s
                                .metric
                                .iter()
                                .map(|(k, v)| format!("{k}={:?}", v.as_str().unwrap_or_default()))
                                .collect();
                            sample.series = Some(format!("{{{}}}", labels.join(",")));
                        }
                        Ok(sample)
                    })
                    .collect()
            }
            "scalar" => Ok(vec![sample(&data.result)?]),
            other => Err(format!(
                "Prometheus answered a {other}; the query must give an instant vector or a scalar"
            )),
        }
    }
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Value,
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    metric: serde_json::Map<String, Value>,
    value: Value,
}

/// `[time, "value"]`, as Prometheus writes a sample.
fn sample(pair: &Value) -> Result<Sample, String> {
    let bad = || format!("Prometheus sample {pair} is not [time, \"value\"]");
    let [time, value] = pair.as_array().map(Vec::as_slice).ok_or_else(bad)? else {
        return Err(bad());
    };
    let value = match value.as_str().ok_or_else(bad)? {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| bad())?,
    };
    #[allow(clippy::cast_possible_truncation)]
    let at = time
        .as_f64()
        .and_then(|t| chrono::DateTime::from_timestamp_millis((t * 1000.0) as i64));
    Ok(Sample {
        series: None,
        value,
        at,
    })
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
