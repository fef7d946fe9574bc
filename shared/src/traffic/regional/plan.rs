//! The plan: the record sets each checked group should be, compared with what
//! Route53 holds, as the changes that make them so ([`diff`]); and the
//! [`ApplyReport`] that shows the plan, or what `apply` did.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use aws_sdk_route53::types::{
    AliasTarget, ChangeAction, GeoLocation, ResourceRecord, ResourceRecordSet,
    ResourceRecordSetRegion, RrType,
};
use serde::Serialize;

use super::spec::{describe_geo, Group, Member, Policy, RouteError, Routes, Routing, Target};
use crate::aws::route53 as api;
use crate::health::route53::{self as checks, CheckKind, CheckSpec};
use crate::outcome::StepReport;
use crate::state::Weights;

/// The record set a member should be, with health check `check_id`.
fn desired_set(group: &Group, member: &Member, check_id: Option<&str>) -> ResourceRecordSet {
    let mut b = ResourceRecordSet::builder()
        .name(&group.name)
        .r#type(group.rtype.clone())
        .set_identifier(&member.set_id)
        .set_health_check_id(check_id.map(str::to_owned));
    b = match &member.routing {
        Routing::Weight(w) => b.weight(*w),
        Routing::Region(r) => b.region(ResourceRecordSetRegion::from(r.as_str())),
        Routing::Geo(g) => b.geo_location(
            GeoLocation::builder()
                .set_continent_code(g.continent.clone())
                .set_country_code(g.country.clone())
                .set_subdivision_code(g.subdivision.clone())
                .build(),
        ),
    };
    b = match &member.target {
        Target::Alias {
            dns_name,
            hosted_zone_id,
            evaluate,
        } => b.alias_target(
            AliasTarget::builder()
                .dns_name(dns_name)
                .hosted_zone_id(hosted_zone_id)
                .evaluate_target_health(*evaluate)
                .build()
                .expect("every alias field is set"),
        ),
        Target::Values { values, ttl } => b.ttl(*ttl).set_resource_records(Some(
            values
                .iter()
                .map(|v| {
                    ResourceRecord::builder()
                        .value(v)
                        .build()
                        .expect("value is set")
                })
                .collect(),
        )),
    };
    b.build().expect("name and type are set")
}

fn norm_value(rtype: &RrType, v: &str) -> String {
    if *rtype == RrType::Cname {
        api::normalize_name(v)
    } else {
        v.trim().to_owned()
    }
}

/// A record set in a few words, for plans and the journal.
pub fn describe_set(set: &ResourceRecordSet) -> String {
    let mut out = match (set.weight(), set.region(), set.geo_location()) {
        (Some(w), _, _) => format!("weight {w}"),
        (_, Some(r), _) => format!("region {}", r.as_str()),
        (_, _, Some(g)) => describe_geo(g.continent_code(), g.country_code(), g.subdivision_code()),
        _ => crate::aws::route53::routing_policy(set).to_owned(),
    };
    if let Some(a) = set.alias_target() {
        let _ = write!(
            out,
            ", alias {} ({}, evaluate target health {})",
            a.dns_name(),
            a.hosted_zone_id(),
            a.evaluate_target_health()
        );
    } else {
        let values: Vec<&str> = set
            .resource_records()
            .iter()
            .map(ResourceRecord::value)
            .collect();
        let _ = write!(out, ", {} TTL {}", values.join(" "), set.ttl().unwrap_or(0));
    }
    match set.health_check_id() {
        Some(id) => {
            let _ = write!(out, ", health check {id}");
        }
        None => out.push_str(", no health check"),
    }
    out
}

