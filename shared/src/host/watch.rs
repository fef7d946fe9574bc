//! Draining before termination: `register-host watch` on an instance of an
//! Auto Scaling group whose termination lifecycle hook (deploy-standby's
//! `switchyard-drain`) holds a terminating instance in Terminating:Wait.
//!
//! The watcher polls the instance metadata path
//! `latest/meta-data/autoscaling/target-lifecycle-state` (IMDSv2, as
//! [`super::identity`] reads the rest) every `poll` interval. When it reads
//! `Terminated`, the instance is waiting on the hook: the watcher leaves as
//! `register-host leave` does ([`super::registration::leave`]: deregister,
//! drain, the state record), sending RecordLifecycleActionHeartbeat every
//! `heartbeat_every` while the drain lasts so the hook's heartbeat time-out
//! does not end the wait early, and then completes the lifecycle action with
//! CONTINUE, so the group terminates the instance at once instead of at the
//! time-out.
//!
//! A 404 for that path means the instance is not in an Auto Scaling
//! lifecycle (not in a group, or a group without the metadata): the
//! watcher keeps polling quietly (an instance can be attached later), or
//! with `exit_outside_group` ends at once with exit 0. Other metadata errors
//! are logged and polled through: a watcher that gave up would leave the
//! instance to be cut off at the heartbeat time-out.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::identity::{Identity, IdentityError, Imds, ImdsSettings};
use super::registration::{self, LeaveReport, LeaveRequest, LifecycleHook, RegistrationOptions};
use super::{HostClients, HostError, STEP};
use crate::aws::autoscaling;
use crate::outcome::StepReport;
use crate::state::{JournalEntry, Outcome, StateFile};
use crate::wait::progress::short;

/// The metadata path of the instance's Auto Scaling lifecycle state.
pub const LIFECYCLE_STATE_PATH: &str = "latest/meta-data/autoscaling/target-lifecycle-state";
/// The state that means: the group is terminating this instance.
pub const TERMINATED: &str = "Terminated";

/// What `watch` does.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    /// The target groups to leave, the port, and the hook to complete.
    pub leave: LeaveRequest,
    /// The hook (and group) whose action to heartbeat and complete.
    pub hook: LifecycleHook,
    /// Delay between reads of the lifecycle state.
    pub poll: Duration,
    /// Delay between heartbeats while the host drains.
    pub heartbeat_every: Duration,
    /// End (exit 0) when the instance is not in an Auto Scaling lifecycle, instead of polling on.
    pub exit_outside_group: bool,
}

/// What `watch` did.
#[derive(Debug, Clone, Serialize)]
pub struct WatchReport {
    /// Always `watch`.
    pub action: &'static str,
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Who the host is.
    pub host: Identity,
    /// The last lifecycle state read (`None`: the instance is in no Auto Scaling lifecycle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle_state: Option<String>,
    /// Reads of the lifecycle state.
    pub polls: u64,
    /// Time from the start until `Terminated` was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noticed_after_ms: Option<u64>,
    /// Heartbeats sent while draining.
    pub heartbeats: u32,
    /// The leave (with the lifecycle action), once termination was noticed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leave: Option<Box<LeaveReport>>,
    /// Time from `Terminated` read until the lifecycle action was completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left_after_ms: Option<u64>,
    /// The plan of a dry run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<String>,
}

impl StepReport for WatchReport {
    fn text(&self) -> String {
        let mut t = String::new();
        if self.dry_run {
            let _ = writeln!(
                t,
                "plan for {} to watch for termination (dry run: nothing changed)",
                self.host.host_id
            );
            for line in &self.plan {
                let _ = writeln!(t, "  {line}");
            }
            return t;
        }
        match (&self.leave, self.noticed_after_ms) {
            (Some(leave), Some(noticed)) => {
                let _ = writeln!(
                    t,
                    "{} is terminating: noticed after {} of watching ({} reads); left and \
                     completed the lifecycle action {} later ({} heartbeat(s))",
                    self.host.host_id,
                    short(Duration::from_millis(noticed)),
                    self.polls,
                    short(Duration::from_millis(self.left_after_ms.unwrap_or(0))),
                    self.heartbeats
                );
                t.push_str(&leave.text());
            }
            _ => {
                let _ = writeln!(
                    t,
                    "{} is in no Auto Scaling lifecycle ({} answered 404): nothing to watch",
                    self.host.host_id, LIFECYCLE_STATE_PATH
                );
            }
        }
        t
    }

