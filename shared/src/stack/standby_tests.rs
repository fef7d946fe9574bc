//! Tests of deploy-standby's blue-green flow: the color and retire rules on
//! state documents, then `deploy` and `retire` end to end over the
//! in-memory [`FakeDriver`] (no AWS, no process but the hooks, no waiting).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use chrono::TimeDelta;

use super::*;
use crate::hooks::{HookEnv, Hooks};
use crate::stack::fake::{FakeDriver, Op};
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
        via: None,
        route: None,
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

// ---- the flow over the fake driver -----------------------------------------

const EAST: &str = "us-east-1";
const WEST: &str = "eu-west-1";

/// Two regions served by one fake (its clones share one record).
fn regions(fake: &FakeDriver) -> Vec<Region<FakeDriver>> {
    [EAST, WEST]
        .map(|name| Region {
            name: name.to_owned(),
            driver: fake.clone(),
        })
        .into()
}

/// A state file holding `doc`, in `dir`.
fn state(dir: &Path, doc: &StateDocument) -> StateFile {
    let file = StateFile::new(dir.join("switchyard-state.json"));
    file.write_now(doc);
    file
}

/// A state that names the deployment's service, as retire needs.
fn of_go_auth() -> StateDocument {
    StateDocument {
        deployment: Some(crate::state::Deployment {
            service: Some("go-auth".into()),
            ..crate::state::Deployment::default()
        }),
        ..StateDocument::default()
    }
}

fn release() -> DeployRequest {
    DeployRequest {
        service: Some("go-auth".into()),
        version: Some("1.4.2".into()),
        ..DeployRequest::default()
    }
}

fn options(dry_run: bool) -> StandbyOptions {
    StandbyOptions {
        dry_run,
        timeout: Duration::from_secs(60),
    }
}

/// The hooks of deploy-standby with `pre-deploy-standby` running `body`.
fn pre_hook(dir: &Path, body: &str) -> StepHooks {
    let path = dir.join("pre-deploy-standby");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    StepHooks::new(
        Hooks::new(dir, true, Duration::from_secs(10)),
        STEP,
        HookEnv::default(),
        false,
    )
}

async fn deploy_over(
    file: &StateFile,
    fake: &FakeDriver,
    req: &DeployRequest,
    options: &StandbyOptions,
    hooks: &mut StepHooks,
) -> Result<StandbyReport, StandbyError> {
    let cancel = CancellationToken::new();
    deploy(file, &regions(fake), req, options, hooks, &cancel).await
}

async fn retire_over(
    file: &StateFile,
    fake: &FakeDriver,
    retire_after: Duration,
    options: &StandbyOptions,
    hooks: &mut StepHooks,
) -> Result<StandbyReport, StandbyError> {
    let req = RetireRequest {
        retire_after,
        ..RetireRequest::default()
    };
    let cancel = CancellationToken::new();
    retire(file, &regions(fake), &req, options, hooks, &cancel).await
}

fn op(op: Op, region: &str, color: &str) -> (Op, String, String) {
    (op, region.to_owned(), color.to_owned())
}

fn no_hooks() -> StepHooks {
    StepHooks::none(STEP)
}

