//! `deploy-standby`: bring the standby stack (blue or green) up at the new
//! version on EC2 Auto Scaling, in one or more regions at once; and retire
//! the old stack once the new one has taken all the traffic.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use switchyard::aws::{self, AwsSettings};
use switchyard::cli::{exit, logging, output, parse_duration, CommonArgs, Failure};
use switchyard::stack::asg::{AlarmScaling, AsgClients, AsgDriver, AsgSettings, Scaling};
use switchyard::stack::command::{CommandDriver, CommandTemplates};
use switchyard::stack::rolling;
use switchyard::stack::standby::{self, DeployRequest, Options, Region, RetireRequest};
use switchyard::state::StateFile;

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
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    stack: StackArgs,

    #[command(flatten)]
    up: UpArgs,

    #[command(flatten)]
    rolling: RollingArgs,

    #[command(flatten)]
    common: CommonArgs,
}

/// Flags naming the stack, for bringing it up and for retiring it.
#[derive(Debug, Clone, clap::Args)]
struct StackArgs {
    /// Service name [default: the state's deployment service]
    #[arg(long, global = true, env = "SWITCHYARD_SERVICE", value_name = "NAME")]
    service: Option<String>,

    /// The color to deploy (or retire) [default: chosen from the state, else the groups]
    #[arg(long, global = true, env = "SWITCHYARD_COLOR", value_enum)]
    color: Option<Color>,

    /// The stack driver
    #[arg(long, global = true, env = "SWITCHYARD_DRIVER", value_enum, default_value_t = Driver::Asg)]
    driver: Driver,

    /// Command that brings a stack up (--driver command), e.g. 'docker compose -p app-{color} up -d';
    /// fields {service} {color} {version} {image} {region}, each one quoted shell word
    #[arg(
        long = "up",
        global = true,
        env = "SWITCHYARD_UP_COMMAND",
        value_name = "COMMAND"
    )]
    up_command: Option<String>,

    /// Command that takes a stack down (--driver command; retire runs it)
    #[arg(
        long = "down",
        global = true,
        env = "SWITCHYARD_DOWN_COMMAND",
        value_name = "COMMAND"
    )]
    down_command: Option<String>,

    /// Command that prints the stack's endpoints after --up, one URL or host:port a line or a JSON array (--driver command)
    #[arg(
        long = "endpoints",
        global = true,
        env = "SWITCHYARD_ENDPOINTS_COMMAND",
        value_name = "COMMAND"
    )]
    endpoints_command: Option<String>,

    /// Name of a color's Auto Scaling group and launch template; {service}, {color}, {region}
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_GROUP_PATTERN",
        default_value = "{service}-{color}",
        value_name = "PATTERN"
    )]
    group_pattern: String,
}

#[derive(Debug, Clone, clap::Args)]
struct UpArgs {
    /// Version to run [default: the state's deployment version]
    #[arg(long = "release", env = "SWITCHYARD_VERSION", value_name = "VERSION")]
    release: Option<String>,

    /// Machine image for every region [default: the state's image for each region, from bake-ami]
    #[arg(long, env = "SWITCHYARD_IMAGE", value_name = "AMI")]
    image: Option<String>,

