//! Regional routing against moto's server: `switchyard route plan/apply` run
//! as a process, cross-checked with the aws CLI; then shift-weight draining a
//! region of the applied weighted group.

use serde_json::{json, Value};
use switchyard_tests::aws_cli::{self, w};
use switchyard_tests::steps::{run, step};
use switchyard_tests::HealthServer;

use crate::fixture::{journal_actions, World, FAST_GATE};

/// Writes `spec` (with `ZONE` replaced by the zone id) in the world's temp
/// dir and returns its path.
fn write_spec(world: &World, spec: &Value) -> String {
    let path = world.path("routes.json");
    let text = spec.to_string().replace("ZONE", &world.zone);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn check(host: &str) -> Value {
    json!({"type": "http", "host": host, "port": 8080, "path": "/health", "interval": 10, "threshold": 2})
}

fn alias(lb: &str, zone: &str) -> Value {
    json!({"dns_name": lb, "hosted_zone_id": zone, "evaluate_target_health": true})
}

/// Weighted (aliases to two regions' load balancers), latency and
/// geolocation groups in one spec, every member health-checked.
fn mixed_spec() -> Value {
    json!({"groups": [
        {"zone_id": "ZONE", "name": "api.example.com", "type": "A", "members": [
            {"set_identifier": "us-east", "weight": 50,
             "alias": alias("api-use1-111.us-east-1.elb.amazonaws.com", "Z35SXDOTRQ7X7K"),
             "health_check": check("52.94.236.11")},
            {"set_identifier": "us-west", "weight": 50,
             "alias": alias("api-usw2-222.us-west-2.elb.amazonaws.com", "Z1H1FL5HABSF5"),
             "health_check": check("52.94.236.12")}]},
        {"zone_id": "ZONE", "name": "lat.example.com", "type": "A", "ttl": 30, "members": [
            {"set_identifier": "eu", "region": "eu-west-1", "values": ["198.51.100.3"],
             "health_check": check("52.94.236.13")},
            {"set_identifier": "ap", "region": "ap-southeast-2", "values": ["198.51.100.4"],
             "health_check": {"type": "tcp", "host": "52.94.236.14", "port": 443}}]},
        {"zone_id": "ZONE", "name": "geo.example.com", "type": "CNAME", "ttl": 300, "members": [
            {"set_identifier": "europe", "geo": {"continent": "EU"}, "values": ["eu.other-cloud.example.net"],
             "health_check": {"type": "https", "host": "eu.other-cloud.example.net", "path": "/status"}},
            {"set_identifier": "california", "geo": {"country": "US", "subdivision": "CA"}, "values": ["lat.example.com"],
             "health_check": {"type": "https", "host": "us-west.example.com"}},
            {"set_identifier": "default", "geo": {"country": "*"}, "values": ["lat.example.com"],
             "health_check": {"type": "https", "host": "api.example.com"}}]}
    ]})
}

#[test]
fn a_spec_mixing_weighted_latency_and_geolocation_groups_converts_a_simple_record_in_one_batch_and_applies_once(
) {
    let world = World::new();
    // api.example.com starts as a simple record: the apply converts it.
    aws_cli::change(
        &world.moto,
        &world.zone,
        &json!([{"Action": "CREATE", "ResourceRecordSet": {"Name": "api.example.com", "Type": "A", "TTL": 300,
            "ResourceRecords": [{"Value": "198.51.100.9"}]}}]),
    );
    let spec = write_spec(&world, &mixed_spec());

    // The plan lists every change in order and changes nothing.
    let plan = world.switchyard(&["route", "plan", "--spec", &spec]);
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    let lines: Vec<&str> = plan.stdout.lines().collect();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("would create health check"))
            .count(),
        7,
        "{}",
        plan.stdout
    );
    let api = lines
        .iter()
        .position(|l| l.contains("/api.example.com./A (weighted):"))
        .unwrap();
    assert!(
        lines[api + 1].starts_with("  DELETE simple record (simple, 198.51.100.9 TTL 300"),
        "{}",
        plan.stdout
    );
    assert!(
        lines[api + 2].starts_with(
            "  CREATE us-east: weight 50, alias api-use1-111.us-east-1.elb.amazonaws.com."
        ),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains(&format!(
            "zone {}: would submit one ChangeResourceRecordSets batch of 8 change(s)",
            world.zone
        )),
        "{}",
        plan.stdout
    );
    assert_eq!(
        world.records("api.example.com").len(),
        1,
        "the plan changed nothing"
    );
    assert!(
        world.health_check_ids().is_empty(),
        "the plan created no health check"
    );
    assert!(!world.state().exists(), "the plan wrote no state");
    let json = world.switchyard(&[
        "route",
        "apply",
        "--dry-run",
        "--output",
        "json",
        "--spec",
        &spec,
    ]);
    assert_eq!(json.code, 0, "{}{}", json.stdout, json.stderr);
    let json: Value = serde_json::from_str(json.stdout.trim()).unwrap();
    assert_eq!(
        (json["ok"].clone(), json["dry_run"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(json["groups"][0]["changes"][0]["action"], "DELETE");
    assert_eq!(json["groups"][0]["changes"][0]["reason"], "conversion");
    assert_eq!(json["batches"][0]["changes"], 8);
    assert_eq!(
        world.records("api.example.com").len(),
        1,
        "--dry-run changed nothing"
    );

    let out = world.switchyard(&["route", "apply", "--spec", &spec]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "zone {}: submitted one ChangeResourceRecordSets batch of 8 change(s)",
            world.zone
        )),
        "{}",
        out.stdout
    );

    // Every record carries its own health check, as the aws CLI sees it.
    let checks = world.health_check_ids();
    assert_eq!(checks.len(), 7);
    let mut used = Vec::new();
    for (name, members) in [
        ("api.example.com", vec!["us-east", "us-west"]),
        ("lat.example.com", vec!["eu", "ap"]),
        ("geo.example.com", vec!["europe", "california", "default"]),
    ] {
        let records = world.records(name);
        let mut ids: Vec<&str> = records
            .iter()
            .map(|r| r["SetIdentifier"].as_str().expect("no simple record left"))
            .collect();
        ids.sort_unstable();
        let mut expected = members.clone();
        expected.sort_unstable();
        assert_eq!(ids, expected, "{name}");
        for r in &records {
            let id = r["HealthCheckId"]
                .as_str()
                .unwrap_or_else(|| panic!("{r} has no health check"));
            assert!(
                checks.contains(&id.to_owned()),
                "{id} is not a health check"
            );
            used.push(id.to_owned());
        }
    }
    used.sort();
    used.dedup();
    assert_eq!(used.len(), 7, "each member has its own check");
    let api = world.records("api.example.com");
    let east = api
        .iter()
        .find(|r| r["SetIdentifier"] == "us-east")
        .unwrap();
    assert_eq!(east["Weight"], 50);
    assert_eq!(east["AliasTarget"]["HostedZoneId"], "Z35SXDOTRQ7X7K");
    assert_eq!(east["AliasTarget"]["EvaluateTargetHealth"], true);
    let lat = world.records("lat.example.com");
    assert_eq!(
        lat.iter().find(|r| r["SetIdentifier"] == "eu").unwrap()["Region"],
        "eu-west-1"
    );
    let geo = world.records("geo.example.com");
    assert_eq!(
        geo.iter()
            .find(|r| r["SetIdentifier"] == "default")
            .unwrap()["GeoLocation"],
        json!({"CountryCode": "*"})
    );
    assert_eq!(
        geo.iter()
            .find(|r| r["SetIdentifier"] == "california")
            .unwrap()["GeoLocation"],
        json!({"CountryCode": "US", "SubdivisionCode": "CA"})
    );

    // The conversion is one journaled batch: DELETE of the simple record first.
    let doc = world.doc();
    let applied: Vec<&Value> = doc["journal"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "routes-applied")
        .collect();
    assert_eq!(applied.len(), 1, "one batch");
    let changes = applied[0]["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 8);
    assert!(
        changes[0]["resource"]
            .as_str()
            .unwrap()
            .ends_with("/api.example.com./A (simple)"),
        "{}",
        changes[0]
    );
    assert!(
        changes[0]["after"].is_null()
            && changes[0]["before"]
                .as_str()
                .unwrap()
                .contains("198.51.100.9")
    );
    let reference = changes[0]["reference"].as_str().unwrap();
    assert!(
        changes.iter().all(|c| c["reference"] == reference),
        "all in one change"
    );
    let route = &doc["traffic"][format!("route53:{}/api.example.com./A", world.zone)];
    assert_eq!(route["weights"], json!({"us-east": 50, "us-west": 50}));
    assert_eq!(route["policy"], "weighted");
    assert_eq!(
        doc["traffic"][format!("route53:{}/geo.example.com./CNAME", world.zone)]["policy"],
        "geolocation"
    );
    let validate = world.switchyard(&["state", "validate"]);
    assert_eq!(validate.code, 0, "{}{}", validate.stdout, validate.stderr);

    // Applied again: nothing created, no batch submitted, nothing journaled.
    let before = world.doc()["journal"].as_array().unwrap().len();
    let again = world.switchyard(&["route", "apply", "--spec", &spec]);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert!(
        again
            .stdout
            .contains("no change: every group is as the spec declares"),
        "{}",
        again.stdout
    );
    assert!(!again.stdout.contains("submitted"), "{}", again.stdout);
    assert_eq!(world.health_check_ids(), checks);
    assert_eq!(world.doc()["journal"].as_array().unwrap().len(), before);

    // A member dropped from the spec is deleted only with --prune.
    let mut smaller = mixed_spec();
    smaller["groups"][1]["members"]
        .as_array_mut()
        .unwrap()
        .pop();
    let spec = write_spec(&world, &smaller);
    let refused = world.switchyard(&["route", "apply", "--spec", &spec]);
    assert_eq!(refused.code, 2, "{}{}", refused.stdout, refused.stderr);
    assert!(
        refused
            .stderr
            .contains("lat.example.com./A ap (region ap-southeast-2, 198.51.100.4 TTL 30"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("pass --prune to delete them"),
        "{}",
        refused.stderr
    );
    assert_eq!(world.records("lat.example.com").len(), 2);
    let pruned = world.switchyard(&["route", "apply", "--prune", "--spec", &spec]);
    assert_eq!(pruned.code, 0, "{}{}", pruned.stdout, pruned.stderr);
    assert!(
        pruned.stdout.contains("  DELETE ap (region ap-southeast-2"),
        "{}",
        pruned.stdout
    );
    assert_eq!(world.records("lat.example.com").len(), 1);
    assert_eq!(
        journal_actions(&world.doc()).last().unwrap(),
        "routes-applied"
    );
}

#[test]
fn a_bad_spec_exits_2_and_a_held_lock_exits_5_before_any_change() {
    let world = World::new();
    let mut spec = mixed_spec();
    spec["groups"][0]["members"][1] = json!({"set_identifier": "eu", "region": "eu-west-1",
        "alias": alias("api-euw1.eu-west-1.elb.amazonaws.com", "Z32O12XQLNTSW2")});
    let path = write_spec(&world, &spec);
    let out = world.switchyard(&["route", "apply", "--spec", &path]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(r#"group 1 (api.example.com A): member "eu" is latency but member "us-east" is weighted; a name and type uses one routing policy"#),
        "{}",
        out.stderr
    );

    let mut spec = mixed_spec();
    spec["groups"][2]["members"][0]["geo"] = json!({"continent": "EURO"});
    let path = write_spec(&world, &spec);
    let out = world.switchyard(&["route", "apply", "--spec", &path]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains(r#"member "europe": "geo.continent" "EURO" is not a continent code"#),
        "{}",
        out.stderr
    );

    let check = world.switchyard(&["route", "check", "--spec", &path]);
    assert_eq!(check.code, 2, "{}{}", check.stdout, check.stderr);

    // Nothing reached moto.
    assert!(world.health_check_ids().is_empty());
    assert!(world.records("api.example.com").is_empty());
    assert!(!world.state().exists());

    // A valid spec on a name whose lock another deployment holds: exit 5, nothing changed.
    let expires = unix_now() + 3600;
    aws_cli::change(
        &world.moto,
        &world.zone,
        &json!([{"Action": "CREATE", "ResourceRecordSet": {"Name": "_switchyard-lock.api.example.com", "Type": "TXT", "TTL": 60,
            "ResourceRecords": [{"Value": format!("\"switchyard-lease=1;token=other;since={};expires={expires};holder=jenkins@ci-7;message=\"", expires - 3600)}]}}]),
    );
    let path = write_spec(&world, &mixed_spec());
    let out = world.switchyard(&["route", "apply", "--spec", &path]);
    assert_eq!(out.code, 5, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("is locked by jenkins@ci-7"),
        "{}",
        out.stderr
    );
    assert!(world.health_check_ids().is_empty());
    assert!(world.records("api.example.com").is_empty());

    // The plan is one JSON object with --output json.
    let out = world.switchyard(&["route", "plan", "--output", "json", "--spec", &path]);
    assert_eq!(out.code, 5, "{}{}", out.stdout, out.stderr);
    let json: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["exit_code"], 5);
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn shift_weight_drains_a_region_of_a_regional_group_gated_keeping_aliases_and_health_checks() {
    let world = World::new();
    let mut spec = mixed_spec();
    spec["groups"].as_array_mut().unwrap().truncate(1);
    let path = write_spec(&world, &spec);
    let out = world.switchyard(&["route", "apply", "--spec", &path]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let applied = world.records("api.example.com");

    let shift = |gate: &HealthServer| {
        let url = gate.url();
        let mut cmd = step("shift-weight", &world.env());
        cmd.args([
            "--zone-id",
            &world.zone,
            "--record-name",
            "api.example.com",
            "--settle",
            "0s",
            "--weights",
            "us-east=100,us-west=0",
            "--gate-url",
            &url,
        ]);
        cmd.args(FAST_GATE);
        run(&mut cmd)
    };
    let weights = || aws_cli::weights(&world.moto, &world.zone, "api.example.com");

    // A gate that fails after the change rolls the drain back.
    let failing = HealthServer::start(Some(1), None).unwrap();
    let out = shift(&failing);
    assert_eq!(out.code, 4, "{}{}", out.stdout, out.stderr);
    assert_eq!(weights(), w(&[("us-east", 50), ("us-west", 50)]));

    let healthy = HealthServer::start(None, None).unwrap();
    let out = shift(&healthy);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(weights(), w(&[("us-east", 100), ("us-west", 0)]));

    // Only the weights changed: aliases and health check ids are as applied.
    let drained = world.records("api.example.com");
    for before in &applied {
        let after = drained
            .iter()
            .find(|r| r["SetIdentifier"] == before["SetIdentifier"])
            .unwrap();
        assert_eq!(after["AliasTarget"], before["AliasTarget"]);
        assert_eq!(after["HealthCheckId"], before["HealthCheckId"]);
        assert!(after["HealthCheckId"].is_string());
    }
    let doc = world.doc();
    let route = &doc["traffic"][format!("route53:{}/api.example.com./A", world.zone)];
    assert_eq!(route["weights"], json!({"us-east": 100, "us-west": 0}));
    assert_eq!(route["before"], json!({"us-east": 50, "us-west": 50}));
    assert_eq!(route["shift"]["status"], "completed");

    // The spec applied again leaves the drain alone: weights are shift-weight's.
    let out = world.switchyard(&["route", "apply", "--spec", &path]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("  kept us-east weight 100 (the spec says 50;"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("no change"), "{}", out.stdout);
    assert_eq!(weights(), w(&[("us-east", 100), ("us-west", 0)]));
    let doc = world.doc();
    let route = &doc["traffic"][format!("route53:{}/api.example.com./A", world.zone)];
    assert_eq!(route["weights"], json!({"us-east": 100, "us-west": 0}));
    assert_eq!(
        route["before"],
        json!({"us-east": 50, "us-west": 50}),
        "rollback target kept"
    );
}

#[test]
fn a_health_check_replaced_by_route_apply_is_deleted_once_no_record_uses_it() {
    let world = World::new();
    let spec_with = |threshold: u32| {
        json!({"groups": [
            {"zone_id": "ZONE", "name": "hc.example.com", "type": "A", "ttl": 60, "members": [
                {"set_identifier": "us-east", "weight": 50, "values": ["52.94.236.21"],
                 "health_check": {"type": "http", "host": "52.94.236.21", "port": 8080,
                                  "path": "/health", "interval": 10, "threshold": threshold}},
                {"set_identifier": "eu-west", "weight": 50, "values": ["54.239.28.21"],
                 "health_check": check("54.239.28.21")}]}]})
    };
    let spec = write_spec(&world, &spec_with(2));
    let out = world.switchyard(&["route", "apply", "--spec", &spec]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let first = world.health_check_ids();
    assert_eq!(first.len(), 2);
    let used_by_us_east = |world: &World| {
        world
            .records("hc.example.com")
            .iter()
            .find(|r| r["SetIdentifier"] == "us-east")
            .and_then(|r| r["HealthCheckId"].as_str().map(str::to_owned))
            .expect("us-east has a check")
    };
    let old = used_by_us_east(&world);

    // us-east's check changes: the plan lists the old one to delete, and deletes nothing.
    let spec = write_spec(&world, &spec_with(3));
    let plan = world.switchyard(&["route", "apply", "--dry-run", "--spec", &spec]);
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.contains(&format!(
            "would delete health check {old}, which us-east of route53:{}/hc.example.com./A no longer uses",
            world.zone
        )),
        "{}",
        plan.stdout
    );
    assert_eq!(world.health_check_ids(), first);

    let out = world.switchyard(&["route", "apply", "--spec", &spec]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!("deleted health check {old}")),
        "{}",
        out.stdout
    );
    let now = world.health_check_ids();
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(!now.contains(&old), "the replaced check is gone");
    let new = used_by_us_east(&world);
    assert!(now.contains(&new) && new != old);
    assert_eq!(
        journal_actions(&world.doc()).last().unwrap(),
        "health-checks-deleted"
    );
}
