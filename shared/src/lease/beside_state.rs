//! A service's release lock, kept beside its state: one release of a
//! service at a time, whichever pipeline runs it. Beside `s3://B/K` it is the
//! object `s3://B/K.lock`, created with `If-None-Match: *` and taken over
//! (once expired) with `If-Match` on the expired lease's ETag; beside a local
//! file it is `FILE.lock`, created with an exclusive hard link so that it is
//! never seen half-written. Either way two runs cannot both take it.

use std::path::Path;

use chrono::Utc;

use super::{Held, Lease, LeaseFailure, LeaseRequest, LeaseStore};
use crate::aws::launch_template::sha256_hex;
use crate::aws::AwsSettings;
use crate::outcome::{Code, ExitStatus};
use crate::state::s3::{self, Object, ObjectError, Precondition};
use crate::state::StateLocation;

/// How often a take that lost a race re-reads the lock before it says who holds it.
const TAKE_ATTEMPTS: usize = 3;

/// Errors of the release lock.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseLockError {
    #[error(
        "{} is held by {} until {}: another release of this service is running. \
         Wait for it (--lock-wait), or if that run is gone: switchyard lock release --release-lock --force",
        .0.resource, .0.holder, .0.expires
    )]
    Held(Held),
    #[error("release lock {0}: {1}")]
    Store(String, String),
    #[error("{0}")]
    Interrupted(String),
}

impl ExitStatus for ReleaseLockError {
    fn exit_code(&self) -> Code {
        match self {
            Self::Held(_) => Code::Conflict,
            Self::Store(..) => Code::Provider,
            Self::Interrupted(_) => Code::Interrupted,
        }
    }
}

impl LeaseFailure for ReleaseLockError {
    fn held(self) -> Result<Held, Self> {
        match self {
            Self::Held(h) => Ok(h),
            other => Err(other),
        }
    }

    fn from_held(held: Held) -> Self {
        Self::Held(held)
    }

    fn interrupted(message: String) -> Self {
        Self::Interrupted(message)
    }
}

/// The release lock beside a state.
#[derive(Debug)]
pub struct ReleaseLock {
    place: StateLocation,
    aws: AwsSettings,
    object: tokio::sync::OnceCell<Object>,
}

impl ReleaseLock {
    /// The lock beside the state at `state`; `aws` says how to reach S3.
    pub fn beside(state: &StateLocation, aws: AwsSettings) -> Self {
        Self {
            place: state.lock(),
            aws,
            object: tokio::sync::OnceCell::new(),
        }
    }

    /// What holding it needs at IAM: for a lock in S3, reading, writing and
    /// deleting that one object.
    pub fn policy(state: &StateLocation) -> crate::aws::iam::Policy {
        let mut policy = crate::aws::iam::Policy::new();
        if let Some(arn) = state.lock().arn() {
            policy.allow(
                "ReleaseLock",
                &["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                [arn],
            );
        }
        policy
    }

    fn error(&self, e: impl std::fmt::Display) -> ReleaseLockError {
        ReleaseLockError::Store(self.place.to_string(), e.to_string())
    }

    async fn object(&self, bucket: &str, key: &str) -> &Object {
        self.object
            .get_or_init(|| async {
                Object::new(Box::pin(s3::client(&self.aws)).await, bucket, key)
            })
            .await
    }

    /// The lease there now, its version (ETag, or the file's SHA-256), and
    /// whether a killed run of this job left it.
    async fn read(&self) -> Result<Option<(Lease, String, bool)>, ReleaseLockError> {
        let found = match &self.place {
            StateLocation::File(path) => match std::fs::read(path) {
                Ok(bytes) => {
                    let version = sha256_hex(&bytes);
                    Some((bytes, version))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(self.error(e)),
            },
            StateLocation::S3 { bucket, key } => self
                .object(bucket, key)
                .await
                .get()
                .await
                .map_err(|e| self.error(e))?,
        };
        let Some((bytes, version)) = found else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        let lease = Lease::decode(&text).ok_or_else(|| {
            self.error("holds something that is not a switchyard lease; remove it if nothing else uses that name")
        })?;
        let killed = left_by_a_killed_run(&text, &lease);
        Ok(Some((lease, version, killed)))
    }

    /// Writes `lease` if the lock is still at `version` (`None`: absent);
    /// false when another run came first.
    async fn write(&self, lease: &Lease, version: Option<&str>) -> Result<bool, ReleaseLockError> {
        let text = encode(lease);
        match &self.place {
            StateLocation::File(path) => {
                write_file(path, &text, version).map_err(|e| self.error(e))
            }
            StateLocation::S3 { bucket, key } => {
                let condition =
                    version.map_or(Precondition::Absent, |v| Precondition::Is(v.to_owned()));
                match self
                    .object(bucket, key)
                    .await
                    .put(text.into_bytes(), &condition)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(ObjectError::Precondition(_)) => Ok(false),
                    Err(e) => Err(self.error(e)),
                }
            }
        }
    }
}

/// Writes the lock file: created exclusively (a hard link of a complete temp
/// file, which fails when the lock exists), or replaced if it still has `version`.
fn write_file(path: &Path, text: &str, version: Option<&str>) -> std::io::Result<bool> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".switchyard-lock.")
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    match version {
        None => match std::fs::hard_link(tmp.path(), path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        },
        Some(v) => {
            let now = std::fs::read(path).map(|b| sha256_hex(&b)).ok();
            if now.as_deref() != Some(v) {
                return Ok(false);
            }
            tmp.persist(path).map_err(|e| e.error)?;
            Ok(true)
        }
    }
}

