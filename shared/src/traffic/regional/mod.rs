//! Regional routing: record groups declared in a routes spec (JSON) and made
//! so at Route53. A group is one name and type answered by several members
//! (regions, clouds), all with one routing policy — weighted, latency or
//! geolocation — each with its own health check so that Route53 stops
//! answering with a failed member by itself.
//!
//! `apply` reads what each group holds, computes the difference and submits
//! one all-or-nothing change batch per hosted zone; the same spec applied
//! again submits nothing. A simple record (no set identifier) of the same name
//! and type is replaced by DELETE (exactly as it is) + CREATE in that batch.
//! Records of a group that the spec does not name are deleted only with
//! `prune`. A weighted member that exists keeps its weight unless
//! `reset_weights` is asked: moving traffic between existing members is
//! shift-weight's job (gated, with rollback). Health checks are found or
//! created by the same CallerReference `verify-health route53 ensure` uses.
//!
//! Three parts, each using only the ones before it:
//! - [`spec`]: the file as written and its checked form ([`Routes`]); no AWS.
//! - [`plan`]: what each group should be compared with what Route53 holds, as
//!   the changes to make ([`diff`]), and the [`ApplyReport`] that shows them.
//!   Pure functions over record sets, no calls.
//! - [`apply`](mod@apply): the calls: reads, health checks, one batch per zone,
//!   read back, the state file and its journal; and the IAM [`policy`].
//!
//! Everything public is re-exported here, so callers write
//! `regional::{load, apply, ApplyOptions}`.

pub mod apply;
pub mod plan;
pub mod spec;

pub use apply::{apply, policy, ApplyOptions};
pub use plan::{
    describe_set, diff, kept_weights, ApplyReport, BatchLine, ChangeLine, CheckLine, GroupReport,
    PlannedChange, Reason,
};
pub use spec::{
    check, json_schema, load, parse, AliasSpec, GeoSpec, Group, GroupSpec, HealthCheckSpec, Member,
    MemberSpec, Policy, RouteError, Routes, RoutesSpec, Routing, Target, CONTINENTS,
};
