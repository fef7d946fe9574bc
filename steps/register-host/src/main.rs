//! `register-host`: a host joins the fleet with its labels, and leaves it
//! cleanly; the fleet by labels; the cloud-init user-data that does both for
//! every host a launch template starts.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};
use switchyard::aws::{self, iam, AwsSettings};
use switchyard::cli::{exit, logging, output, parse_duration, Code, CommonArgs, Failure};
use switchyard::hooks::{HookEnv, Hooks};
use switchyard::host::fleet::{self, FleetQuery};
use switchyard::host::identity::{self, check_provider, Identity, ImdsSettings, AWS};
use switchyard::host::labels::{check_service, Labels};
use switchyard::host::registration::{
    self, parse_target_groups, targets_region, JoinRequest, LeaveRequest, LifecycleHook, Options,
    TargetGroupArn,
};
use switchyard::host::user_data::{self, UserDataSpec};
use switchyard::host::{ec2_in, AwsClients, InputError, STEP};
use switchyard::state::StateFile;

/// A host joins the fleet with its labels, and leaves it cleanly.
///
/// On EC2, `join` reads who the host is from the instance metadata (IMDSv2),
/// tags the instance with its service and labels (switchyard:service,
/// switchyard:label:KEY), registers it in its target groups and waits until
/// they report it healthy; `leave` deregisters it and waits until the groups
/// have drained it, so that no request is cut. Off AWS (--provider NAME
/// --host-id ID --address IP) the host registers its address in IP target
/// groups. Every change is recorded in the state file (hosts, journal).
#[derive(Debug, Parser)]
#[command(name = "register-host", version, max_term_width = 100)]
struct Args {
    #[command(subcommand)]
    command: Command,

    // Shown under their own heading, after each subcommand's own options.
    #[command(flatten, next_help_heading = "Common options")]
    common: CommonArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Tag this host, register it in its target groups, wait until healthy (exit 1 if not in time)
    Join(JoinArgs),
    /// Deregister this host, wait until drained, then complete the lifecycle action if asked
    Leave(LeaveArgs),
    /// List the hosts of a service by labels: running EC2 instances, found by their tags
    List(ListArgs),
    /// Print the cloud-init user-data that joins at boot and leaves at shutdown
    UserData(UserDataArgs),
}

#[derive(Debug, ClapArgs)]
struct HostArgs {
    /// Where the host runs: aws (who it is comes from the instance metadata), or another
    /// provider's name (then --host-id and --address say who it is)
    #[arg(
        long,
        env = "SWITCHYARD_PROVIDER",
        default_value = AWS,
        value_name = "NAME"
    )]
    provider: String,

    /// The host's id off AWS, e.g. its host name
    #[arg(long, env = "SWITCHYARD_HOST_ID", value_name = "ID")]
    host_id: Option<String>,

    /// The address load balancers reach the host at, off AWS
    #[arg(long, env = "SWITCHYARD_ADDRESS", value_name = "IP")]
    address: Option<String>,
}

#[derive(Debug, ClapArgs)]
struct TargetArgs {
    /// Target group ARN (repeatable); instance groups take the instance, ip groups its address
    #[arg(
        long = "target-group",
        env = "SWITCHYARD_TARGET_GROUPS",
        value_delimiter = ',',
        value_name = "ARN"
    )]
    target_groups: Vec<String>,

    /// Port the host serves on [default: each target group's port]
    #[arg(
        long,
        env = "SWITCHYARD_PORT",
        value_parser = clap::value_parser!(u16).range(1..),
        value_name = "PORT"
    )]
    port: Option<u16>,
}

#[derive(Debug, ClapArgs)]
struct LifecycleArgs {
    /// Auto Scaling lifecycle hook whose action to complete (CONTINUE) once drained
    #[arg(long, env = "SWITCHYARD_LIFECYCLE_HOOK", value_name = "NAME")]
    lifecycle_hook: Option<String>,

