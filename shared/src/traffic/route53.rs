//! The Route53 router: a weighted record group (one name and type, one record
//! set per SetIdentifier). A change touches only the weights: values, alias
//! targets, TTLs and health check ids are sent back exactly as read. The lease
//! is a TXT record `_switchyard-lock.<name>` created with CREATE.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_route53::types::{ChangeAction, ResourceRecord, ResourceRecordSet, RrType};
use aws_sdk_route53::Client;
use chrono::Utc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{format_weights, Applied, Group, Lease, LeaseRequest, Router, TrafficError};
use crate::aws::route53::{self as api, InsyncError, Submitted};
use crate::lease::first_live;
use crate::state::Weights;
use crate::wait::Backoff;

/// Alias records have no TTL of their own; the usual load balancer TTL is 60 s.
const ALIAS_SETTLE: Duration = Duration::from_secs(60);

/// A Route53 weighted record group.
#[derive(Debug)]
pub struct Route53Router {
    client: Client,
    zone_id: String,
    name: String,
    rtype: RrType,
    backoff: Backoff,
    /// The record sets as last read; `apply` rewrites them with new weights.
    sets: Mutex<Vec<ResourceRecordSet>>,
    /// The lease records seen by the last `read` on the same pages (they are
    /// listed right after the group), for the next `acquire_lease` to use
    /// once instead of a read of its own; `None` when the pages did not tell.
    leases_seen: Mutex<Option<Vec<ResourceRecordSet>>>,
}

impl Route53Router {
    /// The group `name`/`rtype` in hosted zone `zone_id`.
    pub fn new(client: Client, zone_id: &str, name: &str, rtype: RrType) -> Self {
        Self {
            client,
            zone_id: api::normalize_zone_id(zone_id),
            name: api::normalize_name(name),
            rtype,
            backoff: crate::aws::route53::CHANGE_BACKOFF,
            sets: Mutex::new(Vec::new()),
            leases_seen: Mutex::new(None),
        }
    }

    /// Polls GetChange with this backoff instead of the default.
    #[must_use]
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    fn lock_name(&self) -> String {
        lock_name(&self.name)
    }

    fn lock_set(&self, lease: &Lease) -> ResourceRecordSet {
        ResourceRecordSet::builder()
            .name(self.lock_name())
            .r#type(RrType::Txt)
            .ttl(60)
            .resource_records(
                ResourceRecord::builder()
                    .value(format!("\"{}\"", lease.encode()))
                    .build()
                    .expect("value is set"),
            )
            .build()
            .expect("name and type are set")
    }

    /// Every lease record at the lock's name (more than one only on an
    /// emulator that accepted a second CREATE), with the lease it holds.
    async fn read_leases(&self) -> Result<Vec<(ResourceRecordSet, Option<Lease>)>, TrafficError> {
        let sets =
            api::list_group(&self.client, &self.zone_id, &self.lock_name(), &RrType::Txt).await?;
        Ok(with_leases(sets))
    }

    /// The group's record sets, noting the lease records listed on the same
    /// pages (right after the group) for the next [`Self::seen_or_read_leases`].
    async fn list_group_seeing_leases(&self) -> Result<Vec<ResourceRecordSet>, TrafficError> {
        let lock = self.lock_name();
        let (sets, leases) = api::list_group_and(
            &self.client,
            &self.zone_id,
            (&self.name, &self.rtype),
            Some((&lock, &RrType::Txt)),
        )
        .await?;
        if let Ok(mut seen) = self.leases_seen.lock() {
            *seen = leases;
        }
        Ok(sets)
    }

    /// The lease records as the last `read` saw them, if it did (once), or
    /// as read now.
    async fn seen_or_read_leases(
        &self,
    ) -> Result<Vec<(ResourceRecordSet, Option<Lease>)>, TrafficError> {
        let seen = self.leases_seen.lock().ok().and_then(|mut s| s.take());
        match seen {
            Some(sets) => Ok(with_leases(sets)),
            None => self.read_leases().await,
        }
    }

