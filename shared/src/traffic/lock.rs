//! The deployment lock as people manage it (`switchyard lock`): who holds a
//! route's lease or a service's release lock, and releasing it — a lease this
//! state file's run took, or with `force` one a killed run left. The lease
//! itself is [`crate::lease`].

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Lease, TrafficError};
use crate::lease::beside_state::ReleaseLockError;
use crate::lease::LeaseStore;
use crate::outcome::{Code, Failure, StepReport};
use crate::state::{steps, JournalEntry, Outcome, StateError, StateFile};

/// Errors of a release.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(transparent)]
    Traffic(#[from] TrafficError),
    #[error(transparent)]
    ReleaseLock(#[from] ReleaseLockError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{resource} is {holder}, not by a run of this state file; pass --force to release it anyway (only if that run is gone)")]
    NotOurs { resource: String, holder: String },
}

impl crate::outcome::ExitStatus for LockError {
    fn exit_code(&self) -> Code {
        match self {
            Self::Traffic(e) => e.exit_code(),
            Self::ReleaseLock(e) => e.exit_code(),
            Self::State(e) => e.exit_code(),
            Self::NotOurs { .. } => Code::Conflict,
        }
    }
}

/// One lease as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseView {
    /// Who holds it.
    pub holder: String,
    /// Why, if the holder said.
    pub message: String,
    /// When it was taken.
    pub since: DateTime<Utc>,
    /// When it lapses.
    pub expires: DateTime<Utc>,
    /// Whether it has lapsed (then any run may take it over).
    pub expired: bool,
    /// The lease in one line.
    #[serde(skip)]
    describe: String,
}

/// Who holds a route's lock.
#[derive(Debug, Clone, Serialize)]
pub struct LockStatus {
    /// Where the lease lives.
    pub lock: String,
    /// Whether a live (unexpired) lease holds it.
    pub held: bool,
    /// Every lease found, live or expired.
    pub leases: Vec<LeaseView>,
}

/// Reads who holds the lock of `store`.
pub async fn status<S: LeaseStore>(store: &S) -> Result<LockStatus, S::Error> {
    let now = Utc::now();
    let leases: Vec<LeaseView> = store
        .holders()
        .await?
        .into_iter()
        .map(|l| LeaseView {
            holder: l.holder.clone(),
            message: l.message.replace('_', " "),
            since: l.since,
            expires: l.expires,
            expired: l.expired(now),
            describe: l.describe(),
        })
        .collect();
    Ok(LockStatus {
        lock: store.place(),
        held: leases.iter().any(|l| !l.expired),
        leases,
    })
}

impl StepReport for LockStatus {
    fn text(&self) -> String {
        if self.leases.is_empty() {
            return format!("{}: free\n", self.lock);
        }
        let mut text = String::new();
        for l in &self.leases {
            let expired = if l.expired { "expired, " } else { "" };
            let _ = writeln!(text, "{}: {expired}{}", self.lock, l.describe);
        }
        text
    }

    fn outputs(&self) -> Vec<(String, String)> {
        vec![
            ("lock".to_owned(), self.lock.clone()),
            ("held".to_owned(), self.held.to_string()),
        ]
    }

    fn summary(&self) -> String {
        format!(
            "### switchyard lock: {}\n\n{}",
            if self.held { "held" } else { "free" },
            self.text()
        )
    }

    fn failure(&self) -> Option<Failure> {
        self.held
            .then(|| Failure::message(Code::Conflict, "the lock is held"))
    }
}

/// What a release did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct LockRelease {
    /// Where the lease lives.
    pub lock: String,
    /// A dry run: nothing was released.
    pub dry_run: bool,
    /// The leases released (or that would be), described.
    pub released: Vec<String>,
}

