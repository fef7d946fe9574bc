//! `deploy-standby`: bring the standby stack (blue or green) up at the new
//! version, in one or more regions at once, and retire the old stack once
//! the new one has taken all the traffic ([`crate::stack::standby`]); or
//! update one group in place, in batches ([`crate::stack::rolling`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use chrono::Utc;

use crate::aws::platform::{BaseTemplate, Platform};
use crate::aws::{self, iam, AwsSettings};
use crate::cli::deploy_standby::{
    BatchCheck, Command as Sub, DeployStandbyArgs, Driver, RollingArgs, Strategy, UpArgs,
};
use crate::health::{Gate, GatePolicy};
use crate::host::registration::TargetGroupArn;
use crate::lease::beside_state::ReleaseLock;
use crate::lease::{self, LeaseRequest, LeaseStore};
use crate::outcome::report::Plan;
use crate::outcome::{Code, Failure, StepReport};
use crate::stack::asg::{
    AlarmScaling, AsgClients, AsgDriver, AsgSettings, Scaling, TerminationHook,
};
use crate::stack::command::{CommandDriver, CommandTemplates};
use crate::stack::rolling::{self, RollingReport, RollingSettings};
use crate::stack::standby::{
    self, Color, DeployRequest, Region, RetireRequest, RetireWait, StandbyOptions, StandbyReport,
};
use crate::state::{steps, StateDocument};
use crate::step::{Command, Step};

/// The `deploy-standby` command.
#[derive(Debug)]
pub struct DeployStandby;

/// AWS caps user-data at 16 KB before base64.
const USER_DATA_LIMIT: usize = 16 * 1024;

/// The checked flags.
#[derive(Debug)]
pub struct Settings {
    /// The flags, as given (the state completes them at run time).
    args: Box<DeployStandbyArgs>,
    /// The Auto Scaling settings every region starts from.
    asg: AsgSettings,
    /// Subnets by region (`None`: for the only region).
    subnets: BTreeMap<Option<String>, Vec<String>>,
    /// Target group ARNs by the region in the ARN.
    target_groups: BTreeMap<String, Vec<String>>,
    /// The gate the active stack keeps passing while retire waits.
    retire_gate: Option<Gate>,
}

impl Settings {
    /// Whether this run updates one group in place rather than a color.
    fn rolling(&self) -> bool {
        let r = &self.args.rolling;
        r.strategy == Strategy::Rolling || r.confirm || r.rollback
    }
}

crate::step_reports! {
    /// What each mode reports.
    pub enum Report {
        /// A color brought up or retired.
        Standby(StandbyReport),
        /// A group updated in place, confirmed or rolled back.
        Rolling(RollingOutput),
        /// A rolling update's plan (dry run).
        Plan(Plan),
    }
}

impl Command for DeployStandby {
    const STEP: &'static str = steps::DEPLOY_STANDBY;
    type Args = DeployStandbyArgs;
    type Settings = Settings;
    type Report = Report;

    fn settings(args: DeployStandbyArgs) -> Result<Settings, Failure> {
        settings(args)
    }

    fn policy(s: &Settings) -> iam::Policy {
        let retire = matches!(s.args.command, Some(Sub::Retire { .. }));
        let mut policy = match s.args.stack.driver {
            Driver::Command if s.args.rolling.strategy != Strategy::Rolling => iam::Policy::new(),
            _ => crate::stack::asg_policy(&asg_scope(s, retire)),
        };
        // Launching with an instance profile passes its role to EC2.
        if let (false, Some(role)) = (retire, s.asg.platform.role_arn()) {
            policy.allow("PassInstanceRole", &["iam:PassRole"], [role]);
        }
        // The asg driver's groups get their termination hook (a rolling
        // update changes an existing group's instances only).
        let colors = s.args.stack.driver == Driver::Asg && !retire && !s.rolling();
        if colors && s.asg.termination_hook.is_some() {
            policy.allow(
                "ReadTerminationHooks",
                &["autoscaling:DescribeLifecycleHooks"],
                ["*"],
            );
            policy.allow(
                "TerminationHook",
                &["autoscaling:PutLifecycleHook"],
                asg_scope(s, retire)
                    .groups
                    .iter()
                    .map(|g| iam::arn::auto_scaling_group(g)),
            );
        }
        policy.merge(&ReleaseLock::policy(&s.args.common.state));
        policy
    }

