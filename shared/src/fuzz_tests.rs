//! Property tests over every parser of user input (proptest): the state
//! document, weights, steps, durations, health rules, the Route53 health
//! check members, routes specs, labels, target group ARNs and lease records. None may panic
//! on any input; every rejection is a usage error (exit 2) with a message; and
//! what a parser accepts keeps the promises its callers rely on.

use std::str::FromStr;

use proptest::prelude::*;
use serde_json::Value;

use crate::health::probe::{self, StatusSet};
use crate::health::route53::{parse_member, CheckKind, CheckSpec};
use crate::outcome::{Code, ExitStatus};
use crate::state::store;
use crate::traffic::plan::{self, Intent};
use crate::traffic::Lease;

/// Any JSON value, a few levels deep, with keys the state document uses.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z0-9/._:-]{0,12}".prop_map(Value::from),
        Just(Value::from("switchyard/state/v1")),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            Just("schema".to_owned()),
            Just("deployment".to_owned()),
            Just("image".to_owned()),
            Just("stacks".to_owned()),
            Just("health".to_owned()),
            Just("traffic".to_owned()),
            Just("journal".to_owned()),
            Just("weights".to_owned()),
            Just("status".to_owned()),
            Just("at".to_owned()),
            "[a-z_]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(key, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Text that looks a little like what the parsers expect, and often not.
fn texty() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9=,:/.*_ -]{0,24}",
        "[0-9]{1,4}(-[0-9]{1,4})?(,[0-9]{1,4})*",
        "[a-z]{1,6}=[0-9]{1,4}",
        "/[a-z/]{0,10}( ?(==|!=|<=|>=|<|>) ?[a-z0-9\"]{0,6})?",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn state_parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Err(e) = store::parse("s.json", &bytes) {
            prop_assert_eq!(e.exit_code(), Code::Usage);
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn state_parser_accepts_or_refuses_any_json_and_round_trips(value in json_value()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        match store::parse("s.json", &bytes) {
            Ok(doc) => {
                // What it accepted, it writes back in a form it reads to the same document.
                let again = serde_json::to_vec(&doc).unwrap();
                let reread = store::parse("s.json", &again).unwrap();
                prop_assert_eq!(reread, doc);
            }
            Err(e) => {
                prop_assert_eq!(e.exit_code(), Code::Usage);
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    #[test]
    fn durations_parse_or_say_why(text in texty()) {
        match crate::cli::args::parse_duration(&text) {
            Ok(d) => {
                let shown = humantime::format_duration(d).to_string();
                prop_assert_eq!(crate::cli::args::parse_duration(&shown), Ok(d));
            }
            Err(why) => prop_assert!(!why.is_empty()),
        }
    }

    #[test]
    fn steps_are_checked(steps in prop::collection::vec(any::<u32>().prop_map(|n| n % 260), 0..6)) {
        match plan::check_steps(&steps) {
            Ok(ok) => {
                prop_assert!(ok.windows(2).all(|w| w[0] < w[1]));
                prop_assert!(ok.iter().all(|s| *s <= 100));
            }
            Err(e) => prop_assert_eq!(e.exit_code(), Code::Usage),
        }
    }

    #[test]
    fn weights_parse_to_shares_summing_to_100(pairs in prop::collection::vec(texty(), 0..5)) {
        match plan::parse_weights(&pairs) {
            Ok(w) => prop_assert_eq!(w.values().map(|v| u32::from(*v)).sum::<u32>(), 100),
            Err(e) => {
                prop_assert_eq!(e.exit_code(), Code::Usage);
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    #[test]
    fn plans_move_only_between_members_and_keep_the_total(
        blue in 0_u32..=255,
        green in 0_u32..=255,
        steps in prop::collection::vec(0_u32..=100, 1..5),
    ) {
        let current = [("blue".to_owned(), blue), ("green".to_owned(), green)].into();
        let Ok(steps) = plan::check_steps(&steps) else { return Ok(()) };
        let intent = Intent::To { member: "green".into(), steps };
        if let Ok(plan) = plan::plan(&current, &intent) {
            for weights in plan {
                prop_assert!(weights.keys().all(|k| k == "blue" || k == "green"));
                prop_assert!(weights.values().all(|w| *w <= 255));
            }
        }
    }

    #[test]
    fn health_rules_parse_or_say_why(text in texty()) {
        if let Ok(set) = StatusSet::from_str(&text) {
            let _ = format!("{set:?}");
        }
        let _ = probe::JsonCheck::from_str(&text);
        let _ = probe::parse_header(&text);
        let _ = probe::parse_resolve(&text);
        let _ = probe::parse_method(&text);
        let _ = crate::aws::route53::parse_record_type(&text);
        let _ = Lease::decode(&text);
        let spec = CheckSpec {
            kind: CheckKind::Http,
            request_interval: 30,
            failure_threshold: 3,
            search_string: None,
        };
        if let Err(e) = parse_member(&text, &spec) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn routes_specs_parse_or_say_why(value in json_value(), text in texty()) {
        let as_json = serde_json::to_string(&value).unwrap();
        for spec in [as_json.as_str(), text.as_str()] {
            if let Err(why) = crate::traffic::regional::parse(spec) {
                prop_assert!(!why.is_empty());
            }
        }
    }

    #[test]
    fn labels_and_target_groups_parse_or_say_why(items in prop::collection::vec(texty(), 0..4)) {
        if let Err(e) = crate::host::Labels::parse(&items) {
            prop_assert!(!e.to_string().is_empty());
        }
        if let Err(e) = crate::host::registration::parse_target_groups(&items) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}
