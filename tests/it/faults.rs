//! Steps under injected faults: a fault-injecting proxy in front of moto's
//! server answers a share of the calls with Throttling, PriorRequestNotComplete,
//! 500s, slow answers and dropped connections (before and after the call was
//! made). Every run must complete, or exit cleanly with code 3 and a state file
//! that validates and says where it stopped; run again, it must converge.
//! The figures (runs, faults injected, outcomes) are written to
//! `target/tmp/faults-*.txt`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use switchyard_tests::aws_cli::{self, w};
use switchyard_tests::fault_proxy::{FaultProxy, Faults, Outcome};
use switchyard_tests::steps::{run, step, StepOutput};
use switchyard_tests::{HealthServer, Moto};

use crate::fixture::{gated_canary, read_json, state_validates, with_state};

const ROUNDS: usize = 8;
/// The share of calls that get a fault.
pub const FAULT_RATE: f64 = 0.2;

/// `env` pointed at `proxy` instead of moto, with the steps' own retry policy
/// (no `AWS_MAX_ATTEMPTS` from the test environment).
pub fn through(env: Vec<(String, String)>, proxy: &FaultProxy) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k != "AWS_ENDPOINT_URL" && k != "AWS_MAX_ATTEMPTS")
        .collect();
    env.push(("AWS_ENDPOINT_URL".into(), proxy.endpoint()));
    env
}

/// The runs of one step under faults, for the report.
#[derive(Debug, Default)]
pub struct Tally {
    rounds: usize,
    first_runs: BTreeMap<i32, usize>,
    reruns: usize,
}

impl Tally {
    /// Runs a step (`attempt`) until it exits 0: each run must exit 0, or 3
    /// with the state file `state` absent or valid, then it is run again, as
    /// a CI retry would, at most four times.
    pub fn until_done(
        &mut self,
        context: &str,
        state: &Path,
        attempt: impl FnMut() -> StepOutput,
    ) -> StepOutput {
        self.until_done_checking(context, state, attempt, |_| {})
    }

    /// [`Tally::until_done`], with `stopped` checking each exit 3 further.
    pub fn until_done_checking(
        &mut self,
        context: &str,
        state: &Path,
        mut attempt: impl FnMut() -> StepOutput,
        stopped: impl Fn(&StepOutput),
    ) -> StepOutput {
        self.rounds += 1;
        let mut out = attempt();
        *self.first_runs.entry(out.code).or_default() += 1;
        let mut runs = 1;
        while out.code == 3 && runs < 5 {
            assert!(
                !state.exists() || state_validates(state),
                "{context}: exit 3 left a state file that does not validate\n{}",
                out.stderr
            );
            stopped(&out);
            out = attempt();
            runs += 1;
            self.reruns += 1;
        }
        assert_eq!(
            out.code, 0,
            "{context} after {runs} run(s):\n{}{}",
            out.stdout, out.stderr
        );
        assert!(state_validates(state), "{context}");
        out
    }

    /// The figures, written to `target/tmp/faults-STEP.txt` and returned;
    /// checks that the proxy really injected faults.
    pub fn report(&self, step: &str, proxy: &FaultProxy) -> String {
        let outcomes = proxy.outcomes();
        let calls: usize = outcomes.values().sum();
        let faults: usize = outcomes
            .iter()
            .filter(|(k, _)| **k != Outcome::Forwarded)
            .map(|(_, v)| v)
            .sum();
        let report = format!(
            "{step} under {:.0}% injected faults: {} rounds, first runs by exit code {:?}, \
             {} rerun(s), {calls} calls, {faults} faults injected: {outcomes:?}",
            FAULT_RATE * 100.0,
            self.rounds,
            self.first_runs,
            self.reruns
        );
        eprintln!("{report}");
        write_report(&format!("faults-{step}.txt"), &report);
        // Drawn at random at 20%, never below half of it (the proxy faults a
        // call when a run falls that low by chance): fewer than 5% would be a
        // proxy that does not inject.
        assert!(faults * 20 >= calls, "{report}");
        report
    }
}

/// Writes a test's figures to `target/tmp/NAME`, one line, for the closing notes.
pub fn write_report(name: &str, text: &str) {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, format!("{}\n", text.trim_end()))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

#[test]
fn a_gated_canary_completes_or_stops_cleanly_under_20_percent_injected_faults() {
    let moto = Moto::start().expect("moto_server starts");
    let proxy = FaultProxy::start(&moto.direct_endpoint(), Faults::spread(FAULT_RATE)).unwrap();
    let gate = HealthServer::start(None, None).unwrap();
    let gate_url = gate.url();
    let dir = tempfile::tempdir().unwrap();

    let mut tally = Tally::default();
    for round in 0..ROUNDS {
        let zone = aws_cli::create_zone(&moto, &format!("r{round}.example.com"));
        let name = format!("app.r{round}.example.com");
        aws_cli::create_weighted(
            &moto,
            &zone,
            &name,
            &[("blue", 100, "10.0.0.1"), ("green", 0, "10.0.0.2")],
            1,
        );
        let state = dir.path().join(format!("state-{round}.json"));
        let shift = || -> StepOutput {
            let mut cmd = step(
                "shift-weight",
                &with_state(through(moto.env(), &proxy), &state),
            );
            cmd.args(gated_canary(&zone, &name, &gate_url, "50ms"));
            cmd.args(["--timeout", "90s", "--lock-wait", "30s"]);
            run(&mut cmd)
        };

        let context = format!("round {round}");
        // A clean stop says where the shift stopped.
        let stopped = |out: &StepOutput| {
            if !state.exists() {
                return;
            }
            let doc = read_json(&state);
            let status = doc["traffic"]
                .as_object()
                .and_then(|t| t.values().next())
                .map(|r| r["shift"]["status"].clone());
            assert!(
                status.is_none() || status == Some(Value::from("failed")),
                "{context}: exit 3 left status {status:?}\n{}",
                out.stderr
            );
        };
        tally.until_done_checking(&context, &state, shift, stopped);
        // Converged: traffic on green, as the state says, and the lease released.
        assert_eq!(
            aws_cli::weights(&moto, &zone, &name),
            w(&[("blue", 0), ("green", 100)])
        );
        let doc = read_json(&state);
        let route = doc["traffic"].as_object().unwrap().values().next().unwrap();
        assert_eq!(route["weights"]["green"], 100);
        assert_eq!(route["shift"]["status"], "completed");
        assert!(state_validates(&state));
        assert!(
            !aws_cli::lock_exists(&moto, &zone, &name),
            "round {round}: lease left behind"
        );
    }
    tally.report("shift-weight", &proxy);
}
