//! `bake-ami`: a machine image baked from a base image and a provisioning
//! script, reused when nothing changed, copied to other regions; and the
//! sweep of what killed bakes left behind.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};
use switchyard::aws::{self, AwsSettings};
use switchyard::cli::{exit, logging, output, parse_duration, Code, CommonArgs, Failure};
use switchyard::hooks::{HookEnv, Hooks};
use switchyard::host::ec2_in;
use switchyard::image::bake::{self, Clients, Options};
use switchyard::image::spec::{check_region, BakeSpec, Script, Source, DEFAULT_MARKER};
use switchyard::image::{sweep, STEP};
use switchyard::state::{StateDocument, StateFile};

/// Bake a machine image from a base image and a provisioning script.
///
/// Launches a builder from the source image with the script as user-data
/// (instance-initiated shutdown stops it, IMDSv2 required, tagged as a bake),
/// waits until the script powers it off, checks its console for the success
/// marker, creates the image with no reboot, tags the image and its snapshots,
/// copies it to the --copy-to regions at once and waits for each, then
/// terminates the builder. An image baked from the same inputs (the input
/// hash: source image id, script, pulled images, instance type, marker,
/// service) is reused and nothing is launched, unless --force. On a failure, a
/// deadline, SIGINT or SIGTERM the builder is terminated and any half-made
/// image deregistered with its snapshots; `bake-ami sweep` removes what a
/// killed run left. The image ids go into the state file (image.amis).
///
/// Every wait has its own deadline (--wait-stopped, --wait-console,
/// --wait-image), and --timeout, the deadline of the whole step, caps them
/// all: give long bakes a longer one, e.g. --timeout 2h.
#[derive(Debug, Parser)]
#[command(name = "bake-ami", version, max_term_width = 100)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    bake: BakeArgs,

    // Shown under their own heading, after the step's own options.
    #[command(flatten, next_help_heading = "Common options")]
    common: CommonArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Remove builders and half-made images that killed bakes left behind
    Sweep(SweepArgs),
}

#[derive(Debug, ClapArgs)]
struct BakeArgs {
    /// The service the image is for [default: the state's deployment.service]
    #[arg(long, env = "SWITCHYARD_SERVICE", value_name = "NAME")]
    service: Option<String>,

    /// The version it is baked for (a tag and part of the name, not of the input hash)
    /// [default: the state's deployment.version]
    #[arg(long, env = "SWITCHYARD_VERSION", value_name = "VERSION")]
    app_version: Option<String>,

    /// The base image's id
    #[arg(
        long,
        env = "SWITCHYARD_SOURCE_AMI",
        value_name = "AMI",
        conflicts_with = "source_name"
    )]
    source_ami: Option<String>,

    /// The base image by name pattern (EC2 wildcards * and ?): the newest available match
    /// by CreationDate; two matches created at that same newest time are an error
    #[arg(long, env = "SWITCHYARD_SOURCE_NAME", value_name = "PATTERN")]
    source_name: Option<String>,

    /// Owner of the --source-name image: an account id, amazon, self, aws-marketplace (repeatable)
    #[arg(
        long = "owner",
        env = "SWITCHYARD_SOURCE_OWNERS",
        value_delimiter = ',',
        value_name = "OWNER"
    )]
    owners: Vec<String>,

    /// Provisioning script sent as user-data [default: the built-in script: security updates,
    /// docker, the --pull images, the success marker on the console, poweroff]. It must end
    /// by printing the success marker to the console and powering the instance off
    #[arg(long, env = "SWITCHYARD_USER_DATA", value_name = "FILE")]
    user_data: Option<PathBuf>,

    /// A container image the built-in script pulls into the image (repeatable)
    #[arg(
        long = "pull",
        env = "SWITCHYARD_PULL",
        value_delimiter = ',',
        value_name = "IMAGE"
    )]
    pulls: Vec<String>,

    /// Text the builder's console output must contain for the provisioning to count as done
    #[arg(long, env = "SWITCHYARD_SUCCESS_MARKER", default_value = DEFAULT_MARKER, value_name = "TEXT")]
    success_marker: String,

    /// The builder's instance type
    #[arg(
        long,
        env = "SWITCHYARD_INSTANCE_TYPE",
        default_value = "t3.small",
        value_name = "TYPE"
    )]
    instance_type: String,

    /// The builder's subnet [default: the default VPC's]
    #[arg(long, env = "SWITCHYARD_SUBNET_ID", value_name = "SUBNET")]
    subnet_id: Option<String>,

    /// A security group of the builder (repeatable) [default: the VPC's default group]
    #[arg(
        long = "security-group-id",
        env = "SWITCHYARD_SECURITY_GROUP_IDS",
        value_delimiter = ',',
        value_name = "SG"
    )]
    security_group_ids: Vec<String>,

    /// Regions to copy the image to, e.g. eu-west-1,ap-southeast-2 (copied at once)
    #[arg(
        long,
        env = "SWITCHYARD_COPY_TO",
        value_delimiter = ',',
        value_name = "REGION,.."
    )]
    copy_to: Vec<String>,

    /// Bake even when an image baked from the same inputs exists
    #[arg(long, env = "SWITCHYARD_FORCE", value_parser = clap::builder::BoolishValueParser::new())]
    force: bool,

    /// Also write a Packer-compatible manifest (builds[].artifact_id "region:ami,..."); appended to
    #[arg(long, env = "SWITCHYARD_MANIFEST", value_name = "FILE")]
    manifest: Option<PathBuf>,

    /// Longest wait for the builder to power off
    #[arg(long, env = "SWITCHYARD_WAIT_STOPPED", value_parser = parse_duration, default_value = "45m", value_name = "DURATION")]
    wait_stopped: Duration,

    /// Longest wait for the success marker on the console once the builder stopped
    #[arg(long, env = "SWITCHYARD_WAIT_CONSOLE", value_parser = parse_duration, default_value = "5m", value_name = "DURATION")]
    wait_console: Duration,

    /// Longest wait for each image and copy to become available
    #[arg(long, env = "SWITCHYARD_WAIT_IMAGE", value_parser = parse_duration, default_value = "60m", value_name = "DURATION")]
    wait_image: Duration,
}

