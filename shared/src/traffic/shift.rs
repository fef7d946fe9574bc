//! The shift engine: walks a plan of weights step by step through any
//! [`Router`], with a health gate after each step and an automatic rollback.
//!
//! The order of a step is fixed: one atomic change, a wait until the provider
//! has it everywhere (INSYNC), a read-back, a wait for clients to catch up
//! (the record's TTL), the gate, the pause. The weights before the shift are
//! written to the state before the first change; every change is journaled
//! and the state saved after it, so a killed run can be resumed or rolled back.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::plan::{self, Intent, PlanError};
use super::{format_weights, Lease, LeaseRequest, Router, TrafficError};
use crate::health::analysis::{self, AnalysisReport, Background, Bound, Phase, Placeholders};
use crate::health::Gate;
use crate::hooks::{HookEnv, HookError, StepHooks};
use crate::lease;
use crate::outcome::{Code, ExitStatus, StepReport};
use crate::state::{
    Change, Health, JournalEntry, Outcome, Role, RouteState, ShiftProgress, ShiftStatus,
    StateDocument, StateError, StateFile, Weights,
};
use crate::wait::progress::short;
use crate::wait::{self, WaitEnd};

const STEP: &str = crate::state::steps::SHIFT_WEIGHT;

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Move traffic as asked.
    Shift(Intent),
    /// Restore the weights recorded before the last shift.
    Rollback,
}

/// What a run does, as the report, the hooks (`SWITCHYARD_MODE`) and the
/// GitHub output `mode` spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Mode {
    /// Moves traffic step by step, each step gated.
    #[serde(rename = "shift")]
    Shift,
    /// Restores the weights from before the last shift in one ungated step.
    #[serde(rename = "rollback")]
    Rollback,
    /// Prints the plan of a shift or a rollback and changes nothing.
    #[serde(rename = "dry-run")]
    DryRun,
}

impl Mode {
    /// The mode as written in reports, hook variables and outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shift => "shift",
            Self::Rollback => "rollback",
            Self::DryRun => "dry-run",
        }
    }
}

/// How to do it.
#[derive(Debug, Clone)]
pub struct ShiftOptions {
    /// Wait after each step's gate before the next step.
    pub pause: Duration,
    /// Wait after a change is in effect before the gate; default: the router's (a DNS TTL).
    pub settle: Option<Duration>,
    /// The gate each step must pass; without one, traffic moves on after the settle time.
    pub gate: Option<Gate>,
    /// Metric analysis while each step holds traffic, from the first change on.
    pub analysis: Option<AnalysisGate>,
    /// Move traffic even when the state's health verdict forbids it.
    pub force: bool,
    /// A healthy verdict older than this no longer counts.
    pub max_verdict_age: Duration,
    /// Print the plan, change nothing.
    pub dry_run: bool,
    /// Deadline of the whole shift.
    pub timeout: Duration,
    /// How long to wait for a held lock (zero: exit 5 at once).
    pub lock_wait: Duration,
    /// Why this run holds the lock, shown to whoever finds it held.
    pub lock_message: Option<String>,
}

/// An analysis file with the clients its providers use.
#[derive(Debug, Clone)]
pub struct AnalysisGate {
    /// The checked file.
    pub analysis: analysis::Analysis,
    /// The providers' clients, made once for the run.
    pub clients: analysis::engine::Clients,
}

/// Errors of a shift, each with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum ShiftError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    StateRead(StateError),
    #[error("cannot save the state file: {0}")]
    StateWrite(StateError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    Traffic(#[from] TrafficError),
    #[error("nothing to roll back: the state file {state} has no shift recorded for {route}")]
    NothingToRollBack { route: String, state: String },
    #[error("refusing to move traffic to {member}: {why}")]
    Unverified { member: String, why: String },
    #[error("the gate failed before any change: {0}; traffic was not moved")]
    PreflightFailed(String),
    #[error("{check} at step {step} ({weights}): {reason}; rolled back to {restored}")]
    RolledBack {
        check: String,
        step: usize,
        weights: String,
        reason: String,
        restored: String,
    },
    #[error("{check} at step {step} ({reason}) and the rollback failed too: {error}; traffic is at {weights}: run shift-weight --rollback")]
    RollbackFailed {
        check: String,
        step: usize,
        reason: String,
        error: Box<TrafficError>,
        weights: String,
    },
    #[error("analysis file: {0}; nothing was changed")]
    Analysis(String),
    #[error("{error}; stopped after step {done} of {total}, traffic at {weights}; the state file records where. Run the same command again to continue, or --rollback")]
    Stopped {
        error: Box<TrafficError>,
        done: usize,
        total: usize,
        weights: String,
    },
}

impl ExitStatus for ShiftError {
    fn exit_code(&self) -> Code {
        match self {
            Self::Plan(_)
            | Self::StateRead(_)
            | Self::NothingToRollBack { .. }
            | Self::Analysis(_) => Code::Usage,
            Self::StateWrite(_) | Self::RollbackFailed { .. } => Code::Provider,
            Self::Traffic(e) => e.exit_code(),
            Self::Stopped { error, .. } => error.exit_code(),
            Self::Unverified { .. } => Code::Conflict,
            Self::PreflightFailed(_) => Code::CheckFailed,
            Self::Hook(e) => e.exit_code(),
            Self::RolledBack { .. } => Code::RolledBack,
        }
    }
}

/// One applied step.
#[derive(Debug, Clone, Serialize)]
pub struct StepOutcome {
    /// The weights set.
    pub weights: Weights,
    /// The provider's change reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
    /// Time from the change to the provider reporting it in effect.
    pub in_sync_ms: u64,
    /// The gate's evidence, when there is a gate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
}

/// What a shift did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct ShiftReport {
    /// What the run did.
    pub mode: Mode,
    /// The route's id.
    pub route: String,
    /// The router kind.
    pub router: &'static str,
    /// The weights when this run began.
    pub from: Weights,
    /// The weights before the shift began (the rollback target).
    pub before: Weights,
    /// The weights now (read back).
    pub weights: Weights,
    /// Steps applied in this run.
    pub steps: Vec<StepOutcome>,
    /// The plan, one line per action (dry runs, and always in JSON).
    pub plan: Vec<String>,
    /// The metric analysis' verdict and every measurement, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisReport>,
    /// Why the shift rolled back, when it did (the step then exits 4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<String>,
    /// Wall-clock time of the run.
    pub elapsed_ms: u64,
}

