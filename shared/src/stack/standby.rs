//! deploy-standby's decisions around a driver: which color is the standby,
//! what the state forbids, running the driver in every region at once, and
//! recording the result (and every change) in the state. [`deploy`] and
//! [`retire`] run over any [`StackDriver`]: the step gives them a
//! [`Driver`] per region, tests an in-memory fake.
//!
//! **Which color.** `--color` when given; else the color that is not active
//! per the state (a stack with role `active`); else per the traffic routes in
//! the state (the color with the larger weight is active); else per the
//! groups at the provider (the only group with instances is active; with
//! none, or with only one group at all, the standby is the other color or
//! `blue` on a first release). Both groups with instances and nothing else
//! to go by is a conflict (exit 5): pass `--color`.
//!
//! **Safety.** deploy-standby never touches a color that carries traffic per
//! the state (weight above 0 in any route) or that the state marks active.
//!
//! **Roles.** `up` marks the color `standby`. shift-weight marks the member
//! that takes 100% `active` and the others `standby` when its shift
//! completes, so no separate promote command is needed. `retire` scales the
//! old color to zero and marks it `retired`, only when a route in the state
//! shows the other color at 100% with its shift completed, the other color's
//! last verdict is healthy and was reached after the shift completed (the
//! post-promotion check), and `--retire-after` has passed since the shift
//! completed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::asg::AsgDriver;
use super::command::CommandDriver;
use super::{StackDriver, StackError, StackSpec, StackStatus, Wait};
use crate::health::Gate;
use crate::hooks::{HookEnv, HookError, StepHooks};
use crate::outcome::{Code, ExitStatus, StepReport};
use crate::state::{
    Change, Health, JournalEntry, Outcome, RegionalStack, Role, ShiftStatus, StateDocument,
    StateError, StateFile,
};
use crate::wait::progress::{short, Pace};
use crate::wait::{self, WaitEnd};

/// The step's name, in the journal and the hooks.
pub const STEP: &str = crate::state::steps::DEPLOY_STANDBY;

/// A color of a blue-green pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Color {
    /// The first color: a first release comes up blue.
    Blue,
    /// The second color.
    Green,
}

impl Color {
    /// Both colors, blue first.
    pub const ALL: [Color; 2] = [Color::Blue, Color::Green];

    /// The color as the state, group names and flags spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Blue => "blue",
            Self::Green => "green",
        }
    }

    /// The other color of the pair.
    #[must_use]
    pub fn other(self) -> Self {
        match self {
            Self::Blue => Self::Green,
            Self::Green => Self::Blue,
        }
    }
}

impl std::fmt::Display for Color {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The two colors of a blue-green pair, as the state spells them.
pub const COLORS: [&str; 2] = [Color::Blue.name(), Color::Green.name()];

/// The other color of the pair, by name.
pub fn other(color: &str) -> &'static str {
    if color == "blue" {
        "green"
    } else {
        "blue"
    }
}

/// Errors of deploy-standby.
#[derive(Debug, thiserror::Error)]
pub enum StandbyError {
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Hook(#[from] HookError),
}

impl ExitStatus for StandbyError {
    fn exit_code(&self) -> Code {
        match self {
            Self::Stack(e) => e.exit_code(),
            Self::State(e) => e.exit_code(),
            Self::Hook(e) => e.exit_code(),
        }
    }
}

/// The driver of one region: the step's [`Driver`], or any other
/// [`StackDriver`] (tests plug in an in-memory one).
#[derive(Debug, Clone)]
pub struct Region<D = Driver> {
    /// The region's name.
    pub name: String,
    /// Its driver.
    pub driver: D,
}

/// The drivers deploy-standby runs.
#[derive(Debug, Clone)]
pub enum Driver {
    /// One Auto Scaling group per color (boxed: its settings are large).
    Asg(Box<AsgDriver>),
    /// Templated commands for any orchestrator.
    Command(CommandDriver),
}

impl StackDriver for Driver {
    fn kind(&self) -> &'static str {
        match self {
            Self::Asg(d) => d.kind(),
            Self::Command(d) => d.kind(),
        }
    }

    fn name_of(&self, spec: &StackSpec) -> String {
        match self {
            Self::Asg(d) => d.name_of(spec),
            Self::Command(d) => d.name_of(spec),
        }
    }

    async fn capacity(&self, spec: &StackSpec) -> Result<Option<u32>, StackError> {
        match self {
            Self::Asg(d) => d.capacity(spec).await,
            Self::Command(d) => d.capacity(spec).await,
        }
    }

    fn capacity_from(&self, color: &str) -> Self {
        match self {
            Self::Asg(d) => Self::Asg(Box::new(d.capacity_from(color))),
            Self::Command(d) => Self::Command(d.capacity_from(color)),
        }
    }

    async fn plan(&self, spec: &StackSpec) -> Result<Vec<String>, StackError> {
        match self {
            Self::Asg(d) => d.plan(spec).await,
            Self::Command(d) => d.plan(spec).await,
        }
    }

