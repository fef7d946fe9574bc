//! Offline tests of joining, leaving and listing with the SDK mocked: what
//! moto does not emulate (targets that stay `initial` or `unhealthy`,
//! draining that takes time, CompleteLifecycleAction) and the error paths.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_autoscaling::operation::complete_lifecycle_action::CompleteLifecycleActionOutput;
use aws_sdk_ec2::operation::create_tags::CreateTagsOutput;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::types::{Instance, InstanceState, InstanceStateName, Placement, Reservation, Tag};
use aws_sdk_elasticloadbalancingv2::operation::deregister_targets::DeregisterTargetsOutput;
use aws_sdk_elasticloadbalancingv2::operation::describe_target_group_attributes::DescribeTargetGroupAttributesOutput;
use aws_sdk_elasticloadbalancingv2::operation::describe_target_groups::DescribeTargetGroupsOutput;
use aws_sdk_elasticloadbalancingv2::operation::describe_target_health::DescribeTargetHealthOutput;
use aws_sdk_elasticloadbalancingv2::operation::register_targets::RegisterTargetsOutput;
use aws_sdk_elasticloadbalancingv2::types::{
    TargetGroup, TargetGroupAttribute, TargetHealthReasonEnum, TargetHealthStateEnum,
    TargetTypeEnum,
};
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::aws::config::retry_policy;
use crate::host::fleet::{self, FleetQuery};
use crate::host::registration::{
    self, parse_target_groups, JoinRequest, LeaveRequest, LifecycleHook, RegistrationOptions,
};
use crate::host::{HostClients, HostError, Identity, Labels};
use crate::outcome::{Code, ExitStatus};
use crate::state::document::Host;
use crate::state::StateFile;
use crate::wait::Backoff;

const ARN: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/go-auth-blue/50dc6c495c0c9188";
const INSTANCE: &str = "i-0123456789abcdef0";

fn ec2_host() -> Identity {
    Identity {
        host_id: INSTANCE.into(),
        provider: "aws".into(),
        region: Some("us-east-1".into()),
        availability_zone: Some("us-east-1a".into()),
        address: "10.0.1.12".parse().unwrap(),
        public_address: None,
    }
}

fn clients(ec2: &[&Rule], elbv2: &[&Rule], autoscaling: &[&Rule]) -> HostClients {
    HostClients {
        ec2: mock_client!(aws_sdk_ec2, RuleMode::MatchAny, ec2, |c| c
            .retry_config(retry_policy())),
        elbv2: mock_client!(
            aws_sdk_elasticloadbalancingv2,
            RuleMode::MatchAny,
            elbv2,
            |c| c.retry_config(retry_policy())
        ),
        autoscaling: mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, autoscaling, |c| c
            .retry_config(retry_policy())),
    }
}

fn group_rule(target_type: TargetTypeEnum) -> Rule {
    mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_groups).then_output(move || {
        DescribeTargetGroupsOutput::builder()
            .target_groups(
                TargetGroup::builder()
                    .target_group_arn(ARN)
                    .target_group_name("go-auth-blue")
                    .target_type(target_type.clone())
                    .port(80)
                    .build(),
            )
            .build()
    })
}

fn delay_rule(seconds: u64) -> Rule {
    mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_group_attributes).then_output(
        move || {
            DescribeTargetGroupAttributesOutput::builder()
                .attributes(
                    TargetGroupAttribute::builder()
                        .key("stickiness.enabled")
                        .value("false")
                        .build(),
                )
                .attributes(
                    TargetGroupAttribute::builder()
                        .key("deregistration_delay.timeout_seconds")
                        .value(seconds.to_string())
                        .build(),
                )
                .build()
        },
    )
}

fn health(
    state: TargetHealthStateEnum,
    reason: Option<TargetHealthReasonEnum>,
) -> DescribeTargetHealthOutput {
    crate::aws::mocked::target_health(&[INSTANCE], 9000, state, reason)
}

fn healthy() -> DescribeTargetHealthOutput {
    health(TargetHealthStateEnum::Healthy, None)
}

fn initial() -> DescribeTargetHealthOutput {
    health(
        TargetHealthStateEnum::Initial,
        Some(TargetHealthReasonEnum::InitialHealthChecking),
    )
}

fn unhealthy() -> DescribeTargetHealthOutput {
    health(
        TargetHealthStateEnum::Unhealthy,
        Some(TargetHealthReasonEnum::FailedHealthChecks),
    )
}

fn draining() -> DescribeTargetHealthOutput {
    health(
        TargetHealthStateEnum::Draining,
        Some(TargetHealthReasonEnum::DeregistrationInProgress),
    )
}

fn not_registered() -> DescribeTargetHealthOutput {
    health(
        TargetHealthStateEnum::Unused,
        Some(TargetHealthReasonEnum::NotRegistered),
    )
}

