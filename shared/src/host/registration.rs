//! Joining and leaving the fleet.
//!
//! Join: tag the instance with its service and labels, register it in each
//! target group (its instance id in `instance` groups, its address in `ip`
//! groups; a host off AWS only in `ip` groups), record it in the state, then
//! wait until every group reports it healthy (exit 1 at the deadline; it
//! stays registered).
//!
//! Leave: deregister it from each group where it is registered, take it out
//! of the state, wait until every group has finished draining it (bounded by
//! the groups' deregistration delay and the step's deadline), then complete
//! the Auto Scaling lifecycle action when asked.
//!
//! Every change is journaled and the state saved as soon as it is made, so a
//! run that is killed leaves a true record; running the same command again
//! is safe (tags are set, not added; a registered target is registered again;
//! a target that is not registered is not deregistered).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::identity::Identity;
use super::labels::Labels;
use super::{HostClients, HostError, InputError, STEP};
use crate::aws::autoscaling::{self, LifecycleResult};
use crate::aws::elbv2::{self, Target, TargetGroup, TargetHealth};
use crate::aws::{ec2, ProviderError};
use crate::outcome::StepReport;
use crate::state::document::{Extra, Host};
use crate::state::{Change, JournalEntry, Outcome, StateDocument, StateFile};
use crate::wait::progress::{short, Pace};
use crate::wait::{self, Backoff, WaitEnd};

/// Polls of a target's health: ELB checks every 5-300 s (30 s by default) and
/// needs 2-10 passes in a row, so a few seconds apart is plenty.
pub const TARGET_HEALTH: Backoff = Backoff {
    initial: Duration::from_secs(2),
    max: Duration::from_secs(15),
};

/// How long past a group's deregistration delay the drain wait goes on:
/// the delay bounds the draining, but its end is reported a little later.
pub const DRAIN_GRACE: Duration = Duration::from_secs(15);

/// A checked target group ARN:
/// `arn:PARTITION:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetGroupArn {
    arn: String,
    region: String,
    name: String,
}

impl TargetGroupArn {
    /// Parses and checks an ARN.
    pub fn parse(text: &str) -> Result<Self, InputError> {
        let invalid = || InputError::Invalid {
            flag: "--target-group",
            value: text.to_owned(),
            why: "is not a target group ARN \
                  (arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID)"
                .to_owned(),
        };
        let parts: Vec<&str> = text.trim().splitn(6, ':').collect();
        let [arn, partition, service, region, account, resource] = parts[..] else {
            return Err(invalid());
        };
        let resource: Vec<&str> = resource.split('/').collect();
        let plain =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        let ok = arn == "arn"
            && partition.starts_with("aws")
            && service == "elasticloadbalancing"
            && plain(region)
            && account.len() == 12
            && account.chars().all(|c| c.is_ascii_digit())
            && resource.len() == 3
            && resource[0] == "targetgroup"
            && plain(resource[1])
            && plain(resource[2]);
        if !ok {
            return Err(invalid());
        }
        Ok(Self {
            arn: text.trim().to_owned(),
            region: region.to_owned(),
            name: resource[1].to_owned(),
        })
    }

    /// The whole ARN.
    pub fn as_str(&self) -> &str {
        &self.arn
    }

    /// The region it is in.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Parses `--target-group` flags: each a target group ARN, each once, all in one region.
pub fn parse_target_groups(items: &[String]) -> Result<Vec<TargetGroupArn>, InputError> {
    let mut groups: Vec<TargetGroupArn> = Vec::with_capacity(items.len());
    for item in items {
        let group = TargetGroupArn::parse(item)?;
        if groups.iter().any(|g| g.arn == group.arn) {
            return Err(InputError::Invalid {
                flag: "--target-group",
                value: group.arn,
                why: "is given twice".to_owned(),
            });
        }
        if let Some(first) = groups.first() {
            if first.region != group.region {
                return Err(InputError::Conflict(format!(
                    "the target groups are in more than one region ({} and {}); \
                     a host registers in the groups of one region",
                    first.region, group.region
                )));
            }
        }
        groups.push(group);
    }
    Ok(groups)
}

/// The region the ELBv2 calls go to: the target groups' own, which `--region`
/// (when given) must match. `None` when there are no groups.
pub fn targets_region(
    given: Option<&str>,
    groups: &[TargetGroupArn],
) -> Result<Option<String>, InputError> {
    let Some(first) = groups.first() else {
        return Ok(given.map(str::to_owned));
    };
    if let Some(region) = given {
        if region != first.region {
            return Err(InputError::RegionMismatch {
                arn: first.arn.clone(),
                arn_region: first.region.clone(),
                region: region.to_owned(),
            });
        }
    }
    Ok(Some(first.region.clone()))
}

/// An Auto Scaling lifecycle hook whose action `leave` completes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LifecycleHook {
    /// The hook's name.
    pub hook: String,
    /// The Auto Scaling group's name.
    pub group: String,
}