    /// Holds the service's release lock (beside the state) for the whole
    /// step, so that two pipelines never bring up or retire the same
    /// service's stacks at once. A dry run changes nothing and takes nothing.
    async fn run(s: Settings, step: &mut Step) -> Result<Report, Failure> {
        if step.dry_run {
            return Box::pin(deploy(&s, step)).await;
        }
        let lock = ReleaseLock::beside(step.state.location(), step.aws.clone());
        let request = LeaseRequest {
            holder: crate::state::journal::actor(),
            message: s.args.lock.lock_message.clone(),
            expires: Utc::now() + step.timeout + s.args.lock.lock_wait + LOCK_SLACK,
            token: None,
        };
        let lease =
            lease::acquire(&lock, &request, None, s.args.lock.lock_wait, &step.cancel).await?;
        tracing::info!(
            "took the release lock {} until {}",
            lock.place(),
            lease.expires.to_rfc3339()
        );
        let result = Box::pin(deploy(&s, step)).await;
        if let Err(e) = lock.give_back(&lease).await {
            tracing::warn!(
                "could not release the release lock {}: {e}; it expires at {}",
                lock.place(),
                lease.expires.to_rfc3339()
            );
        }
        result
    }
}

/// How long the release lock outlives the step's deadline, for the step to
/// give it back after a time-out.
const LOCK_SLACK: Duration = Duration::from_secs(120);

/// Brings a color up or retires one, or updates a group in place.
async fn deploy(s: &Settings, step: &mut Step) -> Result<Report, Failure> {
    if s.rolling() {
        return rolling_run(s, step).await;
    }
    let drivers = match s.args.stack.driver {
        Driver::Asg => asg_drivers(s, step).await?,
        Driver::Command => command_drivers(s)?,
    };
    let options = StandbyOptions {
        dry_run: step.dry_run,
        timeout: step.timeout,
    };
    let stack = &s.args.stack;
    let report = match &s.args.command {
        None => {
            let request = DeployRequest {
                service: stack.service.clone(),
                version: s.args.up.app_version.clone(),
                color: stack.color,
                image: s.args.up.image.clone(),
            };
            standby::deploy(
                &step.state,
                &drivers,
                &request,
                &options,
                &mut step.hooks,
                &step.cancel,
            )
            .await?
        }
        Some(Sub::Retire {
            retire_after,
            no_wait,
            check_every,
            ..
        }) => {
            let request = RetireRequest {
                service: stack.service.clone(),
                color: stack.color,
                retire_after: *retire_after,
                wait: (!no_wait).then(|| RetireWait {
                    gate: s.retire_gate.clone(),
                    every: *check_every,
                }),
            };
            standby::retire(
                &step.state,
                &drivers,
                &request,
                &options,
                &mut step.hooks,
                &step.cancel,
            )
            .await?
        }
    };
    Ok(report.into())
}

/// Checks every flag before the first network call.
fn settings(args: DeployStandbyArgs) -> Result<Settings, Failure> {
    for r in &args.regions {
        aws::check_region("--region", r)?;
    }
    let up = &args.up;
    if !args.stack.group_pattern.contains("{color}") {
        return Err(Failure::usage(
            "--group-pattern must contain {color}, or both colors would share one group",
        ));
    }
    let user_data = read_user_data(up.user_data.as_deref())?;
    if let Some(t) = &up.instance_type {
        if t.trim().is_empty() || !t.contains('.') {
            return Err(Failure::usage(format!(
                "--instance-type {t:?} is not an instance type (e.g. t3.micro)"
            )));
        }
    }
    let platform = platform(up)?;
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
    let subnets = subnets(up, &args.regions)?;
    let target_groups = target_groups(up)?;
    let termination_hook = if up.no_termination_hook {
        None
    } else {
        Some(
            TerminationHook::new(&up.termination_hook, up.termination_heartbeat)
                .map_err(Failure::usage)?,
        )
    };
    let asg = AsgSettings {
        group_pattern: args.stack.group_pattern.clone(),
        instance_type: up.instance_type.clone(),
        platform,
        user_data,
        health_check_type: up.health_check_type,
        grace_period: up.health_check_grace,
        desired: up.desired,
        min: up.min,
        max: up.max,
        scaling: scaling(up)?,
        port: up.port,
        endpoint_template: up.endpoint_template.clone(),
        termination_hook,
        keep_versions: up.keep_versions,
        ..AsgSettings::default()
    };
    let retire_gate = retire_gate(&args)?;
    Ok(Settings {
        args: Box::new(args),
        asg,
        subnets,
        target_groups,
        retire_gate,
    })
}

