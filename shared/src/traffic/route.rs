//! A route named by checked settings, and the router that serves it: one
//! place that turns "which router, which resource" into a [`Router`], for
//! shift-weight and for `switchyard lock` alike.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_route53::types::RrType;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::alb::{AlbRouter, Target};
use super::haproxy::{Endpoint, HaproxyRouter, Members, RuntimeApi};
use super::route53::Route53Router;
use super::{Applied, Group, Lease, LeaseRequest, Router, TrafficError};
use crate::aws::{self, iam, AwsSettings};
use crate::state::Weights;

/// A route: where a weighted split of traffic lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A weighted record group.
    Route53 {
        zone_id: String,
        name: String,
        rtype: RrType,
    },
    /// A listener's or a rule's forward action.
    Alb { target: Target },
    /// An HAProxy backend.
    Haproxy {
        endpoint: Endpoint,
        backend: String,
        server_state_file: Option<PathBuf>,
        lock_file: PathBuf,
    },
}

/// What a shift says of a route beyond naming it. The default reads the
/// members from the route itself (what `switchyard lock` needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMembers {
    /// ALB members by name: target group ARN or name (empty: the target groups' names).
    pub alb: BTreeMap<String, String>,
    /// Target group stickiness to set on the forward action.
    pub stickiness: Option<Duration>,
    /// Which HAProxy servers make up each member.
    pub haproxy: Members,
    /// Longest wait for an HAProxy member going to 0 to finish its sessions.
    pub drain_timeout: Option<Duration>,
}

impl Default for RouteMembers {
    fn default() -> Self {
        Self {
            alb: BTreeMap::new(),
            stickiness: None,
            haproxy: Members::ByName,
            drain_timeout: None,
        }
    }
}

impl Route {
    /// The IAM policy of reading the route's lease, and with `release` of
    /// removing it. An HAProxy lease is a local file: no AWS permission.
    pub fn lease_policy(&self, release: bool) -> iam::Policy {
        match self {
            Self::Route53 {
                zone_id,
                name,
                rtype,
            } => super::route53::policy(zone_id, (name, rtype), release),
            Self::Alb { target } => {
                let mut policy = iam::Policy::new();
                if release {
                    super::alb::lease_tags_policy(
                        &mut policy,
                        target,
                        &["elasticloadbalancing:RemoveTags"],
                    );
                }
                // DescribeTags has no resource level.
                policy.allow("ReadLease", &["elasticloadbalancing:DescribeTags"], ["*"]);
                policy
            }
            Self::Haproxy { .. } => iam::Policy::new(),
        }
    }

    /// The IAM policy of a shift of this route: HAProxy needs none.
    pub fn shift_policy(&self, members: &RouteMembers) -> iam::Policy {
        match self {
            Self::Route53 {
                zone_id,
                name,
                rtype,
            } => super::route53::policy(zone_id, (name, rtype), true),
            Self::Alb { target } => super::alb::policy(
                target,
                members.alb.is_empty() || members.alb.values().any(|m| !m.starts_with("arn:")),
            ),
            Self::Haproxy { .. } => iam::Policy::new(),
        }
    }

    /// The router of this route.
    pub async fn open(self, members: RouteMembers, aws: &AwsSettings) -> AnyRouter {
        match self {
            Self::Route53 {
                zone_id,
                name,
                rtype,
            } => {
                let config = aws::load(aws).await;
                AnyRouter::Route53(Route53Router::new(
                    aws_sdk_route53::Client::new(&config),
                    &zone_id,
                    &name,
                    rtype,
                ))
            }
            Self::Alb { target } => {
                let config = aws::load(aws).await;
                AnyRouter::Alb(AlbRouter::new(
                    aws_sdk_elasticloadbalancingv2::Client::new(&config),
                    target,
                    members.alb,
                    members.stickiness,
                ))
            }
            Self::Haproxy {
                endpoint,
                backend,
                server_state_file,
                lock_file,
            } => {
                let api = RuntimeApi::new(endpoint, Duration::from_secs(10));
                let router = HaproxyRouter::new(
                    api,
                    &backend,
                    members.haproxy,
                    server_state_file,
                    lock_file,
                );
                AnyRouter::Haproxy(match members.drain_timeout {
                    Some(timeout) => router.with_drain_timeout(timeout),
                    None => router,
                })
            }
        }
    }
}

/// Any of the routers, chosen at run time.
#[derive(Debug)]
pub enum AnyRouter {
    /// Route53 weighted records.
    Route53(Route53Router),
    /// An ALB's weighted target groups.
    Alb(AlbRouter),
    /// An HAProxy backend.
    Haproxy(HaproxyRouter),
}

/// Calls `$call` on whichever router `$self` is.
macro_rules! each {
    ($self:ident, $r:ident => $call:expr) => {
        match $self {
            AnyRouter::Route53($r) => $call,
            AnyRouter::Alb($r) => $call,
            AnyRouter::Haproxy($r) => $call,
        }
    };
}

impl Router for AnyRouter {
    fn kind(&self) -> &'static str {
        each!(self, r => r.kind())
    }

    fn resource(&self) -> BTreeMap<String, String> {
        each!(self, r => r.resource())
    }

    fn id(&self) -> String {
        each!(self, r => r.id())
    }

    async fn read(&self) -> Result<Group, TrafficError> {
        each!(self, r => r.read().await)
    }

    async fn apply(&self, weights: &Weights) -> Result<Applied, TrafficError> {
        each!(self, r => r.apply(weights).await)
    }

    async fn wait_applied(
        &self,
        applied: &Applied,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<(), TrafficError> {
        each!(self, r => r.wait_applied(applied, deadline, cancel).await)
    }

    async fn apply_releasing(
        &self,
        weights: &Weights,
        lease: &Lease,
    ) -> Option<Result<Applied, TrafficError>> {
        each!(self, r => r.apply_releasing(weights, lease).await)
    }

    fn describe_change(&self, from: &Weights, to: &Weights) -> String {
        each!(self, r => r.describe_change(from, to))
    }

    async fn acquire_lease(
        &self,
        request: &LeaseRequest,
        ours: Option<&Lease>,
    ) -> Result<Lease, TrafficError> {
        each!(self, r => r.acquire_lease(request, ours).await)
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), TrafficError> {
        each!(self, r => r.release_lease(lease).await)
    }

    async fn leases(&self) -> Result<Vec<Lease>, TrafficError> {
        each!(self, r => r.leases().await)
    }

    fn lease_resource(&self) -> String {
        each!(self, r => r.lease_resource())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTENER: &str = "arn:aws:elasticloadbalancing:us-east-1:1:listener/app/lb/1/2";

    #[test]
    fn the_lease_policy_follows_the_router() {
        let alb = Route::Alb {
            target: Target::Listener(LISTENER.to_owned()),
        };
        assert!(alb
            .lease_policy(false)
            .allows("elasticloadbalancing:DescribeTags"));
        assert!(!alb
            .lease_policy(false)
            .allows("elasticloadbalancing:RemoveTags"));
        assert!(alb
            .lease_policy(true)
            .allows("elasticloadbalancing:RemoveTags"));
        let r53 = Route::Route53 {
            zone_id: "Z1".into(),
            name: "a".into(),
            rtype: RrType::A,
        };
        assert!(r53
            .lease_policy(true)
            .allows("route53:ChangeResourceRecordSets"));
        assert!(!r53
            .lease_policy(false)
            .allows("route53:ChangeResourceRecordSets"));
    }
}
