//! The analysis file's checks, the judging of measurements and the engine:
//! CloudWatch with the SDK mocked (tokio's paused time), Prometheus against
//! loopback stand-ins (errors, NaN, empty results, a server that hangs).

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_cloudwatch::operation::get_metric_data::{GetMetricDataInput, GetMetricDataOutput};
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::MetricDataResult;
use aws_smithy_mocks::{mock, MockResponseInterceptor, Rule, RuleMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::engine::Clients;
use super::*;
use crate::aws::config::retry_policy;
use crate::aws::mocked::error_body;

/// The issue's example, as users will copy it.
const EXAMPLE: &str = include_str!("../../../../docs/examples/canary-analysis.json");

fn green() -> Placeholders {
    Placeholders {
        stack: Some("green".into()),
        service: Some("shop".into()),
        version: Some("3".into()),
        target_group: None,
    }
}

fn example_with(edit: &str, with: &str) -> Analysis {
    let text = EXAMPLE.replace(edit, with);
    Analysis::parse(&text, "analysis.json").unwrap()
}

fn datapoints(values: &[f64]) -> GetMetricDataOutput {
    let mut result = MetricDataResult::builder().id("result");
    for (i, v) in values.iter().enumerate() {
        let secs = 1_800_000_000 - 60 * i64::try_from(i).unwrap();
        result = result.timestamps(DateTime::from_secs(secs)).values(*v);
    }
    GetMetricDataOutput::builder()
        .metric_data_results(result.build())
        .build()
}

/// A CloudWatch client answered by `rules`. Built by hand rather than with
/// `mock_client!`, whose `with_test_defaults` needs the SDK's `test-util`
/// feature (a rebuild of every SDK crate for one test module).
fn cloudwatch(rules: &[&Rule]) -> aws_sdk_cloudwatch::Client {
    let mut mocks = MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny);
    for rule in rules {
        mocks = mocks.with_rule(rule);
    }
    let config = aws_sdk_cloudwatch::Config::builder()
        .behavior_version(aws_sdk_cloudwatch::config::BehaviorVersion::latest())
        .region(aws_sdk_cloudwatch::config::Region::from_static("eu-west-1"))
        .credentials_provider(aws_sdk_cloudwatch::config::Credentials::new(
            "AKIDTEST", "test", None, None, "test",
        ))
        .http_client(aws_smithy_mocks::create_mock_http_client())
        .interceptor(mocks)
        .retry_config(retry_policy())
        .build();
    aws_sdk_cloudwatch::Client::from_conf(config)
}

fn cloudwatch_error(code: &str, message: &str) -> String {
    error_body(
        "http://monitoring.amazonaws.com/doc/2010-08-01/",
        code,
        message,
    )
}

fn bind(analysis: &Analysis, rules: &[&Rule]) -> Arc<Bound> {
    let clients = Clients::new(Some(cloudwatch(rules)));
    Arc::new(
        Bound::new(analysis, &green(), &clients)
            .unwrap()
            .once_by_default(),
    )
}

#[test]
fn the_issue_example_is_read_as_written() {
    let a = Analysis::parse(EXAMPLE, "analysis.json").unwrap();
    let m = &a.metrics[0];
    assert_eq!(m.name, "error-rate");
    assert_eq!(m.interval, Duration::from_millis(500));
    assert_eq!(
        (
            m.failure_limit,
            m.consecutive_error_limit,
            m.inconclusive_limit
        ),
        (0, 4, 0)
    );
    assert_eq!(m.no_data, NoData::Inconclusive);
    assert!(m.success.holds(0.05) && !m.success.holds(0.5));
    assert!(a.uses_cloudwatch());
    assert_eq!(
        a.describe(),
        ["error-rate (cloudwatch): success when result <= 0.05, every 500ms; failure_limit 0, no_data inconclusive"]
    );
}