impl LifecycleHook {
    /// Both names, or neither.
    pub fn from_flags(hook: Option<&str>, group: Option<&str>) -> Result<Option<Self>, InputError> {
        match (hook, group) {
            (None, None) => Ok(None),
            (Some(hook), Some(group)) if !hook.trim().is_empty() && !group.trim().is_empty() => {
                Ok(Some(Self {
                    hook: hook.trim().to_owned(),
                    group: group.trim().to_owned(),
                }))
            }
            _ => Err(InputError::Conflict(
                "--lifecycle-hook and --asg go together: the hook's name and its Auto Scaling \
                 group's name"
                    .to_owned(),
            )),
        }
    }
}

/// What `join` does.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// The service the host serves.
    pub service: String,
    /// Its labels.
    pub labels: Labels,
    /// The target groups to register it in.
    pub target_groups: Vec<TargetGroupArn>,
    /// The port to register (default: each group's port).
    pub port: Option<u16>,
    /// How long to wait for the target to be healthy; `None` does not wait.
    pub wait: Option<Duration>,
}

/// What `leave` does.
#[derive(Debug, Clone)]
pub struct LeaveRequest {
    /// The target groups to deregister it from.
    pub target_groups: Vec<TargetGroupArn>,
    /// The port it was registered with (default: each group's port).
    pub port: Option<u16>,
    /// The lifecycle action to complete once it has drained.
    pub lifecycle: Option<LifecycleHook>,
}

/// How to do it.
#[derive(Debug, Clone)]
pub struct RegistrationOptions {
    /// Print the plan, change nothing.
    pub dry_run: bool,
    /// Deadline of the whole step.
    pub timeout: Duration,
    /// Delays between health polls.
    pub backoff: Backoff,
}

impl RegistrationOptions {
    /// Options with the default polling.
    pub fn new(timeout: Duration, dry_run: bool) -> Self {
        Self {
            dry_run,
            timeout,
            backoff: TARGET_HEALTH,
        }
    }
}

/// A target group and this host's target in it.
#[derive(Debug, Clone)]
struct Member {
    group: TargetGroup,
    target: Target,
}

/// One target group in a report.
#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    /// The group's name.
    pub group: String,
    /// Its ARN.
    pub arn: String,
    /// `instance` or `ip`.
    pub target_type: String,
    /// This host's target in it.
    pub target: Target,
    /// The target's health as last read (join: after the wait; leave: before deregistering).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<TargetHealth>,
}

impl TargetReport {
    fn new(member: &Member) -> Self {
        Self {
            group: member.group.name.clone(),
            arn: member.group.arn.clone(),
            target_type: member.group.target_type.clone(),
            target: member.target.clone(),
            health: None,
        }
    }

    fn target_text(&self) -> String {
        format!("{}:{}", self.target.id, self.target.port)
    }
}

/// What `join` did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct JoinReport {
    /// Always `join`.
    pub action: &'static str,
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Who the host is.
    pub host: Identity,
    /// Its service.
    pub service: String,
    /// Its labels.
    pub labels: Labels,
    /// The tags set on the instance (none off AWS).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Its target in each group.
    pub targets: Vec<TargetReport>,
    /// Whether every group reported it healthy (`None`: not waited for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// The changes a dry run would make, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<String>,
    /// Time the step took.
    pub elapsed_ms: u64,
}

impl StepReport for JoinReport {
    fn text(&self) -> String {
        let mut t = String::new();
        if self.dry_run {
            let _ = writeln!(
                t,
                "plan for {} to join {} (dry run: nothing changed)",
                self.host.host_id, self.service
            );
            for line in &self.plan {
                let _ = writeln!(t, "  {line}");
            }
            return t;
        }
        let _ = writeln!(
            t,
            "joined {} ({}): service {}, labels {}",
            self.host.host_id,
            where_text(&self.host),
            self.service,
            self.labels.display()
        );
        if !self.tags.is_empty() {
            let _ = writeln!(t, "  tags: {}", pairs(&self.tags));
        }
        for r in &self.targets {
            let health = r
                .health
                .as_ref()
                .map_or_else(|| "registered".to_owned(), TargetHealth::describe);
            let _ = writeln!(t, "  {}: {} {health}", r.group, r.target_text());
        }
        if self.targets.is_empty() {
            let _ = writeln!(t, "  no target groups given: tagged only");
        }
        t
    }