    async fn plan_down(&self, spec: &StackSpec) -> Result<Vec<String>, StackError> {
        match self {
            Self::Asg(d) => d.plan_down(spec).await,
            Self::Command(d) => d.plan_down(spec).await,
        }
    }

    async fn up(&self, spec: &StackSpec, wait: &Wait) -> Result<StackStatus, StackError> {
        match self {
            Self::Asg(d) => d.up(spec, wait).await,
            Self::Command(d) => d.up(spec, wait).await,
        }
    }

    async fn down(&self, spec: &StackSpec, wait: &Wait) -> Result<StackStatus, StackError> {
        match self {
            Self::Asg(d) => d.down(spec, wait).await,
            Self::Command(d) => d.down(spec, wait).await,
        }
    }
}

/// What to bring up.
#[derive(Debug, Clone, Default)]
pub struct DeployRequest {
    /// Service; by default the state's deployment service.
    pub service: Option<String>,
    /// Version; by default the state's deployment version.
    pub version: Option<String>,
    /// The color; by default the one that is not active (see the module docs).
    pub color: Option<Color>,
    /// The image for every region; by default the state's image per region.
    pub image: Option<String>,
}

/// What to retire.
#[derive(Debug, Clone, Default)]
pub struct RetireRequest {
    /// Service; by default the state's deployment service.
    pub service: Option<String>,
    /// The color to scale down; by default the one whose peer takes 100%.
    pub color: Option<Color>,
    /// How long after the shift completed the old stack stays up.
    pub retire_after: Duration,
    /// Until `retire_after` has passed: wait for it, re-checking the active
    /// stack, or (`None`) refuse at once, for pipelines that schedule retire
    /// on their own.
    pub wait: Option<RetireWait>,
}

/// How retire waits out `--retire-after`.
#[derive(Debug, Clone)]
pub struct RetireWait {
    /// The gate the active stack must keep passing; without one, its health
    /// verdict in the state must not turn unhealthy meanwhile.
    pub gate: Option<Gate>,
    /// Time between checks.
    pub every: Duration,
}

/// How to run.
#[derive(Debug, Clone)]
pub struct StandbyOptions {
    /// Print the plan, change nothing.
    pub dry_run: bool,
    /// Deadline for the whole step.
    pub timeout: Duration,
}

/// One region's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct RegionOutcome {
    pub region: String,
    pub group: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launch_template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launch_template_version: Option<String>,
    pub endpoints: Vec<String>,
    pub instances: Vec<String>,
    /// The changes made (or, in a dry run, to be made), in order.
    pub changes: Vec<String>,
}

/// deploy-standby's result.
#[derive(Debug, Clone, Serialize)]
pub struct StandbyReport {
    /// `up` or `retire`.
    pub action: &'static str,
    pub service: String,
    pub color: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why this color.
    pub reason: String,
    pub dry_run: bool,
    /// Whether anything changed (or, in a dry run, would).
    pub changed: bool,
    /// Every region's endpoints.
    pub endpoints: Vec<String>,
    pub regions: Vec<RegionOutcome>,
    /// In a dry run: why a real run would refuse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
    pub elapsed_ms: u64,
}

impl StepReport for StandbyReport {
    fn text(&self) -> String {
        let mut t = String::new();
        let what = match (self.action, self.dry_run) {
            ("up", true) => format!(
                "plan to bring {} {} up (dry run, nothing changed)",
                self.service, self.color
            ),
            ("up", false) if self.changed => {
                format!("{} {} is up as standby", self.service, self.color)
            }
            ("up", false) => format!(
                "{} {} is up as standby, unchanged",
                self.service, self.color
            ),
            (_, true) => format!(
                "plan to retire {} {} (dry run, nothing changed)",
                self.service, self.color
            ),
            (_, false) if self.changed => {
                format!("{} {} is retired (scaled to 0)", self.service, self.color)
            }
            (_, false) => format!(
                "{} {} was already retired, unchanged",
                self.service, self.color
            ),
        };
        let _ = writeln!(
            t,
            "{what}{}",
            self.version
                .as_ref()
                .map_or(String::new(), |v| format!(" at {v}"))
        );
        let _ = writeln!(t, "color: {} ({})", self.color, self.reason);
        if let Some(b) = &self.blocked {
            let _ = writeln!(t, "blocked: {b}; a real run exits 5");
        }
        for r in &self.regions {
            let _ = writeln!(
                t,
                "{}: group {}{}",
                r.region,
                r.group,
                r.launch_template_version
                    .as_ref()
                    .map_or(String::new(), |v| format!(", launch template version {v}"))
            );
            for c in &r.changes {
                let _ = writeln!(t, "  - {c}");
            }
            if r.changes.is_empty() {
                let _ = writeln!(t, "  - no changes");
            }
            for e in &r.endpoints {
                let _ = writeln!(t, "  endpoint {e}");
            }
        }
        t
    }

