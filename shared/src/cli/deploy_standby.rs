//! `deploy-standby`'s flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use super::{parse_duration, CommonArgs, LockArgs, StepArgs};
use crate::aws::Keep;
use crate::stack::asg::HealthCheckType;
use crate::stack::standby::Color;

/// Bring the standby stack (blue or green) up at the new version, or retire the old one.
///
/// One Auto Scaling group per color (`<service>-<color>`), each launching from
/// its own launch template. Without a subcommand, the standby color gets a new
/// launch template version (image, instance type, user-data, IMDSv2 required,
/// tags), the capacity of the active color, CPU scaling policies and alarms,
/// and is waited on until every instance is InService; its endpoints go into
/// the state. A second identical run changes nothing. `--region` may be
/// repeated: every region is deployed at once.
///
/// The standby color is `--color`, else the color the state does not mark
/// active (or that has the smaller weight in a route), else the color whose
/// group has no instances (blue on a first release). A color that carries
/// traffic is never touched (exit 5).
#[derive(Debug, Parser)]
#[command(name = "deploy-standby", version, max_term_width = 100)]
#[command(mut_arg("region", |a| a
    .action(ArgAction::Append)
    .value_delimiter(',')
    .help("AWS region; repeat (or separate with commas) to deploy to several regions at once [default: AWS_REGION, the profile's region, else us-east-1]")))]
pub struct DeployStandbyArgs {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub stack: StackArgs,

    #[command(flatten)]
    pub up: UpArgs,

    #[command(flatten)]
    pub rolling: RollingArgs,

    #[command(flatten)]
    pub lock: LockArgs,

    #[command(flatten)]
    pub common: CommonArgs,

    /// Every `--region` given: the common flag, repeatable here.
    #[arg(skip)]
    pub regions: Vec<String>,
}

/// Flags naming the stack, for bringing it up and for retiring it.
#[derive(Debug, Clone, clap::Args)]
pub struct StackArgs {
    /// Service name [default: the state's deployment service]
    #[arg(long, global = true, env = "SWITCHYARD_SERVICE", value_name = "NAME")]
    pub service: Option<String>,

    /// The color to deploy (or retire) [default: chosen from the state, else the groups]
    #[arg(long, global = true, env = "SWITCHYARD_COLOR", value_enum)]
    pub color: Option<Color>,

    /// The stack driver
    #[arg(long, global = true, env = "SWITCHYARD_DRIVER", value_enum, default_value_t = Driver::Asg)]
    pub driver: Driver,

