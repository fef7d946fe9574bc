//! The rolling strategy: replace the instances of ONE existing Auto Scaling
//! group in place, in batches, verifying each batch, rolling back on failure.
//!
//! # What [`update`] does
//!
//! 1. Reads the group; resolves its launch template version to a number
//!    (`$Latest`/`$Default` would silently move once a version is added), and
//!    creates a new version from it (SourceVersion) with the new image and/or
//!    user-data (only the user-data's sha256 goes into the state). Points the
//!    group at the new version by number. The template's default version is
//!    left alone.
//! 2. Replaces the instances present at the start in batches of
//!    `batch_size`:
//!    - start-first (`start_first`): desired (and max, when needed) rises by
//!      the batch; once the new instances are InService, Healthy and serving
//!      in every target group of the group, the [`BatchCheck`] runs on them;
//!      then the batch of old instances is terminated with
//!      `ShouldDecrementDesiredCapacity=true`;
//!    - stop-first: the batch of old instances is terminated without
//!      decrement; the group launches replacements; once they are InService
//!      and serving, the [`BatchCheck`] runs on them.
//!
//!    Between batches it sleeps `batch_interval`. Progress is saved to the
//!    state after every change (`stacks.<stack>.rolling`, see
//!    [`RollingProgress`]).
//! 3. A batch that fails its check is rolled back at once: the group points
//!    at the previous version again, every instance launched by the update is
//!    terminated (with decrement while the group is above its starting
//!    capacity, else without, waiting for replacements from the previous
//!    version), max is restored; [`StackError::RolledBack`] (exit 4).
//! 4. When every batch passed, the update is `finished` but unconfirmed: the
//!    previous version is kept in the state so that [`rollback`] (`--rollback`)
//!    can revert it, as rancher-compose's `rollback` did; [`confirm`]
//!    (`--confirm`, as rancher-compose's `confirm-upgrade`) records the new
//!    version as confirmed and forgets the way back. Confirm deletes nothing
//!    (old launch template versions stay, as Terraform expects).
//!
//! A new [`update`] is refused (exit 5) while the state holds an update of
//! the stack that is not confirmed or rolled back: confirm it, or roll it
//! back (also the way out of an update stopped by a time-out or a signal).
//!
//! Which instances are new: those launched while the update ran (recorded in
//! the state), plus any whose group entry reports the new version. moto
//! reports every instance of a group with the template's DEFAULT version
//! number rather than the one it was launched from, so tracking the ids is
//! what makes the engine right there as on AWS.
//!
//! Waits poll DescribeAutoScalingGroups with [`Backoff`], observe the
//! deadline and the cancel token, and print paced progress lines. An instance
//! that dies while launching is simply replaced by the group; the wait goes
//! on until the capacity is there.
//!
//! # Wiring (for the deploy-standby step)
//!
//! ```text
//! let clients = AsgClients::new(&config);
//! let settings = RollingSettings { stack, group, version, image, user_data,
//!     batch_size, batch_interval, start_first, poll: RollingSettings::POLL };
//! let check = HealthBatchCheck { probe, policy, url: UrlTemplate { port: Some(8080), .. } };
//! rolling::plan(&clients, &settings).await?                               // --dry-run
//! rolling::update(&clients, &settings, &check, &state_file, &wait).await?  // --strategy rolling
//! rolling::confirm(&state_file, &stack)?                                      // --confirm
//! rolling::rollback(&clients, &state_file, &stack, RollingSettings::POLL, &wait).await? // --rollback
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::types::RequestLaunchTemplateData;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::asg::AsgClients;
use super::{StackError, Wait};
use crate::aws::{elbv2, ProviderError};
use crate::health::policy::{self, ProbePolicy};
use crate::health::targets::{endpoint_url, UrlTemplate};
use crate::health::HttpProbe;
use crate::outcome::{Code, ExitStatus};
use crate::state::{Health, JournalEntry, Outcome, StateDocument, StateError, StateFile};
use crate::wait::progress::{short, Pace};
use crate::wait::{self, Backoff, WaitEnd};

/// The step name written in journal entries.
const STEP: &str = crate::state::steps::DEPLOY_STANDBY;

/// The key of a stack entry that holds the rolling progress.
pub const PROGRESS_KEY: &str = "rolling";

/// What to roll, and how.
#[derive(Debug, Clone)]
pub struct RollingSettings {
    /// The stack name in the state (e.g. the color, or the group name).
    pub stack: String,
    /// The Auto Scaling group to update in place.
    pub group: String,
    /// The application version (recorded in the state).
    pub version: String,
    /// The new image id; `None` keeps the current one.
    pub image: Option<String>,
    /// The new user-data, as text (base64-encoded here); `None` keeps the current one.
    pub user_data: Option<String>,
    /// Instances replaced per batch (at least 1).
    pub batch_size: usize,
    /// Pause between batches.
    pub batch_interval: Duration,
    /// Start new instances before stopping old ones.
    pub start_first: bool,
    /// How often the group is polled.
    pub poll: Backoff,
}

impl RollingSettings {
    /// The default polling of the group: 5 s growing to 30 s.
    pub const POLL: Backoff = Backoff {
        initial: Duration::from_secs(5),
        max: Duration::from_secs(30),
    };

    fn check(&self) -> Result<(), StackError> {
        if self.batch_size == 0 {
            return Err(StackError::Invalid(
                "--batch-size must be at least 1".into(),
            ));
        }
        if self.image.is_none() && self.user_data.is_none() {
            return Err(StackError::Invalid(
                "a rolling update needs --image or --user-data: nothing would change".into(),
            ));
        }
        if self.group.trim().is_empty() {
            return Err(StackError::Invalid("the group name is empty".into()));
        }
        Ok(())
    }
}

/// New instances of one batch, handed to the [`BatchCheck`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// 1-based batch number.
    pub number: usize,
    /// Batches in all.
    pub of: usize,
    /// The instances this batch launched.
    pub instances: Vec<NewInstance>,
    /// The target groups of the group (their health judges the batch with
    /// [`TargetHealthBatchCheck`]).
    pub target_groups: Vec<String>,
}

/// An instance launched by the update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInstance {
    /// Its id.
    pub id: String,
    /// Its private IP address, when EC2 reports one.
    pub private_ip: Option<String>,
}

/// What a [`BatchCheck`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchVerdict {
    /// The batch may stay.
    Pass,
    /// The batch fails: the update rolls back. The text says why.
    Fail(String),
}

/// The verification after each batch: the step plugs [`HealthBatchCheck`]
/// (HTTP probes on the new instances), tests plug their own.
#[allow(async_fn_in_trait)]
pub trait BatchCheck {
    /// Whether this check can judge batches of `group`, whose target groups
    /// are `target_groups`; asked before any change (`Err`: exit 2).
    fn accepts(&self, group: &str, target_groups: &[String]) -> Result<(), StackError> {
        let _ = (group, target_groups);
        Ok(())
    }

    /// Judges the new instances of `batch`. `Err` stops the update (no rollback).
    async fn check(
        &self,
        batch: &Batch,
        cancel: &CancellationToken,
    ) -> Result<BatchVerdict, StackError>;
}