/// The platform's settings every instance keeps, checked.
fn platform(up: &UpArgs) -> Result<Platform, Failure> {
    let base = up
        .launch_template
        .as_deref()
        .map(BaseTemplate::parse)
        .transpose()
        .map_err(Failure::usage)?;
    for sg in &up.security_groups {
        if !sg.starts_with("sg-") || sg.len() < 4 {
            return Err(Failure::usage(format!(
                "--security-group {sg:?} is not a security group id (sg-...)"
            )));
        }
    }
    if let Some(profile) = &up.instance_profile {
        let ok = if profile.starts_with("arn:") {
            profile.contains(":instance-profile/")
        } else {
            !profile.is_empty()
                && profile.len() <= 128
                && profile
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
        };
        if !ok {
            return Err(Failure::usage(format!(
                "--instance-profile {profile:?} is neither an instance profile name nor its ARN (arn:aws:iam::ACCOUNT:instance-profile/NAME)"
            )));
        }
    }
    if up.key_name.as_deref().is_some_and(|k| k.trim().is_empty()) {
        return Err(Failure::usage("--key-name is empty"));
    }
    Ok(Platform {
        base,
        instance_profile: up.instance_profile.clone(),
        security_groups: up.security_groups.clone(),
        key_name: up.key_name.clone(),
        root_volume_gib: up.root_volume_size,
    })
}

/// The gate of `retire --gate-url`, checked.
fn retire_gate(args: &DeployStandbyArgs) -> Result<Option<Gate>, Failure> {
    let Some(Sub::Retire {
        gate_urls,
        check_every,
        ..
    }) = &args.command
    else {
        return Ok(None);
    };
    if check_every.is_zero() {
        return Err(Failure::usage("--check-every must be more than 0s"));
    }
    if gate_urls.is_empty() {
        return Ok(None);
    }
    for url in gate_urls {
        match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                return Err(Failure::usage(format!(
                    "--gate-url {url:?} is not an http(s) URL"
                )))
            }
        }
    }
    let policy = GatePolicy {
        successes: 1,
        failures: 2,
        interval: Duration::from_secs(2),
        probe_timeout: Duration::from_secs(5),
        deadline: Duration::from_secs(60),
    };
    Gate::new(gate_urls.clone(), policy)
        .map(Some)
        .map_err(|e| Failure::new(Code::Usage, e))
}