fn tag_rule() -> Rule {
    mock!(aws_sdk_ec2::Client::create_tags).then_output(|| CreateTagsOutput::builder().build())
}

fn register_rule() -> Rule {
    mock!(aws_sdk_elasticloadbalancingv2::Client::register_targets)
        .match_requests(|req| {
            let t = &req.targets()[0];
            req.target_group_arn() == Some(ARN)
                && t.id() == Some(INSTANCE)
                && t.port() == Some(9000)
        })
        .then_output(|| RegisterTargetsOutput::builder().build())
}

fn deregister_rule() -> Rule {
    mock!(aws_sdk_elasticloadbalancingv2::Client::deregister_targets)
        .match_requests(|req| {
            req.target_group_arn() == Some(ARN) && req.targets()[0].id() == Some(INSTANCE)
        })
        .then_output(|| DeregisterTargetsOutput::builder().build())
}

fn join_request(wait: Option<Duration>) -> JoinRequest {
    JoinRequest {
        service: "go-auth".into(),
        labels: Labels::parse(&["provider=aws".into(), "region=us-east-1".into()]).unwrap(),
        target_groups: parse_target_groups(&[ARN.into()]).unwrap(),
        port: Some(9000),
        wait,
    }
}

fn leave_request(lifecycle: Option<LifecycleHook>) -> LeaveRequest {
    LeaveRequest {
        target_groups: parse_target_groups(&[ARN.into()]).unwrap(),
        port: Some(9000),
        lifecycle,
    }
}

fn options(timeout: Duration) -> RegistrationOptions {
    RegistrationOptions {
        dry_run: false,
        timeout,
        backoff: Backoff {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(15),
        },
    }
}

fn read(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn journal(doc: &Value) -> Vec<String> {
    doc["journal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn join_tags_registers_and_waits_through_initial_until_healthy() {
    let groups = group_rule(TargetTypeEnum::Instance);
    let tags = mock!(aws_sdk_ec2::Client::create_tags)
        .match_requests(|req| {
            let keys: Vec<&str> = req.tags().iter().filter_map(Tag::key).collect();
            req.resources() == [INSTANCE]
                && keys
                    == [
                        "switchyard:label:provider",
                        "switchyard:label:region",
                        "switchyard:service",
                    ]
        })
        .then_output(|| CreateTagsOutput::builder().build());
    let register = register_rule();
    let health = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .sequence()
        .output(initial)
        .times(3)
        .output(healthy)
        .build();
    let clients = clients(&[&tags], &[&groups, &register, &health], &[]);
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path().join("state.json"));
    let began = Instant::now();
    let report = registration::join(
        &clients,
        &ec2_host(),
        &join_request(Some(Duration::from_secs(300))),
        &options(Duration::from_secs(1800)),
        &state,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!((tags.num_calls(), register.num_calls()), (1, 1));
    assert_eq!(health.num_calls(), 4);
    // Three backoff sleeps of about 2 s, 3 s and 4.5 s (±20%).
    let waited = began.elapsed().as_secs_f64();
    assert!((7.0..=11.0).contains(&waited), "waited {waited}s");
    assert_eq!(report.healthy, Some(true));
    assert_eq!(report.targets[0].health.as_ref().unwrap().state, "healthy");

    let doc = read(state.path());
    let host = &doc["hosts"][INSTANCE];
    assert_eq!(host["provider"], "aws");
    assert_eq!(host["region"], "us-east-1");
    assert_eq!(host["address"], "10.0.1.12");
    assert_eq!(host["labels"]["service"], "go-auth");
    assert_eq!(host["labels"]["region"], "us-east-1");
    assert_eq!(journal(&doc), ["join:ok", "healthy:ok"]);
    let changes = &doc["journal"][0]["changes"];
    assert_eq!(changes[0]["resource"], format!("ec2:{INSTANCE}/tags"));
    assert_eq!(
        changes[1]["resource"],
        format!("elbv2:{ARN}/{INSTANCE}:9000")
    );
}

#[tokio::test(start_paused = true)]
async fn a_target_never_healthy_ends_at_the_deadline_with_exit_1_and_stays_registered() {
    let groups = group_rule(TargetTypeEnum::Instance);
    let tags = tag_rule();
    let register = register_rule();
    let health = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .sequence()
        .output(initial)
        .times(2)
        .output(unhealthy)
        .repeatedly()
        .build();
    let clients = clients(&[&tags], &[&groups, &register, &health], &[]);
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path().join("state.json"));
    let began = Instant::now();
    let err = registration::join(
        &clients,
        &ec2_host(),
        &join_request(Some(Duration::from_secs(60))),
        &options(Duration::from_secs(1800)),
        &state,
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_secs(60) && waited < Duration::from_secs(61),
        "gave up after {waited:?}"
    );
    assert!(matches!(err, HostError::NotHealthy { .. }), "{err:?}");
    assert_eq!(err.exit_code(), Code::CheckFailed);
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("{INSTANCE} is registered but not healthy after 1m00s: go-auth-blue is unhealthy (Target.FailedHealthChecks: as the load balancer sees it)")),
        "{message}"
    );
    assert!(message.contains("run `register-host leave`"), "{message}");
    // Polled with growing delays, not every second: about 9 polls in 60 s.
    assert!(
        (6..=12).contains(&health.num_calls()),
        "{} polls",
        health.num_calls()
    );
    let doc = read(state.path());
    assert!(
        doc["hosts"][INSTANCE].is_object(),
        "it stays registered and recorded"
    );
    assert_eq!(journal(&doc), ["join:ok", "healthy:failed"]);
}