impl StepReport for ShiftReport {
    fn text(&self) -> String {
        let mut t = String::new();
        match self.mode {
            Mode::DryRun => {
                let _ = writeln!(t, "plan for {} (dry run: nothing changed)", self.route);
                for line in &self.plan {
                    let _ = writeln!(t, "  {line}");
                }
            }
            Mode::Shift | Mode::Rollback => {
                if let Some(why) = &self.rolled_back {
                    let _ = writeln!(
                        t,
                        "rolled back {}: {} (was {}): {why}",
                        self.route,
                        format_weights(&self.weights),
                        format_weights(&self.from)
                    );
                    if let Some(a) = &self.analysis {
                        write_analysis(&mut t, a);
                    }
                    return t;
                }
                let verb = if self.mode == Mode::Rollback {
                    "rolled back"
                } else {
                    "shifted"
                };
                let _ = writeln!(
                    t,
                    "{verb} {}: {} (was {}) in {} step(s), {}",
                    self.route,
                    format_weights(&self.weights),
                    format_weights(&self.from),
                    self.steps.len(),
                    short(Duration::from_millis(self.elapsed_ms))
                );
                for (i, s) in self.steps.iter().enumerate() {
                    let _ = write!(t, "  step {}: {}", i + 1, format_weights(&s.weights));
                    if let Some(c) = &s.change {
                        let _ = write!(
                            t,
                            ", change {c} in sync after {}",
                            short(Duration::from_millis(s.in_sync_ms))
                        );
                    }
                    if let Some(g) = &s.gate {
                        let _ = write!(t, ", gate passed: {g}");
                    }
                    t.push('\n');
                }
                if let Some(a) = &self.analysis {
                    write_analysis(&mut t, a);
                }
            }
        }
        t
    }

    fn failure(&self) -> Option<crate::outcome::Failure> {
        self.rolled_back
            .as_ref()
            .map(|why| crate::outcome::Failure::message(Code::RolledBack, why))
    }

    fn outputs(&self) -> Vec<(String, String)> {
        vec![
            ("route".into(), self.route.clone()),
            ("weights".into(), format_weights(&self.weights)),
            ("before".into(), format_weights(&self.before)),
            ("from".into(), format_weights(&self.from)),
            ("mode".into(), self.mode.as_str().to_owned()),
        ]
    }

    fn hook_vars(&self) -> Vec<(&'static str, String)> {
        vec![("SWITCHYARD_WEIGHTS", format_weights(&self.weights))]
    }

    fn summary(&self) -> String {
        let mut s = format!(
            "### shift-weight: {}\n\n| | weights |\n|---|---|\n",
            self.mode.as_str()
        );
        let _ = writeln!(s, "| was | {} |", format_weights(&self.from));
        for (i, step) in self.steps.iter().enumerate() {
            let _ = writeln!(s, "| step {} | {} |", i + 1, format_weights(&step.weights));
        }
        let _ = writeln!(s, "| now | {} |", format_weights(&self.weights));
        s
    }
}

/// The analysis' verdict and measurements, a line each.
fn write_analysis(t: &mut String, a: &AnalysisReport) {
    let _ = writeln!(t, "  analysis {}: {}", a.verdict.as_str(), a.summary);
    for m in &a.measurements {
        let _ = writeln!(
            t,
            "    {} {} {}: {}",
            m.at.format("%H:%M:%S%.3f"),
            m.metric,
            m.verdict.as_str(),
            m.reason
        );
    }
}

/// Runs a shift or a rollback of `router`'s route, recording it in `file`.
/// `pre-shift-weight` runs through `hooks` once the shift is decided and
/// before the lease is taken; after an automatic rollback, the hooks that
/// follow see the restored weights.
pub async fn run<R: Router>(
    router: &R,
    file: &StateFile,
    request: Request,
    options: &ShiftOptions,
    hooks: &mut StepHooks,
    cancel: &CancellationToken,
) -> Result<ShiftReport, ShiftError> {
    let started = Instant::now();
    let deadline = started + options.timeout;
    let mut doc = file.load().await.map_err(ShiftError::StateRead)?;
    let group = router.read().await?;
    let route_id = router.id();
    let decision = decide(&route_id, &request, &group, &doc, file)?;
    let verified = match decision.mode {
        Mode::Shift => check_verified(&doc, &group.weights, &decision.plan, options, file),
        Mode::Rollback | Mode::DryRun => {
            check_rollback_target(&doc, &group.weights, &decision.plan, options)
        }
    };

    // The analysis' queries are complete before anything changes: a
    // placeholder the state cannot fill is bad input (exit 2).
    let bound = match (&options.analysis, decision.mode) {
        (Some(gate), Mode::Shift) => {
            let values = Placeholders::from_state(&doc, decision.target.as_deref());
            Some(Arc::new(
                Bound::new(&gate.analysis, &values, &gate.clients).map_err(ShiftError::Analysis)?,
            ))
        }
        _ => None,
    };
    let settle = options.settle.unwrap_or(group.settle);
    if options.dry_run {
        let mut report = dry_run(router, &group.weights, &decision, settle, options, hooks);
        if let Err(e) = verified {
            report
                .plan
                .insert(0, format!("blocked: {e}; a real run exits 5"));
        }
        report.elapsed_ms = millis(started.elapsed());
        return Ok(report);
    }
    verified?;

    let env = hook_env(&doc, &route_id, &group.weights, &decision);
    pre_hook(hooks, &env, file, &mut doc).await?;

    let lease = hold_lease(
        router,
        options,
        decision.ours.as_ref(),
        (file, &mut doc),
        &route_id,
        &group.weights,
        cancel,
    )
    .await?;

    let mut run = Run {
        router,
        file,
        doc,
        route_id,
        options,
        cancel,
        deadline,
        settle,
        steps: Vec::new(),
        released: false,
        analysis: bound,
        verdict: None,
    };
    let result = run.execute(&decision, &group.weights, &lease).await;
    run.release(&lease).await;

    if matches!(result, Err(ShiftError::RolledBack { .. })) {
        hooks.set("SWITCHYARD_WEIGHTS", &format_weights(&decision.before));
    }
    // With an analysis, a rollback is reported with its evidence (every
    // measurement) and exits 4 through the report.
    let (weights, rolled_back) = match result {
        Err(e @ ShiftError::RolledBack { .. }) if run.verdict.is_some() => {
            (decision.before.clone(), Some(e.to_string()))
        }
        other => (other?, None),
    };
    Ok(ShiftReport {
        mode: decision.mode,
        route: run.route_id,
        router: router.kind(),
        from: group.weights,
        before: decision.before,
        weights,
        steps: run.steps,
        plan: Vec::new(),
        analysis: run.verdict,
        rolled_back,
        elapsed_ms: millis(started.elapsed()),
    })
}