    fn outputs(&self) -> Vec<(String, String)> {
        let mut out = vec![("host-id".to_owned(), self.host.host_id.clone())];
        if let Some(state) = &self.lifecycle_state {
            out.push(("lifecycle-state".to_owned(), state.clone()));
        }
        out
    }

    fn summary(&self) -> String {
        format!(
            "### register-host watch{}\n\n`{}`: lifecycle state {}\n",
            if self.dry_run { " (dry run)" } else { "" },
            self.host.host_id,
            self.lifecycle_state.as_deref().unwrap_or("(none)")
        )
    }
}

/// How a read of the lifecycle state came out.
enum Read {
    /// The state, e.g. `InService`, `Terminated`, `Warmed:Stopped`.
    State(String),
    /// 404: not in an Auto Scaling lifecycle.
    Outside,
}

async fn read(imds: &mut Imds) -> Result<Read, IdentityError> {
    match imds.get(LIFECYCLE_STATE_PATH).await {
        Ok(state) => Ok(Read::State(state)),
        Err(IdentityError::Status { status: 404, .. }) => Ok(Read::Outside),
        Err(e) => Err(e),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What every phase of a watch works with.
struct Watcher<'a> {
    clients: &'a HostClients,
    identity: &'a Identity,
    request: &'a WatchRequest,
    options: &'a RegistrationOptions,
    state: &'a StateFile,
    cancel: &'a CancellationToken,
}

/// Watches until the group terminates this instance, then leaves and
/// completes the lifecycle action (see the module documentation).
pub async fn watch(
    clients: &HostClients,
    identity: &Identity,
    imds: ImdsSettings,
    request: &WatchRequest,
    options: &RegistrationOptions,
    state: &StateFile,
    cancel: &CancellationToken,
) -> Result<WatchReport, HostError> {
    let began = Instant::now();
    // A state file that cannot be read ends the step before the long wait.
    state.load().await?;
    let mut imds = Imds::new(ImdsSettings {
        // Read every few seconds for hours: one token for six hours (the most IMDS gives).
        token_ttl: Duration::from_secs(21_600),
        ..imds
    })?;
    let mut report = WatchReport {
        action: "watch",
        dry_run: options.dry_run,
        host: identity.clone(),
        lifecycle_state: None,
        polls: 0,
        noticed_after_ms: None,
        heartbeats: 0,
        leave: None,
        left_after_ms: None,
        plan: Vec::new(),
    };
    let watcher = Watcher {
        clients,
        identity,
        request,
        options,
        state,
        cancel,
    };
    if options.dry_run {
        watcher.plan(&mut imds, &mut report).await?;
        return Ok(report);
    }
    if !watcher.wait_for_termination(&mut imds, &mut report).await? {
        return Ok(report);
    }
    let noticed = Instant::now();
    report.noticed_after_ms = Some(ms(noticed.duration_since(began)));
    let left = watcher.leave(noticed, &mut report).await?;
    report.left_after_ms = Some(ms(noticed.elapsed()));
    report.leave = Some(Box::new(left));
    Ok(report)
}

impl Watcher<'_> {
    /// A dry run: the lifecycle state now, and what a termination would do.
    async fn plan(&self, imds: &mut Imds, report: &mut WatchReport) -> Result<(), HostError> {
        let request = self.request;
        report.polls = 1;
        report.lifecycle_state = match read(imds).await? {
            Read::State(s) => Some(s),
            Read::Outside => None,
        };
        let mut leave = request.leave.clone();
        leave.lifecycle = Some(request.hook.clone());
        let plan = registration::leave(
            self.clients,
            self.identity,
            &leave,
            self.options,
            self.state,
            self.cancel,
        )
        .await?;
        report.plan.push(format!(
            "read {LIFECYCLE_STATE_PATH} every {} (now {}) until it is {TERMINATED}; then:",
            short(request.poll),
            report
                .lifecycle_state
                .as_deref()
                .unwrap_or("404: in no Auto Scaling lifecycle")
        ));
        report.plan.extend(plan.plan);
        report.plan.push(format!(
            "while draining, record a lifecycle action heartbeat every {}",
            short(request.heartbeat_every)
        ));
        Ok(())
    }

    /// Reads the lifecycle state every `poll` until it is `Terminated`
    /// (true), or, when asked, until it answers 404 (false).
    async fn wait_for_termination(
        &self,
        imds: &mut Imds,
        report: &mut WatchReport,
    ) -> Result<bool, HostError> {
        let (request, host) = (self.request, &self.identity.host_id);
        let mut last: Option<String> = None;
        let mut said_outside = false;
        let mut last_error: Option<String> = None;
        loop {
            report.polls += 1;
            match read(imds).await {
                Ok(Read::State(s)) => {
                    last_error = None;
                    said_outside = false;
                    if last.as_deref() != Some(s.as_str()) {
                        tracing::info!("{host}: lifecycle state {s}");
                        last = Some(s.clone());
                    }
                    let terminated = s == TERMINATED;
                    report.lifecycle_state = Some(s);
                    if terminated {
                        return Ok(true);
                    }
                }
                Ok(Read::Outside) => {
                    last_error = None;
                    report.lifecycle_state = None;
                    if request.exit_outside_group {
                        return Ok(false);
                    }
                    if !said_outside {
                        tracing::info!(
                            "{host}: in no Auto Scaling lifecycle ({LIFECYCLE_STATE_PATH} \
                             answers 404); reading it on every {}",
                            short(request.poll)
                        );
                        said_outside = true;
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    if last_error.as_deref() != Some(text.as_str()) {
                        tracing::warn!("{text}; reading it again in {}", short(request.poll));
                        last_error = Some(text);
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(request.poll) => {}
                () = self.cancel.cancelled() => {
                    return Err(HostError::Interrupted {
                        doing: "watching for termination (nothing was changed)".to_owned(),
                    });
                }
            }
        }
    }

    /// Leaves as `leave` does (its deadline, --timeout, runs from the
    /// notice), with heartbeats while it drains, then completes the hook.
    async fn leave(
        &self,
        noticed: Instant,
        report: &mut WatchReport,
    ) -> Result<LeaveReport, HostError> {
        let (request, host) = (self.request, &self.identity.host_id);
        registration::journal(
            self.state,
            JournalEntry::new(STEP, "terminating", Outcome::Ok).detail(format!(
                "{host}: {LIFECYCLE_STATE_PATH} is {TERMINATED} (hook {} of {}); leaving",
                request.hook.hook, request.hook.group
            )),
        )
        .await?;
        let mut leave = request.leave.clone();
        leave.lifecycle = None;
        let leaving = registration::leave(
            self.clients,
            self.identity,
            &leave,
            self.options,
            self.state,
            self.cancel,
        );
        tokio::pin!(leaving);
        let mut beat =
            tokio::time::interval_at(noticed + request.heartbeat_every, request.heartbeat_every);
        let mut left = loop {
            tokio::select! {
                out = &mut leaving => break out?,
                _ = beat.tick() => {
                    match autoscaling::record_lifecycle_action_heartbeat(
                        &self.clients.autoscaling,
                        &request.hook.hook,
                        &request.hook.group,
                        host,
                    ).await {
                        Ok(()) => {
                            report.heartbeats += 1;
                            tracing::info!(
                                "still draining after {}: lifecycle action heartbeat sent",
                                short(noticed.elapsed())
                            );
                        }
                        // The drain goes on; the hook's time-out is the worst case.
                        Err(e) => tracing::warn!("lifecycle action heartbeat failed: {e}"),
                    }
                }
            }
        };
        left.lifecycle = Some(
            registration::complete(self.clients, self.identity, self.state, &request.hook).await?,
        );
        Ok(left)
    }
}

/// The IAM policy `watch` needs: `leave`'s (with the lifecycle action) and
/// the heartbeat, on the hook's group.
pub fn watch_policy(request: &WatchRequest) -> crate::aws::iam::Policy {
    let mut leave = request.leave.clone();
    leave.lifecycle = Some(request.hook.clone());
    let mut policy = registration::leave_policy(&leave);
    policy.allow(
        "LifecycleActionHeartbeat",
        &["autoscaling:RecordLifecycleActionHeartbeat"],
        [registration::group_arn(&request.hook.group)],
    );
    policy
}