#[test]
fn a_bad_file_is_refused_with_the_line_and_the_reason() {
    // (the file, the line the message names, the reason)
    let cases = [
        (
            EXAMPLE.replace("\"500ms\"", "\"soon\""),
            13,
            "\"soon\" is not a duration",
        ),
        (
            EXAMPLE.replace("result <= 0.05", "result =< 0.05"),
            12,
            "condition \"result =< 0.05\": `=` is not a comparison; use `==` at character 8",
        ),
        (
            EXAMPLE.replace("{stack}", "{color}"),
            8,
            "unknown placeholder {color}",
        ),
        (
            EXAMPLE.replace("\"failure_limit\"", "\"failureLimit\""),
            14,
            "unknown field `failureLimit`",
        ),
        (
            EXAMPLE.replace("\"Average\"", "\"Mean\""),
            9,
            "\"Mean\" is not a CloudWatch statistic",
        ),
        (
            EXAMPLE.replace("\"60s\"", "\"90s\""),
            11,
            "cloudwatch `period` 1m 30s is not one CloudWatch accepts",
        ),
        (
            EXAMPLE.replace("\"inconclusive\"", "\"maybe\""),
            15,
            "unknown variant `maybe`",
        ),
        (
            EXAMPLE.replace("\"failure_limit\": 0", "\"failure_limit\": -1"),
            14,
            "invalid value: integer `-1`",
        ),
        (
            EXAMPLE.replace("\"failure_limit\": 0", "\"count\": 3, \"window\": \"1m\""),
            17,
            "metric \"error-rate\": give `count` or `window`, not both",
        ),
        (
            EXAMPLE.replace("\"success\": \"result <= 0.05\",", ""),
            17,
            "metric \"error-rate\" has no `success` condition",
        ),
        (
            EXAMPLE.replace("\"cloudwatch\"", "\"datadog\""),
            5,
            "unknown field `datadog`",
        ),
        (
            EXAMPLE
                .replace(
                    "\"metric\": \"ErrorRate\",",
                    "\"expression\": \"errors / requests\",",
                )
                .replace("\"namespace\": \"App\",", ""),
            11,
            "with an `expression`, each metric goes in `queries`",
        ),
    ];
    for (text, line, want) in cases {
        let e = Analysis::parse(&text, "analysis.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "want {want:?} in: {e}");
        assert!(
            e.starts_with(&format!("analysis file analysis.json, line {line} column ")),
            "want line {line}: {e}"
        );
    }
    let e = Analysis::parse("{\"metrics\": []}", "analysis.json")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "analysis file analysis.json: `metrics` is empty: list at least one metric"
    );
    let two = format!(
        "{{\"metrics\": [{0}, {0}]}}",
        &EXAMPLE[EXAMPLE.find("    {").unwrap()..EXAMPLE.rfind("  ]").unwrap()]
    );
    let e = Analysis::parse(&two, "a.json").unwrap_err().to_string();
    assert!(e.contains("two metrics are named \"error-rate\""), "{e}");
}

