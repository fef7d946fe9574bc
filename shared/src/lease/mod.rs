//! Leases: one run at a time of what they guard. A lease lives where the
//! thing it guards lives, and is taken with a write that fails when another
//! run holds it:
//! - a route's lease, one traffic change at a time (shift-weight), lives in
//!   the router itself: for Route53 a TXT record created with CREATE, which
//!   fails when it exists (see [`crate::traffic`]);
//! - a service's release lock, one release at a time (deploy-standby), lives
//!   beside the state: an object created with `If-None-Match: *` beside an
//!   `s3://` state, a file created exclusively beside a local one
//!   ([`beside_state`]).
//!
//! Every lease carries an expiry, so a killed job cannot block forever. Its
//! value names the holder and why it holds the lease; it holds nothing
//! secret. [`acquire`] takes a lease from any [`LeaseStore`], waiting for it
//! (`--lock-wait`) with a heartbeat line instead of failing at once when
//! asked to.

pub mod beside_state;

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, TimeZone, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::state::StateDocument;
use crate::wait::progress::short;
use crate::wait::{self, Backoff, WaitEnd};

/// A lease another run holds, as a refusal names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Where the lease lives.
    pub resource: String,
    /// Who holds it.
    pub holder: String,
    /// When it lapses (RFC 3339).
    pub expires: String,
}

/// The errors of a place that keeps leases: which of them is "another run
/// holds it", and how to say so or that the wait was interrupted.
pub trait LeaseFailure: Sized {
    /// The holder, when this is a refusal because another run holds the lease.
    fn held(self) -> Result<Held, Self>;
    /// A refusal because another run holds the lease.
    fn from_held(held: Held) -> Self;
    /// The wait for the lease was interrupted.
    fn interrupted(message: String) -> Self;
}

/// A place that keeps leases.
#[allow(async_fn_in_trait)]
pub trait LeaseStore {
    /// Its errors.
    type Error: LeaseFailure;

    /// Takes the lease, or fails with [`LeaseFailure::from_held`]. `ours` is
    /// the lease this run held before (from the state), which it may take back.
    async fn take(
        &self,
        request: &LeaseRequest,
        ours: Option<&Lease>,
    ) -> Result<Lease, Self::Error>;

    /// Gives the lease back.
    async fn give_back(&self, lease: &Lease) -> Result<(), Self::Error>;

    /// The leases held there now (none when it is free).
    async fn holders(&self) -> Result<Vec<Lease>, Self::Error>;

    /// Where the lease lives, for plans and messages.
    fn place(&self) -> String;

    /// The lease a run of this state recorded before taking it, if any.
    fn recorded(&self, doc: &StateDocument) -> Option<Lease> {
        let _ = doc;
        None
    }

    /// Forgets the recorded lease, once it is released.
    fn forget(&self, doc: &mut StateDocument) {
        let _ = doc;
    }

    /// The journal entry's key naming this lease's place (`route`, `lock`).
    fn journal_key(&self) -> (&'static str, String) {
        ("lock", self.place())
    }
}

/// What a step asks for when it takes a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    /// Who asks (user, host, CI job).
    pub holder: String,
    /// Why (`--lock-message`).
    pub message: Option<String>,
    /// When the lease lapses if it is never released.
    pub expires: DateTime<Utc>,
    /// The token to take it with. A run records its token in the state before
    /// it takes the lease, so that a run killed in between takes its own lease
    /// back with the same token; `None` makes a new one.
    pub token: Option<String>,
}

/// A lease as stored at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Unique to the run that took it; starts with the time it was taken, so
    /// that of two leases the earlier one sorts first.
    pub token: String,
    /// When it was taken.
    pub since: DateTime<Utc>,
    /// Who holds it.
    pub holder: String,
    /// Why, if the holder said.
    pub message: String,
    /// When it lapses.
    pub expires: DateTime<Utc>,
}

/// The run's id in a token (`<millis>-<id>`).
fn run_id(token: &str) -> &str {
    token.split_once('-').map_or(token, |(_, id)| id)
}

/// Keeps a field free of what the encoding uses: no spaces, quotes,
/// backslashes or semicolons.
fn clean(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '"' | '\\' | ';') {
                c
            } else {
                '_'
            }
        })
        .take(max)
        .collect()
}