#[tokio::test(start_paused = true)]
async fn the_step_deadline_bounds_the_health_wait_and_a_signal_interrupts_it() {
    let groups = group_rule(TargetTypeEnum::Instance);
    let tags = tag_rule();
    let register = register_rule();
    let health =
        mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health).then_output(initial);
    let clients = clients(&[&tags], &[&groups, &register, &health], &[]);
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path().join("state.json"));
    let began = Instant::now();
    let err = registration::join(
        &clients,
        &ec2_host(),
        &join_request(Some(Duration::from_secs(300))),
        &options(Duration::from_secs(20)),
        &state,
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(began.elapsed() < Duration::from_secs(21));
    assert!(
        err.to_string()
            .contains("is initial (Elb.InitialHealthChecking"),
        "{err}"
    );

    let cancel = CancellationToken::new();
    cancel.cancel();
    let err = registration::join(
        &clients,
        &ec2_host(),
        &join_request(Some(Duration::from_secs(300))),
        &options(Duration::from_secs(1800)),
        &state,
        &cancel,
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), Code::Interrupted);
    let doc = read(state.path());
    assert_eq!(
        journal(&doc),
        [
            "join:ok",
            "healthy:failed",
            "join:ok",
            "healthy:interrupted"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn leave_deregisters_and_waits_while_the_target_drains() {
    let groups = group_rule(TargetTypeEnum::Instance);
    let delay = delay_rule(300);
    let deregister = deregister_rule();
    // Before: healthy. After the deregistration: draining four times, then gone.
    let health = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .sequence()
        .output(healthy)
        .output(draining)
        .times(4)
        .output(not_registered)
        .build();
    let clients = clients(&[], &[&groups, &delay, &deregister, &health], &[]);
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path().join("state.json"));
    std::fs::write(
        state.path(),
        format!(
            r#"{{"schema":"switchyard/state/v1","hosts":{{"{INSTANCE}":{{"provider":"aws","labels":{{"service":"go-auth"}}}},"i-other":{{"provider":"aws"}}}}}}"#
        ),
    )
    .unwrap();
    let began = Instant::now();
    let report = registration::leave(
        &clients,
        &ec2_host(),
        &leave_request(None),
        &options(Duration::from_secs(1800)),
        &state,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(deregister.num_calls(), 1);
    assert_eq!(health.num_calls(), 6);
    // Four backoff sleeps: about 2 + 3 + 4.5 + 6.75 s (±20%) of draining.
    let waited = began.elapsed().as_secs_f64();
    assert!((13.0..=20.0).contains(&waited), "waited {waited}s");
    let target = &report.targets[0];
    assert!(target.deregistered);
    assert_eq!(target.deregistration_delay_s, 300);
    assert_eq!(target.target.health.as_ref().unwrap().state, "healthy");
    assert_eq!(target.after.as_ref().unwrap().state, "unused");
    assert!(report.drained_ms.is_some() && report.removed_from_state);

    let doc = read(state.path());
    assert!(doc["hosts"].get(INSTANCE).is_none());
    assert!(doc["hosts"]["i-other"].is_object(), "other hosts are kept");
    assert_eq!(journal(&doc), ["leave:ok", "drained:ok"]);
    let changes = &doc["journal"][0]["changes"];
    assert_eq!(changes[0]["before"], "healthy");
    assert_eq!(changes[0]["after"], "deregistered");
    assert_eq!(changes[1]["resource"], format!("state:hosts/{INSTANCE}"));
    assert!(changes[1]["after"].is_null());
}

#[tokio::test(start_paused = true)]
async fn draining_past_the_deregistration_delay_is_exit_3_and_the_hook_is_left_alone() {
    let groups = group_rule(TargetTypeEnum::Instance);
    let delay = delay_rule(30);
    let deregister = deregister_rule();
    let health = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .sequence()
        .output(healthy)
        .output(draining)
        .repeatedly()
        .build();
    let complete = mock!(aws_sdk_autoscaling::Client::complete_lifecycle_action)
        .then_output(|| CompleteLifecycleActionOutput::builder().build());
    let clients = clients(&[], &[&groups, &delay, &deregister, &health], &[&complete]);
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path().join("state.json"));
    let began = Instant::now();
    let hook = LifecycleHook {
        hook: "drain".into(),
        group: "go-auth-green".into(),
    };
    let err = registration::leave(
        &clients,
        &ec2_host(),
        &leave_request(Some(hook)),
        &options(Duration::from_secs(1800)),
        &state,
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    // The delay (30 s) and the grace (15 s) bound the wait, not the step's 30 minutes.
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_secs(45) && waited < Duration::from_secs(46),
        "gave up after {waited:?}"
    );
    assert!(matches!(err, HostError::StillDraining { .. }), "{err:?}");
    assert_eq!(err.exit_code(), Code::Provider);
    assert!(
        err.to_string()
            .contains("go-auth-blue is draining (Target.DeregistrationInProgress")
            && err.to_string().contains("(deregistration delay up to 30s)"),
        "{err}"
    );
    assert_eq!(
        complete.num_calls(),
        0,
        "an undrained host leaves the hook to its heartbeat time-out"
    );
    assert_eq!(journal(&read(state.path())), ["leave:ok", "drained:failed"]);
}

#[tokio::test(start_paused = true)]
async fn leave_completes_the_lifecycle_action_after_the_drain() {
    let order: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let groups = group_rule(TargetTypeEnum::Instance);
    let delay = delay_rule(300);
    let seen = order.clone();
    let deregister = mock!(aws_sdk_elasticloadbalancingv2::Client::deregister_targets)
        .match_requests(move |_| {
            seen.lock().unwrap().push("deregister");
            true
        })
        .then_output(|| DeregisterTargetsOutput::builder().build());
    let seen = order.clone();
    let health = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .match_requests(move |_| {
            seen.lock().unwrap().push("health");
            true
        })
        .sequence()
        .output(healthy)
        .output(draining)
        .output(not_registered)
        .build();
    let seen = order.clone();
    let complete = mock!(aws_sdk_autoscaling::Client::complete_lifecycle_action)
        .match_requests(move |req| {
            seen.lock().unwrap().push("complete");
            req.lifecycle_hook_name() == Some("drain")
                && req.auto_scaling_group_name() == Some("go-auth-green")
                && req.instance_id() == Some(INSTANCE)
                && req.lifecycle_action_result() == Some("CONTINUE")
        })
        .then_output(|| CompleteLifecycleActionOutput::builder().build());
    let clients = clients(&[], &[&groups, &delay, &deregister, &health], &[&complete]);
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path().join("state.json"));
    let hook = LifecycleHook {
        hook: "drain".into(),
        group: "go-auth-green".into(),
    };
    let report = registration::leave(
        &clients,
        &ec2_host(),
        &leave_request(Some(hook)),
        &options(Duration::from_secs(1800)),
        &state,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(complete.num_calls(), 1);
    assert_eq!(
        *order.lock().unwrap(),
        ["health", "deregister", "health", "health", "complete"]
    );
    assert_eq!(report.lifecycle.as_ref().unwrap()["result"], "CONTINUE");
    let doc = read(state.path());
    assert_eq!(
        journal(&doc),
        ["leave:ok", "drained:ok", "lifecycle-action:ok"]
    );
    assert_eq!(
        doc["journal"][2]["changes"][0]["resource"],
        "autoscaling:go-auth-green/drain"
    );
}

#[tokio::test(start_paused = true)]
async fn a_target_that_is_not_registered_is_not_deregistered() {
    let groups = group_rule(TargetTypeEnum::Instance);
    let delay = delay_rule(300);
    let deregister = deregister_rule();
    let health = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .then_output(not_registered);
    let clients = clients(&[], &[&groups, &delay, &deregister, &health], &[]);
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path().join("state.json"));
    let report = registration::leave(
        &clients,
        &ec2_host(),
        &leave_request(None),
        &options(Duration::from_secs(1800)),
        &state,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!((deregister.num_calls(), health.num_calls()), (0, 1));
    assert!(!report.targets[0].deregistered);
    assert!(report.drained_ms.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_host_off_aws_cannot_join_an_instance_group_and_nothing_changes() {
    let groups = group_rule(TargetTypeEnum::Instance);
    let register = register_rule();
    let clients = clients(&[], &[&groups, &register], &[]);
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path().join("state.json"));
    let host = Identity::given("dc-fra1", "web-7", "10.20.0.7").unwrap();
    let err = registration::join(
        &clients,
        &host,
        &join_request(None),
        &options(Duration::from_secs(60)),
        &state,
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), Code::Usage);
    assert_eq!(
        err.to_string(),
        "target group go-auth-blue has target type instance: a host off AWS (--provider dc-fra1) \
         has no instance id; register it in a target group of type ip"
    );
    assert_eq!(register.num_calls(), 0);
    assert!(!state.path().exists());
}

#[tokio::test(start_paused = true)]
async fn a_host_off_aws_joins_an_ip_group_by_address_in_zone_all_without_tags() {
    let groups = group_rule(TargetTypeEnum::Ip);
    let register = mock!(aws_sdk_elasticloadbalancingv2::Client::register_targets)
        .match_requests(|req| {
            let t = &req.targets()[0];
            t.id() == Some("10.20.0.7")
                && t.port() == Some(9000)
                && t.availability_zone() == Some("all")
        })
        .then_output(|| RegisterTargetsOutput::builder().build());
    let clients = clients(&[], &[&groups, &register], &[]);
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path().join("state.json"));
    let host = Identity::given("dc-fra1", "web-7", "10.20.0.7").unwrap();
    let report = registration::join(
        &clients,
        &host,
        &join_request(None),
        &options(Duration::from_secs(60)),
        &state,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(register.num_calls(), 1);
    assert!(report.tags.is_empty());
    let doc = read(state.path());
    assert_eq!(doc["hosts"]["web-7"]["provider"], "dc-fra1");
    assert_eq!(
        doc["hosts"]["web-7"]["region"], "us-east-1",
        "from the region label"
    );
}

#[tokio::test(start_paused = true)]
async fn a_missing_target_group_is_bad_input_before_any_change() {
    let groups = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_groups)
        .sequence()
        .http_status(
            400,
            Some(
                r#"<ErrorResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"><Error><Type>Sender</Type><Code>TargetGroupNotFound</Code><Message>One or more target groups not found</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"#
                    .to_owned(),
            ),
        )
        .build();
    let tags = tag_rule();
    let clients = clients(&[&tags], &[&groups], &[]);
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path().join("state.json"));
    let err = registration::join(
        &clients,
        &ec2_host(),
        &join_request(None),
        &options(Duration::from_secs(60)),
        &state,
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), Code::Usage);
    assert_eq!(
        err.to_string(),
        format!("no target group {ARN} in us-east-1; check the ARN and the region")
    );
    assert_eq!(tags.num_calls(), 0);
    assert!(!state.path().exists());
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_reads_and_plans_but_changes_nothing() {
    let groups = group_rule(TargetTypeEnum::Instance);
    let tags = tag_rule();
    let register = register_rule();
    let clients = clients(&[&tags], &[&groups, &register], &[]);
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path().join("state.json"));
    let mut opts = options(Duration::from_secs(60));
    opts.dry_run = true;
    let report = registration::join(
        &clients,
        &ec2_host(),
        &join_request(Some(Duration::from_secs(300))),
        &opts,
        &state,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!((tags.num_calls(), register.num_calls()), (0, 0));
    assert!(!state.path().exists());
    assert_eq!(
        report.plan[..2],
        [
            format!("tag {INSTANCE} with switchyard:label:provider=aws, switchyard:label:region=us-east-1, switchyard:service=go-auth"),
            format!("register {INSTANCE}:9000 in target group go-auth-blue (instance target)"),
        ]
    );
    assert_eq!(
        report.plan.last().unwrap(),
        "wait until every target group reports it healthy (up to 5m00s)"
    );
}