/// A check from a plain function (tests, or a step without probes).
#[derive(Debug, Clone, Copy)]
pub struct FnCheck<F>(pub F);

impl<F: Fn(&Batch) -> BatchVerdict> BatchCheck for FnCheck<F> {
    async fn check(
        &self,
        batch: &Batch,
        _: &CancellationToken,
    ) -> Result<BatchVerdict, StackError> {
        Ok((self.0)(batch))
    }
}

/// The health engine on the new instances: each instance's private IP
/// becomes a URL by `url` (scheme, service port, health path), probed and
/// judged by `policy` (see [`crate::health::policy::verify`]). Anything but
/// a healthy verdict fails the batch; an instance without a private IP too.
#[derive(Debug)]
pub struct HealthBatchCheck {
    /// How to probe.
    pub probe: HttpProbe,
    /// How to judge.
    pub policy: ProbePolicy,
    /// How an instance address becomes a URL.
    pub url: UrlTemplate,
}

impl BatchCheck for HealthBatchCheck {
    async fn check(
        &self,
        batch: &Batch,
        cancel: &CancellationToken,
    ) -> Result<BatchVerdict, StackError> {
        let mut urls = Vec::new();
        for instance in &batch.instances {
            let Some(ip) = &instance.private_ip else {
                return Ok(BatchVerdict::Fail(format!(
                    "instance {} has no private IP to probe",
                    instance.id
                )));
            };
            urls.push(endpoint_url(ip, &self.url).map_err(StackError::Invalid)?);
        }
        let report = policy::verify(&urls, &self.probe, &self.policy, cancel)
            .await
            .map_err(|_| StackError::Interrupted("interrupted while verifying a batch".into()))?;
        Ok(if report.verdict == Health::Healthy {
            BatchVerdict::Pass
        } else {
            BatchVerdict::Fail(report.summary)
        })
    }
}

/// The load balancer's view of the new instances (`--batch-check
/// target-health`, for a runner that cannot reach their private addresses):
/// each must be healthy in every target group of the group, as
/// DescribeTargetHealth reports it (one call per target group).
#[derive(Debug, Clone)]
pub struct TargetHealthBatchCheck {
    /// The ELBv2 client.
    pub client: aws_sdk_elasticloadbalancingv2::Client,
}

impl BatchCheck for TargetHealthBatchCheck {
    fn accepts(&self, group: &str, target_groups: &[String]) -> Result<(), StackError> {
        if target_groups.is_empty() {
            return Err(StackError::Invalid(format!(
                "--batch-check target-health judges new instances by their target groups, and \
                 group {group} has none: attach them, or use --batch-check probes"
            )));
        }
        Ok(())
    }

    async fn check(
        &self,
        batch: &Batch,
        _: &CancellationToken,
    ) -> Result<BatchVerdict, StackError> {
        let mut failed = Vec::new();
        for arn in &batch.target_groups {
            let health = elbv2::group_health(&self.client, arn).await?;
            let name = arn.split('/').nth(1).unwrap_or(arn);
            for instance in &batch.instances {
                match health.iter().find(|(t, _)| t.id == instance.id) {
                    Some((_, h)) if h.is_serving() => {}
                    Some((_, h)) => {
                        failed.push(format!("{} in {name}: {}", instance.id, h.describe()));
                    }
                    None => {
                        failed.push(format!("{} is not registered in {name}", instance.id));
                    }
                }
            }
        }
        Ok(if failed.is_empty() {
            BatchVerdict::Pass
        } else {
            BatchVerdict::Fail(failed.join("; "))
        })
    }
}

/// Where a rolling update is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollingStatus {
    /// Batches are being replaced.
    InProgress,
    /// Every batch passed; waiting for `--confirm` or `--rollback`.
    Finished,
    /// Confirmed: the new version stays.
    Confirmed,
    /// The previous version is back.
    RolledBack,
    /// Stopped by a time-out or a provider error; `--rollback` reverts it.
    Failed,
    /// Stopped by a signal; `--rollback` reverts it.
    Interrupted,
    /// Going back to the previous version after a failed batch (or
    /// `--rollback`); when it stopped half-way, `--rollback` finishes it.
    RollingBack,
}

/// The progress of a rolling update, kept in `stacks.<stack>.rolling`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollingProgress {
    /// The group.
    pub group: String,
    /// Its launch template.
    pub launch_template_id: String,
    /// The version the group ran before (a number).
    pub previous_version: String,
    /// The version the update created.
    pub new_version: String,
    /// The application version rolled out.
    pub version: String,
    /// The image of the new version, when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// sha256 of the new user-data, when it changed (never the body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_sha256: Option<String>,
    /// Desired capacity before the update.
    pub desired_before: i32,
    /// Max size before the update.
    pub max_before: i32,
    /// Instances replaced per batch.
    pub batch_size: usize,
    /// Whether batches start new instances first.
    pub start_first: bool,
    /// Batches in all.
    pub batches: usize,
    /// Batches replaced and verified.
    pub batches_done: usize,
    /// The instances of the group when the update began.
    pub original: Vec<String>,
    /// The instances the update launched.
    pub launched: Vec<String>,
    /// Those of them whose batch passed its check and is recorded (a run
    /// that continues a stopped one checks the others again).
    #[serde(default)]
    pub checked: Vec<String>,
    /// Start-first: the desired capacity before the batch in flight raised
    /// it (saved before the raise); none between batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raised_from: Option<i32>,
    /// Where it is.
    pub status: RollingStatus,
    /// Why it stopped, when it did not finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it began.
    pub started_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// What a rolling command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RollingReport {
    /// The stack name.
    pub stack: String,
    /// The group.
    pub group: String,
    /// The version the group runs now.
    pub launch_template_version: String,
    /// Its status now.
    pub status: RollingStatus,
    /// Batches replaced and verified.
    pub batches_done: usize,
    /// The group's instances now.
    pub instances: Vec<String>,
    /// The changes made, in order.
    pub changes: Vec<String>,
}