/// The variables the hooks of a shift get (see [`HookEnv`]).
fn hook_env(
    doc: &StateDocument,
    route_id: &str,
    current: &Weights,
    decision: &Decision,
) -> HookEnv {
    let mut env = doc.hook_env();
    env.set("SWITCHYARD_ROUTE", route_id);
    env.set("SWITCHYARD_MODE", decision.mode.as_str());
    env.set("SWITCHYARD_WEIGHTS", &format_weights(current));
    env.set(
        "SWITCHYARD_TARGET_WEIGHTS",
        &decision.plan.last().map(format_weights).unwrap_or_default(),
    );
    env.set(
        "SWITCHYARD_BEFORE_WEIGHTS",
        &format_weights(&decision.before),
    );
    env.set_opt("SWITCHYARD_TARGET", decision.target.as_deref());
    env
}

/// Runs `pre-shift-weight`. A hook may write to the state (a verify-health
/// run, say): when one ran, `doc` is read again so that the run carries on
/// from what it wrote instead of saving over it. The decision made before
/// stands on what was read before: a hook adds, it cannot unblock.
async fn pre_hook(
    hooks: &mut StepHooks,
    env: &HookEnv,
    file: &StateFile,
    doc: &mut StateDocument,
) -> Result<(), ShiftError> {
    if hooks.before_change(env).await? {
        *doc = file.load().await.map_err(ShiftError::StateRead)?;
    }
    Ok(())
}

/// What a request comes to.
struct Decision {
    /// [`Mode::Shift`] or [`Mode::Rollback`].
    mode: Mode,
    /// The weights of every step.
    plan: Vec<Weights>,
    /// The rollback target.
    before: Weights,
    /// The member receiving traffic, if one is.
    target: Option<String>,
    /// Whether a shift of this route stopped half-way before.
    unfinished: bool,
    /// The lease this state file's run held, if it still names one.
    ours: Option<Lease>,
}

/// Turns the request into a plan.
fn decide(
    route_id: &str,
    request: &Request,
    group: &super::Group,
    doc: &StateDocument,
    file: &StateFile,
) -> Result<Decision, ShiftError> {
    let existing = doc.traffic.get(route_id);
    let unfinished = existing
        .and_then(|r| r.shift.as_ref())
        .is_some_and(|s| s.status.is_unfinished());
    let ours = existing.and_then(|r| lease::recorded_ours(&r.extra, "lease"));
    Ok(match request {
        Request::Rollback => {
            let before = doc
                .traffic
                .get(route_id)
                .as_ref()
                .and_then(|r| r.before.clone())
                .ok_or_else(|| ShiftError::NothingToRollBack {
                    route: route_id.to_owned(),
                    state: file.location().to_string(),
                })?;
            for member in before.keys() {
                if !group.weights.contains_key(member) {
                    return Err(PlanError::UnknownMember {
                        member: member.clone(),
                        known: group.weights.keys().cloned().collect::<Vec<_>>().join(", "),
                    }
                    .into());
                }
            }
            Decision {
                mode: Mode::Rollback,
                plan: vec![before.clone()],
                before,
                target: None,
                unfinished,
                ours,
            }
        }
        Request::Shift(intent) => {
            let plan = plan::plan(&group.weights, intent)?;
            // A shift that stopped half-way keeps its original starting point:
            // rollback must restore what was there before any of it. So does
            // one that changes nothing (a CI retry of a shift that completed
            // just before its job was killed): its rollback target stays the
            // one of the shift that got the weights here.
            let no_change = plan.iter().all(|w| *w == group.weights);
            let target = match intent {
                Intent::To { member, .. } => Some(member.clone()),
                Intent::Exact(_) => None,
            };
            // So does the promotion that continues a canary (`--steps 10,50`,
            // then `--steps 100` as a separate run): its rollback goes back
            // to before the canary, not to the canary's split.
            let continues =
                existing.is_some_and(|r| continues_shift(r, target.as_deref(), &group.weights));
            let before = match (existing, unfinished || no_change || continues) {
                (Some(r), true) => r.before.clone().unwrap_or_else(|| group.weights.clone()),
                _ => group.weights.clone(),
            };
            Decision {
                mode: Mode::Shift,
                plan,
                before,
                target,
                unfinished,
                ours,
            }
        }
    })
}

/// Whether a shift to `target` from `now` continues the route's last shift:
/// that one completed, moved traffic to the same member, left the weights as
/// they are now, and left that member short of all the traffic.
fn continues_shift(route: &RouteState, target: Option<&str>, now: &Weights) -> bool {
    let Some(last) = &route.shift else {
        return false;
    };
    let Some(target) = target else {
        return false;
    };
    last.status == ShiftStatus::Completed
        && last.target.as_deref() == Some(target)
        && last.plan.last() == Some(now)
        && now.get(target).is_some_and(|w| *w < 100)
}

