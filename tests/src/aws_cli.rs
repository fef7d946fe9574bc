//! The real aws CLI (`pip install awscli`), pointed at a test's moto server:
//! the integration tests set up fixtures and cross-check what a step did with
//! it, and the benchmarks time it.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::Moto;

/// Runs `aws <args> --output json` with a clean environment plus `env` (a
/// [`Moto::env`]) and returns its JSON output (null when it prints nothing).
pub fn call(env: &[(String, String)], args: &[&str]) -> anyhow::Result<Value> {
    let out = Command::new("aws")
        .args(args)
        .args(["--output", "json"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .context("cannot run the aws CLI (pip install awscli)")?;
    if !out.status.success() {
        bail!(
            "aws {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("aws {args:?} printed no JSON"))
}

/// Runs `aws <args>` against `moto` and returns its JSON output; panics when it fails.
pub fn aws(moto: &Moto, args: &[&str]) -> Value {
    call(&moto.env(), args).unwrap_or_else(|e| panic!("{e:#}"))
}

/// [`aws`] with `--region region`.
pub fn aws_in(moto: &Moto, region: &str, args: &[&str]) -> Value {
    let mut all = vec!["--region", region];
    all.extend_from_slice(args);
    aws(moto, &all)
}

/// Creates a hosted zone and returns its id (without `/hostedzone/`).
pub fn create_zone(moto: &Moto, name: &str) -> String {
    let reference = format!("{name}-{}", std::process::id());
    let out = aws(
        moto,
        &[
            "route53",
            "create-hosted-zone",
            "--name",
            name,
            "--caller-reference",
            &reference,
        ],
    );
    out["HostedZone"]["Id"]
        .as_str()
        .expect("a zone id")
        .trim_start_matches("/hostedzone/")
        .to_owned()
}

/// Submits one change batch.
pub fn change(moto: &Moto, zone: &str, changes: &Value) {
    let batch = json!({ "Changes": changes }).to_string();
    aws(
        moto,
        &[
            "route53",
            "change-resource-record-sets",
            "--hosted-zone-id",
            zone,
            "--change-batch",
            &batch,
        ],
    );
}

/// Creates a weighted A group `name` with (set id, weight, address) members.
pub fn create_weighted(
    moto: &Moto,
    zone: &str,
    name: &str,
    members: &[(&str, u32, &str)],
    ttl: u32,
) {
    let changes: Vec<Value> = members
        .iter()
        .map(|(id, weight, ip)| {
            json!({"Action": "CREATE", "ResourceRecordSet": {
                "Name": name, "Type": "A", "SetIdentifier": id, "Weight": weight, "TTL": ttl,
                "ResourceRecords": [{"Value": ip}]}})
        })
        .collect();
    change(moto, zone, &Value::Array(changes));
}

/// Every record set of the zone, as `list-resource-record-sets` shows it.
pub fn records(moto: &Moto, zone: &str) -> Vec<Value> {
    let out = aws(
        moto,
        &[
            "route53",
            "list-resource-record-sets",
            "--hosted-zone-id",
            zone,
        ],
    );
    out["ResourceRecordSets"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The weights of group `name`, as the aws CLI sees them.
pub fn weights(moto: &Moto, zone: &str, name: &str) -> BTreeMap<String, u64> {
    let fqdn = format!("{}.", name.trim_end_matches('.'));
    records(moto, zone)
        .iter()
        .filter(|r| r["Name"] == fqdn.as_str() && r["Type"] == "A")
        .map(|r| {
            (
                r["SetIdentifier"].as_str().unwrap_or_default().to_owned(),
                r["Weight"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect()
}

/// Whether a lease TXT record exists for `name`.
pub fn lock_exists(moto: &Moto, zone: &str, name: &str) -> bool {
    let lock = format!("_switchyard-lock.{}.", name.trim_end_matches('.'));
    records(moto, zone)
        .iter()
        .any(|r| r["Name"] == lock.as_str())
}

/// `[("blue", 100), ...]` as a map, for comparisons.
pub fn w(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// Creates a VPC (10.0.0.0/16) and returns its id.
pub fn create_vpc(moto: &Moto) -> String {
    aws(moto, &["ec2", "create-vpc", "--cidr-block", "10.0.0.0/16"])["Vpc"]["VpcId"]
        .as_str()
        .expect("a VPC id")
        .to_owned()
}

/// Creates an HTTP target group `name` on port 80 in `vpc`, with `extra`
/// arguments, and returns its ARN.
pub fn create_target_group(moto: &Moto, name: &str, vpc: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "elbv2",
        "create-target-group",
        "--name",
        name,
        "--protocol",
        "HTTP",
        "--port",
        "80",
        "--vpc-id",
        vpc,
    ];
    args.extend_from_slice(extra);
    aws(moto, &args)["TargetGroups"][0]["TargetGroupArn"]
        .as_str()
        .expect("a target group ARN")
        .to_owned()
}

/// A launch template `name` on `image` and an Auto Scaling group `name`
/// launching from its version `version` (a number, or `$Latest`), with
/// `desired` instances and room for `max`, in us-east-1a.
pub fn create_group(
    moto: &Moto,
    name: &str,
    image: &str,
    version: &str,
    (desired, max): (u32, u32),
) {
    let data = format!(r#"{{"ImageId":"{image}","InstanceType":"t3.micro"}}"#);
    aws(
        moto,
        &[
            "ec2",
            "create-launch-template",
            "--launch-template-name",
            name,
            "--launch-template-data",
            &data,
        ],
    );
    aws(
        moto,
        &[
            "autoscaling",
            "create-auto-scaling-group",
            "--auto-scaling-group-name",
            name,
            "--launch-template",
            &format!("LaunchTemplateName={name},Version={version}"),
            "--min-size",
            "0",
            "--max-size",
            &max.to_string(),
            "--desired-capacity",
            &desired.to_string(),
            "--availability-zones",
            "us-east-1a",
        ],
    );
}

/// Auto Scaling group `name` in `region`, as the aws CLI sees it (null when there is none).
pub fn auto_scaling_group(moto: &Moto, region: &str, name: &str) -> Value {
    aws_in(
        moto,
        region,
        &[
            "autoscaling",
            "describe-auto-scaling-groups",
            "--auto-scaling-group-names",
            name,
        ],
    )["AutoScalingGroups"][0]
        .clone()
}

/// The instances `ec2 describe-instances <args>` lists, out of their reservations.
pub fn instances(moto: &Moto, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["ec2", "describe-instances"];
    all.extend_from_slice(args);
    aws(moto, &all)["Reservations"]
        .as_array()
        .expect("reservations")
        .iter()
        .flat_map(|r| r["Instances"].as_array().expect("instances").clone())
        .collect()
}

/// The `Tags` of a resource (`[{"Key": .., "Value": ..}]`) as a map.
pub fn tags(resource: &Value) -> BTreeMap<String, String> {
    resource["Tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["Key"].as_str().unwrap_or_default().to_owned(),
                t["Value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}
