//! `register-host`: a host joins the fleet with its labels, and leaves it
//! cleanly ([`crate::host::registration`]); the fleet by labels
//! ([`crate::host::fleet`]); the cloud-init user-data that does both for every
//! host a launch template starts ([`crate::host::user_data`]).

use std::time::Duration;

use crate::aws::{self, iam};
use crate::cli::register_host::{
    Command as Sub, HostArgs, JoinArgs, LeaveArgs, ListArgs, RegisterHostArgs, TargetArgs,
    UserDataArgs, WatchArgs,
};
use crate::cli::CommonArgs;
use crate::host::fleet::{self, FleetQuery, FleetReport};
use crate::host::identity::{self, check_provider, Identity, ImdsSettings, AWS};
use crate::host::labels::{check_service, Labels};
use crate::host::metadata::{self, AddressKind, Cloud, MetadataSettings, AUTO};
use crate::host::registration::{
    self, parse_target_groups, targets_region, JoinReport, JoinRequest, LeaveReport, LeaveRequest,
    LifecycleHook, RegistrationOptions, TargetGroupArn,
};
use crate::host::user_data::{self, UserData, UserDataSpec};
use crate::host::watch::{self, WatchReport, WatchRequest};
use crate::host::{HostClients, InputError};
use crate::outcome::Failure;
use crate::state::steps;
use crate::step::{Command, Step};

/// The `register-host` command.
#[derive(Debug)]
pub struct RegisterHost;

/// The checked flags of each mode.
#[derive(Debug)]
pub enum Settings {
    /// Join the fleet.
    Join {
        request: JoinRequest,
        elb_region: Option<String>,
        source: Source,
    },
    /// Leave the fleet.
    Leave {
        request: LeaveRequest,
        elb_region: Option<String>,
        source: Source,
    },
    /// Wait for termination, then leave and complete the hook.
    Watch {
        request: WatchRequest,
        elb_region: Option<String>,
        imds: ImdsSettings,
    },
    /// The hosts of a service.
    List {
        query: FleetQuery,
        regions: Vec<String>,
    },
    /// The cloud-init user-data, rendered, and the policy of the hosts' role.
    UserData {
        document: UserData,
        role: iam::Policy,
    },
}

crate::step_reports! {
    /// What each mode reports.
    pub enum Report {
        /// The host joined.
        Joined(JoinReport),
        /// The host left.
        Left(LeaveReport),
        /// The host watched for its termination (and left).
        Watched(WatchReport),
        /// The fleet.
        Fleet(FleetReport),
        /// The user-data document.
        UserData(UserData),
    }
}

impl Command for RegisterHost {
    const STEP: &'static str = steps::REGISTER_HOST;
    type Args = RegisterHostArgs;
    type Settings = Settings;
    type Report = Report;

    fn settings(args: RegisterHostArgs) -> Result<Settings, Failure> {
        match &args.command {
            Sub::Join(a) => {
                let (request, elb_region, source) = join_settings(a, &args.common)?;
                Ok(Settings::Join {
                    request,
                    elb_region,
                    source,
                })
            }
            Sub::Leave(a) => {
                let (request, elb_region, source) = leave_settings(a, &args.common)?;
                Ok(Settings::Leave {
                    request,
                    elb_region,
                    source,
                })
            }
            Sub::Watch(a) => {
                let (request, elb_region, imds) = watch_settings(a, &args.common)?;
                Ok(Settings::Watch {
                    request,
                    elb_region,
                    imds,
                })
            }
            Sub::List(a) => Ok(Settings::List {
                query: list_query(a)?,
                regions: a.regions.clone(),
            }),
            Sub::UserData(a) => {
                let spec = user_data_spec(a)?;
                Ok(Settings::UserData {
                    document: user_data::render(&spec)?,
                    role: host_role_policy(&spec),
                })
            }
        }
    }

    fn policy(settings: &Settings) -> iam::Policy {
        match settings {
            Settings::Join {
                request, source, ..
            } => registration::join_policy(request, source.may_be_ec2()),
            Settings::Leave { request, .. } => registration::leave_policy(request),
            Settings::Watch { request, .. } => watch::watch_policy(request),
            Settings::List { .. } => fleet::list_policy(),
            // What the hosts' instance role needs for what the document runs.
            Settings::UserData { role, .. } => role.clone(),
        }
    }