fn instance(id: &str, zone: &str, ip: &str, tags: &[(&str, &str)]) -> Instance {
    let mut builder = Instance::builder()
        .instance_id(id)
        .private_ip_address(ip)
        .placement(Placement::builder().availability_zone(zone).build())
        .state(
            InstanceState::builder()
                .name(InstanceStateName::Running)
                .build(),
        );
    for (k, v) in tags {
        builder = builder.tags(Tag::builder().key(*k).value(*v).build());
    }
    builder.build()
}

#[tokio::test]
async fn the_fleet_is_listed_by_tag_filters_across_pages_and_regions() {
    let filters: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = filters.clone();
    let describe = mock!(aws_sdk_ec2::Client::describe_instances)
        .match_requests(move |req| {
            let mut seen = seen.lock().unwrap();
            if seen.is_empty() {
                for f in req.filters() {
                    seen.push(format!("{}={}", f.name().unwrap(), f.values().join("|")));
                }
            }
            true
        })
        .sequence()
        .output(|| {
            DescribeInstancesOutput::builder()
                .reservations(
                    Reservation::builder()
                        .instances(instance(
                            "i-b",
                            "us-east-1b",
                            "10.0.2.7",
                            &[
                                ("switchyard:service", "go-auth"),
                                ("switchyard:label:region", "us-east-1"),
                                ("Name", "web"),
                            ],
                        ))
                        .build(),
                )
                .next_token("page-2")
                .build()
        })
        .output(|| {
            DescribeInstancesOutput::builder()
                .reservations(
                    Reservation::builder()
                        .instances(instance(
                            "i-a",
                            "us-east-1a",
                            "10.0.1.5",
                            &[
                                ("switchyard:service", "go-auth"),
                                ("switchyard:label:region", "us-east-1"),
                            ],
                        ))
                        .build(),
                )
                .build()
        })
        .build();
    let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, &[&describe]);
    let query = FleetQuery {
        service: Some("go-auth".into()),
        labels: Labels::parse(&["region=us-east-1".into()]).unwrap(),
    };
    let report = fleet::list(&[("us-east-1".into(), client)], &query, &BTreeMap::new())
        .await
        .unwrap();
    assert_eq!(describe.num_calls(), 2, "both pages");
    assert_eq!(
        *filters.lock().unwrap(),
        [
            "instance-state-name=pending|running",
            "tag:switchyard:service=go-auth",
            "tag:switchyard:label:region=us-east-1"
        ]
    );
    let ids: Vec<&str> = report.hosts.iter().map(|h| h.host_id.as_str()).collect();
    assert_eq!(ids, ["i-a", "i-b"], "by region, zone and id");
    assert_eq!(report.hosts[1].labels.display(), "region=us-east-1");
    assert_eq!(report.hosts[1].service.as_deref(), Some("go-auth"));
    assert_eq!(report.by_region["us-east-1"], 2);
    let text = crate::outcome::StepReport::text(&report);
    assert!(
        text.starts_with(
            "HOST  PROVIDER  REGION     ZONE        ADDRESS   STATE    SERVICE  LABELS\n"
        ),
        "{text}"
    );
    assert!(
        text.ends_with("2 host(s) match service=go-auth, region=us-east-1 (us-east-1: 2)\n"),
        "{text}"
    );

    let everyone = FleetQuery::default();
    let names: Vec<String> = everyone
        .filters()
        .iter()
        .map(|f| format!("{}={}", f.name().unwrap(), f.values().join("|")))
        .collect();
    assert_eq!(
        names,
        [
            "instance-state-name=pending|running",
            "tag-key=switchyard:service"
        ]
    );
}

