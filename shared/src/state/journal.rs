//! The journal: an append-only record of every change a step makes, with who
//! made it, when, and how it ended.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::document::Extra;

/// The executables' names, as journal entries, hooks (`pre-<step>`) and the
/// JSON envelope spell them: one place, so that a name cannot drift.
pub mod steps {
    /// Bakes machine images.
    pub const BAKE_AMI: &str = "bake-ami";
    /// Brings a color's stack up and retires the old one.
    pub const DEPLOY_STANDBY: &str = "deploy-standby";
    /// Hosts join and leave the fleet.
    pub const REGISTER_HOST: &str = "register-host";
    /// Moves traffic.
    pub const SHIFT_WEIGHT: &str = "shift-weight";
    /// Judges a stack's health.
    pub const VERIFY_HEALTH: &str = "verify-health";
    /// The lock, the history, state checks, regional routes.
    pub const SWITCHYARD: &str = "switchyard";
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JournalEntry {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The step that wrote it, e.g. `shift-weight`.
    pub step: String,
    /// What was done, e.g. `shift-started`, `weights-applied`, `rollback`.
    pub action: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Who ran the step (CI user, job, host).
    #[serde(default)]
    pub actor: String,
    /// The changes made at the provider, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    /// A human-readable line about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// How a journaled action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It did what it set out to do.
    Ok,
    /// A check failed or the provider refused.
    Failed,
    /// It was undone.
    RolledBack,
    /// It was stopped by a signal.
    Interrupted,
}

/// One change made at a provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Change {
    /// What was changed, e.g. `route53:Z1/app.example.com./A`.
    pub resource: String,
    /// Its value before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// Its value after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    /// The provider's reference for the change (e.g. a Route53 change id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

impl JournalEntry {
    /// A new entry stamped now, by the detected actor.
    pub fn new(step: &str, action: &str, outcome: Outcome) -> Self {
        Self {
            at: Utc::now(),
            step: step.to_owned(),
            action: action.to_owned(),
            outcome,
            actor: actor(),
            changes: Vec::new(),
            detail: None,
            extra: Extra::new(),
        }
    }

    /// Adds a change.
    #[must_use]
    pub fn change(mut self, change: Change) -> Self {
        self.changes.push(change);
        self
    }

    /// Adds a structured field (kept under its own key in the entry).
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// Sets the human-readable line.
    #[must_use]
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// Who runs this step: the CI user and job when known, else the local user,
/// and the host. Never holds anything secret.
pub fn actor() -> String {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let who = env("GITHUB_ACTOR")
        .or_else(|| env("BUILD_USER_ID"))
        .or_else(|| env("USER"))
        .or_else(|| env("LOGNAME"))
        .unwrap_or_else(|| "unknown".to_owned());
    let job = env("GITHUB_RUN_ID")
        .map(|id| format!("github-run-{id}"))
        .or_else(|| env("BUILD_TAG"));
    let host = hostname();
    match job {
        Some(job) => format!("{who}@{host} ({job})"),
        None => format!("{who}@{host}"),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}
