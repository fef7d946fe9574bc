//! EC2 calls used by the steps: tagging an instance, and finding instances by
//! their tags (DescribeInstances with tag filters, every page).

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, Instance, Tag};
use aws_sdk_ec2::Client;

use super::ProviderError;

/// Sets `tags` on `resource` (an instance id, an image id, ...). Tags that
/// exist with other values are overwritten; other tags are left alone.
pub async fn create_tags(
    client: &Client,
    resource: &str,
    tags: &BTreeMap<String, String>,
) -> Result<(), ProviderError> {
    let tags = tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect::<Vec<_>>();
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