/// Refuses to send more traffic to a member whose verification the state does not vouch for.
fn check_verified(
    doc: &StateDocument,
    current: &Weights,
    plan: &[Weights],
    options: &ShiftOptions,
    file: &StateFile,
) -> Result<(), ShiftError> {
    let Some(last) = plan.last() else {
        return Ok(());
    };
    let gaining: Vec<&String> = last
        .keys()
        .filter(|m| plan::share(last, m) > plan::share(current, m) + 1e-9)
        .collect();
    for member in gaining {
        let why = match doc.health.get(member.as_str()) {
            Some(v) if v.status == Health::Healthy => {
                let age = (Utc::now() - v.at).to_std().unwrap_or_default();
                if age <= options.max_verdict_age {
                    continue;
                }
                if options.gate.is_some() {
                    continue;
                }
                format!(
                    "its healthy verdict is {} old, older than --max-verdict-age {}",
                    short(age),
                    short(options.max_verdict_age)
                )
            }
            Some(v) => format!(
                "its last verdict is {:?} ({}: {})",
                v.status,
                v.at.to_rfc3339(),
                v.summary
            )
            .to_lowercase(),
            None if options.gate.is_some() => continue,
            None => format!(
                "the state file {} has no health verdict for it",
                file.location()
            ),
        };
        if options.force {
            tracing::warn!("--force: moving traffic to {member} although {why}");
            continue;
        }
        return Err(ShiftError::Unverified {
            member: member.clone(),
            why: format!("{why}. Run verify-health on it, give --gate-url so shift-weight verifies it first, or pass --force"),
        });
    }
    Ok(())
}

/// Safety rule 1 for a rollback: it restores weights that were verified
/// once, but the stack they send traffic to may be gone since. A member that
/// gains traffic must not be retired (deploy-standby scaled it down), nor a
/// stack the state knows a driver of with no endpoints left; `--force`
/// overrides, and a gate URL still gates the target before any change.
fn check_rollback_target(
    doc: &StateDocument,
    current: &Weights,
    plan: &[Weights],
    options: &ShiftOptions,
) -> Result<(), ShiftError> {
    let Some(last) = plan.last() else {
        return Ok(());
    };
    for member in last
        .keys()
        .filter(|m| plan::share(last, m) > plan::share(current, m) + 1e-9)
    {
        let Some(stack) = doc.stacks.get(member.as_str()) else {
            continue;
        };
        let why = if stack.role == Some(Role::Retired) {
            "it was retired (scaled down) after the shift completed; bring it up again with \
             deploy-standby and verify it, then shift to it"
        } else if stack.driver.is_some() && stack.endpoints.is_empty() {
            "the state lists no endpoints for it: nothing would answer its traffic"
        } else {
            continue;
        };
        if options.force {
            tracing::warn!("--force: rolling traffic back to {member} although {why}");
            continue;
        }
        return Err(ShiftError::Unverified {
            member: member.clone(),
            why: format!("{why}. Pass --force to roll back to it anyway"),
        });
    }
    Ok(())
}

/// Takes the route's lease for this run. Write-ahead: the lease's token goes
/// into the state before the lease is taken, so that a run killed in between
/// takes its own lease back rather than waiting for it to expire. A run that
/// held one before keeps its token.
async fn hold_lease<R: Router>(
    router: &R,
    options: &ShiftOptions,
    ours: Option<&Lease>,
    (file, doc): (&StateFile, &mut StateDocument),
    route_id: &str,
    weights: &Weights,
    cancel: &CancellationToken,
) -> Result<Lease, ShiftError> {
    let mut request = LeaseRequest {
        holder: crate::state::journal::actor(),
        message: options.lock_message.clone(),
        expires: Utc::now() + options.timeout + options.lock_wait + Duration::from_secs(120),
        token: ours.map(|l| l.token.clone()),
    };
    let intent = Lease::new(&request);
    request.token = Some(intent.token.clone());
    let recorded_before = doc.traffic.get(route_id).map(|r| r.extra.clone());
    remember_lease(file, doc, route_id, router, weights, &intent).await?;
    match take_lease(router, &request, options, ours.unwrap_or(&intent), cancel).await {
        Ok(lease) => Ok(lease),
        Err(e) => {
            // Not taken: the state names the lease it named before (another
            // run's, live), not this run's intent.
            if let Some(route) = doc.traffic.get_mut(route_id) {
                lease::forget(&mut route.extra, "lease");
                for key in ["lease", "lease_pid"] {
                    if let Some(v) = recorded_before.as_ref().and_then(|b| b.get(key)) {
                        route.extra.insert(key.to_owned(), v.clone());
                    }
                }
            }
            if let Err(save) = file.save(doc).await {
                tracing::warn!("could not restore the state's lease record: {save}");
            }
            Err(e.into())
        }
    }
}

/// Records the lease this run is about to take in the route's state entry
/// (creating the entry, with the weights as read, on a route's first shift).
async fn remember_lease<R: Router>(
    file: &StateFile,
    doc: &mut StateDocument,
    route_id: &str,
    router: &R,
    weights: &Weights,
    lease: &Lease,
) -> Result<(), ShiftError> {
    let route = doc
        .traffic
        .entry(route_id.to_owned())
        .or_insert_with(|| RouteState {
            router: router.kind().to_owned(),
            resource: router.resource(),
            weights: weights.clone(),
            before: None,
            shift: None,
            updated_at: Utc::now(),
            extra: serde_json::Map::new(),
        });
    lease::record(&mut route.extra, "lease", lease);
    file.save(doc).await.map_err(ShiftError::StateWrite)
}

/// Takes the route's lease for this run (waiting `--lock-wait` if it is held).
async fn take_lease<R: Router>(
    router: &R,
    request: &LeaseRequest,
    options: &ShiftOptions,
    ours: &Lease,
    cancel: &CancellationToken,
) -> Result<Lease, TrafficError> {
    let lease = lease::acquire(router, request, Some(ours), options.lock_wait, cancel).await?;
    tracing::info!(
        "took the lease {} until {}",
        router.lease_resource(),
        lease.expires.to_rfc3339()
    );
    Ok(lease)
}

/// The report of a dry run: the plan, nothing changed.
fn dry_run<R: Router>(
    router: &R,
    current: &Weights,
    decision: &Decision,
    settle: Duration,
    options: &ShiftOptions,
    hooks: &StepHooks,
) -> ShiftReport {
    ShiftReport {
        mode: Mode::DryRun,
        route: router.id(),
        router: router.kind(),
        from: current.clone(),
        before: decision.before.clone(),
        weights: current.clone(),
        steps: Vec::new(),
        plan: describe_plan(router, current, decision, settle, options, hooks),
        analysis: None,
        rolled_back: None,
        elapsed_ms: 0,
    }
}