impl Lease {
    /// A new lease for `request`, taken now.
    pub fn new(request: &LeaseRequest) -> Self {
        let since = Utc::now();
        // The run's id is kept from the request's token (a run taking its own
        // lease back); the time is always now, so that of two leases taken at
        // once the one taken first sorts first.
        let id = request.token.as_deref().map_or_else(
            || {
                std::iter::repeat_with(fastrand::alphanumeric)
                    .take(10)
                    .collect()
            },
            |t| run_id(t).to_owned(),
        );
        Self {
            token: format!("{:013}-{id}", since.timestamp_millis()),
            // Whole seconds, as the encoding keeps them.
            since: since.trunc_subsecs(0),
            holder: clean(&request.holder, 100),
            message: clean(request.message.as_deref().unwrap_or(""), 80),
            expires: request.expires.trunc_subsecs(0),
        }
    }

    /// Whether `other` was taken by the same run (the same id in the token,
    /// whenever it was taken).
    pub fn same_run(&self, other: &Lease) -> bool {
        run_id(&self.token) == run_id(&other.token)
    }

    /// Whether it has lapsed at `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires <= now
    }

    /// Its encoding in one DNS TXT string (without the quotes), at most 255 bytes.
    pub fn encode(&self) -> String {
        format!(
            "switchyard-lease=1;token={};since={};expires={};holder={};message={}",
            self.token,
            self.since.timestamp(),
            self.expires.timestamp(),
            self.holder,
            self.message
        )
    }

    /// Reads an encoded lease; `None` when it is not one of ours.
    pub fn decode(text: &str) -> Option<Self> {
        let text = text.trim().trim_matches('"');
        let time = |v: &str| {
            v.parse::<i64>()
                .ok()
                .and_then(|t| Utc.timestamp_opt(t, 0).single())
        };
        let (mut token, mut since, mut expires, mut holder, mut message, mut ours) =
            (None, None, None, None, None, false);
        for field in text.split(';') {
            match field.split_once('=') {
                Some(("switchyard-lease", "1")) => ours = true,
                Some(("token", v)) => token = Some(v.to_owned()),
                Some(("since", v)) => since = time(v),
                Some(("expires", v)) => expires = time(v),
                Some(("holder", v)) => holder = Some(v.to_owned()),
                Some(("message", v)) => message = Some(v.to_owned()),
                _ => {}
            }
        }
        if !ours {
            return None;
        }
        let expires = expires?;
        Some(Self {
            token: token?,
            since: since.unwrap_or(expires),
            holder: holder.unwrap_or_default(),
            message: message.unwrap_or_default(),
            expires,
        })
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "held by {} since {}, expires {}",
            self.holder,
            self.since.to_rfc3339(),
            self.expires.to_rfc3339()
        );
        if !self.message.is_empty() {
            let _ = write!(text, " ({})", self.message.replace('_', " "));
        }
        text
    }
}

/// The field beside a recorded lease naming the process that recorded it.
fn pid_key(key: &str) -> String {
    format!("{key}_pid")
}

/// Records in `entry` (a state section's own fields), under `key`, the lease
/// this run is about to take, with this process's id: write-ahead, so that a
/// rerun of a killed run can take its own lease back.
pub fn record(entry: &mut serde_json::Map<String, serde_json::Value>, key: &str, lease: &Lease) {
    entry.insert(key.to_owned(), lease.encode().into());
    entry.insert(pid_key(key), std::process::id().into());
}

/// Forgets what [`record`] wrote.
pub fn forget(entry: &mut serde_json::Map<String, serde_json::Value>, key: &str) {
    entry.remove(key);
    entry.remove(&pid_key(key));
}