#[tokio::test]
async fn a_first_release_comes_up_blue_as_the_standby_with_its_endpoints_and_journal_entry() {
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path().join("switchyard-state.json"));
    let fake = FakeDriver::new()
        .endpoints(EAST, &["http://10.0.1.5:8080"])
        .endpoints(WEST, &["http://10.1.1.5:8080"]);

    let report = deploy_over(&file, &fake, &release(), &options(false), &mut no_hooks())
        .await
        .unwrap();

    assert_eq!(report.color, "blue");
    assert_eq!(report.reason, "no group has instances: first release");
    assert!(report.changed);
    assert_eq!(
        report.endpoints,
        ["http://10.0.1.5:8080", "http://10.1.1.5:8080"]
    );
    assert_eq!(
        fake.ops(),
        [
            op(Op::Capacity, EAST, "blue"),
            op(Op::Capacity, EAST, "green"),
            op(Op::Capacity, WEST, "blue"),
            op(Op::Capacity, WEST, "green"),
            op(Op::Up, EAST, "blue"),
            op(Op::Up, WEST, "blue"),
        ],
        "the groups decide the color, then every region comes up"
    );
    let doc = file.load().await.unwrap();
    let blue = &doc.stacks["blue"];
    assert_eq!(blue.role, Some(Role::Standby));
    assert_eq!(blue.version.as_deref(), Some("1.4.2"));
    assert_eq!(blue.driver.as_deref(), Some("fake"));
    // The stack's endpoints are the union over its regions, by region name.
    assert_eq!(
        blue.endpoints,
        ["http://10.1.1.5:8080", "http://10.0.1.5:8080"]
    );
    assert_eq!(blue.regions[WEST].group.as_deref(), Some("go-auth-blue"));
    assert_eq!(blue.regions[WEST].endpoints, ["http://10.1.1.5:8080"]);
    assert!(!doc.stacks.contains_key("green"));
    let deployment = doc.deployment.as_ref().unwrap();
    assert_eq!(deployment.service.as_deref(), Some("go-auth"));
    assert_eq!(deployment.version.as_deref(), Some("1.4.2"));
    let entry = doc.journal.last().unwrap();
    assert_eq!(
        (entry.step.as_str(), entry.action.as_str(), entry.outcome),
        ("deploy-standby", "standby-up", Outcome::Ok)
    );
    assert_eq!(
        entry.detail.as_deref(),
        Some("blue up at 1.4.2 in us-east-1, eu-west-1")
    );
    assert_eq!(entry.extra["stack"], "blue");
    let resources: Vec<&str> = entry.changes.iter().map(|c| c.resource.as_str()).collect();
    assert_eq!(
        resources,
        ["fake:us-east-1/go-auth-blue", "fake:eu-west-1/go-auth-blue"]
    );

    // The same release again changes nothing, and the journal says so.
    let again = deploy_over(&file, &fake, &release(), &options(false), &mut no_hooks())
        .await
        .unwrap();
    assert_eq!(again.color, "blue");
    assert!(!again.changed);
    let doc = file.load().await.unwrap();
    assert_eq!(doc.journal.len(), 2);
    assert_eq!(
        doc.journal[1].detail.as_deref(),
        Some("blue at 1.4.2 unchanged in us-east-1, eu-west-1")
    );
    assert_eq!(doc.journal[1].action, "standby-unchanged");
}

#[tokio::test]
async fn the_standby_is_the_color_without_instances_and_deploys_over_neither_busy_color() {
    let dir = tempfile::tempdir().unwrap();
    let file = state(dir.path(), &StateDocument::default());
    let fake = FakeDriver::new().capacity("blue", 2).capacity("green", 0);
    let report = deploy_over(&file, &fake, &release(), &options(false), &mut no_hooks())
        .await
        .unwrap();
    assert_eq!(
        (report.color.as_str(), report.reason.as_str()),
        ("green", "only the blue group has instances")
    );
    assert_eq!(fake.version_in(EAST, "green").as_deref(), Some("1.4.2"));
    assert_eq!(fake.version_in(EAST, "blue"), None);

    // Both groups busy and nothing else to go by: a conflict, nothing brought up.
    let fake = FakeDriver::new().capacity("blue", 2).capacity("green", 2);
    let file = state(dir.path(), &StateDocument::default());
    let err = deploy_over(&file, &fake, &release(), &options(false), &mut no_hooks())
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), Code::Conflict);
    assert!(fake.ops().iter().all(|(op, _, _)| *op == Op::Capacity));
}

