//! Moving traffic: the [`Router`] seam (one file per router: [`route53`],
//! [`alb`], [`haproxy`]), the weight
//! arithmetic of a shift ([`plan`]), the deployment lease ([`lease`]), the
//! route a router serves ([`route`]), the engine that walks a shift step by
//! step with gates and rollback ([`shift`]), and regional record groups
//! declared in a routes spec ([`regional`]).

pub mod alb;
pub mod haproxy;
pub mod lock;
pub mod plan;
pub mod regional;
pub mod route;
pub mod route53;
pub mod shift;

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::aws::ProviderError;
use crate::lease::{Held, LeaseFailure, LeaseStore};
pub use crate::lease::{Lease, LeaseRequest};
use crate::outcome::{Code, ExitStatus};
use crate::state::StateDocument;
use crate::state::Weights;
pub use route::{AnyRouter, Route, RouteMembers};

/// A weighted group as the router reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Weight per member.
    pub weights: Weights,
    /// How long after a change is applied until clients see it (a DNS record's
    /// TTL; zero for a load balancer or proxy).
    pub settle: Duration,
}

/// A change handed to the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The provider's reference (a Route53 change id), if it gives one.
    pub reference: Option<String>,
    /// Whether the provider already reports it in effect.
    pub in_sync: bool,
}

/// Errors of a router.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    #[error("no record group {0}: nothing has that name and type")]
    NoSuchGroup(String),
    #[error("{route} does not exist: {detail}")]
    NoSuchRoute { route: String, detail: String },
    #[error("{route} is not a weighted group: {detail}")]
    NotWeighted { route: String, detail: String },
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Interrupted(String),
    #[error("cannot save the state file: {0}")]
    State(String),
    #[error("{resource} is locked by {holder} until {expires}; another deployment is running (or wait for the lock to expire)")]
    LeaseHeld {
        resource: String,
        holder: String,
        expires: String,
    },
    #[error("read back of {route} shows {found}, expected {expected}")]
    ReadBack {
        route: String,
        expected: String,
        found: String,
    },
}

impl ExitStatus for TrafficError {
    fn exit_code(&self) -> Code {
        match self {
            Self::NoSuchGroup(_) | Self::NoSuchRoute { .. } | Self::NotWeighted { .. } => {
                Code::Usage
            }
            Self::Provider(_) | Self::Timeout(_) | Self::ReadBack { .. } | Self::State(_) => {
                Code::Provider
            }
            Self::Interrupted(_) => Code::Interrupted,
            Self::LeaseHeld { .. } => Code::Conflict,
        }
    }
}

impl LeaseFailure for TrafficError {
    fn held(self) -> Result<Held, Self> {
        match self {
            Self::LeaseHeld {
                resource,
                holder,
                expires,
            } => Ok(Held {
                resource,
                holder,
                expires,
            }),
            other => Err(other),
        }
    }

    fn from_held(held: Held) -> Self {
        Self::LeaseHeld {
            resource: held.resource,
            holder: held.holder,
            expires: held.expires,
        }
    }

    fn interrupted(message: String) -> Self {
        Self::Interrupted(message)
    }
}

/// A route's lease lives in its router; a run records it in the route's
/// state entry before taking it.
impl<R: Router> LeaseStore for R {
    type Error = TrafficError;

    async fn take(
        &self,
        request: &LeaseRequest,
        ours: Option<&Lease>,
    ) -> Result<Lease, TrafficError> {
        self.acquire_lease(request, ours).await
    }

    async fn give_back(&self, lease: &Lease) -> Result<(), TrafficError> {
        self.release_lease(lease).await
    }

    async fn holders(&self) -> Result<Vec<Lease>, TrafficError> {
        self.leases().await
    }

    fn place(&self) -> String {
        self.lease_resource()
    }

    fn recorded(&self, doc: &StateDocument) -> Option<Lease> {
        doc.traffic
            .get(&self.id())
            .and_then(|r| crate::lease::recorded_ours(&r.extra, "lease"))
    }

    fn forget(&self, doc: &mut StateDocument) {
        if let Some(route) = doc.traffic.get_mut(&self.id()) {
            crate::lease::forget(&mut route.extra, "lease");
        }
    }

    fn journal_key(&self) -> (&'static str, String) {
        ("route", self.id())
    }
}

/// Something that splits traffic between members by weight: Route53 weighted
/// records, an ALB listener's target groups, an HAProxy backend's servers.
///
/// Every change is one atomic provider call, and is read back afterwards.
#[allow(async_fn_in_trait)]
pub trait Router {
    /// The router kind as written in the state: `route53`, `alb`, `haproxy`.
    fn kind(&self) -> &'static str;

    /// What identifies the route at the provider.
    fn resource(&self) -> BTreeMap<String, String>;

    /// The route's key in the state's traffic section.
    fn id(&self) -> String;

    /// Reads the current weights.
    async fn read(&self) -> Result<Group, TrafficError>;

    /// Sets `weights` in one atomic call. Members whose weight does not change
    /// are left untouched; everything but the weights is kept as it is.
    async fn apply(&self, weights: &Weights) -> Result<Applied, TrafficError>;

    /// Waits until the provider reports `applied` in effect.
    async fn wait_applied(
        &self,
        applied: &Applied,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<(), TrafficError>;

    /// A one-line description of the call that `apply` would make, for plans.
    fn describe_change(&self, from: &Weights, to: &Weights) -> String;

    /// Takes the deployment lease of this route, or fails with
    /// [`TrafficError::LeaseHeld`]. `ours` is the lease this deployment held
    /// before (from the state), which it may take back.
    async fn acquire_lease(
        &self,
        request: &LeaseRequest,
        ours: Option<&Lease>,
    ) -> Result<Lease, TrafficError>;

    /// Gives the lease back.
    async fn release_lease(&self, lease: &Lease) -> Result<(), TrafficError>;

    /// Sets `weights` and gives `lease` back in the same atomic call, where
    /// the provider allows it (Route53: one change batch, which also fails
    /// whole if the lease is no longer this run's). `None` when it does not:
    /// the caller applies, then releases.
    async fn apply_releasing(
        &self,
        weights: &Weights,
        lease: &Lease,
    ) -> Option<Result<Applied, TrafficError>> {
        let _ = (weights, lease);
        None
    }

    /// The leases held on this route now (none when it is free).
    async fn leases(&self) -> Result<Vec<Lease>, TrafficError>;

    /// Where the lease lives, for plans and messages.
    fn lease_resource(&self) -> String;
}

/// Weights as `a=1,b=2`, in member order.
pub fn format_weights(weights: &Weights) -> String {
    weights
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
pub(crate) mod fake;
