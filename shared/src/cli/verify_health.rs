//! `verify-health`'s flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};

use super::{parse_duration, CommonArgs, StepArgs};
use crate::health::alarms::InsufficientData;
use crate::health::route53::CheckKind;
use crate::health::target_health::Via;

/// Decide whether a stack is healthy.
///
/// Probes every endpoint of a stack (from the state file, or given as URLs)
/// in rounds until each has passed or failed enough times in a row, checks a
/// quorum and latency limits, and watches CloudWatch alarms through a window.
/// Missing evidence is never a pass. The verdict goes into the state file,
/// where shift-weight reads it. Exit 0 healthy, 1 unhealthy or inconclusive.
#[derive(Debug, Parser)]
#[command(
    name = "verify-health",
    version,
    max_term_width = 100,
    args_conflicts_with_subcommands = true
)]
pub struct VerifyHealthArgs {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub verify: VerifyArgs,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Route53 health checks of a record group's members
    #[command(subcommand)]
    Route53(Route53Command),
}

#[derive(Debug, Subcommand)]
pub enum Route53Command {
    /// Create (once) a health check per member and associate it with the member's record set
    Ensure(EnsureArgs),
    /// Show each member's health as Route53's checkers report it (exit 1 if any is not healthy)
    Status(GroupArgs),
}

#[derive(Debug, ClapArgs)]
pub struct GroupArgs {
    /// Route53 hosted zone id
    #[arg(long, env = "SWITCHYARD_ZONE_ID", value_name = "ID")]
    pub zone_id: String,
    /// Record name of the group
    #[arg(long, env = "SWITCHYARD_RECORD_NAME", value_name = "NAME")]
    pub record_name: String,
    /// Record type of the group
    #[arg(
        long,
        env = "SWITCHYARD_RECORD_TYPE",
        default_value = "A",
        value_name = "TYPE"
    )]
    pub record_type: String,
}

#[derive(Debug, ClapArgs)]
pub struct EnsureArgs {
    #[command(flatten)]
    pub group: GroupArgs,
    /// A member and its endpoint: SET_ID=URL (TCP: SET_ID=HOST:PORT); repeatable
    #[arg(long = "member", required = true, value_name = "SET_ID=URL")]
    pub members: Vec<String>,
    /// Kind of check
    #[arg(long = "type", value_enum, default_value_t = CheckKind::Http)]
    pub kind: CheckKind,
    /// Seconds between checks by each Route53 checker: 10 or 30
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub request_interval: i32,
    /// Consecutive failed checks before a member is unhealthy (1-10)
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub failure_threshold: i32,
    /// String the body must contain (http-str-match, https-str-match)
    #[arg(long, value_name = "TEXT")]
    pub search_string: Option<String>,
}