/// Errors of the rolling commands.
#[derive(Debug, thiserror::Error)]
pub enum RollingError {
    /// A stack error (bad input, AWS, time-out, rollback, refusal, signal).
    #[error(transparent)]
    Stack(#[from] StackError),
    /// The state file could not be read.
    #[error("cannot read the state file: {0}")]
    StateRead(#[source] StateError),
    /// The state file could not be written.
    #[error("cannot save the state file: {0}")]
    StateWrite(#[source] StateError),
}

impl ExitStatus for RollingError {
    fn exit_code(&self) -> Code {
        match self {
            Self::Stack(e) => e.exit_code(),
            Self::StateRead(_) => Code::Usage,
            Self::StateWrite(_) => Code::Provider,
        }
    }
}

/// The rolling progress of `stack` in the state, if any.
pub fn progress(doc: &StateDocument, stack: &str) -> Option<RollingProgress> {
    doc.stacks
        .get(stack)
        .and_then(|s| s.extra.get(PROGRESS_KEY))
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// Runs a rolling update of `settings.group` (see the module docs).
pub async fn update<C: BatchCheck>(
    clients: &AsgClients,
    settings: &RollingSettings,
    check: &C,
    file: &StateFile,
    wait: &Wait,
) -> Result<RollingReport, RollingError> {
    settings.check()?;
    let doc = file.load().await.map_err(RollingError::StateRead)?;
    let found = resumable(&doc, settings)?;
    let mut run = Run {
        clients,
        file,
        doc,
        stack: settings.stack.clone(),
        wait,
        poll: settings.poll,
        changes: Vec::new(),
    };
    let mut p = match found {
        Found::Done(p) => {
            tracing::info!(
                "the rolling update of {} to {} already finished; nothing to do",
                p.group,
                p.version
            );
            return run.report(&p).await;
        }
        Found::Stopped(mut p) => {
            run.resume(&mut p).await?;
            p
        }
        Found::None => run.begin(settings, check).await?,
    };
    if let Err(stop) = run.batches(&mut p, settings, check).await {
        return Err(run.stopped(&mut p, stop).await);
    }
    run.finish(&mut p).await
}

/// What the state holds of an earlier update of the stack.
enum Found {
    /// Nothing to continue: a new update begins.
    None,
    /// This same update, stopped (a killed or interrupted run, a time-out, a
    /// provider error): it continues where it is.
    Stopped(RollingProgress),
    /// This same update, already finished: nothing to do.
    Done(RollingProgress),
}

/// Whether `settings` continue an update the state holds: the same group,
/// application version, image and user-data. Any other update of the stack
/// that is neither confirmed nor rolled back is refused (exit 5).
fn resumable(doc: &StateDocument, settings: &RollingSettings) -> Result<Found, StackError> {
    let Some(p) = progress(doc, &settings.stack) else {
        return Ok(Found::None);
    };
    let same = p.group == settings.group
        && p.version == settings.version
        && p.image == settings.image
        && p.user_data_sha256 == settings.user_data.as_deref().map(sha256_hex);
    match p.status {
        RollingStatus::Confirmed | RollingStatus::RolledBack => Ok(Found::None),
        RollingStatus::Finished if same => Ok(Found::Done(p)),
        RollingStatus::InProgress | RollingStatus::Failed | RollingStatus::Interrupted if same => {
            Ok(Found::Stopped(p))
        }
        _ => {
            refuse_unsettled(doc, &settings.stack)?;
            Ok(Found::None)
        }
    }
}

fn sha256_hex(text: &str) -> String {
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// Refuses (exit 5) while the state holds an update of `stack` that is
/// neither confirmed nor rolled back.
fn refuse_unsettled(doc: &StateDocument, stack: &str) -> Result<(), StackError> {
    match progress(doc, stack) {
        Some(p)
            if !matches!(
                p.status,
                RollingStatus::Confirmed | RollingStatus::RolledBack
            ) =>
        {
            Err(StackError::Refused(format!(
                "stack {stack} has a rolling update of {} to launch template version {} that is {}; \
                 run with --confirm or --rollback first",
                p.group,
                p.new_version,
                status_word(p.status)
            )))
        }
        _ => Ok(()),
    }
}

/// Every change [`update`] would make, in order, without making any
/// (`--dry-run`); reads the group and its launch template only.
pub async fn plan(
    clients: &AsgClients,
    settings: &RollingSettings,
) -> Result<Vec<String>, RollingError> {
    settings.check()?;
    let group = describe_group(&clients.autoscaling, &settings.group).await?;
    let (template_id, given) = group.template.clone().ok_or_else(|| {
        StackError::Invalid(format!("group {} has no launch template", settings.group))
    })?;
    let previous = resolve_version(&clients.ec2, &template_id, given.as_deref()).await?;
    let mut what = Vec::new();
    if let Some(image) = &settings.image {
        what.push(format!("image {image}"));
    }
    if settings.user_data.is_some() {
        what.push("new user-data".to_owned());
    }
    let mut plan = vec![
        format!(
            "create launch template {template_id} version from version {previous} with {}",
            what.join(" and ")
        ),
        format!("point group {} at the new version", settings.group),
    ];
    let old: Vec<String> = group.live().map(|i| i.id.clone()).collect();
    let batches = old.len().div_ceil(settings.batch_size);
    for (n, batch) in old.chunks(settings.batch_size).enumerate() {
        let k = batch.len();
        plan.push(if settings.start_first {
            format!(
                "batch {}/{batches}: raise desired capacity to {}{}, wait for {k} new instance(s) \
                 to be InService and serving, check them, terminate {} with desired capacity decremented",
                n + 1,
                group.desired + i32::try_from(k).unwrap_or(0),
                if group.desired + i32::try_from(k).unwrap_or(0) > group.max {
                    " (and max size with it)"
                } else {
                    ""
                },
                batch.join(", ")
            )
        } else {
            format!(
                "batch {}/{batches}: terminate {} (replaced by the group), wait for {k} new \
                 instance(s) to be InService and serving, check them",
                n + 1,
                batch.join(", ")
            )
        });
    }
    plan.push(format!(
        "record the update as finished: --confirm keeps it, --rollback returns {} to version {previous}",
        settings.group
    ));
    Ok(plan)
}

/// Marks the finished update of `stack` confirmed (`--confirm`): the new
/// version stays, the way back is forgotten. Changes nothing at AWS.
/// Refused (exit 5) unless the update is finished.
pub async fn confirm(file: &StateFile, stack: &str) -> Result<RollingReport, RollingError> {
    let mut doc = file.load().await.map_err(RollingError::StateRead)?;
    let mut p = confirmable(&doc, stack)?;
    p.status = RollingStatus::Confirmed;
    p.updated_at = Utc::now();
    let entry = doc.stack_mut(stack);
    entry.version = Some(p.version.clone());
    entry.extra.insert(
        PROGRESS_KEY.to_owned(),
        serde_json::to_value(&p).unwrap_or_default(),
    );
    doc.record(
        JournalEntry::new(STEP, "rolling-confirmed", Outcome::Ok)
            .detail(format!(
                "confirmed {} on launch template version {} (previous version {} no longer \
                 a rollback target)",
                p.group, p.new_version, p.previous_version
            ))
            .with("stack", stack),
    );
    file.save(&mut doc)
        .await
        .map_err(RollingError::StateWrite)?;
    Ok(RollingReport {
        stack: stack.to_owned(),
        group: p.group.clone(),
        launch_template_version: p.new_version.clone(),
        status: p.status,
        batches_done: p.batches_done,
        instances: Vec::new(),
        changes: vec![format!(
            "confirmed launch template version {}",
            p.new_version
        )],
    })
}

/// Reverts the unconfirmed update of `stack` (`--rollback`): finished,
/// failed, interrupted or still marked in progress by a killed run. Refused
/// (exit 5) when there is none.
pub async fn rollback(
    clients: &AsgClients,
    file: &StateFile,
    stack: &str,
    poll: Backoff,
    wait: &Wait,
) -> Result<RollingReport, RollingError> {
    let doc = file.load().await.map_err(RollingError::StateRead)?;
    let mut p = revertible(&doc, stack)?;
    let mut run = Run {
        clients,
        file,
        doc,
        stack: stack.to_owned(),
        wait,
        poll,
        changes: Vec::new(),
    };
    p.message = Some("--rollback".to_owned());
    run.revert(&mut p).await?;
    run.report(&p).await
}

/// The finished update of `stack` that `confirm` would keep.
fn confirmable(doc: &StateDocument, stack: &str) -> Result<RollingProgress, RollingError> {
    let p = progress(doc, stack).ok_or_else(|| {
        StackError::Refused(format!("stack {stack} has no rolling update to confirm"))
    })?;
    if p.status != RollingStatus::Finished {
        return Err(StackError::Refused(format!(
            "the rolling update of stack {stack} is {}; only a finished update can be confirmed",
            status_word(p.status)
        ))
        .into());
    }
    Ok(p)
}

/// The update of `stack` that `rollback` would revert.
fn revertible(doc: &StateDocument, stack: &str) -> Result<RollingProgress, RollingError> {
    let p = progress(doc, stack).ok_or_else(|| {
        StackError::Refused(format!("stack {stack} has no rolling update to roll back"))
    })?;
    if matches!(
        p.status,
        RollingStatus::Confirmed | RollingStatus::RolledBack
    ) {
        return Err(StackError::Refused(format!(
            "the rolling update of stack {stack} is {}; there is nothing to roll back",
            status_word(p.status)
        ))
        .into());
    }
    Ok(p)
}

/// What `confirm` would do (a dry run): refuses as `confirm` does, changes nothing.
pub async fn confirm_plan(file: &StateFile, stack: &str) -> Result<Vec<String>, RollingError> {
    let doc = file.load().await.map_err(RollingError::StateRead)?;
    let p = confirmable(&doc, stack)?;
    Ok(vec![format!(
        "record the rolling update of group {} as confirmed on launch template version {} \
         (previous version {} no longer a rollback target)",
        p.group, p.new_version, p.previous_version
    )])
}

/// What `rollback` would do (a dry run): refuses as `rollback` does, changes nothing.
pub async fn rollback_plan(file: &StateFile, stack: &str) -> Result<Vec<String>, RollingError> {
    let doc = file.load().await.map_err(RollingError::StateRead)?;
    let p = revertible(&doc, stack)?;
    Ok(vec![
        format!(
            "point group {} back at launch template version {} (from {})",
            p.group, p.previous_version, p.new_version
        ),
        format!(
            "replace the instances the update launched, {} at a time, and wait for their \
             replacements",
            p.batch_size.max(1)
        ),
        format!("record the rolling update of stack {stack} as rolled back"),
    ])
}

fn status_word(s: RollingStatus) -> &'static str {
    match s {
        RollingStatus::InProgress => "in progress",
        RollingStatus::Finished => "finished but not confirmed",
        RollingStatus::Confirmed => "confirmed",
        RollingStatus::RolledBack => "rolled back",
        RollingStatus::Failed => "failed",
        RollingStatus::Interrupted => "interrupted",
        RollingStatus::RollingBack => "rolling back",
    }
}

/// Why the batches stopped.
enum Stop {
    /// A batch failed its check: roll back.
    Failed(String),
    /// Anything else: stop where we are.
    Error(RollingError),
}

impl<E: Into<RollingError>> From<E> for Stop {
    fn from(e: E) -> Self {
        Self::Error(e.into())
    }
}

impl From<ProviderError> for RollingError {
    fn from(e: ProviderError) -> Self {
        Self::Stack(StackError::Provider(e))
    }
}

struct Run<'a> {
    clients: &'a AsgClients,
    file: &'a StateFile,
    doc: StateDocument,
    stack: String,
    wait: &'a Wait,
    poll: Backoff,
    changes: Vec<String>,
}

impl Run<'_> {
    async fn save(&mut self, p: &mut RollingProgress) -> Result<(), RollingError> {
        p.updated_at = Utc::now();
        let value = serde_json::to_value(&*p).unwrap_or_default();
        self.doc
            .stack_mut(&self.stack)
            .extra
            .insert(PROGRESS_KEY.to_owned(), value);
        self.file
            .save(&mut self.doc)
            .await
            .map_err(RollingError::StateWrite)
    }

    async fn journal(
        &mut self,
        p: &mut RollingProgress,
        entry: JournalEntry,
    ) -> Result<(), RollingError> {
        self.doc.record(
            entry
                .with("stack", self.stack.as_str())
                .with("group", p.group.as_str())
                .with("batches_done", p.batches_done),
        );
        self.save(p).await
    }

    /// Creates the new launch template version from the version the group
    /// runs (the group moves to it with the first batch) and records the
    /// update as started.
    ///
    /// A run killed after the version was made and before the state recorded
    /// it left that version behind: it is found by its description (and on
    /// AWS the client token makes the create itself idempotent), not made twice.
    async fn begin<C: BatchCheck>(
        &mut self,
        settings: &RollingSettings,
        check: &C,
    ) -> Result<RollingProgress, RollingError> {
        let clients = self.clients;
        let group = describe_group(&clients.autoscaling, &settings.group).await?;
        let (template_id, given_version) = group.template.clone().ok_or_else(|| {
            StackError::Invalid(format!(
                "group {} has no launch template (launch configurations and mixed instances \
                 policies are not rolled)",
                settings.group
            ))
        })?;
        check.accepts(&settings.group, &group.target_groups)?;
        let mut previous =
            resolve_version(&clients.ec2, &template_id, given_version.as_deref()).await?;
        let original: Vec<String> = group.live().map(|i| i.id.clone()).collect();
        let batches = original.len().div_ceil(settings.batch_size);

        let made = Made::new(settings, &template_id);
        // From `previous` itself: a group that names `$Latest` resolves to
        // the version a stopped run made.
        let found = find_version(&clients.ec2, &template_id, &previous, &made).await?;
        let new_version = if let Some((found, source)) = found {
            self.changes.push(format!(
                "found launch template {template_id} version {found}, made from version \
                 {source} for this same update before (by a run that stopped, or one \
                 rolled back)"
            ));
            previous = source;
            found
        } else {
            let created =
                create_version(&clients.ec2, &template_id, &previous, settings, &made).await?;
            self.changes.push(format!(
                "created launch template {template_id} version {created} from version {previous}"
            ));
            created
        };

        let now = Utc::now();
        let mut p = RollingProgress {
            group: settings.group.clone(),
            launch_template_id: template_id,
            previous_version: previous,
            new_version,
            version: settings.version.clone(),
            image: settings.image.clone(),
            user_data_sha256: settings.user_data.as_deref().map(sha256_hex),
            desired_before: group.desired,
            max_before: group.max,
            batch_size: settings.batch_size,
            start_first: settings.start_first,
            batches,
            batches_done: 0,
            original,
            launched: Vec::new(),
            checked: Vec::new(),
            raised_from: None,
            status: RollingStatus::InProgress,
            message: None,
            started_at: now,
            updated_at: now,
        };
        let detail = format!(
            "rolling {} from launch template version {} to {} in {batches} batch(es) of {} ({})",
            p.group,
            p.previous_version,
            p.new_version,
            p.batch_size,
            if p.start_first {
                "start-first"
            } else {
                "stop-first"
            }
        );
        self.journal(
            &mut p,
            JournalEntry::new(STEP, "rolling-started", Outcome::Ok).detail(detail),
        )
        .await?;
        Ok(p)
    }

    /// Continues an update a run left stopped (killed, interrupted, timed
    /// out): recorded, then the batches go on from what the group shows.
    async fn resume(&mut self, p: &mut RollingProgress) -> Result<(), RollingError> {
        let was = status_word(p.status);
        p.status = RollingStatus::InProgress;
        p.message = None;
        self.changes.push(format!(
            "continued the rolling update of {} to launch template version {} ({}/{} batch(es) done)",
            p.group, p.new_version, p.batches_done, p.batches
        ));
        let detail = format!(
            "continuing the rolling update of {} to launch template version {} where a run left \
             it ({was}, {}/{} batch(es) done)",
            p.group, p.new_version, p.batches_done, p.batches
        );
        self.journal(
            p,
            JournalEntry::new(STEP, "rolling-resumed", Outcome::Ok).detail(detail),
        )
        .await
    }

    /// What the update ends with once the batches stopped: a batch that
    /// failed its check is rolled back at once; anything else leaves the
    /// update where it is, recorded for `--rollback`.
    async fn stopped(&mut self, p: &mut RollingProgress, stop: Stop) -> RollingError {
        match stop {
            Stop::Failed(reason) => self.roll_back(p, reason).await,
            Stop::Error(e) => self.halt(p, e).await,
        }
    }

    /// Reverts the update after a failed batch: exit 4 once reverted, else
    /// the error that stopped the rollback (recorded).
    async fn roll_back(&mut self, p: &mut RollingProgress, reason: String) -> RollingError {
        tracing::warn!("{reason}; rolling back");
        p.message = Some(reason.clone());
        if let Err(e) = self.revert(p).await {
            p.status = RollingStatus::RollingBack;
            p.message = Some(format!(
                "{reason}; the rollback stopped: {e}; run with --rollback to finish it"
            ));
            let detail = p.message.clone().unwrap_or_default();
            if let Err(unsaved) = self
                .journal(
                    p,
                    JournalEntry::new(STEP, "rolling-rollback", Outcome::Failed).detail(detail),
                )
                .await
            {
                return unsaved;
            }
            return e;
        }
        StackError::RolledBack(format!(
            "{reason}; rolled back: group {} is on launch template version {} again and the {} \
             instance(s) the update launched are replaced",
            p.group,
            p.previous_version,
            p.launched.len()
        ))
        .into()
    }

    /// Records the update as failed (or interrupted) by `e`, for `--rollback`.
    async fn halt(&mut self, p: &mut RollingProgress, e: RollingError) -> RollingError {
        let status = match &e {
            RollingError::Stack(StackError::Interrupted(_)) => RollingStatus::Interrupted,
            _ => RollingStatus::Failed,
        };
        p.status = status;
        p.message = Some(format!(
            "{e}; run the same update again to continue it, or with --rollback to revert"
        ));
        let outcome = if status == RollingStatus::Interrupted {
            Outcome::Interrupted
        } else {
            Outcome::Failed
        };
        let detail = p.message.clone().unwrap_or_default();
        if let Err(unsaved) = self
            .journal(
                p,
                JournalEntry::new(STEP, "rolling-stopped", outcome).detail(detail),
            )
            .await
        {
            return unsaved;
        }
        e
    }

    /// Every batch passed: max size back as it was, and the update
    /// recorded as finished, awaiting `--confirm` or `--rollback`.
    async fn finish(&mut self, p: &mut RollingProgress) -> Result<RollingReport, RollingError> {
        let asg = &self.clients.autoscaling;
        let after = describe_group(asg, &p.group).await?;
        if after.max != p.max_before {
            set_capacity(asg, &p.group, None, Some(p.max_before)).await?;
            self.changes.push(format!(
                "restored group {} max size {}",
                p.group, p.max_before
            ));
        }
        p.status = RollingStatus::Finished;
        let detail = format!(
            "every batch of {} passed; {} on launch template version {}; --confirm keeps it, \
             --rollback reverts to version {}",
            p.group, p.version, p.new_version, p.previous_version
        );
        self.journal(
            p,
            JournalEntry::new(STEP, "rolling-finished", Outcome::Ok).detail(detail),
        )
        .await?;
        self.report(p).await
    }

    /// Points the group at the new version, then replaces the instances
    /// present at the start, batch after batch. Each round starts from what
    /// the group shows, so a run that continues a stopped one picks up a
    /// batch left half-done: a start-first batch already raised is not
    /// raised again (see [`Self::start_first`]); stop-first, new instances
    /// not yet checked (launched for a stopped run, or replacements the
    /// group is still launching) are awaited and checked before another old
    /// one goes. A batch's new instances count as checked only once the
    /// batch is recorded, so those of a batch cut short are checked again.
    async fn batches<C: BatchCheck>(
        &mut self,
        p: &mut RollingProgress,
        settings: &RollingSettings,
        check: &C,
    ) -> Result<(), Stop> {
        let asg = &self.clients.autoscaling;
        set_template(asg, &p.group, &p.launch_template_id, &p.new_version).await?;
        self.changes.push(format!(
            "pointed group {} at launch template version {}",
            p.group, p.new_version
        ));
        let original: BTreeSet<String> = p.original.iter().cloned().collect();
        loop {
            let group = describe_group(asg, &p.group).await?;
            let old: Vec<String> = p
                .original
                .iter()
                .filter(|id| {
                    group
                        .live()
                        .any(|i| &i.id == *id && i.version.as_deref() != Some(&p.new_version))
                })
                .cloned()
                .collect();
            if !p.start_first {
                let new: Vec<&GroupInstance> =
                    group.live().filter(|i| !original.contains(&i.id)).collect();
                let checked = new.iter().filter(|i| p.checked.contains(&i.id)).count();
                let live = group.live().count();
                let missing = usize::try_from(group.desired)
                    .unwrap_or(0)
                    .saturating_sub(live);
                let in_flight = new.len() - checked + missing;
                if in_flight > 0 {
                    self.catch_up(p, check, &group, in_flight).await?;
                    continue;
                }
            }
            if old.is_empty() {
                return Ok(());
            }
            if p.batches_done > 0 && !settings.batch_interval.is_zero() {
                tracing::info!(
                    "pausing {} before the next batch",
                    short(settings.batch_interval)
                );
                self.sleep(settings.batch_interval).await?;
            }
            self.batch(p, check, &group, &old).await?;
        }
    }

    /// Replaces the first old instances of `old` (a batch) by new ones,
    /// checks those, and records the batch.
    async fn batch<C: BatchCheck>(
        &mut self,
        p: &mut RollingProgress,
        check: &C,
        group: &GroupView,
        old: &[String],
    ) -> Result<(), Stop> {
        let number = p.batches_done + 1;
        let (batch, new) = if p.start_first {
            self.start_first(p, check, group, old).await?
        } else {
            self.stop_first(p, check, group, old).await?
        };
        p.batches_done += 1;
        p.raised_from = None;
        let detail = format!(
            "batch {number}/{}: {} replaced by {}",
            p.batches.max(number),
            batch.join(", "),
            new.join(", ")
        );
        self.journal(
            p,
            JournalEntry::new(STEP, "rolling-batch", Outcome::Ok).detail(detail),
        )
        .await?;
        Ok(())
    }

    /// The instances the update has not launched: the original ones, and
    /// those whose batch is checked. Any other new instance in the group is
    /// a fresh one for the batch at hand.
    fn known(p: &RollingProgress) -> BTreeSet<String> {
        p.original.iter().chain(&p.checked).cloned().collect()
    }

    /// Start-first: desired (and max, when needed) rises by the batch; once
    /// the new instances are judged by the target groups and pass the check,
    /// the old ones go with desired decremented. A batch a stopped run had
    /// raised already (`raised_from`) is not raised again: it is as large as
    /// that raise. Returns the old ids and the new.
    async fn start_first<C: BatchCheck>(
        &mut self,
        p: &mut RollingProgress,
        check: &C,
        group: &GroupView,
        old: &[String],
    ) -> Result<(Vec<String>, Vec<String>), Stop> {
        let asg = &self.clients.autoscaling;
        let raised = p
            .raised_from
            .map_or(0, |from| usize::try_from(group.desired - from).unwrap_or(0));
        let k = if raised > 0 { raised } else { p.batch_size }.min(old.len());
        let batch = &old[..k];
        let number = p.batches_done + 1;
        tracing::info!(
            "batch {number}/{}: replacing {} (start-first)",
            p.batches.max(number),
            batch.join(", ")
        );
        let desired = if raised > 0 {
            group.desired
        } else {
            group.desired + i32::try_from(k).unwrap_or(i32::MAX)
        };
        if group.desired < desired {
            p.raised_from = Some(group.desired);
            self.save(p).await?;
            let max = (desired > group.max).then_some(desired);
            set_capacity(asg, &p.group, Some(desired), max).await?;
            self.changes.push(format!(
                "raised group {} desired capacity to {desired}{}",
                p.group,
                max.map(|m| format!(" and max size to {m}"))
                    .unwrap_or_default()
            ));
        }
        let new = self
            .await_capacity(p, desired, &Self::known(p), &[], k)
            .await?;
        let ids = self
            .verify(p, check, number, &group.target_groups, new)
            .await?;
        for id in batch {
            terminate(asg, id, true).await?;
            self.changes
                .push(format!("terminated {id} (desired capacity decremented)"));
        }
        Ok((batch.to_vec(), ids))
    }

    /// Stop-first: the old instances go without decrement, the group
    /// launches their replacements, which must be judged by the target
    /// groups and pass the check. Returns the old ids and the new.
    async fn stop_first<C: BatchCheck>(
        &mut self,
        p: &mut RollingProgress,
        check: &C,
        group: &GroupView,
        old: &[String],
    ) -> Result<(Vec<String>, Vec<String>), Stop> {
        let asg = &self.clients.autoscaling;
        let batch = &old[..p.batch_size.min(old.len())];
        let number = p.batches_done + 1;
        tracing::info!(
            "batch {number}/{}: replacing {} (stop-first)",
            p.batches.max(number),
            batch.join(", ")
        );
        for id in batch {
            terminate(asg, id, false).await?;
            self.changes
                .push(format!("terminated {id} (to be replaced)"));
        }
        let new = self
            .await_capacity(p, group.desired, &Self::known(p), batch, batch.len())
            .await?;
        let ids = self
            .verify(p, check, number, &group.target_groups, new)
            .await?;
        Ok((batch.to_vec(), ids))
    }

    /// Stop-first, continuing a stopped run (or after the group replaced an
    /// instance by itself): `in_flight` new instances are not checked yet,
    /// launched or still to be; they are awaited and checked as a batch.
    async fn catch_up<C: BatchCheck>(
        &mut self,
        p: &mut RollingProgress,
        check: &C,
        group: &GroupView,
        in_flight: usize,
    ) -> Result<(), Stop> {
        let number = p.batches_done + 1;
        tracing::info!(
            "batch {number}/{}: {in_flight} new instance(s) not checked yet",
            p.batches.max(number)
        );
        let new = self
            .await_capacity(p, group.desired, &Self::known(p), &[], in_flight)
            .await?;
        let ids = self
            .verify(p, check, number, &group.target_groups, new)
            .await?;
        p.batches_done += 1;
        let detail = format!(
            "batch {number}/{}: {} checked (replacements of instances a stopped run terminated)",
            p.batches.max(number),
            ids.join(", ")
        );
        self.journal(
            p,
            JournalEntry::new(STEP, "rolling-batch", Outcome::Ok).detail(detail),
        )
        .await?;
        Ok(())
    }

    /// Records the batch's new instances as launched, runs the check on
    /// them, and notes them checked when they pass. Returns their ids.
    async fn verify<C: BatchCheck>(
        &mut self,
        p: &mut RollingProgress,
        check: &C,
        number: usize,
        target_groups: &[String],
        new: Vec<NewInstance>,
    ) -> Result<Vec<String>, Stop> {
        let ids = new_ids(&new);
        for id in &ids {
            if !p.launched.contains(id) {
                p.launched.push(id.clone());
            }
        }
        self.save(p).await?;
        let batch = Batch {
            number,
            of: p.batches.max(number),
            instances: new,
            target_groups: target_groups.to_vec(),
        };
        match check.check(&batch, &self.wait.cancel).await? {
            BatchVerdict::Pass => {
                tracing::info!(
                    "batch {number}/{} passed its check ({})",
                    batch.of,
                    ids.join(", ")
                );
                p.checked.extend(ids.iter().cloned());
                Ok(ids)
            }
            BatchVerdict::Fail(why) => Err(Stop::Failed(format!(
                "batch {number}/{} ({}) failed its check: {why}",
                batch.of,
                ids.join(", ")
            ))),
        }
    }

    /// Waits until the group has `desired` live instances InService and
    /// Healthy, none of them in `gone`, and at least `fresh` of them unknown
    /// before, each judged by every target group of the group (healthy, or
    /// found unhealthy: the check then decides; not still `initial`);
    /// returns the unknown ones.
    async fn await_capacity(
        &mut self,
        p: &RollingProgress,
        desired: i32,
        known: &BTreeSet<String>,
        gone: &[String],
        fresh: usize,
    ) -> Result<Vec<NewInstance>, RollingError> {
        let what = format!("{fresh} new instance(s) of {} to be InService", p.group);
        let mut pace = Pace::new(what.clone(), self.wait.deadline);
        let mut attempt = 0;
        loop {
            let group = describe_group(&self.clients.autoscaling, &p.group).await?;
            let ready: Vec<&GroupInstance> = group
                .instances
                .iter()
                .filter(|i| i.lifecycle == "InService" && i.health == "Healthy")
                .filter(|i| !gone.contains(&i.id))
                .collect();
            let new: Vec<String> = ready
                .iter()
                .filter(|i| !known.contains(&i.id))
                .map(|i| i.id.clone())
                .collect();
            let pending = group
                .instances
                .iter()
                .filter(|i| i.lifecycle.starts_with("Pending"))
                .count();
            let mut status = format!(
                "{}/{desired} InService, {} new, {pending} pending",
                ready.len(),
                new.len()
            );
            if usize::try_from(desired).unwrap_or(0) <= ready.len() && new.len() >= fresh {
                let judged = self.judged(&group.target_groups, &new).await?;
                if judged.len() == new.len() {
                    let instances = self.addresses(&new).await?;
                    tracing::info!("{} ready after {}", what, short(pace.elapsed()));
                    return Ok(instances);
                }
                status = format!(
                    "{status}, {}/{} judged by the target groups",
                    judged.len(),
                    new.len()
                );
            }
            pace.tick(&status);
            match wait::sleep(
                self.poll.delay(attempt),
                self.wait.deadline,
                &self.wait.cancel,
            )
            .await
            {
                Ok(()) => attempt += 1,
                Err(WaitEnd::Deadline) => {
                    return Err(StackError::Timeout(format!(
                        "the deadline passed while waiting for {what} ({status})"
                    ))
                    .into())
                }
                Err(WaitEnd::Cancelled) => {
                    return Err(StackError::Interrupted(format!(
                        "interrupted while waiting for {what}"
                    ))
                    .into())
                }
            }
        }
    }

    /// The instances of `ids` that every target group has judged (healthy,
    /// unhealthy or unavailable; not `initial`, draining or unregistered).
    async fn judged(
        &self,
        target_groups: &[String],
        ids: &[String],
    ) -> Result<Vec<String>, RollingError> {
        let mut serving: Vec<String> = ids.to_vec();
        for arn in target_groups {
            let tg = elbv2::describe_target_group(&self.clients.elbv2, arn).await?;
            let port = tg.port.unwrap_or(80);
            let mut still = Vec::new();
            for id in serving {
                let target = elbv2::Target {
                    id: id.clone(),
                    port,
                    availability_zone: None,
                };
                if elbv2::target_health(&self.clients.elbv2, arn, &target)
                    .await?
                    .is_judged()
                {
                    still.push(id);
                }
            }
            serving = still;
        }
        Ok(serving)
    }

    async fn addresses(&self, ids: &[String]) -> Result<Vec<NewInstance>, RollingError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let found = crate::aws::ec2::describe_instances(
            &self.clients.ec2,
            vec![crate::aws::ec2::filter("instance-id", &refs)],
        )
        .await?;
        let ips: BTreeMap<&str, &str> = found
            .iter()
            .filter_map(|i| Some((i.instance_id()?, i.private_ip_address()?)))
            .collect();
        Ok(ids
            .iter()
            .map(|id| NewInstance {
                id: id.clone(),
                private_ip: ips.get(id.as_str()).map(|ip| (*ip).to_owned()),
            })
            .collect())
    }

    async fn sleep(&self, d: Duration) -> Result<(), RollingError> {
        match wait::sleep(d, self.wait.deadline, &self.wait.cancel).await {
            Ok(()) => Ok(()),
            Err(WaitEnd::Deadline) => Err(StackError::Timeout(
                "the deadline passed during the pause between batches".into(),
            )
            .into()),
            Err(WaitEnd::Cancelled) => Err(StackError::Interrupted(
                "interrupted during the pause between batches".into(),
            )
            .into()),
        }
    }

    /// Points the group back at the previous version and replaces every
    /// instance the update launched; max and desired back as before.
    async fn revert(&mut self, p: &mut RollingProgress) -> Result<(), RollingError> {
        let asg = &self.clients.autoscaling;
        // A run stopped from here on must not be continued forward.
        p.status = RollingStatus::RollingBack;
        self.save(p).await?;
        set_template(asg, &p.group, &p.launch_template_id, &p.previous_version).await?;
        self.changes.push(format!(
            "pointed group {} back at launch template version {}",
            p.group, p.previous_version
        ));
        let mut replaced: BTreeSet<String> = BTreeSet::new();
        loop {
            let group = describe_group(asg, &p.group).await?;
            let launched: BTreeSet<&String> = p.launched.iter().collect();
            let original: BTreeSet<&String> = p.original.iter().collect();
            // Launched since the update began (so from the new version, even
            // if still Pending and not yet recorded), or reported on it.
            let newer: Vec<String> = group
                .live()
                .filter(|i| {
                    !replaced.contains(&i.id)
                        && (launched.contains(&i.id)
                            || !original.contains(&i.id)
                            || i.version.as_deref() == Some(p.new_version.as_str()))
                })
                .map(|i| i.id.clone())
                .collect();
            if newer.is_empty() {
                break;
            }
            let batch: Vec<String> = newer.into_iter().take(p.batch_size.max(1)).collect();
            let surplus = usize::try_from(group.desired - p.desired_before).unwrap_or(0);
            let decrement = batch.len().min(surplus);
            for (k, id) in batch.iter().enumerate() {
                let dec = k < decrement;
                terminate(asg, id, dec).await?;
                self.changes.push(format!(
                    "terminated {id} launched by the update{}",
                    if dec {
                        " (desired capacity decremented)"
                    } else {
                        " (to be replaced)"
                    }
                ));
                replaced.insert(id.clone());
            }
            if decrement < batch.len() {
                let desired = group.desired - i32::try_from(decrement).unwrap_or(0);
                let known: BTreeSet<String> =
                    group.instances.iter().map(|i| i.id.clone()).collect();
                let back = self
                    .await_capacity(p, desired, &known, &batch, batch.len() - decrement)
                    .await?;
                replaced.extend(back.into_iter().map(|i| i.id));
            }
        }
        let group = describe_group(asg, &p.group).await?;
        if group.max != p.max_before || group.desired != p.desired_before {
            set_capacity(asg, &p.group, Some(p.desired_before), Some(p.max_before)).await?;
            self.changes.push(format!(
                "restored group {} desired capacity {} and max size {}",
                p.group, p.desired_before, p.max_before
            ));
        }
        p.status = RollingStatus::RolledBack;
        let detail = format!(
            "{} back on launch template version {}: {}",
            p.group,
            p.previous_version,
            p.message.clone().unwrap_or_default()
        );
        self.journal(
            p,
            JournalEntry::new(STEP, "rolling-rollback", Outcome::RolledBack).detail(detail),
        )
        .await
    }

    async fn report(&self, p: &RollingProgress) -> Result<RollingReport, RollingError> {
        let group = describe_group(&self.clients.autoscaling, &p.group).await?;
        Ok(RollingReport {
            stack: self.stack.clone(),
            group: p.group.clone(),
            launch_template_version: group
                .template
                .clone()
                .and_then(|(_, v)| v)
                .unwrap_or_default(),
            status: p.status,
            batches_done: p.batches_done,
            instances: group.live().map(|i| i.id.clone()).collect(),
            changes: self.changes.clone(),
        })
    }
}

fn new_ids(new: &[NewInstance]) -> Vec<String> {
    new.iter().map(|i| i.id.clone()).collect()
}

// ---- the EC2 and Auto Scaling calls -------------------------------------------

/// A group as the rolling strategy sees it.
#[derive(Debug, Clone)]
struct GroupView {
    desired: i32,
    max: i32,
    /// Launch template id and version as the group names it.
    template: Option<(String, Option<String>)>,
    target_groups: Vec<String>,
    instances: Vec<GroupInstance>,
}

#[derive(Debug, Clone)]
struct GroupInstance {
    id: String,
    lifecycle: String,
    health: String,
    version: Option<String>,
}

impl GroupView {
    /// Instances not on their way out.
    fn live(&self) -> impl Iterator<Item = &GroupInstance> {
        self.instances.iter().filter(|i| {
            !i.lifecycle.starts_with("Terminat")
                && !i.lifecycle.starts_with("Detach")
                && i.lifecycle != "Standby"
        })
    }
}

async fn describe_group(
    client: &aws_sdk_autoscaling::Client,
    name: &str,
) -> Result<GroupView, StackError> {
    let out = client
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("autoscaling:DescribeAutoScalingGroups", &e))?;
    let group = out
        .auto_scaling_groups()
        .iter()
        .find(|g| g.auto_scaling_group_name() == Some(name))
        .ok_or_else(|| StackError::Invalid(format!("no Auto Scaling group {name}")))?;
    Ok(GroupView {
        desired: group.desired_capacity().unwrap_or(0),
        max: group.max_size().unwrap_or(0),
        template: group.launch_template().and_then(|t| {
            Some((
                t.launch_template_id()?.to_owned(),
                t.version().map(str::to_owned),
            ))
        }),
        target_groups: group.target_group_arns().to_vec(),
        instances: group
            .instances()
            .iter()
            .map(|i| GroupInstance {
                id: i.instance_id().unwrap_or_default().to_owned(),
                lifecycle: i.lifecycle_state().map_or("", |s| s.as_str()).to_owned(),
                health: i.health_status().unwrap_or_default().to_owned(),
                version: i
                    .launch_template()
                    .and_then(LaunchTemplateSpecification::version)
                    .map(str::to_owned),
            })
            .collect(),
    })
}

