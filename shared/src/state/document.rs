//! Types of the state document (`switchyard/state/v1`).
//!
//! Every section keeps the fields it does not know in `extra`, so that a newer
//! step's data survives being rewritten by an older one. The JSON Schema
//! published under `schema/` is generated from these types.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::journal::JournalEntry;
use crate::hooks::HookEnv;

/// The schema identifier this build reads and writes.
pub const SCHEMA: &str = "switchyard/state/v1";

/// Traffic weights keyed by member (a Route53 set identifier, a target group, a server).
pub type Weights = BTreeMap<String, u32>;

/// Fields a section does not know, kept as they were.
pub type Extra = Map<String, Value>;

/// One deployment's state, passed from stage to stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "switchyard state document")]
pub struct StateDocument {
    /// Always `switchyard/state/v1` for this version of the document.
    pub schema: String,
    /// What is being released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<Deployment>,
    /// The machine image of this release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    /// Hosts that registered themselves, keyed by host id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<String, Host>,
    /// Stacks keyed by name (a color such as `blue` or `green`, or a region).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stacks: BTreeMap<String, Stack>,
    /// The last health verdict per stack name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub health: BTreeMap<String, Verdict>,
    /// Traffic routes keyed by their identity (see [`RouteState::id`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub traffic: BTreeMap<String, RouteState>,
    /// Append-only record of every change made by any step.
    #[serde(default)]
    pub journal: Vec<JournalEntry>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Default for StateDocument {
    fn default() -> Self {
        Self {
            schema: SCHEMA.to_owned(),
            deployment: None,
            image: None,
            hosts: BTreeMap::new(),
            stacks: BTreeMap::new(),
            health: BTreeMap::new(),
            traffic: BTreeMap::new(),
            journal: Vec::new(),
            extra: Extra::new(),
        }
    }
}

impl StateDocument {
    /// Appends an entry to the journal. Entries are never removed or rewritten.
    pub fn record(&mut self, entry: JournalEntry) {
        self.journal.push(entry);
    }

    /// The stack entry of that name, created empty when missing.
    pub fn stack_mut(&mut self, name: &str) -> &mut Stack {
        self.stacks.entry(name.to_owned()).or_default()
    }

    /// What a hook learns of the release from the state:
    /// `SWITCHYARD_SERVICE`, `SWITCHYARD_VERSION`, `SWITCHYARD_DEPLOYMENT_ID`
    /// (when the deployment names them), `SWITCHYARD_ACTIVE_STACK` and
    /// `SWITCHYARD_STANDBY_STACK` (comma-separated, possibly empty).
    pub fn hook_env(&self) -> HookEnv {
        let mut env = HookEnv::default();
        if let Some(d) = &self.deployment {
            env.set_opt("SWITCHYARD_SERVICE", d.service.as_deref());
            env.set_opt("SWITCHYARD_VERSION", d.version.as_deref());
            env.set_opt("SWITCHYARD_DEPLOYMENT_ID", d.id.as_deref());
        }
        let with_role = |role: Role| {
            let names: Vec<&str> = self
                .stacks
                .iter()
                .filter(|(_, s)| s.role == Some(role))
                .map(|(n, _)| n.as_str())
                .collect();
            names.join(",")
        };
        env.set("SWITCHYARD_ACTIVE_STACK", &with_role(Role::Active));
        env.set("SWITCHYARD_STANDBY_STACK", &with_role(Role::Standby));
        env
    }
}

/// What is being released.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Deployment {
    /// Service name, e.g. `go-auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Version being released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Unique id of this deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The machine image built for this release.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Image {
    /// Image id per region, e.g. `{"us-east-1": "ami-0123"}`.
    #[serde(default)]
    pub amis: BTreeMap<String, String>,
    /// Hash over every input of the bake; equal hashes mean an identical image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_hash: Option<String>,
    /// The bake that made it: every resource of that bake carries this id
    /// in its `switchyard:bake-id` tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake_id: Option<String>,
    /// The image it was baked from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_image: Option<String>,
    /// Its name (the same in every region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// sha256 of the provisioning script (the script itself is never stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_sha256: Option<String>,
    /// When this step baked it, or found it when reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baked_at: Option<DateTime<Utc>>,
    /// Whether an existing image with the same input hash was reused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reused: bool,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A host of the fleet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Host {
    /// Where it runs: `aws`, or another provider's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Its region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The address traffic reaches it at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Its labels (`service`, `region`, `provider`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The part a stack plays in a blue-green pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Takes the traffic.
    Active,
    /// Kept warm for a release or an instant rollback.
    Standby,
    /// Scaled down after a release.
    Retired,
}