/// What differs between the record set as read and as it should be; empty
/// when they are the same.
fn differences(
    current: &ResourceRecordSet,
    desired: &ResourceRecordSet,
    rtype: &RrType,
) -> Vec<String> {
    let mut out = Vec::new();
    if current.weight() != desired.weight() {
        out.push(format!(
            "weight {}→{}",
            current.weight().map_or("none".into(), |w| w.to_string()),
            desired.weight().map_or("none".into(), |w| w.to_string())
        ));
    }
    if current.region() != desired.region() {
        out.push("region".into());
    }
    if current.geo_location() != desired.geo_location() {
        out.push("location".into());
    }
    match (current.alias_target(), desired.alias_target()) {
        (Some(a), Some(b)) => {
            if api::normalize_name(a.dns_name()) != api::normalize_name(b.dns_name())
                || a.hosted_zone_id() != b.hosted_zone_id()
            {
                out.push(format!("alias {}→{}", a.dns_name(), b.dns_name()));
            }
            if a.evaluate_target_health() != b.evaluate_target_health() {
                out.push(format!(
                    "evaluate target health {}→{}",
                    a.evaluate_target_health(),
                    b.evaluate_target_health()
                ));
            }
        }
        (None, None) => {
            let values = |s: &ResourceRecordSet| -> BTreeSet<String> {
                s.resource_records()
                    .iter()
                    .map(|r| norm_value(rtype, r.value()))
                    .collect()
            };
            if values(current) != values(desired) {
                out.push("values".into());
            }
            if current.ttl() != desired.ttl() {
                out.push(format!(
                    "TTL {}→{}",
                    current.ttl().unwrap_or(0),
                    desired.ttl().unwrap_or(0)
                ));
            }
        }
        _ => out.push("target (alias ↔ values)".into()),
    }
    if current.health_check_id() != desired.health_check_id() {
        out.push(format!(
            "health check {}→{}",
            current.health_check_id().unwrap_or("none"),
            desired.health_check_id().unwrap_or("none")
        ));
    }
    if current.failover().is_some()
        || current.multi_value_answer().is_some()
        || current.cidr_routing_config().is_some()
        || current.geo_proximity_location().is_some()
    {
        out.push(format!(
            "routing policy {}",
            crate::aws::route53::routing_policy(current)
        ));
    }
    out
}

/// Why a change is in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A simple record of the name and type, replaced by the group's members.
    Conversion,
    /// A member of the spec that is not there yet.
    New,
    /// A member whose record differs from the spec.
    Update,
    /// A member whose routing policy changes: deleted and created again.
    Replace,
    /// A record of the group that the spec does not name (needs `prune`).
    Prune,
}

/// One change of a plan.
#[derive(Debug, Clone)]
pub struct PlannedChange {
    /// CREATE, DELETE or UPSERT.
    pub action: ChangeAction,
    /// The record set as sent.
    pub set: ResourceRecordSet,
    /// Why.
    pub reason: Reason,
    /// What changes, in words.
    pub detail: String,
}

/// The changes that make `current` (a group as read) what `group` declares,
/// with each member's health check id from `check_ids`. DELETEs come first,
/// then CREATEs, then UPSERTs, so that one batch can convert a name. With
/// `keep_weights`, a weighted member that exists keeps its weight (see
/// [`kept_weights`]).
pub fn diff(
    group: &Group,
    current: &[ResourceRecordSet],
    check_ids: &BTreeMap<String, String>,
    keep_weights: bool,
) -> Vec<PlannedChange> {
    let mut deletes = Vec::new();
    let mut creates = Vec::new();
    let mut upserts = Vec::new();
    for set in current {
        let Some(id) = set.set_identifier() else {
            deletes.push(PlannedChange {
                action: ChangeAction::Delete,
                set: set.clone(),
                reason: Reason::Conversion,
                detail: format!(
                    "simple record ({}) converted to {}",
                    describe_set(set),
                    group.policy.as_str()
                ),
            });
            continue;
        };
        if !group.members.iter().any(|m| m.set_id == id) {
            deletes.push(PlannedChange {
                action: ChangeAction::Delete,
                set: set.clone(),
                reason: Reason::Prune,
                detail: format!("{id} ({}): not in the spec", describe_set(set)),
            });
        }
    }
    for member in &group.members {
        let desired = desired_set(
            group,
            member,
            check_ids.get(&member.set_id).map(String::as_str),
        );
        let existing = current
            .iter()
            .find(|s| s.set_identifier() == Some(member.set_id.as_str()));
        match existing {
            None => creates.push(PlannedChange {
                action: ChangeAction::Create,
                detail: format!("{}: {}", member.set_id, describe_set(&desired)),
                set: desired,
                reason: Reason::New,
            }),
            Some(set) if crate::aws::route53::routing_policy(set) != group.policy.as_str() => {
                deletes.push(PlannedChange {
                    action: ChangeAction::Delete,
                    set: set.clone(),
                    reason: Reason::Replace,
                    detail: format!(
                        "{} ({}): {} record replaced by a {} one",
                        member.set_id,
                        describe_set(set),
                        crate::aws::route53::routing_policy(set),
                        group.policy.as_str()
                    ),
                });
                creates.push(PlannedChange {
                    action: ChangeAction::Create,
                    detail: format!("{}: {}", member.set_id, describe_set(&desired)),
                    set: desired,
                    reason: Reason::Replace,
                });
            }
            Some(set) => {
                let mut desired = desired;
                if keep_weights && set.weight().is_some() {
                    desired.weight = set.weight();
                }
                let what = differences(set, &desired, &group.rtype);
                if !what.is_empty() {
                    upserts.push(PlannedChange {
                        action: ChangeAction::Upsert,
                        detail: format!("{}: {}", member.set_id, what.join(", ")),
                        set: desired,
                        reason: Reason::Update,
                    });
                }
            }
        }
    }
    deletes.extend(creates);
    deletes.extend(upserts);
    deletes
}