#[tokio::test(start_paused = true)]
async fn an_error_rate_of_one_half_fails_and_one_percent_passes_with_the_query_as_sent() {
    let sent = mock!(aws_sdk_cloudwatch::Client::get_metric_data)
        .match_requests(|r: &GetMetricDataInput| {
            let q = &r.metric_data_queries()[0];
            let stat = q.metric_stat().unwrap();
            let metric = stat.metric().unwrap();
            q.id() == Some("result")
                && q.return_data() == Some(true)
                && metric.namespace() == Some("App")
                && metric.metric_name() == Some("ErrorRate")
                && metric.dimensions()[0].value() == Some("green")
                && stat.stat() == Some("Average")
                && stat.period() == Some(60)
        })
        .then_output(|| datapoints(&[0.5, 0.01]));
    let a = Analysis::parse(EXAMPLE, "analysis.json").unwrap();
    let report = bind(&a, &[&sent])
        .run(&CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(sent.num_calls(), 1);
    assert_eq!(report.verdict, Phase::Failed);
    assert!(
        report.summary.contains("metric error-rate failed: 0.5 does not meet result <= 0.05 (1 failed measurement(s), failure_limit 0)"),
        "{}",
        report.summary
    );
    let m = &report.measurements[0];
    assert_eq!(
        m.query,
        "GetMetricData Average App/ErrorRate {Stack=green}, period 1m00s, latest datapoint of the last 5m00s"
    );
    assert!(
        (m.values[0].value - 0.5).abs() < 1e-12,
        "the latest datapoint"
    );
    assert_eq!(m.verdict, Phase::Failed);

    let low =
        mock!(aws_sdk_cloudwatch::Client::get_metric_data).then_output(|| datapoints(&[0.01]));
    let report = bind(&a, &[&low])
        .run(&CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.verdict, Phase::Successful, "{}", report.summary);
    assert_eq!(report.summary, "1 metric(s) successful: error-rate 1/1");
}

#[tokio::test(start_paused = true)]
async fn no_data_is_inconclusive_unless_the_file_says_otherwise() {
    let empty = mock!(aws_sdk_cloudwatch::Client::get_metric_data).then_output(|| datapoints(&[]));
    let none = mock!(aws_sdk_cloudwatch::Client::get_metric_data)
        .then_output(|| GetMetricDataOutput::builder().build());
    for rule in [&empty, &none] {
        let a = Analysis::parse(EXAMPLE, "analysis.json").unwrap();
        let report = bind(&a, &[rule])
            .run(&CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(report.verdict, Phase::Inconclusive);
        assert!(
            report.summary.contains("no data (no_data: inconclusive)"),
            "{}",
            report.summary
        );
    }
    let pass = example_with("\"no_data\": \"inconclusive\"", "\"no_data\": \"pass\"");
    let report = bind(&pass, &[&empty])
        .run(&CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.verdict, Phase::Successful);
    assert!(report.measurements[0].reason.contains("counted as passed"));
    let fail = example_with("\"no_data\": \"inconclusive\"", "\"no_data\": \"fail\"");
    let report = bind(&fail, &[&empty])
        .run(&CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.verdict, Phase::Failed);
}

#[tokio::test(start_paused = true)]
async fn nan_fails_a_comparison_and_passes_only_when_the_condition_asks() {
    let nan =
        mock!(aws_sdk_cloudwatch::Client::get_metric_data).then_output(|| datapoints(&[f64::NAN]));
    let a = Analysis::parse(EXAMPLE, "analysis.json").unwrap();
    let report = bind(&a, &[&nan])
        .run(&CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.verdict, Phase::Failed);
    assert!(
        report.summary.contains("NaN does not meet"),
        "{}",
        report.summary
    );
    let json = serde_json::to_value(&report.measurements[0]).unwrap();
    assert_eq!(json["values"][0]["value"], "NaN");
    let lenient = example_with("result <= 0.05", "isNaN(result) or result <= 0.05");
    let report = bind(&lenient, &[&nan])
        .run(&CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.verdict, Phase::Successful);
}

#[tokio::test(start_paused = true)]
async fn a_result_meeting_neither_condition_is_inconclusive_up_to_the_limit() {
    let mid =
        mock!(aws_sdk_cloudwatch::Client::get_metric_data).then_output(|| datapoints(&[0.07]));
    let a = example_with(
        "\"failure_limit\": 0",
        "\"failure\": \"result > 0.1\", \"count\": 3, \"inconclusive_limit\": 1",
    );
    let report = bind(&a, &[&mid])
        .run(&CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.verdict, Phase::Inconclusive);
    assert_eq!(
        report.metrics[0].measured, 2,
        "ended at the second inconclusive"
    );
    assert!(
        report
            .summary
            .contains("meets neither result <= 0.05 nor the failure condition"),
        "{}",
        report.summary
    );
}

#[tokio::test(start_paused = true)]
async fn throttling_is_retried_and_errors_past_the_limit_fail_never_pass() {
    let throttled = mock!(aws_sdk_cloudwatch::Client::get_metric_data)
        .sequence()
        .http_status(400, Some(cloudwatch_error("Throttling", "Rate exceeded")))
        .times(2)
        .output(|| datapoints(&[0.01]))
        .build();
    let a = Analysis::parse(EXAMPLE, "analysis.json").unwrap();
    let report = bind(&a, &[&throttled])
        .run(&CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        throttled.num_calls(),
        3,
        "two throttled answers, then the value"
    );
    assert_eq!(report.verdict, Phase::Successful);

    let refused = mock!(aws_sdk_cloudwatch::Client::get_metric_data).then_http_response(|| {
        aws_smithy_runtime_api::http::Response::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(400).unwrap(),
            aws_smithy_types::body::SdkBody::from(cloudwatch_error(
                "InvalidParameterValue",
                "The value Mean for parameter Stat is not valid.",
            )),
        )
    });
    // Every measurement errored within the limit: a failure, not a success.
    let a = example_with("\"failure_limit\": 0", "\"count\": 3");
    let report = bind(&a, &[&refused])
        .run(&CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.verdict, Phase::Failed);
    assert!(
        report.summary.contains("every measurement (3) errored; last: cloudwatch:GetMetricData failed: InvalidParameterValue"),
        "{}",
        report.summary
    );
    // More errors in a row than the limit: failed at once.
    let a = example_with(
        "\"failure_limit\": 0",
        "\"count\": 10, \"consecutive_error_limit\": 1",
    );
    let report = bind(&a, &[&refused])
        .run(&CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.verdict, Phase::Failed);
    assert_eq!(report.metrics[0].measured, 2);
    assert!(
        report
            .summary
            .contains("2 query errors in a row (consecutive_error_limit 1)"),
        "{}",
        report.summary
    );
}

#[tokio::test(start_paused = true)]
async fn an_expression_is_sent_over_its_named_queries() {
    let text = r#"{"metrics": [{"name": "5xx-share",
        "cloudwatch": {"expression": "errors / requests",
            "queries": {
                "errors": {"namespace": "AWS/ApplicationELB", "metric": "HTTPCode_Target_5XX_Count", "dimensions": {"TargetGroup": "{target_group}"}, "stat": "Sum"},
                "requests": {"namespace": "AWS/ApplicationELB", "metric": "RequestCount", "dimensions": {"TargetGroup": "{target_group}"}, "stat": "Sum"}},
            "period": "1m"},
        "success": "result < 0.01", "interval": "1s"}]}"#;
    let a = Analysis::parse(text, "a.json").unwrap();
    let sent = mock!(aws_sdk_cloudwatch::Client::get_metric_data)
        .match_requests(|r: &GetMetricDataInput| {
            let q = r.metric_data_queries();
            q.len() == 3
                && q[0].id() == Some("errors")
                && q[0].return_data() == Some(false)
                && q[2].id() == Some("result")
                && q[2].expression() == Some("errors / requests")
                && q[0].metric_stat().unwrap().metric().unwrap().dimensions()[0].value()
                    == Some("targetgroup/green/73e2d6bc24d8a067")
        })
        .then_output(|| datapoints(&[0.001]));
    let mut values = green();
    let clients = Clients::new(Some(cloudwatch(&[&sent])));
    assert_eq!(
        Bound::new(&a, &values, &clients).unwrap_err(),
        "metric \"5xx-share\" uses {target_group}, which the state does not give"
    );
    let mut doc = crate::state::StateDocument::default();
    doc.stack_mut("green").ids.push(
        "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/green/73e2d6bc24d8a067"
            .into(),
    );
    values.target_group = Placeholders::from_state(&doc, Some("green")).target_group;
    let bound = Arc::new(Bound::new(&a, &values, &clients).unwrap().once_by_default());
    let report = bound.run(&CancellationToken::new()).await.unwrap();
    assert_eq!(report.verdict, Phase::Successful, "{}", report.summary);
    assert!(report.measurements[0].query.starts_with("GetMetricData errors / requests where errors = Sum AWS/ApplicationELB/HTTPCode_Target_5XX_Count {TargetGroup=targetgroup/green/73e2d6bc24d8a067}; requests = Sum"), "{}", report.measurements[0].query);
}

