//! Offline tests of the Route53 router and the shift engine with the SDK
//! mocked: what moto does not emulate (PENDING before INSYNC, throttling,
//! PriorRequestNotComplete, a CREATE that loses a race, INSYNC time-outs).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_route53::operation::get_change::GetChangeOutput;
use aws_sdk_route53::types::{
    AliasTarget, ChangeAction, ChangeStatus, ResourceRecord, ResourceRecordSet, RrType,
};
use aws_sdk_route53::Client;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Route53Router;
use crate::aws::config::retry_policy;
use crate::aws::mocked::{change_info, listing, route53_error as error_body, submitted};
use crate::aws::route53::{self as api, Submitted};
use crate::outcome::{Code, ExitStatus};
use crate::state::{ShiftStatus, StateFile};
use crate::traffic::plan::Intent;
use crate::traffic::shift::{self, Request, ShiftError, ShiftOptions};
use crate::traffic::{LeaseRequest, Router, TrafficError};
use crate::wait::Backoff;

fn weighted(id: &str, weight: i64, ip: &str) -> ResourceRecordSet {
    ResourceRecordSet::builder()
        .name("app.example.com.")
        .r#type(RrType::A)
        .set_identifier(id)
        .weight(weight)
        .ttl(60)
        .resource_records(ResourceRecord::builder().value(ip).build().unwrap())
        .build()
        .unwrap()
}

fn lock_record(expires: i64) -> ResourceRecordSet {
    ResourceRecordSet::builder()
        .name("_switchyard-lock.app.example.com.")
        .r#type(RrType::Txt)
        .ttl(60)
        .resource_records(
            ResourceRecord::builder()
                .value(format!(
                    "\"switchyard-lease=1;token=other;expires={expires};holder=jenkins@ci-7\""
                ))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

/// The lock's TXT record as a tiny in-memory zone: change batches with
/// CREATE/DELETE of the lock update it, lock listings read it.
#[derive(Clone, Default)]
struct LockZone(Arc<Mutex<Vec<ResourceRecordSet>>>);

impl LockZone {
    fn holding(set: ResourceRecordSet) -> Self {
        let zone = Self::default();
        zone.0.lock().unwrap().push(set);
        zone
    }

    /// Applies a lease batch; true when the request was one.
    fn apply(
        &self,
        req: &aws_sdk_route53::operation::change_resource_record_sets::ChangeResourceRecordSetsInput,
    ) -> bool {
        let changes = req
            .change_batch()
            .map(|b| b.changes().to_vec())
            .unwrap_or_default();
        let is_lock = changes.iter().all(|c| {
            c.resource_record_set()
                .is_some_and(|s| s.name().starts_with("_switchyard-lock."))
        });
        if !is_lock || changes.is_empty() {
            return false;
        }
        let mut sets = self.0.lock().unwrap();
        for c in changes {
            let set = c.resource_record_set().unwrap().clone();
            match c.action() {
                ChangeAction::Delete => sets.retain(|s| *s != set),
                _ => sets.push(set),
            }
        }
        true
    }

    fn rules(&self) -> (Rule, Rule) {
        let (a, b) = (self.clone(), self.clone());
        let list = mock!(Client::list_resource_record_sets)
            .match_requests(is_lock_listing)
            .then_output(move || listing(a.0.lock().unwrap().clone()));
        let change = mock!(Client::change_resource_record_sets)
            .match_requests(move |r| b.apply(r))
            .then_output(|| submitted("CLOCK", ChangeStatus::Insync));
        (list, change)
    }
}

fn client(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_route53, RuleMode::MatchAny, rules, |c| c
        .retry_config(retry_policy()))
}

fn router(client: Client) -> Route53Router {
    Route53Router::new(client, "/hostedzone/Z1", "app.example.com", RrType::A).with_backoff(
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        },
    )
}

fn options(timeout: Duration) -> ShiftOptions {
    ShiftOptions {
        pause: Duration::ZERO,
        settle: Some(Duration::ZERO),
        gate: None,
        analysis: None,
        force: true,
        max_verdict_age: Duration::from_secs(1800),
        dry_run: false,
        timeout,
        lock_wait: Duration::ZERO,
        lock_message: None,
    }
}

fn is_lock_listing(
    req: &aws_sdk_route53::operation::list_resource_record_sets::ListResourceRecordSetsInput,
) -> bool {
    req.start_record_type() == Some(&RrType::Txt)
}

fn first_action(
    req: &aws_sdk_route53::operation::change_resource_record_sets::ChangeResourceRecordSetsInput,
) -> Option<ChangeAction> {
    req.change_batch()
        .and_then(|b| b.changes().first())
        .map(|c| c.action().clone())
}

