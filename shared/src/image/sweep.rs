//! `bake-ami sweep`: removes what killed bakes left behind (SIGKILL, a CI
//! time-out, a lost runner), found by their tags, older than a threshold:
//!
//! - builder instances (`switchyard:purpose=bake`) that are not terminated;
//! - images tagged `switchyard:bake-status=in-progress`, with their snapshots;
//! - snapshots tagged `in-progress` that no remaining image uses.
//!
//! A `complete` image is never touched. Age is the instance's launch time,
//! the image's creation date, the snapshot's start time.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use aws_sdk_ec2::Client;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{
    BakeError, PURPOSE_BAKE, STATUS_IN_PROGRESS, STEP, TAG_BAKE_ID, TAG_PURPOSE, TAG_STATUS,
};
use crate::aws::ec2::{self, filter};
use crate::outcome::StepReport;
use crate::state::{Change, JournalEntry, Outcome, StateFile};
use crate::wait::progress::short;

/// One leftover found (and removed, unless a dry run).
#[derive(Debug, Clone, Serialize)]
pub struct Leftover {
    /// Its region.
    pub region: String,
    /// `instance`, `image` or `snapshot`.
    pub kind: &'static str,
    /// Its id.
    pub id: String,
    /// The bake that made it.
    pub bake_id: String,
    /// When it was made.
    pub created: String,
}

/// What a sweep found.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    /// The threshold, e.g. `2h`.
    pub older_than: String,
    /// A dry run: listed, not removed.
    pub dry_run: bool,
    /// The leftovers, in the order they were (or would be) removed.
    pub leftovers: Vec<Leftover>,
}

impl StepReport for SweepReport {
    fn text(&self) -> String {
        let mut text = String::new();
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        if self.leftovers.is_empty() {
            let _ = writeln!(text, "no bake leftovers older than {}", self.older_than);
        } else {
            let _ = writeln!(
                text,
                "{verb} {} bake leftover(s) older than {}{}:",
                self.leftovers.len(),
                self.older_than,
                if self.dry_run { " (dry run)" } else { "" }
            );
        }
        for l in &self.leftovers {
            let _ = writeln!(
                text,
                "  {} {} in {} (bake {}, made {})",
                l.kind, l.id, l.region, l.bake_id, l.created
            );
        }
        text
    }

    fn outputs(&self) -> Vec<(String, String)> {
        vec![("removed".into(), self.leftovers.len().to_string())]
    }

    fn summary(&self) -> String {
        format!(
            "### bake-ami sweep: {} leftover(s) older than {}{}\n",
            self.leftovers.len(),
            self.older_than,
            if self.dry_run { " (dry run)" } else { "" }
        )
    }
}

/// Finds the leftovers older than `older_than` in every region of `clients`
/// and removes them (unless `dry_run`), journaling what it removed.
pub async fn sweep(
    clients: &[(String, Client)],
    older_than: Duration,
    dry_run: bool,
    state: &StateFile,
) -> Result<SweepReport, BakeError> {
    let mut doc = state.load().await?;
    let cutoff =
        Utc::now() - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
    let mut report = SweepReport {
        older_than: short(older_than),
        dry_run,
        leftovers: Vec::new(),
    };
    let mut changes = Vec::new();
    for (region, client) in clients {
        let found = find(client, region, &Scope::OlderThan(cutoff)).await?;
        for leftover in found {
            if !dry_run {
                changes.push(remove(client, &leftover).await?);
            }
            report.leftovers.push(leftover);
        }
    }
    if !changes.is_empty() {
        let mut entry = JournalEntry::new(STEP, "sweep", Outcome::Ok).detail(format!(
            "removed {} bake leftover(s) older than {}",
            changes.len(),
            report.older_than
        ));
        for c in changes {
            entry = entry.change(c);
        }
        doc.record(entry);
        state.save(&mut doc).await?;
    }
    Ok(report)
}

/// Removes every leftover of the bakes `bake_ids`, whatever its age, in
/// every region of `clients`: what a killed run of the same state file left
/// behind, found by the bake ids it wrote ahead into the journal. Returns
/// what was removed, as journal changes.
pub async fn remove_bakes(
    clients: &[(String, Client)],
    bake_ids: &[String],
) -> Result<Vec<Change>, BakeError> {
    let mut changes = Vec::new();
    for (region, client) in clients {
        for leftover in find(client, region, &Scope::Bakes(bake_ids)).await? {
            changes.push(remove(client, &leftover).await?);
        }
    }
    Ok(changes)
}

