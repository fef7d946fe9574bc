//! An in-memory [`Router`] for tests of the engines above the seam (as
//! hyperfine tests its benchmark logic over a `MockExecutor`): the weights
//! live in a map and the lease in a slot, every call is recorded, and it
//! fails, drops a change or finds its lease held when told to.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{format_weights, Applied, Group, Lease, LeaseRequest, Router, TrafficError};
use crate::aws::ProviderError;
use crate::state::{StateFile, Weights};

/// A call the router received, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Read,
    Apply(Weights),
    WaitApplied(Option<String>),
    TakeLease,
    ReleaseLease,
    Leases,
}

#[derive(Debug, Default)]
struct Inner {
    weights: Weights,
    lease: Option<Lease>,
    calls: Vec<Call>,
    /// Applies so far.
    applies: usize,
    /// The apply (from 1) that fails.
    fail_apply: Option<usize>,
    /// The apply (from 1) that is accepted and changes nothing.
    drop_apply: Option<usize>,
    /// Whether giving the lease back fails.
    fail_release: bool,
    /// The state file to read at each apply, and what it held each time.
    watched: Option<PathBuf>,
    states: Vec<String>,
}

/// A weighted route `fake:app` in memory. Clones share it, so a test keeps
/// one to look inside while the engine drives another.
#[derive(Debug, Clone)]
pub struct FakeRouter {
    inner: Arc<Mutex<Inner>>,
}

impl FakeRouter {
    /// A route with these members and weights; changes are in effect at once
    /// and clients see them at once (no TTL).
    pub fn new(weights: &[(&str, u32)]) -> Self {
        let inner = Inner {
            weights: weights.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            ..Inner::default()
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The `n`th apply (counting from 1 over the router's life) fails with a
    /// provider error and changes nothing.
    pub fn fail_apply_at(&self, n: usize) {
        self.lock().fail_apply = Some(n);
    }

    /// The `n`th apply is accepted but changes nothing, so that a read-back
    /// finds the weights as they were.
    pub fn drop_apply_at(&self, n: usize) {
        self.lock().drop_apply = Some(n);
    }

    /// Giving the lease back fails (the lease stays held).
    pub fn fail_release(&self) {
        self.lock().fail_release = true;
    }

    /// Another deployment, `holder`, holds the lease for the next hour.
    pub fn hold_lease(&self, holder: &str) {
        let lease = Lease::new(&LeaseRequest {
            holder: holder.to_owned(),
            message: None,
            expires: Utc::now() + Duration::from_secs(3600),
            token: None,
        });
        self.lock().lease = Some(lease);
    }

    /// Reads `file` at each apply, before the change: see [`Self::states_at_apply`].
    pub fn watch_state(&self, file: &StateFile) {
        self.lock().watched = Some(file.path().to_path_buf());
    }

    /// The state file's text as each apply found it.
    pub fn states_at_apply(&self) -> Vec<String> {
        self.lock().states.clone()
    }

    /// The weights now.
    pub fn weights(&self) -> Weights {
        self.lock().weights.clone()
    }

    /// The lease held now.
    pub fn lease(&self) -> Option<Lease> {
        self.lock().lease.clone()
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The weights of every apply so far, dropped and failed ones included.
    pub fn applied(&self) -> Vec<Weights> {
        self.lock()
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Apply(w) => Some(w.clone()),
                _ => None,
            })
            .collect()
    }
}

impl Router for FakeRouter {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn resource(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("group".to_owned(), "app".to_owned())])
    }

    fn id(&self) -> String {
        "fake:app".to_owned()
    }

    async fn read(&self) -> Result<Group, TrafficError> {
        let mut inner = self.lock();
        inner.calls.push(Call::Read);
        Ok(Group {
            weights: inner.weights.clone(),
            settle: Duration::ZERO,
        })
    }

    async fn apply(&self, weights: &Weights) -> Result<Applied, TrafficError> {
        let mut inner = self.lock();
        inner.calls.push(Call::Apply(weights.clone()));
        inner.applies += 1;
        let n = inner.applies;
        if let Some(path) = &inner.watched {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            inner.states.push(text);
        }
        if inner.fail_apply == Some(n) {
            return Err(ProviderError {
                operation: "fake:Apply",
                code: Some("Throttling".to_owned()),
                message: format!("change {n} refused"),
            }
            .into());
        }
        if inner.drop_apply != Some(n) {
            for (member, weight) in weights {
                inner.weights.insert(member.clone(), *weight);
            }
        }
        Ok(Applied {
            reference: Some(format!("change-{n}")),
            in_sync: true,
        })
    }

    async fn wait_applied(
        &self,
        applied: &Applied,
        _deadline: Instant,
        _cancel: &CancellationToken,
    ) -> Result<(), TrafficError> {
        self.lock()
            .calls
            .push(Call::WaitApplied(applied.reference.clone()));
        Ok(())
    }

    fn describe_change(&self, from: &Weights, to: &Weights) -> String {
        format!("set {} (was {})", format_weights(to), format_weights(from))
    }

    async fn acquire_lease(
        &self,
        request: &LeaseRequest,
        ours: Option<&Lease>,
    ) -> Result<Lease, TrafficError> {
        let mut inner = self.lock();
        inner.calls.push(Call::TakeLease);
        if let Some(held) = &inner.lease {
            let own = ours.is_some_and(|o| o.same_run(held));
            if !own && !held.expired(Utc::now()) {
                return Err(TrafficError::LeaseHeld {
                    resource: self.lease_resource(),
                    holder: held.holder.clone(),
                    expires: held.expires.to_rfc3339(),
                });
            }
        }
        let lease = Lease::new(request);
        inner.lease = Some(lease.clone());
        Ok(lease)
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), TrafficError> {
        let mut inner = self.lock();
        inner.calls.push(Call::ReleaseLease);
        if inner.fail_release {
            return Err(TrafficError::Timeout(
                "the lease store did not answer".into(),
            ));
        }
        if inner
            .lease
            .as_ref()
            .is_some_and(|held| held.same_run(lease))
        {
            inner.lease = None;
        }
        Ok(())
    }

    async fn leases(&self) -> Result<Vec<Lease>, TrafficError> {
        let mut inner = self.lock();
        inner.calls.push(Call::Leases);
        Ok(inner.lease.iter().cloned().collect())
    }

    fn lease_resource(&self) -> String {
        "fake:app/lease".to_owned()
    }
}
