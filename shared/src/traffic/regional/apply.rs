//! The calls: `apply` reads every group, plans, creates the missing health
//! checks, submits one change batch per hosted zone, waits for it INSYNC,
//! reads it back and records it in the state file and its journal; and the
//! IAM [`policy`] those calls need.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_route53::types::{ChangeAction, ResourceRecordSet};
use aws_sdk_route53::Client;
use chrono::Utc;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::plan::{
    describe_check, describe_set, diff, kept_all, known_checks, plan_all, refuse_unasked_prune,
    report, ApplyReport, BatchLine, CheckLine, PlannedChange,
};
use super::spec::{RouteError, Routes};
use crate::aws::route53 as api;
use crate::health::route53 as checks;
use crate::state::{
    steps, Change, JournalEntry, Outcome, RouteState, StateDocument, StateFile, Weights,
};
use crate::traffic::route53::Route53Router;
use crate::traffic::{Router, TrafficError};
use crate::wait::Backoff;

/// How `apply` runs.
#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions {
    /// Print the plan and change nothing.
    pub dry_run: bool,
    /// Delete records of a group that the spec does not name.
    pub prune: bool,
    /// Set the spec's weights on existing weighted members too (by default
    /// they keep the weights they have, which shift-weight manages).
    pub reset_weights: bool,
    /// Deadline of the whole apply.
    pub timeout: Duration,
    /// GetChange polling.
    pub backoff: Backoff,
}

/// Makes every group of `routes` what the spec declares: health checks found
/// or created, one change batch per zone, waited INSYNC, read back, recorded
/// in the state file and its journal. With `dry_run`, reads only and reports
/// the plan.
pub async fn apply(
    client: &Client,
    routes: &Routes,
    file: &StateFile,
    options: &ApplyOptions,
    cancel: &CancellationToken,
) -> Result<ApplyReport, RouteError> {
    let deadline = Instant::now() + options.timeout;
    let mut doc = file.load().await?;

    // Read everything first; nothing changes until the whole plan is known.
    let current = read_groups(client, routes, &doc, file).await?;
    let existing = if routes
        .groups
        .iter()
        .any(|g| g.members.iter().any(|m| m.check.is_some()))
    {
        checks::existing_checks(client).await?
    } else {
        Vec::new()
    };
    let (mut check_lines, mut ids) = known_checks(routes, &existing);
    let plans = plan_all(routes, &current, &ids, !options.reset_weights);
    refuse_unasked_prune(routes, &plans, options.prune)?;

    if options.dry_run {
        mark_replaced(routes, &current, &existing, &mut check_lines);
        let batches = planned_batches(routes, &plans);
        let kept = kept_all(routes, &current, options.reset_weights);
        return Ok(report(
            routes,
            &plans,
            &ids,
            &kept,
            check_lines,
            batches,
            true,
        ));
    }

    // Create the missing health checks, then plan again with their real ids.
    create_checks(
        client,
        routes,
        &existing,
        &mut ids,
        &mut check_lines,
        &mut doc,
    )
    .await?;
    let plans = plan_all(routes, &current, &ids, !options.reset_weights);

    let mut batches = Vec::new();
    for (zone, in_zone) in zone_batches(routes, &plans) {
        let changes = zone_changes(&plans, &in_zone);
        let count = changes.len();
        let submitted = submit(client, &zone, changes, &mut doc, file).await?;
        doc.record(journal_entry(
            routes,
            &plans,
            &current,
            &zone,
            &in_zone,
            &submitted.id,
        ));
        file.save(&mut doc).await?;
        api::wait_insync(client, &submitted, deadline, cancel, options.backoff).await?;
        batches.push(BatchLine {
            zone_id: zone,
            changes: count,
            change_id: submitted.id,
        });
    }
    read_back(client, routes, &plans, &ids, !options.reset_weights).await?;
    // The records use the new checks now: the replaced ones switchyard made go.
    mark_replaced(routes, &current, &existing, &mut check_lines);
    delete_replaced(client, &mut check_lines, &mut doc).await?;

    let kept = kept_all(routes, &current, options.reset_weights);
    let report = report(routes, &plans, &ids, &kept, check_lines, batches, false);
    record_routes(&mut doc, routes, &report);
    file.save(&mut doc).await?;
    Ok(report)
}