/// Weighted members whose weight at Route53 differs from the spec's, as
/// (member, weight now, weight in the spec). Moving traffic between existing
/// members is shift-weight's job (gated, with rollback), so `apply` keeps
/// these weights unless asked to reset them.
pub fn kept_weights(group: &Group, current: &[ResourceRecordSet]) -> Vec<(String, i64, i64)> {
    group
        .members
        .iter()
        .filter_map(|m| {
            let Routing::Weight(spec) = m.routing else {
                return None;
            };
            let now = current
                .iter()
                .find(|s| s.set_identifier() == Some(m.set_id.as_str()))?
                .weight()?;
            (now != spec).then(|| (m.set_id.clone(), now, spec))
        })
        .collect()
}

/// Each member's health check as it exists (or `(to be created)`), per group,
/// and the report's lines about them.
pub(super) fn known_checks(
    routes: &Routes,
    existing: &[(String, String)],
) -> (Vec<CheckLine>, Vec<BTreeMap<String, String>>) {
    let mut lines = Vec::new();
    let mut ids = Vec::new();
    for g in &routes.groups {
        let mut map = BTreeMap::new();
        for m in &g.members {
            let Some((cm, spec)) = &m.check else { continue };
            let reference = checks::caller_reference(&g.zone_id, &g.name, cm, spec);
            let found = existing
                .iter()
                .find(|(r, _)| *r == reference)
                .map(|(_, id)| id.clone());
            map.insert(
                m.set_id.clone(),
                found
                    .clone()
                    .unwrap_or_else(|| "(to be created)".to_owned()),
            );
            lines.push(CheckLine {
                route: g.route(),
                set_id: m.set_id.clone(),
                created: found.is_none(),
                health_check_id: found.unwrap_or_default(),
                detail: describe_check(cm, spec),
                replaced: None,
                replaced_deleted: false,
            });
        }
        ids.push(map);
    }
    (lines, ids)
}

/// The plan of every group ([`diff`] of each).
pub(super) fn plan_all(
    routes: &Routes,
    current: &[Vec<ResourceRecordSet>],
    ids: &[BTreeMap<String, String>],
    keep_weights: bool,
) -> Vec<Vec<PlannedChange>> {
    routes
        .groups
        .iter()
        .zip(current)
        .zip(ids)
        .map(|((g, cur), ids)| diff(g, cur, ids, keep_weights))
        .collect()
}

/// Per group, the weights `apply` keeps (none when resetting them).
pub(super) fn kept_all(
    routes: &Routes,
    current: &[Vec<ResourceRecordSet>],
    reset_weights: bool,
) -> Vec<Vec<(String, i64, i64)>> {
    routes
        .groups
        .iter()
        .zip(current)
        .map(|(g, cur)| {
            if reset_weights {
                Vec::new()
            } else {
                kept_weights(g, cur)
            }
        })
        .collect()
}

