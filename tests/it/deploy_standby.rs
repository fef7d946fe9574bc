//! deploy-standby against moto's server, as a process, cross-checked with the
//! aws CLI: blue active with 2 instances, green brought up from its launch
//! template with CPU policies and alarms, a second run that changes nothing,
//! retire refused before the promotion and done after it (shift-weight moves
//! the traffic in moto's Route53). Also: user-data from `register-host
//! user-data` reaches the launch template intact, and several regions at once.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};
use switchyard_tests::aws_cli::{self, aws_in};
use switchyard_tests::steps::{run, step};
use switchyard_tests::Moto;

use crate::fixture::{
    base64_decode, ok_json, read_json, sample_service, state_validates, with_state, Fixture,
};

fn first(moto: &Moto, region: &str, args: &[&str], query: &str) -> String {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--query", query]);
    aws_in(moto, region, &all).as_str().unwrap().to_owned()
}

fn subnet(moto: &Moto, region: &str) -> String {
    first(
        moto,
        region,
        &["ec2", "describe-subnets"],
        "Subnets[0].SubnetId",
    )
}

fn images(moto: &Moto, region: &str) -> (String, String) {
    (
        first(
            moto,
            region,
            &["ec2", "describe-images"],
            "Images[0].ImageId",
        ),
        first(
            moto,
            region,
            &["ec2", "describe-images"],
            "Images[1].ImageId",
        ),
    )
}

fn group(f: &Fixture, region: &str, name: &str) -> Value {
    aws_cli::auto_scaling_group(&f.moto, region, name)
}

fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

