//! The shipped pipeline, run: `make -f pipelines/Makefile release` for real,
//! as a CI job runs it, on local stand-ins for the cloud (loopback only):
//! moto's S3 holds the service's state (`STATE_URL=s3://BUCKET/KEY`, the only
//! thing the runs share: each starts in a fresh folder, so no `.stage`
//! carries over), HAProxy (Debian's) is the router, and the sample service
//! (`pipelines/demo/sample_service.py`) is each color's stack, brought up and
//! down through deploy-standby's command driver. A steady load goes through
//! HAProxy all along, and not one request may fail.
//!
//! Two releases in a row, each promoted and the old stack retired after a
//! short `RETIRE_AFTER`; a third whose canary breaks under traffic and is
//! rolled back by the pipeline; a fourth promoted and then put back with
//! `make -f pipelines/Makefile rollback`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use switchyard_tests::aws_cli;
use switchyard_tests::haproxy::{Haproxy, Server};
use switchyard_tests::load::{Load, LoadReport};
use switchyard_tests::steps::{bin_dir, run, step, StepOutput};
use switchyard_tests::Moto;

use crate::fixture::{read_json, repo, sample_service};

const SERVICE: &str = "sample";
const BUCKET: &str = "acme-deploy-state";
const KEY: &str = "sample/prod.json";
/// Requests per second through HAProxy, over a few keep-alive connections.
const RATE: u32 = 200;

fn state_url() -> String {
    format!("s3://{BUCKET}/{KEY}")
}

/// Two loopback ports the kernel picked, one per color, held until dropped
/// by sockets that are bound but do not listen (SO_REUSEADDR): meanwhile no
/// other bind to port 0 and no outgoing connection (HAProxy's, the load's,
/// the aws CLI's, a parallel test's) can take them, and the sample service,
/// which binds with SO_REUSEADDR too, can still listen on them. A port picked
/// free and let go would be free for anyone until the color's `up` binds it.
struct Ports {
    holder: Child,
    blue: u16,
    green: u16,
}

impl Ports {
    fn reserve() -> Self {
        let hold = r"
import socket, sys
held = []
for _ in range(2):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('127.0.0.1', 0))
    held.append(s)
print(*(s.getsockname()[1] for s in held), flush=True)
sys.stdin.read()
";
        let mut holder = Command::new("python3")
            .args(["-c", hold])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ports: Vec<u16> = line
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        assert_eq!(ports.len(), 2, "the port holder printed {line:?}");
        Self {
            holder,
            blue: ports[0],
            green: ports[1],
        }
    }

    fn of(&self, color: &str) -> u16 {
        if color == "blue" {
            self.blue
        } else {
            self.green
        }
    }
}

impl Drop for Ports {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// What one `make` run did, and how long it took.
struct MakeRun {
    label: String,
    /// The fresh folder it ran in.
    work: PathBuf,
    out: StepOutput,
    started: SystemTime,
    ended: SystemTime,
    wall: Duration,
}

/// The stand-ins and the pipeline's settings.
struct Release {
    moto: Moto,
    haproxy: Haproxy,
    dir: tempfile::TempDir,
    ports: Ports,
    runs: Vec<MakeRun>,
}

impl Release {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The command driver's templates, as a user of the command driver would
    /// write them for this service (read by deploy-standby from the
    /// environment, so they need no quoting through make). `up` stops what
    /// the color ran before (a standby left by a failed release) and starts
    /// the new version detached on the color's port, with the flags a test
    /// wrote for that version, if any; the driver quotes each field.
    fn driver_env(&self) -> Vec<(String, String)> {
        let dir = self.dir.path().display();
        let svc = sample_service().display().to_string();
        let up = format!(
            "python3 {svc} --stop {dir}/{{color}}.pid >/dev/null && \
             python3 {svc} --daemon --port \"$(cat {dir}/{{color}}.port)\" --version {{version}} \
             --pid-file {dir}/{{color}}.pid --log-file {dir}/{{color}}.log \
             $(cat {dir}/{{version}}.flags 2>/dev/null || true)"
        );
        let down = format!("python3 {svc} --stop {dir}/{{color}}.pid");
        let endpoints = format!("echo http://127.0.0.1:$(cat {dir}/{{color}}.port)");
        vec![
            ("SWITCHYARD_UP_COMMAND".into(), up),
            ("SWITCHYARD_DOWN_COMMAND".into(), down),
            ("SWITCHYARD_ENDPOINTS_COMMAND".into(), endpoints),
        ]
    }

    /// The environment of every process of the pipeline: moto's (dummy
    /// credentials, its endpoint), no hooks, the command driver's templates.
    fn env(&self) -> Vec<(String, String)> {
        let mut env = self.moto.env();
        env.push(("SWITCHYARD_NO_HOOKS".into(), "1".into()));
        env.extend(self.driver_env());
        env
    }