#[tokio::test]
async fn hosts_off_ec2_are_listed_from_the_state_beside_instances() {
    let describe = mock!(aws_sdk_ec2::Client::describe_instances).then_output(|| {
        DescribeInstancesOutput::builder()
            .reservations(
                Reservation::builder()
                    .instances(instance(
                        "i-0abc",
                        "us-east-1a",
                        "10.0.1.12",
                        &[
                            ("switchyard:service", "go-auth"),
                            ("switchyard:label:provider", "aws"),
                        ],
                    ))
                    .build(),
            )
            .build()
    });
    let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, &[&describe]);
    let host = |provider: &str, region: &str, address: &str, service: &str| Host {
        provider: Some(provider.into()),
        region: Some(region.into()),
        address: Some(address.into()),
        labels: BTreeMap::from([
            ("service".to_owned(), service.to_owned()),
            ("provider".to_owned(), provider.to_owned()),
            ("region".to_owned(), region.to_owned()),
        ]),
        ..Host::default()
    };
    let recorded = BTreeMap::from([
        (
            "4520031799277581759".to_owned(),
            host("gcp", "us-central1", "10.128.0.2", "go-auth"),
        ),
        (
            "3164494".to_owned(),
            host("digitalocean", "nyc3", "10.116.0.2", "billing"),
        ),
        // EC2 instances are found by their tags, not from the state.
        (
            "i-0abc".to_owned(),
            host("aws", "us-east-1", "10.0.1.12", "go-auth"),
        ),
    ]);
    let query = FleetQuery {
        service: Some("go-auth".into()),
        labels: Labels::default(),
    };
    let report = fleet::list(&[("us-east-1".into(), client)], &query, &recorded)
        .await
        .unwrap();
    let rows: Vec<(&str, &str, &str)> = report
        .hosts
        .iter()
        .map(|h| (h.host_id.as_str(), h.provider.as_str(), h.target))
        .collect();
    assert_eq!(
        rows,
        [
            ("4520031799277581759", "gcp", "ip"),
            ("i-0abc", "aws", "instance")
        ],
        "by region, zone and id"
    );
    let gcp = &report.hosts[0];
    assert_eq!(gcp.labels.display(), "provider=gcp,region=us-central1");
    assert_eq!(gcp.address.as_deref(), Some("10.128.0.2"));
    assert_eq!(gcp.state, "registered");
    assert_eq!(report.by_region["us-central1"], 1);
    let text = crate::outcome::StepReport::text(&report);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[1],
        "4520031799277581759  gcp       us-central1  -           10.128.0.2  registered  go-auth  \
         provider=gcp,region=us-central1",
        "{text}"
    );
    assert_eq!(
        lines[3],
        "2 host(s) match service=go-auth (us-central1: 1, us-east-1: 1)"
    );

    let dc = FleetQuery {
        service: None,
        labels: Labels::parse(&["region=nyc3".into()]).unwrap(),
    };
    let found: Vec<String> = fleet::off_ec2(&recorded, &dc)
        .into_iter()
        .map(|h| h.host_id)
        .collect();
    assert_eq!(found, ["3164494"]);
}