    /// The Auto Scaling group of --lifecycle-hook
    #[arg(long, env = "SWITCHYARD_ASG", value_name = "NAME")]
    asg: Option<String>,
}

#[derive(Debug, ClapArgs)]
struct JoinArgs {
    /// The service the host serves, e.g. go-auth
    #[arg(long, env = "SWITCHYARD_SERVICE", value_name = "NAME")]
    service: String,

    /// A label, e.g. region=us-east-1 or provider=aws (repeatable)
    #[arg(
        long = "label",
        env = "SWITCHYARD_LABELS",
        value_delimiter = ',',
        value_name = "KEY=VALUE"
    )]
    labels: Vec<String>,

    #[command(flatten)]
    targets: TargetArgs,

    #[command(flatten)]
    host: HostArgs,

    /// Longest wait until every target group reports the host healthy
    #[arg(long, env = "SWITCHYARD_WAIT_HEALTHY", value_parser = parse_duration, default_value = "5m", value_name = "DURATION")]
    wait_healthy: Duration,

    /// Register and return without waiting for the health checks
    #[arg(long)]
    no_wait: bool,
}

#[derive(Debug, ClapArgs)]
struct LeaveArgs {
    #[command(flatten)]
    targets: TargetArgs,

    #[command(flatten)]
    host: HostArgs,

    #[command(flatten)]
    lifecycle: LifecycleArgs,
}

#[derive(Debug, ClapArgs)]
struct ListArgs {
    /// Only hosts of this service [default: every host register-host tagged]
    #[arg(long, env = "SWITCHYARD_SERVICE", value_name = "NAME")]
    service: Option<String>,

    /// Only hosts with this label (repeatable; all must match)
    #[arg(
        long = "label",
        env = "SWITCHYARD_LABELS",
        value_delimiter = ',',
        value_name = "KEY=VALUE"
    )]
    labels: Vec<String>,

    /// Regions to search, e.g. us-east-1,eu-west-1 [default: --region]
    #[arg(
        long,
        env = "SWITCHYARD_REGIONS",
        value_delimiter = ',',
        value_name = "REGION,.."
    )]
    regions: Vec<String>,
}

#[derive(Debug, ClapArgs)]
struct UserDataArgs {
    /// The service the hosts serve, e.g. go-auth
    #[arg(long, env = "SWITCHYARD_SERVICE", value_name = "NAME")]
    service: String,

    /// A label every host joins with (repeatable)
    #[arg(
        long = "label",
        env = "SWITCHYARD_LABELS",
        value_delimiter = ',',
        value_name = "KEY=VALUE"
    )]
    labels: Vec<String>,

    #[command(flatten)]
    targets: TargetArgs,

    #[command(flatten)]
    lifecycle: LifecycleArgs,

    /// Where the image carries the register-host executable (nothing is downloaded)
    #[arg(long, default_value = user_data::DEFAULT_BINARY, value_name = "PATH")]
    binary: String,

    /// The state file on the host
    #[arg(long, default_value = user_data::DEFAULT_STATE_FILE, value_name = "PATH")]
    state_file: String,

    /// A systemd unit of the application (repeatable): joined after it starts, left before it stops
    #[arg(long, value_name = "UNIT")]
    after: Vec<String>,

    /// Longest wait at boot until the host is healthy
    #[arg(long, value_parser = parse_duration, default_value = "5m", value_name = "DURATION")]
    wait_healthy: Duration,

    /// Longest time leave may take at shutdown; cover the deregistration delay
    #[arg(long, value_parser = parse_duration, default_value = "10m", value_name = "DURATION")]
    leave_timeout: Duration,
}

fn main() -> ExitCode {
    if let Some(code) = switchyard::cli::generate::intercept::<Args>() {
        return code;
    }
    let args = Args::parse();
    logging::init(args.common.verbose, args.common.quiet);
    let format = args.common.output;
    exit::report(run(&args), format, STEP)
}