    /// Instance type
    #[arg(
        long,
        env = "SWITCHYARD_INSTANCE_TYPE",
        default_value = "t3.micro",
        value_name = "TYPE"
    )]
    instance_type: String,

    /// File whose content becomes the instances' user-data (only its sha256 goes into the state)
    #[arg(long, env = "SWITCHYARD_USER_DATA", value_name = "FILE")]
    user_data: Option<PathBuf>,

    /// Subnet of a new group, as SUBNET or REGION=SUBNET (repeatable)
    #[arg(
        long = "subnet",
        env = "SWITCHYARD_SUBNETS",
        value_delimiter = ',',
        value_name = "[REGION=]SUBNET"
    )]
    subnets: Vec<String>,

    /// Target group ARN a new group registers its instances with (repeatable; the ARN's region picks the group)
    #[arg(
        long = "target-group",
        env = "SWITCHYARD_TARGET_GROUPS",
        value_delimiter = ',',
        value_name = "ARN"
    )]
    target_groups: Vec<String>,

    /// Health check type of a new group
    #[arg(long, env = "SWITCHYARD_HEALTH_CHECK_TYPE", value_enum, default_value_t = HealthCheck::Ec2)]
    health_check_type: HealthCheck,

    /// Health check grace period of a new group
    #[arg(long, env = "SWITCHYARD_HEALTH_CHECK_GRACE", value_parser = parse_duration, default_value = "5m", value_name = "DURATION")]
    health_check_grace: Duration,

    /// Desired capacity [default: the active color's desired capacity]
    #[arg(long, env = "SWITCHYARD_DESIRED", value_name = "N")]
    desired: Option<u32>,

    /// Minimum capacity [default: the desired capacity]
    #[arg(long, env = "SWITCHYARD_MIN", value_name = "N")]
    min: Option<u32>,

    /// Maximum capacity [default: twice the desired capacity]
    #[arg(long, env = "SWITCHYARD_MAX", value_name = "N")]
    max: Option<u32>,

    /// Add an instance when the average CPU is at or above this percentage
    #[arg(
        long,
        env = "SWITCHYARD_SCALE_UP_CPU",
        default_value_t = 70.0,
        value_name = "PCT"
    )]
    scale_up_cpu: f64,

    /// Remove an instance when the average CPU is at or below this percentage
    #[arg(
        long,
        env = "SWITCHYARD_SCALE_DOWN_CPU",
        default_value_t = 10.0,
        value_name = "PCT"
    )]
    scale_down_cpu: f64,

    /// Period of the CPU alarms
    #[arg(long, env = "SWITCHYARD_SCALE_PERIOD", value_parser = parse_duration, default_value = "5m", value_name = "DURATION")]
    scale_period: Duration,

    /// Periods in a row a CPU alarm must breach
    #[arg(
        long,
        env = "SWITCHYARD_SCALE_EVALUATION_PERIODS",
        default_value_t = 1,
        value_name = "N"
    )]
    scale_evaluation_periods: u32,

    /// Cooldown after a simple scaling activity
    #[arg(long, env = "SWITCHYARD_SCALE_COOLDOWN", value_parser = parse_duration, default_value = "5m", value_name = "DURATION")]
    scale_cooldown: Duration,

    /// Use target tracking on the average CPU at this percentage instead of the alarm policies
    #[arg(
        long,
        env = "SWITCHYARD_CPU_TARGET",
        value_name = "PCT",
        conflicts_with = "no_scaling"
    )]
    cpu_target: Option<f64>,

    /// Leave the groups' scaling policies alone
    #[arg(long, env = "SWITCHYARD_NO_SCALING", value_parser = BoolishValueParser::new())]
    no_scaling: bool,

    /// Port the service listens on, for the endpoints
    #[arg(
        long,
        env = "SWITCHYARD_PORT",
        default_value_t = 80,
        value_name = "PORT"
    )]
    port: u16,

    /// How an instance's endpoint is written into the state: {ip}, {port}, {instance}
    #[arg(
        long,
        env = "SWITCHYARD_ENDPOINT_TEMPLATE",
        default_value = "{ip}:{port}",
        value_name = "TEMPLATE"
    )]
    endpoint_template: String,
}

/// Flags of the rolling strategy.
#[derive(Debug, Clone, clap::Args)]
struct RollingArgs {
    /// Blue-green (a standby stack per color) or rolling (replace one group's instances in place)
    #[arg(long, env = "SWITCHYARD_STRATEGY", value_enum, default_value_t = Strategy::BlueGreen)]
    strategy: Strategy,

    /// Rolling: the Auto Scaling group to update in place [default: --group-pattern with --color]
    #[arg(long, env = "SWITCHYARD_GROUP", value_name = "NAME")]
    group: Option<String>,

