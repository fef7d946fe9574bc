//! `switchyard`: what a pipeline needs around the steps rather than inside
//! them: the deployment lock (status, release), the release history read from
//! the state's journal, a check of a state file against the published schema,
//! and regional record groups declared in a routes spec (`route apply`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};
use switchyard::aws::{self, iam, AwsSettings};
use switchyard::cli::route::{Route, RouteArgs};
use switchyard::cli::{exit, logging, output, Code, CommonArgs, Failure, OutputFormat};
use switchyard::state::{history, validate, JournalEntry, Outcome, StateFile};
use switchyard::traffic::alb::AlbRouter;
use switchyard::traffic::haproxy::{HaproxyRouter, Members, RuntimeApi};
use switchyard::traffic::regional;
use switchyard::traffic::route53::Route53Router;
use switchyard::traffic::{Lease, Router};
use switchyard::wait::Backoff;

/// Lock management, release history and state file checks for switchyard pipelines.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, max_term_width = 100)]
struct Args {
    #[command(subcommand)]
    command: Command,

    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The deployment lock of a route
    #[command(subcommand)]
    Lock(LockCommand),
    /// The release history from the state's journal, and the current picture
    History,
    /// State file checks
    #[command(subcommand)]
    State(StateCommand),
    /// Regional record groups (weighted, latency, geolocation) declared in a routes spec
    #[command(subcommand)]
    Route(RouteCommand),
}

#[derive(Debug, Subcommand)]
enum RouteCommand {
    /// Make the groups of a routes spec so at Route53: health checks found or created, then one
    /// all-or-nothing change batch per hosted zone, waited INSYNC and read back. Applying the same
    /// spec again changes nothing. A simple record of a group's name and type is converted (DELETE +
    /// CREATE in the one batch).
    Apply(RouteSpecArgs),
    /// Print every change `apply` would make, in order, and change nothing (same as apply --dry-run)
    Plan(RouteSpecArgs),
    /// Check a routes spec without calling AWS (exit 0 valid, 2 not)
    Check {
        /// The routes spec (JSON; schema/routes-v1.schema.json)
        #[arg(long, env = "SWITCHYARD_ROUTES_SPEC", value_name = "FILE")]
        spec: PathBuf,
    },
}

#[derive(Debug, ClapArgs)]
struct RouteSpecArgs {
    /// The routes spec (JSON; schema/routes-v1.schema.json, example docs/examples/routes.json)
    #[arg(long, env = "SWITCHYARD_ROUTES_SPEC", value_name = "FILE")]
    spec: PathBuf,
    /// Delete records of a group that the spec does not name; without it, such records stop the
    /// apply before any change (exit 2)
    #[arg(long, env = "SWITCHYARD_PRUNE", value_parser = clap::builder::BoolishValueParser::new())]
    prune: bool,
    /// Set the spec's weights on weighted members that exist already. Without it they keep their
    /// weights: moving traffic between existing members is shift-weight's job (gated, with rollback)
    #[arg(long, env = "SWITCHYARD_RESET_WEIGHTS", value_parser = clap::builder::BoolishValueParser::new())]
    reset_weights: bool,
}

