//! What the integration tests have in common: a moto server with a temp dir
//! for the state file (and a hosted zone holding the blue/green group most of
//! them shift), the environment a step runs with, the state file and a step's
//! JSON read back, and in-process SDK clients on moto. The aws CLI helpers
//! are the harness's ([`switchyard_tests::aws_cli`]).

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use switchyard::stack::Wait;
use switchyard_tests::aws_cli;
use switchyard_tests::steps::{run, step, StepOutput};
use switchyard_tests::Moto;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The weighted record group the shift tests move: blue and green.
pub const NAME: &str = "app.example.com";

/// Gate flags that decide at the first probe (after a short interval).
pub const FAST_GATE: [&str; 6] = [
    "--gate-successes",
    "1",
    "--gate-interval",
    "50ms",
    "--probe-timeout",
    "30s",
];

/// One test's moto server, and a temp dir for its state file and whatever
/// else it writes.
pub struct Fixture {
    pub moto: Moto,
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        Self {
            moto: Moto::start().expect("moto_server starts"),
            dir: tempfile::tempdir().expect("a temp dir"),
        }
    }

    /// `name` in the temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The state file.
    pub fn state(&self) -> PathBuf {
        self.path("switchyard-state.json")
    }

    /// The state document, as the steps left it.
    pub fn doc(&self) -> Value {
        read_json(&self.state())
    }

    /// Replaces the state document.
    pub fn write_doc(&self, doc: &Value) {
        std::fs::write(self.state(), serde_json::to_string_pretty(doc).unwrap()).unwrap();
    }

    /// moto's environment, with the state file.
    pub fn env(&self) -> Vec<(String, String)> {
        with_state(self.moto.env(), &self.state())
    }

    /// The hooks folder (`SWITCHYARD_HOOKS_DIR`); [`Fixture::hook`] makes it.
    pub fn hooks(&self) -> PathBuf {
        self.path("hooks")
    }

    /// Writes hook `name`, a shell script running `body`.
    pub fn hook(&self, name: &str, body: &str) {
        std::fs::create_dir_all(self.hooks()).unwrap();
        write_script(&self.hooks().join(name), body);
    }

    /// Step `name` with moto's environment, the state file `state` and the
    /// hooks in `hooks` (none when `None`).
    pub fn command(
        &self,
        name: &str,
        state: &Path,
        args: &[&str],
        hooks: Option<&Path>,
    ) -> Command {
        let mut env = with_state(self.moto.env(), state);
        match hooks {
            Some(dir) => env.push(("SWITCHYARD_HOOKS_DIR".into(), dir.display().to_string())),
            None => env.push(("SWITCHYARD_NO_HOOKS".into(), "1".into())),
        }
        let mut cmd = step(name, &env);
        cmd.args(args);
        cmd
    }

    /// Runs step `name` on the state file, without hooks.
    pub fn run(&self, name: &str, args: &[&str]) -> StepOutput {
        self.run_hooks(name, args, None)
    }

    /// Runs step `name` on the state file with the hooks in `hooks` (none when `None`).
    pub fn run_hooks(&self, name: &str, args: &[&str], hooks: Option<&Path>) -> StepOutput {
        run(&mut self.command(name, &self.state(), args, hooks))
    }

    /// Runs `switchyard` (the admin executable) with moto's environment and the state file.
    pub fn switchyard(&self, args: &[&str]) -> StepOutput {
        run(step("switchyard", &self.env()).args(args))
    }

    /// The ids of moto's Route53 health checks, sorted.
    pub fn health_check_ids(&self) -> Vec<String> {
        let out = aws_cli::aws(&self.moto, &["route53", "list-health-checks"]);
        let mut ids: Vec<String> = out["HealthChecks"]
            .as_array()
            .expect("health checks")
            .iter()
            .map(|h| h["Id"].as_str().expect("an id").to_owned())
            .collect();
        ids.sort();
        ids
    }
}

/// A [`Fixture`] whose moto holds the hosted zone `example.com`.
pub struct World {
    fixture: Fixture,
    pub zone: String,
}

impl Deref for World {
    type Target = Fixture;

    fn deref(&self) -> &Fixture {
        &self.fixture
    }
}

impl World {
    /// The zone, empty.
    pub fn new() -> Self {
        let fixture = Fixture::new();
        let zone = aws_cli::create_zone(&fixture.moto, "example.com");
        Self { fixture, zone }
    }

    /// The zone holding [`NAME`] at blue=100 / green=0 (TTL 1 s).
    pub fn blue_green() -> Self {
        let world = Self::new();
        aws_cli::create_weighted(
            &world.moto,
            &world.zone,
            NAME,
            &[("blue", 100, "10.0.0.1"), ("green", 0, "10.0.0.2")],
            1,
        );
        world
    }