/// Parsing and checking target groups and settings.
mod checks {
    use super::super::*;
    use super::ARN;

    #[test]
    fn target_group_arns_are_checked() {
        let arn = TargetGroupArn::parse(ARN).unwrap();
        assert_eq!(arn.region(), "us-east-1");
        assert_eq!(arn.name(), "go-auth-blue");
        for bad in [
            "go-auth-blue",
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/x/1",
            "arn:aws:ec2:us-east-1:123456789012:targetgroup/x/1",
            "arn:aws:elasticloadbalancing:us-east-1:1234:targetgroup/x/1",
        ] {
            let err = TargetGroupArn::parse(bad).unwrap_err().to_string();
            assert!(err.contains("is not a target group ARN"), "{bad}: {err}");
        }
        let west = ARN.replace("us-east-1", "us-west-2");
        let err = parse_target_groups(&[ARN.to_owned(), west]).unwrap_err();
        assert!(err.to_string().contains("more than one region"), "{err}");
        let err = parse_target_groups(&[ARN.to_owned(), ARN.to_owned()]).unwrap_err();
        assert!(err.to_string().ends_with("is given twice"), "{err}");
    }

    #[test]
    fn the_target_groups_say_the_region() {
        let groups = parse_target_groups(&[ARN.to_owned()]).unwrap();
        assert_eq!(
            targets_region(None, &groups).unwrap().as_deref(),
            Some("us-east-1")
        );
        assert!(targets_region(Some("us-east-1"), &groups).is_ok());
        let err = targets_region(Some("eu-west-1"), &groups).unwrap_err();
        assert!(
            err.to_string()
                .contains("is in us-east-1, but this host's calls go to eu-west-1"),
            "{err}"
        );
        assert_eq!(
            targets_region(Some("eu-west-1"), &[]).unwrap().as_deref(),
            Some("eu-west-1")
        );
    }