    fn outputs(&self) -> Vec<(String, String)> {
        let mut out = vec![
            ("host-id".to_owned(), self.host.host_id.clone()),
            ("provider".to_owned(), self.host.provider.clone()),
            ("address".to_owned(), self.host.address.to_string()),
            ("service".to_owned(), self.service.clone()),
            ("labels".to_owned(), self.labels.display()),
            (
                "target-groups".to_owned(),
                self.targets
                    .iter()
                    .map(|r| r.arn.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ];
        if let Some(region) = &self.host.region {
            out.push(("region".to_owned(), region.clone()));
        }
        out
    }

    fn summary(&self) -> String {
        let mut s = format!(
            "### register-host join{}\n\n`{}` ({}) joined **{}** with labels `{}`\n",
            if self.dry_run { " (dry run)" } else { "" },
            self.host.host_id,
            where_text(&self.host),
            self.service,
            self.labels.display()
        );
        if !self.targets.is_empty() {
            s.push_str("\n| target group | target | health |\n|---|---|---|\n");
            for r in &self.targets {
                let health = r
                    .health
                    .as_ref()
                    .map_or_else(|| "registered".to_owned(), TargetHealth::describe);
                let _ = writeln!(s, "| {} | `{}` | {health} |", r.group, r.target_text());
            }
        }
        s
    }
}

/// One target group in a leave report.
#[derive(Debug, Clone, Serialize)]
pub struct LeaveTarget {
    /// The group, the target, and its health before leaving.
    #[serde(flatten)]
    pub target: TargetReport,
    /// The group's deregistration delay in seconds.
    pub deregistration_delay_s: u64,
    /// Whether `leave` deregistered it (`false`: it was not registered, or already draining).
    pub deregistered: bool,
    /// Its health after the drain wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<TargetHealth>,
}

/// What `leave` did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct LeaveReport {
    /// Always `leave`.
    pub action: &'static str,
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Who the host is.
    pub host: Identity,
    /// Its target in each group.
    pub targets: Vec<LeaveTarget>,
    /// Time from the deregistration until every group had drained the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drained_ms: Option<u64>,
    /// The lifecycle action completed, e.g. `CONTINUE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Value>,
    /// Whether the state file's hosts section held the host (and no longer does).
    pub removed_from_state: bool,
    /// The changes a dry run would make, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<String>,
    /// Time the step took.
    pub elapsed_ms: u64,
}

impl StepReport for LeaveReport {
    fn text(&self) -> String {
        let mut t = String::new();
        if self.dry_run {
            let _ = writeln!(
                t,
                "plan for {} to leave (dry run: nothing changed)",
                self.host.host_id
            );
            for line in &self.plan {
                let _ = writeln!(t, "  {line}");
            }
            return t;
        }
        let deregistered = self.targets.iter().filter(|r| r.deregistered).count();
        let _ = write!(
            t,
            "left {} ({}): deregistered from {deregistered} of {} target group(s)",
            self.host.host_id,
            where_text(&self.host),
            self.targets.len()
        );
        if let Some(ms) = self.drained_ms {
            let _ = write!(t, ", drained in {}", short(Duration::from_millis(ms)));
        }
        t.push('\n');
        for r in &self.targets {
            let was = r
                .target
                .health
                .as_ref()
                .map_or_else(|| "unknown".to_owned(), |h| h.state.clone());
            let now = r
                .after
                .as_ref()
                .map_or_else(|| "-".to_owned(), |h| h.state.clone());
            let what = if r.deregistered {
                "deregistered"
            } else {
                "not deregistered (was not registered or already draining)"
            };
            let _ = writeln!(
                t,
                "  {}: {} was {was}, {what}, now {now} (deregistration delay {}s)",
                r.target.group,
                r.target.target_text(),
                r.deregistration_delay_s
            );
        }
        if let Some(l) = &self.lifecycle {
            let _ = writeln!(
                t,
                "  lifecycle hook {} of {}: {}",
                l["hook"].as_str().unwrap_or_default(),
                l["group"].as_str().unwrap_or_default(),
                l["result"].as_str().unwrap_or_default()
            );
        }
        t
    }