/// The user-data file's bytes, checked against EC2's limit.
fn read_user_data(path: Option<&Path>) -> Result<Option<Vec<u8>>, Failure> {
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

/// Subnets by region (`None`: for the only region).
fn subnets(
    up: &UpArgs,
    regions: &[String],
) -> Result<BTreeMap<Option<String>, Vec<String>>, Failure> {
    let mut subnets: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
    for s in &up.subnets {
        let (region, id) = match s.split_once('=') {
            Some((r, id)) => {
                aws::check_region("--region", r)?;
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
    Ok(subnets)
}

/// Target groups by the region in their ARN.
fn target_groups(up: &UpArgs) -> Result<BTreeMap<String, Vec<String>>, Failure> {
    let mut target_groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for arn in &up.target_groups {
        let group = TargetGroupArn::parse(arn)?;
        target_groups
            .entry(group.region().to_owned())
            .or_default()
            .push(group.as_str().to_owned());
    }
    Ok(target_groups)
}

/// One `asg` driver per region: `--region`, else the regions the state's
/// stacks span, else the default chain.
async fn asg_drivers(s: &Settings, step: &Step) -> Result<Vec<Region>, Failure> {
    let mut names: Vec<Option<String>> = s.args.regions.iter().cloned().map(Some).collect();
    if names.is_empty() {
        let doc = step.state.load().await?;
        names = standby::state_regions(&doc).into_iter().map(Some).collect();
    }
    if names.is_empty() {
        names.push(None);
    }
    let mut drivers = Vec::new();
    for name in names {
        let config = aws::load(&AwsSettings {
            region: name,
            profile: step.aws.profile.clone(),
        })
        .await;
        let region = aws::region_of(&config);
        let mut settings = s.asg.clone();
        settings.subnets = s
            .subnets
            .get(&Some(region.clone()))
            .or_else(|| s.subnets.get(&None))
            .cloned()
            .unwrap_or_default();
        settings.target_groups = s.target_groups.get(&region).cloned().unwrap_or_default();
        drivers.push(Region {
            name: region,
            driver: standby::Driver::Asg(Box::new(AsgDriver::new(
                AsgClients::new(&config),
                settings,
            ))),
        });
    }
    Ok(drivers)
}

/// The command driver, once per `--region` (or once, as region `local`).
fn command_drivers(s: &Settings) -> Result<Vec<Region>, Failure> {
    let stack = &s.args.stack;
    // retire runs only --down; the driver still wants an --up to parse.
    let up = match (&s.args.command, &stack.up_command, &stack.down_command) {
        (_, Some(up), _) => up.clone(),
        (Some(Sub::Retire { .. }), None, Some(down)) => down.clone(),
        (Some(Sub::Retire { .. }), None, None) => {
            return Err(Failure::usage("--driver command: retire needs --down"))
        }
        (None, None, _) => return Err(Failure::usage("--driver command needs --up")),
    };
    let driver = CommandDriver::new(&CommandTemplates {
        up,
        down: stack.down_command.clone(),
        endpoints: stack.endpoints_command.clone(),
    })?;
    let names = if s.args.regions.is_empty() {
        vec!["local".to_owned()]
    } else {
        s.args.regions.clone()
    };
    Ok(names
        .into_iter()
        .map(|name| Region {
            name,
            driver: standby::Driver::Command(driver.clone()),
        })
        .collect())
}

/// The groups and launch templates the asg driver's policy names: the
/// colors' groups by the pattern (`*` for a service or region the state
/// gives), or the one group a rolling update changes.
fn asg_scope(s: &Settings, retire: bool) -> crate::stack::AsgScope {
    let stack = &s.args.stack;
    let service = stack.service.as_deref().unwrap_or("*");
    let regions: Vec<&str> = if s.args.regions.is_empty() {
        vec!["*"]
    } else {
        s.args.regions.iter().map(String::as_str).collect()
    };
    let colors: Vec<Color> = match stack.color {
        Some(color) if s.rolling() => vec![color],
        _ => Color::ALL.to_vec(),
    };
    let named = s
        .rolling()
        .then_some(s.args.rolling.group.clone())
        .flatten();
    let groups: BTreeSet<String> = match &named {
        Some(group) => BTreeSet::from([group.clone()]),
        None => colors
            .iter()
            .flat_map(|c| {
                regions.iter().map(|r| {
                    crate::stack::asg::group_name(&stack.group_pattern, service, c.name(), r)
                })
            })
            .collect(),
    };
    crate::stack::AsgScope {
        groups: groups.into_iter().collect(),
        template_service: named.is_none().then(|| service.to_owned()),
        retire,
    }
}

/// A rolling command's result.
#[derive(Debug, serde::Serialize)]
#[serde(transparent)]
pub struct RollingOutput(RollingReport);

impl StepReport for RollingOutput {
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
    s: &Settings,
    doc: &StateDocument,
    (stack, group): (String, String),
    region: &str,
) -> Result<RollingSettings, Failure> {
    let user_data = match &s.asg.user_data {
        Some(bytes) => Some(String::from_utf8(bytes.clone()).map_err(|_| {
            Failure::usage("--user-data must be text (UTF-8) for --strategy rolling")
        })?),
        None => None,
    };
    let r: &RollingArgs = &s.args.rolling;
    Ok(RollingSettings {
        stack,
        group,
        version: s
            .args
            .up
            .app_version
            .clone()
            .or_else(|| doc.deployment.as_ref().and_then(|d| d.version.clone()))
            .ok_or_else(|| {
                Failure::usage("no --app-version, and the state names no deployment version")
            })?,
        image: s
            .args
            .up
            .image
            .clone()
            .or_else(|| doc.image.as_ref().and_then(|i| i.amis.get(region).cloned())),
        user_data,
        batch_size: r.batch_size,
        batch_interval: r.batch_interval,
        start_first: r.start_first,
        poll: RollingSettings::POLL,
    })
}

/// `--strategy rolling`, `--confirm`, `--rollback`: one group updated in place.
async fn rolling_run(s: &Settings, step: &Step) -> Result<Report, Failure> {
    let regions = &s.args.regions;
    if regions.len() > 1 {
        return Err(Failure::usage(
            "--strategy rolling updates one group in one region; give one --region",
        ));
    }
    let doc = step.state.load().await?;
    let stack_args = &s.args.stack;
    let service = stack_args
        .service
        .clone()
        .or_else(|| doc.deployment.as_ref().and_then(|d| d.service.clone()));
    let color = stack_args.color.map(Color::name);
    let group = match (&s.args.rolling.group, &service, color) {
        (Some(g), _, _) => g.clone(),
        (None, Some(service), Some(color)) => crate::stack::asg::group_name(
            &stack_args.group_pattern,
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
        profile: step.aws.profile.clone(),
    })
    .await;
    let region = aws::region_of(&config);
    let clients = AsgClients::new(&config);
    let wait = crate::stack::Wait {
        deadline: step.deadline,
        cancel: step.cancel.clone(),
    };
    let r = &s.args.rolling;
    if step.dry_run && (r.confirm || r.rollback) {
        let (what, lines) = if r.confirm {
            ("confirm", rolling::confirm_plan(&step.state, &stack).await?)
        } else {
            (
                "rollback",
                rolling::rollback_plan(&step.state, &stack).await?,
            )
        };
        let mut plan = vec![format!(
            "plan of the rolling {what} of stack {stack} (dry run, nothing changed)"
        )];
        plan.extend(lines.into_iter().map(|line| format!("  - {line}")));
        return Ok(Plan::dry_run(plan).into());
    }
    let report = if r.confirm {
        rolling::confirm(&step.state, &stack).await?
    } else if r.rollback {
        rolling::rollback(&clients, &step.state, &stack, RollingSettings::POLL, &wait).await?
    } else {
        let settings = rolling_settings(s, &doc, (stack.clone(), group), &region)?;
        if step.dry_run {
            let mut lines = vec![format!(
                "plan of the rolling update of {} (dry run, nothing changed)",
                settings.group
            )];
            lines.extend(
                rolling::plan(&clients, &settings)
                    .await?
                    .into_iter()
                    .map(|line| format!("  - {line}")),
            );
            return Ok(Plan::dry_run(lines).into());
        }
        match r.batch_check {
            BatchCheck::Probes => {
                let check = rolling::HealthBatchCheck {
                    probe: crate::health::HttpProbe::new(r.health_timeout)
                        .map_err(|e| Failure::usage(e.to_string()))?,
                    policy: crate::health::policy::ProbePolicy::default(),
                    url: crate::health::targets::UrlTemplate {
                        scheme: "http".to_owned(),
                        port: Some(s.args.up.port),
                        path: r.health_path.clone(),
                    },
                };
                rolling::update(&clients, &settings, &check, &step.state, &wait).await?
            }
            BatchCheck::TargetHealth => {
                let check = rolling::TargetHealthBatchCheck {
                    client: clients.elbv2.clone(),
                };
                rolling::update(&clients, &settings, &check, &step.state, &wait).await?
            }
        }
    };
    Ok(RollingOutput(report).into())
}

#[cfg(test)]
#[path = "deploy_standby_tests.rs"]
mod tests;