/// The version number `given` (`$Latest`, `$Default`, a number, or none) stands for.
async fn resolve_version(
    client: &aws_sdk_ec2::Client,
    template_id: &str,
    given: Option<&str>,
) -> Result<String, StackError> {
    if let Some(v) = given.filter(|v| v.parse::<u64>().is_ok()) {
        return Ok(v.to_owned());
    }
    let out = client
        .describe_launch_templates()
        .launch_template_ids(template_id)
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("ec2:DescribeLaunchTemplates", &e))?;
    let t = out
        .launch_templates()
        .first()
        .ok_or_else(|| StackError::Invalid(format!("no launch template {template_id}")))?;
    let number = if given == Some("$Latest") {
        t.latest_version_number()
    } else {
        t.default_version_number()
    };
    number.map(|n| n.to_string()).ok_or_else(|| {
        StackError::Invalid(format!("launch template {template_id} reports no version"))
    })
}

/// What marks the launch template version an update makes: a key of the
/// update in its description (found again by a run that continues one
/// stopped before the state recorded the version; the description also
/// names the version it was made from) and the client token (which makes
/// the create itself idempotent on AWS; moto ignores it).
struct Made {
    key: String,
    version: String,
    client_token: String,
}

impl Made {
    fn new(settings: &RollingSettings, template_id: &str) -> Self {
        let mut hash = Sha256::new();
        for part in [
            settings.group.as_str(),
            template_id,
            settings.image.as_deref().unwrap_or(""),
            settings.user_data.as_deref().unwrap_or(""),
            settings.version.as_str(),
        ] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        let key = format!("{:x}", hash.finalize());
        Self {
            key: format!("[{}]", &key[..16]),
            version: settings.version.clone(),
            client_token: format!("switchyard-{}", &key[..40]),
        }
    }