/// Every action a run of `decision` would take, in order, one line each.
fn describe_plan<R: Router>(
    router: &R,
    current: &Weights,
    decision: &Decision,
    settle: Duration,
    options: &ShiftOptions,
    hooks: &StepHooks,
) -> Vec<String> {
    let Decision { plan, before, .. } = decision;
    // A rollback's target is gated before any change too, then it moves
    // straight back: no gate after its step.
    let gate = match decision.mode {
        Mode::Shift => options.gate.as_ref(),
        Mode::Rollback | Mode::DryRun => None,
    };
    let hook = |name: &str| {
        hooks
            .path(name)
            .map(|p| format!("run hook {name} ({})", p.display()))
    };
    let mut lines = vec![format!("now: {}", format_weights(current))];
    lines.extend(hook(&format!("pre-{STEP}")));
    lines.push(if options.lock_wait.is_zero() {
        format!("take the lease: CREATE {}", router.lease_resource())
    } else {
        format!(
            "take the lease: CREATE {} (waiting up to {} while it is held)",
            router.lease_resource(),
            short(options.lock_wait)
        )
    });
    if let Some(first) = &options.gate {
        lines.push(format!("gate before any change: {}", describe_gate(first)));
    }
    let mut from = current.clone();
    for (i, weights) in plan.iter().enumerate() {
        let last = i + 1 == plan.len();
        lines.push(format!(
            "step {}/{}: {}",
            i + 1,
            plan.len(),
            router.describe_change(&from, weights)
        ));
        lines.push(format!(
            "  wait until in effect, read back {}",
            format_weights(weights)
        ));
        let analysed = decision.mode == Mode::Shift && options.analysis.is_some();
        if (options.gate.is_some() || analysed || !last) && !settle.is_zero() {
            lines.push(format!("  wait {} for clients to catch up", short(settle)));
        }
        if let (true, 0, Some(a)) = (analysed, i, &options.analysis) {
            lines.push(format!(
                "  start the metric analysis; while a step holds traffic, a failed or inconclusive metric rolls back to {} at once:",
                format_weights(before)
            ));
            lines.extend(
                a.analysis
                    .describe()
                    .into_iter()
                    .map(|l| format!("    {l}")),
            );
        }
        if let Some(gate) = gate {
            lines.push(format!(
                "  gate: {}; on failure roll back to {}",
                describe_gate(gate),
                format_weights(before)
            ));
        }
        if !last && !options.pause.is_zero() {
            lines.push(format!("  pause {}", short(options.pause)));
        }
        if analysed && last {
            lines.push(format!(
                "  final analysis round: every metric must be successful, else roll back to {}",
                format_weights(before)
            ));
        }
        from.clone_from(weights);
    }
    lines.push(format!("rollback target: {}", format_weights(before)));
    if gate.is_some() {
        lines.extend(hook("on-rollback").map(|l| format!("after an automatic rollback: {l}")));
    }
    lines.push(format!(
        "release the lease: DELETE {}",
        router.lease_resource()
    ));
    lines.extend(hook(&format!("post-{STEP}")));
    lines
}

fn describe_gate(gate: &Gate) -> String {
    let p = gate.policy();
    format!(
        "{} URL(s), {} healthy answers in a row each, fail after {} failures in a row or {}",
        gate.urls().len(),
        p.successes,
        p.failures,
        short(p.deadline)
    )
}