/// Removes one leftover; the journal's record of it.
async fn remove(client: &Client, leftover: &Leftover) -> Result<Change, BakeError> {
    match leftover.kind {
        "instance" => ec2::terminate_instance(client, &leftover.id).await?,
        "image" => {
            ec2::delete_image(client, &leftover.id).await?;
        }
        _ => ec2::delete_snapshot(client, &leftover.id).await?,
    }
    tracing::info!(
        "removed {} {} in {} (bake {})",
        leftover.kind,
        leftover.id,
        leftover.region,
        leftover.bake_id
    );
    Ok(Change {
        resource: format!("ec2:{}/{}/{}", leftover.region, leftover.kind, leftover.id),
        before: None,
        after: Some(
            match leftover.kind {
                "instance" => "terminated",
                "image" => "deregistered with its snapshots",
                _ => "deleted",
            }
            .into(),
        ),
        reference: Some(leftover.bake_id.clone()),
    })
}

/// Which leftovers to look for.
enum Scope<'a> {
    /// Every bake's, made before this time.
    OlderThan(DateTime<Utc>),
    /// These bakes', of any age.
    Bakes(&'a [String]),
}

impl Scope<'_> {
    /// The tag filters, beside `base`.
    fn filters(&self, base: Vec<aws_sdk_ec2::types::Filter>) -> Vec<aws_sdk_ec2::types::Filter> {
        let mut filters = base;
        if let Scope::Bakes(ids) = self {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            filters.push(filter(format!("tag:{TAG_BAKE_ID}"), &ids));
        }
        filters
    }

    fn includes(&self, made: Option<DateTime<Utc>>) -> bool {
        match self {
            Scope::OlderThan(cutoff) => made.is_some_and(|t| t <= *cutoff),
            Scope::Bakes(_) => true,
        }
    }
}

/// The leftovers of one region, instances first, then images, then orphan snapshots.
async fn find(
    client: &Client,
    region: &str,
    scope: &Scope<'_>,
) -> Result<Vec<Leftover>, BakeError> {
    let mut found = Vec::new();
    let builders = ec2::describe_instances(
        client,
        scope.filters(vec![
            filter(format!("tag:{TAG_PURPOSE}"), &[PURPOSE_BAKE]),
            filter(
                "instance-state-name",
                &["pending", "running", "stopping", "stopped"],
            ),
        ]),
    )
    .await?;
    for instance in builders {
        let launched = instance
            .launch_time()
            .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), 0));
        if scope.includes(launched) {
            found.push(Leftover {
                region: region.to_owned(),
                kind: "instance",
                id: instance.instance_id().unwrap_or_default().to_owned(),
                bake_id: ec2::tags_of(&instance)
                    .remove(TAG_BAKE_ID)
                    .unwrap_or_default(),
                created: launched.map(|t| t.to_rfc3339()).unwrap_or_default(),
            });
        }
    }
    let images = ec2::describe_images(
        client,
        &["self".to_owned()],
        scope.filters(vec![filter(
            format!("tag:{TAG_STATUS}"),
            &[STATUS_IN_PROGRESS],
        )]),
    )
    .await?;
    let mut swept_snapshots = BTreeSet::new();
    for image in &images {
        let created = image.creation_date().unwrap_or_default();
        if scope.includes(parse_time(created)) {
            swept_snapshots.extend(ec2::snapshot_ids(image));
            found.push(Leftover {
                region: region.to_owned(),
                kind: "image",
                id: image.image_id().unwrap_or_default().to_owned(),
                bake_id: ec2::image_tags(image)
                    .remove(TAG_BAKE_ID)
                    .unwrap_or_default(),
                created: created.to_owned(),
            });
        }
    }
    // Snapshots of images that stay are not orphans; those of swept images go with them.
    // (A snapshot tagged with a bake's id serves only that bake's images.)
    let in_use: BTreeSet<String> =
        ec2::describe_images(client, &["self".to_owned()], scope.filters(Vec::new()))
            .await?
            .iter()
            .flat_map(ec2::snapshot_ids)
            .filter(|s| !swept_snapshots.contains(s))
            .collect();
    let snapshots = ec2::describe_own_snapshots(
        client,
        scope.filters(vec![filter(
            format!("tag:{TAG_STATUS}"),
            &[STATUS_IN_PROGRESS],
        )]),
    )
    .await?;
    for snapshot in snapshots {
        let id = snapshot.snapshot_id().unwrap_or_default().to_owned();
        let started = snapshot
            .start_time()
            .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), 0));
        if in_use.contains(&id) || swept_snapshots.contains(&id) {
            continue;
        }
        if scope.includes(started) {
            let tags: BTreeMap<String, String> = snapshot
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
                .collect();
            found.push(Leftover {
                region: region.to_owned(),
                kind: "snapshot",
                bake_id: tags.get(TAG_BAKE_ID).cloned().unwrap_or_default(),
                id,
                created: started.map(|t| t.to_rfc3339()).unwrap_or_default(),
            });
        }
    }
    Ok(found)
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
