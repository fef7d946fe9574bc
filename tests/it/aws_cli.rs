//! The real aws CLI, pointed at a test's moto server: sets up fixtures and
//! cross-checks what a step did.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{json, Value};
use switchyard_tests::Moto;

/// Runs `aws <args>` against `moto` and returns its JSON output.
pub fn aws(moto: &Moto, args: &[&str]) -> Value {
    let out = Command::new("aws")
        .args(args)
        .args(["--output", "json"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .envs(moto.env())
        .output()
        .expect("the aws CLI runs (pip install awscli)");
    assert!(
        out.status.success(),
        "aws {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(&out.stdout).expect("the aws CLI prints JSON")
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
