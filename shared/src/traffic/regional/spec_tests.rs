//! Offline tests of the routes spec: its checks, the example spec, and the
//! published JSON Schema.

use std::path::Path;

use super::*;

const EXAMPLE: &str = include_str!("../../../../docs/examples/routes.json");

#[test]
fn the_example_spec_is_valid_and_mixes_three_policies() {
    let routes = parse(EXAMPLE).unwrap();
    let summary: Vec<(String, Policy, usize)> = routes
        .groups
        .iter()
        .map(|g| (g.route(), g.policy, g.members.len()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "route53:Z0EXAMPLE/api.example.com./A".into(),
                Policy::Weighted,
                2
            ),
            (
                "route53:Z0EXAMPLE/lat.example.com./A".into(),
                Policy::Latency,
                2
            ),
            (
                "route53:Z0EXAMPLE/geo.example.com./CNAME".into(),
                Policy::Geolocation,
                3
            ),
        ]
    );
    let us_east = &routes.groups[0].members[0];
    let (member, spec) = us_east.check.as_ref().unwrap();
    assert_eq!(
        (member.host.as_str(), member.port, member.path.as_str()),
        ("api-use1.example.com", 443, "/healthz")
    );
    assert_eq!((spec.request_interval, spec.failure_threshold), (30, 3));
    assert_eq!(
        us_east.target,
        Target::Alias {
            dns_name: "api-use1-1234567890.us-east-1.elb.amazonaws.com.".into(),
            hosted_zone_id: "Z35SXDOTRQ7X7K".into(),
            evaluate: true
        }
    );
}

/// The schema users point their editors at is generated from the spec types
/// and published in schema/routes-v1.schema.json, with a snapshot of it;
/// `make schema` (`INSTA_UPDATE=always`) rewrites both.
#[test]
fn routes_json_schema_is_the_published_one_and_the_example_follows_it() {
    let generated = json_schema();
    insta::with_settings!({
        description => "schema/routes-v1.schema.json: the published file holds this text",
        omit_expression => true,
    }, {
        insta::assert_snapshot!("routes-v1.schema.json", generated);
    });
    switchyard_tests::published::assert_published(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/routes-v1.schema.json"),
        &generated,
        "make schema",
    );
    let schema: serde_json::Value = serde_json::from_str(&generated).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let example: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&example)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

fn one_group(members: &str) -> String {
    format!(
        r#"{{"groups": [{{"zone_id": "Z1", "name": "api.example.com", "type": "A", "members": [{members}]}}]}}"#
    )
}