#[derive(Debug, ClapArgs)]
#[allow(clippy::struct_excessive_bools)]
pub struct VerifyArgs {
    /// Stack to verify: a name in the state file (green), or a role (active, standby)
    #[arg(long, env = "SWITCHYARD_STACK", value_name = "NAME")]
    pub stack: Option<String>,
    /// URL or host[:port] to probe (repeatable); replaces the stack's endpoints from the state
    #[arg(
        long = "url",
        env = "SWITCHYARD_URLS",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub urls: Vec<String>,
    /// File of URLs or host[:port] endpoints, one per line
    #[arg(long, env = "SWITCHYARD_URLS_FILE", value_name = "FILE")]
    pub urls_file: Option<PathBuf>,
    /// What judges the stack: HTTP probes of its endpoints from here, its target groups' health
    /// as the load balancer sees it, or HTTP probes through the load balancer by a route that
    /// reaches only the stack (the last two for runners that cannot reach its private addresses)
    #[arg(long, env = "SWITCHYARD_VIA", value_enum, default_value_t = Via::Probes)]
    pub via: Via,
    /// Target group ARN of the stack (--via target-health or load-balancer; repeatable)
    /// [default: the target groups of the stack's Auto Scaling group, from the state]
    #[arg(
        long = "target-group",
        env = "SWITCHYARD_TARGET_GROUPS",
        value_delimiter = ',',
        value_name = "ARN"
    )]
    pub target_groups: Vec<String>,
    /// Port of the listener to probe through when several reach the stack (--via load-balancer)
    #[arg(long, env = "SWITCHYARD_LISTENER_PORT", value_name = "PORT")]
    pub listener_port: Option<u16>,
    /// Scheme for endpoints given as host[:port]
    #[arg(long, default_value = "http", value_parser = ["http", "https"])]
    pub scheme: String,
    /// Port for endpoints given without one
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Path for endpoints given without one
    #[arg(
        long,
        env = "SWITCHYARD_HEALTH_PATH",
        default_value = "/health",
        value_name = "PATH"
    )]
    pub path: String,

    /// HTTP method of a probe
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Request header 'Name: value' (repeatable)
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Request body
    #[arg(long, value_name = "TEXT")]
    pub body: Option<String>,
    /// Status codes that pass, e.g. 200-399 or 200,204
    #[arg(long, default_value = "200-399", value_name = "CODES")]
    pub expect_status: String,
    /// Regular expression the body must match
    #[arg(long, value_name = "REGEX")]
    pub body_regex: Option<String>,
    /// Regular expression the body must not match
    #[arg(long, value_name = "REGEX")]
    pub body_not_regex: Option<String>,
    /// JSON check 'POINTER OP VALUE', e.g. '/status == "ok"' or '/queue/depth < 100' (repeatable)
    #[arg(long = "json", value_name = "CHECK")]
    pub json_checks: Vec<String>,
    /// Time-out to connect
    #[arg(long, value_parser = parse_duration, default_value = "2s", value_name = "DURATION")]
    pub connect_timeout: Duration,
    /// Time-out of one probe, body included
    #[arg(long, value_parser = parse_duration, default_value = "5s", value_name = "DURATION")]
    pub probe_timeout: Duration,
    /// PEM file of certificate authorities to trust as well
    #[arg(long, env = "SWITCHYARD_CA_BUNDLE", value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,
    /// Accept any TLS certificate (only for endpoints you cannot give a CA for)
    #[arg(long)]
    pub insecure: bool,
    /// Host header to send (--via load-balancer: instead of the one the route's rule names)
    #[arg(long, value_name = "HOST")]
    pub host_header: Option<String>,
    /// Resolve HOST:PORT to ADDRESS (keeps SNI and the certificate name), as curl's --resolve
    #[arg(long, value_name = "HOST:PORT:ADDRESS")]
    pub resolve: Vec<String>,
    /// Redirects to follow (0: a 3xx answer is judged as it is)
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_redirects: usize,
    /// Bytes of body read at most
    #[arg(long, default_value_t = 65536, value_name = "BYTES")]
    pub max_body: usize,

    /// Wait before the first probe
    #[arg(long, value_parser = parse_duration, default_value = "0s", value_name = "DURATION")]
    pub initial_delay: Duration,
    /// Time between rounds of probes
    #[arg(long, env = "SWITCHYARD_INTERVAL", value_parser = parse_duration, default_value = "2s", value_name = "DURATION")]
    pub interval: Duration,
    /// Rounds of probes at most
    #[arg(
        long,
        env = "SWITCHYARD_ATTEMPTS",
        default_value_t = 10,
        value_name = "N"
    )]
    pub attempts: u32,
    /// Consecutive passing probes that make an endpoint healthy
    #[arg(
        long,
        env = "SWITCHYARD_SUCCESSES",
        default_value_t = 2,
        value_name = "N"
    )]
    pub successes: u32,
    /// Consecutive failing probes that make an endpoint unhealthy
    #[arg(
        long,
        env = "SWITCHYARD_FAILURES",
        default_value_t = 2,
        value_name = "N"
    )]
    pub failures: u32,
    /// Percentage of endpoints that must be healthy
    #[arg(
        long,
        env = "SWITCHYARD_QUORUM",
        default_value_t = 100.0,
        value_name = "PCT"
    )]
    pub quorum: f64,
    /// Limit on the 95th percentile probe latency
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub p95_limit: Option<Duration>,
    /// Limit on the slowest probe
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub max_latency: Option<Duration>,
    /// Probes in flight at once
    #[arg(
        long,
        env = "SWITCHYARD_CONCURRENCY",
        default_value_t = 256,
        value_name = "N"
    )]
    pub concurrency: usize,

    /// CloudWatch alarm that must stay OK (repeatable)
    #[arg(
        long = "alarm",
        env = "SWITCHYARD_ALARMS",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub alarms: Vec<String>,
    /// Every alarm whose name starts with this must stay OK (repeatable)
    #[arg(long = "alarm-prefix", value_name = "PREFIX")]
    pub alarm_prefixes: Vec<String>,
    /// How long the alarms must stay OK
    #[arg(long, value_parser = parse_duration, default_value = "0s", value_name = "DURATION")]
    pub alarm_window: Duration,
    /// Time between looks at the alarms within the window
    #[arg(long, value_parser = parse_duration, default_value = "10s", value_name = "DURATION")]
    pub alarm_interval: Duration,
    /// What an alarm in INSUFFICIENT_DATA counts as
    #[arg(long, value_enum, default_value_t = InsufficientData::Inconclusive)]
    pub insufficient_data: InsufficientData,

    /// Write a JUnit XML report (one test case per endpoint and alarm) here
    #[arg(long, env = "SWITCHYARD_JUNIT", value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

impl StepArgs for VerifyHealthArgs {
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}