fn run(args: &Args) -> Result<(), Failure> {
    let common = &args.common;
    if let Command::UserData(a) = &args.command {
        let spec = user_data_spec(a)?;
        let document = user_data::render(&spec)?;
        if common.print_iam_policy {
            iam::print(&iam::Policy::new());
            return Ok(());
        }
        output::emit(common.output, &document);
        return Ok(());
    }
    if common.timeout.is_zero() {
        return Err(Failure::usage("--timeout must be more than 0s"));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Code::Provider, e))?;
    runtime.block_on(async {
        match &args.command {
            Command::Join(a) => join(a, common).await,
            Command::Leave(a) => leave(a, common).await,
            Command::List(a) => list(a, common).await,
            Command::UserData(_) => Ok(()),
        }
    })
}

/// Who the host is: read from the instance metadata, or given.
#[derive(Debug)]
enum Source {
    Imds(ImdsSettings),
    Given(Identity),
}

impl Source {
    async fn identity(self) -> Result<Identity, Failure> {
        match self {
            Self::Imds(settings) => Ok(identity::from_imds(&settings).await?),
            Self::Given(identity) => Ok(identity),
        }
    }
}

fn source(h: &HostArgs) -> Result<Source, Failure> {
    check_provider(&h.provider)?;
    match (h.provider.as_str(), &h.host_id, &h.address) {
        (AWS, None, None) => Ok(Source::Imds(ImdsSettings::from_env()?)),
        (_, Some(id), Some(address)) => {
            Ok(Source::Given(Identity::given(&h.provider, id, address)?))
        }
        (AWS, _, _) => Err(Failure::usage(
            "--host-id and --address are for hosts off AWS; on EC2 the instance metadata says \
             who the host is (drop them, or name the other provider with --provider)",
        )),
        (provider, _, _) => Err(Failure::usage(format!(
            "--provider {provider} needs --host-id ID and --address IP: off AWS there is no \
             instance metadata to say who the host is"
        ))),
    }
}

/// The checked target groups and the region their calls go to.
fn target_groups(
    t: &TargetArgs,
    region: Option<&str>,
) -> Result<(Vec<TargetGroupArn>, Option<String>), InputError> {
    let groups = parse_target_groups(&t.target_groups)?;
    let region = targets_region(region, &groups)?;
    Ok((groups, region))
}

/// Checks every flag of `join` before the first network call.
fn join_settings(
    a: &JoinArgs,
    common: &CommonArgs,
) -> Result<(JoinRequest, Option<String>, Source), Failure> {
    check_service(&a.service)?;
    let labels = Labels::parse(&a.labels)?;
    let (target_groups, elb_region) = target_groups(&a.targets, common.region.as_deref())?;
    if !a.no_wait && a.wait_healthy.is_zero() {
        return Err(Failure::usage(
            "--wait-healthy must be more than 0s (or pass --no-wait)",
        ));
    }
    let request = JoinRequest {
        service: a.service.clone(),
        labels,
        target_groups,
        port: a.targets.port,
        wait: (!a.no_wait).then_some(a.wait_healthy),
    };
    Ok((request, elb_region, source(&a.host)?))
}

/// Checks every flag of `leave` before the first network call.
fn leave_settings(
    a: &LeaveArgs,
    common: &CommonArgs,
) -> Result<(LeaveRequest, Option<String>, Source), Failure> {
    let (target_groups, elb_region) = target_groups(&a.targets, common.region.as_deref())?;
    let lifecycle = LifecycleHook::from_flags(
        a.lifecycle.lifecycle_hook.as_deref(),
        a.lifecycle.asg.as_deref(),
    )?;
    if lifecycle.is_some() && a.host.provider != AWS {
        return Err(Failure::usage(format!(
            "--lifecycle-hook completes an Auto Scaling lifecycle action, which only EC2 \
             instances have; this host is --provider {}",
            a.host.provider
        )));
    }
    let request = LeaveRequest {
        target_groups,
        port: a.targets.port,
        lifecycle,
    };
    Ok((request, elb_region, source(&a.host)?))
}