#[tokio::test]
async fn a_color_with_traffic_or_marked_active_is_refused_before_the_hook_and_any_driver_call() {
    let mut with_traffic = StateDocument::default();
    with_traffic.traffic.insert(
        "r53".into(),
        route(90, 10, Utc::now(), ShiftStatus::Completed),
    );
    let mut marked_active = StateDocument::default();
    marked_active.stack_mut("blue").role = Some(Role::Active);

    for (doc, color, why) in [
        (
            with_traffic,
            Color::Green,
            "green carries traffic (weight 10 in route r53)",
        ),
        (marked_active, Color::Blue, "the state marks blue active"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = state(dir.path(), &doc);
        let fake = FakeDriver::new();
        let mut hooks = pre_hook(dir.path(), "touch \"$0.ran\"");
        let req = DeployRequest {
            color: Some(color),
            ..release()
        };

        let err = deploy_over(&file, &fake, &req, &options(false), &mut hooks)
            .await
            .unwrap_err();

        assert_eq!(err.exit_code(), Code::Conflict);
        assert!(err.to_string().starts_with(why), "{err}");
        assert_eq!(fake.calls(), []);
        assert!(!dir.path().join("pre-deploy-standby.ran").exists());
        assert_eq!(
            file.load().await.unwrap(),
            doc,
            "the state is left as it was"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn every_region_comes_up_at_once_and_a_failed_region_is_reported_while_the_other_is_recorded()
{
    let dir = tempfile::tempdir().unwrap();
    let file = state(dir.path(), &StateDocument::default());
    let fake = FakeDriver::new()
        .slow(Duration::from_secs(30))
        .failing(WEST)
        .endpoints(EAST, &["http://10.0.1.5:8080"]);
    let started = Instant::now();

    let err = deploy_over(&file, &fake, &release(), &options(false), &mut no_hooks())
        .await
        .unwrap_err();

    assert_eq!(err.exit_code(), Code::Provider);
    assert!(
        err.to_string().contains("eu-west-1 is set to fail"),
        "{err}"
    );
    assert_eq!(fake.most_at_once(), 2, "both regions came up together");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "not one after the other"
    );
    let doc = file.load().await.unwrap();
    let blue = &doc.stacks["blue"];
    assert_eq!(blue.regions.keys().collect::<Vec<_>>(), [EAST]);
    assert_eq!(blue.endpoints, ["http://10.0.1.5:8080"]);
    assert_eq!(blue.role, Some(Role::Standby));
    let entry = doc.journal.last().unwrap();
    assert_eq!(
        (entry.action.as_str(), entry.outcome),
        ("standby-up", Outcome::Failed)
    );
    assert!(
        entry
            .detail
            .as_deref()
            .unwrap()
            .starts_with("blue at 1.4.2: fake up of go-auth-blue exited with exit status 1"),
        "{:?}",
        entry.detail
    );
    assert_eq!(entry.changes.len(), 1, "the region that came up");
    assert_eq!(entry.changes[0].resource, "fake:us-east-1/go-auth-blue");
}

#[tokio::test(start_paused = true)]
async fn a_region_still_coming_up_at_the_deadline_fails_the_step_with_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let file = state(dir.path(), &StateDocument::default());
    let fake = FakeDriver::new().slow(Duration::from_secs(600));

    let err = deploy_over(&file, &fake, &release(), &options(false), &mut no_hooks())
        .await
        .unwrap_err();

    assert_eq!(err.exit_code(), Code::Provider);
    assert!(err.to_string().contains("the deadline passed"), "{err}");
    let entry = file.load().await.unwrap().journal.pop().unwrap();
    assert_eq!(entry.outcome, Outcome::Failed);
}

#[tokio::test]
async fn a_dry_run_plans_every_region_calls_no_change_and_shows_what_would_block() {
    let dir = tempfile::tempdir().unwrap();
    let mut doc = of_go_auth();
    doc.traffic.insert(
        "r53".into(),
        route(90, 10, Utc::now(), ShiftStatus::Completed),
    );
    doc.stack_mut("green").role = Some(Role::Active);
    let file = state(dir.path(), &doc);
    let fake = FakeDriver::new().running(EAST, "blue", "1.4.1");
    let mut hooks = pre_hook(dir.path(), "touch \"$0.ran\"");

    let report = deploy_over(&file, &fake, &release(), &options(true), &mut hooks)
        .await
        .unwrap();

    assert!(report.dry_run);
    assert_eq!(report.color, "blue");
    assert_eq!(
        report.blocked.as_deref(),
        Some("blue carries traffic (weight 90 in route r53); deploy-standby never replaces a stack that takes traffic")
    );
    assert_eq!(
        report.regions[0].changes,
        ["bring go-auth-blue up at 1.4.2"]
    );
    assert_eq!(report.regions[1].group, "go-auth-blue");
    assert_eq!(
        fake.ops(),
        [op(Op::Plan, EAST, "blue"), op(Op::Plan, WEST, "blue")]
    );

    let report = retire_over(
        &file,
        &fake,
        Duration::ZERO,
        &options(true),
        &mut no_hooks(),
    )
    .await
    .unwrap();

    assert_eq!((report.action, report.color.as_str()), ("retire", "blue"));
    assert!(report
        .blocked
        .unwrap()
        .starts_with("no traffic route in the state shows green at 100%"));
    assert_eq!(report.regions[0].changes, ["take go-auth-blue down"]);
    assert!(report.regions[1].changes.is_empty());
    let changes: Vec<Op> = fake.ops().into_iter().map(|(op, _, _)| op).collect();
    assert_eq!(changes, [Op::Plan, Op::Plan, Op::PlanDown, Op::PlanDown]);
    assert_eq!(file.load().await.unwrap(), doc, "nothing recorded");
    assert!(!dir.path().join("pre-deploy-standby.ran").exists());
}

#[tokio::test]
async fn retire_refuses_until_the_peer_took_it_all_healthy_since_and_the_delay_passed_then_scales_down(
) {
    let dir = tempfile::tempdir().unwrap();
    let now = Utc::now();
    let completed = now - TimeDelta::minutes(15);
    let mut doc = of_go_auth();
    doc.stack_mut("green").role = Some(Role::Active);
    doc.stack_mut("blue").role = Some(Role::Standby);
    let fake = FakeDriver::new()
        .running(EAST, "blue", "1.4.1")
        .running(WEST, "blue", "1.4.1");
    let ten_minutes = Duration::from_secs(600);

    let mut refusals = Vec::new();
    doc.traffic.insert(
        "r53".into(),
        route(50, 50, completed, ShiftStatus::InProgress),
    );
    refusals.push((
        doc.clone(),
        ten_minutes,
        "no traffic route in the state shows green at 100%",
    ));
    doc.traffic.insert(
        "r53".into(),
        route(0, 100, completed, ShiftStatus::Completed),
    );
    refusals.push((
        doc.clone(),
        ten_minutes,
        "the state has no health verdict for green",
    ));
    doc.health.insert(
        "green".into(),
        verdict(Health::Healthy, completed - TimeDelta::minutes(1)),
    );
    refusals.push((doc.clone(), ten_minutes, "green's last healthy verdict"));
    doc.health.insert(
        "green".into(),
        verdict(Health::Healthy, completed + TimeDelta::minutes(1)),
    );
    refusals.push((
        doc.clone(),
        Duration::from_secs(3600),
        "green took 100% only 15m00s ago",
    ));
    for (refused, retire_after, why) in refusals {
        let file = state(dir.path(), &refused);
        let err = retire_over(&file, &fake, retire_after, &options(false), &mut no_hooks())
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), Code::Conflict, "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("will not retire blue: {why}")),
            "{err}"
        );
        assert_eq!(fake.calls(), []);
        assert_eq!(file.load().await.unwrap(), refused);
    }

    let file = state(dir.path(), &doc);
    let report = retire_over(&file, &fake, ten_minutes, &options(false), &mut no_hooks())
        .await
        .unwrap();

    assert_eq!((report.action, report.color.as_str()), ("retire", "blue"));
    assert_eq!(report.reason, "the state marks green active");
    assert!(report.changed);
    assert_eq!(
        fake.ops(),
        [op(Op::Down, EAST, "blue"), op(Op::Down, WEST, "blue")]
    );
    assert_eq!(fake.version_in(EAST, "blue"), None);
    let after = file.load().await.unwrap();
    let blue = &after.stacks["blue"];
    assert_eq!(blue.role, Some(Role::Retired));
    assert!(blue.endpoints.is_empty());
    assert_eq!(blue.regions[WEST].desired, Some(0));
    assert_eq!(blue.regions[WEST].group.as_deref(), Some("go-auth-blue"));
    assert_eq!(after.stacks["green"].role, Some(Role::Active));
    let entry = after.journal.last().unwrap();
    assert_eq!(
        (entry.action.as_str(), entry.outcome),
        ("retired", Outcome::Ok)
    );
    assert_eq!(
        entry.detail.as_deref(),
        Some(
            format!(
                "blue scaled to 0 in us-east-1, eu-west-1; green took 100% at {}",
                completed.to_rfc3339()
            )
            .as_str()
        )
    );
    assert_eq!(entry.changes.len(), 2);

    // Retiring it again changes nothing.
    let again = retire_over(&file, &fake, ten_minutes, &options(false), &mut no_hooks())
        .await
        .unwrap();
    assert!(!again.changed);
    assert!(again.text().contains("was already retired, unchanged"));
}

