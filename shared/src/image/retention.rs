//! Retention of baked images (`bake-ami --keep N`): after a bake, in every
//! region it wrote to, the service's complete images beyond the newest N are
//! deregistered and their snapshots deleted, with the same calls the sweep
//! uses ([`crate::aws::ec2::delete_image`]).
//!
//! An image is never removed while it is in use: launched by a launch
//! template version in use (each of the service's templates' default and
//! latest version, the version each of its Auto Scaling groups launches
//! from, and the versions their instances were launched from), or named by
//! the state file (the image of the release, any stack's image). Such an
//! image is kept and reported as spared. A snapshot that EC2 says another
//! image still uses is kept too.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{BakeError, STATUS_COMPLETE, STEP, TAG_SERVICE, TAG_STATUS, TAG_VERSION};
use crate::aws::autoscaling;
use crate::aws::ec2::{self, filter};
use crate::aws::launch_template as lt;
pub use crate::aws::Keep;
use crate::aws::ProviderError;
use crate::state::{Change, JournalEntry, Outcome, StateDocument, StateFile};

/// The clients of one region a bake wrote to.
#[derive(Debug, Clone)]
pub struct RegionClients {
    /// The region.
    pub region: String,
    /// EC2 there.
    pub ec2: aws_sdk_ec2::Client,
    /// EC2 Auto Scaling there.
    pub autoscaling: aws_sdk_autoscaling::Client,
}

impl RegionClients {
    /// Clients of `config` for each of `regions`.
    pub fn new(config: &aws_config::SdkConfig, regions: &[String]) -> Vec<Self> {
        regions
            .iter()
            .map(|region| Self {
                region: region.clone(),
                ec2: crate::aws::ec2_in(config, region),
                autoscaling: crate::aws::autoscaling_in(config, region),
            })
            .collect()
    }
}

/// An image beyond the newest N: removed (or, in a dry run, to be).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetiredImage {
    /// Its region.
    pub region: String,
    /// Its id.
    pub image: String,
    /// Its name.
    pub name: String,
    /// The version it was baked for.
    pub version: String,
    /// Its creation date.
    pub created: String,
    /// Its EBS snapshots, deleted with it.
    pub snapshots: Vec<String>,
    /// Snapshots kept because EC2 said another image still uses them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snapshots_kept: Vec<String>,
}

/// An image beyond the newest N that stays because it is in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SparedImage {
    /// Its region.
    pub region: String,
    /// Its id.
    pub image: String,
    /// The version it was baked for.
    pub version: String,
    /// Why it stays.
    pub reason: String,
}

/// What retention did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Retention {
    /// `--keep`: a number or `all`.
    pub keep: String,
    /// Images removed with their snapshots, in the order removed.
    pub retired: Vec<RetiredImage>,
    /// Images beyond the newest N kept because they are in use.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub spared: Vec<SparedImage>,
    /// Snapshots of the service's complete images whose image is gone (a
    /// run killed between DeregisterImage and DeleteSnapshot): deleted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub orphan_snapshots: Vec<OrphanSnapshot>,
}

/// A snapshot of a complete image that is no longer registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrphanSnapshot {
    /// Its region.
    pub region: String,
    /// Its id.
    pub snapshot: String,
}

impl Retention {
    /// One line per image that goes or is spared, for a plan or a report.
    pub fn lines(&self, dry_run: bool) -> Vec<String> {
        let mut lines = Vec::new();
        for r in &self.retired {
            let mut line = format!(
                "{} {} in {} (version {}, made {}) beyond the newest {}",
                if dry_run {
                    "deregister"
                } else {
                    "deregistered"
                },
                r.image,
                r.region,
                r.version,
                r.created,
                self.keep
            );
            if r.snapshots.is_empty() {
                line.push_str("; it has no snapshot");
            } else {
                let _ = write!(
                    line,
                    "; {} its snapshot(s) {}",
                    if dry_run { "delete" } else { "deleted" },
                    r.snapshots.join(", ")
                );
            }
            if !r.snapshots_kept.is_empty() {
                let _ = write!(
                    line,
                    "; kept snapshot(s) {}: another image still uses them",
                    r.snapshots_kept.join(", ")
                );
            }
            lines.push(line);
        }
        for o in &self.orphan_snapshots {
            lines.push(format!(
                "{} snapshot {} in {}: its image was deregistered by an earlier run",
                if dry_run { "delete" } else { "deleted" },
                o.snapshot,
                o.region
            ));
        }
        for s in &self.spared {
            lines.push(format!(
                "keep {} in {} (version {}) beyond the newest {}: {}",
                s.image, s.region, s.version, self.keep, s.reason
            ));
        }
        lines
    }
}