    fn outputs(&self) -> Vec<(String, String)> {
        vec![
            ("host-id".to_owned(), self.host.host_id.clone()),
            (
                "deregistered".to_owned(),
                self.targets
                    .iter()
                    .filter(|r| r.deregistered)
                    .map(|r| r.target.arn.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ]
    }

    fn summary(&self) -> String {
        let mut s = format!(
            "### register-host leave{}\n\n`{}` left the fleet\n",
            if self.dry_run { " (dry run)" } else { "" },
            self.host.host_id
        );
        if !self.targets.is_empty() {
            s.push_str("\n| target group | target | deregistered | now |\n|---|---|---|---|\n");
            for r in &self.targets {
                let now = r.after.as_ref().map_or("-", |h| h.state.as_str());
                let _ = writeln!(
                    s,
                    "| {} | `{}` | {} | {now} |",
                    r.target.group,
                    r.target.target_text(),
                    if r.deregistered { "yes" } else { "no" }
                );
            }
        }
        s
    }
}

fn where_text(host: &Identity) -> String {
    let mut parts = vec![host.provider.clone()];
    if let Some(zone) = host.availability_zone.as_ref().or(host.region.as_ref()) {
        parts.push(zone.clone());
    }
    parts.push(host.address.to_string());
    parts.join(", ")
}

fn pairs(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn elapsed_ms(began: Instant) -> u64 {
    u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// This host's target in a group: its instance id in an `instance` group, its
/// address in an `ip` group (with availability zone `all` off AWS, where the
/// address is outside the group's VPC).
fn target_for(
    group: &TargetGroup,
    identity: &Identity,
    port: Option<u16>,
) -> Result<Target, InputError> {
    let type_error = |why: &str| InputError::TargetType {
        group: group.name.clone(),
        target_type: group.target_type.clone(),
        why: why.to_owned(),
    };
    let Some(port) = port.or(group.port) else {
        return Err(type_error("it has no port of its own; give --port"));
    };
    match group.target_type.as_str() {
        "instance" if identity.is_aws() => Ok(Target {
            id: identity.host_id.clone(),
            port,
            availability_zone: None,
        }),
        "instance" => Err(type_error(&format!(
            "a host off AWS (--provider {}) has no instance id; register it in a target group \
             of type ip",
            identity.provider
        ))),
        "ip" => Ok(Target {
            id: identity.address.to_string(),
            port,
            availability_zone: (!identity.is_aws()).then(|| "all".to_owned()),
        }),
        _ => Err(type_error(
            "register-host registers instances and IP addresses (target types instance and ip)",
        )),
    }
}

/// Reads each group and works out this host's target in it. Reads only.
async fn members(
    clients: &HostClients,
    identity: &Identity,
    groups: &[TargetGroupArn],
    port: Option<u16>,
) -> Result<Vec<Member>, HostError> {
    let mut members = Vec::with_capacity(groups.len());
    for arn in groups {
        let group = elbv2::describe_target_group(&clients.elbv2, arn.as_str())
            .await
            .map_err(|e| match e.code.as_deref() {
                Some(elbv2::TARGET_GROUP_NOT_FOUND) => {
                    HostError::Input(InputError::NoSuchTargetGroup {
                        arn: arn.as_str().to_owned(),
                        region: arn.region().to_owned(),
                    })
                }
                _ => HostError::Provider(e),
            })?;
        let target = target_for(&group, identity, port)?;
        members.push(Member { group, target });
    }
    Ok(members)
}

/// Loads the state, applies `change` and saves it: the newest document is
/// re-read so that what other steps wrote meanwhile survives.
async fn update(
    state: &StateFile,
    change: impl FnOnce(&mut StateDocument),
) -> Result<(), HostError> {
    let mut doc = state.load().await?;
    change(&mut doc);
    state.save(&mut doc).await?;
    Ok(())
}

fn target_change(member: &Member, before: Option<Value>, after: Value) -> Change {
    Change {
        resource: format!(
            "elbv2:{}/{}:{}",
            member.group.arn, member.target.id, member.target.port
        ),
        before,
        after: Some(after),
        reference: None,
    }
}

/// What every phase of a join or a leave works with.
struct Run<'a> {
    clients: &'a HostClients,
    identity: &'a Identity,
    state: &'a StateFile,
    cancel: &'a CancellationToken,
    backoff: Backoff,
}

impl Run<'_> {
    /// Appends a journal entry without changes.
    async fn journal(
        &self,
        action: &str,
        outcome: Outcome,
        detail: String,
    ) -> Result<(), HostError> {
        update(self.state, |doc| {
            doc.record(JournalEntry::new(STEP, action, outcome).detail(detail));
        })
        .await
    }

    /// Polls the members' target health; see [`poll`].
    async fn poll(
        &self,
        members: &[Member],
        done: fn(&TargetHealth) -> bool,
        what: &str,
        deadline: Instant,
    ) -> Result<Polled, ProviderError> {
        poll(
            self.clients,
            members,
            done,
            what,
            deadline,
            self.cancel,
            self.backoff,
        )
        .await
    }
}

/// Tags the instance and registers it in each group, collecting the changes made.
async fn apply_join(
    clients: &HostClients,
    identity: &Identity,
    tags: &BTreeMap<String, String>,
    members: &[Member],
    changes: &mut Vec<Change>,
) -> Result<(), ProviderError> {
    if identity.is_aws() && !tags.is_empty() {
        ec2::create_tags(&clients.ec2, &identity.host_id, tags).await?;
        changes.push(Change {
            resource: format!("ec2:{}/tags", identity.host_id),
            before: None,
            after: Some(json!(tags)),
            reference: None,
        });
    }
    for m in members {
        elbv2::register(&clients.elbv2, &m.group.arn, &m.target).await?;
        tracing::info!(
            "registered {}:{} in target group {}",
            m.target.id,
            m.target.port,
            m.group.name
        );
        changes.push(target_change(m, None, json!("registered")));
    }
    Ok(())
}

/// Joins the fleet: tags, registrations, the state record, and the wait until healthy.
pub async fn join(
    clients: &HostClients,
    identity: &Identity,
    request: &JoinRequest,
    options: &RegistrationOptions,
    state: &StateFile,
    cancel: &CancellationToken,
) -> Result<JoinReport, HostError> {
    let began = Instant::now();
    let deadline = began + options.timeout;
    // A state file that cannot be read ends the step before any change.
    state.load().await?;
    let members = members(clients, identity, &request.target_groups, request.port).await?;
    let tags = if identity.is_aws() {
        request.labels.to_tags(&request.service)
    } else {
        BTreeMap::new()
    };
    let mut report = JoinReport {
        action: "join",
        dry_run: options.dry_run,
        host: identity.clone(),
        service: request.service.clone(),
        labels: request.labels.clone(),
        tags: tags.clone(),
        targets: members.iter().map(TargetReport::new).collect(),
        healthy: None,
        plan: Vec::new(),
        elapsed_ms: 0,
    };
    if options.dry_run {
        report.plan = join_plan(identity, request, &tags, &members, state);
        report.elapsed_ms = elapsed_ms(began);
        return Ok(report);
    }
    let run = Run {
        clients,
        identity,
        state,
        cancel,
        backoff: options.backoff,
    };
    register(&run, request, &tags, &members).await?;
    if let Some(wait) = request.wait.filter(|_| !members.is_empty()) {
        let deadline = deadline.min(Instant::now() + wait);
        let healths = wait_healthy(&run, &members, deadline, began).await?;
        for (r, h) in report.targets.iter_mut().zip(healths) {
            r.health = Some(h);
        }
        report.healthy = Some(true);
    }
    report.elapsed_ms = elapsed_ms(began);
    Ok(report)
}

/// Tags and registrations, then the host and the changes into the state,
/// also when only some of them were made.
async fn register(
    run: &Run<'_>,
    request: &JoinRequest,
    tags: &BTreeMap<String, String>,
    members: &[Member],
) -> Result<(), HostError> {
    let identity = run.identity;
    let mut changes = Vec::new();
    let applied = apply_join(run.clients, identity, tags, members, &mut changes).await;
    let host = Host {
        provider: Some(identity.provider.clone()),
        region: identity
            .region
            .clone()
            .or_else(|| request.labels.get("region").map(str::to_owned)),
        address: Some(identity.address.to_string()),
        labels: request.labels.with_service(&request.service),
        extra: Extra::new(),
    };
    let joined = !changes.is_empty() || applied.is_ok();
    let mut entry = match &applied {
        Ok(()) => JournalEntry::new(STEP, "join", Outcome::Ok).detail(format!(
            "{} joined {} ({}) in {} target group(s)",
            identity.host_id,
            request.service,
            request.labels.display(),
            members.len()
        )),
        Err(e) => JournalEntry::new(STEP, "join", Outcome::Failed)
            .detail(format!("{}: {e}", identity.host_id)),
    };
    entry.changes = changes;
    update(run.state, |doc| {
        if joined {
            doc.hosts.insert(identity.host_id.clone(), host);
        }
        doc.record(entry);
    })
    .await?;
    Ok(applied?)
}

/// Waits until every group reports the target serving; journals how it ended.
async fn wait_healthy(
    run: &Run<'_>,
    members: &[Member],
    deadline: Instant,
    began: Instant,
) -> Result<Vec<TargetHealth>, HostError> {
    let host = &run.identity.host_id;
    let what = format!("{host} to be healthy");
    match run
        .poll(members, TargetHealth::is_serving, &what, deadline)
        .await
    {
        Err(e) => {
            run.journal("healthy", Outcome::Failed, format!("{host}: {e}"))
                .await?;
            Err(e.into())
        }
        Ok(Polled::Done(healths)) => {
            run.journal(
                "healthy",
                Outcome::Ok,
                format!(
                    "{host} healthy in {} target group(s) after {}",
                    members.len(),
                    short(began.elapsed())
                ),
            )
            .await?;
            Ok(healths)
        }
        Ok(Polled::Ended(WaitEnd::Cancelled, _)) => {
            run.journal(
                "healthy",
                Outcome::Interrupted,
                format!("interrupted while waiting for {what}"),
            )
            .await?;
            Err(HostError::Interrupted {
                doing: format!("waiting for {what} (it is registered)"),
            })
        }
        Ok(Polled::Ended(WaitEnd::Deadline, healths)) => {
            let detail = health_detail(members, &healths, TargetHealth::is_serving);
            let waited = short(began.elapsed());
            run.journal(
                "healthy",
                Outcome::Failed,
                format!("{host} not healthy after {waited}: {detail}"),
            )
            .await?;
            Err(HostError::NotHealthy {
                host: host.clone(),
                waited,
                detail,
            })
        }
    }
}

fn join_plan(
    identity: &Identity,
    request: &JoinRequest,
    tags: &BTreeMap<String, String>,
    members: &[Member],
    state: &StateFile,
) -> Vec<String> {
    let mut plan = Vec::new();
    if !tags.is_empty() {
        plan.push(format!("tag {} with {}", identity.host_id, pairs(tags)));
    }
    for m in members {
        plan.push(format!(
            "register {}:{} in target group {} ({} target{})",
            m.target.id,
            m.target.port,
            m.group.name,
            m.group.target_type,
            m.target
                .availability_zone
                .as_ref()
                .map(|z| format!(", availability zone {z}"))
                .unwrap_or_default()
        ));
    }
    plan.push(format!(
        "record host {} in the hosts of {}",
        identity.host_id,
        state.location()
    ));
    if let Some(wait) = request.wait.filter(|_| !members.is_empty()) {
        plan.push(format!(
            "wait until every target group reports it healthy (up to {})",
            short(wait)
        ));
    }
    plan
}

/// Why a group's target is not where the wait wanted it: `group: state (reason)` each.
fn health_detail(
    members: &[Member],
    healths: &[TargetHealth],
    done: fn(&TargetHealth) -> bool,
) -> String {
    members
        .iter()
        .zip(healths)
        .filter(|(_, h)| !done(h))
        .map(|(m, h)| format!("{} is {}", m.group.name, h.describe()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// How a poll of the targets' health ended.
enum Polled {
    /// Every target reached the wanted state; their last health.
    Done(Vec<TargetHealth>),
    /// The deadline passed or the step was cancelled first; the last health read.
    Ended(WaitEnd, Vec<TargetHealth>),
}

/// Polls each member's target health with backoff until `done` holds for all,
/// the deadline passes (after one last look at it), or the step is cancelled.
async fn poll(
    clients: &HostClients,
    members: &[Member],
    done: fn(&TargetHealth) -> bool,
    what: &str,
    deadline: Instant,
    cancel: &CancellationToken,
    backoff: Backoff,
) -> Result<Polled, ProviderError> {
    let mut last: Vec<Option<TargetHealth>> = vec![None; members.len()];
    let mut pace = Pace::new(what, deadline);
    let mut attempt = 0;
    loop {
        for (m, slot) in members.iter().zip(last.iter_mut()) {
            if !slot.as_ref().is_some_and(done) {
                *slot = Some(elbv2::target_health(&clients.elbv2, &m.group.arn, &m.target).await?);
            }
        }
        let healths: Vec<TargetHealth> = last.iter().flatten().cloned().collect();
        if healths.iter().all(done) {
            tracing::debug!("{what}: done after {}", short(pace.elapsed()));
            return Ok(Polled::Done(healths));
        }
        if Instant::now() >= deadline {
            return Ok(Polled::Ended(WaitEnd::Deadline, healths));
        }
        pace.tick(&health_detail(members, &healths, done));
        match wait::sleep(backoff.delay(attempt), deadline, cancel).await {
            // At the deadline: one more look before giving up.
            Ok(()) | Err(WaitEnd::Deadline) => attempt += 1,
            Err(WaitEnd::Cancelled) => return Ok(Polled::Ended(WaitEnd::Cancelled, healths)),
        }
    }
}

/// Whether a deregistered target has finished draining.
fn drained(health: &TargetHealth) -> bool {
    health.is_not_registered() || health.state == "unused"
}

/// Leaves the fleet: deregistration, the state record, the drain wait, the lifecycle action.
pub async fn leave(
    clients: &HostClients,
    identity: &Identity,
    request: &LeaveRequest,
    options: &RegistrationOptions,
    state: &StateFile,
    cancel: &CancellationToken,
) -> Result<LeaveReport, HostError> {
    let began = Instant::now();
    let deadline = began + options.timeout;
    if request.lifecycle.is_some() && !identity.is_aws() {
        return Err(InputError::Conflict(format!(
            "--lifecycle-hook completes an Auto Scaling lifecycle action, which only EC2 \
             instances have; this host is --provider {}",
            identity.provider
        ))
        .into());
    }
    let in_state = state.load().await?.hosts.contains_key(&identity.host_id);
    let members = members(clients, identity, &request.target_groups, request.port).await?;
    let mut report = LeaveReport {
        action: "leave",
        dry_run: options.dry_run,
        host: identity.clone(),
        targets: leave_targets(clients, &members).await?,
        drained_ms: None,
        lifecycle: None,
        removed_from_state: in_state && !options.dry_run,
        plan: Vec::new(),
        elapsed_ms: 0,
    };
    if options.dry_run {
        report.plan = leave_plan(
            identity,
            request,
            &members,
            &report.targets,
            in_state,
            state,
        );
        report.elapsed_ms = elapsed_ms(began);
        return Ok(report);
    }
    let run = Run {
        clients,
        identity,
        state,
        cancel,
        backoff: options.backoff,
    };
    deregister(&run, &members, &mut report.targets).await?;
    report.drained_ms = drain(&run, &members, &mut report.targets, deadline).await?;
    if let Some(hook) = &request.lifecycle {
        report.lifecycle = Some(complete_lifecycle_action(&run, hook).await?);
    }
    report.elapsed_ms = elapsed_ms(began);
    Ok(report)
}

/// Each group's deregistration delay and the target's health before leaving. Reads only.
async fn leave_targets(
    clients: &HostClients,
    members: &[Member],
) -> Result<Vec<LeaveTarget>, HostError> {
    let mut rows = Vec::with_capacity(members.len());
    for m in members {
        let delay = elbv2::deregistration_delay(&clients.elbv2, &m.group.arn).await?;
        let before = elbv2::target_health(&clients.elbv2, &m.group.arn, &m.target).await?;
        let mut target = TargetReport::new(m);
        target.health = Some(before);
        rows.push(LeaveTarget {
            target,
            deregistration_delay_s: delay.as_secs(),
            deregistered: false,
            after: None,
        });
    }
    Ok(rows)
}

/// Deregisters the target wherever it is registered (not where it is absent
/// or already draining), then takes the host out of the state and journals
/// the changes, also when only some of them were made.
async fn deregister(
    run: &Run<'_>,
    members: &[Member],
    rows: &mut [LeaveTarget],
) -> Result<(), HostError> {
    let identity = run.identity;
    let mut changes = Vec::new();
    let mut failure = None;
    for (m, row) in members.iter().zip(rows.iter_mut()) {
        let before = row
            .target
            .health
            .clone()
            .unwrap_or_else(TargetHealth::absent);
        if before.is_not_registered() || before.is_draining() {
            continue;
        }
        if let Err(e) = elbv2::deregister(&run.clients.elbv2, &m.group.arn, &m.target).await {
            failure = Some(e);
            break;
        }
        tracing::info!(
            "deregistered {}:{} from target group {} (it drains for up to {}s)",
            m.target.id,
            m.target.port,
            m.group.name,
            row.deregistration_delay_s
        );
        row.deregistered = true;
        changes.push(target_change(
            m,
            Some(json!(before.state)),
            json!("deregistered"),
        ));
    }
    let mut entry = match &failure {
        None => JournalEntry::new(STEP, "leave", Outcome::Ok).detail(format!(
            "{} deregistered from {} target group(s)",
            identity.host_id,
            changes.len()
        )),
        Some(e) => JournalEntry::new(STEP, "leave", Outcome::Failed)
            .detail(format!("{}: {e}", identity.host_id)),
    };
    entry.changes = changes;
    let left = failure.is_none();
    update(run.state, |doc| {
        if left {
            if let Some(host) = doc.hosts.remove(&identity.host_id) {
                entry.changes.push(Change {
                    resource: format!("state:hosts/{}", identity.host_id),
                    before: serde_json::to_value(host).ok(),
                    after: None,
                    reference: None,
                });
            }
        }
        doc.record(entry);
    })
    .await?;
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Waits until every group that had the target registered (or draining) has
/// drained it, bounded by the longest deregistration delay (plus a grace)
/// and the step's deadline. Returns the time it took, `None` when nothing drained.
async fn drain(
    run: &Run<'_>,
    members: &[Member],
    rows: &mut [LeaveTarget],
    deadline: Instant,
) -> Result<Option<u64>, HostError> {
    let draining: Vec<usize> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.deregistered
                || r.target
                    .health
                    .as_ref()
                    .is_some_and(TargetHealth::is_draining)
        })
        .map(|(i, _)| i)
        .collect();
    if draining.is_empty() {
        return Ok(None);
    }
    let waiting: Vec<Member> = draining.iter().map(|i| members[*i].clone()).collect();
    let longest = draining
        .iter()
        .map(|i| rows[*i].deregistration_delay_s)
        .max()
        .unwrap_or(0);
    let began = Instant::now();
    let deadline = deadline.min(began + Duration::from_secs(longest) + DRAIN_GRACE);
    let host = &run.identity.host_id;
    let what = format!("target groups to drain {host}");
    match run.poll(&waiting, drained, &what, deadline).await {
        Err(e) => {
            run.journal("drained", Outcome::Failed, format!("{host}: {e}"))
                .await?;
            Err(e.into())
        }
        Ok(Polled::Ended(WaitEnd::Cancelled, _)) => {
            run.journal(
                "drained",
                Outcome::Interrupted,
                format!("interrupted while waiting for {what}"),
            )
            .await?;
            Err(HostError::Interrupted {
                doing: format!("waiting for {what} (it is deregistered)"),
            })
        }
        Ok(Polled::Ended(WaitEnd::Deadline, healths)) => {
            let mut detail = health_detail(&waiting, &healths, drained);
            let _ = write!(detail, " (deregistration delay up to {longest}s)");
            let waited = short(began.elapsed());
            run.journal(
                "drained",
                Outcome::Failed,
                format!("{host} still draining after {waited}: {detail}"),
            )
            .await?;
            Err(HostError::StillDraining {
                host: host.clone(),
                waited,
                detail,
            })
        }
        Ok(Polled::Done(healths)) => {
            for (i, h) in draining.iter().zip(healths) {
                rows[*i].after = Some(h);
            }
            let took = began.elapsed();
            run.journal(
                "drained",
                Outcome::Ok,
                format!(
                    "{host} drained from {} target group(s) in {}",
                    waiting.len(),
                    short(took)
                ),
            )
            .await?;
            Ok(Some(u64::try_from(took.as_millis()).unwrap_or(u64::MAX)))
        }
    }
}

/// Appends `entry` to the state's journal (the newest document, re-read).
pub async fn journal(state: &StateFile, entry: JournalEntry) -> Result<(), HostError> {
    update(state, |doc| doc.record(entry)).await
}

/// Completes the lifecycle action of `hook` for this host with CONTINUE and
/// journals it (as `leave` does once drained); returns what the report shows.
pub async fn complete(
    clients: &HostClients,
    identity: &Identity,
    state: &StateFile,
    hook: &LifecycleHook,
) -> Result<Value, HostError> {
    let cancel = CancellationToken::new();
    let run = Run {
        clients,
        identity,
        state,
        cancel: &cancel,
        backoff: TARGET_HEALTH,
    };
    complete_lifecycle_action(&run, hook).await
}

/// The ARN pattern of Auto Scaling group `group` in any region and account.
pub fn group_arn(group: &str) -> String {
    crate::aws::iam::arn::auto_scaling_group(group)
}

/// Completes the lifecycle action (CONTINUE) once the host has drained; journals it.
async fn complete_lifecycle_action(
    run: &Run<'_>,
    hook: &LifecycleHook,
) -> Result<Value, HostError> {
    let host = &run.identity.host_id;
    let result = LifecycleResult::Continue;
    if let Err(e) = autoscaling::complete_lifecycle_action(
        &run.clients.autoscaling,
        &hook.hook,
        &hook.group,
        host,
        result,
    )
    .await
    {
        run.journal("lifecycle-action", Outcome::Failed, format!("{host}: {e}"))
            .await?;
        return Err(e.into());
    }
    tracing::info!(
        "completed lifecycle action of hook {} in group {}: {}",
        hook.hook,
        hook.group,
        result.as_str()
    );
    update(run.state, |doc| {
        doc.record(
            JournalEntry::new(STEP, "lifecycle-action", Outcome::Ok).change(Change {
                resource: format!("autoscaling:{}/{}", hook.group, hook.hook),
                before: None,
                after: Some(json!(result.as_str())),
                reference: Some(host.clone()),
            }),
        );
    })
    .await?;
    Ok(json!({
        "hook": hook.hook,
        "group": hook.group,
        "result": result.as_str(),
    }))
}

fn leave_plan(
    identity: &Identity,
    request: &LeaveRequest,
    members: &[Member],
    rows: &[LeaveTarget],
    in_state: bool,
    state: &StateFile,
) -> Vec<String> {
    let mut plan = Vec::new();
    for (m, row) in members.iter().zip(rows) {
        let before = row
            .target
            .health
            .clone()
            .unwrap_or_else(TargetHealth::absent);
        if before.is_not_registered() {
            plan.push(format!(
                "leave target group {} alone: {}:{} is not registered",
                m.group.name, m.target.id, m.target.port
            ));
        } else if before.is_draining() {
            plan.push(format!(
                "wait for {}:{} to finish draining from target group {} (up to {}s)",
                m.target.id, m.target.port, m.group.name, row.deregistration_delay_s
            ));
        } else {
            plan.push(format!(
                "deregister {}:{} from target group {} (now {}) and wait until drained (up to {}s)",
                m.target.id, m.target.port, m.group.name, before.state, row.deregistration_delay_s
            ));
        }
    }
    if in_state {
        plan.push(format!(
            "remove host {} from the hosts of {}",
            identity.host_id,
            state.location()
        ));
    }
    if let Some(hook) = &request.lifecycle {
        plan.push(format!(
            "complete the lifecycle action of hook {} in group {} for {} with CONTINUE",
            hook.hook, hook.group, identity.host_id
        ));
    }
    plan
}

/// The IAM policy `join` needs: tag the instance (only on EC2), find the
/// target groups, register in them and watch the target's health.
pub fn join_policy(request: &JoinRequest, on_ec2: bool) -> crate::aws::iam::Policy {
    use crate::aws::iam::condition as c;
    let mut policy = crate::aws::iam::Policy::new();
    if on_ec2 {
        // The instance is the caller's own, but its id is known only on
        // it: the tags the host may write are the service's labels.
        policy
            .allow(
                "TagThisInstance",
                &["ec2:CreateTags"],
                [crate::aws::iam::arn::instances("*")],
            )
            .when(
                "TagThisInstance",
                c::EQUALS,
                &c::request_tag(super::labels::SERVICE_TAG),
                [request.service.as_str()],
            )
            .when(
                "TagThisInstance",
                c::ALL_LIKE,
                c::TAG_KEYS,
                [format!("{}*", super::labels::LABEL_TAG_PREFIX)]
                    .into_iter()
                    .chain([super::labels::SERVICE_TAG.to_owned()]),
            );
    }
    targets_policy(
        &mut policy,
        &request.target_groups,
        &["elasticloadbalancing:RegisterTargets"],
    );
    policy
}

/// The IAM policy `leave` needs: deregister, wait out the draining, and
/// complete the lifecycle action when a hook is named.
pub fn leave_policy(request: &LeaveRequest) -> crate::aws::iam::Policy {
    let mut policy = crate::aws::iam::Policy::new();
    targets_policy(
        &mut policy,
        &request.target_groups,
        &["elasticloadbalancing:DeregisterTargets"],
    );
    if let Some(hook) = &request.lifecycle {
        policy.allow(
            "CompleteLifecycleAction",
            &["autoscaling:CompleteLifecycleAction"],
            [group_arn(&hook.group)],
        );
    }
    policy
}

fn targets_policy(
    policy: &mut crate::aws::iam::Policy,
    groups: &[TargetGroupArn],
    change: &[&str],
) {
    if groups.is_empty() {
        return;
    }
    policy.allow(
        "ChangeTargets",
        change,
        groups.iter().map(|g| g.as_str().to_owned()),
    );
    // The Describe* calls of ELBv2 have no resource level.
    policy.allow(
        "DescribeTargets",
        &[
            "elasticloadbalancing:DescribeTargetGroups",
            "elasticloadbalancing:DescribeTargetGroupAttributes",
            "elasticloadbalancing:DescribeTargetHealth",
        ],
        ["*"],
    );
}

#[cfg(test)]
#[path = "registration_tests.rs"]
mod tests;