/// Deleting records the spec does not name needs `--prune`.
pub(super) fn refuse_unasked_prune(
    routes: &Routes,
    plans: &[Vec<PlannedChange>],
    prune: bool,
) -> Result<(), RouteError> {
    let pruned: Vec<String> = routes
        .groups
        .iter()
        .zip(plans)
        .flat_map(|(g, p)| {
            p.iter()
                .filter(|c| c.reason == Reason::Prune)
                .map(move |c| format!("{} {}", g.route(), c.detail))
        })
        .collect();
    if pruned.is_empty() || prune {
        return Ok(());
    }
    Err(RouteError::Prune(format!(
        "the spec would delete records it does not name: {}; pass --prune to delete them, or add them to the spec",
        pruned.join("; ")
    )))
}

/// A health check in a few words, for the report and the journal.
pub(super) fn describe_check(m: &checks::Member, spec: &CheckSpec) -> String {
    let kind = spec.kind.name();
    let path = if spec.kind == CheckKind::Tcp {
        ""
    } else {
        m.path.as_str()
    };
    format!(
        "{kind} {}:{}{path} every {}s, unhealthy after {} failure(s)",
        m.host, m.port, spec.request_interval, spec.failure_threshold
    )
}

/// One group in the report.
#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    /// The route (`route53:ZONE/NAME/TYPE`).
    pub route: String,
    /// Its routing policy.
    pub policy: Policy,
    /// The changes, in the order sent.
    pub changes: Vec<ChangeLine>,
    /// Members already as declared.
    pub unchanged: Vec<String>,
    /// Health check id per member.
    pub health_checks: BTreeMap<String, String>,
    /// Existing weighted members that kept their weight although the spec
    /// gives another one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept_weights: Vec<String>,
    /// Weights after the apply (weighted groups).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub weights: Weights,
}

/// One change in the report.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeLine {
    /// CREATE, DELETE or UPSERT.
    pub action: String,
    /// Why.
    pub reason: Reason,
    /// What.
    pub detail: String,
}

/// A health check in the report.
#[derive(Debug, Clone, Serialize)]
pub struct CheckLine {
    /// The route of the member.
    pub route: String,
    /// The member.
    pub set_id: String,
    /// Its id (empty when a dry run would create it).
    pub health_check_id: String,
    /// Whether this run created it (or, in a dry run, would).
    pub created: bool,
    /// What it checks.
    pub detail: String,
    /// The check the member's record set used before, when this replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<String>,
    /// Whether the replaced check was (or, in a dry run, would be) deleted:
    /// switchyard made it and no record of the spec uses it any more.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replaced_deleted: bool,
}

/// One submitted change batch.
#[derive(Debug, Clone, Serialize)]
pub struct BatchLine {
    /// Hosted zone.
    pub zone_id: String,
    /// Number of changes.
    pub changes: usize,
    /// Route53's change id (empty in a dry run).
    pub change_id: String,
}

/// What `apply` did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Per group.
    pub groups: Vec<GroupReport>,
    /// Health checks of every member that has one.
    pub health_checks: Vec<CheckLine>,
    /// Change batches, one per zone with changes.
    pub batches: Vec<BatchLine>,
}

impl ApplyReport {
    /// Whether nothing was (or would be) changed.
    pub fn no_change(&self) -> bool {
        self.batches.is_empty() && !self.health_checks.iter().any(|c| c.created)
    }
}

