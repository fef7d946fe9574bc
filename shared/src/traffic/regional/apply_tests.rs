//! Offline tests of `apply` with the SDK mocked: the contents of a conversion
//! batch, throttling retried, PENDING awaited until INSYNC, weights kept,
//! prune, a dry run, an unfinished shift.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_route53::operation::change_resource_record_sets::ChangeResourceRecordSetsInput;
use aws_sdk_route53::operation::create_health_check::CreateHealthCheckOutput;
use aws_sdk_route53::operation::get_change::GetChangeOutput;
use aws_sdk_route53::operation::list_health_checks::ListHealthChecksOutput;
use aws_sdk_route53::operation::list_resource_record_sets::ListResourceRecordSetsOutput;
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeStatus, HealthCheck, HealthCheckConfig, HealthCheckType,
    ResourceRecord, ResourceRecordSet, RrType,
};
use aws_sdk_route53::Client;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::aws::config::retry_policy;
use crate::aws::mocked::{change_info, route53_error as error_body, submitted};
use crate::outcome::{Code, ExitStatus, StepReport};
use crate::state::StateFile;
use crate::traffic::regional::parse;

fn simple(ip: &str) -> ResourceRecordSet {
    ResourceRecordSet::builder()
        .name("api.example.com.")
        .r#type(RrType::A)
        .ttl(300)
        .resource_records(ResourceRecord::builder().value(ip).build().unwrap())
        .build()
        .unwrap()
}

fn weighted(id: &str, weight: i64, ip: &str) -> ResourceRecordSet {
    ResourceRecordSet::builder()
        .name("api.example.com.")
        .r#type(RrType::A)
        .set_identifier(id)
        .weight(weight)
        .ttl(60)
        .resource_records(ResourceRecord::builder().value(ip).build().unwrap())
        .build()
        .unwrap()
}

/// A hosted zone in memory: listings read it, change batches update it, and
/// every batch is kept for the test to inspect.
#[derive(Clone, Default)]
struct Zone {
    sets: Arc<Mutex<Vec<ResourceRecordSet>>>,
    asked: Arc<Mutex<(String, Option<RrType>)>>,
    batches: Arc<Mutex<Vec<Vec<Change>>>>,
    checks: Arc<Mutex<Vec<(String, String)>>>,
}

impl Zone {
    fn holding(sets: Vec<ResourceRecordSet>) -> Self {
        let zone = Self::default();
        *zone.sets.lock().unwrap() = sets;
        zone
    }

    fn list_rule(&self) -> Rule {
        let (a, b) = (self.clone(), self.clone());
        mock!(Client::list_resource_record_sets)
            .match_requests(move |r| {
                *a.asked.lock().unwrap() = (
                    r.start_record_name().unwrap_or_default().to_owned(),
                    r.start_record_type().cloned(),
                );
                true
            })
            .then_output(move || {
                let (name, rtype) = b.asked.lock().unwrap().clone();
                let sets: Vec<ResourceRecordSet> = b
                    .sets
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|s| s.name() == name && Some(s.r#type()) == rtype.as_ref())
                    .cloned()
                    .collect();
                ListResourceRecordSetsOutput::builder()
                    .set_resource_record_sets(Some(sets))
                    .is_truncated(false)
                    .max_items(100)
                    .build()
                    .unwrap()
            })
    }

    /// Applies a batch (each attempt; re-applying the same batch is harmless).
    fn apply(&self, req: &ChangeResourceRecordSetsInput) {
        let changes = req.change_batch().unwrap().changes().to_vec();
        let mut sets = self.sets.lock().unwrap();
        for c in &changes {
            let set = c.resource_record_set().unwrap().clone();
            let key = |s: &ResourceRecordSet| {
                (
                    s.name().to_owned(),
                    s.r#type().clone(),
                    s.set_identifier().map(str::to_owned),
                )
            };
            sets.retain(|s| key(s) != key(&set));
            if c.action() != &ChangeAction::Delete {
                sets.push(set);
            }
        }
        self.batches.lock().unwrap().push(changes);
    }

    fn health_check_rules(&self) -> (Rule, Rule) {
        let (a, b, c) = (self.clone(), self.clone(), self.clone());
        let list = mock!(Client::list_health_checks).then_output(move || {
            let checks: Vec<HealthCheck> = a
                .checks
                .lock()
                .unwrap()
                .iter()
                .map(|(reference, id)| health_check(reference, id))
                .collect();
            ListHealthChecksOutput::builder()
                .set_health_checks(Some(checks))
                .marker("")
                .is_truncated(false)
                .max_items(100)
                .build()
                .unwrap()
        });
        let create = mock!(Client::create_health_check)
            .match_requests(move |r| {
                let mut checks = b.checks.lock().unwrap();
                let id = format!("hc-{}", checks.len() + 1);
                checks.push((r.caller_reference().unwrap().to_owned(), id));
                true
            })
            .then_output(move || {
                let (reference, id) = c.checks.lock().unwrap().last().unwrap().clone();
                CreateHealthCheckOutput::builder()
                    .health_check(health_check(&reference, &id))
                    .location(format!(
                        "https://route53.amazonaws.com/2013-04-01/healthcheck/{id}"
                    ))
                    .build()
                    .unwrap()
            });
        (list, create)
    }
}

fn health_check(reference: &str, id: &str) -> HealthCheck {
    HealthCheck::builder()
        .id(id)
        .caller_reference(reference)
        .health_check_config(
            HealthCheckConfig::builder()
                .r#type(HealthCheckType::Http)
                .build()
                .unwrap(),
        )
        .health_check_version(1)
        .build()
        .unwrap()
}

fn client(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_route53, RuleMode::MatchAny, rules, |c| c
        .retry_config(retry_policy()))
}