    /// shift-weight's flags for HAProxy, as in pipelines/demo/run.sh: the
    /// runtime API, the backend and its members, the server-state file that a
    /// reload reads, and the lease's lock file; quick gates.
    fn shift_flags(&self) -> String {
        format!(
            "--router haproxy --haproxy-socket {} --backend app --member blue=blue1 \
             --member green=green1 --server-state-file {} --lock-file {} \
             --gate-interval 100ms --gate-successes 3 --gate-failures 1 --drain-timeout 10s",
            self.haproxy.socket().display(),
            self.haproxy.state_file().display(),
            self.path("haproxy.lock").display()
        )
    }

    /// The health URL of `color`'s own stack.
    fn health_url(&self, color: &str) -> String {
        format!("http://127.0.0.1:{}/health", self.ports.of(color))
    }

    /// Runs `make -f pipelines/Makefile <target>` in a fresh folder, with
    /// the pipeline's variables, VERSION `version` and the gates on `color`.
    fn make(&mut self, label: &str, target: &str, version: &str, color: &str, extra: &[&str]) {
        let work = self.path(&format!("run-{}", self.runs.len() + 1));
        std::fs::create_dir(&work).unwrap();
        let mut cmd = Command::new("make");
        cmd.env_clear();
        for key in ["PATH", "HOME", "TMPDIR", "USER"] {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            }
        }
        cmd.env("NO_COLOR", "1")
            .envs(self.env())
            .current_dir(&work)
            .arg("-f")
            .arg(repo().join("pipelines/Makefile"))
            .arg("--no-print-directory")
            .arg(target)
            .arg(format!("SERVICE={SERVICE}"))
            .arg(format!("VERSION={version}"))
            .arg(format!("STATE_URL={}", state_url()))
            .arg(format!("BIN={}", bin_dir().display()))
            .args([
                "SKIP_BAKE=yes",
                "DRIVER=command",
                "CONFIRM=yes",
                "CANARY_STEPS=10,50",
                "VERIFY_FLAGS=--interval 100ms",
                "RETIRE_AFTER=2s",
                "RETIRE_FLAGS=--check-every 500ms",
            ])
            // The new stack's own health URL: through the front, a gate at
            // 10% would mostly probe the old stack.
            .arg(format!("GATE_URL={}", self.health_url(color)))
            .arg(format!("SHIFT_FLAGS={}", self.shift_flags()))
            .args(extra);
        let started = SystemTime::now();
        let clock = Instant::now();
        let out = run(&mut cmd);
        let wall = clock.elapsed();
        eprintln!(
            "--- {label}: make {target} VERSION={version}: exit {} in {:.1}s\n{}{}",
            out.code,
            wall.as_secs_f64(),
            out.stdout,
            out.stderr
        );
        self.runs.push(MakeRun {
            label: label.to_owned(),
            work,
            out,
            started,
            ended: SystemTime::now(),
            wall,
        });
    }

    fn last(&self) -> &MakeRun {
        self.runs.last().unwrap()
    }

    /// Step `name` with the pipeline's environment and the state in S3.
    fn step(&self, name: &str, args: &[&str]) -> StepOutput {
        let mut env = self.env();
        env.push(("SWITCHYARD_STATE".into(), state_url()));
        env.push(("SWITCHYARD_SERVICE".into(), SERVICE.into()));
        let out = run(step(name, &env).args(args));
        assert_eq!(
            out.code, 0,
            "{name} {args:?}:\n{}{}",
            out.stdout, out.stderr
        );
        out
    }

    /// The state document in S3, as the aws CLI reads it.
    fn state(&self) -> Value {
        let to = self.path("state-copy.json");
        aws_cli::aws(
            &self.moto,
            &[
                "s3api",
                "get-object",
                "--bucket",
                BUCKET,
                "--key",
                KEY,
                to.to_str().unwrap(),
            ],
        );
        read_json(&to)
    }

    /// HAProxy's weight of each color's server.
    fn weights(&self) -> BTreeMap<String, u32> {
        ["blue", "green"]
            .into_iter()
            .map(|c| (c.to_owned(), self.haproxy.weight(&format!("{c}1")).unwrap()))
            .collect()
    }

    /// Whether something listens on `color`'s port.
    fn serving(&self, color: &str) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.ports.of(color)));
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        // The sample service runs detached: stop whatever the pipeline left up.
        for color in ["blue", "green"] {
            let _ = Command::new("python3")
                .arg(sample_service())
                .arg("--stop")
                .arg(self.path(&format!("{color}.pid")))
                .output();
        }
    }
}

fn weights(blue: u32, green: u32) -> BTreeMap<String, u32> {
    BTreeMap::from([("blue".to_owned(), blue), ("green".to_owned(), green)])
}