#[tokio::test(start_paused = true)]
async fn in_the_background_a_metric_turning_bad_ends_the_analysis_at_once_and_a_final_round_counts()
{
    let turning = mock!(aws_sdk_cloudwatch::Client::get_metric_data)
        .sequence()
        .output(|| datapoints(&[0.01]))
        .times(3)
        .output(|| datapoints(&[0.5]))
        .repeatedly()
        .build();
    let a = Analysis::parse(EXAMPLE, "analysis.json").unwrap();
    let clients = Clients::new(Some(cloudwatch(&[&turning])));
    let bound = Arc::new(Bound::new(&a, &green(), &clients).unwrap());
    let started = tokio::time::Instant::now();
    let mut background = bound.start(&CancellationToken::new());
    let (phase, why) = background.ended().await;
    assert_eq!(phase, Phase::Failed);
    // The fourth measurement, at 3 intervals of 500ms: not at the end of a hold.
    assert_eq!(started.elapsed(), Duration::from_millis(1500));
    assert!(why.contains("0.5 does not meet result <= 0.05"), "{why}");
    assert_eq!(background.take_new().len(), 4);
    assert!(
        background.take_new().is_empty(),
        "each measurement is handed out once"
    );
    let report = background.finish(true).await;
    assert_eq!(report.verdict, Phase::Failed);
    assert_eq!(
        report.measurements.len(),
        4,
        "no round after a metric ended"
    );

    // A passing metric: measured for as long as it runs, then once more.
    let good =
        mock!(aws_sdk_cloudwatch::Client::get_metric_data).then_output(|| datapoints(&[0.01]));
    let clients = Clients::new(Some(cloudwatch(&[&good])));
    let bound = Arc::new(Bound::new(&a, &green(), &clients).unwrap());
    let mut background = bound.start(&CancellationToken::new());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let report = background.finish(true).await;
    assert_eq!(report.verdict, Phase::Successful);
    assert_eq!(
        good.num_calls(),
        4,
        "at 0, 500 and 1000ms, and the final round"
    );
}

