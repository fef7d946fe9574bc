//! Offline tests of the ALB router with the SDK mocked: what moto does not
//! show (throttling, a read-back that differs, an OIDC action whose secret is
//! never returned, two lease takers racing).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::operation::add_tags::AddTagsOutput;
use aws_sdk_elasticloadbalancingv2::operation::describe_listeners::DescribeListenersOutput;
use aws_sdk_elasticloadbalancingv2::operation::describe_tags::DescribeTagsOutput;
use aws_sdk_elasticloadbalancingv2::operation::describe_target_groups::DescribeTargetGroupsOutput;
use aws_sdk_elasticloadbalancingv2::operation::modify_listener::ModifyListenerOutput;
use aws_sdk_elasticloadbalancingv2::operation::remove_tags::RemoveTagsOutput;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, AuthenticateOidcActionConfig, ForwardActionConfig, Listener, Tag,
    TagDescription, TargetGroup, TargetGroupStickinessConfig, TargetGroupTuple,
};
use aws_sdk_elasticloadbalancingv2::Client;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};

use super::{AlbRouter, Target};
use crate::aws::config::retry_policy;
use crate::outcome::{Code, ExitStatus};
use crate::state::{StateFile, Weights};
use crate::traffic::plan::Intent;
use crate::traffic::shift::{self, Request, ShiftError, ShiftOptions};
use crate::traffic::{LeaseRequest, Router, TrafficError};

const LISTENER: &str = "arn:aws:elasticloadbalancing:us-east-1:1:listener/app/lb/1/2";
const BLUE: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/app-blue/1";
const GREEN: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/app-green/2";

fn error_body(code: &str, message: &str) -> String {
    format!(
        r#"<ErrorResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"#
    )
}

fn forward(blue: i32, green: i32) -> Action {
    Action::builder()
        .r#type(ActionTypeEnum::Forward)
        .order(2)
        .forward_config(
            ForwardActionConfig::builder()
                .target_groups(
                    TargetGroupTuple::builder()
                        .target_group_arn(BLUE)
                        .weight(blue)
                        .build(),
                )
                .target_groups(
                    TargetGroupTuple::builder()
                        .target_group_arn(GREEN)
                        .weight(green)
                        .build(),
                )
                .target_group_stickiness_config(
                    TargetGroupStickinessConfig::builder()
                        .enabled(true)
                        .duration_seconds(300)
                        .build(),
                )
                .build(),
        )
        .build()
}

fn oidc() -> Action {
    Action::builder()
        .r#type(ActionTypeEnum::AuthenticateOidc)
        .order(1)
        .authenticate_oidc_config(
            AuthenticateOidcActionConfig::builder()
                .issuer("https://idp.example.com")
                .client_id("switchyard")
                .build(),
        )
        .build()
}

fn listener(actions: Vec<Action>) -> Listener {
    Listener::builder()
        .listener_arn(LISTENER)
        .set_default_actions(Some(actions))
        .build()
}

/// A listener and its tags in memory: ModifyListener and the tag calls
/// change them, the describe calls read them.
#[derive(Clone)]
struct Alb {
    actions: Arc<Mutex<Vec<Action>>>,
    tags: Arc<Mutex<BTreeMap<String, String>>>,
}

impl Alb {
    fn new(actions: Vec<Action>) -> Self {
        Self {
            actions: Arc::new(Mutex::new(actions)),
            tags: Arc::default(),
        }
    }

    fn describe(&self) -> Rule {
        let a = self.actions.clone();
        mock!(Client::describe_listeners).then_output(move || {
            DescribeListenersOutput::builder()
                .listeners(listener(a.lock().unwrap().clone()))
                .build()
        })
    }

    fn modify(&self) -> Rule {
        let (a, b) = (self.actions.clone(), self.actions.clone());
        mock!(Client::modify_listener)
            .match_requests(move |r| {
                *a.lock().unwrap() = r.default_actions().to_vec();
                true
            })
            .then_output(move || {
                ModifyListenerOutput::builder()
                    .listeners(listener(b.lock().unwrap().clone()))
                    .build()
            })
    }

    fn tag_rules(&self) -> Vec<Rule> {
        let (t1, t2, t3) = (self.tags.clone(), self.tags.clone(), self.tags.clone());
        vec![
            mock!(Client::describe_tags).then_output(move || tags_output(&t1.lock().unwrap())),
            mock!(Client::add_tags)
                .match_requests(move |r| {
                    for t in r.tags() {
                        t2.lock().unwrap().insert(
                            t.key().unwrap_or_default().to_owned(),
                            t.value().unwrap_or_default().to_owned(),
                        );
                    }
                    true
                })
                .then_output(|| AddTagsOutput::builder().build()),
            mock!(Client::remove_tags)
                .match_requests(move |r| {
                    for k in r.tag_keys() {
                        t3.lock().unwrap().remove(k);
                    }
                    true
                })
                .then_output(|| RemoveTagsOutput::builder().build()),
        ]
    }

