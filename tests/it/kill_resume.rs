//! Kill and resume: a step is killed with SIGKILL at many points — just
//! after each change point it records in the journal, and at random times —
//! then run again as a CI retry would. Every run must end with a state file
//! that validates, traffic only where the state says (on the verified stack),
//! the lease released, and the shift completed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_tests::aws_cli::w;
use switchyard_tests::fault_proxy::calls_at;
use switchyard_tests::steps::{run, step, StepOutput};
use switchyard_tests::{HealthServer, Moto};

use crate::fixture::{gated_canary, read_json, runtime, sdk_config, state_validates, with_state};

/// How the kill point was chosen.
#[derive(Debug, Clone, Copy)]
pub enum KillAt {
    /// Once the journal holds this many entries.
    Journal(usize),
    /// Once the step has sent this many AWS calls (counted by the recording
    /// proxy in front of moto): the call has left, its answer is lost.
    Call(usize),
    /// This long after the start.
    After(Duration),
    /// Not at all: the run that measures a whole run.
    Never,
}

/// What one run that was to be killed did.
#[derive(Debug, Clone, Copy)]
pub struct Ran {
    /// It was killed mid-run (not finished first).
    pub killed: bool,
    /// The AWS calls it sent.
    pub calls: usize,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Runs `cmd` and SIGKILLs it at `at`.
pub fn run_and_kill(mut cmd: Command, state: &Path, at: KillAt) -> Ran {
    let endpoint = cmd
        .get_envs()
        .find(|(k, _)| *k == "AWS_ENDPOINT_URL")
        .and_then(|(_, v)| v)
        .map(|v| v.to_string_lossy().into_owned())
        .unwrap_or_default();
    let before = sdk_calls(&endpoint);
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the step starts");
    let started = Instant::now();
    loop {
        let calls = sdk_calls(&endpoint) - before;
        if child.try_wait().expect("the step is waited on").is_some() {
            return Ran {
                killed: false,
                calls,
                elapsed: started.elapsed(),
            };
        }
        let due = match at {
            KillAt::Journal(n) => journal_len(state) >= n,
            KillAt::Call(n) => calls >= n,
            KillAt::After(d) => started.elapsed() >= d,
            KillAt::Never => false,
        };
        if due {
            let _ = child.kill();
            let status = child.wait().expect("the killed step is reaped");
            return Ran {
                killed: status.code().is_none(),
                calls,
                elapsed: started.elapsed(),
            };
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the step neither finished nor reached its kill point"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The calls the steps (not the aws CLI of the fixtures) sent through the
/// recording proxy at `endpoint`.
fn sdk_calls(endpoint: &str) -> usize {
    calls_at(endpoint).map_or(0, |calls| {
        calls
            .iter()
            .filter(|c| c.user_agent.contains("aws-sdk-rust"))
            .count()
    })
}

/// Kills a step at every AWS call a whole run makes, then at random moments
/// within a whole run's length, until `want` runs were really killed mid-run.
/// `play` runs one round: the run to kill, then the retry and the checks.
/// Writes and returns the figures.
pub fn campaign(step: &str, want: usize, mut play: impl FnMut(KillAt) -> Ran) -> String {
    let whole = play(KillAt::Never);
    assert!(!whole.killed);
    // Random moments fall within the shortest whole run seen.
    let mut length = whole.elapsed;
    let (mut rounds, mut kills, mut at_calls) = (1, 0, 0);
    let tally = |ran: Ran, length: &mut Duration| {
        if !ran.killed {
            *length = (*length).min(ran.elapsed);
        }
        usize::from(ran.killed)
    };
    for n in 1..=whole.calls {
        rounds += 1;
        let killed = tally(play(KillAt::Call(n)), &mut length);
        kills += killed;
        at_calls += killed;
    }
    let mut random = 0;
    while kills < want && random < 3 * want {
        random += 1;
        rounds += 1;
        let at = length.mul_f64(fastrand::f64());
        kills += tally(play(KillAt::After(at)), &mut length);
    }
    let report = format!(
        "{step}: {rounds} rounds, {kills} killed mid-run ({at_calls} just after each of the \
         {} AWS calls of a whole run, the rest at random within {length:?}), every rerun converged",
        whole.calls
    );
    eprintln!("{report}");
    crate::faults::write_report(&format!("kill-{step}.txt"), &report);
    assert!(kills >= want, "{report}: fewer than {want} kills");
    report
}

fn journal_len(state: &Path) -> usize {
    std::fs::read(state)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|d| d["journal"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// Runs of shift-weight that must really be killed mid-run.
const SHIFT_KILLS: usize = 30;

#[test]
fn shift_weight_killed_at_every_change_point_and_at_random_resumes_to_a_consistent_end() {
    let moto = Moto::start().expect("moto_server starts");
    let gate = HealthServer::start(None, None).unwrap();
    let gate_url = gate.url();
    let dir = tempfile::tempdir().unwrap();
    let mut round = 0;
    let mut kills = 0;
    let mut moto_artifacts = 0;
    let r53 = Route53::new(&moto);
    let zone = r53.zone.clone();

    let mut play = |at: KillAt| {
        round += 1;
        let name = format!("app{round}.example.com");
        r53.create_weighted(&name);
        let state = dir.path().join(format!("state-{round}.json"));
        let shift = || {
            let mut cmd = step("shift-weight", &with_state(moto.env(), &state));
            cmd.args(gated_canary(&zone, &name, &gate_url, "20ms"));
            cmd
        };
        let killed = run_and_kill(shift(), &state, at).killed;
        let after_kill = std::fs::read_to_string(&state).unwrap_or_default();
        if state.exists() {
            assert!(
                state_validates(&state),
                "round {round} ({at:?}): state invalid after the kill"
            );
        }
        // The CI retry. The killed step's last call still reaches moto, as it
        // would reach AWS; the retry starts once it landed.
        moto.wait_idle();
        let out: StepOutput = run(&mut shift());
        // A moto artifact, seen in a few of a hundred kills while the killed
        // step was releasing its lease: moto then refuses the retry's lease
        // CREATE as "already exists" although it lists no such record (an
        // interrupted DELETE leaves its duplicate check and its listing out of
        // step); Route53 has one record set per name and type. Such a round
        // is counted, not judged; there must be few.
        if out.code == 5
            && out.stderr.contains("refused as a duplicate")
            && r53.lock_values(&name).is_empty()
        {
            moto_artifacts += 1;
            return killed;
        }
        assert_eq!(
            out.code, 0,
            "round {round} ({at:?}, killed {killed}): the rerun must finish:\n{}\nstate after the kill: {after_kill}",
            out.stderr
        );
        assert!(state_validates(&state), "round {round}");
        let (weights, locked) = r53.weights_and_lock(&name);
        assert_eq!(
            weights,
            w(&[("blue", 0), ("green", 100)]),
            "round {round} ({at:?})"
        );
        let doc = read_json(&state);
        let route = doc["traffic"].as_object().unwrap().values().next().unwrap();
        assert_eq!(
            route["weights"],
            serde_json::json!({"blue": 0, "green": 100})
        );
        assert_eq!(
            route["shift"]["status"], "completed",
            "round {round} ({at:?})"
        );
        assert!(!locked, "round {round} ({at:?}): lease left behind");
        killed
    };

    // Every change point the journal records: a canary of three steps writes
    // twelve entries (started, gate, then submitted/verified/gate per step, completed).
    for n in 0..=12 {
        kills += usize::from(play(KillAt::Journal(n)));
    }
    // And at random moments within a run's length, measured here on this
    // machine (a fixed range would miss on a faster or slower one), until
    // the wanted number of runs were really killed mid-run.
    let started = Instant::now();
    assert!(
        !play(KillAt::After(Duration::from_secs(120))),
        "a whole run"
    );
    let length = started.elapsed();
    let mut random_rounds = 0;
    while kills < SHIFT_KILLS && random_rounds < 3 * SHIFT_KILLS {
        random_rounds += 1;
        let at = length.mul_f64(fastrand::f64());
        kills += usize::from(play(KillAt::After(at)));
    }
    let report = format!(
        "shift-weight: {round} rounds, {kills} killed mid-run (13 at journal change points, \
         the rest at random within a run of {length:?}), every rerun converged \
         ({moto_artifacts} skipped: moto refused the lease CREATE with no record listed)"
    );
    eprintln!("{report}");
    crate::faults::write_report("kill-shift-weight.txt", &report);
    assert!(
        kills >= SHIFT_KILLS,
        "only {kills} runs were killed before they finished"
    );
    assert!(
        moto_artifacts <= 3,
        "{moto_artifacts} rounds hit the moto artifact in {round}"
    );
}

/// Route53 in moto through the SDK, in process: set-up and checks stay fast
/// over many rounds (the aws CLI takes most of a second a call).
struct Route53 {
    rt: tokio::runtime::Runtime,
    client: aws_sdk_route53::Client,
    zone: String,
}

impl Route53 {
    fn new(moto: &Moto) -> Self {
        let client =
            aws_sdk_route53::Client::new(&sdk_config(&moto.direct_endpoint(), "us-east-1"));
        let rt = runtime();
        let zone = rt
            .block_on(
                client
                    .create_hosted_zone()
                    .name("example.com")
                    .caller_reference("kill-resume")
                    .send(),
            )
            .unwrap()
            .hosted_zone
            .unwrap()
            .id
            .trim_start_matches("/hostedzone/")
            .to_owned();
        Self { rt, client, zone }
    }

    fn create_weighted(&self, name: &str) {
        use aws_sdk_route53::types::{
            Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
        };
        let set = |id: &str, weight: i64, ip: &str| {
            Change::builder()
                .action(ChangeAction::Create)
                .resource_record_set(
                    ResourceRecordSet::builder()
                        .name(name)
                        .r#type(RrType::A)
                        .set_identifier(id)
                        .weight(weight)
                        .ttl(1)
                        .resource_records(ResourceRecord::builder().value(ip).build().unwrap())
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap()
        };
        let batch = ChangeBatch::builder()
            .changes(set("blue", 100, "10.0.0.1"))
            .changes(set("green", 0, "10.0.0.2"))
            .build()
            .unwrap();
        self.rt
            .block_on(
                self.client
                    .change_resource_record_sets()
                    .hosted_zone_id(&self.zone)
                    .change_batch(batch)
                    .send(),
            )
            .unwrap();
    }

    /// Every record set of the zone.
    fn record_sets(&self) -> Vec<aws_sdk_route53::types::ResourceRecordSet> {
        self.rt
            .block_on(
                self.client
                    .list_resource_record_sets()
                    .hosted_zone_id(&self.zone)
                    .send(),
            )
            .unwrap()
            .resource_record_sets
    }

    /// The values of `name`'s lease records.
    fn lock_values(&self, name: &str) -> Vec<String> {
        let lock = format!("_switchyard-lock.{name}.");
        self.record_sets()
            .iter()
            .filter(|s| s.name() == lock)
            .flat_map(|s| s.resource_records().iter().map(|r| r.value().to_owned()))
            .collect()
    }

    /// The weights of `name`'s group, and whether its lease record exists.
    fn weights_and_lock(&self, name: &str) -> (std::collections::BTreeMap<String, u64>, bool) {
        let fqdn = format!("{name}.");
        let lock = format!("_switchyard-lock.{name}.");
        let mut weights = std::collections::BTreeMap::new();
        let mut locked = false;
        for set in self.record_sets() {
            if set.name() == fqdn {
                weights.insert(
                    set.set_identifier().unwrap_or_default().to_owned(),
                    u64::try_from(set.weight().unwrap_or(-1)).unwrap_or(u64::MAX),
                );
            } else if set.name() == lock {
                locked = true;
            }
        }
        (weights, locked)
    }
}