    /// The change that sets `weights` on the record sets as last read: one
    /// UPSERT per member whose weight changes.
    fn upserts(&self, weights: &Weights) -> Vec<aws_sdk_route53::types::Change> {
        let mut changes = Vec::new();
        for set in self.cached_sets() {
            let Some(id) = set.set_identifier() else {
                continue;
            };
            let Some(&want) = weights.get(id) else {
                continue;
            };
            if set.weight() == Some(i64::from(want)) {
                continue;
            }
            let mut updated = set.clone();
            updated.weight = Some(i64::from(want));
            changes.push(api::change(ChangeAction::Upsert, updated));
        }
        changes
    }

    /// Records `weights` as set, after Route53 accepted them.
    fn remember_weights(&self, weights: &Weights) {
        if let Ok(mut sets) = self.sets.lock() {
            for set in sets.iter_mut() {
                if let Some(&w) = set.set_identifier().and_then(|id| weights.get(id)) {
                    set.weight = Some(i64::from(w));
                }
            }
        }
    }

    fn cached_sets(&self) -> Vec<ResourceRecordSet> {
        self.sets.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Each lease record with the lease it holds.
fn with_leases(sets: Vec<ResourceRecordSet>) -> Vec<(ResourceRecordSet, Option<Lease>)> {
    sets.into_iter()
        .map(|set| {
            let lease = set
                .resource_records()
                .iter()
                .find_map(|r| Lease::decode(r.value()));
            (set, lease)
        })
        .collect()
}

fn is_duplicate_create(err: &crate::aws::ProviderError) -> bool {
    err.code.as_deref() == Some("InvalidChangeBatch") && err.message.contains("already exists")
}

impl Router for Route53Router {
    fn kind(&self) -> &'static str {
        "route53"
    }

    fn resource(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("zone_id".to_owned(), self.zone_id.clone()),
            ("record_name".to_owned(), self.name.clone()),
            ("record_type".to_owned(), self.rtype.as_str().to_owned()),
        ])
    }

    fn id(&self) -> String {
        format!(
            "route53:{}/{}/{}",
            self.zone_id,
            self.name,
            self.rtype.as_str()
        )
    }

    async fn read(&self) -> Result<Group, TrafficError> {
        let sets = self.list_group_seeing_leases().await?;
        if sets.is_empty() {
            return Err(TrafficError::NoSuchGroup(self.id()));
        }
        let mut weights = Weights::new();
        let mut settle = Duration::ZERO;
        for set in &sets {
            let (Some(id), Some(weight)) = (set.set_identifier(), set.weight()) else {
                return Err(TrafficError::NotWeighted {
                    route: self.id(),
                    detail: format!(
                        "record set {} uses {} routing; shift-weight changes weighted records only",
                        set.set_identifier().unwrap_or(set.name()),
                        crate::aws::route53::routing_policy(set)
                    ),
                });
            };
            weights.insert(id.to_owned(), u32::try_from(weight).unwrap_or(0));
            let ttl = match set.ttl() {
                Some(t) => Duration::from_secs(u64::try_from(t).unwrap_or(0)),
                None => ALIAS_SETTLE,
            };
            settle = settle.max(ttl);
        }
        if let Ok(mut cache) = self.sets.lock() {
            *cache = sets;
        }
        Ok(Group { weights, settle })
    }

    async fn apply(&self, weights: &Weights) -> Result<Applied, TrafficError> {
        let changes = self.upserts(weights);
        if changes.is_empty() {
            return Ok(Applied {
                reference: None,
                in_sync: true,
            });
        }
        let comment = format!("switchyard shift-weight: {}", format_weights(weights));
        let submitted = api::submit(&self.client, &self.zone_id, changes, &comment).await?;
        self.remember_weights(weights);
        Ok(Applied {
            reference: Some(submitted.id),
            in_sync: submitted.in_sync,
        })
    }

    async fn apply_releasing(
        &self,
        weights: &Weights,
        lease: &Lease,
    ) -> Option<Result<Applied, TrafficError>> {
        let mut changes = self.upserts(weights);
        if changes.is_empty() {
            return None;
        }
        changes.push(api::change(ChangeAction::Delete, self.lock_set(lease)));
        let comment = format!(
            "switchyard shift-weight: {}; lease released",
            format_weights(weights)
        );
        Some(
            match api::submit(&self.client, &self.zone_id, changes, &comment).await {
                Ok(submitted) => {
                    self.remember_weights(weights);
                    Ok(Applied {
                        reference: Some(submitted.id),
                        in_sync: submitted.in_sync,
                    })
                }
                Err(e) if e.code.as_deref() == Some("InvalidChangeBatch") => {
                    self.after_refused_release(weights, lease, e).await
                }
                Err(e) => Err(e.into()),
            },
        )
    }

    async fn wait_applied(
        &self,
        applied: &Applied,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<(), TrafficError> {
        let Some(id) = &applied.reference else {
            return Ok(());
        };
        let submitted = Submitted {
            id: id.clone(),
            in_sync: applied.in_sync,
        };
        api::wait_insync(&self.client, &submitted, deadline, cancel, self.backoff)
            .await
            .map_err(|e| match e {
                InsyncError::Deadline { .. } => TrafficError::Timeout(e.to_string()),
                InsyncError::Cancelled { .. } => TrafficError::Interrupted(e.to_string()),
                InsyncError::Provider(p) => TrafficError::Provider(p),
            })
    }

    fn describe_change(&self, from: &Weights, to: &Weights) -> String {
        let upserts: Vec<String> = to
            .iter()
            .filter(|(k, v)| from.get(*k) != Some(*v))
            .map(|(k, v)| {
                format!(
                    "UPSERT {k} weight {}→{v}",
                    from.get(k).copied().unwrap_or(0)
                )
            })
            .collect();
        if upserts.is_empty() {
            "no change (weights already set)".to_owned()
        } else {
            format!("one ChangeResourceRecordSets batch: {}", upserts.join(", "))
        }
    }

    async fn acquire_lease(
        &self,
        request: &LeaseRequest,
        ours: Option<&Lease>,
    ) -> Result<Lease, TrafficError> {
        let lease = Lease::new(request);
        let create = api::change(ChangeAction::Create, self.lock_set(&lease));
        let comment = format!("switchyard lease for {}", self.name);
        // Read first: it names the holder in the message. The CREATE below is
        // the guard against a race between two takers: Route53 refuses a
        // CREATE of a record set that exists.
        let existing = self.seen_or_read_leases().await?;
        let Some((set, held)) = existing.into_iter().next() else {
            return match api::submit(&self.client, &self.zone_id, vec![create], &comment).await {
                Ok(_) => Ok(lease),
                // Someone's lease exists now. It may be ours: a CREATE whose
                // answer was lost and that the SDK sent again finds the record
                // its first attempt made. The token tells.
                Err(e) if is_duplicate_create(&e) => {
                    tracing::info!(
                        "the lease CREATE was refused as a duplicate ({}); reading back whose it is",
                        e.message
                    );
                    self.whose(lease).await
                }
                Err(e) => Err(e.into()),
            };
        };
        let takeover = match &held {
            Some(h) if ours.is_some_and(|o| o.same_run(h)) => {
                tracing::info!(
                    "taking back this deployment's own lease on {}",
                    self.lock_name()
                );
                true
            }
            Some(h) if h.expired(Utc::now()) => {
                tracing::warn!(
                    "lease on {} held by {} expired at {}; taking it over",
                    self.lock_name(),
                    h.holder,
                    h.expires.to_rfc3339()
                );
                true
            }
            _ => false,
        };
        if !takeover {
            return Err(lease_held(self.lock_name(), held.as_ref()));
        }
        // DELETE repeats the old record exactly, so the batch fails if anyone
        // changed it meanwhile: exactly one taker wins.
        let batch = vec![api::change(ChangeAction::Delete, set), create];
        match api::submit(&self.client, &self.zone_id, batch, &comment).await {
            Ok(_) => Ok(lease),
            // The DELETE no longer matches: someone else took it, or our own
            // first attempt did and its answer was lost. The token tells.
            Err(e) if e.code.as_deref() == Some("InvalidChangeBatch") => self.whose(lease).await,
            Err(e) => Err(e.into()),
        }
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), TrafficError> {
        let delete = api::change(ChangeAction::Delete, self.lock_set(lease));
        let comment = format!("switchyard lease release for {}", self.name);
        api::submit(&self.client, &self.zone_id, vec![delete], &comment).await?;
        Ok(())
    }

    async fn leases(&self) -> Result<Vec<Lease>, TrafficError> {
        Ok(self
            .read_leases()
            .await?
            .into_iter()
            .filter_map(|(_, l)| l)
            .collect())
    }

    fn lease_resource(&self) -> String {
        format!("TXT {} in zone {}", self.lock_name(), self.zone_id)
    }
}