impl LeaseStore for ReleaseLock {
    type Error = ReleaseLockError;

    async fn take(
        &self,
        request: &LeaseRequest,
        ours: Option<&Lease>,
    ) -> Result<Lease, ReleaseLockError> {
        let mut last = None;
        for _ in 0..TAKE_ATTEMPTS {
            let version = match self.read().await? {
                None => None,
                Some((held, version, killed)) => {
                    let free = held.expired(Utc::now())
                        || killed
                        || ours.is_some_and(|o| o.same_run(&held));
                    if killed {
                        tracing::info!(
                            "taking back the release lock a killed run of this job left ({})",
                            held.describe()
                        );
                    }
                    if !free {
                        last = Some(held);
                        break;
                    }
                    Some(version)
                }
            };
            let lease = Lease::new(request);
            if self.write(&lease, version.as_deref()).await? {
                return Ok(lease);
            }
        }
        let held = match last {
            Some(l) => l,
            None => self
                .read()
                .await?
                .map(|(l, ..)| l)
                .ok_or_else(|| self.error("kept changing while this run tried to take it"))?,
        };
        Err(ReleaseLockError::Held(Held {
            resource: self.place(),
            holder: held.holder.clone(),
            expires: held.expires.to_rfc3339(),
        }))
    }

    async fn give_back(&self, lease: &Lease) -> Result<(), ReleaseLockError> {
        // Only our own: after an expiry another run may have taken it over.
        match self.read().await? {
            Some((held, ..)) if held.token == lease.token => {}
            _ => return Ok(()),
        }
        match &self.place {
            StateLocation::File(path) => match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(self.error(e)),
            },
            StateLocation::S3 { bucket, key } => self
                .object(bucket, key)
                .await
                .delete()
                .await
                .map_err(|e| self.error(e)),
        }
    }

    async fn holders(&self) -> Result<Vec<Lease>, ReleaseLockError> {
        Ok(self.read().await?.map(|(l, ..)| l).into_iter().collect())
    }

    fn place(&self) -> String {
        self.place.to_string()
    }
}

/// The lock's text: the lease, and the process that holds it.
fn encode(lease: &Lease) -> String {
    format!("{};pid={}", lease.encode(), std::process::id())
}