/// The lease recorded in `entry` under `key`, when it is this run's to take
/// back: recorded by the same holder (user, host and CI job) from a process
/// that is gone from this machine, i.e. a run of this job that was killed.
/// A lease another pipeline recorded in a shared (`s3://`) state, or one a
/// live process holds, is not.
pub fn recorded_ours(
    entry: &serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Option<Lease> {
    let lease = entry.get(key)?.as_str().and_then(Lease::decode)?;
    let pid = entry.get(&pid_key(key))?.as_u64()?;
    let gone = u32::try_from(pid).is_ok_and(process_gone);
    (lease.holder == holder_of_this_run() && gone).then_some(lease)
}

/// This run's holder as a lease spells it.
pub fn holder_of_this_run() -> String {
    clean(&crate::state::journal::actor(), 100)
}

/// Whether process `pid`, once of this machine, is gone (and is not this one).
pub fn process_gone(pid: u32) -> bool {
    pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Of several live leases at one place (only an emulator that accepts a
/// second CREATE lets that happen), the one taken first holds it.
pub fn first_live<'a>(
    leases: impl IntoIterator<Item = &'a Lease>,
    now: DateTime<Utc>,
) -> Option<&'a Lease> {
    leases
        .into_iter()
        .filter(|l| !l.expired(now))
        .min_by(|a, b| a.token.cmp(&b.token))
}

/// Takes the lease of `store`. When it is held and `wait` is not zero, polls
/// with backoff until it is free or `wait` has passed, logging a heartbeat
/// line (holder, time left) as it goes.
pub async fn acquire<S: LeaseStore>(
    store: &S,
    request: &LeaseRequest,
    ours: Option<&Lease>,
    wait: Duration,
    cancel: &CancellationToken,
) -> Result<Lease, S::Error> {
    let started = Instant::now();
    let until = started + wait;
    let backoff = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(10),
    };
    let mut attempt = 0;
    let mut last_beat: Option<Instant> = None;
    loop {
        let error = match store.take(request, ours).await {
            Ok(lease) => {
                if attempt > 0 {
                    tracing::info!("took the lock after waiting {}", short(started.elapsed()));
                }
                return Ok(lease);
            }
            Err(e) => e,
        };
        let held = match error.held() {
            Ok(held) => held,
            Err(other) => return Err(other),
        };
        let now = Instant::now();
        if now >= until {
            if wait.is_zero() {
                return Err(S::Error::from_held(held));
            }
            return Err(S::Error::from_held(Held {
                holder: format!("{} (still, after waiting {})", held.holder, short(wait)),
                ..held
            }));
        }
        if last_beat.is_none_or(|b| now.duration_since(b) >= Duration::from_secs(5)) {
            last_beat = Some(now);
            tracing::info!(
                "waiting for the lock {}: held by {} until {}; {} left of --lock-wait {}",
                held.resource,
                held.holder,
                held.expires,
                short(until.saturating_duration_since(now)),
                short(wait)
            );
        }
        match wait::sleep(backoff.delay(attempt), until, cancel).await {
            Ok(()) | Err(WaitEnd::Deadline) => attempt += 1,
            Err(WaitEnd::Cancelled) => {
                return Err(S::Error::interrupted(format!(
                    "interrupted while waiting for the lock {}",
                    held.resource
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_sanitizes() {
        let lease = Lease::new(&LeaseRequest {
            token: None,
            holder: "ci \"bot\";x@host (run 7)".into(),
            message: Some("release 2.4; hotfix".into()),
            expires: Utc.timestamp_opt(1_800_000_000, 0).unwrap(),
        });
        let text = lease.encode();
        assert!(
            !text.contains(' ') && !text.contains('"') && text.len() <= 255,
            "{text}"
        );
        let back = Lease::decode(&format!("\"{text}\"")).unwrap();
        assert_eq!(back.token, lease.token);
        assert_eq!(back.expires, lease.expires);
        assert_eq!(back.since.timestamp(), lease.since.timestamp());
        assert_eq!(back.holder, "ci__bot__x@host_(run_7)");
        assert_eq!(back.message, "release_2.4__hotfix");
        assert!(back.describe().ends_with("(release 2.4  hotfix)"));
        assert!(back.expired(Utc.timestamp_opt(1_800_000_000, 0).unwrap()));
        assert!(!back.expired(Utc.timestamp_opt(1_799_999_999, 0).unwrap()));
        assert_eq!(Lease::decode("\"v=spf1 -all\""), None);
    }

    #[test]
    fn the_earliest_live_lease_holds() {
        let at = |ms: i64, expires: i64| Lease {
            token: format!("{ms:013}-x"),
            since: Utc.timestamp_millis_opt(ms).unwrap(),
            holder: format!("h{ms}"),
            message: String::new(),
            expires: Utc.timestamp_opt(expires, 0).unwrap(),
        };
        let now = Utc.timestamp_opt(1_000, 0).unwrap();
        let leases = [at(900_000, 2_000), at(800_000, 2_000), at(700_000, 10)];
        assert_eq!(first_live(&leases, now).unwrap().holder, "h800000");
    }
}
