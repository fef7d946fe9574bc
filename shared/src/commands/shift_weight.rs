//! `shift-weight`: move traffic between stacks or regions, step by step,
//! with health gates and automatic rollback ([`crate::traffic::shift`]).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::aws::iam;
use crate::cli::route::RouterKind;
use crate::cli::shift_weight::ShiftWeightArgs;
use crate::commands::route;
use crate::health::analysis::engine::Clients;
use crate::health::analysis::{self, Analysis};
use crate::health::{Gate, GatePolicy};
use crate::outcome::{Code, Failure};
use crate::state::steps;
use crate::step::{Command, Step};
use crate::traffic::haproxy::Members;
use crate::traffic::plan::{self, Intent};
use crate::traffic::shift::{self, AnalysisGate, Request, ShiftOptions, ShiftReport};
use crate::traffic::{Route, RouteMembers};

/// The `shift-weight` command.
#[derive(Debug)]
pub struct ShiftWeight;

/// The checked flags of a shift.
#[derive(Debug)]
pub struct Settings {
    /// Shift or roll back.
    pub request: Request,
    /// How.
    pub options: ShiftOptions,
    /// The route whose weights move.
    pub route: Route,
    /// What the route's members are.
    pub members: RouteMembers,
}

impl Command for ShiftWeight {
    const STEP: &'static str = steps::SHIFT_WEIGHT;
    type Args = ShiftWeightArgs;
    type Settings = Settings;
    type Report = ShiftReport;

    fn settings(args: ShiftWeightArgs) -> Result<Settings, Failure> {
        let (request, options) = shift_settings(&args)?;
        let (route, members) = route_settings(&args)?;
        Ok(Settings {
            request,
            options,
            route,
            members,
        })
    }

    fn policy(s: &Settings) -> iam::Policy {
        let mut policy = s.route.shift_policy(&s.members);
        if s.options
            .analysis
            .as_ref()
            .is_some_and(|a| a.analysis.uses_cloudwatch())
        {
            policy.merge(&analysis::cloudwatch::policy());
        }
        policy
    }

    async fn run(mut s: Settings, step: &mut Step) -> Result<ShiftReport, Failure> {
        if let Some(gate) = s.options.analysis.as_mut() {
            if gate.analysis.uses_cloudwatch() {
                let config = crate::aws::load(&step.aws).await;
                gate.clients.cloudwatch = Some(aws_sdk_cloudwatch::Client::new(&config));
            }
        }
        let router = s.route.open(s.members, &step.aws).await;
        let report = shift::run(
            &router,
            &step.state,
            s.request,
            &s.options,
            &mut step.hooks,
            &step.cancel,
        )
        .await?;
        Ok(report)
    }
}

/// Checks the route's flags, and the members of the chosen router.
fn route_settings(args: &ShiftWeightArgs) -> Result<(Route, RouteMembers), Failure> {
    route::only_for(
        &args.route,
        "--stickiness",
        args.stickiness.is_some(),
        &[RouterKind::Alb],
    )?;
    if args.route.router == RouterKind::Route53 && !args.members.is_empty() {
        return Err(Failure::usage(
            "--member is for --router alb or haproxy; Route53 members are the SetIdentifiers",
        ));
    }
    let route = route::route(&args.route)?;
    let mut members = RouteMembers::default();
    match &route {
        Route::Route53 { .. } => {}
        Route::Alb { .. } => {
            if let Some(d) = args.stickiness {
                if d < Duration::from_secs(1) || d > Duration::from_secs(604_800) {
                    return Err(Failure::usage(
                        "--stickiness must be between 1s and 7d (ALB's 1-604800 seconds)",
                    ));
                }
            }
            members.stickiness = args.stickiness;
            members.alb = alb_members(&args.members)?;
        }
        Route::Haproxy { .. } => {
            if !args.members.is_empty() {
                members.haproxy =
                    Members::Explicit(parse_members(&args.members)?.into_iter().collect());
            }
            members.drain_timeout = Some(args.drain_timeout);
        }
    }
    Ok((route, members))
}

/// ALB members: one target group (ARN or name) each.
fn alb_members(pairs: &[String]) -> Result<BTreeMap<String, String>, Failure> {
    let mut members = BTreeMap::new();
    for (name, what) in parse_members(pairs)? {
        match what.as_slice() {
            [group] => {
                members.insert(name, group.clone());
            }
            _ => {
                return Err(Failure::usage(format!(
                    "--member {name}: an ALB member is one target group (ARN or name)"
                )))
            }
        }
    }
    Ok(members)
}

/// Parses `--member NAME=A[,B..]`: every name once, never empty.
fn parse_members(pairs: &[String]) -> Result<Vec<(String, Vec<String>)>, Failure> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for pair in pairs.iter().filter(|p| !p.trim().is_empty()) {
        let bad = || {
            Failure::usage(format!(
                "--member {pair:?}: expected NAME=WHAT, e.g. blue=blue1,blue2 or green=arn:aws:elasticloadbalancing:..."
            ))
        };
        let (name, what) = pair.split_once('=').ok_or_else(bad)?;
        let name = name.trim();
        let what: Vec<String> = what
            .split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect();
        if name.is_empty() || what.is_empty() {
            return Err(bad());
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(Failure::usage(format!("--member {name} is given twice")));
        }
        out.push((name.to_owned(), what));
    }
    Ok(out)
}

/// Checks the shift's own flags: what to move, the gate, the timing.
fn shift_settings(args: &ShiftWeightArgs) -> Result<(Request, ShiftOptions), Failure> {
    let request = if args.rollback {
        Request::Rollback
    } else if let Some(to) = &args.to {
        let steps = match (args.weight, args.steps.is_empty()) {
            (Some(w), true) => plan::check_steps(&[w])?,
            (None, false) => plan::check_steps(&args.steps)?,
            _ => {
                return Err(Failure::usage(
                    "--to needs --steps (e.g. 10,50,100) or --weight (e.g. 50)",
                ))
            }
        };
        Request::Shift(Intent::To {
            member: to.clone(),
            steps,
        })
    } else {
        Request::Shift(Intent::Exact(plan::parse_weights(&args.weights)?))
    };
    for url in &args.gate_urls {
        match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                return Err(Failure::usage(format!(
                    "--gate-url {url:?} is not an http(s) URL"
                )))
            }
        }
    }
    if args.gate_successes == 0 || args.gate_failures == 0 {
        return Err(Failure::usage(
            "--gate-successes and --gate-failures must be at least 1",
        ));
    }
    let gate = if args.gate_urls.is_empty() {
        None
    } else {
        let policy = GatePolicy {
            successes: args.gate_successes,
            failures: args.gate_failures,
            interval: args.gate_interval,
            probe_timeout: args.probe_timeout,
            deadline: args.gate_timeout,
        };
        Some(Gate::new(args.gate_urls.clone(), policy).map_err(|e| Failure::new(Code::Usage, e))?)
    };
    let analysis = match &args.analysis {
        None => None,
        Some(path) => Some(AnalysisGate {
            analysis: Analysis::load(path).map_err(|e| Failure::new(Code::Usage, e))?,
            clients: Clients::new(None),
        }),
    };
    let options = ShiftOptions {
        pause: args.pause,
        settle: args.settle,
        gate,
        analysis,
        force: args.force,
        max_verdict_age: args.max_verdict_age,
        dry_run: args.common.dry_run,
        timeout: args.common.timeout,
        lock_wait: args.lock.lock_wait,
        lock_message: args.lock.lock_message.clone(),
    };
    Ok((request, options))
}

#[cfg(test)]
#[path = "shift_weight_tests.rs"]
mod tests;