/// Runs `work` while watching `analysis`: `Err` with the phase and why
/// when a metric ends failed or inconclusive first.
async fn watched<F: Future>(
    analysis: Option<&mut Background>,
    work: F,
) -> Result<F::Output, (Phase, String)> {
    match analysis {
        None => Ok(work.await),
        Some(background) => tokio::select! {
            out = work => Ok(out),
            ended = background.ended() => Err(ended),
        },
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

struct Run<'a, R: Router> {
    router: &'a R,
    file: &'a StateFile,
    doc: StateDocument,
    route_id: String,
    options: &'a ShiftOptions,
    cancel: &'a CancellationToken,
    deadline: Instant,
    settle: Duration,
    steps: Vec<StepOutcome>,
    /// Whether the lease went back with the last step's change.
    released: bool,
    /// The metric analysis, queries complete.
    analysis: Option<Arc<Bound>>,
    /// Its verdict so far (from the first change on).
    verdict: Option<AnalysisReport>,
}

impl<R: Router> Run<'_, R> {
    /// Gives the lease back, whatever happened before (unless it went back
    /// with the last step's change).
    async fn release(&mut self, lease: &Lease) {
        if self.released {
            return;
        }
        match self.router.release_lease(lease).await {
            Ok(()) => {
                if let Some(route) = self.doc.traffic.get_mut(&self.route_id) {
                    lease::forget(&mut route.extra, "lease");
                }
                if let Err(e) = self.file.save(&mut self.doc).await {
                    tracing::warn!("could not record the released lease: {e}");
                }
            }
            Err(e) => tracing::warn!(
                "could not release the lease {}: {e}; it expires at {}",
                self.router.lease_resource(),
                lease.expires.to_rfc3339()
            ),
        }
    }

    fn route(&mut self) -> &mut RouteState {
        self.doc
            .traffic
            .get_mut(&self.route_id)
            .expect("route entry is created before any step")
    }

    fn shift(&mut self) -> &mut ShiftProgress {
        self.route()
            .shift
            .as_mut()
            .expect("shift progress is created before any step")
    }

    async fn save(&mut self) -> Result<(), ShiftError> {
        self.file
            .save(&mut self.doc)
            .await
            .map_err(ShiftError::StateWrite)
    }

    async fn journal(&mut self, entry: JournalEntry) -> Result<(), ShiftError> {
        self.doc.record(entry);
        self.route().updated_at = Utc::now();
        self.save().await
    }

    /// Walks the plan: records the run before any change, passes the gate
    /// before any change (a shift's), applies each step (a shift's gated,
    /// with a rollback when a gate fails) and records the end.
    async fn execute(
        &mut self,
        decision: &Decision,
        current: &Weights,
        lease: &Lease,
    ) -> Result<Weights, ShiftError> {
        let previous = self.begin(decision, current, lease);
        self.journal_start(decision, current).await?;
        // A shift's target, and a rollback's, passes the gate before any change.
        self.first_gate(previous).await?;
        let total = decision.plan.len();
        let mut now = current.clone();
        // Nothing after the last step needs the lease unless a gate follows
        // it (its failure rolls back): it goes back in the same change.
        let release_with_last = decision.mode == Mode::Rollback
            || (self.options.gate.is_none() && self.analysis.is_none());
        let mut watching: Option<Background> = None;
        for (i, weights) in decision.plan.iter().enumerate() {
            let step = i + 1;
            let closing = (step == total && release_with_last).then_some(lease);
            now = match self.apply_step(Some(step), &now, weights, closing).await {
                Ok(w) => w,
                Err(e) => return Err(self.fail(e).await),
            };
            // A rollback moves straight back: no settle time, gate or pause.
            if decision.mode == Mode::Shift {
                // Metric analysis starts with the first change: a canary
                // has no data before it takes traffic.
                if watching.is_none() {
                    watching = self.analysis.as_ref().map(|a| a.start(self.cancel));
                }
                self.after_step(
                    step,
                    step == total,
                    &now,
                    &decision.before,
                    watching.as_mut(),
                )
                .await?;
            }
        }
        if let Some(mut background) = watching {
            self.final_round(&mut background, total, &now, &decision.before)
                .await?;
        }
        self.finish(decision.mode, &now).await?;
        Ok(now)
    }

    /// Writes the run into the route's state entry (not yet saved): the plan,
    /// the rollback target and the lease. Returns the entry as it was, so
    /// that a gate failing before any change can put it back.
    fn begin(
        &mut self,
        decision: &Decision,
        current: &Weights,
        lease: &Lease,
    ) -> Option<RouteState> {
        let previous = self.doc.traffic.get(&self.route_id).cloned();
        let started_at = match (&previous, decision.unfinished) {
            (Some(r), true) => r.shift.as_ref().map_or_else(Utc::now, |s| s.started_at),
            _ => Utc::now(),
        };
        let mut route = RouteState {
            router: self.router.kind().to_owned(),
            resource: self.router.resource(),
            weights: current.clone(),
            before: Some(decision.before.clone()),
            shift: Some(ShiftProgress {
                target: decision.target.clone(),
                plan: decision.plan.clone(),
                steps_done: 0,
                status: ShiftStatus::InProgress,
                pending_change: None,
                message: None,
                started_at,
                extra: serde_json::Map::new(),
            }),
            updated_at: Utc::now(),
            extra: previous
                .as_ref()
                .map(|p| p.extra.clone())
                .unwrap_or_default(),
        };
        lease::record(&mut route.extra, "lease", lease);
        self.doc.traffic.insert(self.route_id.clone(), route);
        previous
    }

    /// Journals the start of the run, which saves the state with it.
    async fn journal_start(
        &mut self,
        decision: &Decision,
        current: &Weights,
    ) -> Result<(), ShiftError> {
        let action = if decision.mode == Mode::Rollback {
            "rollback-started"
        } else {
            "shift-started"
        };
        let detail = format!(
            "{}: {} → {} in {} step(s); rollback target {}{}",
            self.route_id,
            format_weights(current),
            decision.plan.last().map(format_weights).unwrap_or_default(),
            decision.plan.len(),
            format_weights(&decision.before),
            if decision.unfinished {
                " (continuing a shift that stopped)"
            } else {
                ""
            }
        );
        tracing::info!("{detail}");
        let mut entry = JournalEntry::new(STEP, action, Outcome::Ok)
            .detail(detail)
            .with("route", self.route_id.clone());
        if let Some(t) = &decision.target {
            entry = entry.with("target", t.clone());
        }
        self.journal(entry).await
    }

    /// The gate before any change, when there is one. When it fails, the
    /// route's entry goes back to `previous`, as it was before this run:
    /// nothing was changed.
    async fn first_gate(&mut self, previous: Option<RouteState>) -> Result<(), ShiftError> {
        let options = self.options;
        let Some(gate) = &options.gate else {
            return Ok(());
        };
        tracing::info!(
            "gate before any change: probing {} URL(s)",
            gate.urls().len()
        );
        let Ok(verdict) = gate.evaluate(self.cancel).await else {
            return Err(self
                .stopped(
                    TrafficError::Interrupted("interrupted during the first gate".into()),
                    ShiftStatus::Interrupted,
                )
                .await);
        };
        if !verdict.passed {
            match previous {
                Some(p) => {
                    self.doc.traffic.insert(self.route_id.clone(), p);
                }
                None => {
                    self.doc.traffic.remove(&self.route_id);
                }
            }
            self.doc.record(
                JournalEntry::new(STEP, "gate", Outcome::Failed).detail(format!(
                    "before any change: {}; nothing was changed",
                    verdict.summary
                )),
            );
            self.save().await?;
            return Err(ShiftError::PreflightFailed(verdict.summary));
        }
        self.journal(
            JournalEntry::new(STEP, "gate", Outcome::Ok)
                .detail(format!("before any change: {}", verdict.summary)),
        )
        .await
    }

    /// What follows step `step` of a shift, now at `now`: the settle time,
    /// the gate (rolling back to `before` when it fails) and the pause
    /// before the next step. With an analysis, all of it is watched: a
    /// metric that fails or turns inconclusive rolls back at once.
    async fn after_step(
        &mut self,
        step: usize,
        last: bool,
        now: &Weights,
        before: &Weights,
        mut analysis: Option<&mut Background>,
    ) -> Result<(), ShiftError> {
        let options = self.options;
        if options.gate.is_some() || analysis.is_some() || !last {
            let settle = self.wait(self.settle, "clients to catch up (record TTL)");
            match watched(analysis.as_deref_mut(), settle).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(self.fail(e).await),
                Err(end) => {
                    return Err(self.analysis_ended(analysis, end, step, now, before).await)
                }
            }
        }
        if let Some(gate) = &options.gate {
            let verdict = match watched(analysis.as_deref_mut(), gate.evaluate(self.cancel)).await {
                Ok(v) => v,
                Err(end) => {
                    return Err(self.analysis_ended(analysis, end, step, now, before).await)
                }
            };
            self.step_gate(verdict, step, now, before).await?;
        }
        if !last && !options.pause.is_zero() {
            let pause = self.wait(options.pause, "the pause between steps");
            match watched(analysis.as_deref_mut(), pause).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(self.fail(e).await),
                Err(end) => {
                    return Err(self.analysis_ended(analysis, end, step, now, before).await)
                }
            }
        }
        if let Some(background) = analysis {
            // A metric that ended while the hold finished ends the step too.
            if let Some(end) = background.ended_now() {
                return Err(self
                    .analysis_ended(Some(background), end, step, now, before)
                    .await);
            }
            let report = background.report();
            let measurements = background.take_new();
            self.journal(
                JournalEntry::new(STEP, "analysis", Outcome::Ok)
                    .detail(format!(
                        "step {step}: {} measurement(s) while the step held traffic, every metric within its limits",
                        measurements.len()
                    ))
                    .with("measurements", serde_json::to_value(&measurements).unwrap_or_default()),
            )
            .await?;
            self.verdict = Some(report);
        }
        Ok(())
    }

    /// A metric ended failed or inconclusive while step `step` held
    /// traffic: its evidence goes to the journal, the weights from before
    /// the shift are restored.
    async fn analysis_ended(
        &mut self,
        analysis: Option<&mut Background>,
        (phase, why): (Phase, String),
        step: usize,
        now: &Weights,
        before: &Weights,
    ) -> ShiftError {
        let (report, measurements) = match analysis {
            Some(background) => (Some(background.report()), background.take_new()),
            None => (None, Vec::new()),
        };
        self.verdict = report;
        let check = if phase == Phase::Inconclusive {
            "analysis inconclusive"
        } else {
            "analysis failed"
        };
        tracing::error!(
            "{check} at step {step}: {why}; rolling back to {}",
            format_weights(before)
        );
        let entry = JournalEntry::new(STEP, "analysis", Outcome::Failed)
            .detail(format!("step {step}: {why}"))
            .with(
                "measurements",
                serde_json::to_value(&measurements).unwrap_or_default(),
            );
        if let Err(e) = self.journal(entry).await {
            tracing::error!("could not record the analysis in the state file: {e}");
        }
        self.roll_back(check, step, now, before, why).await
    }

    /// The analysis' last round, after the last step: every metric must
    /// end successful (inconclusive is not a pass), else the shift rolls back.
    async fn final_round(
        &mut self,
        background: &mut Background,
        step: usize,
        now: &Weights,
        before: &Weights,
    ) -> Result<(), ShiftError> {
        let report = background.finish(true).await;
        let measurements = background.take_new();
        let passed = report.verdict == Phase::Successful;
        let outcome = if passed { Outcome::Ok } else { Outcome::Failed };
        let summary = report.summary.clone();
        let entry = JournalEntry::new(STEP, "analysis", outcome)
            .detail(format!("final round after step {step}: {summary}"))
            .with("verdict", report.verdict.as_str())
            .with(
                "measurements",
                serde_json::to_value(&measurements).unwrap_or_default(),
            );
        let check = if report.verdict == Phase::Inconclusive {
            "analysis inconclusive"
        } else {
            "analysis failed"
        };
        self.verdict = Some(report);
        if passed {
            tracing::info!("analysis successful: {summary}");
            return self.journal(entry).await;
        }
        if let Err(e) = self.journal(entry).await {
            tracing::error!("could not record the analysis in the state file: {e}");
        }
        tracing::error!(
            "{check} after step {step}: {summary}; rolling back to {}",
            format_weights(before)
        );
        Err(self.roll_back(check, step, now, before, summary).await)
    }

    /// The gate after step `step`: its evidence goes with the step when it
    /// passes; when it fails, the weights from before the shift are restored.
    async fn step_gate(
        &mut self,
        verdict: Result<crate::health::GateVerdict, WaitEnd>,
        step: usize,
        now: &Weights,
        before: &Weights,
    ) -> Result<(), ShiftError> {
        let Ok(verdict) = verdict else {
            let interrupted = TrafficError::Interrupted("interrupted during a gate".into());
            return Err(self.fail(interrupted).await);
        };
        if !verdict.passed {
            tracing::error!(
                "gate failed at step {step}: {}; rolling back to {}",
                verdict.summary,
                format_weights(before)
            );
            self.journal(
                JournalEntry::new(STEP, "gate", Outcome::Failed)
                    .detail(format!("step {step}: {}", verdict.summary)),
            )
            .await?;
            return Err(self
                .roll_back("gate failed", step, now, before, verdict.summary)
                .await);
        }
        tracing::info!("gate passed at step {step}: {}", verdict.summary);
        if let Some(s) = self.steps.last_mut() {
            s.gate = Some(verdict.summary.clone());
        }
        self.journal(
            JournalEntry::new(STEP, "gate", Outcome::Ok)
                .detail(format!("step {step}: {}", verdict.summary)),
        )
        .await
    }

    /// Records a shift or rollback that went through to its last step, at `now`.
    async fn finish(&mut self, mode: Mode, now: &Weights) -> Result<(), ShiftError> {
        let (status, action) = if mode == Mode::Rollback {
            (ShiftStatus::RolledBack, "rollback-completed")
        } else {
            (ShiftStatus::Completed, "shift-completed")
        };
        self.shift().status = status;
        update_roles(&mut self.doc, now);
        self.journal(JournalEntry::new(STEP, action, Outcome::Ok).detail(format!(
            "{}: {}",
            self.route_id,
            format_weights(now)
        )))
        .await
    }
    /// One step: one atomic change, wait until in effect, read back (safety
    /// rule 2: even an accepted batch is checked). `step` is the plan step
    /// this is (`None` for the rollback after a failed gate). `closing` says
    /// it is the run's last change and nothing follows it but its record: the
    /// lease goes back in the same change where the router allows it, and the
    /// step's record is saved with the run's end.
    ///
    /// A change already in effect when accepted is recorded submitted and
    /// verified in one save: there is no wait between the two to recover from.
    async fn apply_step(
        &mut self,
        step: Option<usize>,
        from: &Weights,
        to: &Weights,
        closing: Option<&Lease>,
    ) -> Result<Weights, TrafficError> {
        let began = Instant::now();
        let total = self.shift().plan.len();
        let mut label = step.map_or_else(|| "rollback".to_owned(), |n| format!("step {n}/{total}"));
        tracing::info!("{label}: {}", self.router.describe_change(from, to));
        let releasing = match closing {
            Some(lease) => self.router.apply_releasing(to, lease).await,
            None => None,
        };
        let applied = match releasing {
            Some(applied) => {
                let applied = applied?;
                self.released = true;
                lease::forget(&mut self.route().extra, "lease");
                label.push_str(", lease released in the same change");
                applied
            }
            None => self.router.apply(to).await?,
        };
        self.shift().pending_change.clone_from(&applied.reference);
        let change = Change {
            resource: self.route_id.clone(),
            before: serde_json::to_value(from).ok(),
            after: serde_json::to_value(to).ok(),
            reference: applied.reference.clone(),
        };
        let submitted = JournalEntry::new(STEP, "weights-submitted", Outcome::Ok)
            .change(change)
            .detail(label.clone());
        if applied.in_sync {
            self.doc.record(submitted);
        } else {
            self.journal(submitted)
                .await
                .map_err(|e| TrafficError::State(e.to_string()))?;
        }
        self.router
            .wait_applied(&applied, self.deadline, self.cancel)
            .await?;
        let in_sync = began.elapsed();
        let back = self.router.read().await?.weights;
        if to.iter().any(|(k, v)| back.get(k) != Some(v)) {
            return Err(TrafficError::ReadBack {
                route: self.route_id.clone(),
                expected: format_weights(to),
                found: format_weights(&back),
            });
        }
        self.route().weights.clone_from(&back);
        let shift = self.shift();
        if let Some(n) = step {
            shift.steps_done = n;
        }
        shift.pending_change = None;
        let verified = JournalEntry::new(STEP, "weights-verified", Outcome::Ok).detail(format!(
            "{label}: read back {} after {}",
            format_weights(&back),
            short(in_sync)
        ));
        if closing.is_some() {
            self.doc.record(verified);
        } else {
            self.journal(verified)
                .await
                .map_err(|e| TrafficError::State(e.to_string()))?;
        }
        self.steps.push(StepOutcome {
            weights: back.clone(),
            change: applied.reference,
            in_sync_ms: millis(in_sync),
            gate: None,
        });
        Ok(back)
    }

    async fn wait(&self, d: Duration, what: &str) -> Result<(), TrafficError> {
        if d.is_zero() {
            return Ok(());
        }
        tracing::info!("waiting {} for {what}", short(d));
        wait::sleep(d, self.deadline, self.cancel)
            .await
            .map_err(|e| match e {
                WaitEnd::Deadline => TrafficError::Timeout(format!(
                    "the step's deadline (--timeout {}) passed while waiting for {what}",
                    short(self.options.timeout)
                )),
                WaitEnd::Cancelled => {
                    TrafficError::Interrupted(format!("interrupted while waiting for {what}"))
                }
            })
    }

    /// Records where the shift stopped and builds the error for it.
    async fn fail(&mut self, error: TrafficError) -> ShiftError {
        let status = if matches!(error, TrafficError::Interrupted(_)) {
            ShiftStatus::Interrupted
        } else {
            ShiftStatus::Failed
        };
        self.stopped(error, status).await
    }

    async fn stopped(&mut self, error: TrafficError, status: ShiftStatus) -> ShiftError {
        let shift = self.shift();
        shift.status = status;
        shift.message = Some(error.to_string());
        let done = shift.steps_done;
        let total = shift.plan.len();
        let outcome = if status == ShiftStatus::Interrupted {
            Outcome::Interrupted
        } else {
            Outcome::Failed
        };
        let weights = format_weights(&self.route().weights);
        let entry = JournalEntry::new(STEP, "shift-stopped", outcome)
            .detail(format!("after step {done} of {total}: {error}"));
        if let Err(e) = self.journal(entry).await {
            tracing::error!("could not record the stop in the state file: {e}");
        }
        ShiftError::Stopped {
            error: Box::new(error),
            done,
            total,
            weights,
        }
    }

    /// Restores the weights from before the shift after a failed gate.
    async fn roll_back(
        &mut self,
        check: &str,
        step: usize,
        now: &Weights,
        before: &Weights,
        reason: String,
    ) -> ShiftError {
        let result = self.apply_step(None, now, before, None).await;
        self.steps.pop();
        match result {
            Ok(back) => {
                let shift = self.shift();
                shift.status = ShiftStatus::RolledBack;
                shift.message = Some(format!("{check} at step {step}: {reason}"));
                let entry = JournalEntry::new(STEP, "rollback-completed", Outcome::RolledBack)
                    .detail(format!(
                        "{check} at step {step}: {reason}; restored {}",
                        format_weights(&back)
                    ));
                if let Err(e) = self.journal(entry).await {
                    tracing::error!("could not record the rollback in the state file: {e}");
                }
                ShiftError::RolledBack {
                    check: check.to_owned(),
                    step,
                    weights: format_weights(now),
                    reason,
                    restored: format_weights(&back),
                }
            }
            Err(error) => {
                let weights = format_weights(&self.route().weights);
                let shift = self.shift();
                shift.status = ShiftStatus::Failed;
                shift.message = Some(format!(
                    "{check} at step {step} and the rollback failed: {error}"
                ));
                let entry = JournalEntry::new(STEP, "rollback-failed", Outcome::Failed)
                    .detail(error.to_string());
                if let Err(e) = self.journal(entry).await {
                    tracing::error!("could not record the failed rollback in the state file: {e}");
                }
                ShiftError::RollbackFailed {
                    check: check.to_owned(),
                    step,
                    reason,
                    error: Box::new(error),
                    weights,
                }
            }
        }
    }
}

/// When one member takes all the traffic, it is the active stack and the
/// other members are standby.
fn update_roles(doc: &mut StateDocument, weights: &Weights) {
    let total: u64 = weights.values().map(|&w| u64::from(w)).sum();
    let full: Vec<&String> = weights
        .iter()
        .filter(|(_, &w)| total > 0 && u64::from(w) == total)
        .map(|(k, _)| k)
        .collect();
    if let [active] = full.as_slice() {
        for member in weights.keys() {
            let role = if member == *active {
                Role::Active
            } else {
                Role::Standby
            };
            doc.stack_mut(member).role = Some(role);
        }
    }
}

#[cfg(test)]
#[path = "shift_tests.rs"]
mod tests;
