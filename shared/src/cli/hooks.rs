//! Hooks: executables from a folder (`--hooks-dir`, default
//! `.switchyard/hooks`) that a step runs at fixed points, so teams can tie
//! their own checks and notifications into a release.
//!
//! - `pre-<step>` runs before any change; if it fails, the step stops with
//!   nothing changed.
//! - `post-<step>` runs after the step succeeded.
//! - `on-rollback` runs after an automatic rollback.
//!
//! A hook gets `SWITCHYARD_*` variables describing the release (see
//! [`HookEnv`]), its output is shown on stderr, and one that hangs is stopped
//! (its whole process group) at `--hook-timeout`.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::progress::short;
use super::{Code, ExitStatus};
use crate::state::{Role, StateDocument};

/// Where hooks live and how long they may run.
#[derive(Debug, Clone)]
pub struct Hooks {
    dir: PathBuf,
    enabled: bool,
    timeout: Duration,
}

/// Errors of a hook.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("hook {name} failed with exit code {code}; the step stopped before any change. Its output:\n{output}")]
    Failed {
        name: String,
        code: i32,
        output: String,
    },
    #[error("hook {name} did not finish within --hook-timeout {after} and was stopped; the step stopped before any change. Its output:\n{output}")]
    TimedOut {
        name: String,
        after: String,
        output: String,
    },
    #[error("cannot run hook {path}: {error}")]
    Spawn { path: String, error: String },
}

impl ExitStatus for HookError {
    fn exit_code(&self) -> Code {
        match self {
            Self::Failed { .. } | Self::TimedOut { .. } => Code::CheckFailed,
            Self::Spawn { .. } => Code::Usage,
        }
    }
}

/// The variables a hook gets, as `(name, value)` pairs.
#[derive(Debug, Clone, Default)]
pub struct HookEnv(Vec<(String, String)>);

impl HookEnv {
    /// The variables every step sets: `SWITCHYARD_STEP`, `SWITCHYARD_STATE_FILE`,
    /// `SWITCHYARD_ACTOR`, `SWITCHYARD_DRY_RUN` (`0`/`1`), and from the state
    /// `SWITCHYARD_SERVICE`, `SWITCHYARD_VERSION`, `SWITCHYARD_DEPLOYMENT_ID`,
    /// `SWITCHYARD_ACTIVE_STACK`, `SWITCHYARD_STANDBY_STACK` when known.
    pub fn new(step: &str, state_file: &Path, doc: &StateDocument, dry_run: bool) -> Self {
        let mut env = Self::default();
        env.set("SWITCHYARD_STEP", step);
        env.set("SWITCHYARD_STATE_FILE", &state_file.display().to_string());
        env.set("SWITCHYARD_ACTOR", &crate::state::journal::actor());
        env.set("SWITCHYARD_DRY_RUN", if dry_run { "1" } else { "0" });
        if let Some(d) = &doc.deployment {
            env.set_opt("SWITCHYARD_SERVICE", d.service.as_deref());
            env.set_opt("SWITCHYARD_VERSION", d.version.as_deref());
            env.set_opt("SWITCHYARD_DEPLOYMENT_ID", d.id.as_deref());
        }
        let with_role = |role: Role| {
            let names: Vec<&str> = doc
                .stacks
                .iter()
                .filter(|(_, s)| s.role == Some(role))
                .map(|(n, _)| n.as_str())
                .collect();
            names.join(",")
        };
        env.set("SWITCHYARD_ACTIVE_STACK", &with_role(Role::Active));
        env.set("SWITCHYARD_STANDBY_STACK", &with_role(Role::Standby));
        env
    }

    /// Sets (or replaces) a variable.
    pub fn set(&mut self, name: &str, value: &str) {
        self.0.retain(|(k, _)| k != name);
        self.0.push((name.to_owned(), value.to_owned()));
    }

    /// Sets a variable when there is a value.
    pub fn set_opt(&mut self, name: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.set(name, v);
        }
    }

    /// The variables.
    pub fn vars(&self) -> &[(String, String)] {
        &self.0
    }
}

/// A hook that ran and succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRun {
    /// Its name, e.g. `pre-shift-weight`.
    pub name: String,
    /// How long it took.
    pub elapsed: Duration,
}

impl Hooks {
    /// Hooks from `dir`, or none at all when `enabled` is false.
    pub fn new(dir: impl Into<PathBuf>, enabled: bool, timeout: Duration) -> Self {
        Self {
            dir: dir.into(),
            enabled,
            timeout,
        }
    }

    /// No hooks.
    pub fn none() -> Self {
        Self::new(PathBuf::new(), false, Duration::ZERO)
    }

