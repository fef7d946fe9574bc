//! `shift-weight`'s flags.

use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgGroup, Parser};

use super::route::RouteArgs;
use super::{parse_duration, CommonArgs, LockArgs, StepArgs};

/// Move traffic between stacks or regions, step by step, with health gates and rollback.
///
/// Each step is one atomic change at the router, waited on until it is in
/// effect and read back; then the gate URLs must answer healthy before the
/// next step. A failed gate restores the weights from before the shift (exit 4).
#[derive(Debug, Parser)]
#[command(name = "shift-weight", version, max_term_width = 100)]
#[command(group(ArgGroup::new("mode").required(true).args(["to", "weights", "rollback"])))]
pub struct ShiftWeightArgs {
    #[command(flatten)]
    pub route: RouteArgs,

    /// Target group stickiness duration to set on the forward action, e.g. 1h (--router alb)
    #[arg(long, env = "SWITCHYARD_STICKINESS", value_parser = parse_duration, value_name = "DURATION")]
    pub stickiness: Option<Duration>,

    /// A member and what it is, repeatable: for alb NAME=TARGET_GROUP_ARN_OR_NAME, for haproxy
    /// NAME=SERVER[,SERVER..]. Without it, alb members are the target group names and haproxy
    /// members the server names without a trailing number (blue1, blue2 -> blue). In
    /// SWITCHYARD_MEMBERS, separate members with `;`
    #[arg(
        long = "member",
        env = "SWITCHYARD_MEMBERS",
        value_delimiter = ';',
        value_name = "NAME=WHAT"
    )]
    pub members: Vec<String>,

    /// Longest wait for a stack going to 0 to finish its sessions before it is put in maint
    /// (--router haproxy)
    #[arg(long, env = "SWITCHYARD_DRAIN_TIMEOUT", value_parser = parse_duration, default_value = "60s", value_name = "DURATION")]
    pub drain_timeout: Duration,

    /// The member that receives traffic (Route53 SetIdentifier, ALB target group, HAProxy stack);
    /// the others share the rest in proportion
    #[arg(long, env = "SWITCHYARD_TO", value_name = "SET_ID")]
    pub to: Option<String>,

    /// Percentages to move through, in order, e.g. 10,50,100
    #[arg(
        long,
        env = "SWITCHYARD_STEPS",
        value_delimiter = ',',
        conflicts_with = "weight",
        value_name = "PCT,.."
    )]
    pub steps: Vec<u32>,

    /// One percentage to set for --to
    #[arg(long, env = "SWITCHYARD_WEIGHT", value_name = "PCT")]
    pub weight: Option<u32>,

    /// Explicit shares for every member, summing to 100, e.g. us-east=50,us-west=30,do=20
    #[arg(
        long,
        env = "SWITCHYARD_WEIGHTS",
        value_delimiter = ',',
        value_name = "SET_ID=PCT,.."
    )]
    pub weights: Vec<String>,

    /// Restore the weights recorded before the last shift (also after it completed)
    #[arg(long)]
    pub rollback: bool,

    /// Wait between steps, after each step's gate passed
    #[arg(long, env = "SWITCHYARD_PAUSE", value_parser = parse_duration, default_value = "0s", value_name = "DURATION")]
    pub pause: Duration,

    /// Wait after a change is in sync before the gate [default: the record's TTL]
    #[arg(long, env = "SWITCHYARD_SETTLE", value_parser = parse_duration, value_name = "DURATION")]
    pub settle: Option<Duration>,

    /// URL that must answer 2xx or 3xx after every step, and before the first (repeatable)
    #[arg(
        long = "gate-url",
        env = "SWITCHYARD_GATE_URLS",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub gate_urls: Vec<String>,

    /// Healthy answers in a row each gate URL needs
    #[arg(
        long,
        env = "SWITCHYARD_GATE_SUCCESSES",
        default_value_t = 3,
        value_name = "N"
    )]
    pub gate_successes: u32,

    /// Failed answers in a row of one gate URL that fail the gate
    #[arg(
        long,
        env = "SWITCHYARD_GATE_FAILURES",
        default_value_t = 2,
        value_name = "N"
    )]
    pub gate_failures: u32,

    /// Time between gate probes
    #[arg(long, env = "SWITCHYARD_GATE_INTERVAL", value_parser = parse_duration, default_value = "2s", value_name = "DURATION")]
    pub gate_interval: Duration,

    /// Longest time a gate may take to decide (undecided fails)
    #[arg(long, env = "SWITCHYARD_GATE_TIMEOUT", value_parser = parse_duration, default_value = "2m", value_name = "DURATION")]
    pub gate_timeout: Duration,

    /// Time-out of one gate probe
    #[arg(long, env = "SWITCHYARD_PROBE_TIMEOUT", value_parser = parse_duration, default_value = "5s", value_name = "DURATION")]
    pub probe_timeout: Duration,

    /// Analysis file (JSON): metrics (CloudWatch, Prometheus) judged in the background while each
    /// step holds traffic, from the first change on; a failed or inconclusive metric rolls back at
    /// once (exit 4). See docs/shift-weight.md
    #[arg(long, env = "SWITCHYARD_ANALYSIS", value_name = "FILE")]
    pub analysis: Option<std::path::PathBuf>,

    /// Move traffic even to a stack whose last health verdict is missing, stale or not healthy
    #[arg(long, env = "SWITCHYARD_FORCE", value_parser = BoolishValueParser::new())]
    pub force: bool,

    #[command(flatten)]
    pub lock: LockArgs,

    /// A healthy verdict older than this does not count
    #[arg(long, env = "SWITCHYARD_MAX_VERDICT_AGE", value_parser = parse_duration, default_value = "30m", value_name = "DURATION")]
    pub max_verdict_age: Duration,

    #[command(flatten)]
    pub common: CommonArgs,
}

impl StepArgs for ShiftWeightArgs {
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}