    /// The weights of [`NAME`], as the aws CLI sees them.
    pub fn weights(&self) -> BTreeMap<String, u64> {
        aws_cli::weights(&self.moto, &self.zone, NAME)
    }

    /// The record sets named `name` in the zone, as the aws CLI sees them.
    pub fn records(&self, name: &str) -> Vec<Value> {
        let fqdn = format!("{name}.");
        aws_cli::records(&self.moto, &self.zone)
            .into_iter()
            .filter(|r| r["Name"] == fqdn.as_str())
            .collect()
    }

    /// Runs shift-weight on [`NAME`] (no settle time) with the state file.
    pub fn shift(&self, args: &[&str]) -> StepOutput {
        self.shift_env(args, &[])
    }

    /// [`World::shift`] with more environment variables.
    pub fn shift_env(&self, args: &[&str], env: &[(&str, &str)]) -> StepOutput {
        let mut all = self.env();
        all.extend(env_of(env));
        let mut cmd = step("shift-weight", &all);
        cmd.args([
            "--zone-id",
            &self.zone,
            "--record-name",
            NAME,
            "--settle",
            "0s",
        ]);
        cmd.args(args);
        run(&mut cmd)
    }
}

/// `env` with `SWITCHYARD_STATE` naming `state`.
pub fn with_state(mut env: Vec<(String, String)>, state: &Path) -> Vec<(String, String)> {
    env.push(("SWITCHYARD_STATE".into(), state.display().to_string()));
    env
}

/// `[("KEY", "value"), ...]` as an environment for [`step`].
pub fn env_of(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A JSON file (a state file, a manifest), parsed.
pub fn read_json(path: &Path) -> Value {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("{} cannot be read: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The `action` of every journal entry, in order.
pub fn journal_actions(doc: &Value) -> Vec<String> {
    doc["journal"]
        .as_array()
        .expect("a journal")
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The one JSON object a step printed (`--output json`), whatever its exit code.
pub fn json(out: &StepOutput) -> Value {
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}):\n{}{}",
            out.stdout, out.stderr
        )
    })
}

/// [`json`] of a step that must have exited 0.
pub fn ok_json(out: &StepOutput) -> Value {
    assert_eq!(
        out.code, 0,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    json(out)
}

/// Whether `switchyard state validate` accepts the state file.
pub fn state_validates(state: &Path) -> bool {
    let mut cmd = step("switchyard", &[]);
    cmd.args(["state", "validate"]).arg(state);
    run(&mut cmd).code == 0
}

/// shift-weight's arguments for a canary of `name` in `zone` to green
/// through 10, 50 and 100%, gated by `gate_url` probed every `interval`.
pub fn gated_canary<'a>(
    zone: &'a str,
    name: &'a str,
    gate_url: &'a str,
    interval: &'a str,
) -> [&'a str; 16] {
    [
        "--zone-id",
        zone,
        "--record-name",
        name,
        "--settle",
        "0s",
        "--to",
        "green",
        "--steps",
        "10,50,100",
        "--gate-url",
        gate_url,
        "--gate-successes",
        "1",
        "--gate-interval",
        interval,
    ]
}

/// Writes an executable shell script (a hook, a stand-in for an executable).
pub fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `text` decoded by `base64 -d`, as a host decodes its user-data.
pub fn base64_decode(text: &str) -> Vec<u8> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("base64 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("base64 reads");
    child.wait_with_output().expect("base64 ends").stdout
}

/// The repository's root folder.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package is in the repository")
        .to_path_buf()
}

/// The demo's sample service (`pipelines/demo/sample_service.py`).
pub fn sample_service() -> PathBuf {
    repo()
        .join("pipelines/demo/sample_service.py")
        .canonicalize()
        .expect("the sample service exists")
}

/// A minute's wait for the library's stack code, never cancelled.
pub fn wait() -> Wait {
    Wait {
        deadline: Instant::now() + Duration::from_secs(60),
        cancel: CancellationToken::new(),
    }
}

/// The `step` of every journal entry of a state document, in order.
pub fn journal_steps(doc: &Value) -> Vec<&str> {
    doc["journal"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| e["step"].as_str().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

/// SDK configuration for moto at `endpoint` in `region`, with moto's test
/// credentials; each service's `Client::new` takes it.
pub fn sdk_config(endpoint: &str, region: &'static str) -> aws_config::SdkConfig {
    use aws_sdk_route53::config::{
        BehaviorVersion, Credentials, Region, SharedCredentialsProvider,
    };
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .http_client(switchyard::aws::config::http_client())
        .region(Region::from_static(region))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "testing", "testing", None, None, "test",
        )))
        .build()
}

/// A runtime for SDK calls from a synchronous test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