impl Route53Router {
    /// Route53 refused the batch that sets `weights` and deletes `lease`
    /// whole. Either an earlier attempt of the same batch went through (the
    /// SDK sent it again after a lost answer: the weights are set and no lease
    /// is left), or the lease is someone else's now (taken over after it
    /// expired: nothing was changed), or the refusal is about the weights.
    async fn after_refused_release(
        &self,
        weights: &Weights,
        lease: &Lease,
        refused: crate::aws::ProviderError,
    ) -> Result<Applied, TrafficError> {
        let sets = self.list_group_seeing_leases().await?;
        let leases = self.seen_or_read_leases().await?;
        let held: Vec<Lease> = leases.into_iter().filter_map(|(_, l)| l).collect();
        let set_as_sent =
            sets.iter().all(
                |set| match set.set_identifier().and_then(|id| weights.get(id)) {
                    Some(&w) => set.weight() == Some(i64::from(w)),
                    None => true,
                },
            );
        if held.is_empty() && set_as_sent {
            tracing::info!(
                "the last change was refused as a repeat ({}); an earlier attempt set {} and released the lease",
                refused.message,
                format_weights(weights)
            );
            self.remember_weights(weights);
            return Ok(Applied {
                reference: None,
                in_sync: false,
            });
        }
        if held.iter().any(|l| l.same_run(lease)) {
            return Err(refused.into());
        }
        Err(lease_held(
            self.lock_name(),
            first_live(&held, Utc::now()).or(held.first()),
        ))
    }