#[test]
fn blue_active_green_up_then_retire_after_promotion() {
    let f = Fixture::new();
    let region = "us-east-1";
    let subnet = subnet(&f.moto, region);
    let (ami_v1, ami_v2) = images(&f.moto, region);

    // Blue, the live stack of an earlier release: 2 instances.
    let out = f.run(
        "deploy-standby",
        &[
            "--service",
            "go-auth",
            "--release",
            "v1",
            "--color",
            "blue",
            "--image",
            &ami_v1,
            "--desired",
            "2",
            "--subnet",
            &subnet,
            "--port",
            "8080",
            "--output",
            "json",
        ],
    );
    let blue = ok_json(&out);
    assert_eq!(blue["endpoints"].as_array().unwrap().len(), 2, "{blue}");
    let mut doc = f.doc();
    doc["stacks"]["blue"]["role"] = json!("active");
    f.write_doc(&doc);

    // The user-data of the new release, from register-host.
    let out = f.run(
        "register-host",
        &[
            "user-data",
            "--service",
            "go-auth",
            "--label",
            "region=us-east-1",
            "--port",
            "8080",
            "--lifecycle-hook",
            "drain",
            "--asg",
            "go-auth-green",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let user_data = f.path("user-data.yaml");
    std::fs::write(&user_data, &out.stdout).unwrap();
    let user_data_arg = user_data.display().to_string();
    let green_args = [
        "--release",
        "v2",
        "--image",
        &ami_v2,
        "--subnet",
        &subnet,
        "--port",
        "8080",
        "--user-data",
        &user_data_arg,
        "--output",
        "json",
    ];

    // The dry run shows the plan and changes nothing.
    let mut dry = green_args.to_vec();
    dry.push("--dry-run");
    let plan = ok_json(&f.run("deploy-standby", &dry));
    assert_eq!(plan["color"], "green");
    assert_eq!(plan["dry_run"], true);
    let steps: Vec<&str> = plan["regions"][0]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        steps[0].starts_with("create launch template go-auth-green (version 1: image"),
        "{steps:?}"
    );
    assert!(steps[1].starts_with("create group go-auth-green: launch template (new go-auth-green) version 1, desired 2 (min 2, max 4)"), "{steps:?}");
    assert_eq!(steps.len(), 7, "{steps:?}");
    assert!(
        group(&f, region, "go-auth-green").is_null(),
        "a dry run creates nothing"
    );

    // Green comes up with blue's capacity.
    let green = ok_json(&f.run("deploy-standby", &green_args));
    assert_eq!(green["color"], "green");
    assert_eq!(green["reason"], "the state marks blue active");
    assert_eq!(green["changed"], true);

    let g = group(&f, region, "go-auth-green");
    assert_eq!(g["DesiredCapacity"], 2);
    assert_eq!(g["MinSize"], 2);
    assert_eq!(g["MaxSize"], 4);
    assert_eq!(g["LaunchTemplate"]["Version"], "1");
    let template_id = g["LaunchTemplate"]["LaunchTemplateId"]
        .as_str()
        .unwrap()
        .to_owned();
    let instances: Vec<&Value> = g["Instances"].as_array().unwrap().iter().collect();
    assert_eq!(instances.len(), 2);
    assert!(instances.iter().all(|i| i["LifecycleState"] == "InService"));
    let tags: Vec<(String, String, bool)> = g["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["Key"].as_str().unwrap().to_owned(),
                t["Value"].as_str().unwrap().to_owned(),
                t["PropagateAtLaunch"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(
        tags.contains(&("version".into(), "v2".into(), true)),
        "{tags:?}"
    );
    assert!(
        tags.contains(&("color".into(), "green".into(), true)),
        "{tags:?}"
    );

    // The launch template version: image, IMDSv2, tags, and the user-data byte for byte.
    let versions = aws_in(
        &f.moto,
        region,
        &[
            "ec2",
            "describe-launch-template-versions",
            "--launch-template-id",
            &template_id,
        ],
    )["LaunchTemplateVersions"]
        .clone();
    assert_eq!(versions.as_array().unwrap().len(), 1);
    let data = &versions[0]["LaunchTemplateData"];
    assert_eq!(data["ImageId"], ami_v2.as_str());
    assert_eq!(data["InstanceType"], "t3.micro");
    assert_eq!(data["MetadataOptions"]["HttpTokens"], "required");
    let decoded = base64_decode(data["UserData"].as_str().unwrap());
    assert_eq!(
        decoded,
        std::fs::read(&user_data).unwrap(),
        "user-data round trip"
    );
    let instance_tags = data["TagSpecifications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["ResourceType"] == "instance")
        .unwrap()["Tags"]
        .to_string();
    assert!(
        instance_tags.contains(r#"{"Key":"version","Value":"v2"}"#),
        "{instance_tags}"
    );

    // The scaling policies and both alarms.
    let policies = aws_in(
        &f.moto,
        region,
        &[
            "autoscaling",
            "describe-policies",
            "--auto-scaling-group-name",
            "go-auth-green",
        ],
    )["ScalingPolicies"]
        .clone();
    let policy = |name: &str| {
        policies
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["PolicyName"] == name)
            .unwrap_or_else(|| panic!("no policy {name}: {policies}"))
            .clone()
    };
    let up = policy("go-auth-green-cpu-up");
    let down = policy("go-auth-green-cpu-down");
    assert_eq!(up["PolicyType"], "SimpleScaling");
    assert_eq!(up["AdjustmentType"], "ChangeInCapacity");
    assert_eq!(up["ScalingAdjustment"], 1);
    assert_eq!(down["ScalingAdjustment"], -1);
    let alarms = aws_in(
        &f.moto,
        region,
        &[
            "cloudwatch",
            "describe-alarms",
            "--alarm-names",
            "go-auth-green-cpu-high",
            "go-auth-green-cpu-low",
        ],
    )["MetricAlarms"]
        .clone();
    let alarm = |name: &str| {
        alarms
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["AlarmName"] == name)
            .unwrap_or_else(|| panic!("no alarm {name}: {alarms}"))
            .clone()
    };
    let high = alarm("go-auth-green-cpu-high");
    let low = alarm("go-auth-green-cpu-low");
    for (a, threshold, operator, policy) in [
        (&high, 70.0, "GreaterThanOrEqualToThreshold", &up),
        (&low, 10.0, "LessThanOrEqualToThreshold", &down),
    ] {
        assert_eq!(a["Namespace"], "AWS/EC2");
        assert_eq!(a["MetricName"], "CPUUtilization");
        assert_eq!(a["Statistic"], "Average");
        assert_eq!(a["Period"], 300);
        assert_eq!(a["EvaluationPeriods"], 1);
        assert_eq!(a["Threshold"], threshold);
        assert_eq!(a["ComparisonOperator"], operator);
        assert_eq!(a["Dimensions"][0]["Value"], "go-auth-green");
        assert_eq!(a["AlarmActions"], json!([policy["PolicyARN"]]));
    }

    // The state lists green's endpoints: the instances' private addresses.
    let ids: Vec<&str> = instances
        .iter()
        .map(|i| i["InstanceId"].as_str().unwrap())
        .collect();
    let mut describe = vec!["ec2", "describe-instances", "--instance-ids"];
    describe.extend(ids.iter().copied());
    let reservations = aws_in(&f.moto, region, &describe)["Reservations"].clone();
    let mut expected: Vec<String> = reservations
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["Instances"].as_array().unwrap().iter())
        .map(|i| format!("{}:8080", i["PrivateIpAddress"].as_str().unwrap()))
        .collect();
    expected.sort();
    let doc = f.doc();
    let stack = &doc["stacks"]["green"];
    assert_eq!(stack["role"], "standby");
    assert_eq!(stack["driver"], "asg");
    assert_eq!(stack["version"], "v2");
    assert_eq!(stack["endpoints"], json!(expected));
    let regional = &stack["regions"][region];
    assert_eq!(regional["group"], "go-auth-green");
    assert_eq!(regional["launch_template"], template_id.as_str());
    assert_eq!(regional["launch_template_version"], "1");
    assert_eq!(regional["user_data_sha256"], sha256(&user_data).as_str());
    let text = std::fs::read_to_string(f.state()).unwrap();
    assert!(
        !text.contains("write_files"),
        "no user-data body in the state"
    );
    assert!(
        !text.contains(data["UserData"].as_str().unwrap()),
        "no user-data body in the state"
    );

    // A second identical run changes nothing.
    let again = ok_json(&f.run("deploy-standby", &green_args));
    assert_eq!(again["changed"], false, "{again}");
    assert_eq!(again["regions"][0]["changes"], json!([]));
    assert_eq!(again["endpoints"], json!(expected));
    let versions = aws_in(
        &f.moto,
        region,
        &[
            "ec2",
            "describe-launch-template-versions",
            "--launch-template-id",
            &template_id,
        ],
    );
    assert_eq!(
        versions["LaunchTemplateVersions"].as_array().unwrap().len(),
        1
    );
    let journal = f.doc()["journal"].clone();
    assert_eq!(
        journal.as_array().unwrap().last().unwrap()["action"],
        "standby-unchanged"
    );

    // The termination hook: made with the group (the recording proxy puts
    // CreateAutoScalingGroup's hook specifications into moto, as AWS makes
    // them), left alone by the identical run, put again when it differs.
    let hooks = || {
        aws_in(
            &f.moto,
            region,
            &[
                "autoscaling",
                "describe-lifecycle-hooks",
                "--auto-scaling-group-name",
                "go-auth-green",
            ],
        )["LifecycleHooks"]
            .clone()
    };
    let hook = hooks();
    assert_eq!(hook.as_array().unwrap().len(), 1, "{hook}");
    assert_eq!(hook[0]["LifecycleHookName"], "switchyard-drain");
    assert_eq!(
        hook[0]["LifecycleTransition"],
        "autoscaling:EC2_INSTANCE_TERMINATING"
    );
    assert_eq!(hook[0]["HeartbeatTimeout"], 600);
    assert_eq!(hook[0]["DefaultResult"], "CONTINUE");
    let recorder = f.moto.recorder().expect("the recording proxy");
    let hook_calls = |from: usize| -> Vec<String> {
        recorder.calls()[from..]
            .iter()
            .filter(|c| c.user_agent.contains("aws-sdk-rust"))
            .map(|c| c.action.clone())
            .filter(|a| a.contains("LifecycleHook") || a == "CreateAutoScalingGroup")
            .collect()
    };
    let before = recorder.calls().len();
    let again = ok_json(&f.run("deploy-standby", &green_args));
    assert_eq!(again["changed"], false, "{again}");
    assert_eq!(hook_calls(before), ["DescribeLifecycleHooks"]);
    let mut longer = green_args.to_vec();
    longer.extend(["--termination-heartbeat", "15m"]);
    let before = recorder.calls().len();
    let changed = ok_json(&f.run("deploy-standby", &longer));
    assert_eq!(
        changed["regions"][0]["changes"],
        json!(["put termination lifecycle hook switchyard-drain (heartbeat 900s, then CONTINUE) on group go-auth-green (was autoscaling:EC2_INSTANCE_TERMINATING, heartbeat 600s, then CONTINUE)"])
    );
    assert_eq!(
        hook_calls(before),
        ["DescribeLifecycleHooks", "PutLifecycleHook"]
    );
    assert_eq!(hooks()[0]["HeartbeatTimeout"], 900);
    assert_eq!(
        f.doc()["stacks"]["green"]["regions"][region]["termination_hook"],
        "switchyard-drain"
    );
    // Bad heartbeats are exit 2 before any call.
    for (value, shown) in [("29s", "29s"), ("7201s", "7201s"), ("90500ms", "90.500s")] {
        let mut bad = green_args.to_vec();
        bad.extend(["--termination-heartbeat", value]);
        let before = recorder.calls().len();
        let out = f.run("deploy-standby", &bad);
        assert_eq!(out.code, 2, "{value}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains(&format!(
                "--termination-heartbeat {shown} is outside what Auto Scaling takes"
            )),
            "{}",
            out.stderr
        );
        assert_eq!(recorder.calls().len(), before, "no call");
    }

    // Retire refuses before the promotion, and changes nothing.
    let out = f.run(
        "deploy-standby",
        &["retire", "--color", "blue", "--retire-after", "0s"],
    );
    assert_eq!(out.code, 5, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("will not retire blue: no traffic route in the state shows green at 100%"),
        "{}",
        out.stderr
    );
    assert_eq!(group(&f, region, "go-auth-blue")["DesiredCapacity"], 2);

    // The promotion: shift-weight moves all traffic to green in moto's Route53.
    let zone = aws_cli::create_zone(&f.moto, "example.com");
    aws_cli::create_weighted(
        &f.moto,
        &zone,
        "app.example.com",
        &[("blue", 100, "10.0.0.1"), ("green", 0, "10.0.0.2")],
        60,
    );
    let out = f.run(
        "shift-weight",
        &[
            "--zone-id",
            &zone,
            "--record-name",
            "app.example.com",
            "--to",
            "green",
            "--steps",
            "100",
            "--settle",
            "0s",
            "--force",
        ],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let doc = f.doc();
    assert_eq!(doc["stacks"]["green"]["role"], "active");
    assert_eq!(doc["stacks"]["blue"]["role"], "standby");

    // Not yet: green has no verdict since it took the traffic.
    let out = f.run("deploy-standby", &["retire", "--retire-after", "0s"]);
    assert_eq!(out.code, 5, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("no health verdict for green"),
        "{}",
        out.stderr
    );

    // The post-promotion check passed; then --retire-after decides.
    let mut doc = f.doc();
    doc["health"]["green"] = json!({
        "status": "healthy",
        "at": chrono::Utc::now().to_rfc3339(),
        "summary": "2/2 endpoints healthy",
    });
    f.write_doc(&doc);
    // With --no-wait, refused while --retire-after has not passed.
    let out = f.run(
        "deploy-standby",
        &["retire", "--retire-after", "1h", "--no-wait"],
    );
    assert_eq!(out.code, 5, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("--retire-after 1h00m leaves"),
        "{}",
        out.stderr
    );
    // Waiting, but --retire-after ends after --timeout: refused at once.
    let out = f.run("deploy-standby", &["retire", "--retire-after", "1h"]);
    assert_eq!(out.code, 5, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("after this step's --timeout"),
        "{}",
        out.stderr
    );
    let out = f.run(
        "deploy-standby",
        &["retire", "--retire-after", "0s", "--dry-run"],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("scale group go-auth-blue to 0"),
        "{}",
        out.stdout
    );
    assert_eq!(group(&f, region, "go-auth-blue")["DesiredCapacity"], 2);

    let retired = ok_json(&f.run(
        "deploy-standby",
        &["retire", "--retire-after", "0s", "--output", "json"],
    ));
    assert_eq!(retired["color"], "blue");
    assert_eq!(retired["changed"], true);
    let b = group(&f, region, "go-auth-blue");
    assert_eq!(b["DesiredCapacity"], 0);
    assert_eq!(b["MinSize"], 0);
    assert_eq!(b["Instances"], json!([]));
    let doc = f.doc();
    assert_eq!(doc["stacks"]["blue"]["role"], "retired");
    assert_eq!(doc["stacks"]["green"]["role"], "active");
    assert_eq!(group(&f, region, "go-auth-green")["DesiredCapacity"], 2);

    // --strategy rolling through the step: the plan of an in-place update of
    // green (the engine itself is tested in deploy_rolling), and --confirm
    // refused while there is no update to confirm.
    let out = f.run(
        "deploy-standby",
        &[
            "--strategy",
            "rolling",
            "--service",
            "go-auth",
            "--color",
            "green",
            "--release",
            "v3",
            "--image",
            &ami_v1,
            "--batch-size",
            "1",
            "--dry-run",
        ],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("plan of the rolling update of go-auth-green"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("batch 2/2: terminate"),
        "{}",
        out.stdout
    );
    let out = f.run("deploy-standby", &["--confirm", "--group", "go-auth-green"]);
    assert_eq!(out.code, 5, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("has no rolling update to confirm"),
        "{}",
        out.stderr
    );
}

#[test]
fn several_regions_come_up_at_once_with_per_region_state() {
    let f = Fixture::new();
    let east = subnet(&f.moto, "us-east-1");
    let west = subnet(&f.moto, "eu-west-1");
    let (ami, _) = images(&f.moto, "us-east-1");
    let subnets = format!("us-east-1={east},eu-west-1={west}");
    // A target group in us-east-1 only: its ARN's region picks the group it goes with.
    let vpc = first(
        &f.moto,
        "us-east-1",
        &["ec2", "describe-vpcs"],
        "Vpcs[0].VpcId",
    );
    let target_group = first(
        &f.moto,
        "us-east-1",
        &[
            "elbv2",
            "create-target-group",
            "--name",
            "go-auth-blue",
            "--protocol",
            "HTTP",
            "--port",
            "8080",
            "--vpc-id",
            &vpc,
        ],
        "TargetGroups[0].TargetGroupArn",
    );
    let out = f.run(
        "deploy-standby",
        &[
            "--service",
            "go-auth",
            "--release",
            "v1",
            "--image",
            &ami,
            "--desired",
            "1",
            "--region",
            "us-east-1",
            "--region",
            "eu-west-1",
            "--subnet",
            &subnets,
            "--target-group",
            &target_group,
            "--health-check-type",
            "elb",
            "--cpu-target",
            "50",
            "--output",
            "json",
        ],
    );
    let report = ok_json(&out);
    assert_eq!(report["color"], "blue");
    assert_eq!(report["reason"], "no group has instances: first release");
    assert_eq!(report["endpoints"].as_array().unwrap().len(), 2, "{report}");
    let doc = f.doc();
    let stack = &doc["stacks"]["blue"];
    assert_eq!(stack["regions"].as_object().unwrap().len(), 2);
    assert_eq!(stack["endpoints"].as_array().unwrap().len(), 2);
    for region in ["us-east-1", "eu-west-1"] {
        let g = group(&f, region, "go-auth-blue");
        assert_eq!(g["DesiredCapacity"], 1, "{region}");
        assert_eq!(g["Instances"].as_array().unwrap().len(), 1, "{region}");
        assert_eq!(stack["regions"][region]["group"], "go-auth-blue");
        let policies = aws_in(
            &f.moto,
            region,
            &[
                "autoscaling",
                "describe-policies",
                "--auto-scaling-group-name",
                "go-auth-blue",
            ],
        )["ScalingPolicies"]
            .clone();
        assert_eq!(
            policies[0]["PolicyName"], "go-auth-blue-cpu-target",
            "{policies}"
        );
        assert_eq!(policies[0]["PolicyType"], "TargetTrackingScaling");
        assert_eq!(
            policies[0]["TargetTrackingConfiguration"]["TargetValue"],
            50.0
        );
    }

    let east = group(&f, "us-east-1", "go-auth-blue");
    assert_eq!(east["TargetGroupARNs"], json!([target_group]));
    assert_eq!(east["HealthCheckType"], "ELB");
    assert_eq!(
        group(&f, "eu-west-1", "go-auth-blue")["TargetGroupARNs"],
        json!([])
    );
    let health = aws_in(
        &f.moto,
        "us-east-1",
        &[
            "elbv2",
            "describe-target-health",
            "--target-group-arn",
            &target_group,
        ],
    );
    assert_eq!(
        health["TargetHealthDescriptions"][0]["Target"]["Id"],
        east["Instances"][0]["InstanceId"]
    );
    assert_eq!(
        health["TargetHealthDescriptions"][0]["TargetHealth"]["State"],
        "healthy"
    );

    // Without --region, the next deploy uses the regions in the state; a
    // color with traffic in the state is never deployed over.
    let mut doc = f.doc();
    doc["traffic"] = json!({"route53:Z1/app.example.com./A": {
        "router": "route53", "resource": {}, "weights": {"blue": 100, "green": 0},
        "updated_at": chrono::Utc::now().to_rfc3339()}});
    f.write_doc(&doc);
    let out = f.run(
        "deploy-standby",
        &[
            "--color",
            "blue",
            "--release",
            "v2",
            "--image",
            &ami,
            "--subnet",
            &subnets,
        ],
    );
    assert_eq!(out.code, 5, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("blue carries traffic (weight 100"),
        "{}",
        out.stderr
    );
    let out = f.run(
        "deploy-standby",
        &[
            "--color",
            "blue",
            "--release",
            "v2",
            "--image",
            &ami,
            "--dry-run",
        ],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("blocked: blue carries traffic (weight 100 in route route53:Z1/app.example.com./A); deploy-standby never replaces a stack that takes traffic; a real run exits 5"),
        "{}",
        out.stdout
    );

    // A failing pre-deploy-standby hook stops the step before any change;
    // post-deploy-standby sees the stack and its endpoints.
    let hooks = f.hooks();
    f.hook("pre-deploy-standby", "echo change freeze >&2; exit 3");
    let seen = f.path("post.env");
    f.hook(
        "post-deploy-standby",
        &format!(
            "echo \"$SWITCHYARD_STACK $SWITCHYARD_REGIONS $SWITCHYARD_ENDPOINTS\" > '{}'",
            seen.display()
        ),
    );
    let green = ["--release", "v2", "--image", &ami, "--subnet", &subnets];
    let out = f.run_hooks("deploy-standby", &green, Some(&hooks));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("change freeze"), "{}", out.stderr);
    assert!(group(&f, "us-east-1", "go-auth-green").is_null());
    f.hook("pre-deploy-standby", "exit 0");
    let out = f.run_hooks("deploy-standby", &green, Some(&hooks));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let line = std::fs::read_to_string(&seen).unwrap();
    let endpoints = f.doc()["stacks"]["green"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    assert_eq!(endpoints.len(), 2);
    assert_eq!(
        line.trim(),
        format!("green eu-west-1,us-east-1 {}", endpoints.join(","))
    );
    let out = f.run(
        "deploy-standby",
        &[
            "--release",
            "v2",
            "--image",
            &ami,
            "--subnet",
            &subnets,
            "--dry-run",
        ],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("color: green (blue has the larger weight"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("eu-west-1: group go-auth-green"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("us-east-1: group go-auth-green"),
        "{}",
        out.stdout
    );
}

/// `--driver command` through the step: the sample service comes up on
/// loopback as green, verify-health passes it from the state, and after a
/// promotion retire runs `--down` on blue.
#[test]
fn the_command_driver_brings_a_local_stack_up_and_retire_takes_the_old_one_down() {
    let dir = tempfile::tempdir().unwrap();
    let svc = sample_service().display().to_string();
    let state = dir.path().join("state.json");
    let up = format!(
        "set -e; . ./ports-{{color}}.env; for p in $PORT_A $PORT_B; do \
         python3 {svc} --daemon --port $p --version {{version}} \
         --pid-file {{color}}-$p.pid --log-file {{color}}-$p.log; done"
    );
    let down = format!(
        "for f in {{color}}-*.pid; do [ -e \"$f\" ] && python3 {svc} --stop \"$f\"; done; true"
    );
    let endpoints =
        ". ./ports-{color}.env; for p in $PORT_A $PORT_B; do echo http://127.0.0.1:$p; done";
    let mut ports = Vec::new();
    for color in ["blue", "green"] {
        let pair = [
            switchyard_tests::moto::free_port().unwrap(),
            switchyard_tests::moto::free_port().unwrap(),
        ];
        std::fs::write(
            dir.path().join(format!("ports-{color}.env")),
            format!("PORT_A={}\nPORT_B={}\n", pair[0], pair[1]),
        )
        .unwrap();
        ports.push(pair);
    }
    let run_step = |name: &str, args: &[String]| {
        let mut env = with_state(Vec::new(), &state);
        env.push(("SWITCHYARD_NO_HOOKS".to_owned(), "1".to_owned()));
        let mut cmd = step(name, &env);
        cmd.current_dir(dir.path()).args(args);
        run(&mut cmd)
    };
    let templates = [
        "--driver",
        "command",
        "--service",
        "go-auth",
        "--up",
        &up,
        "--down",
        &down,
        "--endpoints",
        endpoints,
    ];
    let with = |extra: &[&'static str]| -> Vec<String> {
        templates
            .iter()
            .chain(extra)
            .map(|a| (*a).to_owned())
            .collect()
    };

    let out = run_step(
        "deploy-standby",
        &with(&["--color", "blue", "--release", "v1"]),
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let mut doc = read_json(&state);
    doc["stacks"]["blue"]["role"] = json!("active");
    std::fs::write(&state, doc.to_string()).unwrap();

    let out = run_step(
        "deploy-standby",
        &with(&["--release", "v2", "--output", "json"]),
    );
    let report = ok_json(&out);
    assert_eq!(report["color"], "green");
    let expected: Vec<String> = ports[1]
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    assert_eq!(report["endpoints"], json!(expected));
    let doc = read_json(&state);
    assert_eq!(doc["stacks"]["green"]["driver"], "command");
    assert_eq!(doc["stacks"]["green"]["role"], "standby");
    assert_eq!(doc["stacks"]["green"]["endpoints"], json!(expected));

    let verify: Vec<String> = ["--stack", "green", "--interval", "50ms", "--attempts", "4"]
        .map(String::from)
        .to_vec();
    let out = run_step("verify-health", &verify);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);

    // Promotion recorded as shift-weight records it; then retire runs --down on blue.
    let mut doc = read_json(&state);
    doc["stacks"]["blue"]["role"] = json!("standby");
    doc["stacks"]["green"]["role"] = json!("active");
    let shifted = chrono::Utc::now() - chrono::TimeDelta::seconds(5);
    doc["traffic"] = json!({"haproxy:local/app": {
        "router": "haproxy", "resource": {}, "weights": {"blue": 0, "green": 100},
        "updated_at": shifted.to_rfc3339()}});
    std::fs::write(&state, doc.to_string()).unwrap();
    let blue = format!("http://127.0.0.1:{}/health", ports[0][0]);
    let answers = |url: &str| {
        std::process::Command::new("curl")
            .args(["-sf", "-m", "2", "-o", "/dev/null", url])
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(answers(&blue), "blue serves before retire");
    let out = run_step("deploy-standby", &with(&["retire", "--retire-after", "1s"]));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("go-auth blue is retired"),
        "{}",
        out.stdout
    );
    assert!(!answers(&blue), "blue is down after retire");
    let doc = read_json(&state);
    assert_eq!(doc["stacks"]["blue"]["role"], "retired");

    // Clean up green's processes.
    let out = run_step(
        "deploy-standby",
        &with(&["retire", "--color", "green", "--retire-after", "0s"]),
    );
    assert_eq!(
        out.code, 5,
        "green takes the traffic: {}{}",
        out.stdout, out.stderr
    );
    let mut stop = std::process::Command::new("sh");
    stop.current_dir(dir.path())
        .args(["-c", &down.replace("{color}", "green")]);
    assert!(stop
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success());
}

/// Kill and resume: deploy-standby killed just after each AWS call of a
/// whole run (the launch template, the group, the policies, the alarms, the
/// waits) and at random, each round a new service from nothing; the retry
/// must converge on exactly what one clean run makes: one template version,
/// one group at the desired capacity with no extra instance, two policies, two
/// alarms, and a state file that validates and lists the endpoints.
#[test]
fn deploy_standby_killed_at_every_call_and_at_random_resumes_to_a_consistent_end() {
    use crate::kill_resume::{campaign, run_and_kill};
    let f = Fixture::new();
    let region = "us-east-1";
    let subnet = subnet(&f.moto, region);
    let (ami, _) = images(&f.moto, region);
    let mut round = 0;
    campaign("deploy-standby", 10, |at| {
        round += 1;
        let service = format!("svc{round}");
        let state = f.path(&format!("state-{round}.json"));
        let args = green_from_nothing(&service, &ami, &subnet);
        let ran = run_and_kill(f.command("deploy-standby", &state, &args, None), &state, at);
        f.moto.wait_idle();
        let out = run(&mut f.command("deploy-standby", &state, &args, None));
        assert_eq!(
            out.code, 0,
            "round {round} ({at:?}): {}{}",
            out.stdout, out.stderr
        );
        assert!(state_validates(&state), "round {round} ({at:?})");

        let context = format!("round {round} ({at:?})");
        assert_green_up(&f, region, &service, &state, &context, 2);
        ran
    });
}

/// The arguments of a green stack of `service` made from nothing: desired 2.
fn green_from_nothing<'a>(service: &'a str, ami: &'a str, subnet: &'a str) -> [&'a str; 16] {
    [
        "--service",
        service,
        "--release",
        "v2",
        "--color",
        "green",
        "--image",
        ami,
        "--desired",
        "2",
        "--subnet",
        subnet,
        "--port",
        "8080",
        "--timeout",
        "60s",
    ]
}

/// Checks that `service`'s green stack is up as one clean run makes it:
/// one template version, one group at desired 2 with `instances` launched
/// for it (2: no extra instance), two policies, two alarms, and the state
/// file `state` listing its endpoints.
fn assert_green_up(
    f: &Fixture,
    region: &str,
    service: &str,
    state: &Path,
    context: &str,
    instances: usize,
) {
    let group_name = format!("{service}-green");
    let g = group(f, region, &group_name);
    assert_eq!(g["DesiredCapacity"], 2, "{context}");
    assert_eq!(
        g["Instances"].as_array().unwrap().len(),
        2,
        "{context}: {g}"
    );
    let template = g["LaunchTemplate"]["LaunchTemplateId"].as_str().unwrap();
    let versions = aws_in(
        &f.moto,
        region,
        &[
            "ec2",
            "describe-launch-template-versions",
            "--launch-template-id",
            template,
        ],
    )["LaunchTemplateVersions"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(versions, 1, "{context}: one template version");
    let tagged = aws_in(
        &f.moto,
        region,
        &[
            "ec2",
            "describe-instances",
            "--filters",
            &format!("Name=tag:aws:autoscaling:groupName,Values={group_name}"),
            "Name=instance-state-name,Values=pending,running",
            "--query",
            "Reservations[].Instances[].InstanceId",
        ],
    );
    assert_eq!(
        tagged.as_array().map_or(0, Vec::len),
        instances,
        "{context}: no extra instance"
    );
    let policies = aws_in(
        &f.moto,
        region,
        &[
            "autoscaling",
            "describe-policies",
            "--auto-scaling-group-name",
            &group_name,
        ],
    )["ScalingPolicies"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(policies, 2, "{context}");
    let alarms = aws_in(
        &f.moto,
        region,
        &[
            "cloudwatch",
            "describe-alarms",
            "--alarm-name-prefix",
            &format!("{group_name}-"),
        ],
    )["MetricAlarms"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(alarms, 2, "{context}");

    let doc = read_json(state);
    let stack = &doc["stacks"]["green"];
    assert_eq!(stack["version"], "v2", "{context}");
    assert_eq!(stack["endpoints"].as_array().unwrap().len(), 2, "{context}");
    assert_eq!(stack["regions"][region]["launch_template_version"], "1");
}

/// Faults: deploy-standby through the fault-injecting proxy, each round a
/// new service from nothing; every run exits 0, or 3 with a state file that
/// validates and then converges when run again.
#[test]
fn deploy_standby_completes_or_stops_cleanly_under_20_percent_injected_faults() {
    use crate::faults::{through, Tally, FAULT_RATE};
    use switchyard_tests::fault_proxy::{FaultProxy, Faults, Outcome};
    let f = Fixture::new();
    let proxy = FaultProxy::start(&f.moto.direct_endpoint(), Faults::spread(FAULT_RATE)).unwrap();
    let region = "us-east-1";
    let subnet = subnet(&f.moto, region);
    let (ami, _) = images(&f.moto, region);
    let mut tally = Tally::default();
    for round in 0..6 {
        let service = format!("faulty{round}");
        let state = f.path(&format!("faults-{round}.json"));
        let args = green_from_nothing(&service, &ami, &subnet);
        let context = format!("round {round}");
        let before = proxy.calls().len();
        tally.until_done(&context, &state, || {
            let mut env = with_state(through(f.moto.env(), &proxy), &state);
            env.push(("SWITCHYARD_NO_HOOKS".into(), "1".into()));
            let mut cmd = step("deploy-standby", &env);
            cmd.args(args);
            run(&mut cmd)
        });
        f.moto.wait_idle();
        // moto accepts a second CreateAutoScalingGroup of the same name (AWS
        // answers AlreadyExists): each one that reached it launched the
        // desired capacity again, beside the group. Those are moto's.
        let creates = proxy.calls()[before..]
            .iter()
            .filter(|c| {
                c.action == "CreateAutoScalingGroup"
                    && matches!(
                        c.outcome,
                        Outcome::Forwarded | Outcome::Slow | Outcome::DroppedAfter
                    )
            })
            .count();
        assert_green_up(&f, region, &service, &state, &context, 2 * creates.max(1));
    }
    tally.report("deploy-standby", &proxy);
}

/// The color's launch template version read back with the aws CLI.
fn latest_version(f: &Fixture, name: &str) -> Value {
    aws_cli::aws(
        &f.moto,
        &[
            "ec2",
            "describe-launch-template-versions",
            "--launch-template-name",
            name,
            "--versions",
            "$Latest",
        ],
    )["LaunchTemplateVersions"][0]
        .clone()
}

/// `--launch-template`: each color's version keeps the platform's base
/// template (instance profile, key pair, security group, block devices,
/// metadata options, monitoring, tags), replacing only the image, user data
/// and switchyard's tags; the direct flags override it; a rerun changes
/// nothing; the printed policy may pass that role and no other.
#[test]
fn a_base_launch_template_s_settings_are_kept_and_the_flags_override_them() {
    let f = Fixture::new();
    let region = "us-east-1";
    let subnet = subnet(&f.moto, region);
    let (ami, _) = images(&f.moto, region);
    let vpc = first(&f.moto, region, &["ec2", "describe-vpcs"], "Vpcs[0].VpcId");
    let sg = |name: &str| {
        aws_cli::aws(
            &f.moto,
            &[
                "ec2",
                "create-security-group",
                "--group-name",
                name,
                "--description",
                name,
                "--vpc-id",
                &vpc,
            ],
        )["GroupId"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (web_sg, other_sg) = (sg("web"), sg("other"));
    let base = json!({
        "IamInstanceProfile": {"Name": "web-host"},
        "KeyName": "ops",
        "SecurityGroupIds": [web_sg],
        "InstanceType": "m5.large",
        "BlockDeviceMappings": [{"DeviceName": "/dev/sdb",
            "Ebs": {"VolumeSize": 50, "VolumeType": "gp3", "Encrypted": true}}],
        "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1},
        "Monitoring": {"Enabled": true},
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": [{"Key": "team", "Value": "identity"}]},
            {"ResourceType": "volume", "Tags": [{"Key": "backup", "Value": "daily"}]}
        ]
    });
    aws_cli::aws(
        &f.moto,
        &[
            "ec2",
            "create-launch-template",
            "--launch-template-name",
            "web-base",
            "--launch-template-data",
            &base.to_string(),
        ],
    );
    let state = f.path("state.json");
    let mut args: Vec<&str> = green_from_nothing("web", &ami, &subnet).to_vec();
    args.extend(["--launch-template", "web-base"]);
    let out = run(&mut f.command("deploy-standby", &state, &args, None));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);

    let v = latest_version(&f, "web-green");
    let data = &v["LaunchTemplateData"];
    assert_eq!(data["ImageId"], ami.as_str(), "{v:#}");
    assert_eq!(data["IamInstanceProfile"]["Name"], "web-host", "{v:#}");
    assert_eq!(data["KeyName"], "ops", "{v:#}");
    assert_eq!(data["SecurityGroupIds"], json!([web_sg]), "{v:#}");
    assert_eq!(data["InstanceType"], "m5.large", "the base's type: {v:#}");
    assert_eq!(
        data["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"], 50,
        "{v:#}"
    );
    assert_eq!(data["MetadataOptions"]["HttpTokens"], "required", "{v:#}");
    assert_eq!(
        data["MetadataOptions"]["HttpPutResponseHopLimit"], 1,
        "the base's metadata options are kept: {v:#}"
    );
    assert_eq!(data["Monitoring"]["Enabled"], true, "{v:#}");
    let tags = |kind: &str| -> BTreeMap<String, String> {
        data["TagSpecifications"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["ResourceType"] == kind)
            .flat_map(|s| s["Tags"].as_array().unwrap().iter())
            .map(|t| {
                (
                    t["Key"].as_str().unwrap().to_owned(),
                    t["Value"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let instance = tags("instance");
    assert_eq!(instance["team"], "identity", "{v:#}");
    assert_eq!(instance["service"], "web", "{v:#}");
    assert_eq!(instance["color"], "green", "{v:#}");
    assert_eq!(tags("volume")["backup"], "daily", "{v:#}");
    let number = v["VersionNumber"].as_i64().unwrap();

    // The same again: nothing to change.
    let out = run(&mut f.command("deploy-standby", &state, &args, None));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(latest_version(&f, "web-green")["VersionNumber"], number);

    // The direct flags, over the base.
    let mut flagged = args.clone();
    flagged.extend([
        "--key-name",
        "break-glass",
        "--security-group",
        &other_sg,
        "--instance-profile",
        "web-host-v2",
        "--root-volume-size",
        "30",
        "--instance-type",
        "c5.large",
    ]);
    let out = run(&mut f.command("deploy-standby", &state, &flagged, None));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let v = latest_version(&f, "web-green");
    let data = &v["LaunchTemplateData"];
    assert_eq!(v["VersionNumber"], number + 1, "{v:#}");
    assert_eq!(data["KeyName"], "break-glass", "{v:#}");
    assert_eq!(data["SecurityGroupIds"], json!([other_sg]), "{v:#}");
    assert_eq!(data["IamInstanceProfile"]["Name"], "web-host-v2", "{v:#}");
    assert_eq!(data["InstanceType"], "c5.large", "{v:#}");
    let root = first(
        &f.moto,
        region,
        &["ec2", "describe-images", "--image-ids", &ami],
        "Images[0].RootDeviceName",
    );
    let devices = data["BlockDeviceMappings"].as_array().unwrap();
    let root_mapping = devices
        .iter()
        .find(|d| d["DeviceName"] == root.as_str())
        .unwrap_or_else(|| panic!("a mapping for the root device {root}: {v:#}"));
    assert_eq!(root_mapping["Ebs"]["VolumeSize"], 30, "{v:#}");
    assert!(
        devices.iter().any(|d| d["DeviceName"] == "/dev/sdb"),
        "{v:#}"
    );

    // The policy may pass the profile's role, and only that one.
    let mut cmd = f.command("deploy-standby", &state, &flagged, None);
    cmd.arg("--print-iam-policy");
    let out = run(&mut cmd);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let policy: Value = serde_json::from_str(&out.stdout).unwrap();
    let pass: Vec<&Value> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["Action"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == "iam:PassRole")
        })
        .collect();
    assert_eq!(pass.len(), 1, "{policy:#}");
    assert_eq!(
        pass[0]["Resource"],
        json!(["arn:aws:iam::*:role/web-host-v2"]),
        "{policy:#}"
    );
}

/// `verify-health --via target-health`: a stack judged by its target
/// groups as the load balancer sees them, found from the state (the stack's
/// Auto Scaling group, its target groups, its instances), probing nothing;
/// the verdict names the evidence. A target group without the stack's
/// instances is unhealthy evidence (exit 1).
#[test]
fn verify_health_judges_a_stack_by_its_target_groups() {
    let f = Fixture::new();
    let region = "us-east-1";
    let subnet = subnet(&f.moto, region);
    let (ami, _) = images(&f.moto, region);
    let vpc = first(&f.moto, region, &["ec2", "describe-vpcs"], "Vpcs[0].VpcId");
    let green_tg = aws_cli::create_target_group(&f.moto, "web-green", &vpc, &[]);
    let empty_tg = aws_cli::create_target_group(&f.moto, "web-empty", &vpc, &[]);
    let state = f.path("state.json");
    let mut args: Vec<&str> = green_from_nothing("web", &ami, &subnet).to_vec();
    args.extend(["--target-group", &green_tg]);
    let out = run(&mut f.command("deploy-standby", &state, &args, None));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);

    let verify = |extra: &[&str]| {
        let mut a = vec![
            "--stack",
            "green",
            "--via",
            "target-health",
            "--output",
            "json",
        ];
        a.extend(["--interval", "100ms", "--attempts", "3"]);
        a.extend(extra);
        run(&mut f.command("verify-health", &state, &a, None))
    };
    let out = verify(&[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let report = ok_json(&out);
    assert_eq!(report["verdict"], "healthy", "{report:#}");
    assert!(report.get("probes").is_none(), "nothing probed: {report:#}");
    let targets = report["targets"]["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "the stack's two instances: {report:#}");
    assert!(
        report["summary"]
            .as_str()
            .unwrap()
            .starts_with("2/2 targets healthy in 1 target group(s)"),
        "{report:#}"
    );
    let doc = read_json(&state);
    assert_eq!(doc["health"]["green"]["status"], "healthy", "{doc:#}");
    assert!(
        doc["health"]["green"]["endpoints"][0]["url"]
            .as_str()
            .unwrap()
            .starts_with("target:i-"),
        "{doc:#}"
    );

    let out = verify(&["--target-group", &empty_tg]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("no target of the stack in 1 target group(s)"),
        "{}",
        out.stdout
    );

    let out = verify(&["--url", "http://127.0.0.1:9/"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("probes nothing"), "{}", out.stderr);
}

/// `--via load-balancer` against moto's ELBv2: an ALB whose listener on
/// port P sends blue by default and `green.example.com` to green (a rule),
/// and a test listener on port Q sending green; loopback servers on P (200
/// only for Host green.example.com) and Q stand for the load balancer, which
/// `--resolve` aims the ALB's DNS name at. The route is found from the
/// stack's Auto Scaling group's target group; two routes need
/// `--listener-port`; a broken green exits 1; weighted forwards that also
/// send blue leave no route: exit 2.
#[test]
fn verify_health_probes_a_stack_through_its_load_balancer_route() {
    use switchyard_tests::health_server::{Behaviour, HealthServer};

    let f = Fixture::new();
    let region = "us-east-1";
    let (ami, _) = images(&f.moto, region);
    let vpc = first(&f.moto, region, &["ec2", "describe-vpcs"], "Vpcs[0].VpcId");
    let subnets = aws_in(
        &f.moto,
        region,
        &[
            "ec2",
            "describe-subnets",
            "--filters",
            &format!("Name=vpc-id,Values={vpc}"),
        ],
    )["Subnets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["SubnetId"].as_str().unwrap().to_owned())
        .take(2)
        .collect::<Vec<_>>();
    let blue_tg = aws_cli::create_target_group(&f.moto, "web-blue", &vpc, &[]);
    let green_tg = aws_cli::create_target_group(&f.moto, "web-green", &vpc, &[]);
    let state = f.path("state.json");
    let mut args: Vec<&str> = green_from_nothing("web", &ami, &subnets[0]).to_vec();
    args.extend(["--target-group", &green_tg]);
    let out = run(&mut f.command("deploy-standby", &state, &args, None));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);

    let by_host = HealthServer::with(Behaviour {
        host: Some("green.example.com".into()),
        ..Behaviour::default()
    })
    .unwrap();
    let test_port = HealthServer::start(None, None).unwrap();
    let (p, q) = (by_host.addr().port(), test_port.addr().port());
    let mut create = vec![
        "elbv2",
        "create-load-balancer",
        "--name",
        "web",
        "--subnets",
    ];
    create.extend(subnets.iter().map(String::as_str));
    let lb = aws_in(&f.moto, region, &create)["LoadBalancers"][0].clone();
    let (lb_arn, dns) = (
        lb["LoadBalancerArn"].as_str().unwrap().to_owned(),
        lb["DNSName"].as_str().unwrap().to_owned(),
    );
    let forward = |arn: &str| format!("Type=forward,TargetGroupArn={arn}");
    let listener = |port: u16, default: &str| {
        aws_in(
            &f.moto,
            region,
            &[
                "elbv2",
                "create-listener",
                "--load-balancer-arn",
                &lb_arn,
                "--protocol",
                "HTTP",
                "--port",
                &port.to_string(),
                "--default-actions",
                default,
            ],
        )["Listeners"][0]["ListenerArn"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let main = listener(p, &forward(&blue_tg));
    let test = listener(q, &forward(&green_tg));
    let rule = aws_in(
        &f.moto,
        region,
        &[
            "elbv2",
            "create-rule",
            "--listener-arn",
            &main,
            "--priority",
            "10",
            "--conditions",
            r#"[{"Field":"host-header","HostHeaderConfig":{"Values":["green.example.com"]}}]"#,
            "--actions",
            &forward(&green_tg),
        ],
    )["Rules"][0]["RuleArn"]
        .as_str()
        .unwrap()
        .to_owned();

    let resolve = [
        format!("{dns}:{p}:127.0.0.1"),
        format!("{dns}:{q}:127.0.0.1"),
    ];
    let verify = |extra: &[&str]| {
        let mut a = vec!["--stack", "green", "--via", "load-balancer"];
        a.extend(["--resolve", &resolve[0], "--resolve", &resolve[1]]);
        a.extend(["--interval", "100ms", "--attempts", "5", "--output", "json"]);
        a.extend(extra);
        run(&mut f.command("verify-health", &state, &a, None))
    };
    // Two routes reach green: the listener port picks one.
    let out = verify(&[]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "several listeners reach the target group(s) web-green: web:{p} HTTP rule 10 (Host green.example.com); web:{q} HTTP default action; pick one with --listener-port"
        )),
        "{}",
        out.stderr
    );
    let port = p.to_string();
    let out = verify(&["--listener-port", &port]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let report = ok_json(&out);
    assert_eq!(report["verdict"], "healthy", "{report:#}");
    assert_eq!(report["via"], "load-balancer", "{report:#}");
    assert_eq!(report["route"]["host_header"], "green.example.com");
    assert_eq!(report["route"]["rule"], rule.as_str());
    assert_eq!(
        report["probes"]["endpoints"][0]["url"],
        format!("http://{dns}:{p}/health"),
        "{report:#}"
    );
    assert!(by_host.served() >= 2, "the probes went through port {p}");
    let doc = read_json(&state);
    let verdict = &doc["health"]["green"];
    assert_eq!(verdict["status"], "healthy", "{doc:#}");
    assert_eq!(verdict["via"], "load-balancer", "{doc:#}");
    assert_eq!(verdict["route"]["load_balancer"], "web", "{doc:#}");
    assert_eq!(verdict["route"]["port"], p, "{doc:#}");
    assert_eq!(verdict["route"]["listener"], main.as_str(), "{doc:#}");
    assert_eq!(verdict["route"]["dns_name"], dns.as_str(), "{doc:#}");
    state_validates(&state);

    // The test listener: its default action, no Host header of its own.
    let port = q.to_string();
    let out = verify(&["--listener-port", &port]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let report = ok_json(&out);
    assert!(report["route"].get("rule").is_none(), "{report:#}");
    assert!(report["route"].get("host_header").is_none(), "{report:#}");
    assert!(test_port.served() >= 2);

    // A dry run reads the routes and says which it would probe.
    let port = p.to_string();
    let out = verify(&["--listener-port", &port, "--dry-run"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "would probe through web:{p} HTTP rule 10 (Host green.example.com)"
        )) && out.stdout.contains(&format!("http://{dns}:{p}/health")),
        "{}",
        out.stdout
    );

    // Green broken behind its host: unhealthy, exit 1.
    by_host.set_healthy(false);
    let out = verify(&["--listener-port", &port]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let doc = read_json(&state);
    assert_eq!(doc["health"]["green"]["status"], "unhealthy", "{doc:#}");
    assert_eq!(doc["health"]["green"]["via"], "load-balancer", "{doc:#}");

    // Every way in also sends blue: no route, exit 2, before any probe.
    let weighted = format!(
        r#"[{{"Type":"forward","ForwardConfig":{{"TargetGroups":[{{"TargetGroupArn":"{blue_tg}","Weight":50}},{{"TargetGroupArn":"{green_tg}","Weight":50}}]}}}}]"#
    );
    aws_in(
        &f.moto,
        region,
        &[
            "elbv2",
            "modify-rule",
            "--rule-arn",
            &rule,
            "--actions",
            &weighted,
        ],
    );
    aws_in(
        &f.moto,
        region,
        &[
            "elbv2",
            "modify-listener",
            "--listener-arn",
            &test,
            "--default-actions",
            &weighted,
        ],
    );
    let served = (by_host.served(), test_port.served());
    let out = verify(&[]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    for part in [
        "no route into load balancer(s) web reaches only the target group(s) web-green".to_owned(),
        format!("web:{p} rule 10: forwards to web-blue (weight 50), web-green (weight 50)"),
        format!("web:{q} default action: forwards to web-blue (weight 50), web-green (weight 50)"),
        "or use --via target-health".to_owned(),
    ] {
        assert!(out.stderr.contains(&part), "{part:?} in {}", out.stderr);
    }
    assert_eq!(
        (by_host.served(), test_port.served()),
        served,
        "nothing probed"
    );
}

/// The version numbers of launch template `name`, as the aws CLI lists them, ascending.
fn template_versions(f: &Fixture, region: &str, name: &str) -> Vec<i64> {
    let mut versions: Vec<i64> = aws_in(
        &f.moto,
        region,
        &[
            "ec2",
            "describe-launch-template-versions",
            "--launch-template-name",
            name,
        ],
    )["LaunchTemplateVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["VersionNumber"].as_i64().unwrap())
        .collect();
    versions.sort_unstable();
    versions
}

/// moto does not implement DeleteLaunchTemplateVersions (it answers 500):
/// the deletion itself, a refusal and what is journaled are tested with the
/// SDK mocked (`stack::asg::tests::keep_versions_*`); here, against moto, which
/// versions a deploy would delete, that a dry run deletes nothing, `all`
/// and the refusal of 0.
#[test]
fn keep_versions_lists_the_old_launch_template_versions_a_deploy_would_delete() {
    let f = Fixture::new();
    let region = "us-east-1";
    let subnet = subnet(&f.moto, region);
    let (ami, _) = images(&f.moto, region);
    let deploy = |release: &str, keep: &str, extra: &[&str]| {
        let mut args = vec![
            "--service",
            "go-auth",
            "--release",
            release,
            "--color",
            "green",
            "--image",
            &ami,
            "--desired",
            "1",
            "--subnet",
            &subnet,
            "--keep-versions",
            keep,
        ];
        args.extend_from_slice(extra);
        f.run("deploy-standby", &args)
    };
    for n in 1..=5 {
        let out = deploy(&format!("v{n}"), "all", &["--output", "json"]);
        ok_json(&out);
        assert!(
            !out.stdout.contains("delete launch template"),
            "{}",
            out.stdout
        );
    }
    let all: Vec<i64> = (1..=5).collect();
    assert_eq!(template_versions(&f, region, "go-auth-green"), all);
    let state = std::fs::read(f.state()).unwrap();
    // The sixth deploy would write version 6 and keep 6, 5 (what moto says
    // the group's instance runs: the default version) and 4.
    let out = deploy("v6", "3", &["--dry-run"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("delete launch template go-auth-green version(s) 3, 2, 1 (beyond the newest 3, none in use)"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(template_versions(&f, region, "go-auth-green"), all);
    assert_eq!(
        std::fs::read(f.state()).unwrap(),
        state,
        "a dry run writes no state"
    );
    // 0 is refused before any call.
    let out = deploy("v6", "0", &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("keep 1 or more"), "{}", out.stderr);
    assert_eq!(template_versions(&f, region, "go-auth-green"), all);
}
