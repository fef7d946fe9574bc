//! `switchyard`: what a pipeline needs around the steps rather than inside
//! them: the deployment lock of a route (status, release:
//! [`crate::traffic::lock`]), the release history from the state's journal
//! ([`crate::state::history`]), a check of a state file against the
//! published schema ([`crate::state::validate`]), and regional record groups
//! declared in a routes spec ([`crate::traffic::regional`]).

use std::path::PathBuf;

use serde::Serialize;

use crate::aws::{self, iam};
use crate::cli::admin::{Command as Sub, LockCommand, RouteCommand, StateCommand, SwitchyardArgs};
use crate::commands::route;
use crate::lease::beside_state::ReleaseLock;
use crate::outcome::{Code, Failure, StepReport};
use crate::state::history::{self, History};
use crate::state::validate::{self, Validation};
use crate::state::{steps, Role, Stack, StateDocument, StateLocation};
use crate::step::{Command, Step};
use crate::traffic::lock::{self, LockRelease, LockStatus};
use crate::traffic::regional::{self, ApplyReport, Routes};
use crate::traffic::{Route, RouteMembers};

/// The `switchyard` command.
#[derive(Debug)]
pub struct Admin;

/// The checked flags of each mode.
#[derive(Debug)]
pub enum Settings {
    /// Who holds a route's lock.
    LockStatus(Route),
    /// Release a route's lock.
    LockRelease { route: Route, force: bool },
    /// Who holds the service's release lock beside the state (its place).
    ReleaseLockStatus(StateLocation),
    /// Release the service's release lock beside the state.
    ReleaseLockRelease { state: StateLocation, force: bool },
    /// The release history.
    History,
    /// Check a state file against the schema.
    Validate(StateLocation),
    /// The stack that has a role.
    StackWithRole(Role),
    /// A routes spec, checked.
    RouteCheck { spec: PathBuf, routes: Routes },
    /// A routes spec to plan (`plan_only`) or apply.
    RouteApply {
        routes: Routes,
        plan_only: bool,
        prune: bool,
        reset_weights: bool,
    },
}

crate::step_reports! {
    /// What each mode reports.
    pub enum Report {
        /// Who holds the lock.
        LockStatus(LockStatus),
        /// What was released.
        LockRelease(LockRelease),
        /// The release history.
        History(History),
        /// A state file's validity.
        Validation(Validation),
        /// The stack that has a role.
        StackWithRole(StackWithRole),
        /// A routes spec's groups.
        SpecCheck(SpecCheck),
        /// A routes spec planned or applied.
        Routes(ApplyReport),
    }
}

/// The stack that has a role, by the state.
#[derive(Debug, Clone, Serialize)]
pub struct StackWithRole {
    /// The role asked for.
    pub role: Role,
    /// The stack's name.
    pub stack: String,
    /// Its version, when the state names it.
    pub version: Option<String>,
}

impl StepReport for StackWithRole {
    /// The name alone, so that a pipeline can pass it on as it is.
    fn text(&self) -> String {
        format!("{}\n", self.stack)
    }

    fn outputs(&self) -> Vec<(String, String)> {
        vec![("stack".to_owned(), self.stack.clone())]
    }

    fn summary(&self) -> String {
        format!(
            "### switchyard state\n\n{:?} stack: `{}`{}\n",
            self.role,
            self.stack,
            self.version
                .as_deref()
                .map(|v| format!(" at version {v}"))
                .unwrap_or_default()
        )
    }
}

