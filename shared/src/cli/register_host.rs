//! `register-host`'s flags.

use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};

use super::{parse_duration, CommonArgs, StepArgs};
use crate::host::identity::AWS;
use crate::host::user_data;

/// A host joins the fleet with its labels, and leaves it cleanly.
///
/// On EC2, `join` reads who the host is from the instance metadata (IMDSv2),
/// tags the instance with its service and labels (switchyard:service,
/// switchyard:label:KEY), registers it in its target groups and waits until
/// they report it healthy; `leave` deregisters it and waits until the groups
/// have drained it, so that no request is cut. Off AWS (--provider NAME
/// --host-id ID --address IP) the host registers its address in IP target
/// groups; on DigitalOcean, GCP or Azure (--provider auto) their metadata says who it is.
/// Every change is recorded in the state file (hosts, journal).
#[derive(Debug, Parser)]
#[command(name = "register-host", version, max_term_width = 100)]
pub struct RegisterHostArgs {
    #[command(subcommand)]
    pub command: Command,

    // Shown under their own heading, after each subcommand's own options.
    #[command(flatten, next_help_heading = "Common options")]
    pub common: CommonArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Tag this host, register it in its target groups, wait until healthy (exit 1 if not in time)
    Join(JoinArgs),
    /// Deregister this host, wait until drained, then complete the lifecycle action if asked
    Leave(LeaveArgs),
    /// Wait until the Auto Scaling group terminates this instance, then leave while its
    /// termination hook holds it, and complete the hook (CONTINUE)
    Watch(WatchArgs),
    /// List the hosts of a service by labels: running EC2 instances, found by their tags, and
    /// the hosts off EC2 (IP targets) the state file records
    List(ListArgs),
    /// Print the cloud-init user-data that joins at boot and leaves at shutdown
    UserData(UserDataArgs),
}

#[derive(Debug, ClapArgs)]
pub struct HostArgs {
    /// Where the host runs: aws (who it is comes from the instance metadata); auto (from the
    /// metadata service found: EC2, DigitalOcean, GCP or Azure); digitalocean, gcp or azure
    /// (from that cloud's metadata, unless --host-id and --address are given); or another
    /// provider's name (then --host-id and --address say who it is)
    #[arg(
        long,
        env = "SWITCHYARD_PROVIDER",
        default_value = AWS,
        value_name = "NAME"
    )]
    pub provider: String,

    /// The host's id off AWS, e.g. its host name
    #[arg(long, env = "SWITCHYARD_HOST_ID", value_name = "ID")]
    pub host_id: Option<String>,

    /// The address load balancers reach the host at, off AWS
    #[arg(long, env = "SWITCHYARD_ADDRESS", value_name = "IP")]
    pub address: Option<String>,

    /// Which address the metadata names is registered: private, or public for a load balancer
    /// outside the host's network (ELBv2 IP targets take private addresses only)
    /// [default: private]
    #[arg(
        long,
        env = "SWITCHYARD_ADDRESS_KIND",
        value_parser = ["private", "public"],
        value_name = "KIND"
    )]
    pub address_kind: Option<String>,
}

#[derive(Debug, ClapArgs)]
pub struct TargetArgs {
    /// Target group ARN (repeatable); instance groups take the instance, ip groups its address
    #[arg(
        long = "target-group",
        env = "SWITCHYARD_TARGET_GROUPS",
        value_delimiter = ',',
        value_name = "ARN"
    )]
    pub target_groups: Vec<String>,

    /// Port the host serves on [default: each target group's port]
    #[arg(
        long,
        env = "SWITCHYARD_PORT",
        value_parser = clap::value_parser!(u16).range(1..),
        value_name = "PORT"
    )]
    pub port: Option<u16>,
}

#[derive(Debug, ClapArgs)]
pub struct LifecycleArgs {
    /// Auto Scaling lifecycle hook whose action to complete (CONTINUE) once drained
    #[arg(long, env = "SWITCHYARD_LIFECYCLE_HOOK", value_name = "NAME")]
    pub lifecycle_hook: Option<String>,

    /// The Auto Scaling group of --lifecycle-hook
    #[arg(long, env = "SWITCHYARD_ASG", value_name = "NAME")]
    pub asg: Option<String>,
}

#[derive(Debug, ClapArgs)]
pub struct JoinArgs {
    /// The service the host serves, e.g. go-auth
    #[arg(long, env = "SWITCHYARD_SERVICE", value_name = "NAME")]
    pub service: String,