/// The SDK clients: EC2 and Auto Scaling in the host's region, ELBv2 in the target groups'.
async fn clients(common: &CommonArgs, identity: &Identity, elb_region: Option<&str>) -> AwsClients {
    let region = common
        .region
        .clone()
        .or_else(|| identity.region.clone())
        .or_else(|| elb_region.map(str::to_owned));
    let config = aws::load(&AwsSettings {
        region,
        profile: common.profile.clone(),
    })
    .await;
    AwsClients::with_regions(&config, identity.region.as_deref(), elb_region)
}

async fn join(a: &JoinArgs, common: &CommonArgs) -> Result<(), Failure> {
    let (request, elb_region, source) = join_settings(a, common)?;
    if common.print_iam_policy {
        iam::print(&registration::join_policy(&request, a.host.provider == AWS));
        return Ok(());
    }
    let cancel = switchyard::wait::signal::cancel_on_signals();
    let identity = source.identity().await?;
    let clients = clients(common, &identity, elb_region.as_deref()).await;
    let options = Options::new(common.timeout, common.dry_run);
    let state = StateFile::new(&common.state);
    let (hooks, mut env) = hooks(common, &state, "join", &identity)?;
    env.set("SWITCHYARD_SERVICE", &request.service);
    hooks.run("pre-register-host", &env).await?;
    let report =
        registration::join(&clients, &identity, &request, &options, &state, &cancel).await?;
    output::emit(common.output, &report);
    env.set("SWITCHYARD_OUTCOME", "ok");
    hooks.run_after("post-register-host", &env).await;
    Ok(())
}

async fn leave(a: &LeaveArgs, common: &CommonArgs) -> Result<(), Failure> {
    let (request, elb_region, source) = leave_settings(a, common)?;
    if common.print_iam_policy {
        iam::print(&registration::leave_policy(&request));
        return Ok(());
    }
    let cancel = switchyard::wait::signal::cancel_on_signals();
    let identity = source.identity().await?;
    let clients = clients(common, &identity, elb_region.as_deref()).await;
    let options = Options::new(common.timeout, common.dry_run);
    let state = StateFile::new(&common.state);
    let (hooks, mut env) = hooks(common, &state, "leave", &identity)?;
    hooks.run("pre-register-host", &env).await?;
    let report =
        registration::leave(&clients, &identity, &request, &options, &state, &cancel).await?;
    output::emit(common.output, &report);
    env.set("SWITCHYARD_OUTCOME", "ok");
    hooks.run_after("post-register-host", &env).await;
    Ok(())
}

/// The hooks (`pre-register-host` before any change, `post-register-host`
/// after success) and their variables: the action, the host's id and provider.
fn hooks(
    common: &CommonArgs,
    state: &StateFile,
    action: &str,
    identity: &Identity,
) -> Result<(Hooks, HookEnv), Failure> {
    let mut env = HookEnv::new(STEP, state.path(), &state.load()?, common.dry_run);
    env.set("SWITCHYARD_ACTION", action);
    env.set("SWITCHYARD_HOST_ID", &identity.host_id);
    env.set("SWITCHYARD_PROVIDER", &identity.provider);
    // A dry run changes nothing, so it runs no hooks (as in shift-weight).
    let hooks = if common.dry_run {
        Hooks::none()
    } else {
        common.hooks()
    };
    Ok((hooks, env))
}

/// Checks the flags of `list` before the first network call.
fn list_query(a: &ListArgs) -> Result<FleetQuery, Failure> {
    if let Some(service) = &a.service {
        check_service(service)?;
    }
    for region in &a.regions {
        let ok = !region.is_empty()
            && region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(Failure::usage(format!(
                "--regions: {region:?} is not a region name (e.g. us-east-1)"
            )));
        }
    }
    Ok(FleetQuery {
        service: a.service.clone(),
        labels: Labels::parse(&a.labels)?,
    })
}