    /// Command that brings a stack up (--driver command), e.g. 'docker compose -p app-{color} up -d';
    /// fields {service} {color} {version} {image} {region}, each one quoted shell word
    #[arg(
        long = "up",
        global = true,
        env = "SWITCHYARD_UP_COMMAND",
        value_name = "COMMAND"
    )]
    pub up_command: Option<String>,

    /// Command that takes a stack down (--driver command; retire runs it)
    #[arg(
        long = "down",
        global = true,
        env = "SWITCHYARD_DOWN_COMMAND",
        value_name = "COMMAND"
    )]
    pub down_command: Option<String>,

    /// Command that prints the stack's endpoints after --up, one URL or host:port a line or a JSON array (--driver command)
    #[arg(
        long = "endpoints",
        global = true,
        env = "SWITCHYARD_ENDPOINTS_COMMAND",
        value_name = "COMMAND"
    )]
    pub endpoints_command: Option<String>,

    /// Name of a color's Auto Scaling group and launch template; {service}, {color}, {region}
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_GROUP_PATTERN",
        default_value = "{service}-{color}",
        value_name = "PATTERN"
    )]
    pub group_pattern: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Version to run [default: the state's deployment version]
    #[arg(
        long = "app-version",
        alias = "release",
        env = "SWITCHYARD_VERSION",
        value_name = "VERSION"
    )]
    pub app_version: Option<String>,

    /// Machine image for every region [default: the state's image for each region, from bake-ami]
    #[arg(long, env = "SWITCHYARD_IMAGE", value_name = "AMI")]
    pub image: Option<String>,

    /// Instance type [default: the base launch template's, else t3.micro]
    #[arg(long, env = "SWITCHYARD_INSTANCE_TYPE", value_name = "TYPE")]
    pub instance_type: Option<String>,

    /// A launch template whose settings every color's version keeps (instance profile, security
    /// groups, key pair, block devices, network interfaces, metadata options, tags); only the image,
    /// user data and switchyard's tags are replaced. VERSION: a number, $Default (default) or $Latest
    #[arg(
        long,
        env = "SWITCHYARD_LAUNCH_TEMPLATE",
        value_name = "NAME|ID[:VERSION]"
    )]
    pub launch_template: Option<String>,

    /// Instance profile (name or ARN) the instances run with, e.g. the role register-host uses
    #[arg(long, env = "SWITCHYARD_INSTANCE_PROFILE", value_name = "NAME|ARN")]
    pub instance_profile: Option<String>,

    /// Security group id of the instances, in place of the base template's (repeatable)
    #[arg(
        long = "security-group",
        env = "SWITCHYARD_SECURITY_GROUPS",
        value_delimiter = ',',
        value_name = "SG"
    )]
    pub security_groups: Vec<String>,

    /// Key pair of the instances
    #[arg(long, env = "SWITCHYARD_KEY_NAME", value_name = "NAME")]
    pub key_name: Option<String>,

    /// Size of the instances' root volume, in GiB
    #[arg(long, env = "SWITCHYARD_ROOT_VOLUME_SIZE", value_name = "GIB", value_parser = clap::value_parser!(i32).range(1..=65536))]
    pub root_volume_size: Option<i32>,

    /// File whose content becomes the instances' user-data (only its sha256 goes into the state)
    #[arg(long, env = "SWITCHYARD_USER_DATA", value_name = "FILE")]
    pub user_data: Option<PathBuf>,

    /// Subnet of a new group, as SUBNET or REGION=SUBNET (repeatable)
    #[arg(
        long = "subnet",
        env = "SWITCHYARD_SUBNETS",
        value_delimiter = ',',
        value_name = "[REGION=]SUBNET"
    )]
    pub subnets: Vec<String>,

    /// Target group ARN a new group registers its instances with (repeatable; the ARN's region picks the group)
    #[arg(
        long = "target-group",
        env = "SWITCHYARD_TARGET_GROUPS",
        value_delimiter = ',',
        value_name = "ARN"
    )]
    pub target_groups: Vec<String>,

    /// Health check type of a new group
    #[arg(long, env = "SWITCHYARD_HEALTH_CHECK_TYPE", value_enum, default_value_t = HealthCheckType::Ec2)]
    pub health_check_type: HealthCheckType,

    /// Health check grace period of a new group
    #[arg(long, env = "SWITCHYARD_HEALTH_CHECK_GRACE", value_parser = parse_duration, default_value = "5m", value_name = "DURATION")]
    pub health_check_grace: Duration,

    /// Desired capacity [default: the active color's desired capacity]
    #[arg(long, env = "SWITCHYARD_DESIRED", value_name = "N")]
    pub desired: Option<u32>,

    /// Minimum capacity [default: the desired capacity]
    #[arg(long, env = "SWITCHYARD_MIN", value_name = "N")]
    pub min: Option<u32>,

    /// Maximum capacity [default: twice the desired capacity]
    #[arg(long, env = "SWITCHYARD_MAX", value_name = "N")]
    pub max: Option<u32>,

    /// Add an instance when the average CPU is at or above this percentage
    #[arg(
        long,
        env = "SWITCHYARD_SCALE_UP_CPU",
        default_value_t = 70.0,
        value_name = "PCT"
    )]
    pub scale_up_cpu: f64,

    /// Remove an instance when the average CPU is at or below this percentage
    #[arg(
        long,
        env = "SWITCHYARD_SCALE_DOWN_CPU",
        default_value_t = 10.0,
        value_name = "PCT"
    )]
    pub scale_down_cpu: f64,

    /// Period of the CPU alarms
    #[arg(long, env = "SWITCHYARD_SCALE_PERIOD", value_parser = parse_duration, default_value = "5m", value_name = "DURATION")]
    pub scale_period: Duration,

    /// Periods in a row a CPU alarm must breach
    #[arg(
        long,
        env = "SWITCHYARD_SCALE_EVALUATION_PERIODS",
        default_value_t = 1,
        value_name = "N"
    )]
    pub scale_evaluation_periods: u32,

    /// Cooldown after a simple scaling activity
    #[arg(long, env = "SWITCHYARD_SCALE_COOLDOWN", value_parser = parse_duration, default_value = "5m", value_name = "DURATION")]
    pub scale_cooldown: Duration,

    /// Use target tracking on the average CPU at this percentage instead of the alarm policies
    #[arg(
        long,
        env = "SWITCHYARD_CPU_TARGET",
        value_name = "PCT",
        conflicts_with = "no_scaling"
    )]
    pub cpu_target: Option<f64>,

    /// Leave the groups' scaling policies alone
    #[arg(long, env = "SWITCHYARD_NO_SCALING", value_parser = BoolishValueParser::new())]
    pub no_scaling: bool,

    /// EC2_INSTANCE_TERMINATING lifecycle hook every group gets: a terminating instance waits
    /// until `register-host watch` on it has drained it and completed the hook
    #[arg(
        long,
        env = "SWITCHYARD_TERMINATION_HOOK",
        default_value = crate::stack::asg::TerminationHook::DEFAULT_NAME,
        value_name = "NAME"
    )]
    pub termination_hook: String,

    /// Heartbeat time-out of the termination hook (30s to 2h); then the termination goes on
    #[arg(long, env = "SWITCHYARD_TERMINATION_HEARTBEAT", value_parser = parse_duration, default_value = "10m", value_name = "DURATION")]
    pub termination_heartbeat: Duration,

    /// Put no termination hook on the groups (hooks already there are left alone)
    #[arg(long, env = "SWITCHYARD_NO_TERMINATION_HOOK", value_parser = BoolishValueParser::new())]
    pub no_termination_hook: bool,

    /// Port the service listens on, for the endpoints
    #[arg(
        long,
        env = "SWITCHYARD_PORT",
        default_value_t = 80,
        value_name = "PORT"
    )]
    pub port: u16,

    /// How an instance's endpoint is written into the state: {ip}, {port}, {instance}
    #[arg(
        long,
        env = "SWITCHYARD_ENDPOINT_TEMPLATE",
        default_value = "{ip}:{port}",
        value_name = "TEMPLATE"
    )]
    pub endpoint_template: String,

    /// How many versions of each launch template to keep, newest first (a number of 1 or more,
    /// or `all`). When a deploy writes a new version, older ones are deleted, never the default
    /// version nor one an Auto Scaling group of the service or its instances use
    #[arg(long, env = "SWITCHYARD_KEEP_VERSIONS", value_parser = Keep::parse, default_value = "5", value_name = "N|all")]
    pub keep_versions: Keep,
}