    /// A label, e.g. region=us-east-1 or provider=aws (repeatable)
    #[arg(
        long = "label",
        env = "SWITCHYARD_LABELS",
        value_delimiter = ',',
        value_name = "KEY=VALUE"
    )]
    pub labels: Vec<String>,

    #[command(flatten)]
    pub targets: TargetArgs,

    #[command(flatten)]
    pub host: HostArgs,

    /// Longest wait until every target group reports the host healthy
    #[arg(long, env = "SWITCHYARD_WAIT_HEALTHY", value_parser = parse_duration, default_value = "5m", value_name = "DURATION")]
    pub wait_healthy: Duration,

    /// Register and return without waiting for the health checks
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, ClapArgs)]
pub struct LeaveArgs {
    #[command(flatten)]
    pub targets: TargetArgs,

    #[command(flatten)]
    pub host: HostArgs,

    #[command(flatten)]
    pub lifecycle: LifecycleArgs,
}

#[derive(Debug, ClapArgs)]
pub struct WatchArgs {
    #[command(flatten)]
    pub targets: TargetArgs,

    /// The group's termination lifecycle hook (deploy-standby's --termination-hook)
    #[arg(
        long,
        env = "SWITCHYARD_LIFECYCLE_HOOK",
        default_value = crate::stack::asg::TerminationHook::DEFAULT_NAME,
        value_name = "NAME"
    )]
    pub lifecycle_hook: String,

    /// This instance's Auto Scaling group
    #[arg(long, env = "SWITCHYARD_ASG", value_name = "NAME")]
    pub asg: String,

    /// How often to read the instance metadata's autoscaling/target-lifecycle-state
    #[arg(long, env = "SWITCHYARD_POLL_INTERVAL", value_parser = parse_duration, default_value = "5s", value_name = "DURATION")]
    pub poll_interval: Duration,

    /// How often to record a lifecycle action heartbeat while draining; keep it under the
    /// hook's heartbeat time-out
    #[arg(long, env = "SWITCHYARD_HEARTBEAT_EVERY", value_parser = parse_duration, default_value = "1m", value_name = "DURATION")]
    pub heartbeat_every: Duration,

    /// Exit 0 when the instance is in no Auto Scaling lifecycle (the metadata answers 404)
    /// [default: keep reading it]
    #[arg(long, env = "SWITCHYARD_EXIT_OUTSIDE_GROUP", value_parser = clap::builder::BoolishValueParser::new())]
    pub exit_outside_group: bool,
}

#[derive(Debug, ClapArgs)]
pub struct ListArgs {
    /// Only hosts of this service [default: every host register-host tagged]
    #[arg(long, env = "SWITCHYARD_SERVICE", value_name = "NAME")]
    pub service: Option<String>,

    /// Only hosts with this label (repeatable; all must match)
    #[arg(
        long = "label",
        env = "SWITCHYARD_LABELS",
        value_delimiter = ',',
        value_name = "KEY=VALUE"
    )]
    pub labels: Vec<String>,

    /// Regions to search, e.g. us-east-1,eu-west-1 [default: --region]
    #[arg(
        long,
        env = "SWITCHYARD_REGIONS",
        value_delimiter = ',',
        value_name = "REGION,.."
    )]
    pub regions: Vec<String>,
}

#[derive(Debug, ClapArgs)]
pub struct UserDataArgs {
    /// The service the hosts serve, e.g. go-auth
    #[arg(long, env = "SWITCHYARD_SERVICE", value_name = "NAME")]
    pub service: String,

    /// A label every host joins with (repeatable)
    #[arg(
        long = "label",
        env = "SWITCHYARD_LABELS",
        value_delimiter = ',',
        value_name = "KEY=VALUE"
    )]
    pub labels: Vec<String>,

    #[command(flatten)]
    pub targets: TargetArgs,

    #[command(flatten)]
    pub lifecycle: LifecycleArgs,

    /// Where the image carries the register-host executable (nothing is downloaded)
    #[arg(long, default_value = user_data::DEFAULT_BINARY, value_name = "PATH")]
    pub binary: String,

    /// The state file on the host
    #[arg(long, default_value = user_data::DEFAULT_STATE_FILE, value_name = "PATH")]
    pub state_file: String,

    /// A systemd unit of the application (repeatable): joined after it starts, left before it stops
    #[arg(long, value_name = "UNIT")]
    pub after: Vec<String>,

    /// Longest wait at boot until the host is healthy
    #[arg(long, value_parser = parse_duration, default_value = "5m", value_name = "DURATION")]
    pub wait_healthy: Duration,

    /// Longest time leave may take at shutdown; cover the deregistration delay
    #[arg(long, value_parser = parse_duration, default_value = "10m", value_name = "DURATION")]
    pub leave_timeout: Duration,
}

impl StepArgs for RegisterHostArgs {
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}