    async fn run(settings: Settings, step: &mut Step) -> Result<Report, Failure> {
        match settings {
            Settings::Join {
                mut request,
                elb_region,
                source,
            } => {
                let reads_metadata = !matches!(source, Source::Given(_));
                let service = Some(request.service.as_str());
                let (identity, clients, options) =
                    prepare(step, ("join", service), source, elb_region.as_deref()).await?;
                if reads_metadata {
                    // The metadata says where the host is: label it so, unless the flags did.
                    request.labels.fill("provider", &identity.provider);
                    if let Some(region) = &identity.region {
                        request.labels.fill("region", region);
                    }
                }
                let report = registration::join(
                    &clients,
                    &identity,
                    &request,
                    &options,
                    &step.state,
                    &step.cancel,
                )
                .await?;
                Ok(report.into())
            }
            Settings::Leave {
                request,
                elb_region,
                source,
            } => {
                let (identity, clients, options) =
                    prepare(step, ("leave", None), source, elb_region.as_deref()).await?;
                let report = registration::leave(
                    &clients,
                    &identity,
                    &request,
                    &options,
                    &step.state,
                    &step.cancel,
                )
                .await?;
                Ok(report.into())
            }
            Settings::Watch {
                request,
                elb_region,
                imds,
            } => {
                let (identity, clients, options) = prepare(
                    step,
                    ("watch", None),
                    Source::Imds(imds.clone()),
                    elb_region.as_deref(),
                )
                .await?;
                let report = watch::watch(
                    &clients,
                    &identity,
                    imds,
                    &request,
                    &options,
                    &step.state,
                    &step.cancel,
                )
                .await?;
                Ok(report.into())
            }
            Settings::List { query, regions } => {
                let recorded = step.state.load().await?.hosts;
                let config = aws::load(&step.aws).await;
                let clients = aws::ec2_per_region(&config, &regions);
                Ok(fleet::list(&clients, &query, &recorded).await?.into())
            }
            Settings::UserData { document, .. } => Ok(document.into()),
        }
    }
}

/// Who the host is: read from the instance metadata, or given.
#[derive(Debug)]
pub enum Source {
    /// Ask EC2's instance metadata service.
    Imds(ImdsSettings),
    /// Ask the metadata service of one cloud, or (more than one) of the one that answers.
    Metadata {
        settings: Box<MetadataSettings>,
        clouds: Vec<Cloud>,
        kind: AddressKind,
    },
    /// Given by flags (off AWS).
    Given(Identity),
}

impl Source {
    async fn identity(self) -> Result<Identity, Failure> {
        match self {
            Self::Imds(settings) => Ok(identity::from_imds(&settings).await?),
            Self::Metadata {
                settings,
                clouds,
                kind,
            } => Ok(metadata::identify(&settings, &clouds, kind).await?),
            Self::Given(identity) => Ok(identity),
        }
    }

    /// Whether the host may turn out to be an EC2 instance (which join tags).
    fn may_be_ec2(&self) -> bool {
        match self {
            Self::Imds(_) => true,
            Self::Metadata { clouds, .. } => clouds.contains(&Cloud::Aws),
            Self::Given(_) => false,
        }
    }
}

