use super::*;
use crate::cli::deploy_standby::Command as Sub;

fn parse(extra: &[&str]) -> Result<DeployStandbyArgs, String> {
    let mut line = vec!["deploy-standby"];
    line.extend_from_slice(extra);
    DeployStandbyArgs::try_parse_line(line).map_err(|e| e.kind().to_string())
}

fn check(extra: &[&str]) -> Result<Settings, String> {
    settings(parse(extra)?).map_err(|f| format!("{}: {}", f.code.number(), f.error))
}

#[test]
fn region_repeats_and_splits_on_commas() {
    let args = parse(&["--region", "us-east-1", "--region", "eu-west-1,us-east-1"]).unwrap();
    assert_eq!(args.regions, ["us-east-1", "eu-west-1"]);
    let args = parse(&["retire", "--region", "us-west-2"]).unwrap();
    assert_eq!(args.regions, ["us-west-2"]);
    assert!(matches!(args.command, Some(Sub::Retire { .. })));
}

#[test]
fn bad_input_is_refused_with_exit_2() {
    assert_eq!(
        check(&["--region", "nowhere"]).unwrap_err(),
        "2: --region \"nowhere\" is not a region name (e.g. us-east-1)"
    );
    assert_eq!(
        check(&["--region", "us-east-1", "--region", "eu-west-1", "--subnet", "subnet-1"]).unwrap_err(),
        "2: with several regions, give each subnet as REGION=SUBNET: subnet ids belong to one region"
    );
    assert_eq!(
        check(&["--scale-up-cpu", "10", "--scale-down-cpu", "20"]).unwrap_err(),
        "2: --scale-down-cpu 20 must be below --scale-up-cpu 10, both within 0-100"
    );
    assert_eq!(
        check(&["--scale-period", "45s"]).unwrap_err(),
        "2: --scale-period 45s: CloudWatch takes 10s, 30s or a multiple of 60s"
    );
    // The same check as register-host's (TargetGroupArn::parse), which names the shape.
    assert!(check(&["--target-group", "arn:aws:s3:::bucket"])
        .unwrap_err()
        .starts_with("2: --target-group \"arn:aws:s3:::bucket\" is not a target group ARN"));
    assert_eq!(
        check(&["--group-pattern", "{service}"]).unwrap_err(),
        "2: --group-pattern must contain {color}, or both colors would share one group"
    );
    assert_eq!(
        check(&["--image", "img-1"]).unwrap_err(),
        "2: --image \"img-1\" is not an AMI id (ami-...)"
    );
    assert!(check(&["--user-data", "/nonexistent/user-data"])
        .unwrap_err()
        .starts_with("2: --user-data /nonexistent/user-data: cannot read it"));
    assert!(parse(&["--cpu-target", "50", "--no-scaling"]).is_err());
    assert!(parse(&["--color", "red"]).is_err());
    assert!(parse(&["--confirm", "--rollback"]).is_err());
}

#[test]
fn good_input_becomes_settings() {
    let s = check(&[
        "--region",
        "us-east-1",
        "--region",
        "eu-west-1",
        "--subnet",
        "us-east-1=subnet-a,eu-west-1=subnet-b",
        "--target-group",
        "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123",
        "--cpu-target",
        "50",
    ])
    .unwrap();
    assert_eq!(s.subnets[&Some("eu-west-1".to_owned())], ["subnet-b"]);
    assert_eq!(s.target_groups["eu-west-1"].len(), 1);
    assert_eq!(s.asg.scaling, Scaling::CpuTarget(50.0));
    let s = check(&[]).unwrap();
    assert_eq!(s.asg.scaling, Scaling::Alarms(AlarmScaling::default()));
    assert_eq!(s.asg.health_check_type.api(), "EC2");
}

#[test]
fn the_release_flag_is_a_hidden_alias_of_app_version() {
    let args = parse(&["--release", "1.4.2"]).unwrap();
    assert_eq!(args.up.app_version.as_deref(), Some("1.4.2"));
    let args = parse(&["--app-version", "1.4.3"]).unwrap();
    assert_eq!(args.up.app_version.as_deref(), Some("1.4.3"));
}