/// Releases the lock of `store`: the lease this state file's run holds, an
/// expired one, or with `force` any. Each release is journaled.
pub async fn release<S: LeaseStore>(
    store: &S,
    state: &StateFile,
    force: bool,
    dry_run: bool,
) -> Result<LockRelease, LockError>
where
    LockError: From<S::Error>,
{
    let mut report = LockRelease {
        lock: store.place(),
        dry_run,
        released: Vec::new(),
    };
    let leases = store.holders().await?;
    if leases.is_empty() {
        return Ok(report);
    }
    let mut doc = state.load().await?;
    let ours: Option<Lease> = store.recorded(&doc);
    for lease in &leases {
        let mine = ours.as_ref().is_some_and(|o| o.token == lease.token);
        if !mine && !force && !lease.expired(Utc::now()) {
            return Err(LockError::NotOurs {
                resource: store.place(),
                holder: lease.describe(),
            });
        }
        report.released.push(lease.describe());
        if dry_run {
            continue;
        }
        store.give_back(lease).await?;
        let (key, value) = store.journal_key();
        doc.record(
            JournalEntry::new(steps::SWITCHYARD, "lock-released", Outcome::Ok)
                .detail(format!(
                    "{}: {}{}",
                    store.place(),
                    lease.describe(),
                    if mine { "" } else { " (forced)" }
                ))
                .with(key, value),
        );
    }
    if !dry_run {
        store.forget(&mut doc);
        state.save(&mut doc).await?;
    }
    Ok(report)
}

impl StepReport for LockRelease {
    fn text(&self) -> String {
        if self.released.is_empty() {
            return format!("{}: free; nothing to release\n", self.lock);
        }
        let verb = if self.dry_run {
            "would release"
        } else {
            "released"
        };
        let was = if self.dry_run { "" } else { "was " };
        let mut text = String::new();
        for lease in &self.released {
            let _ = writeln!(text, "{verb} {}: {was}{lease}", self.lock);
        }
        text
    }

    fn outputs(&self) -> Vec<(String, String)> {
        vec![
            ("lock".to_owned(), self.lock.clone()),
            ("released".to_owned(), self.released.len().to_string()),
        ]
    }

    fn summary(&self) -> String {
        format!("### switchyard lock release\n\n{}", self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(lapsed: bool) -> LeaseView {
        let time = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let since = time("2026-12-02T06:00:00Z");
        let expires = time("2026-12-02T06:32:00Z");
        LeaseView {
            holder: "ci@runner-7 run 4711".to_owned(),
            message: "release 1.4.2".to_owned(),
            since,
            expires,
            expired: lapsed,
            describe: Lease {
                token: "t".to_owned(),
                since,
                holder: "ci@runner-7 run 4711".to_owned(),
                message: "release_1.4.2".to_owned(),
                expires,
            }
            .describe(),
        }
    }

    /// What `switchyard lock status` and `release` print, in text and JSON.
    #[test]
    fn status_and_release_read_the_same_in_text_and_json() {
        let held = LockStatus {
            lock: "_switchyard-lock.app.example.com. TXT".to_owned(),
            held: true,
            leases: vec![lease(false)],
        };
        insta::assert_snapshot!("lock-status-held-text", held.text());
        insta::assert_json_snapshot!("lock-status-held-json", held);
        let failure = held.failure().map(|f| (f.code, f.text()));
        assert_eq!(
            failure,
            Some((Code::Conflict, "the lock is held".to_owned()))
        );

        let free = LockStatus {
            held: false,
            leases: vec![lease(true)],
            ..held
        };
        insta::assert_snapshot!("lock-status-expired-text", free.text());
        assert!(free.failure().is_none(), "an expired lease holds nothing");

        let released = LockRelease {
            lock: free.lock.clone(),
            dry_run: false,
            released: vec![lease(false).describe],
        };
        insta::assert_snapshot!("lock-release-text", released.text());
        insta::assert_json_snapshot!("lock-release-json", released);
        let nothing = LockRelease {
            released: Vec::new(),
            ..released
        };
        insta::assert_snapshot!("lock-release-free-text", nothing.text());
    }
}