#[derive(Debug, ClapArgs)]
struct SweepArgs {
    /// Remove only leftovers made longer ago than this, e.g. 2h (0s: all)
    #[arg(long, env = "SWITCHYARD_OLDER_THAN", value_parser = parse_duration, value_name = "DURATION")]
    older_than: Duration,

    /// Regions to sweep, e.g. us-east-1,eu-west-1 [default: --region]
    #[arg(
        long,
        env = "SWITCHYARD_REGIONS",
        value_delimiter = ',',
        value_name = "REGION,.."
    )]
    regions: Vec<String>,
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
    if common.timeout.is_zero() {
        return Err(Failure::usage("--timeout must be more than 0s"));
    }
    if common.print_iam_policy {
        let sweep = matches!(args.command, Some(Command::Sweep(_)));
        switchyard::aws::iam::print(&switchyard::image::policy(sweep));
        return Ok(());
    }
    let state = StateFile::new(&common.state);
    let doc = state.load()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Code::Provider, e))?;
    match &args.command {
        Some(Command::Sweep(a)) => {
            for region in &a.regions {
                check_region("--regions", region)?;
            }
            runtime.block_on(sweep_run(a, common, &state, &doc))
        }
        None => {
            let (spec, opts) = settings(&args.bake, common, &doc)?;
            runtime.block_on(bake_run(spec, opts, common, &state, &doc))
        }
    }
}

/// Checks every flag of a bake before the first network call.
fn settings(
    a: &BakeArgs,
    common: &CommonArgs,
    doc: &StateDocument,
) -> Result<(BakeSpec, Options), Failure> {
    let deployment = doc.deployment.as_ref();
    let service = a
        .service
        .clone()
        .or_else(|| deployment.and_then(|d| d.service.clone()))
        .ok_or_else(|| {
            Failure::usage(
                "name the service: --service NAME (or deployment.service in the state file)",
            )
        })?;
    let version = a
        .app_version
        .clone()
        .or_else(|| deployment.and_then(|d| d.version.clone()))
        .ok_or_else(|| {
            Failure::usage(
                "name the version: --app-version VERSION (or deployment.version in the state file)",
            )
        })?;
    let source = match (&a.source_ami, &a.source_name) {
        (Some(id), None) => {
            if !a.owners.is_empty() {
                return Err(Failure::usage(
                    "--owner goes with --source-name; --source-ami names one image already",
                ));
            }
            Source::Ami(id.clone())
        }
        (None, Some(name)) => Source::Filter {
            name: name.clone(),
            owners: a.owners.clone(),
        },
        _ => {
            return Err(Failure::usage(
                "name the base image: --source-ami AMI, or --source-name PATTERN --owner OWNER",
            ))
        }
    };
    let script = match &a.user_data {
        Some(path) => Script::File {
            path: path.display().to_string(),
            body: std::fs::read_to_string(path).map_err(|e| {
                Failure::usage(format!(
                    "--user-data {}: cannot read it: {e}",
                    path.display()
                ))
            })?,
        },
        None => Script::BuiltIn,
    };
    if let Some(region) = &common.region {
        if a.copy_to.contains(region) {
            return Err(Failure::usage(format!(
                "--copy-to names {region}, the region the image is baked in; list only the other regions"
            )));
        }
    }
    for (flag, d) in [
        ("--wait-stopped", a.wait_stopped),
        ("--wait-console", a.wait_console),
        ("--wait-image", a.wait_image),
    ] {
        if d.is_zero() {
            return Err(Failure::usage(format!("{flag} must be more than 0s")));
        }
    }
    let spec = BakeSpec {
        service,
        version,
        source,
        script,
        pulls: a.pulls.clone(),
        marker: a.success_marker.clone(),
        instance_type: a.instance_type.clone(),
        subnet_id: a.subnet_id.clone(),
        security_group_ids: a.security_group_ids.clone(),
        copy_to: a.copy_to.clone(),
        force: a.force,
    };
    spec.check()?;
    let mut opts = Options::new(common.timeout, common.dry_run);
    opts.wait_stopped = a.wait_stopped;
    opts.wait_console = a.wait_console;
    opts.wait_image = a.wait_image;
    opts.manifest.clone_from(&a.manifest);
    Ok((spec, opts))
}