    /// The description of the version made from `source`.
    fn description(&self, source: &str) -> String {
        format!(
            "switchyard rolling update to {} from version {source} {}",
            self.version, self.key
        )
    }

    /// The version `description` says this update was made from, when it
    /// is this update's.
    fn source_of(&self, description: &str) -> Option<String> {
        let rest = description.strip_suffix(&self.key)?.trim_end();
        let source = rest.rsplit_once(" from version ")?.1;
        source.parse::<u64>().is_ok().then(|| source.to_owned())
    }
}

/// The version (from `from` on) that an earlier run of this same update
/// made, if any (the lowest, should there be several), with the version it
/// was made from.
async fn find_version(
    client: &aws_sdk_ec2::Client,
    template_id: &str,
    from: &str,
    made: &Made,
) -> Result<Option<(String, String)>, StackError> {
    let mut pages = client
        .describe_launch_template_versions()
        .launch_template_id(template_id)
        .min_version(from)
        .into_paginator()
        .send();
    let mut found: Option<(i64, String)> = None;
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| ProviderError::from_sdk("ec2:DescribeLaunchTemplateVersions", &e))?;
        for v in page.launch_template_versions() {
            let source = v.version_description().and_then(|d| made.source_of(d));
            if let (Some(n), Some(source)) = (v.version_number(), source) {
                if found.as_ref().is_none_or(|(f, _)| n < *f) {
                    found = Some((n, source));
                }
            }
        }
    }
    Ok(found.map(|(n, source)| (n.to_string(), source)))
}

