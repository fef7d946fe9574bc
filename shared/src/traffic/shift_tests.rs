//! Fast tests of the shift engine's logic over an in-memory router
//! ([`FakeRouter`]): the order of a shift, what it journals and when it
//! saves, rollback after a failed gate or on request, continuing a shift that
//! stopped, the lease, dry runs. The routers themselves are tested with the
//! SDK mocked (`route53_tests.rs`, `alb_tests.rs`).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::health::GatePolicy;
use crate::outcome::{Code, ExitStatus, StepReport};
use crate::state::{Health, Verdict};
use crate::traffic::fake::{Call, FakeRouter};

const ROUTE: &str = "fake:app";

fn w(blue: u32, green: u32) -> Weights {
    Weights::from([("blue".to_owned(), blue), ("green".to_owned(), green)])
}

fn to_green(steps: &[u8]) -> Request {
    Request::Shift(Intent::To {
        member: "green".into(),
        steps: steps.to_vec(),
    })
}

/// No waits, no gate, no verification (`--force`).
fn options() -> ShiftOptions {
    ShiftOptions {
        pause: Duration::ZERO,
        settle: Some(Duration::ZERO),
        gate: None,
        analysis: None,
        force: true,
        max_verdict_age: Duration::from_secs(1800),
        dry_run: false,
        timeout: Duration::from_secs(600),
        lock_wait: Duration::ZERO,
        lock_message: None,
    }
}

/// A state file in a new temporary folder (kept while the guard lives).
fn state_file() -> (tempfile::TempDir, StateFile) {
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path().join("state.json"));
    (dir, file)
}

/// Runs the engine with no hooks; returns the hooks too, to see what the
/// hooks after the step would get.
async fn shift_with(
    router: &FakeRouter,
    file: &StateFile,
    request: Request,
    options: &ShiftOptions,
) -> (Result<ShiftReport, ShiftError>, StepHooks) {
    let mut hooks = StepHooks::none(STEP);
    let result = run(
        router,
        file,
        request,
        options,
        &mut hooks,
        &CancellationToken::new(),
    )
    .await;
    (result, hooks)
}

fn route(file: &StateFile) -> RouteState {
    file.read_now().traffic[ROUTE].clone()
}

fn progress(file: &StateFile) -> ShiftProgress {
    route(file).shift.unwrap()
}

/// The journal's actions, each with its outcome when that is not `ok`.
fn journal(file: &StateFile) -> Vec<String> {
    file.read_now()
        .journal
        .iter()
        .map(|e| match e.outcome {
            Outcome::Ok => e.action.clone(),
            other => format!("{} ({other:?})", e.action),
        })
        .collect()
}

/// A gate of one loopback URL, deciding on one answer.
fn gate(url: String) -> Gate {
    let policy = GatePolicy {
        successes: 1,
        failures: 1,
        interval: Duration::from_millis(10),
        probe_timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(10),
    };
    Gate::new(vec![url], policy).unwrap()
}

/// A URL on a closed loopback port: every probe of it is refused.
fn closed_port_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/health")
}