#[tokio::test(start_paused = true)]
async fn insync_wait_polls_pending_with_backoff_until_insync() {
    let get_change = mock!(Client::get_change)
        .sequence()
        .output(|| {
            GetChangeOutput::builder()
                .change_info(change_info("C1", ChangeStatus::Pending))
                .build()
        })
        .times(3)
        .output(|| {
            GetChangeOutput::builder()
                .change_info(change_info("C1", ChangeStatus::Insync))
                .build()
        })
        .build();
    let client = client(&[&get_change]);
    let began = Instant::now();
    let change = Submitted {
        id: "C1".into(),
        in_sync: false,
    };
    api::wait_insync(
        &client,
        &change,
        began + Duration::from_secs(300),
        &CancellationToken::new(),
        crate::aws::route53::CHANGE_BACKOFF,
    )
    .await
    .unwrap();
    assert_eq!(get_change.num_calls(), 4);
    // Three backoff sleeps of about 2 s, 3 s and 4.5 s (±20%), not a fixed sleep.
    let waited = began.elapsed().as_secs_f64();
    assert!((7.0..=11.0).contains(&waited), "waited {waited}s");
}

#[tokio::test(start_paused = true)]
async fn a_change_already_insync_needs_no_get_change() {
    let get_change = mock!(Client::get_change).then_output(|| {
        GetChangeOutput::builder()
            .change_info(change_info("C1", ChangeStatus::Insync))
            .build()
    });
    let client = client(&[&get_change]);
    let change = Submitted {
        id: "C1".into(),
        in_sync: true,
    };
    let deadline = Instant::now() + Duration::from_secs(1);
    api::wait_insync(
        &client,
        &change,
        deadline,
        &CancellationToken::new(),
        crate::aws::route53::CHANGE_BACKOFF,
    )
    .await
    .unwrap();
    assert_eq!(get_change.num_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn throttling_and_prior_request_not_complete_are_retried() {
    let change = mock!(Client::change_resource_record_sets)
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
        .output(|| submitted("C9", ChangeStatus::Pending))
        .build();
    let client = client(&[&change]);
    let set = weighted("blue", 90, "10.0.0.1");
    let out = api::submit(
        &client,
        "Z1",
        vec![api::change(ChangeAction::Upsert, set)],
        "test",
    )
    .await
    .unwrap();
    assert_eq!(out.id, "C9");
    assert!(!out.in_sync);
    assert_eq!(change.num_calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn retries_are_bounded_and_end_as_a_provider_error() {
    let change = mock!(Client::change_resource_record_sets)
        .sequence()
        .http_status(400, Some(error_body("Throttling", "Rate exceeded")))
        .repeatedly()
        .build();
    let client = client(&[&change]);
    let set = weighted("blue", 90, "10.0.0.1");
    let err = api::submit(
        &client,
        "Z1",
        vec![api::change(ChangeAction::Upsert, set)],
        "test",
    )
    .await
    .unwrap_err();
    assert_eq!(err.code.as_deref(), Some("Throttling"));
    assert_eq!(
        change.num_calls(),
        crate::aws::config::DEFAULT_MAX_ATTEMPTS as usize
    );
    assert_eq!(TrafficError::from(err).exit_code(), Code::Provider);
}

#[tokio::test(start_paused = true)]
async fn a_change_keeps_alias_targets_and_health_checks_and_touches_only_weights() {
    let alias = |id: &str, weight: i64, hc: &str| {
        ResourceRecordSet::builder()
            .name("app.example.com.")
            .r#type(RrType::A)
            .set_identifier(id)
            .weight(weight)
            .health_check_id(hc)
            .alias_target(
                AliasTarget::builder()
                    .hosted_zone_id("Z35SXDOTRQ7X7K")
                    .dns_name(format!("{id}-lb.us-east-1.elb.amazonaws.com."))
                    .evaluate_target_health(true)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    };
    let list = mock!(Client::list_resource_record_sets).then_output(move || {
        listing(vec![
            alias("blue", 100, "hc-blue"),
            alias("green", 0, "hc-green"),
        ])
    });
    let sent: Arc<Mutex<Vec<ResourceRecordSet>>> = Arc::default();
    let seen = sent.clone();
    let change = mock!(Client::change_resource_record_sets)
        .match_requests(move |req| {
            let mut seen = seen.lock().unwrap();
            for c in req.change_batch().unwrap().changes() {
                assert_eq!(c.action(), &ChangeAction::Upsert);
                seen.push(c.resource_record_set().unwrap().clone());
            }
            true
        })
        .then_output(|| submitted("C1", ChangeStatus::Insync));
    let router = router(client(&[&list, &change]));
    let group = router.read().await.unwrap();
    // Alias records have no TTL of their own: clients catch up after the usual 60 s.
    assert_eq!(group.settle, Duration::from_secs(60));
    let weights = [("blue".to_owned(), 90), ("green".to_owned(), 10)].into();
    router.apply(&weights).await.unwrap();
    assert_eq!(change.num_calls(), 1, "one atomic batch");
    let sent = sent.lock().unwrap();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0], alias("blue", 90, "hc-blue"));
    assert_eq!(sent[1], alias("green", 10, "hc-green"));
}

#[tokio::test(start_paused = true)]
async fn non_weighted_records_are_refused_as_bad_input() {
    let latency = ResourceRecordSet::builder()
        .name("app.example.com.")
        .r#type(RrType::A)
        .set_identifier("use1")
        .region(aws_sdk_route53::types::ResourceRecordSetRegion::UsEast1)
        .ttl(60)
        .resource_records(ResourceRecord::builder().value("10.0.0.1").build().unwrap())
        .build()
        .unwrap();
    let list = mock!(Client::list_resource_record_sets)
        .then_output(move || listing(vec![latency.clone()]));
    let err = router(client(&[&list])).read().await.unwrap_err();
    assert_eq!(err.exit_code(), Code::Usage);
    assert!(err.to_string().contains("uses latency routing"), "{err}");
    let empty = mock!(Client::list_resource_record_sets).then_output(|| listing(vec![]));
    let err = router(client(&[&empty])).read().await.unwrap_err();
    assert!(matches!(err, TrafficError::NoSuchGroup(_)), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_lease_held_by_another_deployment_exits_5_before_any_change() {
    // Route53 lists `_switchyard-lock.<name>` right after the group: the one
    // page that holds the group names the holder too.
    let far = chrono::Utc::now().timestamp() + 3600;
    let group = mock!(Client::list_resource_record_sets)
        .match_requests(|r| !is_lock_listing(r))
        .then_output(move || {
            listing(vec![
                weighted("blue", 100, "10.0.0.1"),
                weighted("green", 0, "10.0.0.2"),
                lock_record(far),
            ])
        });
    let lock = mock!(Client::list_resource_record_sets)
        .match_requests(is_lock_listing)
        .then_output(move || listing(vec![lock_record(far)]));
    let change = mock!(Client::change_resource_record_sets)
        .then_output(|| submitted("C1", ChangeStatus::Insync));
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path().join("state.json"));
    let request = Request::Shift(Intent::To {
        member: "green".into(),
        steps: vec![50],
    });
    let err = shift::run(
        &router(client(&[&group, &lock, &change])),
        &file,
        request,
        &options(Duration::from_secs(60)),
        &mut crate::hooks::StepHooks::none("shift-weight"),
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), Code::Conflict);
    assert!(err.to_string().contains("locked by jenkins@ci-7"), "{err}");
    assert_eq!(change.num_calls(), 0, "nothing changed");
    assert_eq!(group.num_calls(), 1);
    assert_eq!(lock.num_calls(), 0, "the group's page showed the lease");
}

#[tokio::test(start_paused = true)]
async fn a_create_that_loses_the_race_is_a_conflict() {
    let far = chrono::Utc::now().timestamp() + 3600;
    let lock = mock!(Client::list_resource_record_sets)
        .match_requests(is_lock_listing)
        .sequence()
        .output(|| listing(vec![]))
        .output(move || listing(vec![lock_record(far)]))
        .build();
    let create = mock!(Client::change_resource_record_sets)
        .sequence()
        .http_status(
            400,
            Some(error_body(
                "InvalidChangeBatch",
                "[Tried to create resource record set [name='_switchyard-lock.app.example.com.', type='TXT'] but it already exists]",
            )),
        )
        .build();
    let router = router(client(&[&lock, &create]));
    let request = LeaseRequest {
        token: None,
        holder: "me".into(),
        message: None,
        expires: chrono::Utc::now() + chrono::Duration::minutes(10),
    };
    let err = router.acquire_lease(&request, None).await.unwrap_err();
    assert_eq!(err.exit_code(), Code::Conflict, "{err}");
    assert_eq!(create.num_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_create_whose_answer_was_lost_finds_its_own_lease_and_holds_it() {
    // The first CREATE reaches Route53 but its answer is lost (a 500 here);
    // the SDK sends it again and Route53 says the record already exists. It
    // is ours: the token in it is the one we created.
    let zone = LockZone::default();
    let (list, _) = zone.rules();
    let z = zone.clone();
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let create = mock!(Client::change_resource_record_sets)
        .match_requests(move |r| {
            if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                z.apply(r);
            }
            true
        })
        .sequence()
        .http_status(500, Some(error_body("InternalFailure", "lost answer")))
        .http_status(
            400,
            Some(error_body(
                "InvalidChangeBatch",
                "[Tried to create resource record set [name='_switchyard-lock.app.example.com.', type='TXT'] but it already exists]",
            )),
        )
        .build();
    let router = router(client(&[&list, &create]));
    let request = LeaseRequest {
        token: None,
        holder: "me".into(),
        message: None,
        expires: chrono::Utc::now() + chrono::Duration::minutes(10),
    };
    let lease = router.acquire_lease(&request, None).await.unwrap();
    assert_eq!(create.num_calls(), 2);
    assert_eq!(router.leases().await.unwrap(), vec![lease]);
}

#[tokio::test(start_paused = true)]
async fn an_expired_lease_is_taken_over_in_one_batch() {
    let zone = LockZone::holding(lock_record(1_000));
    let batches: Arc<Mutex<Vec<Vec<ChangeAction>>>> = Arc::default();
    let seen = batches.clone();
    let (list, _) = zone.rules();
    let z = zone.clone();
    let change = mock!(Client::change_resource_record_sets)
        .match_requests(move |r| {
            seen.lock().unwrap().push(
                r.change_batch()
                    .unwrap()
                    .changes()
                    .iter()
                    .map(|c| c.action().clone())
                    .collect(),
            );
            z.apply(r)
        })
        .then_output(|| submitted("C1", ChangeStatus::Pending));
    let router = router(client(&[&list, &change]));
    let request = LeaseRequest {
        token: None,
        holder: "me".into(),
        message: Some("release 7".into()),
        expires: chrono::Utc::now() + chrono::Duration::minutes(10),
    };
    let lease = router.acquire_lease(&request, None).await.unwrap();
    assert_eq!(lease.holder, "me");
    assert_eq!(
        *batches.lock().unwrap(),
        vec![vec![ChangeAction::Delete, ChangeAction::Create]]
    );
    assert_eq!(router.leases().await.unwrap(), vec![lease]);
}

#[tokio::test(start_paused = true)]
async fn an_insync_wait_that_times_out_exits_3_and_the_state_says_where_it_stopped() {
    let group = mock!(Client::list_resource_record_sets)
        .match_requests(|r| !is_lock_listing(r))
        .then_output(|| {
            listing(vec![
                weighted("blue", 100, "10.0.0.1"),
                weighted("green", 0, "10.0.0.2"),
            ])
        });
    let (lock, lease) = LockZone::default().rules();
    let upsert = mock!(Client::change_resource_record_sets)
        .match_requests(|r| first_action(r) == Some(ChangeAction::Upsert))
        .then_output(|| submitted("C2", ChangeStatus::Pending));
    let pending = mock!(Client::get_change).then_output(|| {
        GetChangeOutput::builder()
            .change_info(change_info("C2", ChangeStatus::Pending))
            .build()
    });
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path().join("state.json"));
    let request = Request::Shift(Intent::To {
        member: "green".into(),
        steps: vec![10, 50, 100],
    });
    let err = shift::run(
        &router(client(&[&group, &lock, &lease, &upsert, &pending])),
        &file,
        request,
        &options(Duration::from_secs(120)),
        &mut crate::hooks::StepHooks::none("shift-weight"),
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), Code::Provider, "{err}");
    assert!(
        matches!(
            err,
            ShiftError::Stopped {
                done: 0,
                total: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("not INSYNC"), "{err}");
    assert_eq!(upsert.num_calls(), 1, "no second step after a stalled one");
    assert!(
        pending.num_calls() > 3,
        "polled with backoff until the deadline"
    );
    assert_eq!(lease.num_calls(), 2, "lease taken and released");

    let doc = file.load().await.unwrap();
    let route = doc.traffic.values().next().unwrap();
    let shift = route.shift.as_ref().unwrap();
    assert_eq!(shift.status, ShiftStatus::Failed);
    assert_eq!(shift.steps_done, 0);
    assert_eq!(shift.pending_change.as_deref(), Some("C2"));
    assert!(shift.message.as_deref().unwrap().contains("not INSYNC"));
    assert_eq!(route.before.as_ref().unwrap()["blue"], 100);
    let actions: Vec<_> = doc.journal.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["shift-started", "weights-submitted", "shift-stopped"]
    );
    assert_eq!(doc.journal[1].changes[0].reference.as_deref(), Some("C2"));
    assert!(
        !route.extra.contains_key("lease"),
        "the released lease is not kept"
    );
}

/// A shift without a gate in the fewest calls: one page shows the group and
/// that no lease is held, one CREATE takes the lease, the weights go out with
/// the lease's DELETE in one batch, and one read checks them.
#[tokio::test(start_paused = true)]
async fn a_shift_without_a_gate_takes_four_calls_and_releases_with_its_last_change() {
    let group = mock!(Client::list_resource_record_sets)
        .sequence()
        .output(|| {
            listing(vec![
                weighted("blue", 100, "10.0.0.1"),
                weighted("green", 0, "10.0.0.2"),
            ])
        })
        .output(|| {
            listing(vec![
                weighted("blue", 50, "10.0.0.1"),
                weighted("green", 50, "10.0.0.2"),
            ])
        })
        .build();
    let batches = Arc::new(Mutex::new(Vec::new()));
    let seen = batches.clone();
    let change = mock!(Client::change_resource_record_sets)
        .match_requests(move |r| {
            let actions: Vec<String> = r
                .change_batch()
                .map(|b| {
                    b.changes()
                        .iter()
                        .map(|c| {
                            let set = c.resource_record_set().unwrap();
                            format!(
                                "{} {} {}",
                                c.action().as_str(),
                                set.set_identifier().unwrap_or(set.name()),
                                set.weight().unwrap_or(-1)
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            seen.lock().unwrap().push(actions);
            true
        })
        .then_output(|| submitted("C1", ChangeStatus::Insync));
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path().join("state.json"));
    let report = shift::run(
        &router(client(&[&group, &change])),
        &file,
        Request::Shift(Intent::To {
            member: "green".into(),
            steps: vec![50],
        }),
        &options(Duration::from_secs(60)),
        &mut crate::hooks::StepHooks::none("shift-weight"),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        crate::traffic::format_weights(&report.weights),
        "blue=50,green=50"
    );
    assert_eq!(
        group.num_calls(),
        2,
        "the group and its lease on one page, then the read-back"
    );
    let batches = batches.lock().unwrap().clone();
    assert_eq!(batches.len(), 2, "{batches:?}");
    assert_eq!(batches[0], ["CREATE _switchyard-lock.app.example.com. -1"]);
    assert_eq!(
        batches[1],
        [
            "UPSERT blue 50",
            "UPSERT green 50",
            "DELETE _switchyard-lock.app.example.com. -1"
        ]
    );
    let doc = file.read_now();
    let route = doc.traffic.values().next().unwrap();
    assert!(!route.extra.contains_key("lease"), "{:?}", route.extra);
}

/// The last batch refused because an earlier attempt of it went through
/// (its answer was lost and the SDK sent it again): the weights are set and
/// no lease is left, so the shift completed.
#[tokio::test(start_paused = true)]
async fn a_last_batch_refused_as_a_repeat_of_one_that_went_through_is_a_success() {
    let group = mock!(Client::list_resource_record_sets)
        .sequence()
        .output(|| {
            listing(vec![
                weighted("blue", 100, "10.0.0.1"),
                weighted("green", 0, "10.0.0.2"),
            ])
        })
        .output(|| {
            listing(vec![
                weighted("blue", 0, "10.0.0.1"),
                weighted("green", 100, "10.0.0.2"),
            ])
        })
        .times(2)
        .build();
    let create = mock!(Client::change_resource_record_sets)
        .match_requests(|r| first_action(r) == Some(ChangeAction::Create))
        .then_output(|| submitted("C1", ChangeStatus::Insync));
    let repeat = mock!(Client::change_resource_record_sets)
        .match_requests(|r| first_action(r) == Some(ChangeAction::Upsert))
        .sequence()
        .http_status(
            400,
            Some(error_body(
                "InvalidChangeBatch",
                "[Tried to delete resource record set [name='_switchyard-lock.app.example.com.', type='TXT'] but it was not found]",
            )),
        )
        .build();
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path().join("state.json"));
    let report = shift::run(
        &router(client(&[&group, &create, &repeat])),
        &file,
        Request::Shift(Intent::To {
            member: "green".into(),
            steps: vec![100],
        }),
        &options(Duration::from_secs(60)),
        &mut crate::hooks::StepHooks::none("shift-weight"),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        crate::traffic::format_weights(&report.weights),
        "blue=0,green=100"
    );
    assert_eq!(repeat.num_calls(), 1);
    assert_eq!(
        group.num_calls(),
        3,
        "the group, once after the refusal, then the read-back"
    );
}