    fn outputs(&self) -> Vec<(String, String)> {
        vec![
            ("color".to_owned(), self.color.clone()),
            ("changed".to_owned(), self.changed.to_string()),
            ("endpoints".to_owned(), self.endpoints.join(",")),
        ]
    }

    fn hook_vars(&self) -> Vec<(&'static str, String)> {
        if self.action == "up" {
            vec![("SWITCHYARD_ENDPOINTS", self.endpoints.join(","))]
        } else {
            Vec::new()
        }
    }

    fn summary(&self) -> String {
        let mut s = format!(
            "### deploy-standby {}: {} {}{}\n\n| region | group | version | endpoints | changes |\n|---|---|---|---|---|\n",
            self.action,
            self.service,
            self.color,
            if self.dry_run { " (dry run)" } else { "" }
        );
        for r in &self.regions {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                r.region,
                r.group,
                r.launch_template_version.as_deref().unwrap_or("-"),
                r.endpoints.len(),
                r.changes.len()
            );
        }
        s
    }
}

/// The state's stacks, routes and roles, read for the color decision.
fn color_from_state(doc: &StateDocument) -> Option<(String, String)> {
    for c in COLORS {
        if doc.stacks.get(c).and_then(|s| s.role) == Some(Role::Active) {
            return Some((other(c).to_owned(), format!("the state marks {c} active")));
        }
    }
    for (id, route) in &doc.traffic {
        let blue = route.weights.get("blue").copied();
        let green = route.weights.get("green").copied();
        let active = match (blue, green) {
            (Some(b), Some(g)) if b > g => "blue",
            (Some(b), Some(g)) if g > b => "green",
            (Some(b), None) if b > 0 => "blue",
            (None, Some(g)) if g > 0 => "green",
            _ => continue,
        };
        return Some((
            other(active).to_owned(),
            format!("{active} has the larger weight in route {id}"),
        ));
    }
    None
}

/// Picks the standby color from `--color`, the state, or the groups (the
/// desired capacity of each color's group, `None` when it does not exist).
pub fn choose_color(
    doc: &StateDocument,
    explicit: Option<&str>,
    groups: &BTreeMap<String, Option<u32>>,
) -> Result<(String, String), StackError> {
    if let Some(c) = explicit {
        return Ok((c.to_owned(), "--color".to_owned()));
    }
    if let Some(found) = color_from_state(doc) {
        return Ok(found);
    }
    let capacity = |c: &str| groups.get(c).copied().flatten();
    let (blue, green) = (capacity("blue"), capacity("green"));
    let with_instances: Vec<&str> = COLORS
        .into_iter()
        .filter(|c| capacity(c).is_some_and(|d| d > 0))
        .collect();
    Ok(match (with_instances.as_slice(), blue, green) {
        ([active], _, _) => (
            other(active).to_owned(),
            format!("only the {active} group has instances"),
        ),
        ([_, _], _, _) => {
            return Err(StackError::Refused(
                "both the blue and the green group have instances and the state says neither is active; pass --color".to_owned(),
            ))
        }
        (_, Some(_), None) => ("green".to_owned(), "only the blue group exists".to_owned()),
        (_, None, Some(_)) => ("blue".to_owned(), "only the green group exists".to_owned()),
        _ => ("blue".to_owned(), "no group has instances: first release".to_owned()),
    })
}

/// Why the state forbids deploying over `color`, if it does.
pub fn deploy_blocker(doc: &StateDocument, color: &str) -> Option<String> {
    if doc.stacks.get(color).and_then(|s| s.role) == Some(Role::Active) {
        return Some(format!(
            "the state marks {color} active; deploy-standby only replaces the standby stack"
        ));
    }
    doc.traffic.iter().find_map(|(id, route)| {
        let w = route.weights.get(color).copied().unwrap_or(0);
        (w > 0).then(|| {
            format!("{color} carries traffic (weight {w} in route {id}); deploy-standby never replaces a stack that takes traffic")
        })
    })
}

