//! The step executables, run as a pipeline runs them.

use std::path::PathBuf;
use std::process::{Command, Output};

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

/// Runs a command and returns its output, with stdout and stderr as text.
pub fn run(cmd: &mut Command) -> StepOutput {
    let out: Output = cmd.output().expect("the step runs");
    StepOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
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