    /// The executable for hook `name`, if there is one.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        if !self.enabled {
            return None;
        }
        let path = self.dir.join(name);
        let meta = std::fs::metadata(&path).ok()?;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(path)
    }

    /// Runs hook `name` if it exists: `Ok(None)` when there is none.
    pub async fn run(&self, name: &str, env: &HookEnv) -> Result<Option<HookRun>, HookError> {
        let Some(path) = self.path(name) else {
            return Ok(None);
        };
        tracing::info!("running hook {}", path.display());
        let started = tokio::time::Instant::now();
        let mut child = Command::new(&path)
            .envs(env.vars().iter().map(|(k, v)| (k, v)))
            .env("SWITCHYARD_HOOK", name)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| HookError::Spawn {
                path: path.display().to_string(),
                error: e.to_string(),
            })?;
        let pid = child.id();
        let out = child.stdout.take().map(|o| echo(name.to_owned(), o));
        let err = child.stderr.take().map(|e| echo(name.to_owned(), e));
        let collect = async {
            let (a, b) = tokio::join!(
                async {
                    match out {
                        Some(h) => h.await.unwrap_or_default(),
                        None => String::new(),
                    }
                },
                async {
                    match err {
                        Some(h) => h.await.unwrap_or_default(),
                        None => String::new(),
                    }
                }
            );
            let status = child.wait().await;
            (status, format!("{a}{b}"))
        };
        match tokio::time::timeout(self.timeout, collect).await {
            Ok((Ok(status), _)) if status.success() => Ok(Some(HookRun {
                name: name.to_owned(),
                elapsed: started.elapsed(),
            })),
            Ok((Ok(status), output)) => Err(HookError::Failed {
                name: name.to_owned(),
                code: status.code().unwrap_or(-1),
                output: tail(&output),
            }),
            Ok((Err(e), _)) => Err(HookError::Spawn {
                path: path.display().to_string(),
                error: e.to_string(),
            }),
            Err(_) => {
                if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                    // The hook and everything it started.
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                Err(HookError::TimedOut {
                    name: name.to_owned(),
                    after: short(self.timeout),
                    output: "(not collected: the hook was stopped)".to_owned(),
                })
            }
        }
    }

    /// Runs a hook after the fact (`post-*`, `on-rollback`): a failure is
    /// reported as a warning, since the step's change is already made.
    pub async fn run_after(&self, name: &str, env: &HookEnv) {
        if let Err(e) = self.run(name, env).await {
            tracing::warn!("{}", first_line(&e.to_string()));
        }
    }
}

/// Copies a hook's output lines to stderr as they come, and keeps them.
fn echo<R>(name: String, reader: R) -> tokio::task::JoinHandle<String>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        let mut kept = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("  [{name}] {line}");
            let _ = writeln!(kept, "{line}");
        }
        kept
    })
}

/// The last 4 KiB of a hook's output.
fn tail(output: &str) -> String {
    let trimmed = output.trim_end();
    if trimmed.len() <= 4096 {
        return trimmed.to_owned();
    }
    let mut start = trimmed.len() - 4096;
    while !trimmed.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &trimmed[start..])
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(dir: &Path, name: &str, body: &str) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[tokio::test]
    async fn hooks_run_with_their_variables_and_fail_loudly() {
        let dir = tempfile::tempdir().unwrap();
        let hooks = Hooks::new(dir.path(), true, Duration::from_secs(10));
        let mut env = HookEnv::default();
        env.set("SWITCHYARD_STEP", "shift-weight");
        assert_eq!(
            hooks.run("pre-shift-weight", &env).await.unwrap(),
            None,
            "no hook, nothing run"
        );
        hook(
            dir.path(),
            "pre-shift-weight",
            "echo \"step=$SWITCHYARD_STEP hook=$SWITCHYARD_HOOK\" > \"$0.out\"",
        );
        let ran = hooks.run("pre-shift-weight", &env).await.unwrap().unwrap();
        assert_eq!(ran.name, "pre-shift-weight");
        let seen = std::fs::read_to_string(dir.path().join("pre-shift-weight.out")).unwrap();
        assert_eq!(seen, "step=shift-weight hook=pre-shift-weight\n");
        hook(
            dir.path(),
            "pre-verify-health",
            "echo not today >&2; exit 3",
        );
        let err = hooks.run("pre-verify-health", &env).await.unwrap_err();
        assert_eq!(err.exit_code(), Code::CheckFailed);
        assert!(err.to_string().contains("failed with exit code 3"), "{err}");
        assert!(err.to_string().ends_with("not today"), "{err}");
        assert_eq!(
            Hooks::none().run("pre-verify-health", &env).await.unwrap(),
            None,
            "--no-hooks"
        );
    }

    #[tokio::test]
    async fn a_hanging_hook_and_its_children_are_stopped_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        hook(
            dir.path(),
            "pre-shift-weight",
            "sleep 30 & sleep 30; echo never",
        );
        let hooks = Hooks::new(dir.path(), true, Duration::from_millis(300));
        let started = std::time::Instant::now();
        let err = hooks
            .run("pre-shift-weight", &HookEnv::default())
            .await
            .unwrap_err();
        assert!(matches!(err, HookError::TimedOut { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