fn options(dry_run: bool, prune: bool) -> ApplyOptions {
    ApplyOptions {
        dry_run,
        prune,
        reset_weights: false,
        timeout: Duration::from_secs(600),
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        },
    }
}

const WEIGHTED_WITH_CHECKS: &str = r#"{"groups": [{"zone_id": "/hostedzone/Z1", "name": "api.example.com", "type": "A", "ttl": 60, "members": [
    {"set_identifier": "us-east", "weight": 100, "values": ["10.0.0.1"], "health_check": {"type": "http", "host": "52.94.236.1", "path": "/health"}},
    {"set_identifier": "us-west", "weight": 0, "values": ["10.0.0.2"], "health_check": {"type": "http", "host": "52.94.236.2", "path": "/health"}}]}]}"#;

#[tokio::test(start_paused = true)]
async fn a_simple_record_becomes_weighted_in_one_batch_and_a_second_apply_changes_nothing() {
    let zone = Zone::holding(vec![simple("10.0.0.1")]);
    let list = zone.list_rule();
    let (list_checks, create_check) = zone.health_check_rules();
    let z = zone.clone();
    let change = mock!(Client::change_resource_record_sets)
        .match_requests(move |r| {
            z.apply(r);
            true
        })
        .then_output(|| submitted("C1", ChangeStatus::Insync));
    let client = client(&[&list, &list_checks, &create_check, &change]);
    let routes = parse(WEIGHTED_WITH_CHECKS).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path().join("state.json"));

    let report = apply(
        &client,
        &routes,
        &file,
        &options(false, false),
        &CancellationToken::new(),
    )
    .await
    .unwrap();

    assert_eq!(change.num_calls(), 1, "one batch");
    assert_eq!(create_check.num_calls(), 2);
    let batches = zone.batches.lock().unwrap().clone();
    let batch = &batches[0];
    let actions: Vec<(&str, Option<&str>)> = batch
        .iter()
        .map(|c| {
            (
                c.action().as_str(),
                c.resource_record_set().unwrap().set_identifier(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            ("DELETE", None),
            ("CREATE", Some("us-east")),
            ("CREATE", Some("us-west"))
        ]
    );
    // DELETE repeats the simple record exactly as it was read.
    assert_eq!(batch[0].resource_record_set().unwrap(), &simple("10.0.0.1"));
    let created: Vec<(Option<i64>, Option<&str>, Option<i64>)> = batch[1..]
        .iter()
        .map(|c| {
            let s = c.resource_record_set().unwrap();
            (s.weight(), s.health_check_id(), s.ttl())
        })
        .collect();
    assert_eq!(
        created,
        vec![
            (Some(100), Some("hc-1"), Some(60)),
            (Some(0), Some("hc-2"), Some(60))
        ]
    );
    assert!(!report.no_change());
    assert!(report.text().contains("DELETE simple record (simple, 10.0.0.1 TTL 300, no health check) converted to weighted"), "{}", report.text());

    let doc = file.load().await.unwrap();
    let route = &doc.traffic["route53:Z1/api.example.com./A"];
    assert_eq!(route.router, "route53");
    assert_eq!(
        route.weights,
        Weights::from([("us-east".into(), 100), ("us-west".into(), 0)])
    );
    assert_eq!(
        route.extra["health_checks"],
        json!({"us-east": "hc-1", "us-west": "hc-2"})
    );
    let actions: Vec<&str> = doc.journal.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "health-check-created",
            "health-check-created",
            "routes-applied"
        ]
    );
    assert_eq!(doc.journal[2].changes.len(), 3);
    assert_eq!(doc.journal[2].changes[0].reference.as_deref(), Some("C1"));

    // The same spec again: no health check created, no batch submitted.
    let again = apply(
        &client,
        &routes,
        &file,
        &options(false, false),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(again.no_change(), "{}", again.text());
    assert!(again.text().contains("no change"), "{}", again.text());
    assert_eq!(change.num_calls(), 1);
    assert_eq!(create_check.num_calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn throttling_is_retried_and_a_pending_change_is_awaited_until_insync() {
    let zone = Zone::holding(vec![
        weighted("us-east", 50, "10.0.0.1"),
        weighted("us-west", 50, "10.0.0.2"),
    ]);
    let list = zone.list_rule();
    let (list_checks, create_check) = zone.health_check_rules();
    let z = zone.clone();
    let change = mock!(Client::change_resource_record_sets)
        .match_requests(move |r| {
            z.apply(r);
            true
        })
        .sequence()
        .http_status(400, Some(error_body("Throttling", "Rate exceeded")))
        .times(2)
        .http_status(
            400,
            Some(error_body(
                "PriorRequestNotComplete",
                "The request was rejected because Route 53 was still processing a prior request.",
            )),
        )
        .output(|| submitted("C7", ChangeStatus::Pending))
        .build();
    let get_change = mock!(Client::get_change)
        .sequence()
        .output(|| {
            GetChangeOutput::builder()
                .change_info(change_info("C7", ChangeStatus::Pending))
                .build()
        })
        .times(2)
        .output(|| {
            GetChangeOutput::builder()
                .change_info(change_info("C7", ChangeStatus::Insync))
                .build()
        })
        .build();
    let client = client(&[&list, &list_checks, &create_check, &change, &get_change]);
    let routes = parse(WEIGHTED_WITH_CHECKS).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path().join("state.json"));

    let report = apply(
        &client,
        &routes,
        &file,
        &options(false, false),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(change.num_calls(), 4, "3 refusals retried, then accepted");
    assert_eq!(get_change.num_calls(), 3, "PENDING twice, then INSYNC");
    assert_eq!(report.batches[0].change_id, "C7");
    let changes: Vec<String> = report.groups[0]
        .changes
        .iter()
        .map(|c| format!("{} {}", c.action, c.detail))
        .collect();
    assert_eq!(
        changes,
        [
            "UPSERT us-east: health check none→hc-1",
            "UPSERT us-west: health check none→hc-2"
        ]
    );
}

fn zone_weights(zone: &Zone) -> Vec<(String, i64)> {
    zone.sets
        .lock()
        .unwrap()
        .iter()
        .map(|s| (s.set_identifier().unwrap().to_owned(), s.weight().unwrap()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn existing_members_keep_their_weights_unless_reset_weights_is_asked() {
    let zone = Zone::holding(vec![
        weighted("us-east", 50, "10.0.0.1"),
        weighted("us-west", 50, "10.0.0.2"),
    ]);
    let list = zone.list_rule();
    let (list_checks, create_check) = zone.health_check_rules();
    let z = zone.clone();
    let change = mock!(Client::change_resource_record_sets)
        .match_requests(move |r| {
            z.apply(r);
            true
        })
        .then_output(|| submitted("C3", ChangeStatus::Insync));
    let client = client(&[&list, &list_checks, &create_check, &change]);
    let routes = parse(WEIGHTED_WITH_CHECKS).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path().join("state.json"));
    let cancel = CancellationToken::new();

    let first = apply(&client, &routes, &file, &options(false, false), &cancel)
        .await
        .unwrap();
    assert_eq!(change.num_calls(), 1, "the health checks are associated");
    assert_eq!(
        zone_weights(&zone),
        [("us-east".into(), 50), ("us-west".into(), 50)]
    );
    assert_eq!(first.groups[0].kept_weights.len(), 2);
    let route = &file.load().await.unwrap().traffic["route53:Z1/api.example.com./A"];
    assert_eq!(
        route.weights,
        Weights::from([("us-east".into(), 50), ("us-west".into(), 50)])
    );

    let again = apply(&client, &routes, &file, &options(false, false), &cancel)
        .await
        .unwrap();
    assert!(again.no_change());
    assert!(
        again
            .text()
            .contains("  kept us-east weight 50 (the spec says 100; shift-weight moves traffic"),
        "{}",
        again.text()
    );
    assert_eq!(change.num_calls(), 1);

    let mut reset = options(false, false);
    reset.reset_weights = true;
    let report = apply(&client, &routes, &file, &reset, &cancel)
        .await
        .unwrap();
    let changes: Vec<&str> = report.groups[0]
        .changes
        .iter()
        .map(|c| c.detail.as_str())
        .collect();
    assert_eq!(changes, ["us-east: weight 50→100", "us-west: weight 50→0"]);
    assert_eq!(change.num_calls(), 2);
    assert_eq!(
        zone_weights(&zone),
        [("us-east".into(), 100), ("us-west".into(), 0)]
    );
    let route = &file.load().await.unwrap().traffic["route53:Z1/api.example.com./A"];
    assert_eq!(
        route.weights,
        Weights::from([("us-east".into(), 100), ("us-west".into(), 0)])
    );
}

#[tokio::test(start_paused = true)]
async fn records_the_spec_does_not_name_are_deleted_only_with_prune_and_a_dry_run_changes_nothing()
{
    let zone = Zone::holding(vec![
        weighted("us-east", 100, "10.0.0.1"),
        weighted("us-west", 0, "10.0.0.2"),
        weighted("eu", 0, "10.0.0.3"),
    ]);
    let list = zone.list_rule();
    let (list_checks, create_check) = zone.health_check_rules();
    let z = zone.clone();
    let change = mock!(Client::change_resource_record_sets)
        .match_requests(move |r| {
            z.apply(r);
            true
        })
        .then_output(|| submitted("C2", ChangeStatus::Insync));
    let client = client(&[&list, &list_checks, &create_check, &change]);
    let routes = parse(WEIGHTED_WITH_CHECKS).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path().join("state.json"));
    let cancel = CancellationToken::new();

    let err = apply(&client, &routes, &file, &options(false, false), &cancel)
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), Code::Usage);
    assert!(
        err.to_string().contains(
            "eu (weight 0, 10.0.0.3 TTL 60, no health check): not in the spec; pass --prune"
        ),
        "{err}"
    );
    assert_eq!((change.num_calls(), create_check.num_calls()), (0, 0));

    let plan = apply(&client, &routes, &file, &options(true, true), &cancel)
        .await
        .unwrap();
    assert_eq!(
        (change.num_calls(), create_check.num_calls()),
        (0, 0),
        "a dry run changes nothing"
    );
    assert!(!file.path().exists(), "a dry run writes no state");
    let text = plan.text();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("would create health check for us-east of route53:Z1/api.example.com./A: http 52.94.236.1:80/health every 30s"), "{text}");
    assert!(
        lines.iter().any(|l| l.starts_with("  DELETE eu (weight 0")),
        "{text}"
    );
    assert!(
        text.contains("zone Z1: would submit one ChangeResourceRecordSets batch of 3 change(s)"),
        "{text}"
    );

    apply(&client, &routes, &file, &options(false, true), &cancel)
        .await
        .unwrap();
    assert_eq!(change.num_calls(), 1);
    let ids: Vec<String> = zone
        .sets
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| s.set_identifier().map(str::to_owned))
        .collect();
    assert_eq!(ids, ["us-east", "us-west"]);
}

