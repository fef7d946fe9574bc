//! The `switchyard` command's flags: the lock, the history, state checks,
//! routes specs.

use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand};

use super::route::RouteArgs;
use super::{CommonArgs, StepArgs};
use crate::state::{Role, StateLocation};

/// Lock management, release history and state file checks for switchyard pipelines.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, max_term_width = 100)]
pub struct SwitchyardArgs {
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
pub enum RouteCommand {
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
pub struct RouteSpecArgs {
    /// The routes spec (JSON; schema/routes-v1.schema.json, example docs/examples/routes.json)
    #[arg(long, env = "SWITCHYARD_ROUTES_SPEC", value_name = "FILE")]
    pub spec: PathBuf,
    /// Delete records of a group that the spec does not name; without it, such records stop the
    /// apply before any change (exit 2)
    #[arg(long, env = "SWITCHYARD_PRUNE", value_parser = clap::builder::BoolishValueParser::new())]
    pub prune: bool,
    /// Set the spec's weights on weighted members that exist already. Without it they keep their
    /// weights: moving traffic between existing members is shift-weight's job (gated, with rollback)
    #[arg(long, env = "SWITCHYARD_RESET_WEIGHTS", value_parser = clap::builder::BoolishValueParser::new())]
    pub reset_weights: bool,
}

#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Who holds the lock, since when, why, and until when (exit 0 free, 5 held)
    Status {
        #[command(flatten)]
        route: RouteArgs,
        /// The service's release lock beside --state (deploy-standby's) instead of a route's lease
        #[arg(long)]
        release_lock: bool,
    },
    /// Remove the lock (a lock this state file's run did not take needs --force)
    Release {
        #[command(flatten)]
        route: RouteArgs,
        /// The service's release lock beside --state (deploy-standby's) instead of a route's lease
        #[arg(long)]
        release_lock: bool,
        /// Remove the lock even though another run holds it (e.g. one that was killed)
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Check a state file against the published JSON Schema (exit 0 valid, 1 not)
    Validate {
        /// The file or s3://BUCKET/KEY to check [default: --state]
        #[arg(value_parser = crate::cli::args::parse_state)]
        file: Option<StateLocation>,
    },
    /// Print the name of the stack that has a role (exit 0; 5 when no stack has it), for
    /// pipelines that pass it on (`shift-weight --to "$(switchyard state stack --role standby)"`)
    Stack {
        /// The role
        #[arg(long, value_enum)]
        role: Role,
    },
}

impl StepArgs for SwitchyardArgs {
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}