    /// Reads the lease record after Route53 refused our change to it: it is
    /// ours (a retried call whose first attempt went through) if it carries
    /// our token; otherwise another run holds it.
    async fn whose(&self, lease: Lease) -> Result<Lease, TrafficError> {
        let leases: Vec<Lease> = self
            .read_leases()
            .await?
            .into_iter()
            .filter_map(|(_, l)| l)
            .collect();
        if leases.iter().any(|l| l.same_run(&lease)) {
            return Ok(lease);
        }
        Err(lease_held(
            self.lock_name(),
            first_live(&leases, Utc::now()).or(leases.first()),
        ))
    }
}

fn lease_held(resource: String, held: Option<&Lease>) -> TrafficError {
    TrafficError::LeaseHeld {
        resource,
        holder: held.map_or_else(|| "an unknown holder".to_owned(), |h| h.holder.clone()),
        expires: held.map_or_else(
            || "an unknown time".to_owned(),
            |h| {
                if h.message.is_empty() {
                    h.expires.to_rfc3339()
                } else {
                    format!(
                        "{} ({})",
                        h.expires.to_rfc3339(),
                        h.message.replace('_', " ")
                    )
                }
            },
        ),
    }
}

/// The name of the lease record of the group `name`.
fn lock_name(name: &str) -> String {
    format!("_switchyard-lock.{name}")
}

/// The IAM policy of reading the weighted group `name` (records of `rtype`)
/// and its lease in `zone_id`, and with `change` of changing them (those
/// record sets only) and waiting for the change.
pub fn policy(
    zone_id: &str,
    (name, rtype): (&str, &RrType),
    change: bool,
) -> crate::aws::iam::Policy {
    use crate::aws::iam::arn;
    let mut policy = crate::aws::iam::Policy::new();
    policy.allow(
        "ReadRecords",
        &["route53:ListResourceRecordSets"],
        [arn::hosted_zone(zone_id)],
    );
    if change {
        policy.allow(
            "ReadChanges",
            &["route53:GetChange"],
            [arn::ROUTE53_CHANGES],
        );
        policy
            .allow(
                "WeightedRecords",
                &["route53:ChangeResourceRecordSets"],
                [arn::hosted_zone(zone_id)],
            )
            .only_records(
                "WeightedRecords",
                [name.to_owned(), lock_name(name)],
                [rtype.as_str().to_owned(), RrType::Txt.as_str().to_owned()],
            );
    }
    policy
}

#[cfg(test)]
#[path = "route53_tests.rs"]
mod tests;