async fn bake_run(
    spec: BakeSpec,
    opts: Options,
    common: &CommonArgs,
    state: &StateFile,
    doc: &StateDocument,
) -> Result<(), Failure> {
    let cancel = switchyard::wait::signal::cancel_on_signals();
    let config = aws::load(&AwsSettings {
        region: common.region.clone(),
        profile: common.profile.clone(),
    })
    .await;
    let home = config
        .region()
        .map_or_else(|| "us-east-1".to_owned(), ToString::to_string);
    if spec.copy_to.contains(&home) {
        return Err(Failure::usage(format!(
            "--copy-to names {home}, the region the image is baked in; list only the other regions"
        )));
    }
    let clients = Clients::new(&config, &home, &spec.copy_to);
    let (hooks, mut env) = hooks(common, state, doc, "bake");
    env.set("SWITCHYARD_SERVICE", &spec.service);
    env.set("SWITCHYARD_VERSION", &spec.version);
    hooks.run("pre-bake-ami", &env).await?;
    let report = bake::bake(&clients, &spec, &opts, state, &cancel).await?;
    output::emit(common.output, &report);
    env.set("SWITCHYARD_OUTCOME", "ok");
    env.set(
        "SWITCHYARD_AMI",
        report.amis.get(&home).map_or("", String::as_str),
    );
    hooks.run_after("post-bake-ami", &env).await;
    Ok(())
}

async fn sweep_run(
    a: &SweepArgs,
    common: &CommonArgs,
    state: &StateFile,
    doc: &StateDocument,
) -> Result<(), Failure> {
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
    let (hooks, mut env) = hooks(common, state, doc, "sweep");
    hooks.run("pre-bake-ami", &env).await?;
    let report = sweep::sweep(&clients, a.older_than, common.dry_run, state).await?;
    output::emit(common.output, &report);
    env.set("SWITCHYARD_OUTCOME", "ok");
    hooks.run_after("post-bake-ami", &env).await;
    Ok(())
}

/// The hooks (`pre-bake-ami` before any change, `post-bake-ami` after
/// success) and their variables; a dry run runs none.
fn hooks(
    common: &CommonArgs,
    state: &StateFile,
    doc: &StateDocument,
    action: &str,
) -> (Hooks, HookEnv) {
    let mut env = HookEnv::new(STEP, state.path(), doc, common.dry_run);
    env.set("SWITCHYARD_ACTION", action);
    let hooks = if common.dry_run {
        Hooks::none()
    } else {
        common.hooks()
    };
    (hooks, env)
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
        insta::assert_snapshot!("bake-ami-help", help(&[]));
        insta::assert_snapshot!("bake-ami-sweep-help", help(&["sweep"]));
    }

    #[test]
    fn args_are_consistent() {
        Args::command().debug_assert();
    }

    fn error(line: &[&str]) -> String {
        let mut full = vec!["bake-ami"];
        full.extend_from_slice(line);
        let args = Args::try_parse_from(full).unwrap();
        let f = settings(&args.bake, &args.common, &StateDocument::default()).unwrap_err();
        format!("{}: {}", f.code.number(), f.error)
    }

    #[test]
    fn bad_input_is_refused_with_exit_2_naming_the_problem() {
        assert!(error(&["--app-version", "1"]).starts_with("2: name the service"));
        assert!(
            error(&["--service", "a", "--app-version", "1"]).starts_with("2: name the base image")
        );
        assert!(error(&[
            "--service",
            "a",
            "--app-version",
            "1",
            "--source-name",
            "base-*"
        ])
        .contains("needs --owner"));
        assert!(error(&[
            "--service",
            "a",
            "--app-version",
            "1",
            "--source-ami",
            "ami-0123456789abcdef0",
            "--region",
            "us-east-1",
            "--copy-to",
            "us-east-1"
        ])
        .contains("the region the image is baked in"));
        assert!(error(&[
            "--service",
            "a",
            "--app-version",
            "1",
            "--source-ami",
            "ami-0123456789abcdef0",
            "--user-data",
            "/nonexistent/script.sh"
        ])
        .starts_with("2: --user-data /nonexistent/script.sh: cannot read it"));
    }

    #[test]
    fn service_and_version_come_from_the_state_when_not_given() {
        let args = Args::try_parse_from([
            "bake-ami",
            "--source-ami",
            "ami-0123456789abcdef0",
            "--pull",
            "redis:7,nginx:1",
        ])
        .unwrap();
        let doc = StateDocument {
            deployment: Some(switchyard::state::Deployment {
                service: Some("go-auth".into()),
                version: Some("1.4.2".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (spec, _) = settings(&args.bake, &args.common, &doc).unwrap();
        assert_eq!(spec.service, "go-auth");
        assert_eq!(spec.version, "1.4.2");
        assert_eq!(spec.pulls, ["redis:7", "nginx:1"]);
    }
}