/// Checks that `color` may be retired now: its peer has taken 100% of a
/// route (shift completed), passed a health verdict since, and
/// `retire_after` has passed. Returns the time the shift completed.
pub fn retire_check(
    doc: &StateDocument,
    color: &str,
    retire_after: Duration,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, String> {
    let peer = other(color);
    let full = doc.traffic.iter().find(|(_, r)| {
        let total: u64 = r.weights.values().map(|&w| u64::from(w)).sum();
        total > 0 && r.weights.get(peer).is_some_and(|&w| u64::from(w) == total)
    });
    let Some((id, route)) = full else {
        let seen: Vec<String> = doc
            .traffic
            .iter()
            .map(|(id, r)| {
                format!(
                    "{id}: {}",
                    r.weights
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                )
            })
            .collect();
        return Err(format!(
            "no traffic route in the state shows {peer} at 100% ({}); run shift-weight --to {peer} first",
            if seen.is_empty() { "the state has no routes".to_owned() } else { seen.join("; ") }
        ));
    };
    let completed = match &route.shift {
        Some(s) if s.status != ShiftStatus::Completed => {
            return Err(format!(
                "the last shift of route {id} is {:?}, not completed",
                s.status
            )
            .to_lowercase())
        }
        _ => route.updated_at,
    };
    match doc.health.get(peer) {
        Some(v) if v.status == Health::Healthy && v.at >= completed => {}
        Some(v) if v.status == Health::Healthy => {
            return Err(format!(
                "{peer}'s last healthy verdict ({}) is from before the shift completed ({}); verify it after the promotion (verify-health --stack {peer})",
                v.at.to_rfc3339(),
                completed.to_rfc3339()
            ))
        }
        Some(v) => {
            return Err(format!(
                "{peer}'s last health verdict is {:?} ({})",
                v.status, v.summary
            )
            .to_lowercase())
        }
        None => return Err(format!("the state has no health verdict for {peer}; run verify-health --stack {peer}")),
    }
    let since = (now - completed).to_std().unwrap_or_default();
    if since < retire_after {
        return Err(format!(
            "{peer} took 100% only {} ago (at {}); --retire-after {} leaves {} to go",
            short(since),
            completed.to_rfc3339(),
            short(retire_after),
            short(retire_after.saturating_sub(since))
        ));
    }
    Ok(completed)
}

/// The regions the state's stacks span, for a step given no `--region`.
pub fn state_regions(doc: &StateDocument) -> Vec<String> {
    let set: BTreeSet<&String> = doc.stacks.values().flat_map(|s| s.regions.keys()).collect();
    set.into_iter().cloned().collect()
}

fn service_of(doc: &StateDocument, given: Option<&String>) -> Result<String, StackError> {
    given
        .cloned()
        .or_else(|| doc.deployment.as_ref().and_then(|d| d.service.clone()))
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            StackError::Invalid(
                "no --service, and the state names no deployment service".to_owned(),
            )
        })
}

fn version_of(doc: &StateDocument, given: Option<&String>) -> Result<String, StackError> {
    given
        .cloned()
        .or_else(|| doc.deployment.as_ref().and_then(|d| d.version.clone()))
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| {
            StackError::Invalid(
                "no --version, and the state names no deployment version".to_owned(),
            )
        })
}

fn spec(
    service: &str,
    color: &str,
    version: &str,
    image: Option<String>,
    region: &str,
) -> StackSpec {
    StackSpec {
        service: service.to_owned(),
        color: color.to_owned(),
        version: version.to_owned(),
        image,
        region: region.to_owned(),
    }
}

/// The color: from the flag or the state, else from the groups in every region.
async fn pick_color<D: StackDriver>(
    doc: &StateDocument,
    regions: &[Region<D>],
    explicit: Option<&str>,
    service: &str,
) -> Result<(String, String), StackError> {
    if explicit.is_some() {
        return choose_color(doc, explicit, &BTreeMap::new());
    }
    if let Some(found) = color_from_state(doc) {
        return Ok(found);
    }
    let mut groups: BTreeMap<String, Option<u32>> = BTreeMap::new();
    for r in regions {
        for c in COLORS {
            let probe = spec(service, c, "", None, &r.name);
            let d = r.driver.capacity(&probe).await?;
            let entry = groups.entry(c.to_owned()).or_insert(None);
            *entry = match (*entry, d) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
    }
    choose_color(doc, None, &groups)
}

/// A region's driver and the stack it is to bring up or down.
#[derive(Debug)]
struct Planned<D> {
    region: String,
    driver: D,
    spec: StackSpec,
}

/// What a run changes: deploy brings a color up, retire takes it down.
#[derive(Debug, Clone, Copy)]
enum Action {
    Up,
    Retire,
}

impl Action {
    /// As the report names it.
    fn name(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Retire => "retire",
        }
    }

    /// The error of a real run that the state forbids, for the reason `why`.
    fn refusal(self, color: &str, why: &str) -> StackError {
        StackError::Refused(match self {
            Self::Up => why.to_owned(),
            Self::Retire => format!("will not retire {color}: {why}"),
        })
    }

    /// Every change to `p`'s stack, without making any.
    async fn plan<D: StackDriver>(self, p: &Planned<D>) -> Result<Vec<String>, StackError> {
        match self {
            Self::Up => p.driver.plan(&p.spec).await,
            Self::Retire => p.driver.plan_down(&p.spec).await,
        }
    }

    /// Makes the changes to `p`'s stack.
    async fn apply<D: StackDriver>(
        self,
        p: &Planned<D>,
        wait: &Wait,
    ) -> Result<StackStatus, StackError> {
        match self {
            Self::Up => p.driver.up(&p.spec, wait).await,
            Self::Retire => p.driver.down(&p.spec, wait).await,
        }
    }
}

