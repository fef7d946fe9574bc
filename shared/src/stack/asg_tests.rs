//! Offline tests of the `asg` driver with the SDK mocked: what moto does not
//! emulate (instances that stay Pending, an instance terminated while
//! launching, throttling) and the launch template comparison.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_autoscaling::operation::describe_auto_scaling_groups::DescribeAutoScalingGroupsOutput;
use aws_sdk_autoscaling::operation::describe_lifecycle_hooks::DescribeLifecycleHooksOutput;
use aws_sdk_autoscaling::operation::describe_policies::DescribePoliciesOutput;
use aws_sdk_autoscaling::operation::put_lifecycle_hook::PutLifecycleHookOutput;
use aws_sdk_autoscaling::types::{
    AutoScalingGroup, Instance as AsgInstance, LaunchTemplateSpecification, LifecycleState,
};
use aws_sdk_ec2::operation::create_launch_template_version::CreateLaunchTemplateVersionOutput;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::describe_launch_template_versions::DescribeLaunchTemplateVersionsOutput;
use aws_sdk_ec2::operation::describe_launch_templates::DescribeLaunchTemplatesOutput;
use aws_sdk_ec2::operation::modify_launch_template::ModifyLaunchTemplateOutput;
use aws_sdk_ec2::types::{
    Instance, LaunchTemplate, LaunchTemplateHttpTokensState, LaunchTemplateInstanceMetadataOptions,
    LaunchTemplateTagSpecification, LaunchTemplateVersion, Reservation, ResourceType,
    ResponseLaunchTemplateData, Tag,
};
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{AsgClients, AsgDriver, AsgSettings, Scaling, TerminationHook};
use crate::aws::config::retry_policy;
use crate::outcome::{Code, ExitStatus};
use crate::stack::{StackDriver, StackError, StackSpec, Wait};
use crate::wait::Backoff;

const GROUP: &str = "go-auth-green";
const TEMPLATE: &str = "lt-0abc";

fn spec(image: &str) -> StackSpec {
    StackSpec {
        service: "go-auth".into(),
        color: "green".into(),
        version: "v2".into(),
        image: Some(image.into()),
        region: "us-east-1".into(),
    }
}

fn settings() -> AsgSettings {
    AsgSettings {
        desired: Some(2),
        scaling: Scaling::Unmanaged,
        port: 8080,
        // The hook has tests of its own below.
        termination_hook: None,
        backoff: Backoff {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(30),
        },
        ..AsgSettings::default()
    }
}

fn driver(ec2: &[&Rule], autoscaling: &[&Rule], settings: AsgSettings) -> AsgDriver {
    driver_with_elb(ec2, autoscaling, &[], settings)
}

fn driver_with_elb(
    ec2: &[&Rule],
    autoscaling: &[&Rule],
    elbv2: &[&Rule],
    settings: AsgSettings,
) -> AsgDriver {
    // Never called by these tests (their scaling is unmanaged); pointed at a
    // closed loopback port so that a stray call fails instead of leaving the machine.
    let cloudwatch = super::super::unused_cloudwatch();
    AsgDriver::new(
        AsgClients {
            autoscaling: mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, autoscaling, |c| c
                .retry_config(retry_policy())),
            ec2: mock_client!(aws_sdk_ec2, RuleMode::MatchAny, ec2, |c| c
                .retry_config(retry_policy())),
            cloudwatch,
            elbv2: mock_client!(
                aws_sdk_elasticloadbalancingv2,
                RuleMode::MatchAny,
                elbv2,
                |c| c.retry_config(retry_policy())
            ),
        },
        settings,
    )
}