#[tokio::test]
async fn the_pre_hook_sees_the_decision_and_a_failing_one_stops_before_any_change() {
    let dir = tempfile::tempdir().unwrap();
    let file = state(dir.path(), &StateDocument::default());
    let fake = FakeDriver::new();
    let mut hooks = pre_hook(
        dir.path(),
        "echo \"$SWITCHYARD_STACK $SWITCHYARD_SERVICE $SWITCHYARD_VERSION $SWITCHYARD_REGIONS\" > \"$0.out\"",
    );
    deploy_over(&file, &fake, &release(), &options(false), &mut hooks)
        .await
        .unwrap();
    let seen = std::fs::read_to_string(dir.path().join("pre-deploy-standby.out")).unwrap();
    assert_eq!(seen, "blue go-auth 1.4.2 us-east-1,eu-west-1\n");

    let file = state(dir.path(), &StateDocument::default());
    let fake = FakeDriver::new();
    let mut hooks = pre_hook(dir.path(), "echo \"not now\" >&2; exit 3");
    let err = deploy_over(&file, &fake, &release(), &options(false), &mut hooks)
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), Code::CheckFailed);
    assert!(err.to_string().ends_with("not now"), "{err}");
    assert!(
        fake.ops().iter().all(|(op, _, _)| *op == Op::Capacity),
        "only the probes that decided the color: {:?}",
        fake.ops()
    );
    assert_eq!(file.load().await.unwrap(), StateDocument::default());

    // retire: the same point, with SWITCHYARD_MODE=retire.
    let mut doc = of_go_auth();
    doc.stack_mut("green").role = Some(Role::Active);
    let completed = Utc::now() - TimeDelta::minutes(15);
    doc.traffic.insert(
        "r53".into(),
        route(0, 100, completed, ShiftStatus::Completed),
    );
    doc.health
        .insert("green".into(), verdict(Health::Healthy, Utc::now()));
    let file = state(dir.path(), &doc);
    let fake = FakeDriver::new().running(EAST, "blue", "1.4.1");
    let mut hooks = pre_hook(
        dir.path(),
        "echo \"$SWITCHYARD_STACK $SWITCHYARD_MODE\" > \"$0.out\"; exit 1",
    );
    let err = retire_over(&file, &fake, Duration::ZERO, &options(false), &mut hooks)
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), Code::CheckFailed);
    let seen = std::fs::read_to_string(dir.path().join("pre-deploy-standby.out")).unwrap();
    assert_eq!(seen, "blue retire\n");
    assert_eq!(fake.calls(), []);
    assert_eq!(fake.version_in(EAST, "blue").as_deref(), Some("1.4.1"));
    assert_eq!(file.load().await.unwrap(), doc);
}