/// Marks each member whose record set uses another check than its new one
/// with the old one, and whether it goes: switchyard made it and no member
/// of the spec keeps it.
fn mark_replaced(
    routes: &Routes,
    current: &[Vec<ResourceRecordSet>],
    existing: &[(String, String)],
    lines: &mut [CheckLine],
) {
    let kept: Vec<String> = lines.iter().map(|l| l.health_check_id.clone()).collect();
    for l in lines.iter_mut() {
        let Some(i) = routes.groups.iter().position(|g| g.route() == l.route) else {
            continue;
        };
        let old = current[i]
            .iter()
            .find(|s| s.set_identifier() == Some(l.set_id.as_str()))
            .and_then(ResourceRecordSet::health_check_id);
        if let Some(old) = old.filter(|o| *o != l.health_check_id) {
            l.replaced = Some(old.to_owned());
            l.replaced_deleted =
                !kept.iter().any(|k| k == old) && checks::made_by_switchyard(existing, old);
        }
    }
}

/// Deletes the replaced checks marked to go; journals them.
async fn delete_replaced(
    client: &Client,
    lines: &mut [CheckLine],
    doc: &mut StateDocument,
) -> Result<(), RouteError> {
    let mut entry = JournalEntry::new(steps::SWITCHYARD, "health-checks-deleted", Outcome::Ok);
    let mut any = false;
    for l in lines.iter_mut().filter(|l| l.replaced_deleted) {
        let old = l.replaced.clone().unwrap_or_default();
        l.replaced_deleted = checks::delete_check(client, &old).await?;
        if l.replaced_deleted {
            any = true;
            entry = entry.change(Change {
                resource: format!("route53:healthcheck/{old}"),
                before: Some(format!("replaced on {}#{}", l.route, l.set_id).into()),
                after: Some("deleted".into()),
                reference: None,
            });
        }
    }
    if any {
        doc.record(entry.detail("health checks replaced and no longer used"));
    }
    Ok(())
}

/// Reads every group, refusing a route whose shift is unfinished or whose
/// lease another run holds.
async fn read_groups(
    client: &Client,
    routes: &Routes,
    doc: &StateDocument,
    file: &StateFile,
) -> Result<Vec<Vec<ResourceRecordSet>>, RouteError> {
    let mut current = Vec::new();
    for g in &routes.groups {
        let state = doc.traffic.get(&g.route());
        if let Some(shift) = state.and_then(|r| r.shift.as_ref()) {
            if shift.status.is_unfinished() {
                return Err(RouteError::ShiftUnfinished {
                    route: g.route(),
                    status: format!("{:?}", shift.status).to_lowercase(),
                    state: file.location().to_string(),
                });
            }
        }
        let lock = Route53Router::new(client.clone(), &g.zone_id, &g.name, g.rtype.clone());
        let now = Utc::now();
        if let Some(held) = lock.leases().await?.into_iter().find(|l| !l.expired(now)) {
            let ours = state
                .and_then(|r| crate::lease::recorded_ours(&r.extra, "lease"))
                .is_some_and(|l| l.same_run(&held));
            if !ours {
                return Err(TrafficError::LeaseHeld {
                    resource: lock.lease_resource(),
                    holder: held.holder.clone(),
                    expires: held.expires.to_rfc3339(),
                }
                .into());
            }
        }
        current.push(api::list_group(client, &g.zone_id, &g.name, &g.rtype).await?);
    }
    Ok(current)
}