/// Whether the lock's text was written by a run of this holder (user, host
/// and CI job) whose process is gone from this machine: a killed run of this
/// job, whose lock a rerun takes back rather than wait for it to expire.
/// Another pipeline's lock, or a live process's, is not taken back.
fn left_by_a_killed_run(text: &str, held: &Lease) -> bool {
    let pid = text
        .trim()
        .split(';')
        .find_map(|f| f.strip_prefix("pid="))
        .and_then(|p| p.parse::<u32>().ok());
    pid.is_some_and(|pid| {
        pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
            && held.holder
                == Lease::new(&LeaseRequest {
                    holder: crate::state::journal::actor(),
                    message: None,
                    expires: Utc::now(),
                    token: None,
                })
                .holder
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::*;

    fn request(holder: &str, expires_in: i64) -> LeaseRequest {
        LeaseRequest {
            holder: holder.into(),
            message: Some("release 2".into()),
            expires: Utc::now() + chrono::Duration::seconds(expires_in),
            token: None,
        }
    }

    #[tokio::test]
    async fn one_release_at_a_time_beside_a_local_state() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateLocation::File(dir.path().join("s.json"));
        let (a, b) = (
            ReleaseLock::beside(&state, AwsSettings::default()),
            ReleaseLock::beside(&state, AwsSettings::default()),
        );
        assert_eq!(
            a.place(),
            format!("{}.lock", dir.path().join("s.json").display())
        );
        let lease = a.take(&request("ci-a", 600), None).await.unwrap();
        let err = b.take(&request("ci-b", 600), None).await.unwrap_err();
        assert_eq!(err.exit_code(), Code::Conflict);
        assert!(err.to_string().contains("held by ci-a"), "{err}");
        assert_eq!(b.holders().await.unwrap()[0].holder, "ci-a");
        // b gives back nothing that is not its own.
        b.give_back(&Lease::new(&request("ci-b", 600)))
            .await
            .unwrap();
        assert_eq!(a.holders().await.unwrap().len(), 1);
        a.give_back(&lease).await.unwrap();
        assert!(b.holders().await.unwrap().is_empty());
        b.take(&request("ci-b", 600), None).await.unwrap();
    }

    #[tokio::test]
    async fn an_expired_lock_is_taken_over_and_a_wait_ends_when_it_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateLocation::File(dir.path().join("s.json"));
        let lock = ReleaseLock::beside(&state, AwsSettings::default());
        lock.take(&request("killed-run", -5), None).await.unwrap();
        let lease = lock.take(&request("ci-b", 600), None).await.unwrap();
        assert_eq!(lock.holders().await.unwrap()[0].holder, "ci-b");

        // A wait that outlasts the holder.
        let waiter = ReleaseLock::beside(&state, AwsSettings::default());
        let cancel = CancellationToken::new();
        let asked = request("ci-c", 600);
        let wait = super::super::acquire(&waiter, &asked, None, Duration::from_secs(30), &cancel);
        let release = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            lock.give_back(&lease).await.unwrap();
        };
        let (taken, ()) = tokio::join!(wait, release);
        assert_eq!(taken.unwrap().holder, "ci-c");
    }

    /// A rerun of a killed job takes its lock back at once; a lock held by
    /// a live process, or by another holder, it does not.
    #[tokio::test]
    async fn a_killed_run_of_this_job_is_taken_back_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateLocation::File(dir.path().join("s.json"));
        let lock_file = dir.path().join("s.json.lock");
        let lock = ReleaseLock::beside(&state, AwsSettings::default());
        let ours = Lease::new(&request(&crate::state::journal::actor(), 600));
        let write = |pid: u32, lease: &Lease| {
            std::fs::write(&lock_file, format!("{};pid={pid}", lease.encode())).unwrap();
        };

        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        dead.wait().unwrap();
        write(dead_pid, &ours);
        let taken = lock.take(&request("this-run", 600), None).await.unwrap();
        assert_eq!(lock.holders().await.unwrap()[0].token, taken.token);

        let mut alive = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        write(alive.id(), &ours);
        let err = lock
            .take(&request("this-run", 600), None)
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), Code::Conflict, "{err}");
        alive.kill().unwrap();
        alive.wait().unwrap();

        let theirs = Lease::new(&request("another-pipeline@agent-7", 600));
        write(dead_pid, &theirs);
        let err = lock
            .take(&request("this-run", 600), None)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("another-pipeline@agent-7"),
            "{err}"
        );
    }
}