fn source(h: &HostArgs) -> Result<Source, Failure> {
    check_provider(&h.provider)?;
    let kind = h
        .address_kind
        .as_deref()
        .map(AddressKind::parse)
        .transpose()?;
    let cloud = Cloud::named(&h.provider).filter(|c| *c != Cloud::Aws);
    let reads = |only: Option<Cloud>| -> Result<Source, Failure> {
        let settings = MetadataSettings::from_env()?;
        let clouds = only.map_or_else(|| settings.candidates(), |c| vec![c]);
        Ok(Source::Metadata {
            settings: Box::new(settings),
            clouds,
            kind: kind.unwrap_or_default(),
        })
    };
    match (h.provider.as_str(), &h.host_id, &h.address) {
        (AUTO, None, None) => reads(None),
        (AUTO, _, _) => Err(Failure::usage(
            "--provider auto reads who the host is from the metadata service it finds; drop \
             --host-id and --address, or name the provider with --provider NAME",
        )),
        (AWS, None, None) if kind == Some(AddressKind::Public) => Err(Failure::usage(
            "--address-kind public is for hosts on other clouds: an EC2 instance is registered \
             by its instance id, or in an ip target group by its private address",
        )),
        (AWS, None, None) => Ok(Source::Imds(ImdsSettings::from_env()?)),
        (_, None, None) if cloud.is_some() => reads(cloud),
        (_, Some(_), Some(_)) if kind.is_some() => Err(Failure::usage(
            "--address-kind chooses among the addresses the metadata names; with --host-id and \
             --address the address is given: drop one or the other",
        )),
        (_, Some(id), Some(address)) => {
            Ok(Source::Given(Identity::given(&h.provider, id, address)?))
        }
        (AWS, _, _) => Err(Failure::usage(
            "--host-id and --address are for hosts off AWS; on EC2 the instance metadata says \
             who the host is (drop them, or name the other provider with --provider)",
        )),
        (provider, _, _) if cloud.is_some() => Err(Failure::usage(format!(
            "--provider {provider} reads who the host is from {provider}'s metadata service; \
             give both --host-id ID and --address IP to say it yourself, or neither"
        ))),
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

/// Checks every flag of `watch` before the first network call.
fn watch_settings(
    a: &WatchArgs,
    common: &CommonArgs,
) -> Result<(WatchRequest, Option<String>, ImdsSettings), Failure> {
    let (target_groups, elb_region) = target_groups(&a.targets, common.region.as_deref())?;
    let hook = LifecycleHook::from_flags(Some(&a.lifecycle_hook), Some(&a.asg))?
        .ok_or_else(|| Failure::usage("--lifecycle-hook and --asg are needed"))?;
    if a.poll_interval < Duration::from_millis(100) || a.poll_interval > Duration::from_secs(60) {
        return Err(Failure::usage(format!(
            "--poll-interval {} is outside 100ms to 1m: the instance waits on the hook only \
             until its heartbeat time-out, so read the lifecycle state every few seconds",
            crate::wait::progress::short(a.poll_interval)
        )));
    }
    if a.heartbeat_every < Duration::from_secs(1) {
        return Err(Failure::usage(
            "--heartbeat-every must be 1s or more (and under the hook's heartbeat time-out)",
        ));
    }
    let request = WatchRequest {
        leave: LeaveRequest {
            target_groups,
            port: a.targets.port,
            lifecycle: None,
        },
        hook,
        poll: a.poll_interval,
        heartbeat_every: a.heartbeat_every,
        exit_outside_group: a.exit_outside_group,
    };
    Ok((request, elb_region, ImdsSettings::from_env()?))
}

/// What a join and a leave do first: who the host is, its clients, and the
/// pre-hook (with the action, and for a join the service).
async fn prepare(
    step: &mut Step,
    (action, service): (&str, Option<&str>),
    source: Source,
    elb_region: Option<&str>,
) -> Result<(Identity, HostClients, RegistrationOptions), Failure> {
    let identity = source.identity().await?;
    let clients = clients(step, &identity, elb_region).await;
    let mut env = host_env(step, action, &identity).await?;
    env.set_opt("SWITCHYARD_SERVICE", service);
    step.hooks.before_change(&env).await?;
    Ok((
        identity,
        clients,
        RegistrationOptions::new(step.timeout, step.dry_run),
    ))
}

/// The SDK clients: EC2 and Auto Scaling in the host's region, ELBv2 in the target groups'.
async fn clients(step: &Step, identity: &Identity, elb_region: Option<&str>) -> HostClients {
    let mut settings = step.aws.clone();
    settings.region = settings
        .region
        .or_else(|| identity.region.clone())
        .or_else(|| elb_region.map(str::to_owned));
    let config = aws::load(&settings).await;
    HostClients::with_regions(&config, identity.region.as_deref(), elb_region)
}

/// The hook variables of a join or leave: the release's, the action, the host's id and provider.
async fn host_env(
    step: &Step,
    action: &str,
    identity: &Identity,
) -> Result<crate::hooks::HookEnv, Failure> {
    let mut env = step.state.load().await?.hook_env();
    env.set("SWITCHYARD_ACTION", action);
    env.set("SWITCHYARD_HOST_ID", &identity.host_id);
    env.set("SWITCHYARD_PROVIDER", &identity.provider);
    Ok(env)
}

/// Checks the flags of `list` before the first network call.
fn list_query(a: &ListArgs) -> Result<FleetQuery, Failure> {
    if let Some(service) = &a.service {
        check_service(service)?;
    }
    for region in &a.regions {
        aws::check_region("--regions", region)?;
    }
    Ok(FleetQuery {
        service: a.service.clone(),
        labels: Labels::parse(&a.labels)?,
    })
}

/// The policy of the role of hosts that run the user-data of `spec`: join
/// (tagging themselves), leave, and with a lifecycle hook the watcher's
/// heartbeat and completion of it on their group.
fn host_role_policy(spec: &UserDataSpec) -> iam::Policy {
    let join = JoinRequest {
        service: spec.service.clone(),
        labels: spec.labels.clone(),
        target_groups: spec.target_groups.clone(),
        port: spec.port,
        wait: Some(spec.wait_healthy),
    };
    let leave = LeaveRequest {
        target_groups: spec.target_groups.clone(),
        port: spec.port,
        lifecycle: None,
    };
    let mut policy = registration::join_policy(&join, true);
    policy.merge(&registration::leave_policy(&leave));
    if let Some(hook) = &spec.lifecycle {
        policy.merge(&watch::watch_policy(&WatchRequest {
            leave,
            hook: hook.clone(),
            poll: Duration::from_secs(5),
            heartbeat_every: Duration::from_secs(60),
            exit_outside_group: false,
        }));
    }
    policy
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
    use clap::Parser;

    use super::*;
    use crate::outcome::Code;

    const ARN: &str =
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/go-auth-blue/50dc6c495c0c9188";

    fn parse(line: &[&str]) -> RegisterHostArgs {
        let mut full = vec!["register-host"];
        full.extend_from_slice(line);
        RegisterHostArgs::try_parse_from(full).unwrap()
    }

    fn join_error(extra: &[&str]) -> String {
        let mut line = vec!["join", "--service", "go-auth"];
        line.extend_from_slice(extra);
        let args = parse(&line);
        let Sub::Join(a) = &args.command else {
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
        assert!(RegisterHostArgs::try_parse_from([
            "register-host",
            "join",
            "--service",
            "x",
            "--port",
            "0"
        ])
        .is_err());
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
        let Sub::Join(a) = &args.command else {
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
    fn providers_with_metadata_read_it_unless_told_who_the_host_is() {
        let source = |extra: &[&str]| {
            let mut line = vec!["join", "--service", "go-auth"];
            line.extend_from_slice(extra);
            let args = parse(&line);
            let Sub::Join(a) = &args.command else {
                panic!("not join")
            };
            join_settings(a, &args.common).map(|(_, _, source)| source)
        };
        let Source::Metadata { clouds, kind, .. } = source(&["--provider", "auto"]).unwrap() else {
            panic!("auto reads the metadata")
        };
        assert_eq!(
            clouds.len(),
            Cloud::ALL.len()
                - usize::from(std::env::var(identity::DISABLED_ENV).is_ok_and(|v| v == "true"))
        );
        assert_eq!(kind, AddressKind::Private);
        let Source::Metadata { clouds, kind, .. } =
            source(&["--provider", "gcp", "--address-kind", "public"]).unwrap()
        else {
            panic!("gcp reads its metadata")
        };
        assert_eq!((clouds, kind), (vec![Cloud::Gcp], AddressKind::Public));
        assert!(matches!(
            source(&[
                "--provider",
                "azure",
                "--host-id",
                "vm-1",
                "--address",
                "10.1.0.4"
            ]),
            Ok(Source::Given(_))
        ));
        let refused = |extra: &[&str]| {
            let f = source(extra).unwrap_err();
            format!("{}: {}", f.code.number(), f.error)
        };
        assert!(refused(&["--provider", "auto", "--host-id", "x"])
            .starts_with("2: --provider auto reads who the host is from the metadata service"));
        assert!(
            refused(&["--provider", "digitalocean", "--address", "10.0.0.1"]).starts_with(
                "2: --provider digitalocean reads who the host is from digitalocean's"
            )
        );
        assert!(refused(&["--address-kind", "public"])
            .starts_with("2: --address-kind public is for hosts on other clouds"));
        assert!(refused(&[
            "--provider",
            "dc-fra1",
            "--host-id",
            "x",
            "--address",
            "10.0.0.1",
            "--address-kind",
            "private"
        ])
        .starts_with("2: --address-kind chooses among the addresses the metadata names"));
        assert!(RegisterHostArgs::try_parse_from([
            "register-host",
            "join",
            "--service",
            "x",
            "--address-kind",
            "elastic"
        ])
        .is_err());
    }

    #[test]
    fn leave_checks_the_lifecycle_flags() {
        let failure = |line: &[&str]| {
            let args = parse(line);
            let Sub::Leave(a) = &args.command else {
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
            let Sub::UserData(a) = &args.command else {
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
    fn the_user_data_policy_is_the_hosts_role() {
        let args = parse(&[
            "user-data",
            "--service",
            "go-auth",
            "--target-group",
            ARN,
            "--lifecycle-hook",
            "switchyard-drain",
            "--asg",
            "go-auth-green",
        ]);
        let settings = RegisterHost::settings(args).unwrap();
        let policy = RegisterHost::policy(&settings);
        for action in [
            "ec2:CreateTags",
            "elasticloadbalancing:RegisterTargets",
            "elasticloadbalancing:DeregisterTargets",
            "elasticloadbalancing:DescribeTargetHealth",
            "autoscaling:CompleteLifecycleAction",
            "autoscaling:RecordLifecycleActionHeartbeat",
        ] {
            assert!(policy.allows(action), "{action}");
        }
        let args = parse(&["user-data", "--service", "go-auth", "--target-group", ARN]);
        let policy = RegisterHost::policy(&RegisterHost::settings(args).unwrap());
        assert!(policy.allows("elasticloadbalancing:DeregisterTargets"));
        assert!(!policy.allows("autoscaling:CompleteLifecycleAction"));
    }

    #[test]
    fn list_checks_its_flags() {
        let args = parse(&["list", "--regions", "us-east-1,EU"]);
        let Sub::List(a) = &args.command else {
            panic!("not list")
        };
        let f = list_query(a).unwrap_err();
        assert_eq!(f.code, Code::Usage);
        assert!(f.error.to_string().contains("\"EU\" is not a region name"));
    }
}
