//! Route53 calls used by the steps: reading one record group (a name and type,
//! all its set identifiers), submitting one change batch, and waiting for a
//! change to reach INSYNC.

use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecordSet, RrType,
};
use aws_sdk_route53::Client;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ProviderError;
use crate::wait::progress::Pace;
use crate::wait::{self, Backoff, WaitEnd};

/// Polling a Route53 change: changes usually reach INSYNC within 60 s.
pub const CHANGE_BACKOFF: Backoff = Backoff {
    initial: std::time::Duration::from_secs(2),
    max: std::time::Duration::from_secs(15),
};

/// A submitted change batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The change id (`/change/C...` without the prefix).
    pub id: String,
    /// Whether Route53 already reported it INSYNC.
    pub in_sync: bool,
}

/// Why an INSYNC wait ended without INSYNC.
#[derive(Debug, thiserror::Error)]
pub enum InsyncError {
    #[error("Route53 change {id} was not INSYNC after {waited}")]
    Deadline { id: String, waited: String },
    #[error("interrupted while waiting for Route53 change {id}")]
    Cancelled { id: String },
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// A record name as Route53 returns it: lower case, ending in a dot, with
/// `\052`-style escapes decoded (`*` for wildcards).
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(u8::is_ascii_digit)
        {
            let code = u32::from(bytes[i + 1] - b'0') * 64
                + u32::from(bytes[i + 2] - b'0') * 8
                + u32::from(bytes[i + 3] - b'0');
            if let Some(c) = char::from_u32(code) {
                out.push(c);
                i += 4;
                continue;
            }
        }
        out.push(char::from(bytes[i]).to_ascii_lowercase());
        i += 1;
    }
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

/// Parses a record type as given on the command line (`A`, `aaaa`, ...).
pub fn parse_record_type(text: &str) -> Result<RrType, String> {
    let upper = text.trim().to_ascii_uppercase();
    if RrType::values().contains(&upper.as_str()) {
        Ok(RrType::from(upper.as_str()))
    } else {
        Err(format!(
            "--record-type {text:?} is not a Route53 record type ({})",
            RrType::values().join(", ")
        ))
    }
}

/// A hosted zone id without the `/hostedzone/` prefix.
pub fn normalize_zone_id(zone_id: &str) -> String {
    zone_id.trim().trim_start_matches("/hostedzone/").to_owned()
}

/// Every record set with this name and type, in Route53's order.
/// Uses as few ListResourceRecordSets pages as the group needs (usually one).
pub async fn list_group(
    client: &Client,
    zone_id: &str,
    name: &str,
    rtype: &RrType,
) -> Result<Vec<ResourceRecordSet>, ProviderError> {
    Ok(list_group_and(client, zone_id, (name, rtype), None)
        .await?
        .0)
}

/// A group read as [`list_group`] does, and the record sets of a second name
/// and type that Route53 lists after it (a name under the group's, such as its
/// lease `_switchyard-lock.<name>`), seen in the same pages: `Some(sets)` when
/// the listing reached past the follower's place (or ended), so the sets seen
/// are all of them; `None` when the pages stopped short, and only a read of its
/// own tells.
pub async fn list_group_and(
    client: &Client,
    zone_id: &str,
    (name, rtype): (&str, &RrType),
    follower: Option<(&str, &RrType)>,
) -> Result<(Vec<ResourceRecordSet>, Option<Vec<ResourceRecordSet>>), ProviderError> {
    let wanted = normalize_name(name);
    // Only a name listed after the group's can be seen on the way.
    let follower = follower
        .map(|(n, t)| (normalize_name(n), t))
        .filter(|(n, t)| listing_order(n, t) > listing_order(&wanted, rtype));
    let mut sets = Vec::new();
    let mut start_name = wanted.clone();
    let mut start_type = rtype.clone();
    let mut start_id: Option<String> = None;
    loop {
        let page = client
            .list_resource_record_sets()
            .hosted_zone_id(zone_id)
            .start_record_name(&start_name)
            .start_record_type(start_type.clone())
            .set_start_record_identifier(start_id.clone())
            .max_items(100)
            .send()
            .await
            .map_err(|e| ProviderError::from_sdk("route53:ListResourceRecordSets", &e))?;
        let listed = page.resource_record_sets();
        let mut past_group = None;
        for (i, set) in listed.iter().enumerate() {
            if normalize_name(set.name()) == wanted && set.r#type() == rtype {
                sets.push(set.clone());
            } else if !sets.is_empty() || normalize_name(set.name()) != wanted {
                past_group = Some(i);
                break;
            }
        }
        let Some(rest) = past_group else {
            let more = match (page.next_record_name(), page.next_record_type()) {
                (Some(n), Some(t)) if normalize_name(n) == wanted && t == rtype => {
                    n.clone_into(&mut start_name);
                    start_type = t.clone();
                    start_id = page.next_record_identifier().map(str::to_owned);
                    true
                }
                _ => false,
            };
            if page.is_truncated() && more {
                continue;
            }
            // The group ended with the page: the follower comes on the next
            // page, if the listing has one.
            let follows = if follower.is_some() && !page.is_truncated() {
                Some(Vec::new())
            } else {
                None
            };
            return Ok((sets, follows));
        };
        let Some((f_name, f_type)) = &follower else {
            return Ok((sets, None));
        };
        let mut seen = Vec::new();
        for set in &listed[rest..] {
            let here = (normalize_name(set.name()), set.r#type());
            if &here.0 == f_name && here.1 == *f_type {
                seen.push(set.clone());
            } else if listing_order(&here.0, here.1) > listing_order(f_name, f_type) {
                return Ok((sets, Some(seen)));
            }
        }
        return Ok((sets, (!page.is_truncated()).then_some(seen)));
    }
}