async fn create_version(
    client: &aws_sdk_ec2::Client,
    template_id: &str,
    source: &str,
    settings: &RollingSettings,
    made: &Made,
) -> Result<String, StackError> {
    let data = RequestLaunchTemplateData::builder()
        .set_image_id(settings.image.clone())
        .set_user_data(
            settings
                .user_data
                .as_ref()
                .map(|u| aws_smithy_types::base64::encode(u.as_bytes())),
        )
        .build();
    let out = client
        .create_launch_template_version()
        .launch_template_id(template_id)
        .source_version(source)
        .version_description(made.description(source))
        .client_token(&made.client_token)
        .launch_template_data(data)
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("ec2:CreateLaunchTemplateVersion", &e))?;
    out.launch_template_version()
        .and_then(aws_sdk_ec2::types::LaunchTemplateVersion::version_number)
        .map(|n| n.to_string())
        .ok_or_else(|| {
            StackError::Provider(ProviderError {
                operation: "ec2:CreateLaunchTemplateVersion",
                code: None,
                message: "the answer names no version number".into(),
            })
        })
}

async fn set_template(
    client: &aws_sdk_autoscaling::Client,
    group: &str,
    template_id: &str,
    version: &str,
) -> Result<(), StackError> {
    client
        .update_auto_scaling_group()
        .auto_scaling_group_name(group)
        .launch_template(
            LaunchTemplateSpecification::builder()
                .launch_template_id(template_id)
                .version(version)
                .build(),
        )
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("autoscaling:UpdateAutoScalingGroup", &e))?;
    Ok(())
}

async fn set_capacity(
    client: &aws_sdk_autoscaling::Client,
    group: &str,
    desired: Option<i32>,
    max: Option<i32>,
) -> Result<(), StackError> {
    client
        .update_auto_scaling_group()
        .auto_scaling_group_name(group)
        .set_desired_capacity(desired)
        .set_max_size(max)
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("autoscaling:UpdateAutoScalingGroup", &e))?;
    Ok(())
}

async fn terminate(
    client: &aws_sdk_autoscaling::Client,
    instance: &str,
    decrement: bool,
) -> Result<(), StackError> {
    client
        .terminate_instance_in_auto_scaling_group()
        .instance_id(instance)
        .should_decrement_desired_capacity(decrement)
        .send()
        .await
        .map_err(|e| {
            ProviderError::from_sdk("autoscaling:TerminateInstanceInAutoScalingGroup", &e)
        })?;
    Ok(())
}

#[cfg(test)]
#[path = "rolling_tests.rs"]
mod tests;