#[test]
fn bad_specs_are_refused_naming_the_group_member_and_field() {
    let hc = r#""health_check": {"type": "http", "host": "52.94.236.1"}"#;
    let cases: Vec<(String, &str)> = vec![
        (
            one_group(r#"{"set_identifier": "a", "weight": 10, "values": ["10.0.0.1"]}, {"set_identifier": "b", "region": "eu-west-1", "values": ["10.0.0.2"]}"#),
            r#"group 1 (api.example.com A): member "b" is latency but member "a" is weighted; a name and type uses one routing policy"#,
        ),
        (
            one_group(r#"{"set_identifier": "a", "weight": 10, "values": ["10.0.0.1"]}, {"set_identifier": "a", "weight": 5, "values": ["10.0.0.2"]}"#),
            r#"member "a": "set_identifier" is used twice"#,
        ),
        (
            one_group(r#"{"set_identifier": "a", "weight": 256, "values": ["10.0.0.1"]}"#),
            r#"member "a": "weight" 256 is outside 0-255"#,
        ),
        (
            one_group(r#"{"set_identifier": "eu", "geo": {"continent": "XX"}, "values": ["10.0.0.1"]}"#),
            r#"member "eu": "geo.continent" "XX" is not a continent code (AF, AN, AS, EU, OC, NA, SA)"#,
        ),
        (
            one_group(r#"{"set_identifier": "de", "geo": {"country": "DE", "subdivision": "BY"}, "values": ["10.0.0.1"]}"#),
            r#"member "de": "geo.subdivision" "BY": Route53 takes subdivisions only of US and UA"#,
        ),
        (
            one_group(r#"{"set_identifier": "x", "geo": {"country": "*"}, "values": ["10.0.0.1"]}, {"set_identifier": "y", "geo": {"country": "*"}, "values": ["10.0.0.2"]}"#),
            r#"member "y": default location (*) is already routed to member "x""#,
        ),
        (
            one_group(r#"{"set_identifier": "m", "region": "mars-north-1", "values": ["10.0.0.1"]}"#),
            r#"member "m": "region" "mars-north-1" is not a Route53 latency region"#,
        ),
        (
            one_group(r#"{"set_identifier": "a", "weight": 1}"#),
            r#"member "a": no target; give "alias" or "values""#,
        ),
        (
            one_group(r#"{"set_identifier": "a", "weight": 1, "region": "eu-west-1", "values": ["10.0.0.1"]}"#),
            r#"member "a": more than one routing policy"#,
        ),
        (
            one_group(r#"{"set_identifier": "a", "weight": 1, "values": ["2001:db8::1"]}"#),
            r#"member "a": "values": "2001:db8::1" is not an IPv4 address"#,
        ),
        (
            one_group(&format!(r#"{{"set_identifier": "a", "weight": 1, "values": ["10.0.0.1"], {}}}"#, hc.replace(r#""host""#, r#""interval": 20, "host""#))),
            r#"member "a": "health_check.interval" 20 must be 10 or 30 (seconds)"#,
        ),
        (
            one_group(r#"{"set_identifier": "a", "weight": 1, "values": ["10.0.0.1"], "health_check": {"type": "tcp", "host": "52.94.236.1", "path": "/x"}}"#),
            r#"member "a": "health_check.path" is for http kinds"#,
        ),
        (
            one_group(r#"{"set_identifier": "a", "weight": 1, "values": ["10.0.0.1"], "health_check": {"type": "https-str-match", "host": "a.example.com"}}"#),
            r#"member "a": "health_check": string-match checks need "search_string""#,
        ),
        (
            one_group(r#"{"set_identifier": "a", "wieght": 1, "values": ["10.0.0.1"]}"#),
            "unknown field `wieght`",
        ),
        (
            r#"{"groups": [{"zone_id": "Z1", "name": "api.example.com", "members": [{"set_identifier": "a", "weight": 1, "values": ["10.0.0.1"]}]},
                          {"zone_id": "Z1", "name": "API.example.com.", "members": [{"set_identifier": "b", "region": "eu-west-1", "values": ["10.0.0.1"]}]}]}"#
                .to_owned(),
            "group 2 (api.example.com. A): the spec declares this name and type twice",
        ),
        (
            r#"{"groups": [{"zone_id": "Z1", "name": "api.example.com", "type": "MX", "members": []}]}"#.to_owned(),
            r#"group 1 (api.example.com MX): "type" "MX" is not supported"#,
        ),
        (
            one_group(r#"{"set_identifier": "a", "weight": 1, "values": ["10.0.0.1", "10.0.0.1"]}"#),
            r#"member "a": "values": "10.0.0.1" is given twice"#,
        ),
        (r#"{"groups": []}"#.to_owned(), r#""groups" is empty"#),
    ];
    for (spec, expected) in cases {
        let err = parse(&spec).unwrap_err();
        assert!(
            err.contains(expected),
            "spec {spec}\n  gave {err}\n  expected {expected}"
        );
    }
}

#[test]
fn a_spec_error_is_exit_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.json");
    std::fs::write(
        &path,
        one_group(r#"{"set_identifier": "a", "weight": 300, "values": ["10.0.0.1"]}"#),
    )
    .unwrap();
    let err = load(&path).unwrap_err();
    assert_eq!(err.exit_code(), Code::Usage);
    assert!(
        err.to_string()
            .starts_with(&format!("routes spec {}: group 1", path.display())),
        "{err}"
    );
}