/// A loopback health endpoint of the stack receiving traffic: it answers
/// 200 while `healthy` holds for the router's weights, 503 otherwise.
async fn health_endpoint(router: &FakeRouter, healthy: fn(&Weights) -> bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/health", listener.local_addr().unwrap());
    let router = router.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let status = if healthy(&router.weights()) { 200 } else { 503 };
            tokio::spawn(async move {
                let mut buf = [0_u8; 2048];
                let _ = socket.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    url
}

#[test]
fn modes_are_spelled_as_before_everywhere() {
    for (mode, text) in [
        (Mode::Shift, "shift"),
        (Mode::Rollback, "rollback"),
        (Mode::DryRun, "dry-run"),
    ] {
        assert_eq!(mode.as_str(), text);
        assert_eq!(serde_json::to_value(mode).unwrap(), text);
    }
}

#[tokio::test(start_paused = true)]
async fn a_shift_in_three_steps_reaches_the_target_and_journals_every_step() {
    let router = FakeRouter::new(&[("blue", 100), ("green", 0)]);
    let (_dir, file) = state_file();
    let (report, hooks) = shift_with(&router, &file, to_green(&[10, 50, 100]), &options()).await;
    let report = report.unwrap();

    assert_eq!(router.weights(), w(0, 100));
    assert_eq!(router.applied(), vec![w(90, 10), w(50, 50), w(0, 100)]);
    assert_eq!(
        journal(&file),
        [
            "shift-started",
            "weights-submitted",
            "weights-verified",
            "weights-submitted",
            "weights-verified",
            "weights-submitted",
            "weights-verified",
            "shift-completed",
        ]
    );
    let route = route(&file);
    assert_eq!(route.weights, w(0, 100));
    assert_eq!(route.before, Some(w(100, 0)));
    assert!(!route.extra.contains_key("lease"), "the lease is released");
    let shift = route.shift.unwrap();
    assert_eq!(
        (shift.status, shift.steps_done),
        (ShiftStatus::Completed, 3)
    );
    assert_eq!(shift.target.as_deref(), Some("green"));
    let doc = file.load().await.unwrap();
    assert_eq!(doc.stacks["green"].role, Some(Role::Active));
    assert_eq!(doc.stacks["blue"].role, Some(Role::Standby));

    assert_eq!(report.mode, Mode::Shift);
    assert_eq!(
        (report.from.clone(), report.before.clone()),
        (w(100, 0), w(100, 0))
    );
    let changes: Vec<_> = report.steps.iter().map(|s| s.change.clone()).collect();
    assert_eq!(
        changes,
        [Some("change-1"), Some("change-2"), Some("change-3")].map(|c| c.map(str::to_owned))
    );
    assert_eq!(serde_json::to_value(&report).unwrap()["mode"], "shift");
    assert!(report.outputs().contains(&("mode".into(), "shift".into())));
    assert_eq!(hooks.env().get("SWITCHYARD_MODE"), Some("shift"));
    assert_eq!(hooks.env().get("SWITCHYARD_TARGET"), Some("green"));
    assert_eq!(
        hooks.env().get("SWITCHYARD_TARGET_WEIGHTS"),
        Some("blue=0,green=100")
    );

    let calls = router.calls();
    assert_eq!(calls[..2], [Call::Read, Call::TakeLease]);
    assert_eq!(calls.last(), Some(&Call::ReleaseLease));
    assert_eq!(router.lease(), None);
}

#[tokio::test(start_paused = true)]
async fn the_weights_before_are_saved_before_the_first_change() {
    let router = FakeRouter::new(&[("blue", 100), ("green", 0)]);
    let (_dir, file) = state_file();
    router.watch_state(&file);
    let (report, _) = shift_with(&router, &file, to_green(&[50, 100]), &options()).await;
    report.unwrap();

    let seen: Vec<StateDocument> = router
        .states_at_apply()
        .iter()
        .map(|text| serde_json::from_str(text).unwrap())
        .collect();
    assert_eq!(seen.len(), 2);
    let first = &seen[0].traffic[ROUTE];
    assert_eq!(first.before, Some(w(100, 0)));
    assert_eq!(first.weights, w(100, 0));
    assert!(first.extra.contains_key("lease"), "the lease is recorded");
    let shift = first.shift.as_ref().unwrap();
    assert_eq!(
        (shift.status, shift.steps_done),
        (ShiftStatus::InProgress, 0)
    );
    assert_eq!(shift.plan, vec![w(50, 50), w(0, 100)]);
    assert_eq!(
        seen[0].journal.last().map(|e| e.action.as_str()),
        Some("shift-started")
    );
    // Each step is saved before the next change.
    let second = &seen[1].traffic[ROUTE];
    assert_eq!(second.weights, w(50, 50));
    assert_eq!(second.before, Some(w(100, 0)));
    assert_eq!(second.shift.as_ref().unwrap().steps_done, 1);
}

#[tokio::test]
async fn a_failing_gate_after_a_change_rolls_back_to_exactly_the_weights_before() {
    let router = FakeRouter::new(&[("blue", 70), ("green", 30)]);
    // Green is broken: the service fails once green takes more than it had.
    let url = health_endpoint(&router, |w| w["green"] <= 30).await;
    let (_dir, file) = state_file();
    let options = ShiftOptions {
        gate: Some(gate(url)),
        analysis: None,
        force: false,
        ..options()
    };
    let (result, hooks) = shift_with(&router, &file, to_green(&[50, 100]), &options).await;
    let err = result.unwrap_err();

    assert!(
        matches!(err, ShiftError::RolledBack { step: 1, .. }),
        "{err}"
    );
    assert_eq!(err.exit_code(), Code::RolledBack);
    assert!(
        err.to_string().ends_with("rolled back to blue=70,green=30"),
        "{err}"
    );
    assert_eq!(router.weights(), w(70, 30));
    assert_eq!(router.applied(), vec![w(50, 50), w(70, 30)]);
    assert_eq!(
        hooks.env().get("SWITCHYARD_WEIGHTS"),
        Some("blue=70,green=30"),
        "on-rollback sees the restored weights"
    );
    assert_eq!(
        journal(&file),
        [
            "shift-started",
            "gate",
            "weights-submitted",
            "weights-verified",
            "gate (Failed)",
            "weights-submitted",
            "weights-verified",
            "rollback-completed (RolledBack)",
        ]
    );
    let route = route(&file);
    assert_eq!(route.weights, w(70, 30));
    assert_eq!(route.before, Some(w(70, 30)));
    let shift = route.shift.unwrap();
    assert_eq!(shift.status, ShiftStatus::RolledBack);
    assert!(
        shift
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("gate failed at step 1: ")),
        "{shift:?}"
    );
    assert_eq!(router.lease(), None);
}

#[tokio::test]
async fn a_continued_shift_that_fails_its_gate_rolls_back_to_the_first_runs_before() {
    let router = FakeRouter::new(&[("blue", 100), ("green", 0)]);
    router.fail_apply_at(2);
    let (_dir, file) = state_file();
    let (result, _) = shift_with(&router, &file, to_green(&[10, 50, 100]), &options()).await;
    result.unwrap_err();
    assert_eq!(router.weights(), w(90, 10));

    // Run again, now gated: green copes with 10% and fails at 50%.
    let url = health_endpoint(&router, |w| w["green"] <= 10).await;
    let options = ShiftOptions {
        gate: Some(gate(url)),
        analysis: None,
        ..options()
    };
    let (result, hooks) = shift_with(&router, &file, to_green(&[10, 50, 100]), &options).await;
    let err = result.unwrap_err();
    assert!(
        matches!(err, ShiftError::RolledBack { step: 2, .. }),
        "{err}"
    );
    assert!(
        err.to_string().ends_with("rolled back to blue=100,green=0"),
        "{err}"
    );
    assert_eq!(
        router.weights(),
        w(100, 0),
        "not 90/10, where this run began"
    );
    assert_eq!(
        hooks.env().get("SWITCHYARD_WEIGHTS"),
        Some("blue=100,green=0"),
        "on-rollback sees the restored weights"
    );
    assert_eq!(
        hooks.env().get("SWITCHYARD_BEFORE_WEIGHTS"),
        Some("blue=100,green=0")
    );
    assert_eq!(progress(&file).status, ShiftStatus::RolledBack);
}

#[tokio::test]
async fn a_gate_failing_before_any_change_changes_nothing() {
    let router = FakeRouter::new(&[("blue", 100), ("green", 0)]);
    let (_dir, file) = state_file();
    let options = ShiftOptions {
        gate: Some(gate(closed_port_url())),
        analysis: None,
        ..options()
    };
    let (result, _) = shift_with(&router, &file, to_green(&[10, 100]), &options).await;
    let err = result.unwrap_err();

    assert!(matches!(err, ShiftError::PreflightFailed(_)), "{err}");
    assert_eq!(err.exit_code(), Code::CheckFailed);
    assert!(router.applied().is_empty());
    assert_eq!(router.weights(), w(100, 0));
    assert_eq!(journal(&file), ["shift-started", "gate (Failed)"]);
    let route = route(&file);
    assert_eq!(
        (route.before, route.shift),
        (None, None),
        "as before the run"
    );
    assert_eq!(router.lease(), None);
}

/// The pipelines' canary (`--steps 10,50`) and promotion (`--steps 100`) are
/// two runs: a rollback after the promotion goes back to before the canary.
/// A new shift that does not continue the last one starts a new rollback target.
#[tokio::test(start_paused = true)]
async fn a_promotion_that_continues_a_canary_rolls_back_to_before_the_canary() {
    let router = FakeRouter::new(&[("blue", 100), ("green", 0)]);
    let (_dir, file) = state_file();
    let (canary, _) = shift_with(&router, &file, to_green(&[10, 50]), &options()).await;
    canary.unwrap();
    let (promoted, _) = shift_with(&router, &file, to_green(&[100]), &options()).await;
    promoted.unwrap();
    assert_eq!(route(&file).before, Some(w(100, 0)));
    let (result, _) = shift_with(&router, &file, Request::Rollback, &options()).await;
    let report = result.unwrap();
    assert_eq!(router.weights(), w(100, 0));
    assert!(
        report
            .text()
            .contains("blue=100,green=0 (was blue=0,green=100)"),
        "{}",
        report.text()
    );

    // Green at 100 is complete: the next shift (back to blue) is a release of
    // its own, whose rollback returns to green.
    let (_dir2, file) = state_file();
    let router = FakeRouter::new(&[("blue", 100), ("green", 0)]);
    shift_with(&router, &file, to_green(&[100]), &options())
        .await
        .0
        .unwrap();
    let to_blue = Request::Shift(Intent::To {
        member: "blue".into(),
        steps: vec![50],
    });
    shift_with(&router, &file, to_blue, &options())
        .await
        .0
        .unwrap();
    assert_eq!(route(&file).before, Some(w(0, 100)));
}

#[tokio::test(start_paused = true)]
async fn rollback_after_a_completed_shift_restores_the_weights_before() {
    let router = FakeRouter::new(&[("blue", 100), ("green", 0)]);
    let (_dir, file) = state_file();
    let (shifted, _) = shift_with(&router, &file, to_green(&[50, 100]), &options()).await;
    shifted.unwrap();
    assert_eq!(router.weights(), w(0, 100));

    // A rollback's target passes the gate before any change: a failing gate
    // stops it with nothing changed (safety rule 1, rollbacks included).
    let failing_gate = ShiftOptions {
        gate: Some(gate(closed_port_url())),
        analysis: None,
        ..options()
    };
    let (result, _) = shift_with(&router, &file, Request::Rollback, &failing_gate).await;
    assert_eq!(result.unwrap_err().exit_code(), Code::CheckFailed);
    assert_eq!(router.weights(), w(0, 100), "nothing changed");

    let (result, hooks) = shift_with(&router, &file, Request::Rollback, &options()).await;
    let report = result.unwrap();
    assert_eq!(router.weights(), w(100, 0));
    assert_eq!(router.applied().last(), Some(&w(100, 0)));
    assert_eq!(report.mode, Mode::Rollback);
    assert_eq!(
        (report.from.clone(), report.weights.clone()),
        (w(0, 100), w(100, 0))
    );
    assert_eq!(report.steps.len(), 1);
    assert_eq!(serde_json::to_value(&report).unwrap()["mode"], "rollback");
    assert!(report
        .outputs()
        .contains(&("mode".into(), "rollback".into())));
    assert!(
        report.text().starts_with(
            "rolled back fake:app: blue=100,green=0 (was blue=0,green=100) in 1 step(s)"
        ),
        "{}",
        report.text()
    );
    assert!(report.summary().starts_with("### shift-weight: rollback\n"));
    assert_eq!(hooks.env().get("SWITCHYARD_MODE"), Some("rollback"));

    assert_eq!(
        journal(&file)[6..],
        [
            "rollback-started",
            "gate (Failed)",
            "rollback-started",
            "weights-submitted",
            "weights-verified",
            "rollback-completed",
        ]
    );
    let shift = progress(&file);
    assert_eq!(shift.status, ShiftStatus::RolledBack);
    assert_eq!(shift.target, None);
    let doc = file.load().await.unwrap();
    assert_eq!(doc.stacks["blue"].role, Some(Role::Active));
    assert_eq!(doc.stacks["green"].role, Some(Role::Standby));
}

#[tokio::test(start_paused = true)]
async fn a_shift_that_stopped_half_way_continues_and_keeps_its_before() {
    let router = FakeRouter::new(&[("blue", 100), ("green", 0)]);
    router.fail_apply_at(2);
    let (_dir, file) = state_file();
    let (result, _) = shift_with(&router, &file, to_green(&[10, 50, 100]), &options()).await;
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            ShiftError::Stopped {
                done: 1,
                total: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.exit_code(), Code::Provider);
    assert!(
        err.to_string().contains("traffic at blue=90,green=10"),
        "{err}"
    );
    assert_eq!(router.weights(), w(90, 10));
    let stopped = progress(&file);
    assert_eq!(
        (stopped.status, stopped.steps_done),
        (ShiftStatus::Failed, 1)
    );
    assert_eq!(route(&file).before, Some(w(100, 0)));
    assert_eq!(journal(&file).last().unwrap(), "shift-stopped (Failed)");
    assert_eq!(router.lease(), None, "the lease is released after a stop");

    // The same command again carries on from 90/10; the rollback target
    // stays the weights before the first run.
    let (result, _) = shift_with(&router, &file, to_green(&[10, 50, 100]), &options()).await;
    let report = result.unwrap();
    assert_eq!(router.weights(), w(0, 100));
    assert_eq!(report.from, w(90, 10));
    assert_eq!(report.before, w(100, 0));
    assert_eq!(route(&file).before, Some(w(100, 0)));
    let continued = progress(&file);
    assert_eq!(continued.status, ShiftStatus::Completed);
    assert_eq!(continued.started_at, stopped.started_at);
    let doc = file.load().await.unwrap();
    let started: Vec<_> = doc
        .journal
        .iter()
        .filter(|e| e.action == "shift-started")
        .collect();
    assert_eq!(started.len(), 2);
    let detail = started[1].detail.as_deref().unwrap();
    assert!(
        detail.ends_with("rollback target blue=100,green=0 (continuing a shift that stopped)"),
        "{detail}"
    );

    let (result, _) = shift_with(&router, &file, Request::Rollback, &options()).await;
    result.unwrap();
    assert_eq!(router.weights(), w(100, 0));
}

#[tokio::test(start_paused = true)]
async fn a_held_lease_exits_5_with_nothing_changed() {
    let router = FakeRouter::new(&[("blue", 100), ("green", 0)]);
    router.hold_lease("jenkins@ci-7");
    let (_dir, file) = state_file();
    let (result, _) = shift_with(&router, &file, to_green(&[50, 100]), &options()).await;
    let err = result.unwrap_err();

    assert_eq!(err.exit_code(), Code::Conflict);
    assert!(
        err.to_string()
            .starts_with("fake:app/lease is locked by jenkins@ci-7 until "),
        "{err}"
    );
    assert_eq!(router.calls(), [Call::Read, Call::TakeLease]);
    assert_eq!(router.weights(), w(100, 0));
    assert!(journal(&file).is_empty());
    let route = route(&file);
    assert_eq!((route.before, route.shift), (None, None));
    assert_eq!(router.lease().unwrap().holder, "jenkins@ci-7");
}

#[tokio::test(start_paused = true)]
async fn a_lease_left_behind_is_taken_back_by_the_next_run_of_the_same_state() {
    let router = FakeRouter::new(&[("blue", 100), ("green", 0)]);
    router.fail_release();
    let (_dir, file) = state_file();
    let (result, _) = shift_with(&router, &file, to_green(&[50]), &options()).await;
    result.unwrap();
    let left = router.lease().unwrap();
    assert_eq!(
        route(&file).extra["lease"],
        left.encode(),
        "the state still names the lease it could not give back"
    );

    // While the process that recorded it lives (here: this one), no other
    // run takes it, not even one of the same state (a shared s3:// state).
    let (result, _) = shift_with(&router, &file, to_green(&[100]), &options()).await;
    assert_eq!(result.unwrap_err().exit_code(), Code::Conflict);

    // Once it is gone (a job that was killed), the next run of this job from
    // this state takes it back; another deployment (another state file)
    // finds it held.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let mut doc = file.read_now();
    doc.traffic
        .get_mut(ROUTE)
        .unwrap()
        .extra
        .insert("lease_pid".into(), gone_pid.into());
    file.write_now(&doc);
    let (_other_dir, other) = state_file();
    let (result, _) = shift_with(&router, &other, to_green(&[100]), &options()).await;
    assert_eq!(result.unwrap_err().exit_code(), Code::Conflict);
    let (result, _) = shift_with(&router, &file, to_green(&[100]), &options()).await;
    result.unwrap();
    assert_eq!(router.weights(), w(0, 100));
    assert!(router.lease().unwrap().same_run(&left));
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_changes_nothing_and_lists_the_plan() {
    let router = FakeRouter::new(&[("blue", 100), ("green", 0)]);
    let (_dir, file) = state_file();
    let options = ShiftOptions {
        dry_run: true,
        pause: Duration::from_secs(30),
        settle: Some(Duration::from_secs(60)),
        ..options()
    };
    let (result, _) = shift_with(&router, &file, to_green(&[10, 50, 100]), &options).await;
    let report = result.unwrap();

    assert_eq!(
        report.plan,
        [
            "now: blue=100,green=0",
            "take the lease: CREATE fake:app/lease",
            "step 1/3: set blue=90,green=10 (was blue=100,green=0)",
            "  wait until in effect, read back blue=90,green=10",
            "  wait 1m00s for clients to catch up",
            "  pause 30s",
            "step 2/3: set blue=50,green=50 (was blue=90,green=10)",
            "  wait until in effect, read back blue=50,green=50",
            "  wait 1m00s for clients to catch up",
            "  pause 30s",
            "step 3/3: set blue=0,green=100 (was blue=50,green=50)",
            "  wait until in effect, read back blue=0,green=100",
            "rollback target: blue=100,green=0",
            "release the lease: DELETE fake:app/lease",
        ]
    );
    assert_eq!(report.mode, Mode::DryRun);
    assert_eq!(serde_json::to_value(&report).unwrap()["mode"], "dry-run");
    assert!(report
        .outputs()
        .contains(&("mode".into(), "dry-run".into())));
    assert!(report
        .text()
        .starts_with("plan for fake:app (dry run: nothing changed)\n  now: blue=100,green=0\n"));
    assert_eq!(report.weights, w(100, 0));
    assert_eq!(router.calls(), [Call::Read], "no change, no lease");
    assert!(!file.path().exists(), "the state is not written");
}

#[tokio::test(start_paused = true)]
async fn traffic_goes_only_to_a_member_the_state_vouches_for() {
    let router = FakeRouter::new(&[("blue", 100), ("green", 0)]);
    let (_dir, file) = state_file();
    let strict = ShiftOptions {
        force: false,
        ..options()
    };
    let (result, _) = shift_with(&router, &file, to_green(&[50]), &strict).await;
    let err = result.unwrap_err();
    assert!(matches!(err, ShiftError::Unverified { .. }), "{err}");
    assert_eq!(err.exit_code(), Code::Conflict);
    assert!(err.to_string().contains("has no health verdict"), "{err}");
    assert_eq!(router.calls(), [Call::Read], "no change, no lease");

    let dry = ShiftOptions {
        dry_run: true,
        ..strict.clone()
    };
    let (result, _) = shift_with(&router, &file, to_green(&[50]), &dry).await;
    let plan = result.unwrap().plan;
    assert!(
        plan[0].starts_with("blocked: refusing to move traffic to green: ")
            && plan[0].ends_with("; a real run exits 5"),
        "{plan:?}"
    );

    let mut doc = file.load().await.unwrap();
    doc.health.insert(
        "green".into(),
        Verdict {
            status: Health::Healthy,
            at: Utc::now(),
            summary: "3/3 endpoints healthy".into(),
            endpoints: Vec::new(),
            latency_ms: None,
            via: None,
            route: None,
            extra: serde_json::Map::new(),
        },
    );
    file.save(&mut doc).await.unwrap();
    let (result, _) = shift_with(&router, &file, to_green(&[50]), &strict).await;
    result.unwrap();
    assert_eq!(router.weights(), w(50, 50));
}

#[tokio::test(start_paused = true)]
async fn a_read_back_that_differs_stops_with_a_provider_error() {
    let router = FakeRouter::new(&[("blue", 100), ("green", 0)]);
    router.drop_apply_at(1);
    let (_dir, file) = state_file();
    let (result, _) = shift_with(&router, &file, to_green(&[50, 100]), &options()).await;
    let err = result.unwrap_err();

    assert!(
        matches!(
            err,
            ShiftError::Stopped {
                done: 0,
                total: 2,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.exit_code(), Code::Provider);
    assert!(
        err.to_string().starts_with(
            "read back of fake:app shows blue=100,green=0, expected blue=50,green=50; stopped after step 0 of 2"
        ),
        "{err}"
    );
    assert_eq!(router.applied(), vec![w(50, 50)], "no further change");
    assert_eq!(
        journal(&file),
        [
            "shift-started",
            "weights-submitted",
            "shift-stopped (Failed)"
        ]
    );
    let shift = progress(&file);
    assert_eq!(shift.status, ShiftStatus::Failed);
    assert_eq!(shift.pending_change.as_deref(), Some("change-1"));
    assert!(shift.message.unwrap().starts_with("read back of fake:app"));
    assert_eq!(
        route(&file).weights,
        w(100, 0),
        "the state keeps what was read"
    );
    assert_eq!(router.lease(), None);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_passing_in_a_pause_stops_where_the_shift_is() {
    let router = FakeRouter::new(&[("blue", 100), ("green", 0)]);
    let (_dir, file) = state_file();
    let options = ShiftOptions {
        pause: Duration::from_secs(3600),
        timeout: Duration::from_secs(600),
        ..options()
    };
    let (result, _) = shift_with(&router, &file, to_green(&[10, 100]), &options).await;
    let err = result.unwrap_err();
    assert_eq!(err.exit_code(), Code::Provider);
    assert!(
        err.to_string().starts_with(
            "the step's deadline (--timeout 10m00s) passed while waiting for the pause between steps; stopped after step 1 of 2"
        ),
        "{err}"
    );
    assert_eq!(router.weights(), w(90, 10));
    let shift = progress(&file);
    assert_eq!((shift.status, shift.steps_done), (ShiftStatus::Failed, 1));
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_pause_records_the_interruption() {
    let router = FakeRouter::new(&[("blue", 100), ("green", 0)]);
    let (_dir, file) = state_file();
    let options = ShiftOptions {
        pause: Duration::from_secs(600),
        timeout: Duration::from_secs(3600),
        ..options()
    };
    let cancel = CancellationToken::new();
    let signal = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        signal.cancel();
    });
    let mut hooks = StepHooks::none(STEP);
    let err = run(
        &router,
        &file,
        to_green(&[10, 100]),
        &options,
        &mut hooks,
        &cancel,
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), Code::Interrupted);
    assert_eq!(router.weights(), w(90, 10));
    let shift = progress(&file);
    assert_eq!(
        (shift.status, shift.steps_done),
        (ShiftStatus::Interrupted, 1)
    );
    assert_eq!(
        journal(&file).last().unwrap(),
        "shift-stopped (Interrupted)"
    );
    assert_eq!(router.lease(), None);
}

#[tokio::test(start_paused = true)]
async fn a_rollback_with_no_shift_recorded_is_a_usage_error() {
    let router = FakeRouter::new(&[("blue", 100), ("green", 0)]);
    let (_dir, file) = state_file();
    let (result, _) = shift_with(&router, &file, Request::Rollback, &options()).await;
    let err = result.unwrap_err();
    assert!(matches!(err, ShiftError::NothingToRollBack { .. }), "{err}");
    assert_eq!(err.exit_code(), Code::Usage);
    assert_eq!(router.calls(), [Call::Read]);
}

/// The report's text, JSON and markdown summary are contracts people and
/// programs read: pinned as snapshots, so a change to them is a visible diff.
#[test]
fn the_report_reads_the_same_in_text_json_and_summary() {
    let shifted = ShiftReport {
        mode: Mode::Shift,
        route: "route53:Z0123/app.example.com./A".to_owned(),
        router: "route53",
        from: w(100, 0),
        before: w(100, 0),
        weights: w(0, 100),
        steps: vec![
            StepOutcome {
                weights: w(90, 10),
                change: Some("C0001".to_owned()),
                in_sync_ms: 1_250,
                gate: Some("3/3 healthy answers from 2 URL(s)".to_owned()),
            },
            StepOutcome {
                weights: w(0, 100),
                change: Some("C0002".to_owned()),
                in_sync_ms: 980,
                gate: None,
            },
        ],
        plan: Vec::new(),
        analysis: None,
        rolled_back: None,
        elapsed_ms: 65_400,
    };
    insta::assert_snapshot!("shift-report-text", shifted.text());
    insta::assert_snapshot!("shift-report-summary", shifted.summary());
    insta::assert_json_snapshot!("shift-report-json", shifted);
    let planned = ShiftReport {
        mode: Mode::DryRun,
        steps: Vec::new(),
        weights: w(100, 0),
        plan: vec![
            "now: blue=100,green=0".to_owned(),
            "step 1/1: UPSERT blue=0, green=100".to_owned(),
        ],
        elapsed_ms: 12,
        ..shifted
    };
    insta::assert_snapshot!("shift-dry-run-text", planned.text());
    insta::assert_json_snapshot!("shift-dry-run-json", planned);
}

/// Safety rule 1, rollbacks included: traffic does not go back to a stack
/// that deploy-standby retired, nor to one with no endpoints left.
#[tokio::test(start_paused = true)]
async fn a_rollback_to_a_retired_stack_is_refused_unless_forced() {
    let router = FakeRouter::new(&[("blue", 100), ("green", 0)]);
    let (_dir, file) = state_file();
    let (shifted, _) = shift_with(&router, &file, to_green(&[100]), &options()).await;
    shifted.unwrap();
    let mut doc = file.load().await.unwrap();
    let blue = doc.stack_mut("blue");
    blue.role = Some(Role::Retired);
    blue.driver = Some("asg".into());
    file.save(&mut doc).await.unwrap();
    let checked = ShiftOptions {
        force: false,
        ..options()
    };

    let (result, _) = shift_with(&router, &file, Request::Rollback, &checked).await;
    let err = result.unwrap_err();
    assert_eq!(err.exit_code(), Code::Conflict, "{err}");
    assert!(
        err.to_string()
            .starts_with("refusing to move traffic to blue: it was retired"),
        "{err}"
    );
    assert_eq!(router.weights(), w(0, 100), "nothing moved");

    // Brought up again by deploy-standby but with no endpoints: still refused.
    let mut doc = file.load().await.unwrap();
    doc.stack_mut("blue").role = Some(Role::Standby);
    file.save(&mut doc).await.unwrap();
    let (result, _) = shift_with(&router, &file, Request::Rollback, &checked).await;
    assert!(result
        .unwrap_err()
        .to_string()
        .contains("the state lists no endpoints for it"));

    let (result, _) = shift_with(&router, &file, Request::Rollback, &options()).await;
    result.unwrap();
    assert_eq!(router.weights(), w(100, 0), "--force rolls back anyway");
}

/// A loopback Prometheus answering each query with what `answer` makes of
/// the how-many-th query it is (from 1): a value, or an empty vector.
async fn prometheus(answer: fn(usize) -> Option<f64>) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let queries = std::sync::Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let queries = queries.clone();
            tokio::spawn(async move {
                let mut buf = [0_u8; 4096];
                // One query per connection read; keep-alive connections ask again.
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    let result = match answer(queries.fetch_add(1, Ordering::SeqCst) + 1) {
                        Some(v) => format!(r#"[{{"metric":{{}},"value":[1800000000,"{v}"]}}]"#),
                        None => "[]".to_owned(),
                    };
                    let body = format!(
                        r#"{{"status":"success","data":{{"resultType":"vector","result":{result}}}}}"#
                    );
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if socket.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

fn analysis_options(url: &str, pause: Duration) -> ShiftOptions {
    let text = format!(
        r#"{{"metrics": [{{"name": "error-rate", "prometheus": {{"url": "{url}", "query": "errors{{stack=\"{{stack}}\"}}"}},
            "success": "result <= 0.05", "interval": "20ms"}}]}}"#
    );
    let analysis = crate::health::analysis::Analysis::parse(&text, "analysis.json").unwrap();
    ShiftOptions {
        pause,
        analysis: Some(AnalysisGate {
            analysis,
            clients: crate::health::analysis::engine::Clients::new(None),
        }),
        ..options()
    }
}

/// Issue #17: a metric failing in the middle of a long pause rolls back at
/// once (not when the pause ends), with every measurement in the journal
/// and the report.
#[tokio::test]
async fn an_analysis_failing_mid_pause_rolls_back_at_once_with_its_evidence() {
    let guard = Duration::from_secs(120);
    // Good for three measurements, then an error rate of 0.5.
    let url = prometheus(|n| Some(if n <= 3 { 0.01 } else { 0.5 })).await;
    let router = FakeRouter::new(&[("blue", 100), ("green", 0)]);
    let (_dir, file) = state_file();
    let options = analysis_options(&url, Duration::from_secs(600));
    let (result, hooks) = tokio::time::timeout(
        guard,
        shift_with(&router, &file, to_green(&[10, 50]), &options),
    )
    .await
    .expect("the failure ends the ten-minute pause");
    let report = result.unwrap();
    let failure = report.failure().expect("a rollback is a failure");
    assert_eq!(failure.code, Code::RolledBack);
    let why = report.rolled_back.clone().unwrap();
    assert!(
        why.starts_with("analysis failed at step 1 (blue=90,green=10): metric error-rate failed: 0.5 does not meet result <= 0.05"),
        "{why}"
    );
    assert!(why.ends_with("rolled back to blue=100,green=0"), "{why}");
    assert_eq!(router.weights(), w(100, 0));
    assert_eq!(router.applied(), vec![w(90, 10), w(100, 0)]);
    assert_eq!(
        hooks.env().get("SWITCHYARD_WEIGHTS"),
        Some("blue=100,green=0")
    );
    let analysis = report.analysis.as_ref().unwrap();
    assert_eq!(analysis.measurements.len(), 4);
    assert_eq!(
        analysis.measurements[3].query,
        format!("errors{{stack=\"green\"}} at {url}/api/v1/query")
    );
    assert!(
        report
            .text()
            .contains("error-rate failed: 0.5 does not meet result <= 0.05"),
        "{}",
        report.text()
    );
    assert_eq!(
        journal(&file),
        [
            "shift-started",
            "weights-submitted",
            "weights-verified",
            "analysis (Failed)",
            "weights-submitted",
            "weights-verified",
            "rollback-completed (RolledBack)",
        ]
    );
    let doc = file.read_now();
    let entry = doc.journal.iter().find(|e| e.action == "analysis").unwrap();
    assert_eq!(entry.extra["measurements"].as_array().unwrap().len(), 4);
    assert_eq!(entry.extra["measurements"][3]["values"][0]["value"], 0.5);
    assert_eq!(progress(&file).status, ShiftStatus::RolledBack);
}

/// Inconclusive after the last step is not a pass; a healthy canary goes
/// through with its measurements in the report and the journal.
#[tokio::test]
async fn an_analysis_inconclusive_at_the_final_round_rolls_back_and_a_healthy_one_passes() {
    let guard = Duration::from_secs(120);
    // Data stops coming after the first step: the final round finds none.
    let url = prometheus(|n| (n <= 2).then_some(0.01)).await;
    let router = FakeRouter::new(&[("blue", 100), ("green", 0)]);
    let (_dir, file) = state_file();
    let options = analysis_options(&url, Duration::from_millis(30));
    let (result, _) = tokio::time::timeout(
        guard,
        shift_with(&router, &file, to_green(&[10, 50]), &options),
    )
    .await
    .unwrap();
    let report = result.unwrap();
    assert_eq!(report.failure().unwrap().code, Code::RolledBack);
    assert!(
        report
            .rolled_back
            .as_deref()
            .unwrap()
            .contains("analysis inconclusive at step"),
        "{:?}",
        report.rolled_back
    );
    assert!(
        report
            .rolled_back
            .as_deref()
            .unwrap()
            .contains("no data (no_data: inconclusive)"),
        "{:?}",
        report.rolled_back
    );
    assert_eq!(router.weights(), w(100, 0));

    // A healthy canary goes through, its measurements in the report.
    let url = prometheus(|_| Some(0.01)).await;
    let router = FakeRouter::new(&[("blue", 100), ("green", 0)]);
    let (_dir, file) = state_file();
    let options = analysis_options(&url, Duration::from_millis(60));
    let (result, _) = tokio::time::timeout(
        guard,
        shift_with(&router, &file, to_green(&[10, 50]), &options),
    )
    .await
    .unwrap();
    let report = result.unwrap();
    assert!(report.failure().is_none());
    assert_eq!(router.weights(), w(50, 50));
    let analysis = report.analysis.unwrap();
    assert_eq!(analysis.verdict, crate::health::analysis::Phase::Successful);
    assert!(
        analysis.measurements.len() >= 2,
        "during the hold and the final round"
    );
    let log = journal(&file);
    assert_eq!(&log[log.len() - 2..], ["analysis", "shift-completed"]);
}