    #[test]
    fn lifecycle_flags_go_together() {
        assert_eq!(LifecycleHook::from_flags(None, None).unwrap(), None);
        assert!(LifecycleHook::from_flags(Some("drain"), Some("web"))
            .unwrap()
            .is_some());
        assert!(LifecycleHook::from_flags(Some("drain"), None).is_err());
        assert!(LifecycleHook::from_flags(None, Some("web")).is_err());
    }

    #[test]
    fn targets_follow_the_group_type_and_the_provider() {
        let group = |t: &str| TargetGroup {
            arn: ARN.into(),
            name: "go-auth-blue".into(),
            target_type: t.into(),
            port: Some(80),
        };
        let ec2 = Identity {
            host_id: "i-0abc".into(),
            provider: "aws".into(),
            region: Some("us-east-1".into()),
            availability_zone: Some("us-east-1a".into()),
            address: "10.0.1.12".parse().unwrap(),
            public_address: None,
        };
        let dc = Identity::given("dc-fra1", "web-7", "10.20.0.7").unwrap();
        assert_eq!(
            target_for(&group("instance"), &ec2, Some(9000)).unwrap(),
            Target {
                id: "i-0abc".into(),
                port: 9000,
                availability_zone: None
            }
        );
        assert_eq!(
            target_for(&group("ip"), &ec2, None).unwrap().id,
            "10.0.1.12"
        );
        let off = target_for(&group("ip"), &dc, None).unwrap();
        assert_eq!(
            (off.id.as_str(), off.port, off.availability_zone.as_deref()),
            ("10.20.0.7", 80, Some("all"))
        );
        let err = target_for(&group("instance"), &dc, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("register it in a target group of type ip"),
            "{err}"
        );
        assert!(target_for(&group("lambda"), &ec2, None).is_err());
    }
}

/// A loopback IMDSv2 stand-in that answers a token to a token PUT and
/// `state` to a GET of the lifecycle state path (404 to anything else, and
/// to that path when `state` is `None`).
async fn lifecycle_imds(state: Option<&'static str>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = 0;
                while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf[got..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                }
                let head = String::from_utf8_lossy(&buf[..got]).into_owned();
                let (status, body) = if head.starts_with("PUT /latest/api/token") {
                    (200, "token")
                } else if let (Some(state), true) = (
                    state,
                    head.starts_with(&format!(
                        "GET /{}",
                        crate::host::watch::LIFECYCLE_STATE_PATH
                    )),
                ) {
                    (200, state)
                } else {
                    (404, "")
                };
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    endpoint
}