    /// Rolling: instances replaced per batch
    #[arg(
        long,
        env = "SWITCHYARD_BATCH_SIZE",
        default_value_t = 1,
        value_name = "N"
    )]
    batch_size: usize,

    /// Rolling: pause between batches
    #[arg(long, env = "SWITCHYARD_BATCH_INTERVAL", value_parser = parse_duration, default_value = "0s", value_name = "DURATION")]
    batch_interval: Duration,

    /// Rolling: start a batch of new instances before stopping old ones (else stop first)
    #[arg(long, env = "SWITCHYARD_START_FIRST", value_parser = BoolishValueParser::new())]
    start_first: bool,

    /// Rolling: keep the finished update (forget the way back)
    #[arg(long, conflicts_with = "rollback")]
    confirm: bool,

    /// Rolling: revert the unconfirmed update to the previous launch template version
    #[arg(long)]
    rollback: bool,

    /// Rolling: path each new instance must answer healthy on (at --port) before the next batch
    #[arg(
        long,
        env = "SWITCHYARD_HEALTH_PATH",
        default_value = "/health",
        value_name = "PATH"
    )]
    health_path: String,

    /// Rolling: time-out of one health probe
    #[arg(long, env = "SWITCHYARD_HEALTH_TIMEOUT", value_parser = parse_duration, default_value = "5s", value_name = "DURATION")]
    health_timeout: Duration,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Scale the old stack to zero, once the other has taken 100% of the traffic and passed its post-promotion check
    ///
    /// Refuses (exit 5) unless a route in the state shows the other color at
    /// 100% with its shift completed, the other color's last health verdict is
    /// healthy and newer than the shift, and --retire-after has passed since.
    Retire {
        /// How long after the shift completed the old stack stays up for a quick rollback
        #[arg(long, env = "SWITCHYARD_RETIRE_AFTER", value_parser = parse_duration, default_value = "10m", value_name = "DURATION")]
        retire_after: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Color {
    Blue,
    Green,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Driver {
    /// One EC2 Auto Scaling group per color, from a launch template
    Asg,
    /// Any orchestrator, through the --up, --down and --endpoints command templates
    Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Strategy {
    /// A standby stack per color, brought up beside the active one
    BlueGreen,
    /// One group's instances replaced in batches, each verified, rolled back on failure
    Rolling,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum HealthCheck {
    /// The instance's EC2 status checks
    Ec2,
    /// The load balancer's target health checks
    Elb,
}

/// AWS caps user-data at 16 KB before base64.
const USER_DATA_LIMIT: usize = 16 * 1024;

fn main() -> ExitCode {
    if let Some(code) = switchyard::cli::generate::intercept::<Args>() {
        return code;
    }
    let matches = Args::command().get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    logging::init(args.common.verbose, args.common.quiet);
    let format = args.common.output;
    let regions = regions(&matches);
    exit::report(run(&args, &regions), format, "deploy-standby")
}

/// Every `--region` given (the common flag, repeatable here).
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

/// The checked settings, before any network call.
#[derive(Debug)]
struct Settings {
    asg: AsgSettings,
    subnets: BTreeMap<Option<String>, Vec<String>>,
    target_groups: BTreeMap<String, Vec<String>>,
}

fn check_region(region: &str) -> Result<(), Failure> {
    let ok = region.split('-').count() >= 3
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Failure::usage(format!(
            "--region {region:?} is not a region name (e.g. us-east-1)"
        )))
    }
}

fn settings(args: &Args, regions: &[String]) -> Result<Settings, Failure> {
    for r in regions {
        check_region(r)?;
    }
    let up = &args.up;
    if !args.stack.group_pattern.contains("{color}") {
        return Err(Failure::usage(
            "--group-pattern must contain {color}, or both colors would share one group",
        ));
    }
    if args.common.timeout.is_zero() {
        return Err(Failure::usage("--timeout must be more than 0s"));
    }
    let user_data = read_user_data(up.user_data.as_deref())?;
    if up.instance_type.trim().is_empty() || !up.instance_type.contains('.') {
        return Err(Failure::usage(format!(
            "--instance-type {:?} is not an instance type (e.g. t3.micro)",
            up.instance_type
        )));
    }
    if let (Some(image), Driver::Asg) = (&up.image, args.stack.driver) {
        if !image.starts_with("ami-") {
            return Err(Failure::usage(format!(
                "--image {image:?} is not an AMI id (ami-...)"
            )));
        }
    }
    if let (Some(min), Some(max)) = (up.min, up.max) {
        if min > max {
            return Err(Failure::usage(format!("--min {min} is above --max {max}")));
        }
    }
    if !up.endpoint_template.contains("{ip}") && !up.endpoint_template.contains("{instance}") {
        return Err(Failure::usage(
            "--endpoint-template must contain {ip} (or {instance})",
        ));
    }
    let (subnets, target_groups) = placement(up, regions)?;
    let scaling = scaling(up)?;
    let asg = AsgSettings {
        group_pattern: args.stack.group_pattern.clone(),
        instance_type: up.instance_type.clone(),
        user_data,
        health_check_type: match up.health_check_type {
            HealthCheck::Ec2 => "EC2",
            HealthCheck::Elb => "ELB",
        }
        .to_owned(),
        grace_period: up.health_check_grace,
        desired: up.desired,
        min: up.min,
        max: up.max,
        scaling,
        port: up.port,
        endpoint_template: up.endpoint_template.clone(),
        ..AsgSettings::default()
    };
    Ok(Settings {
        asg,
        subnets,
        target_groups,
    })
}

/// The user-data file's bytes, checked against EC2's limit.
fn read_user_data(path: Option<&std::path::Path>) -> Result<Option<Vec<u8>>, Failure> {
    let Some(path) = path else {
        return Ok(None);
    };
    let bytes = std::fs::read(path).map_err(|e| {
        Failure::usage(format!(
            "--user-data {}: cannot read it: {e}",
            path.display()
        ))
    })?;
    if bytes.len() > USER_DATA_LIMIT {
        return Err(Failure::usage(format!(
            "--user-data {} is {} bytes; EC2 takes at most {USER_DATA_LIMIT}",
            path.display(),
            bytes.len()
        )));
    }
    Ok(Some(bytes))
}

/// The scaling policies the flags ask for.
fn scaling(up: &UpArgs) -> Result<Scaling, Failure> {
    let in_range = |v: f64| (0.0..=100.0).contains(&v);
    if !in_range(up.scale_up_cpu)
        || !in_range(up.scale_down_cpu)
        || up.scale_down_cpu >= up.scale_up_cpu
    {
        return Err(Failure::usage(format!(
            "--scale-down-cpu {} must be below --scale-up-cpu {}, both within 0-100",
            up.scale_down_cpu, up.scale_up_cpu
        )));
    }
    let period = up.scale_period.as_secs();
    if !(period == 10 || period == 30 || (period >= 60 && period % 60 == 0)) {
        return Err(Failure::usage(format!(
            "--scale-period {period}s: CloudWatch takes 10s, 30s or a multiple of 60s"
        )));
    }
    if up.scale_evaluation_periods == 0 {
        return Err(Failure::usage(
            "--scale-evaluation-periods must be at least 1",
        ));
    }
    if let Some(t) = up.cpu_target {
        if !(t > 0.0 && t <= 100.0) {
            return Err(Failure::usage(format!("--cpu-target {t} is outside 1-100")));
        }
    }
    Ok(match (up.no_scaling, up.cpu_target) {
        (true, _) => Scaling::Unmanaged,
        (false, Some(t)) => Scaling::CpuTarget(t),
        (false, None) => Scaling::Alarms(AlarmScaling {
            up_threshold: up.scale_up_cpu,
            down_threshold: up.scale_down_cpu,
            period: up.scale_period,
            evaluation_periods: up.scale_evaluation_periods,
            cooldown: up.scale_cooldown,
        }),
    })
}

/// Subnets by region (`None`: for the only region) and target groups by the region in their ARN.
#[allow(clippy::type_complexity)]
fn placement(
    up: &UpArgs,
    regions: &[String],
) -> Result<
    (
        BTreeMap<Option<String>, Vec<String>>,
        BTreeMap<String, Vec<String>>,
    ),
    Failure,
> {
    let mut subnets: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
    for s in &up.subnets {
        let (region, id) = match s.split_once('=') {
            Some((r, id)) => {
                check_region(r)?;
                (Some(r.to_owned()), id)
            }
            None => (None, s.as_str()),
        };
        if !id.starts_with("subnet-") {
            return Err(Failure::usage(format!(
                "--subnet {s:?} is not a subnet id (subnet-...)"
            )));
        }
        subnets.entry(region).or_default().push(id.to_owned());
    }
    if regions.len() > 1 && subnets.contains_key(&None) {
        return Err(Failure::usage(
            "with several regions, give each subnet as REGION=SUBNET: subnet ids belong to one region",
        ));
    }
    let mut target_groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for arn in &up.target_groups {
        let parts: Vec<&str> = arn.split(':').collect();
        if parts.len() < 6
            || parts[0] != "arn"
            || parts[2] != "elasticloadbalancing"
            || !parts[5].starts_with("targetgroup/")
        {
            return Err(Failure::usage(format!(
                "--target-group {arn:?} is not a target group ARN"
            )));
        }
        target_groups
            .entry(parts[3].to_owned())
            .or_default()
            .push(arn.clone());
    }
    Ok((subnets, target_groups))
}

/// One `asg` driver per region: `--region`, else the regions the state's
/// stacks span, else the default chain.
async fn asg_drivers(
    args: &Args,
    checked: &Settings,
    regions: &[String],
    state: &StateFile,
) -> Result<Vec<Region>, Failure> {
    let mut names: Vec<Option<String>> = regions.iter().cloned().map(Some).collect();
    if names.is_empty() {
        let doc = state.load()?;
        names = standby::state_regions(&doc).into_iter().map(Some).collect();
    }
    if names.is_empty() {
        names.push(None);
    }
    let mut drivers = Vec::new();
    for name in names {
        let config = aws::load(&AwsSettings {
            region: name.clone(),
            profile: args.common.profile.clone(),
        })
        .await;
        let region = config
            .region()
            .map_or_else(|| "us-east-1".to_owned(), ToString::to_string);
        let mut s = checked.asg.clone();
        s.subnets = checked
            .subnets
            .get(&Some(region.clone()))
            .or_else(|| checked.subnets.get(&None))
            .cloned()
            .unwrap_or_default();
        s.target_groups = checked
            .target_groups
            .get(&region)
            .cloned()
            .unwrap_or_default();
        drivers.push(Region {
            name: region,
            driver: standby::Driver::Asg(AsgDriver::new(AsgClients::new(&config), s)),
        });
    }
    Ok(drivers)
}

/// The command driver, once per `--region` (or once, as region `local`).
fn command_drivers(args: &Args, regions: &[String]) -> Result<Vec<Region>, Failure> {
    let s = &args.stack;
    // retire runs only --down; the driver still wants an --up to parse.
    let up = match (&args.command, &s.up_command, &s.down_command) {
        (_, Some(up), _) => up.clone(),
        (Some(Command::Retire { .. }), None, Some(down)) => down.clone(),
        (Some(Command::Retire { .. }), None, None) => {
            return Err(Failure::usage("--driver command: retire needs --down"))
        }
        (None, None, _) => return Err(Failure::usage("--driver command needs --up")),
    };
    let driver = CommandDriver::new(&CommandTemplates {
        up,
        down: s.down_command.clone(),
        endpoints: s.endpoints_command.clone(),
    })?;
    let names = if regions.is_empty() {
        vec!["local".to_owned()]
    } else {
        regions.to_vec()
    };
    Ok(names
        .into_iter()
        .map(|name| Region {
            name,
            driver: standby::Driver::Command(driver.clone()),
        })
        .collect())
}

/// A rolling command's result on stdout.
#[derive(Debug, serde::Serialize)]
#[serde(transparent)]
struct RollingOutput(rolling::RollingReport);

impl output::StepReport for RollingOutput {
    fn text(&self) -> String {
        let r = &self.0;
        let mut text = format!(
            "{}: group {} on launch template version {}, {} batch(es) done, status {}\n",
            r.stack,
            r.group,
            r.launch_template_version,
            r.batches_done,
            serde_json::to_value(r.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        );
        for c in &r.changes {
            let _ = writeln!(text, "  - {c}");
        }
        text
    }

    fn outputs(&self) -> Vec<(String, String)> {
        vec![
            ("group".to_owned(), self.0.group.clone()),
            (
                "launch-template-version".to_owned(),
                self.0.launch_template_version.clone(),
            ),
        ]
    }

    fn summary(&self) -> String {
        format!(
            "### deploy-standby rolling: {} on version {} ({} batches)\n",
            self.0.group, self.0.launch_template_version, self.0.batches_done
        )
    }
}

/// The checked settings of a rolling update of `group`, named `stack` in the state.
fn rolling_settings(
    args: &Args,
    checked: &Settings,
    doc: &switchyard::state::StateDocument,
    (stack, group): (String, String),
    region: &str,
) -> Result<rolling::RollingSettings, Failure> {
    let user_data = match &checked.asg.user_data {
        Some(bytes) => Some(String::from_utf8(bytes.clone()).map_err(|_| {
            Failure::usage("--user-data must be text (UTF-8) for --strategy rolling")
        })?),
        None => None,
    };
    Ok(rolling::RollingSettings {
        stack,
        group,
        version: args
            .up
            .release
            .clone()
            .or_else(|| doc.deployment.as_ref().and_then(|d| d.version.clone()))
            .ok_or_else(|| {
                Failure::usage("no --release, and the state names no deployment version")
            })?,
        image: args
            .up
            .image
            .clone()
            .or_else(|| doc.image.as_ref().and_then(|i| i.amis.get(region).cloned())),
        user_data,
        batch_size: args.rolling.batch_size,
        batch_interval: args.rolling.batch_interval,
        start_first: args.rolling.start_first,
        poll: rolling::RollingSettings::POLL,
    })
}

/// `--strategy rolling`, `--confirm`, `--rollback`: one group updated in place.
async fn rolling(
    args: &Args,
    checked: &Settings,
    regions: &[String],
    state: &StateFile,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(), Failure> {
    if regions.len() > 1 {
        return Err(Failure::usage(
            "--strategy rolling updates one group in one region; give one --region",
        ));
    }
    let doc = state.load()?;
    let service = args
        .stack
        .service
        .clone()
        .or_else(|| doc.deployment.as_ref().and_then(|d| d.service.clone()));
    let color = args.stack.color.map(|c| match c {
        Color::Blue => "blue",
        Color::Green => "green",
    });
    let group = match (&args.rolling.group, &service, color) {
        (Some(g), _, _) => g.clone(),
        (None, Some(service), Some(color)) => switchyard::stack::asg::group_name(
            &args.stack.group_pattern,
            service,
            color,
            regions.first().map_or("", String::as_str),
        ),
        _ => {
            return Err(Failure::usage(
                "--strategy rolling needs --group, or --service and --color to name the group",
            ))
        }
    };
    let stack = color.map_or_else(|| group.clone(), str::to_owned);
    let config = aws::load(&AwsSettings {
        region: regions.first().cloned(),
        profile: args.common.profile.clone(),
    })
    .await;
    let region = config
        .region()
        .map_or_else(|| "us-east-1".to_owned(), ToString::to_string);
    let clients = rolling::RollingClients {
        autoscaling: aws_sdk_autoscaling::Client::new(&config),
        ec2: aws_sdk_ec2::Client::new(&config),
        elbv2: aws_sdk_elasticloadbalancingv2::Client::new(&config),
    };
    let wait = switchyard::stack::Wait {
        deadline: tokio::time::Instant::now() + args.common.timeout,
        cancel: cancel.clone(),
    };
    let report = if args.rolling.confirm {
        rolling::confirm(state, &stack)?
    } else if args.rolling.rollback {
        rolling::rollback(
            &clients,
            state,
            &stack,
            rolling::RollingSettings::POLL,
            &wait,
        )
        .await?
    } else {
        let settings = rolling_settings(args, checked, &doc, (stack.clone(), group), &region)?;
        if args.common.dry_run {
            let plan = rolling::plan(&clients, &settings).await?;
            println!(
                "plan of the rolling update of {} (dry run, nothing changed)",
                settings.group
            );
            for line in plan {
                println!("  - {line}");
            }
            return Ok(());
        }
        let check = rolling::HealthBatchCheck {
            probe: switchyard::health::HttpProbe::new(args.rolling.health_timeout)
                .map_err(|e| Failure::usage(e.to_string()))?,
            policy: switchyard::health::policy::ProbePolicy::default(),
            url: switchyard::health::targets::UrlTemplate {
                scheme: "http".to_owned(),
                port: Some(args.up.port),
                path: args.rolling.health_path.clone(),
            },
        };
        rolling::update(&clients, &settings, &check, state, &wait).await?
    };
    output::emit(args.common.output, &RollingOutput(report));
    Ok(())
}

fn run(args: &Args, regions: &[String]) -> Result<(), Failure> {
    let checked = settings(args, regions)?;
    if args.common.print_iam_policy {
        let retire = matches!(args.command, Some(Command::Retire { .. }));
        let policy = match args.stack.driver {
            Driver::Command if args.rolling.strategy != Strategy::Rolling => {
                switchyard::aws::iam::Policy::new()
            }
            _ => switchyard::stack::asg_policy(retire),
        };
        switchyard::aws::iam::print(&policy);
        return Ok(());
    }
    let state = StateFile::new(&args.common.state);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(exit::Code::Provider, e))?;
    runtime.block_on(async {
        let cancel = switchyard::wait::signal::cancel_on_signals();
        if args.rolling.strategy == Strategy::Rolling
            || args.rolling.confirm
            || args.rolling.rollback
        {
            return rolling(args, &checked, regions, &state, &cancel).await;
        }
        let drivers = match args.stack.driver {
            Driver::Asg => asg_drivers(args, &checked, regions, &state).await?,
            Driver::Command => command_drivers(args, regions)?,
        };
        let options = Options {
            dry_run: args.common.dry_run,
            timeout: args.common.timeout,
            hooks: args.common.hooks(),
        };
        let color = args.stack.color.map(|c| match c {
            Color::Blue => "blue".to_owned(),
            Color::Green => "green".to_owned(),
        });
        let report = match &args.command {
            None => {
                let request = DeployRequest {
                    service: args.stack.service.clone(),
                    version: args.up.release.clone(),
                    color,
                    image: args.up.image.clone(),
                };
                standby::deploy(&state, &drivers, &request, &options, &cancel).await?
            }
            Some(Command::Retire { retire_after }) => {
                let request = RetireRequest {
                    service: args.stack.service.clone(),
                    color,
                    retire_after: *retire_after,
                };
                standby::retire(&state, &drivers, &request, &options, &cancel).await?
            }
        };
        output::emit(args.common.output, &report);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_is_the_documented_contract() {
        let help = Args::command()
            .term_width(100)
            .render_long_help()
            .to_string();
        insta::assert_snapshot!("deploy-standby-help", help);
        let mut command = Args::command();
        command.build();
        let retire = command
            .find_subcommand_mut("retire")
            .unwrap()
            .clone()
            .term_width(100)
            .render_long_help()
            .to_string();
        insta::assert_snapshot!("deploy-standby-retire-help", retire);
    }

    #[test]
    fn args_are_consistent() {
        Args::command().debug_assert();
    }

    fn parse(extra: &[&str]) -> Result<(Args, Vec<String>), String> {
        let mut line = vec!["deploy-standby"];
        line.extend_from_slice(extra);
        let matches = Args::command()
            .try_get_matches_from(line)
            .map_err(|e| e.kind().to_string())?;
        let args = Args::from_arg_matches(&matches).map_err(|e| e.to_string())?;
        let regions = regions(&matches);
        Ok((args, regions))
    }

    fn check(extra: &[&str]) -> Result<Settings, String> {
        let (args, regions) = parse(extra)?;
        settings(&args, &regions).map_err(|f| format!("{}: {}", f.code.number(), f.error))
    }

    #[test]
    fn region_repeats_and_splits_on_commas() {
        let (_, regions) =
            parse(&["--region", "us-east-1", "--region", "eu-west-1,us-east-1"]).unwrap();
        assert_eq!(regions, ["us-east-1", "eu-west-1"]);
        let (args, regions) = parse(&["retire", "--region", "us-west-2"]).unwrap();
        assert_eq!(regions, ["us-west-2"]);
        assert!(matches!(args.command, Some(Command::Retire { .. })));
    }

    #[test]
    fn bad_input_is_refused_with_exit_2() {
        assert_eq!(
            check(&["--region", "nowhere"]).unwrap_err(),
            "2: --region \"nowhere\" is not a region name (e.g. us-east-1)"
        );
        assert_eq!(
            check(&["--region", "us-east-1", "--region", "eu-west-1", "--subnet", "subnet-1"]).unwrap_err(),
            "2: with several regions, give each subnet as REGION=SUBNET: subnet ids belong to one region"
        );
        assert_eq!(
            check(&["--scale-up-cpu", "10", "--scale-down-cpu", "20"]).unwrap_err(),
            "2: --scale-down-cpu 20 must be below --scale-up-cpu 10, both within 0-100"
        );
        assert_eq!(
            check(&["--scale-period", "45s"]).unwrap_err(),
            "2: --scale-period 45s: CloudWatch takes 10s, 30s or a multiple of 60s"
        );
        assert_eq!(
            check(&["--target-group", "arn:aws:s3:::bucket"]).unwrap_err(),
            "2: --target-group \"arn:aws:s3:::bucket\" is not a target group ARN"
        );
        assert_eq!(
            check(&["--group-pattern", "{service}"]).unwrap_err(),
            "2: --group-pattern must contain {color}, or both colors would share one group"
        );
        assert_eq!(
            check(&["--image", "img-1"]).unwrap_err(),
            "2: --image \"img-1\" is not an AMI id (ami-...)"
        );
        assert!(check(&["--user-data", "/nonexistent/user-data"])
            .unwrap_err()
            .starts_with("2: --user-data /nonexistent/user-data: cannot read it"));
        assert!(parse(&["--cpu-target", "50", "--no-scaling"]).is_err());
        assert!(parse(&["--color", "red"]).is_err());
        assert!(parse(&["--confirm", "--rollback"]).is_err());
    }

    #[test]
    fn good_input_becomes_settings() {
        let s = check(&[
            "--region",
            "us-east-1",
            "--region",
            "eu-west-1",
            "--subnet",
            "us-east-1=subnet-a,eu-west-1=subnet-b",
            "--target-group",
            "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123",
            "--cpu-target",
            "50",
        ])
        .unwrap();
        assert_eq!(s.subnets[&Some("eu-west-1".to_owned())], ["subnet-b"]);
        assert_eq!(s.target_groups["eu-west-1"].len(), 1);
        assert_eq!(s.asg.scaling, Scaling::CpuTarget(50.0));
        let s = check(&[]).unwrap();
        assert_eq!(s.asg.scaling, Scaling::Alarms(AlarmScaling::default()));
        assert_eq!(s.asg.health_check_type, "EC2");
    }
}