/// Where Route53 lists a record set: by name with its labels reversed
/// (`com.example.app`), then by type.
fn listing_order<'a>(name: &str, rtype: &'a RrType) -> (String, &'a str) {
    let labels: Vec<&str> = name.trim_end_matches('.').rsplit('.').collect();
    (labels.join("."), rtype.as_str())
}

/// Submits one change batch: all of it applies, or none of it.
pub async fn submit(
    client: &Client,
    zone_id: &str,
    changes: Vec<Change>,
    comment: &str,
) -> Result<Submitted, ProviderError> {
    let batch = ChangeBatch::builder()
        .set_changes(Some(changes))
        .comment(comment)
        .build()
        .map_err(|e| ProviderError {
            operation: "route53:ChangeResourceRecordSets",
            code: None,
            message: e.to_string(),
        })?;
    let out = client
        .change_resource_record_sets()
        .hosted_zone_id(zone_id)
        .change_batch(batch)
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("route53:ChangeResourceRecordSets", &e))?;
    let info = out.change_info();
    Ok(Submitted {
        id: info.map_or_else(String::new, |i| {
            i.id().trim_start_matches("/change/").to_owned()
        }),
        in_sync: info.is_some_and(|i| i.status() == &ChangeStatus::Insync),
    })
}

/// One change of a batch.
pub fn change(action: ChangeAction, set: ResourceRecordSet) -> Change {
    Change::builder()
        .action(action)
        .resource_record_set(set)
        .build()
        .expect("action and record set are both set")
}

/// Polls GetChange with backoff until the change is INSYNC, the deadline
/// passes, or the step is cancelled.
pub async fn wait_insync(
    client: &Client,
    change: &Submitted,
    deadline: Instant,
    cancel: &CancellationToken,
    backoff: Backoff,
) -> Result<(), InsyncError> {
    if change.in_sync {
        return Ok(());
    }
    let mut pace = Pace::new(
        format!("Route53 change {} to be INSYNC", change.id),
        deadline,
    );
    let mut attempt = 0;
    loop {
        let out = client
            .get_change()
            .id(&change.id)
            .send()
            .await
            .map_err(|e| ProviderError::from_sdk("route53:GetChange", &e))?;
        let status = out.change_info().map(|i| i.status().clone());
        if status == Some(ChangeStatus::Insync) {
            tracing::debug!(
                "change {} INSYNC after {}",
                change.id,
                crate::wait::progress::short(pace.elapsed())
            );
            return Ok(());
        }
        pace.tick(status.as_ref().map_or("no status", ChangeStatus::as_str));
        match wait::sleep(backoff.delay(attempt), deadline, cancel).await {
            Ok(()) => attempt += 1,
            Err(WaitEnd::Deadline) => {
                return Err(InsyncError::Deadline {
                    id: change.id.clone(),
                    waited: crate::wait::progress::short(pace.elapsed()),
                })
            }
            Err(WaitEnd::Cancelled) => {
                return Err(InsyncError::Cancelled {
                    id: change.id.clone(),
                })
            }
        }
    }
}

/// The routing policy of a record set as read, for plans and messages.
pub fn routing_policy(set: &ResourceRecordSet) -> &'static str {
    if set.set_identifier().is_none() {
        "simple"
    } else if set.weight().is_some() {
        "weighted"
    } else if set.region().is_some() {
        "latency"
    } else if set.geo_location().is_some() {
        "geolocation"
    } else if set.failover().is_some() {
        "failover"
    } else if set.multi_value_answer().is_some() {
        "multivalue"
    } else if set.cidr_routing_config().is_some() {
        "ip-based"
    } else if set.geo_proximity_location().is_some() {
        "geoproximity"
    } else {
        "unknown"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_like_route53_returns_them() {
        assert_eq!(normalize_name("App.Example.com"), "app.example.com.");
        assert_eq!(normalize_name("app.example.com."), "app.example.com.");
        assert_eq!(normalize_name("\\052.example.com."), "*.example.com.");
        assert_eq!(normalize_zone_id("/hostedzone/Z123"), "Z123");
    }
}