/// Finds the images of `service` beyond the newest `keep` in every region
/// of `clients`, and removes them unless `dry_run`; journals what it removed
/// in the state file. `just_made` are the images of this bake (never
/// removed); `one_more` counts an image a dry run would make, so the plan
/// shows what a real run would remove.
pub async fn retire(
    clients: &[RegionClients],
    service: &str,
    keep: Keep,
    just_made: &BTreeMap<String, String>,
    (dry_run, one_more): (bool, bool),
    state: &StateFile,
) -> Result<Retention, BakeError> {
    let mut retention = Retention {
        keep: keep.to_string(),
        ..Retention::default()
    };
    let Some(count) = keep.count() else {
        return Ok(retention);
    };
    let count = if one_more { count - 1 } else { count };
    let mut doc = state.load().await?;
    let mut protected = named_by_state(&doc);
    for (region, image) in just_made {
        protected.insert(
            (region.clone(), image.clone()),
            "it is the image of this bake".to_owned(),
        );
    }
    for c in clients {
        let (retired, spared) = find(c, service, count, &protected).await?;
        retention.retired.extend(retired);
        retention.spared.extend(spared);
        retention
            .orphan_snapshots
            .extend(orphans(c, service).await?);
    }
    if dry_run || (retention.retired.is_empty() && retention.orphan_snapshots.is_empty()) {
        return Ok(retention);
    }
    let mut changes = Vec::new();
    let mut failed = None;
    for o in &retention.orphan_snapshots {
        let c = clients
            .iter()
            .find(|c| c.region == o.region)
            .expect("found in one of these regions");
        match ec2::delete_snapshot(&c.ec2, &o.snapshot).await {
            Ok(()) => changes.push(Change {
                resource: resource(&o.region, "snapshot", &o.snapshot),
                before: Some("snapshot of a deregistered image".into()),
                after: Some("deleted".into()),
                reference: None,
            }),
            // Taken by an image after all: it stays.
            Err(e) if e.code.as_deref() == Some(ec2::SNAPSHOT_IN_USE) => {}
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    for r in retention.retired.iter_mut().filter(|_| failed.is_none()) {
        let c = clients
            .iter()
            .find(|c| c.region == r.region)
            .expect("found in one of these regions");
        match remove(c, r).await {
            Ok(done) => changes.extend(done),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    if let Some(e) = &failed {
        // Only what was removed stays in the report.
        let done: BTreeSet<String> = changes.iter().map(|c| c.resource.clone()).collect();
        retention
            .retired
            .retain(|r| done.contains(&resource(&r.region, "image", &r.image)));
        tracing::warn!("retention stopped: {e}");
    }
    if !changes.is_empty() {
        let outcome = if failed.is_some() {
            Outcome::Failed
        } else {
            Outcome::Ok
        };
        let mut entry = JournalEntry::new(STEP, "images-retired", outcome)
            .detail(format!(
                "deregistered {} image(s) of {service} beyond the newest {keep}, with their snapshots; {} orphan snapshot(s) deleted",
                retention.retired.len(),
                retention.orphan_snapshots.len()
            ))
            .with("keep", keep.to_string());
        for c in changes {
            entry = entry.change(c);
        }
        doc.record(entry);
        state.save(&mut doc).await?;
    }
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(retention),
    }
}

/// The images the state file names, by region, with why.
fn named_by_state(doc: &StateDocument) -> BTreeMap<(String, String), String> {
    let mut named = BTreeMap::new();
    if let Some(image) = &doc.image {
        for (region, ami) in &image.amis {
            named.insert(
                (region.clone(), ami.clone()),
                "the state file's image of the release".to_owned(),
            );
        }
    }
    for (name, stack) in &doc.stacks {
        for (region, part) in &stack.regions {
            if let Some(ami) = &part.image {
                named
                    .entry((region.clone(), ami.clone()))
                    .or_insert_with(|| format!("stack {name} in the state file runs it"));
            }
        }
    }
    named
}

/// The images of one region beyond the newest `count`: those to remove and
/// those spared.
async fn find(
    c: &RegionClients,
    service: &str,
    count: usize,
    protected: &BTreeMap<(String, String), String>,
) -> Result<(Vec<RetiredImage>, Vec<SparedImage>), ProviderError> {
    let mut images = ec2::describe_images(
        &c.ec2,
        &["self".to_owned()],
        vec![
            filter(format!("tag:{TAG_SERVICE}"), &[service]),
            filter(format!("tag:{TAG_STATUS}"), &[STATUS_COMPLETE]),
        ],
    )
    .await?;
    images.sort_by(|a, b| {
        created(b)
            .cmp(&created(a))
            .then_with(|| b.image_id().cmp(&a.image_id()))
    });
    if images.len() <= count {
        return Ok((Vec::new(), Vec::new()));
    }
    let in_use = images_in_use(c, service).await?;
    let mut retired = Vec::new();
    let mut spared = Vec::new();
    for image in images.iter().skip(count) {
        let id = image.image_id().unwrap_or_default().to_owned();
        let version = ec2::image_tags(image)
            .remove(TAG_VERSION)
            .unwrap_or_default();
        let why = protected
            .get(&(c.region.clone(), id.clone()))
            .or_else(|| in_use.get(&id))
            .cloned();
        match why {
            Some(reason) => spared.push(SparedImage {
                region: c.region.clone(),
                image: id,
                version,
                reason,
            }),
            None => retired.push(RetiredImage {
                region: c.region.clone(),
                name: image.name().unwrap_or_default().to_owned(),
                version,
                created: image.creation_date().unwrap_or_default().to_owned(),
                snapshots: ec2::snapshot_ids(image),
                snapshots_kept: Vec::new(),
                image: id,
            }),
        }
    }
    Ok((retired, spared))
}

/// The snapshots of one region tagged as the service's complete images'
/// that no registered image of this account uses.
async fn orphans(c: &RegionClients, service: &str) -> Result<Vec<OrphanSnapshot>, ProviderError> {
    let tagged = ec2::describe_own_snapshots(
        &c.ec2,
        vec![
            filter(format!("tag:{TAG_SERVICE}"), &[service]),
            filter(format!("tag:{TAG_STATUS}"), &[STATUS_COMPLETE]),
        ],
    )
    .await?;
    if tagged.is_empty() {
        return Ok(Vec::new());
    }
    let used: BTreeSet<String> = ec2::describe_images(&c.ec2, &["self".to_owned()], Vec::new())
        .await?
        .iter()
        .flat_map(ec2::snapshot_ids)
        .collect();
    Ok(tagged
        .iter()
        .filter_map(|s| s.snapshot_id())
        .filter(|id| !used.contains(*id))
        .map(|id| OrphanSnapshot {
            region: c.region.clone(),
            snapshot: id.to_owned(),
        })
        .collect())
}

fn created(image: &aws_sdk_ec2::types::Image) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(image.creation_date()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The images launch template versions in use launch, with why.
async fn images_in_use(
    c: &RegionClients,
    service: &str,
) -> Result<BTreeMap<String, String>, ProviderError> {
    let templates = lt::of_service(&c.ec2, service).await?;
    let groups = autoscaling::groups_of_service(&c.autoscaling, service).await?;
    let mut images = BTreeMap::new();
    for (id, versions) in lt::versions_in_use(&templates, &groups) {
        let asked: Vec<String> = versions.keys().cloned().collect();
        let name = templates
            .iter()
            .find(|t| t.id == id)
            .map_or(id.as_str(), |t| t.name.as_str());
        for (number, image) in lt::images_of_versions(&c.ec2, &id, &asked).await? {
            let why = versions
                .get(&number.to_string())
                .cloned()
                .unwrap_or_else(|| format!("a version in use of launch template {name}"));
            images.entry(image).or_insert_with(|| {
                format!("launch template {name} version {number} launches it ({why})")
            });
        }
    }
    Ok(images)
}

/// Deregisters one image and deletes its snapshots; the journal's records.
async fn remove(c: &RegionClients, r: &mut RetiredImage) -> Result<Vec<Change>, ProviderError> {
    let deleted = ec2::delete_image(&c.ec2, &r.image).await?;
    r.snapshots_kept = r
        .snapshots
        .iter()
        .filter(|s| !deleted.contains(s))
        .cloned()
        .collect();
    r.snapshots = deleted;
    tracing::info!(
        "deregistered {} in {} (version {}) with its snapshots {:?}",
        r.image,
        r.region,
        r.version,
        r.snapshots
    );
    let mut changes = vec![Change {
        resource: resource(&r.region, "image", &r.image),
        before: Some(format!("{} (version {})", r.name, r.version).into()),
        after: Some("deregistered".into()),
        reference: None,
    }];
    for s in &r.snapshots {
        changes.push(Change {
            resource: resource(&r.region, "snapshot", s),
            before: Some(format!("snapshot of {}", r.image).into()),
            after: Some("deleted".into()),
            reference: None,
        });
    }
    Ok(changes)
}

fn resource(region: &str, kind: &str, id: &str) -> String {
    format!("ec2:{region}/{kind}/{id}")
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod tests;