/// Flags of the rolling strategy.
#[derive(Debug, Clone, clap::Args)]
pub struct RollingArgs {
    /// Blue-green (a standby stack per color) or rolling (replace one group's instances in place)
    #[arg(long, env = "SWITCHYARD_STRATEGY", value_enum, default_value_t = Strategy::BlueGreen)]
    pub strategy: Strategy,

    /// Rolling: the Auto Scaling group to update in place [default: --group-pattern with --color]
    #[arg(long, env = "SWITCHYARD_GROUP", value_name = "NAME")]
    pub group: Option<String>,

    /// Rolling: instances replaced per batch
    #[arg(
        long,
        env = "SWITCHYARD_BATCH_SIZE",
        default_value_t = 1,
        value_name = "N"
    )]
    pub batch_size: usize,

    /// Rolling: pause between batches
    #[arg(long, env = "SWITCHYARD_BATCH_INTERVAL", value_parser = parse_duration, default_value = "0s", value_name = "DURATION")]
    pub batch_interval: Duration,

    /// Rolling: start a batch of new instances before stopping old ones (else stop first)
    #[arg(long, env = "SWITCHYARD_START_FIRST", value_parser = BoolishValueParser::new())]
    pub start_first: bool,

    /// Rolling: keep the finished update (forget the way back)
    #[arg(long, conflicts_with = "rollback")]
    pub confirm: bool,

    /// Rolling: revert the unconfirmed update to the previous launch template version
    #[arg(long)]
    pub rollback: bool,

    /// Rolling: path each new instance must answer healthy on (at --port) before the next batch
    #[arg(
        long,
        env = "SWITCHYARD_HEALTH_PATH",
        default_value = "/health",
        value_name = "PATH"
    )]
    pub health_path: String,

    /// Rolling: time-out of one health probe
    #[arg(long, env = "SWITCHYARD_HEALTH_TIMEOUT", value_parser = parse_duration, default_value = "5s", value_name = "DURATION")]
    pub health_timeout: Duration,

    /// Rolling: what judges each batch's new instances: HTTP probes of their private addresses
    /// from here, or their health in the group's target groups (for a runner outside the VPC)
    #[arg(long, env = "SWITCHYARD_BATCH_CHECK", value_enum, default_value_t = BatchCheck::Probes)]
    pub batch_check: BatchCheck,
}

