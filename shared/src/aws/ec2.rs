//! EC2 calls used by the steps: tagging resources, finding instances, images
//! and snapshots (every page), and removing them where a gone resource counts
//! as removed (so that a cleanup or a sweep can run twice).

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, Image, Instance, Snapshot, Tag};
use aws_sdk_ec2::Client;

use super::ProviderError;

/// Sets `tags` on `resource` (an instance id, an image id, ...). Tags that
/// exist with other values are overwritten; other tags are left alone.
pub async fn create_tags(
    client: &Client,
    resource: &str,
    tags: &BTreeMap<String, String>,
) -> Result<(), ProviderError> {
    let tags = tag_list(tags);
    client
        .create_tags()
        .resources(resource)
        .set_tags(Some(tags))
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("ec2:CreateTags", &e))?;
    Ok(())
}

/// A DescribeInstances filter: `name` matches any of `values`.
pub fn filter(name: impl Into<String>, values: &[&str]) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| (*v).to_owned()).collect()))
        .build()
}

/// Every instance matching all `filters`, across every page of DescribeInstances.
pub async fn describe_instances(
    client: &Client,
    filters: Vec<Filter>,
) -> Result<Vec<Instance>, ProviderError> {
    let mut instances = Vec::new();
    let mut pages = client
        .describe_instances()
        .set_filters(Some(filters))
        .max_results(1000)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| ProviderError::from_sdk("ec2:DescribeInstances", &e))?;
        for reservation in page.reservations() {
            instances.extend(reservation.instances().iter().cloned());
        }
    }
    Ok(instances)
}

/// An instance's tags as a map.
pub fn tags_of(instance: &Instance) -> BTreeMap<String, String> {
    instance
        .tags()
        .iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

/// `tags` as EC2 tags, in key order.
pub fn tag_list(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// Sets `tags` on every resource of `resources` in one call (instances,
/// images, snapshots of one region). Nothing is sent for an empty list.
pub async fn create_tags_on(
    client: &Client,
    resources: &[String],
    tags: &BTreeMap<String, String>,
) -> Result<(), ProviderError> {
    if resources.is_empty() {
        return Ok(());
    }
    client
        .create_tags()
        .set_resources(Some(resources.to_vec()))
        .set_tags(Some(tag_list(tags)))
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("ec2:CreateTags", &e))?;
    Ok(())
}

/// Every image matching `filters`, owned by one of `owners` (none: any owner).
pub async fn describe_images(
    client: &Client,
    owners: &[String],
    filters: Vec<Filter>,
) -> Result<Vec<Image>, ProviderError> {
    let mut images = Vec::new();
    let mut pages = client
        .describe_images()
        .set_owners((!owners.is_empty()).then(|| owners.to_vec()))
        .set_filters(Some(filters))
        .max_results(1000)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| ProviderError::from_sdk("ec2:DescribeImages", &e))?;
        images.extend(page.images().iter().cloned());
    }
    Ok(images)
}

/// One image by id; `None` when it does not exist (any more).
pub async fn describe_image(
    client: &Client,
    image_id: &str,
) -> Result<Option<Image>, ProviderError> {
    match client.describe_images().image_ids(image_id).send().await {
        Ok(out) => Ok(out.images().first().cloned()),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(ProviderError::from_sdk("ec2:DescribeImages", &e)),
    }
}

/// One instance by id; `None` when it does not exist (any more).
pub async fn describe_instance(
    client: &Client,
    instance_id: &str,
) -> Result<Option<Instance>, ProviderError> {
    match client
        .describe_instances()
        .instance_ids(instance_id)
        .send()
        .await
    {
        Ok(out) => Ok(out
            .reservations()
            .iter()
            .flat_map(aws_sdk_ec2::types::Reservation::instances)
            .next()
            .cloned()),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(ProviderError::from_sdk("ec2:DescribeInstances", &e)),
    }
}

/// Every snapshot owned by this account matching `filters`.
pub async fn describe_own_snapshots(
    client: &Client,
    filters: Vec<Filter>,
) -> Result<Vec<Snapshot>, ProviderError> {
    let mut snapshots = Vec::new();
    let mut pages = client
        .describe_snapshots()
        .owner_ids("self")
        .set_filters(Some(filters))
        .max_results(1000)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| ProviderError::from_sdk("ec2:DescribeSnapshots", &e))?;
        snapshots.extend(page.snapshots().iter().cloned());
    }
    Ok(snapshots)
}

/// Terminates an instance; one that is already gone counts as done.
pub async fn terminate_instance(client: &Client, instance_id: &str) -> Result<(), ProviderError> {
    match client
        .terminate_instances()
        .instance_ids(instance_id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if not_found(&e) => Ok(()),
        Err(e) => Err(ProviderError::from_sdk("ec2:TerminateInstances", &e)),
    }
}

/// Deregisters an image and deletes the snapshots behind it (DeregisterImage
/// alone leaves them, and they are billed). Returns the snapshot ids deleted;
/// an image or snapshot that is already gone counts as done. A snapshot that
/// another image still uses (`InvalidSnapshot.InUse`) is kept and left out
/// of the answer.
pub async fn delete_image(client: &Client, image_id: &str) -> Result<Vec<String>, ProviderError> {
    let snapshots = match describe_image(client, image_id).await? {
        Some(image) => snapshot_ids(&image),
        None => Vec::new(),
    };
    match client.deregister_image().image_id(image_id).send().await {
        Ok(_) => {}
        Err(e) if not_found(&e) => {}
        Err(e) => return Err(ProviderError::from_sdk("ec2:DeregisterImage", &e)),
    }
    let mut deleted = Vec::new();
    for snapshot in snapshots {
        match delete_snapshot(client, &snapshot).await {
            Ok(()) => deleted.push(snapshot),
            Err(e) if e.code.as_deref() == Some(SNAPSHOT_IN_USE) => {
                tracing::warn!("kept snapshot {snapshot} of {image_id}: {}", e.message);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// EC2's answer to a DeleteSnapshot of a snapshot an image still uses.
pub const SNAPSHOT_IN_USE: &str = "InvalidSnapshot.InUse";

/// Deletes a snapshot; one that is already gone counts as done.
pub async fn delete_snapshot(client: &Client, snapshot_id: &str) -> Result<(), ProviderError> {
    match client
        .delete_snapshot()
        .snapshot_id(snapshot_id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if not_found(&e) => Ok(()),
        Err(e) => Err(ProviderError::from_sdk("ec2:DeleteSnapshot", &e)),
    }
}

/// The EBS snapshots an image's block devices are made of.
pub fn snapshot_ids(image: &Image) -> Vec<String> {
    image
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs()?.snapshot_id().map(str::to_owned))
        .collect()
}

/// An image's tags as a map.
pub fn image_tags(image: &Image) -> BTreeMap<String, String> {
    image
        .tags()
        .iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

/// Whether EC2 answered that the resource does not exist
/// (`InvalidInstanceID.NotFound`, `InvalidAMIID.NotFound`, `InvalidSnapshot.NotFound`, ...).
fn not_found<E, R>(err: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> bool
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata,
{
    err.as_service_error()
        .and_then(aws_smithy_types::error::metadata::ProvideErrorMetadata::code)
        .is_some_and(|c| c.ends_with(".NotFound") || c.ends_with(".Unavailable"))
}