/// The one stack with `role` in `doc`.
fn stack_with_role(doc: &StateDocument, role: Role) -> Result<StackWithRole, Failure> {
    let named: Vec<(&String, &Stack)> = doc
        .stacks
        .iter()
        .filter(|(_, s)| s.role == Some(role))
        .collect();
    let wanted = serde_json::to_value(role).ok();
    let role_name = wanted.as_ref().and_then(|v| v.as_str()).unwrap_or("that");
    match named.as_slice() {
        [(name, stack)] => Ok(StackWithRole {
            role,
            stack: (*name).clone(),
            version: stack.version.clone(),
        }),
        [] => Err(Failure::message(
            Code::Conflict,
            format!("the state names no {role_name} stack; did deploy-standby run?"),
        )),
        many => Err(Failure::message(
            Code::Conflict,
            format!(
                "the state names {} {role_name} stacks ({}); pass the one you mean by name",
                many.len(),
                many.iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// A valid routes spec: its groups.
#[derive(Debug, Clone, Serialize)]
pub struct SpecCheck {
    /// The spec file.
    pub spec: String,
    /// Each group's route and routing policy.
    pub groups: Vec<SpecGroup>,
}

/// One group of a routes spec.
#[derive(Debug, Clone, Serialize)]
pub struct SpecGroup {
    /// The group's name and type.
    pub route: String,
    /// Its routing policy.
    pub policy: &'static str,
}

impl StepReport for SpecCheck {
    fn text(&self) -> String {
        format!(
            "{}: valid routes spec, {} group(s): {}\n",
            self.spec,
            self.groups.len(),
            self.groups
                .iter()
                .map(|g| format!("{} {}", g.route, g.policy))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    fn outputs(&self) -> Vec<(String, String)> {
        vec![("groups".to_owned(), self.groups.len().to_string())]
    }

    fn summary(&self) -> String {
        format!("### switchyard route check\n\n{}", self.text())
    }
}

impl Command for Admin {
    const STEP: &'static str = steps::SWITCHYARD;
    type Args = SwitchyardArgs;
    type Settings = Settings;
    type Report = Report;

    fn settings(args: SwitchyardArgs) -> Result<Settings, Failure> {
        Ok(match args.command {
            Sub::Lock(LockCommand::Status {
                release_lock: true, ..
            }) => Settings::ReleaseLockStatus(args.common.state.clone()),
            Sub::Lock(LockCommand::Status { route: r, .. }) => {
                Settings::LockStatus(route::route(&r)?)
            }
            Sub::Lock(LockCommand::Release {
                release_lock: true,
                force,
                ..
            }) => Settings::ReleaseLockRelease {
                state: args.common.state.clone(),
                force,
            },
            Sub::Lock(LockCommand::Release {
                route: r, force, ..
            }) => Settings::LockRelease {
                route: route::route(&r)?,
                force,
            },
            Sub::History => Settings::History,
            Sub::State(StateCommand::Validate { file }) => {
                Settings::Validate(file.unwrap_or_else(|| args.common.state.clone()))
            }
            Sub::State(StateCommand::Stack { role }) => Settings::StackWithRole(role),
            Sub::Route(RouteCommand::Check { spec }) => {
                let routes = regional::load(&spec)?;
                Settings::RouteCheck { spec, routes }
            }
            Sub::Route(command @ (RouteCommand::Apply(_) | RouteCommand::Plan(_))) => {
                let plan_only = matches!(command, RouteCommand::Plan(_));
                let (RouteCommand::Apply(a) | RouteCommand::Plan(a)) = command else {
                    unreachable!("matched as apply or plan")
                };
                Settings::RouteApply {
                    routes: regional::load(&a.spec)?,
                    plan_only,
                    prune: a.prune,
                    reset_weights: a.reset_weights,
                }
            }
        })
    }

    fn policy(settings: &Settings) -> iam::Policy {
        match settings {
            Settings::LockStatus(route) => route.lease_policy(false),
            Settings::LockRelease { route, .. } => route.lease_policy(true),
            Settings::ReleaseLockStatus(state) | Settings::ReleaseLockRelease { state, .. } => {
                ReleaseLock::policy(state)
            }
            Settings::RouteApply {
                routes, plan_only, ..
            } => regional::policy(routes, !plan_only),
            Settings::History
            | Settings::Validate(_)
            | Settings::StackWithRole(_)
            | Settings::RouteCheck { .. } => iam::Policy::new(),
        }
    }

    async fn run(settings: Settings, step: &mut Step) -> Result<Report, Failure> {
        Ok(match settings {
            Settings::LockStatus(route) => {
                let router = route.open(RouteMembers::default(), &step.aws).await;
                lock::status(&router).await?.into()
            }
            Settings::LockRelease { route, force } => {
                let router = route.open(RouteMembers::default(), &step.aws).await;
                lock::release(&router, &step.state, force, step.dry_run)
                    .await?
                    .into()
            }
            Settings::ReleaseLockStatus(_) => {
                let lock = ReleaseLock::beside(step.state.location(), step.aws.clone());
                lock::status(&lock).await?.into()
            }
            Settings::ReleaseLockRelease { force, .. } => {
                let lock = ReleaseLock::beside(step.state.location(), step.aws.clone());
                lock::release(&lock, &step.state, force, step.dry_run)
                    .await?
                    .into()
            }
            Settings::History => history::history(&step.state.load().await?).into(),
            Settings::Validate(location) => validate::validate(&location, &step.aws).await?.into(),
            Settings::StackWithRole(role) => {
                stack_with_role(&step.state.load().await?, role)?.into()
            }
            Settings::RouteCheck { spec, routes } => SpecCheck {
                spec: spec.display().to_string(),
                groups: routes
                    .groups
                    .iter()
                    .map(|g| SpecGroup {
                        route: g.route(),
                        policy: g.policy.as_str(),
                    })
                    .collect(),
            }
            .into(),
            Settings::RouteApply {
                routes,
                plan_only,
                prune,
                reset_weights,
            } => {
                let options = regional::ApplyOptions {
                    dry_run: plan_only || step.dry_run,
                    prune,
                    reset_weights,
                    timeout: step.timeout,
                    backoff: crate::aws::route53::CHANGE_BACKOFF,
                };
                let client = aws_sdk_route53::Client::new(&aws::load(&step.aws).await);
                regional::apply(&client, &routes, &step.state, &options, &step.cancel)
                    .await?
                    .into()
            }
        })
    }
}
