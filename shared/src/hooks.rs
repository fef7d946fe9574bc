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
//!
//! A leaf module: the runner (`crate::step`) gives every step one
//! [`StepHooks`]; a command calls [`StepHooks::before_change`] at the point
//! where it has decided and not yet changed anything, and the runner runs
//! the hook after the step ([`StepHooks::after`]).

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::outcome::{Code, ExitStatus};
use crate::wait::progress::short;

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
///
/// Every hook gets `SWITCHYARD_STEP`, `SWITCHYARD_STATE_FILE`,
/// `SWITCHYARD_ACTOR`, `SWITCHYARD_DRY_RUN` (`0`/`1`) from the runner, the
/// release's `SWITCHYARD_SERVICE`, `SWITCHYARD_VERSION`,
/// `SWITCHYARD_DEPLOYMENT_ID`, `SWITCHYARD_ACTIVE_STACK` and
/// `SWITCHYARD_STANDBY_STACK` from the state when known, and what the step adds.
#[derive(Debug, Clone, Default)]
pub struct HookEnv(Vec<(String, String)>);

impl HookEnv {
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

    /// Sets (or replaces) every variable of `other`.
    pub fn extend(&mut self, other: &HookEnv) {
        for (name, value) in &other.0 {
            self.set(name, value);
        }
    }

    /// The value of a variable, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The variables.
    pub fn vars(&self) -> &[(String, String)] {
        &self.0
    }
}

/// How a step ended, for the hooks that run after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepEnd {
    /// It did what it was asked: `post-<step>`, `SWITCHYARD_OUTCOME=ok`.
    Done,
    /// It ran to its end and its check failed (an unhealthy verdict):
    /// `post-<step>`, `SWITCHYARD_OUTCOME=failed`.
    CheckFailed,
    /// It undid its change by itself: `on-rollback`, `SWITCHYARD_OUTCOME=rolled_back`.
    RolledBack,
    /// It stopped otherwise: no hook runs.
    Stopped,
}

/// One step's hooks: the runner makes it, the command reaches its
/// pre-change point through it, and the runner ends it.
#[derive(Debug)]
pub struct StepHooks {
    hooks: Hooks,
    step: &'static str,
    dry_run: bool,
    env: HookEnv,
    reached: bool,
}

impl StepHooks {
    /// The hooks of `step`, with the variables every hook of it gets. A dry
    /// run changes nothing, so it runs no hooks.
    pub fn new(hooks: Hooks, step: &'static str, base: HookEnv, dry_run: bool) -> Self {
        Self {
            hooks,
            step,
            dry_run,
            env: base,
            reached: false,
        }
    }

    /// No hooks at all (tests, and steps run from code).
    pub fn none(step: &'static str) -> Self {
        Self::new(Hooks::none(), step, HookEnv::default(), false)
    }

    /// The step's pre-change point: runs `pre-<step>` with the step's
    /// variables and `vars`. `Ok(true)` when a hook ran, so that the step
    /// reads the state again (the hook may have written to it).
    pub async fn before_change(&mut self, vars: &HookEnv) -> Result<bool, HookError> {
        self.env.extend(vars);
        if self.dry_run {
            return Ok(false);
        }
        self.reached = true;
        let ran = self
            .hooks
            .run(&format!("pre-{}", self.step), &self.env)
            .await?;
        Ok(ran.is_some())
    }

    /// The executable of hook `name`, for plans: a dry run lists the hooks
    /// a real run would run.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.hooks.path(name)
    }

    /// Sets a variable for the hooks that run after the step.
    pub fn set(&mut self, name: &str, value: &str) {
        self.env.set(name, value);
    }

    /// The variables the hooks get so far.
    pub fn env(&self) -> &HookEnv {
        &self.env
    }

    /// After the step: `post-<step>` or `on-rollback` with `vars` added,
    /// when the step reached its pre-change point; nothing otherwise. A
    /// failing hook here is a warning: the step's change is made.
    pub async fn after(&mut self, end: StepEnd, vars: &HookEnv) {
        if !self.reached {
            return;
        }
        let (name, outcome) = match end {
            StepEnd::Done => (format!("post-{}", self.step), "ok"),
            StepEnd::CheckFailed => (format!("post-{}", self.step), "failed"),
            StepEnd::RolledBack => ("on-rollback".to_owned(), "rolled_back"),
            StepEnd::Stopped => return,
        };
        self.env.set("SWITCHYARD_OUTCOME", outcome);
        self.env.extend(vars);
        self.hooks.run_after(&name, &self.env).await;
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
    use std::path::Path;

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