/// The answers of the load between `from` and `to`: (requests, failed).
fn window(load: &LoadReport, from: SystemTime, to: SystemTime) -> (usize, usize) {
    let seen: Vec<_> = load
        .samples
        .iter()
        .filter(|s| s.at >= from && s.at < to)
        .collect();
    let failed = seen.iter().filter(|s| s.version.is_none()).count();
    (seen.len(), failed)
}

fn stack<'a>(doc: &'a Value, color: &str) -> &'a Value {
    &doc["stacks"][color]
}

#[test]
fn two_releases_a_failed_canary_and_a_rollback_run_through_the_makefile_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start().unwrap();
    aws_cli::aws(&moto, &["s3api", "create-bucket", "--bucket", BUCKET]);
    // Each color serves on its own port; the command driver's templates read it.
    let ports = Ports::reserve();
    for color in ["blue", "green"] {
        let port = ports.of(color).to_string();
        std::fs::write(dir.path().join(format!("{color}.port")), port).unwrap();
    }
    let server = |name: &str, color: &str, weight| Server {
        name: name.to_owned(),
        addr: SocketAddr::from(([127, 0, 0, 1], ports.of(color))),
        weight,
    };
    let haproxy =
        Haproxy::start(&[server("blue1", "blue", 100), server("green1", "green", 0)]).unwrap();
    let mut rel = Release {
        moto,
        haproxy,
        dir,
        ports,
        runs: Vec::new(),
    };
    let test_started = Instant::now();

    // Before the first release through the pipeline, the service already runs
    // version 0 as blue behind HAProxy. A user adopting switchyard records
    // that once with the steps themselves: blue brought up (the command
    // driver), verified, and given its 100% by a shift (which marks it
    // active in the state) -- as pipelines/demo/run.sh does, without
    // editing the state by hand.
    rel.step(
        "deploy-standby",
        &[
            "--driver",
            "command",
            "--color",
            "blue",
            "--app-version",
            "0",
        ],
    );
    rel.step("verify-health", &["--stack", "blue", "--interval", "100ms"]);
    let bootstrap_shift: Vec<String> = rel
        .shift_flags()
        .split_whitespace()
        .map(str::to_owned)
        .chain(["--to", "blue", "--steps", "100"].map(str::to_owned))
        .collect();
    let bootstrap_shift: Vec<&str> = bootstrap_shift.iter().map(String::as_str).collect();
    rel.step("shift-weight", &bootstrap_shift);
    assert_eq!(rel.weights(), weights(100, 0));
    assert_eq!(stack(&rel.state(), "blue")["role"], "active");

    let load = Load::start(rel.haproxy.addr(), RATE, 4).unwrap();

    // Releases 1 and 2: each promoted, the old stack retired once RETIRE_AFTER passed.
    for (version, color, old) in [("1", "green", "blue"), ("2", "blue", "green")] {
        rel.make(
            &format!("release {version}"),
            "release",
            version,
            color,
            &[],
        );
        let run = rel.last();
        assert_eq!(
            run.out.code, 0,
            "release {version} failed:\n{}{}",
            run.out.stdout, run.out.stderr
        );
        // Retire waited out RETIRE_AFTER, checking the new stack.
        assert!(
            run.out.stderr.contains("the old stack stays up until"),
            "{}",
            run.out.stderr
        );
        assert!(run.wall >= Duration::from_secs(2), "{:?}", run.wall);
        let stage = run.work.join(format!(".stage/{SERVICE}-{version}"));
        assert!(stage.join("retired").is_file());
        assert_eq!(
            rel.weights(),
            if color == "green" {
                weights(0, 100)
            } else {
                weights(100, 0)
            },
            "HAProxy after release {version}"
        );
        let doc = rel.state();
        assert_eq!(stack(&doc, color)["role"], "active", "{doc:#}");
        assert_eq!(stack(&doc, color)["version"], version, "{doc:#}");
        assert_eq!(stack(&doc, old)["role"], "retired", "{doc:#}");
        // The command driver's down ran: the old color's process is gone.
        assert!(!rel.serving(old), "{old} still serves after retire");
        assert!(!rel.path(&format!("{old}.pid")).exists());
    }

    // Both releases in the history, read from S3 by a process that shares
    // nothing else with the runs: each is two traffic moves (the canary to
    // 50%, the promotion to 100%), after the bootstrap's.
    let story = history(&rel);
    let moves = story["releases"].as_array().unwrap();
    assert_eq!(moves.len(), 5, "{story:#}");
    for (i, (target, version, to)) in [
        ("green", "1", weights(50, 50)),
        ("green", "1", weights(0, 100)),
        ("blue", "2", weights(50, 50)),
        ("blue", "2", weights(100, 0)),
    ]
    .into_iter()
    .enumerate()
    {
        let m = &moves[i + 1];
        assert_eq!(m["kind"], "shift", "{m:#}");
        assert_eq!(m["target"], target, "{m:#}");
        assert_eq!(m["version"], version, "{m:#}");
        assert_eq!(m["outcome"], "completed", "{m:#}");
        assert_eq!(m["to"], serde_json::to_value(&to).unwrap(), "{m:#}");
    }

    // Release 3 breaks under traffic: healthy when verified, its health
    // fails once it has served a request. The canary's gate fails at 10%,
    // shift-weight puts the weights back by itself (exit 4), make stops there.
    std::fs::write(rel.path("3.flags"), "--breaks-after 1").unwrap();
    rel.make("release 3 (breaks)", "release", "3", "green", &[]);
    let run = rel.last();
    assert_ne!(run.out.code, 0, "{}{}", run.out.stdout, run.out.stderr);
    assert!(
        run.out.stderr.contains("rolled back to blue=100,green=0"),
        "{}",
        run.out.stderr
    );
    let stage = run.work.join(format!(".stage/{SERVICE}-3"));
    assert!(stage.join("verified").is_file());
    assert!(!stage.join("canary").exists());
    assert_eq!(rel.weights(), weights(100, 0), "after the failed canary");
    let doc = rel.state();
    assert_eq!(stack(&doc, "blue")["role"], "active", "{doc:#}");
    assert_eq!(stack(&doc, "blue")["version"], "2", "{doc:#}");
    assert_eq!(stack(&doc, "green")["version"], "3", "{doc:#}");
    let last = history(&rel)["releases"]
        .as_array()
        .unwrap()
        .last()
        .cloned();
    let last = last.unwrap();
    assert_eq!(last["target"], "green", "{last:#}");
    assert_eq!(last["outcome"], "rolled back", "{last:#}");

    // Release 4 promoted, then `make rollback` before retire (make is asked
    // for the stages up to `promoted` only: once retire has scaled blue
    // down, rollback refuses by design).
    std::fs::remove_file(rel.path("3.flags")).unwrap();
    let promoted = format!(".stage/{SERVICE}-4/promoted");
    rel.make("release 4 (to promoted)", &promoted, "4", "green", &[]);
    let run = rel.last();
    assert_eq!(run.out.code, 0, "{}{}", run.out.stdout, run.out.stderr);
    assert_eq!(rel.weights(), weights(0, 100), "release 4 promoted");
    assert!(rel.serving("blue"), "blue is retired before the rollback");
    rel.make("rollback", "rollback", "4", "green", &[]);
    let run = rel.last();
    assert_eq!(run.out.code, 0, "{}{}", run.out.stdout, run.out.stderr);
    // The promotion was a second shift-weight run (`--steps 100` after the
    // canary's `--steps 10,50`); its rollback goes back to before the
    // release, not to the canary's split.
    assert_eq!(rel.weights(), weights(100, 0), "after make rollback");
    assert!(
        run.out
            .stderr
            .contains("blue=100,green=0 (was blue=0,green=100)")
            || run
                .out
                .stdout
                .contains("blue=100,green=0 (was blue=0,green=100)"),
        "{}{}",
        run.out.stdout,
        run.out.stderr
    );
    let rolled_back = SystemTime::now();

    // Let the load run on a little after the last change, then stop it.
    let settle = Instant::now() + Duration::from_millis(500);
    while Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = load.stop();
    let after: BTreeSet<String> = report
        .samples
        .iter()
        .filter(|s| s.at > rolled_back)
        .filter_map(|s| s.version.clone())
        .collect();

    // The figures of the run, for the closing note.
    eprintln!("release pipeline figures:");
    for r in &rel.runs {
        let (sent, failed) = window(&report, r.started, r.ended);
        eprintln!(
            "  {:<24} exit {:>3}  {:>5.1}s  {sent:>5} requests, {failed} failed",
            r.label,
            r.out.code,
            r.wall.as_secs_f64()
        );
    }
    eprintln!(
        "  make runs: {} ({} releases, 1 rollback); requests sent: {}; failed: {}; \
         {:.0} requests/s; whole test {:.1}s",
        rel.runs.len(),
        rel.runs.len() - 1,
        report.samples.len(),
        report.failures(),
        report.rate(),
        test_started.elapsed().as_secs_f64()
    );
    assert_eq!(report.failures(), 0, "failed requests: {:?}", report.errors);
    assert!(report.samples.len() > 100, "the load hardly ran");
    assert_eq!(
        after.into_iter().collect::<Vec<_>>(),
        ["sample-service 2"],
        "after the rollback only release 2 answers"
    );
}

/// `switchyard history --output json`, from the state in S3.
fn history(rel: &Release) -> Value {
    let out = rel.step("switchyard", &["history", "--output", "json"]);
    serde_json::from_str(out.stdout.trim()).unwrap()
}