#[derive(Debug, Subcommand)]
enum LockCommand {
    /// Who holds the lock, since when, why, and until when (exit 0 free, 5 held)
    Status(RouteArgs),
    /// Remove the lock (a lock this state file's run did not take needs --force)
    Release {
        #[command(flatten)]
        route: RouteArgs,
        /// Remove the lock even though another run holds it (e.g. one that was killed)
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum StateCommand {
    /// Check a state file against the published JSON Schema (exit 0 valid, 1 not)
    Validate {
        /// The file to check [default: --state]
        file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    if let Some(code) = switchyard::cli::generate::intercept::<Args>() {
        return code;
    }
    let args = Args::parse();
    logging::init(args.common.verbose, args.common.quiet);
    let format = args.common.output;
    exit::report(run(&args), format, "switchyard")
}

fn run(args: &Args) -> Result<(), Failure> {
    if args.common.print_iam_policy {
        let policy = match &args.command {
            Command::Lock(LockCommand::Status(r)) => r.route()?.lease_policy(false),
            Command::Lock(LockCommand::Release { route, .. }) => route.route()?.lease_policy(true),
            Command::Route(RouteCommand::Apply(a)) => {
                regional::policy(&regional::load(&a.spec)?, true)
            }
            Command::Route(RouteCommand::Plan(a)) => {
                regional::policy(&regional::load(&a.spec)?, false)
            }
            Command::History | Command::State(_) | Command::Route(RouteCommand::Check { .. }) => {
                iam::Policy::new()
            }
        };
        iam::print(&policy);
        return Ok(());
    }
    let state = StateFile::new(&args.common.state);
    match &args.command {
        Command::History => {
            let doc = state.load()?;
            let h = history::history(&doc);
            match args.common.output {
                OutputFormat::Text => print!("{}", h.table()),
                OutputFormat::Json => println!(
                    "{}",
                    serde_json::to_string(&h).map_err(|e| Failure::new(Code::Provider, e))?
                ),
            }
            Ok(())
        }
        Command::State(StateCommand::Validate { file }) => {
            let path = file.clone().unwrap_or_else(|| args.common.state.clone());
            let v = validate::validate(&path)?;
            match args.common.output {
                OutputFormat::Text if v.valid => println!("{}: valid switchyard/state/v1", v.path),
                OutputFormat::Text => {
                    println!("{}: not valid", v.path);
                    for p in &v.problems {
                        println!("  {p}");
                    }
                }
                OutputFormat::Json => println!(
                    "{}",
                    serde_json::to_string(&v).map_err(|e| Failure::new(Code::Provider, e))?
                ),
            }
            if v.valid {
                Ok(())
            } else {
                Err(Failure::new(
                    Code::CheckFailed,
                    std::io::Error::other(format!("{} is not a valid state file", v.path)),
                ))
            }
        }
        Command::Route(cmd) => route(cmd, args, &state),
        Command::Lock(cmd) => lock(cmd, args, &state),
    }
}

/// `switchyard lock ...`: the lease of any router, read or released.
fn lock(cmd: &LockCommand, args: &Args, state: &StateFile) -> Result<(), Failure> {
    let (route, force) = match cmd {
        LockCommand::Status(r) => (r.route()?, None),
        LockCommand::Release { route, force } => (route.route()?, Some(*force)),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Code::Provider, e))?;
    runtime.block_on(async {
        let aws = AwsSettings {
            region: args.common.region.clone(),
            profile: args.common.profile.clone(),
        };
        let (format, dry_run) = (args.common.output, args.common.dry_run);
        match route {
            Route::Route53 {
                zone_id,
                name,
                rtype,
            } => {
                let config = aws::load(&aws).await;
                let client = aws_sdk_route53::Client::new(&config);
                let router = Route53Router::new(client, &zone_id, &name, rtype);
                lock_on(&router, state, force, format, dry_run).await
            }
            Route::Alb { target } => {
                let config = aws::load(&aws).await;
                let client = aws_sdk_elasticloadbalancingv2::Client::new(&config);
                let router = AlbRouter::new(client, target, BTreeMap::new(), None);
                lock_on(&router, state, force, format, dry_run).await
            }
            Route::Haproxy {
                endpoint,
                backend,
                server_state_file,
                lock_file,
            } => {
                // The lease is the lock file; the runtime API is not called.
                let api = RuntimeApi::new(endpoint, Duration::from_secs(10));
                let router = HaproxyRouter::new(
                    api,
                    &backend,
                    Members::ByName,
                    server_state_file,
                    lock_file,
                );
                lock_on(&router, state, force, format, dry_run).await
            }
        }
    })
}

/// Status (`force` none) or release of `router`'s lease.
async fn lock_on<R: Router>(
    router: &R,
    state: &StateFile,
    force: Option<bool>,
    format: OutputFormat,
    dry_run: bool,
) -> Result<(), Failure> {
    match force {
        None => status(router, format).await,
        Some(force) => release(router, state, force, dry_run).await,
    }
}

/// `switchyard route ...`: check a routes spec, or plan / apply it.
fn route(cmd: &RouteCommand, args: &Args, state: &StateFile) -> Result<(), Failure> {
    let (route, plan_only) = match cmd {
        RouteCommand::Check { spec } => {
            let routes = regional::load(spec)?;
            let groups: Vec<(String, &str)> = routes
                .groups
                .iter()
                .map(|g| (g.route(), g.policy.as_str()))
                .collect();
            match args.common.output {
                OutputFormat::Text => println!(
                    "{}: valid routes spec, {} group(s): {}",
                    spec.display(),
                    groups.len(),
                    groups
                        .iter()
                        .map(|(route, policy)| format!("{route} {policy}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                OutputFormat::Json => println!(
                    "{}",
                    serde_json::json!({"ok": true, "spec": spec.display().to_string(),
                        "groups": groups.iter().map(|(route, policy)| serde_json::json!({"route": route, "policy": policy})).collect::<Vec<_>>()})
                ),
            }
            return Ok(());
        }
        RouteCommand::Apply(route) => (route, false),
        RouteCommand::Plan(route) => (route, true),
    };
    let routes = regional::load(&route.spec)?;
    let options = regional::Options {
        dry_run: plan_only || args.common.dry_run,
        prune: route.prune,
        reset_weights: route.reset_weights,
        timeout: args.common.timeout,
        backoff: crate::aws::route53::CHANGE_BACKOFF,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Code::Provider, e))?;
    runtime.block_on(async {
        let cancel = switchyard::wait::signal::cancel_on_signals();
        let config = aws::load(&AwsSettings {
            region: args.common.region.clone(),
            profile: args.common.profile.clone(),
        })
        .await;
        let client = aws_sdk_route53::Client::new(&config);
        let report = regional::apply(&client, &routes, state, &options, &cancel).await?;
        output::emit(args.common.output, &report);
        Ok(())
    })
}

async fn status<R: Router>(router: &R, format: OutputFormat) -> Result<(), Failure> {
    let leases = router.leases().await?;
    let now = chrono::Utc::now();
    match format {
        OutputFormat::Text if leases.is_empty() => println!("{}: free", router.lease_resource()),
        OutputFormat::Text => {
            for l in &leases {
                let expired = if l.expired(now) { "expired, " } else { "" };
                println!("{}: {expired}{}", router.lease_resource(), l.describe());
            }
        }
        OutputFormat::Json => {
            let list: Vec<serde_json::Value> = leases
                .iter()
                .map(|l| {
                    serde_json::json!({"holder": l.holder, "message": l.message.replace('_', " "), "since": l.since,
                        "expires": l.expires, "expired": l.expired(now)})
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({"lock": router.lease_resource(), "held": leases.iter().any(|l| !l.expired(now)), "leases": list})
            );
        }
    }
    if leases.iter().any(|l| !l.expired(now)) {
        return Err(Failure::new(
            Code::Conflict,
            std::io::Error::other("the lock is held"),
        ));
    }
    Ok(())
}

async fn release<R: Router>(
    router: &R,
    state: &StateFile,
    force: bool,
    dry_run: bool,
) -> Result<(), Failure> {
    let leases = router.leases().await?;
    if leases.is_empty() {
        println!("{}: free; nothing to release", router.lease_resource());
        return Ok(());
    }
    let mut doc = state.load()?;
    let ours: Option<Lease> = doc
        .traffic
        .get(&router.id())
        .and_then(|r| r.extra.get("lease"))
        .and_then(|v| v.as_str())
        .and_then(Lease::decode);
    for lease in &leases {
        let mine = ours.as_ref().is_some_and(|o| o.token == lease.token);
        if !mine && !force && !lease.expired(chrono::Utc::now()) {
            return Err(Failure::new(
                Code::Conflict,
                std::io::Error::other(format!(
                    "{} is {}, not by a run of this state file; pass --force to release it anyway (only if that run is gone)",
                    router.lease_resource(),
                    lease.describe()
                )),
            ));
        }
        if dry_run {
            println!(
                "would release {}: {}",
                router.lease_resource(),
                lease.describe()
            );
            continue;
        }
        router.release_lease(lease).await?;
        println!(
            "released {}: was {}",
            router.lease_resource(),
            lease.describe()
        );
        doc.record(
            JournalEntry::new("switchyard", "lock-released", Outcome::Ok)
                .detail(format!(
                    "{}: {}{}",
                    router.lease_resource(),
                    lease.describe(),
                    if mine { "" } else { " (forced)" }
                ))
                .with("route", router.id()),
        );
    }
    if !dry_run {
        if let Some(route) = doc.traffic.get_mut(&router.id()) {
            route.extra.remove("lease");
        }
        state.save(&doc)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn help(path: &[&str]) -> String {
        let mut command = Args::command().term_width(100);
        command.build();
        let mut sub = &mut command;
        for name in path {
            sub = sub.find_subcommand_mut(name).unwrap();
        }
        sub.render_long_help().to_string()
    }

    #[test]
    fn help_is_the_documented_contract() {
        insta::assert_snapshot!("switchyard-help", help(&[]));
        insta::assert_snapshot!("switchyard-route-apply-help", help(&["route", "apply"]));
        insta::assert_snapshot!("switchyard-lock-status-help", help(&["lock", "status"]));
    }

    #[test]
    fn args_are_consistent() {
        Args::command().debug_assert();
    }
}
