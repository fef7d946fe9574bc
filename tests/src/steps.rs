//! The step executables, run as a pipeline runs them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::fault_proxy::{calls_at, Call};

/// The folder holding the built step executables: `SWITCHYARD_BIN_DIR`, else
/// the cargo target folder this test binary was built into.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SWITCHYARD_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test binary has a path");
    let mut dir = exe
        .parent()
        .expect("the test binary is in a folder")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// A command for step `name` with a clean environment plus `env`.
pub fn step(name: &str, env: &[(String, String)]) -> Command {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --workspace --bins` first (make test does)",
        path.display()
    );
    let mut cmd = Command::new(path);
    cmd.env_clear();
    for key in ["PATH", "HOME", "TMPDIR"] {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// Every executable of the workspace (what `make dist` ships).
pub const EXECUTABLES: [&str; 6] = [
    "shift-weight",
    "verify-health",
    "register-host",
    "switchyard",
    "bake-ami",
    "deploy-standby",
];

/// The steps whose AWS calls are checked against their `--print-iam-policy`: all of them.
pub const IAM_AUDITED: &[&str] = &EXECUTABLES;

/// Runs a command and returns its output, with stdout and stderr as text.
///
/// When the command is a step pointed (`AWS_ENDPOINT_URL`) at a recording
/// proxy, every AWS call it made is checked against the IAM policy the same
/// command line prints with `--print-iam-policy`: a call the policy does not
/// allow fails the test (least privilege, checked in every integration test).
pub fn run(cmd: &mut Command) -> StepOutput {
    let endpoint = cmd
        .get_envs()
        .find(|(k, _)| *k == "AWS_ENDPOINT_URL")
        .and_then(|(_, v)| v)
        .map(|v| v.to_string_lossy().into_owned());
    let seen_before = endpoint
        .as_deref()
        .and_then(calls_at)
        .map_or(0, |c| c.len());
    let out: Output = cmd.output().expect("the step runs");
    let output = StepOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    if let Some(calls) = endpoint.as_deref().and_then(calls_at) {
        audit(cmd, calls.get(seen_before..).unwrap_or_default());
    }
    output
}

/// Checks the SDK calls made while `cmd` ran against the policy it prints:
/// each call's action on each resource it names, with the conditions its
/// request carries the keys of (see [`crate::iam`] for what is and is not
/// evaluated); a call whose resources the request does not tell is checked
/// by its action only.
fn audit(cmd: &Command, calls: &[Call]) {
    let program = Path::new(cmd.get_program());
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !IAM_AUDITED.contains(&name.as_str()) {
        return;
    }
    // Fixtures call through the aws CLI at the same time; the steps are the SDK's.
    let made: Vec<&Call> = calls
        .iter()
        .filter(|c| c.user_agent.contains("aws-sdk-rust"))
        .collect();
    if made.is_empty() {
        return;
    }
    let mut policy_cmd = Command::new(program);
    policy_cmd.env_clear();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            policy_cmd.env(k, v);
        }
    }
    policy_cmd.args(cmd.get_args()).arg("--print-iam-policy");
    let out = policy_cmd.output().expect("the step runs");
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert!(
        out.status.success(),
        "{name} {args:?} --print-iam-policy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let policy: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("--print-iam-policy prints JSON");
    let allowed: BTreeSet<String> = policy["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["Action"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_ascii_lowercase))
        .collect();
    let mut denied: BTreeSet<String> = BTreeSet::new();
    for call in made {
        if let Some(needs) = &call.needs {
            for need in needs.iter().filter(|n| !crate::iam::allows(&policy, n)) {
                denied.insert(format!(
                    "{} on {}{}",
                    need.action,
                    need.resource,
                    if need.context.is_empty() {
                        String::new()
                    } else {
                        format!(" with {:?}", need.context)
                    }
                ));
            }
        } else {
            let action = call.iam_action();
            if !allowed.contains(&action.to_ascii_lowercase()) {
                denied.insert(action);
            }
        }
    }
    assert!(
        denied.is_empty(),
        "{name} {args:?} called {denied:#?}, which its --print-iam-policy does not allow:\n{policy:#}"
    );
}

/// What a step printed and how it exited.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Its result.
    pub stdout: String,
    /// Its logs.
    pub stderr: String,
}