/// A loopback stand-in for Prometheus answering `status` and `body` to
/// every query, or never answering (`None`).
async fn prometheus(answer: Option<(u16, &'static str)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0_u8; 4096];
            let _ = socket.read(&mut buf).await;
            match answer {
                Some((status, body)) => {
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                }
                None => held.push(socket),
            }
        }
    });
    url
}

async fn prometheus_report(answer: Option<(u16, &'static str)>, rest: &str) -> AnalysisReport {
    let url = prometheus(answer).await;
    let text = format!(
        r#"{{"metrics": [{{"name": "errors", "prometheus": {{"url": "{url}", "query": "sum by (code) (rate(http_requests_total{{stack=\"{{stack}}\"}}[1m]))"}},
            "success": "result < 1", "interval": "10ms", "timeout": "300ms"{rest}}}]}}"#
    );
    let a = Analysis::parse(&text, "a.json").unwrap();
    let bound = Arc::new(
        Bound::new(&a, &green(), &Clients::new(None))
            .unwrap()
            .once_by_default(),
    );
    bound.run(&CancellationToken::new()).await.unwrap()
}

#[tokio::test]
async fn prometheus_vectors_are_judged_per_series_and_scalars_nan_and_empty_as_they_are() {
    let vector = r#"{"status":"success","data":{"resultType":"vector","result":[
        {"metric":{"code":"200"},"value":[1800000000.5,"0.2"]},
        {"metric":{"code":"500"},"value":[1800000000.5,"3"]}]}}"#;
    let r = prometheus_report(Some((200, vector)), "").await;
    assert_eq!(r.verdict, Phase::Failed);
    assert!(
        r.summary
            .contains("{code=\"500\"} = 3 does not meet result < 1"),
        "{}",
        r.summary
    );
    assert_eq!(r.measurements[0].values.len(), 2);
    assert!(
        r.measurements[0].query.starts_with(
            "sum by (code) (rate(http_requests_total{stack=\"green\"}[1m])) at http://127.0.0.1:"
        ),
        "{}",
        r.measurements[0].query
    );
    assert!(
        r.measurements[0].query.contains("/api/v1/query"),
        "{}",
        r.measurements[0].query
    );

    let scalar =
        r#"{"status":"success","data":{"resultType":"scalar","result":[1800000000,"0.5"]}}"#;
    assert_eq!(
        prometheus_report(Some((200, scalar)), "").await.verdict,
        Phase::Successful
    );
    let nan = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1800000000,"NaN"]}]}}"#;
    let r = prometheus_report(Some((200, nan)), "").await;
    assert_eq!(r.verdict, Phase::Failed, "{}", r.summary);
    assert!(r.summary.contains("NaN does not meet"), "{}", r.summary);
    let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
    let r = prometheus_report(Some((200, empty)), "").await;
    assert_eq!(r.verdict, Phase::Inconclusive);
    let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
    let r = prometheus_report(Some((200, matrix)), "").await;
    assert_eq!(r.verdict, Phase::Failed, "an error every time");
    assert!(
        r.summary
            .contains("must give an instant vector or a scalar"),
        "{}",
        r.summary
    );
}

#[tokio::test]
async fn prometheus_errors_and_a_hanging_server_count_as_query_errors() {
    let refused = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#;
    let r = prometheus_report(Some((400, refused)), r#", "count": 2"#).await;
    assert_eq!(r.verdict, Phase::Failed);
    assert!(
        r.summary.contains("every measurement (2) errored; last: Prometheus refused the query (HTTP 400 Bad Request, bad_data): parse error at char 5"),
        "{}",
        r.summary
    );
    let r = prometheus_report(Some((503, "overloaded")), "").await;
    assert!(
        r.summary
            .contains("HTTP 503 Service Unavailable with no query result: overloaded"),
        "{}",
        r.summary
    );
    let r = prometheus_report(None, r#", "count": 3, "consecutive_error_limit": 1"#).await;
    assert_eq!(r.verdict, Phase::Failed);
    assert_eq!(r.metrics[0].measured, 2);
    assert!(
        r.summary
            .contains("no answer within 300ms (the metric's timeout)"),
        "{}",
        r.summary
    );
}