    fn weights(&self) -> Vec<(String, Option<i32>)> {
        let actions = self.actions.lock().unwrap();
        actions
            .iter()
            .find(|a| a.r#type() == Some(&ActionTypeEnum::Forward))
            .and_then(|a| a.forward_config())
            .map(|c| {
                c.target_groups()
                    .iter()
                    .map(|t| (t.target_group_arn().unwrap().to_owned(), t.weight()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn tags_output(tags: &BTreeMap<String, String>) -> DescribeTagsOutput {
    DescribeTagsOutput::builder()
        .tag_descriptions(
            TagDescription::builder()
                .resource_arn(LISTENER)
                .set_tags(Some(
                    tags.iter()
                        .map(|(k, v)| Tag::builder().key(k).value(v).build())
                        .collect(),
                ))
                .build(),
        )
        .build()
}

fn names() -> Rule {
    mock!(Client::describe_target_groups).then_output(|| {
        DescribeTargetGroupsOutput::builder()
            .target_groups(
                TargetGroup::builder()
                    .target_group_arn(BLUE)
                    .target_group_name("app-blue")
                    .build(),
            )
            .target_groups(
                TargetGroup::builder()
                    .target_group_arn(GREEN)
                    .target_group_name("app-green")
                    .build(),
            )
            .build()
    })
}

fn client(rules: &[&Rule]) -> Client {
    mock_client!(
        aws_sdk_elasticloadbalancingv2,
        RuleMode::MatchAny,
        rules,
        |c| c.retry_config(retry_policy())
    )
}

fn named() -> BTreeMap<String, String> {
    BTreeMap::from([("blue".into(), BLUE.into()), ("green".into(), GREEN.into())])
}

fn w(blue: u32, green: u32) -> Weights {
    Weights::from([("blue".into(), blue), ("green".into(), green)])
}

fn options() -> ShiftOptions {
    ShiftOptions {
        pause: Duration::ZERO,
        settle: None,
        gate: None,
        analysis: None,
        force: true,
        max_verdict_age: Duration::from_secs(1800),
        dry_run: false,
        timeout: Duration::from_secs(60),
        lock_wait: Duration::ZERO,
        lock_message: None,
    }
}

fn request() -> LeaseRequest {
    LeaseRequest {
        token: None,
        holder: "me@ci".into(),
        message: None,
        expires: chrono::Utc::now() + chrono::Duration::minutes(10),
    }
}

#[tokio::test(start_paused = true)]
async fn a_shift_changes_only_the_weights_and_keeps_the_other_actions() {
    let alb = Alb::new(vec![oidc(), forward(1, 0)]);
    let (describe, modify, names) = (alb.describe(), alb.modify(), names());
    let tags = alb.tag_rules();
    let mut rules = vec![&describe, &modify, &names];
    rules.extend(tags.iter());
    // Members are the target group names when none are named.
    let router = AlbRouter::new(
        client(&rules),
        Target::Listener(LISTENER.into()),
        BTreeMap::new(),
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path().join("state.json"));
    let report = shift::run(
        &router,
        &file,
        Request::Shift(Intent::To {
            member: "app-green".into(),
            steps: vec![10, 100],
        }),
        &options(),
        &mut crate::hooks::StepHooks::none("shift-weight"),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(report.steps.len(), 2);
    assert_eq!(
        alb.weights(),
        vec![(BLUE.to_owned(), Some(0)), (GREEN.to_owned(), Some(100))]
    );
    let actions = alb.actions.lock().unwrap().clone();
    assert_eq!(actions.len(), 2);
    let oidc = actions[0].authenticate_oidc_config().unwrap();
    assert_eq!(oidc.use_existing_client_secret(), Some(true));
    assert_eq!(oidc.client_id(), Some("switchyard"));
    let sticky = actions[1]
        .forward_config()
        .unwrap()
        .target_group_stickiness_config()
        .unwrap();
    assert_eq!(
        (sticky.enabled(), sticky.duration_seconds()),
        (Some(true), Some(300))
    );
    assert_eq!(actions[1].order(), Some(2));
    assert!(
        alb.tags.lock().unwrap().is_empty(),
        "the lease tag is removed"
    );
}

#[tokio::test(start_paused = true)]
async fn throttling_is_retried() {
    let alb = Alb::new(vec![forward(100, 0)]);
    let describe = alb.describe();
    let modify = mock!(Client::modify_listener)
        .sequence()
        .http_status(400, Some(error_body("Throttling", "Rate exceeded")))
        .times(2)
        .output(|| {
            ModifyListenerOutput::builder()
                .listeners(listener(vec![forward(90, 10)]))
                .build()
        })
        .build();
    let router = AlbRouter::new(
        client(&[&describe, &modify]),
        Target::Listener(LISTENER.into()),
        named(),
        Some(Duration::from_secs(3600)),
    );
    assert_eq!(router.read().await.unwrap().weights, w(100, 0));
    assert_eq!(
        router.describe_change(&w(100, 0), &w(90, 10)),
        format!("one ModifyListener of {LISTENER}: blue weight 100→90, green weight 0→10; stickiness 3600 s")
    );
    router.apply(&w(90, 10)).await.unwrap();
    assert_eq!(modify.num_calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_read_back_that_differs_stops_the_shift_with_exit_3() {
    // ModifyListener answers with the old weights: apply itself refuses.
    let alb = Alb::new(vec![forward(100, 0)]);
    let describe = alb.describe();
    let stale = mock!(Client::modify_listener).then_output(|| {
        ModifyListenerOutput::builder()
            .listeners(listener(vec![forward(100, 0)]))
            .build()
    });
    let router = AlbRouter::new(
        client(&[&describe, &stale]),
        Target::Listener(LISTENER.into()),
        named(),
        None,
    );
    router.read().await.unwrap();
    let err = router.apply(&w(90, 10)).await.unwrap_err();
    assert!(matches!(err, TrafficError::ReadBack { .. }), "{err}");
    assert_eq!(err.exit_code(), Code::Provider);

    // ModifyListener agrees but DescribeListeners afterwards does not: the
    // engine's read-back stops the shift.
    let alb = Alb::new(vec![forward(100, 0)]);
    let describe = mock!(Client::describe_listeners).then_output(|| {
        DescribeListenersOutput::builder()
            .listeners(listener(vec![forward(100, 0)]))
            .build()
    });
    let modify = alb.modify();
    let tags = alb.tag_rules();
    let mut rules = vec![&describe, &modify];
    rules.extend(tags.iter());
    let router = AlbRouter::new(
        client(&rules),
        Target::Listener(LISTENER.into()),
        named(),
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let err = shift::run(
        &router,
        &StateFile::new(dir.path().join("state.json")),
        Request::Shift(Intent::To {
            member: "green".into(),
            steps: vec![10],
        }),
        &options(),
        &mut crate::hooks::StepHooks::none("shift-weight"),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ShiftError::Stopped { .. }), "{err}");
    assert!(err.to_string().contains("read back of alb:"), "{err}");
    assert_eq!(err.exit_code(), Code::Provider);
}

fn lease_tag(token: &str, expires: i64) -> (String, String) {
    (
        format!("switchyard-lease/{token}"),
        format!("switchyard-lease=1 token={token} since=1 expires={expires} holder=other@ci"),
    )
}

#[tokio::test(start_paused = true)]
async fn a_live_lease_tag_blocks_and_an_expired_one_is_replaced() {
    let alb = Alb::new(vec![forward(100, 0)]);
    let live = chrono::Utc::now().timestamp() + 600;
    alb.tags
        .lock()
        .unwrap()
        .extend([lease_tag("0000000000001-x", live)]);
    let tags = alb.tag_rules();
    let rules: Vec<&Rule> = tags.iter().collect();
    let router = AlbRouter::new(
        client(&rules),
        Target::Listener(LISTENER.into()),
        named(),
        None,
    );
    let err = router.acquire_lease(&request(), None).await.unwrap_err();
    assert_eq!(err.exit_code(), Code::Conflict);
    assert!(err.to_string().contains("other@ci"), "{err}");
    assert_eq!(tags[1].num_calls(), 0, "no AddTags while it is held");

    *alb.tags.lock().unwrap() = [lease_tag("0000000000001-x", 10)].into();
    let lease = router.acquire_lease(&request(), None).await.unwrap();
    let held = router.leases().await.unwrap();
    assert_eq!(held, vec![lease.clone()], "the expired tag is gone");
    router.release_lease(&lease).await.unwrap();
    assert!(alb.tags.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn of_two_racing_takers_the_earlier_token_holds_and_the_later_withdraws() {
    // Nobody holds it at the first read; by the confirming read another
    // taker's earlier tag has appeared beside ours.
    let alb = Alb::new(vec![forward(100, 0)]);
    let tags = alb.tag_rules();
    let t = alb.tags.clone();
    let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let live = chrono::Utc::now().timestamp() + 600;
    let describe_tags = mock!(Client::describe_tags).then_output(move || {
        let mut now = t.lock().unwrap().clone();
        if reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
            now.extend([lease_tag("0000000000001-x", live)]);
        }
        tags_output(&now)
    });
    let router = AlbRouter::new(
        client(&[&describe_tags, &tags[1], &tags[2]]),
        Target::Listener(LISTENER.into()),
        named(),
        None,
    );
    let err = router.acquire_lease(&request(), None).await.unwrap_err();
    assert_eq!(err.exit_code(), Code::Conflict);
    assert!(err.to_string().contains("other@ci"), "{err}");
    assert!(
        alb.tags.lock().unwrap().is_empty(),
        "the later taker removed its own tag"
    );
}
