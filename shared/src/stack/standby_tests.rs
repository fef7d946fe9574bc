use chrono::TimeDelta;

use super::*;
use crate::state::{RouteState, ShiftProgress, Verdict};

fn route(blue: u32, green: u32, completed: DateTime<Utc>, status: ShiftStatus) -> RouteState {
    RouteState {
        router: "route53".into(),
        resource: BTreeMap::new(),
        weights: BTreeMap::from([("blue".into(), blue), ("green".into(), green)]),
        before: None,
        shift: Some(ShiftProgress {
            target: Some("green".into()),
            plan: Vec::new(),
            steps_done: 1,
            status,
            pending_change: None,
            message: None,
            started_at: completed,
            extra: crate::state::document::Extra::new(),
        }),
        updated_at: completed,
        extra: crate::state::document::Extra::new(),
    }
}

fn verdict(status: Health, at: DateTime<Utc>) -> Verdict {
    Verdict {
        status,
        at,
        summary: "2/2 endpoints healthy".into(),
        endpoints: Vec::new(),
        latency_ms: None,
        extra: crate::state::document::Extra::new(),
    }
}

#[test]
fn the_standby_color_comes_from_the_flag_the_state_then_the_groups() {
    let mut doc = StateDocument::default();
    let none = BTreeMap::new();
    assert_eq!(choose_color(&doc, None, &none).unwrap().0, "blue");
    let blue_only = BTreeMap::from([("blue".to_owned(), Some(2)), ("green".to_owned(), None)]);
    assert_eq!(
        choose_color(&doc, None, &blue_only).unwrap(),
        (
            "green".to_owned(),
            "only the blue group has instances".to_owned()
        )
    );
    let green_at_zero =
        BTreeMap::from([("blue".to_owned(), Some(2)), ("green".to_owned(), Some(0))]);
    assert_eq!(choose_color(&doc, None, &green_at_zero).unwrap().0, "green");
    let both = BTreeMap::from([("blue".to_owned(), Some(2)), ("green".to_owned(), Some(2))]);
    let err = choose_color(&doc, None, &both).unwrap_err();
    assert_eq!(err.exit_code(), Code::Conflict);
    assert_eq!(choose_color(&doc, Some("blue"), &both).unwrap().0, "blue");
    doc.stack_mut("green").role = Some(Role::Active);
    assert_eq!(
        choose_color(&doc, None, &both).unwrap(),
        ("blue".to_owned(), "the state marks green active".to_owned())
    );
    let mut doc = StateDocument::default();
    doc.traffic.insert(
        "r53".into(),
        route(90, 10, Utc::now(), ShiftStatus::Completed),
    );
    assert_eq!(choose_color(&doc, None, &both).unwrap().0, "green");
}

#[test]
fn a_color_with_traffic_or_marked_active_is_never_deployed_over() {
    let mut doc = StateDocument::default();
    assert_eq!(deploy_blocker(&doc, "green"), None);
    doc.traffic.insert(
        "r53".into(),
        route(90, 10, Utc::now(), ShiftStatus::Completed),
    );
    assert_eq!(
        deploy_blocker(&doc, "green").unwrap(),
        "green carries traffic (weight 10 in route r53); deploy-standby never replaces a stack that takes traffic"
    );
    let mut doc = StateDocument::default();
    doc.stack_mut("blue").role = Some(Role::Active);
    assert!(deploy_blocker(&doc, "blue")
        .unwrap()
        .contains("marks blue active"));
}

#[test]
fn retire_needs_full_traffic_a_later_healthy_verdict_and_the_delay() {
    let now = Utc::now();
    let after = Duration::from_secs(600);
    let mut doc = StateDocument::default();
    let err = retire_check(&doc, "blue", after, now).unwrap_err();
    assert!(
        err.starts_with(
            "no traffic route in the state shows green at 100% (the state has no routes)"
        ),
        "{err}"
    );

    doc.traffic
        .insert("r53".into(), route(50, 50, now, ShiftStatus::InProgress));
    let err = retire_check(&doc, "blue", after, now).unwrap_err();
    assert!(err.contains("r53: blue=50,green=50"), "{err}");

    let completed = now - TimeDelta::minutes(15);
    doc.traffic.insert(
        "r53".into(),
        route(0, 100, completed, ShiftStatus::Completed),
    );
    let err = retire_check(&doc, "blue", after, now).unwrap_err();
    assert_eq!(
        err,
        "the state has no health verdict for green; run verify-health --stack green"
    );

    doc.health.insert(
        "green".into(),
        verdict(Health::Healthy, completed - TimeDelta::minutes(1)),
    );
    let err = retire_check(&doc, "blue", after, now).unwrap_err();
    assert!(err.contains("is from before the shift completed"), "{err}");

    doc.health.insert(
        "green".into(),
        verdict(Health::Unhealthy, completed + TimeDelta::minutes(1)),
    );
    let err = retire_check(&doc, "blue", after, now).unwrap_err();
    assert!(
        err.starts_with("green's last health verdict is unhealthy"),
        "{err}"
    );

    doc.health.insert(
        "green".into(),
        verdict(Health::Healthy, completed + TimeDelta::minutes(1)),
    );
    assert_eq!(retire_check(&doc, "blue", after, now), Ok(completed));
    let err = retire_check(&doc, "blue", Duration::from_secs(3600), now).unwrap_err();
    assert!(
        err.contains("--retire-after 1h00m leaves 45m00s to go"),
        "{err}"
    );
    // Retiring the stack that takes the traffic is never allowed.
    assert!(retire_check(&doc, "green", after, now).is_err());
}