/// A state where green took 100% `ago` and passed its check since: blue may
/// retire once --retire-after has passed.
fn promoted(ago: TimeDelta) -> StateDocument {
    let completed = Utc::now() - ago;
    let mut doc = of_go_auth();
    doc.stack_mut("green").role = Some(Role::Active);
    doc.stack_mut("blue").role = Some(Role::Standby);
    doc.traffic.insert(
        "r53".into(),
        route(0, 100, completed, ShiftStatus::Completed),
    );
    doc.health.insert(
        "green".into(),
        verdict(Health::Healthy, completed + TimeDelta::milliseconds(1)),
    );
    doc
}

async fn retire_waiting(
    file: &StateFile,
    fake: &FakeDriver,
    retire_after: Duration,
    options: &StandbyOptions,
) -> Result<StandbyReport, StandbyError> {
    let req = RetireRequest {
        retire_after,
        wait: Some(RetireWait {
            gate: None,
            every: Duration::from_millis(50),
        }),
        ..RetireRequest::default()
    };
    let cancel = CancellationToken::new();
    retire(
        file,
        &regions(fake),
        &req,
        options,
        &mut no_hooks(),
        &cancel,
    )
    .await
}

#[tokio::test]
async fn retire_waits_out_the_delay_then_scales_down() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeDriver::new()
        .running(EAST, "blue", "1.4.1")
        .running(WEST, "blue", "1.4.1");
    let file = state(dir.path(), &promoted(TimeDelta::zero()));
    let started = std::time::Instant::now();
    let report = retire_waiting(&file, &fake, Duration::from_millis(400), &options(false))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "waited {:?}",
        started.elapsed()
    );
    assert!(report.changed);
    assert_eq!(
        file.load().await.unwrap().stacks["blue"].role,
        Some(Role::Retired)
    );
}