/// Finds or creates every member's health check, journaling the ones it
/// creates, and puts their ids into `ids` and `lines`.
async fn create_checks(
    client: &Client,
    routes: &Routes,
    existing: &[(String, String)],
    ids: &mut [BTreeMap<String, String>],
    lines: &mut [CheckLine],
    doc: &mut StateDocument,
) -> Result<(), RouteError> {
    for (g, map) in routes.groups.iter().zip(ids.iter_mut()) {
        for m in &g.members {
            let Some((cm, spec)) = &m.check else { continue };
            let (id, created) =
                checks::find_or_create(client, existing, &g.zone_id, &g.name, cm, spec).await?;
            if created {
                doc.record(
                    JournalEntry::new(steps::SWITCHYARD, "health-check-created", Outcome::Ok)
                        .detail(format!(
                            "{} of {}: {}",
                            m.set_id,
                            g.route(),
                            describe_check(cm, spec)
                        ))
                        .with("route", g.route())
                        .with("health_check_id", id.clone()),
                );
                if let Some(line) = lines
                    .iter_mut()
                    .find(|l| l.route == g.route() && l.set_id == m.set_id)
                {
                    line.health_check_id.clone_from(&id);
                }
            }
            map.insert(m.set_id.clone(), id);
        }
    }
    Ok(())
}

/// The groups with changes per hosted zone, zones in the order they first
/// appear in the spec: one change batch each.
fn zone_batches(routes: &Routes, plans: &[Vec<PlannedChange>]) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, g) in routes.groups.iter().enumerate() {
        if plans[i].is_empty() {
            continue;
        }
        match out.iter_mut().find(|(z, _)| *z == g.zone_id) {
            Some((_, groups)) => groups.push(i),
            None => out.push((g.zone_id.clone(), vec![i])),
        }
    }
    out
}

/// The batches a dry run would submit (no change ids).
fn planned_batches(routes: &Routes, plans: &[Vec<PlannedChange>]) -> Vec<BatchLine> {
    zone_batches(routes, plans)
        .into_iter()
        .map(|(zone, groups)| BatchLine {
            zone_id: zone,
            changes: groups.iter().map(|&i| plans[i].len()).sum(),
            change_id: String::new(),
        })
        .collect()
}

/// The changes of one zone's batch: its groups' plans, in order.
fn zone_changes(
    plans: &[Vec<PlannedChange>],
    in_zone: &[usize],
) -> Vec<aws_sdk_route53::types::Change> {
    in_zone
        .iter()
        .flat_map(|&i| {
            plans[i]
                .iter()
                .map(|c| api::change(c.action.clone(), c.set.clone()))
        })
        .collect()
}

/// Submits one zone's batch. A refused batch is journaled, and the state
/// saved, before the error is returned.
async fn submit(
    client: &Client,
    zone: &str,
    changes: Vec<aws_sdk_route53::types::Change>,
    doc: &mut StateDocument,
    file: &StateFile,
) -> Result<api::Submitted, RouteError> {
    match api::submit(client, zone, changes, "switchyard route apply").await {
        Ok(s) => Ok(s),
        Err(e) => {
            doc.record(
                JournalEntry::new(steps::SWITCHYARD, "routes-failed", Outcome::Failed)
                    .detail(format!("zone {zone}: {e}")),
            );
            file.save(doc).await?;
            Err(e.into())
        }
    }
}

/// The journal entry of one zone's batch: every change, before and after.
fn journal_entry(
    routes: &Routes,
    plans: &[Vec<PlannedChange>],
    current: &[Vec<ResourceRecordSet>],
    zone: &str,
    in_zone: &[usize],
    change_id: &str,
) -> JournalEntry {
    let count: usize = in_zone.iter().map(|&i| plans[i].len()).sum();
    let mut entry = JournalEntry::new(steps::SWITCHYARD, "routes-applied", Outcome::Ok).detail(
        format!("zone {zone}: one batch of {count} change(s), change {change_id}"),
    );
    for &i in in_zone {
        let g = &routes.groups[i];
        for c in &plans[i] {
            let id = c.set.set_identifier().unwrap_or("(simple)");
            let (before, after) = match c.action {
                ChangeAction::Delete => (Some(json!(describe_set(&c.set))), None),
                ChangeAction::Create => (None, Some(json!(describe_set(&c.set)))),
                _ => (
                    current[i]
                        .iter()
                        .find(|s| s.set_identifier() == Some(id))
                        .map(|s| json!(describe_set(s))),
                    Some(json!(describe_set(&c.set))),
                ),
            };
            entry = entry.change(Change {
                resource: format!("{} {}", g.route(), id),
                before,
                after,
                reference: Some(change_id.to_owned()),
            });
        }
    }
    entry
}