/// What deploy or retire decided before changing anything.
#[derive(Debug)]
struct Decision<D, T> {
    action: Action,
    service: String,
    color: String,
    /// The version to bring up (deploy only).
    version: Option<String>,
    /// Why this color.
    reason: String,
    /// Every region's driver and stack.
    specs: Vec<Planned<D>>,
    /// What the state says: go ahead, with what the recording needs (for
    /// retire, when the peer's shift completed); or why a real run refuses.
    verdict: Result<T, String>,
    /// The pre-hook's variables.
    env: HookEnv,
    /// When the step began: its deadline and elapsed time count from here.
    started: Instant,
}

impl<D, T> Decision<D, T> {
    /// The step's report, over every region's outcome (or plan).
    fn report(
        &self,
        dry_run: bool,
        regions: Vec<RegionOutcome>,
        blocked: Option<String>,
    ) -> StandbyReport {
        StandbyReport {
            action: self.action.name(),
            service: self.service.clone(),
            color: self.color.clone(),
            version: self.version.clone(),
            reason: self.reason.clone(),
            dry_run,
            changed: regions.iter().any(|r| !r.changes.is_empty()),
            endpoints: regions
                .iter()
                .flat_map(|r| r.endpoints.iter().cloned())
                .collect(),
            regions,
            blocked,
            elapsed_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// Every region's result, in the order of the regions.
type Results = Vec<Result<StackStatus, StackError>>;

/// What a run leaves in the state: every region's outcome, and the first error.
type Recorded = (Vec<RegionOutcome>, Option<StackError>);

/// What deploy and retire share once decided. A dry run plans every region
/// and changes nothing. A real run refuses what the state forbids, runs the
/// pre-hook, runs the driver in every region at once, and then has `record`
/// write the results into the state read again, which it saves even when a
/// region failed (the first error is the run's).
async fn carry_out<D: StackDriver, T>(
    file: &StateFile,
    d: &Decision<D, T>,
    options: &StandbyOptions,
    hooks: &mut StepHooks,
    cancel: &CancellationToken,
    record: impl FnOnce(&mut StateDocument, &Decision<D, T>, &T, Results) -> Recorded,
) -> Result<StandbyReport, StandbyError> {
    if options.dry_run {
        let outcomes = plans(d.action, &d.specs).await?;
        return Ok(d.report(true, outcomes, d.verdict.as_ref().err().cloned()));
    }
    let go = match &d.verdict {
        Ok(go) => go,
        Err(why) => return Err(d.action.refusal(&d.color, why).into()),
    };
    hooks.before_change(&d.env).await?;

    let wait = Wait {
        deadline: d.started + options.timeout,
        cancel: cancel.clone(),
    };
    let results = futures::future::join_all(d.specs.iter().map(|p| d.action.apply(p, &wait))).await;

    let mut doc = file.load().await?;
    let (outcomes, first_error) = record(&mut doc, d, go, results);
    file.save(&mut doc).await?;
    if let Some(e) = first_error {
        return Err(e.into());
    }
    Ok(d.report(false, outcomes, None))
}

/// Every region's plan, as a dry run shows it.
async fn plans<D: StackDriver>(
    action: Action,
    specs: &[Planned<D>],
) -> Result<Vec<RegionOutcome>, StackError> {
    let plans = futures::future::join_all(specs.iter().map(|p| action.plan(p))).await;
    let mut outcomes = Vec::new();
    for (p, plan) in specs.iter().zip(plans) {
        outcomes.push(RegionOutcome {
            region: p.region.clone(),
            group: p.driver.name_of(&p.spec),
            launch_template: None,
            launch_template_version: None,
            endpoints: Vec::new(),
            instances: Vec::new(),
            changes: plan?,
        });
    }
    Ok(outcomes)
}

/// The regions whose driver succeeded, with what it reported, and the
/// first error (every error is logged).
fn settle<D>(
    specs: &[Planned<D>],
    results: Results,
) -> (Vec<(&Planned<D>, StackStatus)>, Option<StackError>) {
    let mut done = Vec::new();
    let mut first_error = None;
    for (p, result) in specs.iter().zip(results) {
        match result {
            Ok(status) => done.push((p, status)),
            Err(e) => {
                tracing::error!("{}: {e}", p.region);
                first_error.get_or_insert(e);
            }
        }
    }
    (done, first_error)
}

/// The journal's record of a region's changes.
fn journal_changes<D: StackDriver>(p: &Planned<D>, status: &StackStatus) -> Vec<Change> {
    status
        .changes
        .iter()
        .map(|c| Change {
            resource: format!(
                "{}:{}/{}",
                p.driver.kind(),
                p.region,
                p.driver.name_of(&p.spec)
            ),
            before: None,
            after: Some(c.clone().into()),
            reference: None,
        })
        .collect()
}

/// Records every region that came up in the state (even when another
/// failed), the stack's role and version, and the journal entry; returns
/// the outcomes and the first error.
fn record_up<D: StackDriver>(
    doc: &mut StateDocument,
    (service, color, version): (&str, &str, &str),
    specs: &[Planned<D>],
    results: Results,
) -> Recorded {
    let now = Utc::now();
    let (done, first_error) = settle(specs, results);
    let mut outcomes = Vec::new();
    let mut entry_changes = Vec::new();
    for (p, status) in done {
        entry_changes.extend(journal_changes(p, &status));
        let regional = regional(&status, &p.spec, now);
        outcomes.push(outcome(
            &p.region,
            p.driver.name_of(&p.spec),
            &status,
            &regional,
        ));
        doc.stack_mut(color)
            .regions
            .insert(p.region.clone(), regional);
    }
    let changed = outcomes.iter().any(|o| !o.changes.is_empty());
    {
        let stack = doc.stack_mut(color);
        stack.role = Some(Role::Standby);
        stack.version = Some(version.to_owned());
        stack.driver = specs.first().map(|p| p.driver.kind().to_owned());
        aggregate(stack);
    }
    let deployment = doc.deployment.get_or_insert_with(Default::default);
    deployment.service.get_or_insert_with(|| service.to_owned());
    deployment.version.get_or_insert_with(|| version.to_owned());
    let (action, outcome_kind) = match (&first_error, changed) {
        (Some(_), _) => ("standby-up", Outcome::Failed),
        (None, true) => ("standby-up", Outcome::Ok),
        (None, false) => ("standby-unchanged", Outcome::Ok),
    };
    let mut entry = JournalEntry::new(STEP, action, outcome_kind)
        .detail(match &first_error {
            Some(e) => format!("{color} at {version}: {e}"),
            None if changed => format!("{color} up at {version} in {}", regions_text(&outcomes)),
            None => format!(
                "{color} at {version} unchanged in {}",
                regions_text(&outcomes)
            ),
        })
        .with("stack", color.to_owned());
    entry.changes = entry_changes;
    doc.record(entry);
    (outcomes, first_error)
}

/// Brings the standby color up in every region at once; `pre-deploy-standby`
/// runs through `hooks` once the color and version are decided.
pub async fn deploy<D: StackDriver>(
    file: &StateFile,
    regions: &[Region<D>],
    req: &DeployRequest,
    options: &StandbyOptions,
    hooks: &mut StepHooks,
    cancel: &CancellationToken,
) -> Result<StandbyReport, StandbyError> {
    let started = Instant::now();
    let doc = file.load().await?;
    let service = service_of(&doc, req.service.as_ref())?;
    let version = version_of(&doc, req.version.as_ref())?;
    let (color, reason) = pick_color(&doc, regions, req.color.map(Color::name), &service).await?;
    tracing::info!("standby color: {color} ({reason})");

    let specs = regions
        .iter()
        .map(|r| {
            let image = req.image.clone().or_else(|| {
                doc.image
                    .as_ref()
                    .and_then(|i| i.amis.get(&r.name).cloned())
            });
            Planned {
                region: r.name.clone(),
                driver: r.driver.capacity_from(other(&color)),
                spec: spec(&service, &color, &version, image, &r.name),
            }
        })
        .collect();
    let mut env = doc.hook_env();
    env.set("SWITCHYARD_STACK", &color);
    env.set("SWITCHYARD_SERVICE", &service);
    env.set("SWITCHYARD_VERSION", &version);
    env.set(
        "SWITCHYARD_REGIONS",
        &regions
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(","),
    );
    let decision = Decision {
        action: Action::Up,
        verdict: deploy_blocker(&doc, &color).map_or(Ok(()), Err),
        service,
        color,
        version: Some(version.clone()),
        reason,
        specs,
        env,
        started,
    };
    carry_out(
        file,
        &decision,
        options,
        hooks,
        cancel,
        |doc, d, (), results| record_up(doc, (&d.service, &d.color, &version), &d.specs, results),
    )
    .await
}

/// The color to retire: `--color`, else the one the state does not mark active.
fn retiring_color(
    doc: &StateDocument,
    explicit: Option<&str>,
) -> Result<(String, String), StackError> {
    match explicit {
        Some(c) if COLORS.contains(&c) => Ok((c.to_owned(), "--color".to_owned())),
        Some(c) => Err(StackError::Invalid(format!("--color {c:?} is not blue or green"))),
        None => COLORS
            .into_iter()
            .find(|c| doc.stacks.get(*c).and_then(|s| s.role) == Some(Role::Active))
            .map(|a| (other(a).to_owned(), format!("the state marks {a} active")))
            .ok_or_else(|| StackError::Refused(
                "the state marks no stack active, so there is nothing to retire yet: shift traffic to the new stack first (shift-weight), or pass --color".to_owned(),
            )),
    }
}

/// Records in the state that `p`'s region of `color` is scaled to zero.
fn record_down<D: StackDriver>(
    doc: &mut StateDocument,
    color: &str,
    p: &Planned<D>,
    now: DateTime<Utc>,
) {
    let r = doc
        .stack_mut(color)
        .regions
        .entry(p.region.clone())
        .or_default();
    r.group = Some(p.driver.name_of(&p.spec));
    r.desired = Some(0);
    r.instances.clear();
    r.endpoints.clear();
    r.updated_at = Some(now);
}

fn retired_entry(
    color: &str,
    outcomes: &[RegionOutcome],
    error: Option<&StackError>,
    completed: DateTime<Utc>,
) -> JournalEntry {
    let outcome = if error.is_some() {
        Outcome::Failed
    } else {
        Outcome::Ok
    };
    JournalEntry::new(STEP, "retired", outcome)
        .detail(match error {
            Some(e) => format!("{color}: {e}"),
            None => format!(
                "{color} scaled to 0 in {}; {} took 100% at {}",
                regions_text(outcomes),
                other(color),
                completed.to_rfc3339()
            ),
        })
        .with("stack", color.to_owned())
}

/// Records every region scaled to zero in the state (even when another
/// failed), the stack as retired once every region is, and the journal
/// entry; returns the outcomes and the first error.
fn record_retired<D: StackDriver>(
    doc: &mut StateDocument,
    color: &str,
    specs: &[Planned<D>],
    completed: DateTime<Utc>,
    results: Results,
) -> Recorded {
    let now = Utc::now();
    let (done, first_error) = settle(specs, results);
    let mut outcomes = Vec::new();
    let mut journal = Vec::new();
    for (p, status) in done {
        journal.extend(journal_changes(p, &status));
        record_down(doc, color, p, now);
        outcomes.push(RegionOutcome {
            region: p.region.clone(),
            group: p.driver.name_of(&p.spec),
            launch_template: None,
            launch_template_version: None,
            endpoints: Vec::new(),
            instances: Vec::new(),
            changes: status.changes,
        });
    }
    if first_error.is_none() {
        let stack = doc.stack_mut(color);
        stack.role = Some(Role::Retired);
        stack.endpoints.clear();
        aggregate(stack);
    }
    let mut entry = retired_entry(color, &outcomes, first_error.as_ref(), completed);
    entry.changes = journal;
    doc.record(entry);
    (outcomes, first_error)
}

/// Scales the old color to zero in every region, when the state allows it.
pub async fn retire<D: StackDriver + Clone>(
    file: &StateFile,
    regions: &[Region<D>],
    req: &RetireRequest,
    options: &StandbyOptions,
    hooks: &mut StepHooks,
    cancel: &CancellationToken,
) -> Result<StandbyReport, StandbyError> {
    let started = Instant::now();
    let doc = file.load().await?;
    let service = service_of(&doc, req.service.as_ref())?;
    let (color, mut reason) = retiring_color(&doc, req.color.map(Color::name))?;
    let now = Utc::now();
    // Everything but the time: then, when only the time is missing, wait it out.
    let ready = retire_check(&doc, &color, Duration::ZERO, now);
    let verdict = match (&req.wait, ready) {
        (Some(how), Ok(completed)) => {
            let due = completed
                + chrono::Duration::from_std(req.retire_after).unwrap_or(chrono::Duration::MAX);
            if now < due && options.dry_run {
                let _ = write!(
                    reason,
                    "; waits until {} (--retire-after {}), re-checking {}",
                    due.to_rfc3339(),
                    short(req.retire_after),
                    other(&color)
                );
            } else if now < due {
                let deadline = started + options.timeout;
                wait_to_retire(file, other(&color), (completed, due), how, deadline, cancel)
                    .await?;
            }
            Ok(completed)
        }
        (None, Ok(_)) => retire_check(&doc, &color, req.retire_after, now),
        (_, Err(why)) => Err(why),
    };
    let specs = regions
        .iter()
        .map(|r| Planned {
            region: r.name.clone(),
            driver: r.driver.clone(),
            spec: spec(&service, &color, "", None, &r.name),
        })
        .collect();
    let mut env = doc.hook_env();
    env.set("SWITCHYARD_STACK", &color);
    env.set("SWITCHYARD_MODE", "retire");
    let decision = Decision {
        action: Action::Retire,
        verdict,
        service,
        color,
        version: None,
        reason,
        specs,
        env,
        started,
    };
    carry_out(
        file,
        &decision,
        options,
        hooks,
        cancel,
        |doc, d, completed, results| record_retired(doc, &d.color, &d.specs, *completed, results),
    )
    .await
}

/// Waits until `due` (`--retire-after` after the shift `completed`), with a
/// progress line at a steady pace, checking the active stack `peer` every
/// `how.every`: through the gate when there is one, else by its health
/// verdict in the state. A check that fails stops the retire (exit 1) with
/// the old stack still up, warm for a rollback. A `due` beyond the step's
/// deadline is refused at once (exit 5).
async fn wait_to_retire(
    file: &StateFile,
    peer: &str,
    (completed, due): (DateTime<Utc>, DateTime<Utc>),
    how: &RetireWait,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<(), StandbyError> {
    let left = (due - Utc::now()).to_std().unwrap_or_default();
    if Instant::now() + left > deadline {
        return Err(StackError::Refused(format!(
            "--retire-after ends at {}, after this step's --timeout; give a longer --timeout, \
             or --no-wait and run retire again later",
            due.to_rfc3339()
        ))
        .into());
    }
    tracing::info!(
        "{peer} took 100% at {}; the old stack stays up until {} (--retire-after), \
         while {peer} is checked every {}",
        completed.to_rfc3339(),
        due.to_rfc3339(),
        short(how.every)
    );
    let mut pace = Pace::new(format!("--retire-after ({peer} checked)"), deadline);
    loop {
        if let Some(why) = active_trouble(file, peer, completed, how.gate.as_ref(), cancel).await? {
            return Err(StackError::CheckFailed(format!(
                "{peer} is not healthy while the old stack waits to retire: {why}; \
                 the old stack stays up (shift-weight --rollback moves the traffic back)"
            ))
            .into());
        }
        let left = (due - Utc::now()).to_std().unwrap_or_default();
        if left.is_zero() {
            return Ok(());
        }
        pace.tick(&format!("{} to go", short(left)));
        match wait::sleep(left.min(how.every), deadline, cancel).await {
            Ok(()) => {}
            Err(WaitEnd::Deadline) => {
                return Err(StackError::Timeout(format!(
                    "--timeout passed while waiting for --retire-after ({} to go)",
                    short(left)
                ))
                .into())
            }
            Err(WaitEnd::Cancelled) => {
                return Err(StackError::Interrupted(
                    "interrupted while waiting for --retire-after; nothing was retired".into(),
                )
                .into())
            }
        }
    }
}

/// Why the active stack `peer` is in trouble now, if it is: its gate fails,
/// or (without a gate) a verdict newer than the shift says it is not healthy.
async fn active_trouble(
    file: &StateFile,
    peer: &str,
    completed: DateTime<Utc>,
    gate: Option<&Gate>,
    cancel: &CancellationToken,
) -> Result<Option<String>, StandbyError> {
    if let Some(gate) = gate {
        let verdict = gate.evaluate(cancel).await.map_err(|_| {
            StackError::Interrupted("interrupted while checking the active stack".into())
        })?;
        return Ok((!verdict.passed).then_some(verdict.summary));
    }
    let doc = file.load().await?;
    Ok(match doc.health.get(peer) {
        Some(v) if v.status != Health::Healthy && v.at >= completed => Some(format!(
            "its verdict of {} is {:?}: {}",
            v.at.to_rfc3339(),
            v.status,
            v.summary
        ))
        .map(|w| w.to_lowercase()),
        _ => None,
    })
}

fn regional(status: &StackStatus, s: &StackSpec, now: DateTime<Utc>) -> RegionalStack {
    let get = |k: &str| status.detail.get(k).cloned();
    RegionalStack {
        group: get("group"),
        launch_template: get("launch_template"),
        launch_template_version: get("launch_template_version"),
        image: s.image.clone(),
        user_data_sha256: get("user_data_sha256"),
        desired: get("desired").and_then(|d| d.parse().ok()),
        instances: get("instances")
            .map(|i| {
                i.split(',')
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        endpoints: status.endpoints.clone(),
        updated_at: Some(now),
        // The asg driver's termination lifecycle hook, by name.
        extra: get("termination_hook")
            .map(|h| ("termination_hook".to_owned(), h.into()))
            .into_iter()
            .collect(),
    }
}

fn outcome(region: &str, group: String, status: &StackStatus, r: &RegionalStack) -> RegionOutcome {
    RegionOutcome {
        region: region.to_owned(),
        group,
        launch_template: r.launch_template.clone(),
        launch_template_version: r.launch_template_version.clone(),
        endpoints: status.endpoints.clone(),
        instances: r.instances.clone(),
        changes: status.changes.clone(),
    }
}

/// The stack's endpoints and ids as the union over its regions.
fn aggregate(stack: &mut crate::state::Stack) {
    let mut endpoints = Vec::new();
    let mut ids = Vec::new();
    for r in stack.regions.values() {
        endpoints.extend(r.endpoints.iter().cloned());
        ids.extend(r.group.iter().cloned());
        if let (Some(t), Some(v)) = (&r.launch_template, &r.launch_template_version) {
            ids.push(format!("{t}:{v}"));
        }
        ids.extend(r.instances.iter().cloned());
    }
    stack.endpoints = endpoints;
    stack.ids = ids;
}

fn regions_text(outcomes: &[RegionOutcome]) -> String {
    outcomes
        .iter()
        .map(|o| o.region.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
#[path = "standby_tests.rs"]
mod tests;