/// A stack: one color of a blue-green pair, or one region's deployment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Stack {
    /// Active or standby.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The version it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The driver that manages it (`asg`, `command`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// URLs or host:port pairs where it serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// Provider ids (group names, instance ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
    /// The stack's part in each region, keyed by region, when it spans
    /// regions (the `asg` driver); `endpoints` and `ids` above are then the
    /// union over the regions, so steps that work by stack name see them all.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub regions: BTreeMap<String, RegionalStack>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One region's part of a stack.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RegionalStack {
    /// The Auto Scaling group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The launch template id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_template: Option<String>,
    /// The launch template version the group launches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_template_version: Option<String>,
    /// The machine image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// sha256 of the user-data (never the body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_sha256: Option<String>,
    /// Desired capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<u32>,
    /// Instance ids in service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<String>,
    /// Where it serves in this region.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// When the driver last brought it up or down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The outcome of a health verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Passed every check.
    Healthy,
    /// Failed a check.
    Unhealthy,
    /// Not enough evidence either way (missing data is never a pass).
    Inconclusive,
}

/// The last health verdict about a stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Verdict {
    /// The outcome.
    pub status: Health,
    /// When it was reached.
    pub at: DateTime<Utc>,
    /// One line of evidence, e.g. `12/12 endpoints healthy, p95 41 ms`.
    #[serde(default)]
    pub summary: String,
    /// Pass or fail per endpoint probed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointVerdict>,
    /// Latency figures of the probes in milliseconds (`p50`, `p95`, `max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<BTreeMap<String, u64>>,
    /// The evidence that judged the stack (absent in verdicts of older builds: probes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<Via>,
    /// The way into the load balancer the probes took (`via: load-balancer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<ProbeRoute>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// What judges a stack's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// HTTP(S) probes of the stack's endpoints from where the step ran.
    #[default]
    Probes,
    /// Its target groups' health, as the load balancer sees it.
    TargetHealth,
    /// HTTP(S) probes through the load balancer, by a route that reaches only the stack.
    LoadBalancer,
}

impl Via {
    /// The flag's spelling: `probes`, `target-health`, `load-balancer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Probes => "probes",
            Self::TargetHealth => "target-health",
            Self::LoadBalancer => "load-balancer",
        }
    }
}

/// A load balancer's listener (and rule) that sends every request it takes
/// to one stack's target groups: the way `verify-health --via load-balancer`
/// probes the stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProbeRoute {
    /// The load balancer's name.
    pub load_balancer: String,
    /// Its DNS name, the host the probes connect to.
    pub dns_name: String,
    /// `internet-facing`, or `internal` (reachable only from inside its VPC).
    pub scheme: String,
    /// The listener's ARN.
    pub listener: String,
    /// The listener's port.
    pub port: u16,
    /// The listener's protocol: `HTTP` or `HTTPS`.
    pub protocol: String,
    /// The listener rule's ARN; absent: the listener's default action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The rule's priority; absent: the listener's default action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// The Host header the probes sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_header: Option<String>,
    /// The target groups it forwards to.
    pub target_groups: Vec<String>,
}

/// One endpoint's part in a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EndpointVerdict {
    /// The URL probed.
    pub url: String,
    /// Whether it passed.
    pub pass: bool,
    /// Latency of its last probe.
    pub latency_ms: u64,
    /// What its last probe saw.
    #[serde(default)]
    pub last: String,
}

/// A traffic route: one weighted record group, listener or backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RouteState {
    /// The router kind: `route53`, `alb` or `haproxy`.
    pub router: String,
    /// What identifies the route at the provider (zone id, record name, type ...).
    pub resource: BTreeMap<String, String>,
    /// Weights as last read back from the provider.
    pub weights: Weights,
    /// The weights before the current (or last) shift began; rollback restores exactly these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Weights>,
    /// The current or last shift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift: Option<ShiftProgress>,
    /// When this entry last changed.
    pub updated_at: DateTime<Utc>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Where a shift is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ShiftProgress {
    /// The member receiving traffic, when the shift has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The weights of every step, in order.
    pub plan: Vec<Weights>,
    /// How many steps of the plan are applied and verified.
    pub steps_done: usize,
    /// The shift's status.
    pub status: ShiftStatus,
    /// A provider change submitted but not yet confirmed (e.g. a Route53 change id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_change: Option<String>,
    /// Why the shift stopped, when it did not complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the shift began.
    pub started_at: DateTime<Utc>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The status of a shift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShiftStatus {
    /// Steps are being applied.
    InProgress,
    /// Every step was applied and passed its gate.
    Completed,
    /// A gate failed or `--rollback` was asked: the weights before the shift are back.
    RolledBack,
    /// Stopped by a provider error or a time-out; weights are where `steps_done` says.
    Failed,
    /// Stopped by a signal; weights are where `steps_done` says.
    Interrupted,
}

impl ShiftStatus {
    /// Whether a new run should continue this shift rather than start afresh.
    pub fn is_unfinished(self) -> bool {
        matches!(self, Self::InProgress | Self::Failed | Self::Interrupted)
    }
}