impl StepReport for ApplyReport {
    fn text(&self) -> String {
        let mut t = String::new();
        let verb = |done: &str, would: &str| {
            if self.dry_run {
                would.to_owned()
            } else {
                done.to_owned()
            }
        };
        for c in self.health_checks.iter().filter(|c| c.created) {
            let _ = writeln!(
                t,
                "{} health check for {} of {}: {}{}",
                verb("created", "would create"),
                c.set_id,
                c.route,
                c.detail,
                if c.health_check_id.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", c.health_check_id)
                }
            );
        }
        for c in &self.health_checks {
            if let (Some(old), true) = (&c.replaced, c.replaced_deleted) {
                let _ = writeln!(
                    t,
                    "{} health check {old}, which {} of {} no longer uses",
                    verb("deleted", "would delete"),
                    c.set_id,
                    c.route
                );
            }
        }
        for g in &self.groups {
            let _ = writeln!(t, "{} ({}):", g.route, g.policy.as_str());
            for k in &g.kept_weights {
                let _ = writeln!(t, "  kept {k}");
            }
            if g.changes.is_empty() {
                let _ = writeln!(
                    t,
                    "  no change: {} member(s) as declared",
                    g.unchanged.len()
                );
                continue;
            }
            for c in &g.changes {
                let _ = writeln!(t, "  {} {}", c.action, c.detail);
            }
            if !g.unchanged.is_empty() {
                let _ = writeln!(t, "  unchanged: {}", g.unchanged.join(", "));
            }
        }
        for b in &self.batches {
            let _ = writeln!(
                t,
                "zone {}: {} one ChangeResourceRecordSets batch of {} change(s){}",
                b.zone_id,
                verb("submitted", "would submit"),
                b.changes,
                if b.change_id.is_empty() {
                    String::new()
                } else {
                    format!(", change {} INSYNC", b.change_id)
                }
            );
        }
        if self.no_change() {
            t.push_str("no change: every group is as the spec declares\n");
        }
        t
    }

    fn outputs(&self) -> Vec<(String, String)> {
        let ids: Vec<String> = self.batches.iter().map(|b| b.change_id.clone()).collect();
        vec![
            ("changed".into(), (!self.no_change()).to_string()),
            ("change-ids".into(), ids.join(",")),
        ]
    }

    fn summary(&self) -> String {
        let mut s = String::from(
            "### switchyard route apply\n\n| group | policy | changes |\n|---|---|---|\n",
        );
        for g in &self.groups {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                g.route,
                g.policy.as_str(),
                g.changes.len()
            );
        }
        s
    }
}

/// The report of `apply` (or of its plan, with `dry_run`).
pub(super) fn report(
    routes: &Routes,
    plans: &[Vec<PlannedChange>],
    ids: &[BTreeMap<String, String>],
    kept: &[Vec<(String, i64, i64)>],
    health_checks: Vec<CheckLine>,
    batches: Vec<BatchLine>,
    dry_run: bool,
) -> ApplyReport {
    let groups = routes
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let touched: BTreeSet<&str> = plans[i]
                .iter()
                .filter_map(|c| c.set.set_identifier())
                .collect();
            GroupReport {
                route: g.route(),
                policy: g.policy,
                changes: plans[i]
                    .iter()
                    .map(|c| ChangeLine {
                        action: c.action.as_str().to_owned(),
                        reason: c.reason,
                        detail: c.detail.clone(),
                    })
                    .collect(),
                unchanged: g
                    .members
                    .iter()
                    .filter(|m| !touched.contains(m.set_id.as_str()))
                    .map(|m| m.set_id.clone())
                    .collect(),
                health_checks: ids[i]
                    .iter()
                    .filter(|(_, id)| !id.starts_with('('))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                kept_weights: kept[i]
                    .iter()
                    .map(|(id, now, spec)| {
                        format!("{id} weight {now} (the spec says {spec}; shift-weight moves traffic between members, gated; --reset-weights sets the spec's weights)")
                    })
                    .collect(),
                weights: g
                    .members
                    .iter()
                    .filter_map(|m| match m.routing {
                        Routing::Weight(w) => {
                            let kept = kept[i].iter().find(|(id, _, _)| *id == m.set_id);
                            let w = kept.map_or(w, |(_, now, _)| *now);
                            Some((m.set_id.clone(), u32::try_from(w).unwrap_or(0)))
                        }
                        _ => None,
                    })
                    .collect(),
            }
        })
        .collect();
    ApplyReport {
        dry_run,
        groups,
        health_checks,
        batches,
    }
}