#[tokio::test]
async fn a_route_with_an_unfinished_shift_is_left_alone_with_exit_5() {
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path().join("state.json"));
    let mut doc = crate::state::StateDocument::default();
    doc.traffic.insert(
        "route53:Z1/api.example.com./A".into(),
        serde_json::from_value(json!({
            "router": "route53", "resource": {}, "weights": {"us-east": 90, "us-west": 10},
            "before": {"us-east": 100, "us-west": 0},
            "shift": {"plan": [{"us-east": 90, "us-west": 10}], "steps_done": 1, "status": "interrupted",
                      "started_at": "2026-01-01T00:00:00Z"},
            "updated_at": "2026-01-01T00:00:00Z"})).unwrap(),
    );
    file.save(&mut doc).await.unwrap();
    let list = mock!(Client::list_resource_record_sets).then_output(|| {
        ListResourceRecordSetsOutput::builder()
            .is_truncated(false)
            .max_items(100)
            .build()
            .unwrap()
    });
    let client = client(&[&list]);
    let routes = parse(WEIGHTED_WITH_CHECKS).unwrap();
    let err = apply(
        &client,
        &routes,
        &file,
        &options(false, false),
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), Code::Conflict);
    assert!(
        err.to_string()
            .starts_with("route53:Z1/api.example.com./A has an unfinished shift (interrupted)"),
        "{err}"
    );
    assert_eq!(list.num_calls(), 0, "refused before any call");
}