#[tokio::test]
async fn watch_heartbeats_while_draining_then_completes_once() {
    use aws_sdk_autoscaling::operation::record_lifecycle_action_heartbeat::RecordLifecycleActionHeartbeatOutput;

    use crate::host::identity::ImdsSettings;
    use crate::host::watch::{self, WatchRequest};

    let order: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let groups = group_rule(TargetTypeEnum::Instance);
    let delay = delay_rule(300);
    let deregister = deregister_rule();
    // Healthy before the leave, then draining for a while, then gone.
    let health = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .sequence()
        .output(healthy)
        .times(1)
        .output(draining)
        .times(8)
        .output(not_registered)
        .build();
    let seen = order.clone();
    let beat = mock!(aws_sdk_autoscaling::Client::record_lifecycle_action_heartbeat)
        .match_requests(move |req| {
            seen.lock().unwrap().push("heartbeat");
            req.lifecycle_hook_name() == Some("switchyard-drain")
                && req.auto_scaling_group_name() == Some("go-auth-green")
                && req.instance_id() == Some(INSTANCE)
        })
        .then_output(|| RecordLifecycleActionHeartbeatOutput::builder().build());
    let seen = order.clone();
    let complete = mock!(aws_sdk_autoscaling::Client::complete_lifecycle_action)
        .match_requests(move |req| {
            seen.lock().unwrap().push("complete");
            req.lifecycle_hook_name() == Some("switchyard-drain")
                && req.auto_scaling_group_name() == Some("go-auth-green")
                && req.instance_id() == Some(INSTANCE)
                && req.lifecycle_action_result() == Some("CONTINUE")
        })
        .then_output(|| CompleteLifecycleActionOutput::builder().build());
    let clients = clients(
        &[],
        &[&groups, &delay, &deregister, &health],
        &[&beat, &complete],
    );
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path().join("state.json"));
    let request = WatchRequest {
        leave: leave_request(None),
        hook: LifecycleHook {
            hook: "switchyard-drain".into(),
            group: "go-auth-green".into(),
        },
        poll: Duration::from_millis(100),
        heartbeat_every: Duration::from_millis(150),
        exit_outside_group: false,
    };
    let options = RegistrationOptions {
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(100),
        },
        ..options(Duration::from_secs(60))
    };
    let imds = ImdsSettings::with_endpoint(&lifecycle_imds(Some("Terminated")).await).unwrap();
    let report = watch::watch(
        &clients,
        &ec2_host(),
        imds,
        &request,
        &options,
        &state,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(report.lifecycle_state.as_deref(), Some("Terminated"));
    assert_eq!(report.polls, 1);
    assert_eq!(complete.num_calls(), 1);
    assert_eq!(beat.num_calls(), report.heartbeats as usize);
    assert!(report.heartbeats >= 2, "{} heartbeats", report.heartbeats);
    let order = order.lock().unwrap().clone();
    assert_eq!(order.last(), Some(&"complete"), "{order:?}");
    assert!(order[..order.len() - 1].iter().all(|c| *c == "heartbeat"));
    let leave = report.leave.as_ref().unwrap();
    assert!(leave.targets[0].deregistered);
    assert_eq!(leave.lifecycle.as_ref().unwrap()["result"], "CONTINUE");
    assert_eq!(
        journal(&read(state.path())),
        [
            "terminating:ok",
            "leave:ok",
            "drained:ok",
            "lifecycle-action:ok"
        ]
    );
}

#[tokio::test]
async fn watch_outside_a_group_ends_when_asked() {
    use crate::host::identity::ImdsSettings;
    use crate::host::watch::{self, WatchRequest};

    // The lifecycle path answers 404: no Auto Scaling lifecycle.
    let imds = ImdsSettings::with_endpoint(&lifecycle_imds(None).await).unwrap();
    let clients = clients(&[], &[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path().join("state.json"));
    let request = WatchRequest {
        leave: leave_request(None),
        hook: LifecycleHook {
            hook: "switchyard-drain".into(),
            group: "go-auth-green".into(),
        },
        poll: Duration::from_millis(100),
        heartbeat_every: Duration::from_secs(60),
        exit_outside_group: true,
    };
    let report = watch::watch(
        &clients,
        &ec2_host(),
        imds,
        &request,
        &options(Duration::from_secs(60)),
        &state,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(report.lifecycle_state, None);
    assert!(report.leave.is_none());
    assert!(crate::outcome::StepReport::text(&report).contains("is in no Auto Scaling lifecycle"));
}