/// A template whose latest version (3) launches `image` for green at v2.
fn template_rules(image: &'static str) -> (Rule, Rule) {
    let list = mock!(aws_sdk_ec2::Client::describe_launch_templates).then_output(|| {
        DescribeLaunchTemplatesOutput::builder()
            .launch_templates(
                LaunchTemplate::builder()
                    .launch_template_id(TEMPLATE)
                    .launch_template_name(GROUP)
                    .latest_version_number(3)
                    .default_version_number(3)
                    .build(),
            )
            .build()
    });
    let versions =
        mock!(aws_sdk_ec2::Client::describe_launch_template_versions).then_output(move || {
            let tags = [
                ("service", "go-auth"),
                ("color", "green"),
                ("version", "v2"),
                ("managed-by", "switchyard"),
            ];
            DescribeLaunchTemplateVersionsOutput::builder()
                .launch_template_versions(
                    LaunchTemplateVersion::builder()
                        .launch_template_id(TEMPLATE)
                        .version_number(3)
                        .launch_template_data(
                            ResponseLaunchTemplateData::builder()
                                .image_id(image)
                                .instance_type("t3.micro".into())
                                .metadata_options(
                                    LaunchTemplateInstanceMetadataOptions::builder()
                                        .http_tokens(LaunchTemplateHttpTokensState::Required)
                                        .build(),
                                )
                                .tag_specifications(
                                    LaunchTemplateTagSpecification::builder()
                                        .resource_type(ResourceType::Instance)
                                        .set_tags(Some(
                                            tags.iter()
                                                .map(|(k, v)| {
                                                    Tag::builder().key(*k).value(*v).build()
                                                })
                                                .collect(),
                                        ))
                                        .build(),
                                )
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
    (list, versions)
}

fn instance(id: &str, state: LifecycleState, health: &str) -> AsgInstance {
    instance_at(id, state, health, "3")
}

fn instance_at(id: &str, state: LifecycleState, health: &str, version: &str) -> AsgInstance {
    AsgInstance::builder()
        .instance_id(id)
        .lifecycle_state(state)
        .health_status(health)
        .availability_zone("us-east-1a")
        .protected_from_scale_in(false)
        .launch_template(
            LaunchTemplateSpecification::builder()
                .launch_template_id(TEMPLATE)
                .version(version)
                .build(),
        )
        .build()
}

fn group(instances: Vec<AsgInstance>) -> DescribeAutoScalingGroupsOutput {
    let tags = [
        ("service", "go-auth"),
        ("color", "green"),
        ("version", "v2"),
        ("managed-by", "switchyard"),
    ];
    DescribeAutoScalingGroupsOutput::builder()
        .auto_scaling_groups(
            AutoScalingGroup::builder()
                .auto_scaling_group_name(GROUP)
                .launch_template(
                    LaunchTemplateSpecification::builder()
                        .launch_template_id(TEMPLATE)
                        .version("3")
                        .build(),
                )
                .min_size(2)
                .max_size(4)
                .desired_capacity(2)
                .set_instances(Some(instances))
                .set_tags(Some(
                    tags.iter()
                        .map(|(k, v)| {
                            aws_sdk_autoscaling::types::TagDescription::builder()
                                .key(*k)
                                .value(*v)
                                .build()
                        })
                        .collect(),
                ))
                .build(),
        )
        .build()
}

fn ips() -> Rule {
    mock!(aws_sdk_ec2::Client::describe_instances).then_output(|| {
        let instances = [
            ("i-1", "10.0.1.1"),
            ("i-2", "10.0.1.2"),
            ("i-3", "10.0.1.3"),
        ]
        .iter()
        .map(|(id, ip)| {
            Instance::builder()
                .instance_id(*id)
                .private_ip_address(*ip)
                .build()
        })
        .collect();
        DescribeInstancesOutput::builder()
            .reservations(
                Reservation::builder()
                    .set_instances(Some(instances))
                    .build(),
            )
            .build()
    })
}

fn wait_for(seconds: u64) -> Wait {
    Wait {
        deadline: Instant::now() + Duration::from_secs(seconds),
        cancel: CancellationToken::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn instances_that_never_get_in_service_end_at_the_deadline() {
    let (list, versions) = template_rules("ami-new");
    let groups =
        mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups).then_output(|| {
            group(vec![
                instance("i-1", LifecycleState::Pending, "Healthy"),
                instance("i-2", LifecycleState::Pending, "Healthy"),
            ])
        });
    let driver = driver(&[&list, &versions, &ips()], &[&groups], settings());
    let began = Instant::now();
    let err = driver
        .up(&spec("ami-new"), &wait_for(120))
        .await
        .unwrap_err();
    assert!(matches!(err, StackError::Timeout(_)), "{err}");
    assert_eq!(err.exit_code(), Code::Provider);
    let text = err.to_string();
    assert!(
        text.starts_with(
            "go-auth-green: 0 of 2 InService (2 Pending) when the deadline (--timeout) passed"
        ),
        "{text}"
    );
    // Polled with growing delays up to the deadline, not in a tight loop, and not past it.
    let calls = groups.num_calls();
    assert!((5..=20).contains(&calls), "{calls} polls");
    assert_eq!(began.elapsed(), Duration::from_secs(120));
}

#[tokio::test(start_paused = true)]
async fn an_instance_terminated_while_launching_is_replaced_and_reported() {
    let (list, versions) = template_rules("ami-new");
    let groups = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups)
        .sequence()
        // converge reads the group once; then the wait polls.
        .output(|| {
            group(vec![
                instance("i-1", LifecycleState::Pending, "Healthy"),
                instance("i-2", LifecycleState::Pending, "Healthy"),
            ])
        })
        .times(2)
        .output(|| {
            group(vec![
                instance("i-1", LifecycleState::InService, "Healthy"),
                instance("i-2", LifecycleState::Terminating, "Unhealthy"),
            ])
        })
        .output(|| {
            group(vec![
                instance("i-1", LifecycleState::InService, "Healthy"),
                instance("i-3", LifecycleState::Pending, "Healthy"),
            ])
        })
        .output(|| {
            group(vec![
                instance("i-1", LifecycleState::InService, "Healthy"),
                instance("i-3", LifecycleState::InService, "Healthy"),
            ])
        })
        .repeatedly()
        .build();
    let driver = driver(&[&list, &versions, &ips()], &[&groups], settings());
    let status = driver.up(&spec("ami-new"), &wait_for(600)).await.unwrap();
    assert_eq!(status.endpoints, ["10.0.1.1:8080", "10.0.1.3:8080"]);
    assert_eq!(status.ids, [GROUP, "lt-0abc:3", "i-1", "i-3"]);
    assert_eq!(status.detail["lost_while_launching"], "i-2");
    assert_eq!(status.detail["launch_template_version"], "3");
    assert!(!status.changed, "{:?}", status.changes);
    assert_eq!(groups.num_calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn throttling_is_retried() {
    let (list, versions) = template_rules("ami-new");
    let groups = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups)
        .sequence()
        .http_status(400, Some(error_body("Throttling", "Rate exceeded")))
        .times(3)
        .output(|| {
            group(vec![
                instance("i-1", LifecycleState::InService, "Healthy"),
                instance("i-2", LifecycleState::InService, "Healthy"),
            ])
        })
        .repeatedly()
        .build();
    let driver = driver(&[&list, &versions, &ips()], &[&groups], settings());
    let status = driver.up(&spec("ami-new"), &wait_for(600)).await.unwrap();
    assert_eq!(status.endpoints, ["10.0.1.1:8080", "10.0.1.2:8080"]);
    // Three throttled attempts, then one read by converge and one by the wait.
    assert_eq!(groups.num_calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn endless_throttling_ends_as_a_provider_error() {
    let groups = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups)
        .sequence()
        .http_status(400, Some(error_body("Throttling", "Rate exceeded")))
        .repeatedly()
        .build();
    let driver = driver(&[], &[&groups], settings());
    let err = driver
        .up(&spec("ami-new"), &wait_for(600))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), Code::Provider);
    assert!(
        err.to_string()
            .contains("autoscaling:DescribeAutoScalingGroups failed: Throttling"),
        "{err}"
    );
    assert_eq!(
        groups.num_calls(),
        crate::aws::config::DEFAULT_MAX_ATTEMPTS as usize
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_image_makes_a_new_version_with_base64_user_data_and_the_group_follows() {
    let (list, versions) = template_rules("ami-old");
    let user_data = b"#!/bin/sh\necho hello\n".to_vec();
    let expected = aws_smithy_types::base64::encode(&user_data);
    let create = mock!(aws_sdk_ec2::Client::create_launch_template_version)
        .match_requests(move |r| {
            let data = r.launch_template_data().unwrap();
            data.user_data() == Some(expected.as_str())
                && data.image_id() == Some("ami-new")
                && data.metadata_options().and_then(|m| m.http_tokens())
                    == Some(&LaunchTemplateHttpTokensState::Required)
        })
        .then_output(|| {
            CreateLaunchTemplateVersionOutput::builder()
                .launch_template_version(
                    LaunchTemplateVersion::builder()
                        .launch_template_id(TEMPLATE)
                        .version_number(4)
                        .build(),
                )
                .build()
        });
    let default = mock!(aws_sdk_ec2::Client::modify_launch_template)
        .match_requests(|r| r.default_version() == Some("4"))
        .then_output(|| ModifyLaunchTemplateOutput::builder().build());
    let groups = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups)
        .then_output(|| group(Vec::new()));
    let policies = mock!(aws_sdk_autoscaling::Client::describe_policies)
        .then_output(|| DescribePoliciesOutput::builder().build());
    let mut s = settings();
    s.user_data = Some(user_data);
    let driver = driver(
        &[&list, &versions, &create, &default],
        &[&groups, &policies],
        s,
    );
    let plan = driver.plan(&spec("ami-new")).await.unwrap();
    assert_eq!(
        plan,
        [
            "create launch template go-auth-green version 4 (image ami-new, t3.micro, user-data sha256 bfdeaeb08cff, IMDSv2 required, tags color=green, managed-by=switchyard, service=go-auth, version=v2)",
            "make version 4 the default of launch template go-auth-green",
            "update group go-auth-green: launch template lt-0abc version 4, desired 2 (min 2, max 4; was desired 2 min 2 max 4)",
            "wait until 2 instance(s) of go-auth-green are InService",
        ]
    );
    assert_eq!(create.num_calls(), 0, "a plan changes nothing");
    assert_eq!(default.num_calls(), 0, "a plan changes nothing");
}

#[tokio::test(start_paused = true)]
async fn instances_of_an_older_version_are_replaced_by_scaling_to_zero_first() {
    let (list, versions) = template_rules("ami-old");
    let user_data = b"#cloud-config\nruncmd: [echo hi]\n".to_vec();
    let expected = aws_smithy_types::base64::encode(&user_data);
    let create = mock!(aws_sdk_ec2::Client::create_launch_template_version)
        .match_requests(move |r| {
            // The API takes user-data base64-encoded; IMDSv2 is required.
            let data = r.launch_template_data().unwrap();
            data.user_data() == Some(expected.as_str())
                && data.metadata_options().and_then(|m| m.http_tokens())
                    == Some(&LaunchTemplateHttpTokensState::Required)
        })
        .then_output(|| {
            CreateLaunchTemplateVersionOutput::builder()
                .launch_template_version(
                    LaunchTemplateVersion::builder()
                        .launch_template_id(TEMPLATE)
                        .version_number(4)
                        .build(),
                )
                .build()
        });
    let default = mock!(aws_sdk_ec2::Client::modify_launch_template)
        .then_output(|| ModifyLaunchTemplateOutput::builder().build());
    let old = || {
        group(vec![
            instance_at("i-1", LifecycleState::InService, "Healthy", "3"),
            instance_at("i-2", LifecycleState::InService, "Healthy", "3"),
        ])
    };
    let groups = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups)
        .sequence()
        .output(old)
        .output(|| {
            group(vec![
                instance_at("i-1", LifecycleState::Terminating, "Healthy", "3"),
                instance_at("i-2", LifecycleState::Terminated, "Healthy", "3"),
            ])
        })
        .output(|| group(Vec::new()))
        .output(|| {
            group(vec![
                instance_at("i-3", LifecycleState::InService, "Healthy", "4"),
                instance_at("i-2", LifecycleState::InService, "Healthy", "4"),
            ])
        })
        .repeatedly()
        .build();
    let sizes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = sizes.clone();
    let update = mock!(aws_sdk_autoscaling::Client::update_auto_scaling_group).then_compute_output(
        move |r| {
            seen.lock().unwrap().push((
                r.desired_capacity().unwrap(),
                r.launch_template().and_then(|t| t.version()).map(str::to_owned),
            ));
            aws_sdk_autoscaling::operation::update_auto_scaling_group::UpdateAutoScalingGroupOutput::builder().build()
        },
    );
    let driver = driver(
        &[&list, &versions, &create, &default, &ips()],
        &[&groups, &update],
        AsgSettings {
            user_data: Some(user_data),
            ..settings()
        },
    );
    let status = driver.up(&spec("ami-new"), &wait_for(600)).await.unwrap();
    assert_eq!(
        *sizes.lock().unwrap(),
        [(0, Some("4".to_owned())), (2, Some("4".to_owned()))],
        "scaled to 0, then to 2 on version 4"
    );
    assert_eq!(status.ids, [GROUP, "lt-0abc:4", "i-3", "i-2"]);
    assert!(
        status.changes[2].starts_with("scale group go-auth-green to 0 to replace 2 instance(s)"),
        "{:?}",
        status.changes
    );
    assert_eq!(create.num_calls(), 1);
    assert_eq!(default.num_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_same_image_and_settings_plan_no_change() {
    let (list, versions) = template_rules("ami-new");
    let groups = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups)
        .then_output(|| group(Vec::new()));
    let driver = driver(&[&list, &versions], &[&groups], settings());
    let plan = driver.plan(&spec("ami-new")).await.unwrap();
    assert_eq!(
        plan,
        ["wait until 2 instance(s) of go-auth-green are InService"]
    );
}

#[tokio::test(start_paused = true)]
async fn no_image_and_no_capacity_are_bad_input() {
    let groups = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups)
        .then_output(|| DescribeAutoScalingGroupsOutput::builder().build());
    let mut s = settings();
    s.desired = None;
    s.capacity_from = Some("blue".into());
    let driver = driver(&[], &[&groups], s);
    let mut no_image = spec("ami-new");
    no_image.image = None;
    let err = driver.plan(&no_image).await.unwrap_err();
    assert_eq!(err.exit_code(), Code::Usage);
    assert!(
        err.to_string()
            .starts_with("no image for go-auth in us-east-1"),
        "{err}"
    );
    let err = driver.plan(&spec("ami-new")).await.unwrap_err();
    assert_eq!(err.exit_code(), Code::Usage);
    assert!(
        err.to_string().contains("go-auth-blue); pass --desired"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn in_service_instances_wait_until_healthy_in_the_target_group() {
    use aws_sdk_elasticloadbalancingv2::operation::describe_target_groups::DescribeTargetGroupsOutput;
    use aws_sdk_elasticloadbalancingv2::operation::describe_target_health::DescribeTargetHealthOutput;
    use aws_sdk_elasticloadbalancingv2::types::{
        TargetDescription, TargetGroup, TargetHealth, TargetHealthDescription,
        TargetHealthStateEnum,
    };
    const ARN: &str =
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/go-auth-green/0123";
    let (list, versions) = template_rules("ami-new");
    let groups =
        mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups).then_output(|| {
            let mut out = group(vec![
                instance("i-1", LifecycleState::InService, "Healthy"),
                instance("i-2", LifecycleState::InService, "Healthy"),
            ]);
            let g = out
                .auto_scaling_groups
                .as_mut()
                .unwrap()
                .first_mut()
                .unwrap();
            g.target_group_arns = Some(vec![ARN.to_owned()]);
            out
        });
    let tg =
        mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_groups).then_output(|| {
            DescribeTargetGroupsOutput::builder()
                .target_groups(
                    TargetGroup::builder()
                        .target_group_arn(ARN)
                        .target_group_name("go-auth-green")
                        .port(8080)
                        .build(),
                )
                .build()
        });
    let health = |id: &str, state: TargetHealthStateEnum| {
        DescribeTargetHealthOutput::builder()
            .target_health_descriptions(
                TargetHealthDescription::builder()
                    .target(TargetDescription::builder().id(id).port(8080).build())
                    .target_health(TargetHealth::builder().state(state).build())
                    .build(),
            )
            .build()
    };
    // i-2 stays `initial` for two polls; i-1 is healthy at once.
    let i1 = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .match_requests(|r| r.targets()[0].id() == Some("i-1"))
        .then_output(move || health("i-1", TargetHealthStateEnum::Healthy));
    let i2 = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .match_requests(|r| r.targets()[0].id() == Some("i-2"))
        .sequence()
        .output(move || health("i-2", TargetHealthStateEnum::Initial))
        .times(2)
        .output(move || health("i-2", TargetHealthStateEnum::Healthy))
        .repeatedly()
        .build();
    let driver = driver_with_elb(
        &[&list, &versions, &ips()],
        &[&groups],
        &[&tg, &i1, &i2],
        settings(),
    );
    let status = driver.up(&spec("ami-new"), &wait_for(600)).await.unwrap();
    assert_eq!(status.endpoints, ["10.0.1.1:8080", "10.0.1.2:8080"]);
    assert_eq!(i2.num_calls(), 3);
    assert_eq!(tg.num_calls(), 1, "the group's port is read once");
    // converge's read, then three polls of the wait.
    assert_eq!(groups.num_calls(), 4);
}

#[tokio::test]
async fn a_group_that_exists_already_when_created_is_updated_to_the_same_settings() {
    use aws_sdk_autoscaling::operation::create_or_update_tags::CreateOrUpdateTagsOutput;
    use aws_sdk_autoscaling::operation::update_auto_scaling_group::UpdateAutoScalingGroupOutput;
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    use crate::aws::autoscaling::{create_group, NewGroup};

    // The answer to the first CreateAutoScalingGroup was lost and the retry
    // found the group made: AlreadyExists.
    let create = mock!(aws_sdk_autoscaling::Client::create_auto_scaling_group).then_http_response(
        || {
            HttpResponse::new(
                StatusCode::try_from(400).unwrap(),
                SdkBody::from(error_body(
                    "AlreadyExists",
                    "AutoScalingGroup by this name already exists - A group with the name go-auth-green already exists",
                )),
            )
        },
    );
    let update = mock!(aws_sdk_autoscaling::Client::update_auto_scaling_group)
        .match_requests(|r| {
            r.auto_scaling_group_name() == Some("go-auth-green")
                && r.desired_capacity() == Some(2)
                && r.launch_template().and_then(|t| t.version()) == Some("4")
        })
        .then_output(|| UpdateAutoScalingGroupOutput::builder().build());
    let tags = mock!(aws_sdk_autoscaling::Client::create_or_update_tags)
        .match_requests(|r| r.tags().iter().any(|t| t.key() == Some("version")))
        .then_output(|| CreateOrUpdateTagsOutput::builder().build());
    let hooks = mock!(aws_sdk_autoscaling::Client::describe_lifecycle_hooks)
        .then_output(|| DescribeLifecycleHooksOutput::builder().build());
    let put = mock!(aws_sdk_autoscaling::Client::put_lifecycle_hook)
        .match_requests(|r| r.lifecycle_hook_name() == Some("switchyard-drain"))
        .then_output(|| PutLifecycleHookOutput::builder().build());
    let client = mock_client!(
        aws_sdk_autoscaling,
        RuleMode::MatchAny,
        [&create, &update, &tags, &hooks, &put],
        |c| c.retry_config(retry_policy())
    );
    let group = NewGroup {
        name: "go-auth-green".into(),
        template_id: "lt-0123".into(),
        template_version: "4".into(),
        min: 2,
        max: 4,
        desired: 2,
        subnets: vec!["subnet-1".into()],
        target_groups: Vec::new(),
        health_check_type: "EC2".into(),
        grace_period_secs: 60,
        tags: [("version".to_owned(), "v2".to_owned())].into(),
        hooks: vec![TerminationHook::default().api()],
    };
    create_group(&client, &group).await.unwrap();
    assert_eq!(create.num_calls(), 1);
    assert_eq!(update.num_calls(), 1);
    assert_eq!(tags.num_calls(), 1);
    // The lost create may have made the group without its hook: put when missing.
    assert_eq!(hooks.num_calls(), 1);
    assert_eq!(put.num_calls(), 1);
}

/// A hook as DescribeLifecycleHooks lists it: name, transition, heartbeat, default result.
type HookRow<'a> = (&'a str, &'a str, i32, &'a str);

fn hooks_output(hooks: &[HookRow<'_>]) -> DescribeLifecycleHooksOutput {
    DescribeLifecycleHooksOutput::builder()
        .set_lifecycle_hooks(Some(
            hooks
                .iter()
                .map(|(name, transition, heartbeat, result)| {
                    aws_sdk_autoscaling::types::LifecycleHook::builder()
                        .lifecycle_hook_name(*name)
                        .auto_scaling_group_name(GROUP)
                        .lifecycle_transition(*transition)
                        .heartbeat_timeout(*heartbeat)
                        .default_result(*result)
                        .build()
                })
                .collect(),
        ))
        .build()
}

#[tokio::test]
async fn a_new_group_is_created_with_its_termination_hook_in_the_same_call() {
    use aws_sdk_autoscaling::operation::create_auto_scaling_group::CreateAutoScalingGroupOutput;

    use crate::aws::autoscaling::{create_group, NewGroup};

    let create = mock!(aws_sdk_autoscaling::Client::create_auto_scaling_group)
        .match_requests(|r| {
            let specs = r.lifecycle_hook_specification_list();
            specs.len() == 1
                && specs[0].lifecycle_hook_name() == Some("switchyard-drain")
                && specs[0].lifecycle_transition() == Some("autoscaling:EC2_INSTANCE_TERMINATING")
                && specs[0].heartbeat_timeout() == Some(600)
                && specs[0].default_result() == Some("CONTINUE")
        })
        .then_output(|| CreateAutoScalingGroupOutput::builder().build());
    let client = mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, [&create], |c| c
        .retry_config(retry_policy()));
    let group = NewGroup {
        name: GROUP.into(),
        template_id: TEMPLATE.into(),
        template_version: "3".into(),
        min: 2,
        max: 4,
        desired: 2,
        subnets: vec!["subnet-1".into()],
        target_groups: Vec::new(),
        health_check_type: "EC2".into(),
        grace_period_secs: 60,
        tags: BTreeMap::new(),
        hooks: vec![TerminationHook::default().api()],
    };
    create_group(&client, &group).await.unwrap();
    assert_eq!(create.num_calls(), 1);

    // The plan of a group to create says so.
    let (list, versions) = template_rules("ami-new");
    let none = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups)
        .then_output(|| DescribeAutoScalingGroupsOutput::builder().build());
    let mut s = settings();
    s.subnets = vec!["subnet-1".into()];
    s.termination_hook = Some(TerminationHook::default());
    let driver = driver(&[&list, &versions], &[&none], s);
    let plan = driver.plan(&spec("ami-new")).await.unwrap();
    assert!(
        plan[0].ends_with(
            ", termination lifecycle hook switchyard-drain (heartbeat 600s, then CONTINUE)"
        ),
        "{plan:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_existing_group_gets_the_hook_only_when_missing_or_different() {
    let (list, versions) = template_rules("ami-new");
    let serving = || {
        group(vec![
            instance("i-1", LifecycleState::InService, "Healthy"),
            instance("i-2", LifecycleState::InService, "Healthy"),
        ])
    };
    let groups =
        mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups).then_output(serving);
    let put = mock!(aws_sdk_autoscaling::Client::put_lifecycle_hook)
        .match_requests(|r| {
            r.auto_scaling_group_name() == Some(GROUP)
                && r.lifecycle_hook_name() == Some("drain")
                && r.lifecycle_transition() == Some("autoscaling:EC2_INSTANCE_TERMINATING")
                && r.heartbeat_timeout() == Some(900)
                && r.default_result() == Some("CONTINUE")
        })
        .then_output(|| PutLifecycleHookOutput::builder().build());
    let hook = TerminationHook::new("drain", Duration::from_secs(900)).unwrap();
    let cases: [(&[HookRow<'_>], Option<&str>); 4] = [
        // Missing (another hook of the group is left alone).
        (
            &[("warm-up", "autoscaling:EC2_INSTANCE_LAUNCHING", 300, "ABANDON")],
            Some("put termination lifecycle hook drain (heartbeat 900s, then CONTINUE) on group go-auth-green"),
        ),
        // Another heartbeat.
        (
            &[("drain", "autoscaling:EC2_INSTANCE_TERMINATING", 600, "CONTINUE")],
            Some("put termination lifecycle hook drain (heartbeat 900s, then CONTINUE) on group go-auth-green (was autoscaling:EC2_INSTANCE_TERMINATING, heartbeat 600s, then CONTINUE)"),
        ),
        // Another default result.
        (
            &[("drain", "autoscaling:EC2_INSTANCE_TERMINATING", 900, "ABANDON")],
            Some("put termination lifecycle hook drain (heartbeat 900s, then CONTINUE) on group go-auth-green (was autoscaling:EC2_INSTANCE_TERMINATING, heartbeat 900s, then ABANDON)"),
        ),
        // As wanted: no call, no change.
        (
            &[("drain", "autoscaling:EC2_INSTANCE_TERMINATING", 900, "CONTINUE")],
            None,
        ),
    ];
    for (have, line) in cases {
        let have: Vec<HookRow<'_>> = have.to_vec();
        let hooks = mock!(aws_sdk_autoscaling::Client::describe_lifecycle_hooks)
            .match_requests(|r| r.auto_scaling_group_name() == Some(GROUP))
            .then_output(move || hooks_output(&have));
        let mut s = settings();
        s.termination_hook = Some(hook.clone());
        let ips = ips();
        let driver = driver(&[&list, &versions, &ips], &[&groups, &hooks, &put], s);
        let plan = driver.plan(&spec("ami-new")).await.unwrap();
        let calls = put.num_calls();
        let status = driver.up(&spec("ami-new"), &wait_for(60)).await.unwrap();
        assert_eq!(status.changes, line.into_iter().collect::<Vec<_>>());
        assert_eq!(plan.len(), status.changes.len() + 1, "{plan:?}");
        assert_eq!(put.num_calls() - calls, usize::from(line.is_some()));
        assert_eq!(status.detail["termination_hook"], "drain");
    }
}

#[test]
fn termination_hook_flags_are_checked() {
    assert!(TerminationHook::new("switchyard-drain", Duration::from_secs(30)).is_ok());
    assert!(TerminationHook::new("a/b_c-1", Duration::from_secs(7200)).is_ok());
    for (name, secs, millis, why) in [
        ("drain", 29, 0, "--termination-heartbeat 29s is outside"),
        ("drain", 7201, 0, "--termination-heartbeat 7201s is outside"),
        ("drain", 0, 0, "--termination-heartbeat 0s is outside"),
        ("drain", 60, 500, "whole seconds"),
        ("", 60, 0, "--termination-hook \"\" is not"),
        ("a b", 60, 0, "--termination-hook \"a b\" is not"),
    ] {
        let err = TerminationHook::new(
            name,
            Duration::from_secs(secs) + Duration::from_millis(millis),
        )
        .unwrap_err();
        assert!(err.contains(why), "{name} {secs}: {err}");
    }
}

fn error_body(code: &str, message: &str) -> String {
    crate::aws::mocked::error_body(
        "http://autoscaling.amazonaws.com/doc/2011-01-01/",
        code,
        message,
    )
}

#[tokio::test(start_paused = true)]
async fn keep_versions_deletes_old_versions_but_not_one_an_instance_runs_and_reports_refusals() {
    let (list, versions) = template_rules("ami-old");
    // Every version of the template: 1 to 4 (4 the one this run writes).
    let all_versions = mock!(aws_sdk_ec2::Client::describe_launch_template_versions)
        .match_requests(|r| r.versions().is_empty())
        .then_output(|| {
            DescribeLaunchTemplateVersionsOutput::builder()
                .set_launch_template_versions(Some(
                    (1..=4)
                        .map(|n| {
                            LaunchTemplateVersion::builder()
                                .launch_template_id(TEMPLATE)
                                .version_number(n)
                                .build()
                        })
                        .collect(),
                ))
                .build()
        });
    let create = mock!(aws_sdk_ec2::Client::create_launch_template_version).then_output(|| {
        CreateLaunchTemplateVersionOutput::builder()
            .launch_template_version(
                LaunchTemplateVersion::builder()
                    .launch_template_id(TEMPLATE)
                    .version_number(4)
                    .build(),
            )
            .build()
    });
    let default = mock!(aws_sdk_ec2::Client::modify_launch_template)
        .then_output(|| ModifyLaunchTemplateOutput::builder().build());
    // Versions 3 and 1 go (version 2 is what an instance of the group still
    // runs); EC2 refuses version 3.
    let delete = delete_3_and_1_refusing_3();
    let of_service = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups)
        .match_requests(|r| !r.filters().is_empty())
        .then_output(|| {
            group(vec![instance_at(
                "i-9",
                LifecycleState::InService,
                "Healthy",
                "2",
            )])
        });
    let groups =
        mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups).then_output(|| {
            group(vec![
                instance_at("i-1", LifecycleState::InService, "Healthy", "4"),
                instance_at("i-2", LifecycleState::InService, "Healthy", "4"),
            ])
        });
    let update = mock!(aws_sdk_autoscaling::Client::update_auto_scaling_group).then_output(|| {
        aws_sdk_autoscaling::operation::update_auto_scaling_group::UpdateAutoScalingGroupOutput::builder().build()
    });
    let mut s = settings();
    s.keep_versions = crate::aws::Keep::parse("1").unwrap();
    let driver = driver(
        &[
            &all_versions,
            &list,
            &versions,
            &create,
            &default,
            &delete,
            &ips(),
        ],
        &[&of_service, &groups, &update],
        s,
    );
    let plan = driver.plan(&spec("ami-new")).await.unwrap();
    assert!(
        plan.contains(&"delete launch template go-auth-green version(s) 3, 1 (beyond the newest 1, none in use)".to_owned()),
        "{plan:?}"
    );
    assert_eq!(delete.num_calls(), 0, "a plan changes nothing");
    let status = driver.up(&spec("ami-new"), &wait_for(600)).await.unwrap();
    assert_eq!(delete.num_calls(), 1);
    assert!(
        status.changes.contains(
            &"delete launch template go-auth-green version(s) 1 (beyond the newest 1, none in use)"
                .to_owned()
        ),
        "only what EC2 deleted: {:?}",
        status.changes
    );
}

/// DeleteLaunchTemplateVersions of versions 3 and 1: 1 deleted, 3 refused.
fn delete_3_and_1_refusing_3() -> Rule {
    use aws_sdk_ec2::operation::delete_launch_template_versions::DeleteLaunchTemplateVersionsOutput;
    use aws_sdk_ec2::types::{
        DeleteLaunchTemplateVersionsResponseErrorItem,
        DeleteLaunchTemplateVersionsResponseSuccessItem, ResponseError,
    };
    mock!(aws_sdk_ec2::Client::delete_launch_template_versions)
        .match_requests(|r| r.launch_template_id() == Some(TEMPLATE) && r.versions() == ["3", "1"])
        .then_output(|| {
            DeleteLaunchTemplateVersionsOutput::builder()
                .successfully_deleted_launch_template_versions(
                    DeleteLaunchTemplateVersionsResponseSuccessItem::builder()
                        .launch_template_id(TEMPLATE)
                        .version_number(1)
                        .build(),
                )
                .unsuccessfully_deleted_launch_template_versions(
                    DeleteLaunchTemplateVersionsResponseErrorItem::builder()
                        .launch_template_id(TEMPLATE)
                        .version_number(3)
                        .response_error(
                            ResponseError::builder()
                                .code("unexpectedError".into())
                                .message("try again later")
                                .build(),
                        )
                        .build(),
                )
                .build()
        })
}