async fn list(a: &ListArgs, common: &CommonArgs) -> Result<(), Failure> {
    let query = list_query(a)?;
    if common.print_iam_policy {
        iam::print(&switchyard::host::fleet::list_policy());
        return Ok(());
    }
    let config = aws::load(&AwsSettings {
        region: common.region.clone(),
        profile: common.profile.clone(),
    })
    .await;
    let regions: Vec<String> = if a.regions.is_empty() {
        vec![config
            .region()
            .map_or_else(|| "us-east-1".to_owned(), ToString::to_string)]
    } else {
        a.regions.clone()
    };
    let clients: Vec<(String, _)> = regions
        .iter()
        .map(|r| (r.clone(), ec2_in(&config, r)))
        .collect();
    let report = fleet::list(&clients, &query).await?;
    output::emit(common.output, &report);
    Ok(())
}

/// Checks every flag of `user-data`.
fn user_data_spec(a: &UserDataArgs) -> Result<UserDataSpec, Failure> {
    check_service(&a.service)?;
    let labels = Labels::parse(&a.labels)?;
    let target_groups = parse_target_groups(&a.targets.target_groups)?;
    user_data::check_path("--binary", &a.binary)?;
    user_data::check_path("--state-file", &a.state_file)?;
    for unit in &a.after {
        user_data::check_unit(unit)?;
    }
    if a.wait_healthy.is_zero() || a.leave_timeout.is_zero() {
        return Err(Failure::usage(
            "--wait-healthy and --leave-timeout must be more than 0s",
        ));
    }
    Ok(UserDataSpec {
        service: a.service.clone(),
        labels,
        target_groups,
        port: a.targets.port,
        binary: a.binary.clone(),
        state_file: a.state_file.clone(),
        after: a.after.clone(),
        wait_healthy: a.wait_healthy,
        leave_timeout: a.leave_timeout,
        lifecycle: LifecycleHook::from_flags(
            a.lifecycle.lifecycle_hook.as_deref(),
            a.lifecycle.asg.as_deref(),
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    const ARN: &str =
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/go-auth-blue/50dc6c495c0c9188";

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
        insta::assert_snapshot!("register-host-help", help(&[]));
        insta::assert_snapshot!("register-host-join-help", help(&["join"]));
        insta::assert_snapshot!("register-host-leave-help", help(&["leave"]));
        insta::assert_snapshot!("register-host-list-help", help(&["list"]));
        insta::assert_snapshot!("register-host-user-data-help", help(&["user-data"]));
    }

    #[test]
    fn args_are_consistent() {
        Args::command().debug_assert();
    }

    fn parse(line: &[&str]) -> Args {
        let mut full = vec!["register-host"];
        full.extend_from_slice(line);
        Args::try_parse_from(full).unwrap()
    }

    fn join_error(extra: &[&str]) -> String {
        let mut line = vec!["join", "--service", "go-auth"];
        line.extend_from_slice(extra);
        let args = parse(&line);
        let Command::Join(a) = &args.command else {
            panic!("not join")
        };
        let failure = join_settings(a, &args.common).unwrap_err();
        format!("{}: {}", failure.code.number(), failure.error)
    }

    #[test]
    fn bad_input_is_refused_with_exit_2_naming_the_problem() {
        assert_eq!(
            join_error(&["--label", "region"]),
            "2: --label \"region\" is not KEY=VALUE; e.g. --label region=us-east-1"
        );
        assert_eq!(
            join_error(&["--label", "a=1", "--label", "a=2"]),
            "2: label \"a\" is given twice (--label a=1 and --label a=2); give each key once"
        );
        assert!(join_error(&["--target-group", "tg-1"])
            .starts_with("2: --target-group \"tg-1\" is not a target group ARN"));
        assert!(
            join_error(&["--target-group", ARN, "--region", "eu-west-1"])
                .contains("is in us-east-1, but this host's calls go to eu-west-1")
        );
        assert!(join_error(&["--provider", "hetzner", "--host-id", "web-7"])
            .starts_with("2: --provider hetzner needs --host-id ID and --address IP"));
        assert!(join_error(&["--host-id", "web-7", "--address", "10.0.0.7"])
            .starts_with("2: --host-id and --address are for hosts off AWS"));
        assert!(join_error(&["--provider", "Hetzner"]).starts_with("2: --provider \"Hetzner\""));
        assert!(join_error(&[
            "--provider",
            "hetzner",
            "--host-id",
            "web-7",
            "--address",
            "web-7.example"
        ])
        .starts_with("2: --address \"web-7.example\" is not an IP address"));
        assert!(
            Args::try_parse_from(["register-host", "join", "--service", "x", "--port", "0"])
                .is_err()
        );
    }

    #[test]
    fn good_input_makes_checked_settings() {
        let args = parse(&[
            "join",
            "--service",
            "go-auth",
            "--label",
            "provider=hetzner,region=eu-central",
            "--target-group",
            ARN,
            "--port",
            "9000",
            "--provider",
            "hetzner",
            "--host-id",
            "fsn1-web-7",
            "--address",
            "10.20.0.7",
            "--no-wait",
        ]);
        let Command::Join(a) = &args.command else {
            panic!("not join")
        };
        let (request, region, source) = join_settings(a, &args.common).unwrap();
        assert_eq!(
            request.labels.display(),
            "provider=hetzner,region=eu-central"
        );
        assert_eq!(request.port, Some(9000));
        assert_eq!(request.wait, None);
        assert_eq!(region.as_deref(), Some("us-east-1"));
        assert!(matches!(source, Source::Given(ref i) if i.host_id == "fsn1-web-7"));
    }

    #[test]
    fn leave_checks_the_lifecycle_flags() {
        let failure = |line: &[&str]| {
            let args = parse(line);
            let Command::Leave(a) = &args.command else {
                panic!("not leave")
            };
            let f = leave_settings(a, &args.common).unwrap_err();
            format!("{}: {}", f.code.number(), f.error)
        };
        assert!(failure(&["leave", "--lifecycle-hook", "drain"])
            .starts_with("2: --lifecycle-hook and --asg go together"));
        assert!(failure(&[
            "leave",
            "--lifecycle-hook",
            "drain",
            "--asg",
            "web",
            "--provider",
            "gcp",
            "--host-id",
            "x",
            "--address",
            "10.0.0.1"
        ])
        .contains("only EC2 instances have"));
    }

    #[test]
    fn user_data_flags_are_checked() {
        let spec = |line: &[&str]| {
            let args = parse(line);
            let Command::UserData(a) = &args.command else {
                panic!("not user-data")
            };
            user_data_spec(a).map_err(|f| format!("{}: {}", f.code.number(), f.error))
        };
        assert!(spec(&[
            "user-data",
            "--service",
            "go-auth",
            "--after",
            "go-auth.service"
        ])
        .is_ok());
        assert!(spec(&[
            "user-data",
            "--service",
            "go-auth",
            "--binary",
            "register-host"
        ])
        .unwrap_err()
        .starts_with("2: --binary \"register-host\" is not an absolute file path"));
        assert!(
            spec(&["user-data", "--service", "go-auth", "--after", "go-auth"])
                .unwrap_err()
                .starts_with("2: --after \"go-auth\" is not a systemd unit name")
        );
    }

    #[test]
    fn list_checks_its_flags() {
        let args = parse(&["list", "--regions", "us-east-1,EU"]);
        let Command::List(a) = &args.command else {
            panic!("not list")
        };
        let f = list_query(a).unwrap_err();
        assert_eq!(f.code, Code::Usage);
        assert!(f.error.to_string().contains("\"EU\" is not a region name"));
    }
}