/// Reads back every changed group: it must now be exactly as declared.
async fn read_back(
    client: &Client,
    routes: &Routes,
    plans: &[Vec<PlannedChange>],
    ids: &[BTreeMap<String, String>],
    keep_weights: bool,
) -> Result<(), RouteError> {
    for (i, g) in routes.groups.iter().enumerate() {
        if plans[i].is_empty() {
            continue;
        }
        let read = api::list_group(client, &g.zone_id, &g.name, &g.rtype).await?;
        let left = diff(g, &read, &ids[i], keep_weights);
        if !left.is_empty() {
            let detail: Vec<String> = left
                .iter()
                .map(|c| format!("{} {}", c.action.as_str(), c.detail))
                .collect();
            return Err(RouteError::ReadBack {
                route: g.route(),
                detail: format!("still differs from the spec: {}", detail.join("; ")),
            });
        }
    }
    Ok(())
}

/// Records each group in the state's traffic section (weights of weighted
/// groups; policy and health check ids under their own keys), keeping what a
/// shift recorded there (`before`, `shift`, the lease).
fn record_routes(doc: &mut StateDocument, routes: &Routes, report: &ApplyReport) {
    for (g, r) in routes.groups.iter().zip(&report.groups) {
        let entry = doc.traffic.entry(g.route()).or_insert_with(|| RouteState {
            router: "route53".into(),
            resource: BTreeMap::new(),
            weights: Weights::new(),
            before: None,
            shift: None,
            updated_at: Utc::now(),
            extra: serde_json::Map::new(),
        });
        entry.router = "route53".into();
        entry.resource = BTreeMap::from([
            ("zone_id".to_owned(), g.zone_id.clone()),
            ("record_name".to_owned(), g.name.clone()),
            ("record_type".to_owned(), g.rtype.as_str().to_owned()),
        ]);
        entry.weights.clone_from(&r.weights);
        entry.updated_at = Utc::now();
        entry
            .extra
            .insert("policy".into(), json!(g.policy.as_str()));
        entry
            .extra
            .insert("health_checks".into(), json!(r.health_checks));
    }
}

/// The IAM policy of planning (`apply` false) or applying the groups of a spec.
pub fn policy(routes: &Routes, apply: bool) -> crate::aws::iam::Policy {
    use crate::aws::iam::arn;
    let mut policy = crate::aws::iam::Policy::new();
    let zones: std::collections::BTreeSet<String> = routes
        .groups
        .iter()
        .map(|g| arn::hosted_zone(&g.zone_id))
        .collect();
    policy.allow(
        "ReadRecordGroups",
        &["route53:ListResourceRecordSets"],
        zones.clone(),
    );
    if apply {
        policy.allow(
            "ReadChanges",
            &["route53:GetChange"],
            [arn::ROUTE53_CHANGES],
        );
        policy
            .allow("RecordGroups", &["route53:ChangeResourceRecordSets"], zones)
            .only_records(
                "RecordGroups",
                routes.groups.iter().map(|g| g.name.as_str()),
                routes.groups.iter().map(|g| g.rtype.as_str().to_owned()),
            );
    }
    // The health check calls have no resource level.
    let checks: &[&str] = if apply {
        &["route53:ListHealthChecks", "route53:CreateHealthCheck"]
    } else {
        &["route53:ListHealthChecks"]
    };
    policy.allow("HealthChecks", checks, ["*"]);
    if apply {
        // The checks it replaced, once no record of the spec uses them.
        policy.allow(
            "DeleteReplacedHealthChecks",
            &["route53:DeleteHealthCheck"],
            [arn::ROUTE53_HEALTH_CHECKS],
        );
    }
    policy
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