#[tokio::test]
async fn retire_stops_with_exit_1_and_keeps_the_old_stack_when_the_active_one_turns_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeDriver::new().running(EAST, "blue", "1.4.1");
    let file = state(dir.path(), &promoted(TimeDelta::zero()));
    // verify-health, run meanwhile by another stage, finds green unhealthy.
    let writer = file.clone();
    let turn = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let mut doc = writer.load().await.unwrap();
        doc.health
            .insert("green".into(), verdict(Health::Unhealthy, Utc::now()));
        writer.save(&mut doc).await.unwrap();
    });
    let err = retire_waiting(&file, &fake, Duration::from_secs(30), &options(false))
        .await
        .unwrap_err();
    turn.await.unwrap();
    assert_eq!(err.exit_code(), Code::CheckFailed, "{err}");
    assert!(
        err.to_string()
            .starts_with("green is not healthy while the old stack waits to retire"),
        "{err}"
    );
    assert_eq!(fake.calls(), [], "blue stays up, warm for a rollback");
    assert_eq!(
        file.load().await.unwrap().stacks["blue"].role,
        Some(Role::Standby)
    );
}

#[tokio::test]
async fn a_wait_past_the_deadline_is_refused_at_once_and_a_dry_run_says_it_would_wait() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeDriver::new().running(EAST, "blue", "1.4.1");
    let file = state(dir.path(), &promoted(TimeDelta::zero()));
    let short_deadline = StandbyOptions {
        timeout: Duration::from_secs(5),
        ..options(false)
    };
    let started = std::time::Instant::now();
    let err = retire_waiting(&file, &fake, Duration::from_secs(600), &short_deadline)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once"
    );
    assert_eq!(err.exit_code(), Code::Conflict, "{err}");
    assert!(
        err.to_string().contains("after this step's --timeout"),
        "{err}"
    );
    assert_eq!(fake.calls(), []);

    let report = retire_waiting(&file, &fake, Duration::from_secs(600), &options(true))
        .await
        .unwrap();
    assert!(report.reason.contains("waits until"), "{}", report.reason);
    assert!(report.blocked.is_none(), "{:?}", report.blocked);
}