/// What judges a rolling update's batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BatchCheck {
    /// HTTP probes of --health-path on each new instance's private address, at --port
    Probes,
    /// Each new instance healthy in every target group of the group (DescribeTargetHealth)
    TargetHealth,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scale the old stack to zero, once the other has taken 100% of the traffic and passed its post-promotion check
    ///
    /// Refuses (exit 5) unless a route in the state shows the other color at
    /// 100% with its shift completed and the other color's last health verdict
    /// is healthy and newer than the shift. Then it waits until --retire-after
    /// has passed since the shift completed (within --timeout), checking the
    /// active color all along (its --gate-url, else its verdict in the state):
    /// if that turns unhealthy it stops (exit 1) and the old stack stays up.
    /// With --no-wait it refuses (exit 5) while --retire-after has not passed.
    Retire {
        /// How long after the shift completed the old stack stays up for a quick rollback
        #[arg(long, env = "SWITCHYARD_RETIRE_AFTER", value_parser = parse_duration, default_value = "10m", value_name = "DURATION")]
        retire_after: Duration,

        /// Refuse (exit 5) instead of waiting while --retire-after has not passed
        #[arg(long, env = "SWITCHYARD_NO_WAIT", value_parser = BoolishValueParser::new())]
        no_wait: bool,

        /// URL of the active stack that must answer 2xx or 3xx while retire waits (repeatable)
        #[arg(
            long = "gate-url",
            env = "SWITCHYARD_GATE_URLS",
            value_delimiter = ',',
            value_name = "URL"
        )]
        gate_urls: Vec<String>,

        /// Time between checks of the active stack while retire waits
        #[arg(long, env = "SWITCHYARD_CHECK_EVERY", value_parser = parse_duration, default_value = "30s", value_name = "DURATION")]
        check_every: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Driver {
    /// One EC2 Auto Scaling group per color, from a launch template
    Asg,
    /// Any orchestrator, through the --up, --down and --endpoints command templates
    Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Strategy {
    /// A standby stack per color, brought up beside the active one
    BlueGreen,
    /// One group's instances replaced in batches, each verified, rolled back on failure
    Rolling,
}

impl DeployStandbyArgs {
    /// Parses `line` (the program name first), collecting every `--region`.
    pub fn try_parse_line<I, T>(line: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Self::command().try_get_matches_from(line)?;
        let mut args = Self::from_arg_matches(&matches)?;
        args.regions = regions(&matches);
        Ok(args)
    }
}

impl StepArgs for DeployStandbyArgs {
    fn common(&self) -> &CommonArgs {
        &self.common
    }

    fn from_command_line() -> Self {
        Self::try_parse_line(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }
}

/// Every `--region` given (the common flag, repeatable here), each once, in order.
fn regions(matches: &ArgMatches) -> Vec<String> {
    let mut all: Vec<String> = matches
        .get_many::<String>("region")
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    if let Some((_, sub)) = matches.subcommand() {
        if let Some(more) = sub.get_many::<String>("region") {
            all.extend(more.cloned());
        }
    }
    let mut seen = Vec::new();
    for r in all
        .into_iter()
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
    {
        if !seen.contains(&r) {
            seen.push(r);
        }
    }
    seen
}
