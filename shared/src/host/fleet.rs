//! The fleet by labels: the hosts of a service whose labels match. EC2
//! instances (running or starting) are found with DescribeInstances tag
//! filters in one or more regions; hosts off EC2 (DigitalOcean, GCP, Azure,
//! a data center), which are IP targets and carry no EC2 tags, are listed
//! beside them from the state file's hosts section, where `join` records
//! each with its provider, region, address and labels. It is the placement
//! view a pipeline reads to put a stack in each region or provider.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use aws_sdk_ec2::types::Filter;
use serde::Serialize;

use super::identity::AWS;
use super::labels::{Labels, LABEL_TAG_PREFIX, SERVICE_TAG};
use super::HostError;
use crate::aws::ec2;
use crate::outcome::StepReport;
use crate::state::document::Host;

/// Instance states listed: hosts that are (or are about to be) in the fleet.
pub const LISTED_STATES: [&str; 2] = ["pending", "running"];

/// Which hosts to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetQuery {
    /// Only hosts of this service (default: every host switchyard registered).
    pub service: Option<String>,
    /// Only hosts with all these labels.
    pub labels: Labels,
}

impl FleetQuery {
    /// The DescribeInstances filters: one per tag, all of which must match.
    pub fn filters(&self) -> Vec<Filter> {
        let mut filters = vec![ec2::filter("instance-state-name", &LISTED_STATES)];
        match &self.service {
            Some(service) => filters.push(ec2::filter(format!("tag:{SERVICE_TAG}"), &[service])),
            None => filters.push(ec2::filter("tag-key", &[SERVICE_TAG])),
        }
        for (k, v) in self.labels.iter() {
            filters.push(ec2::filter(format!("tag:{LABEL_TAG_PREFIX}{k}"), &[v]));
        }
        filters
    }

    /// Whether a host off EC2, as the state file records it, matches.
    fn matches(&self, host: &Host) -> bool {
        let label = |k: &str| host.labels.get(k).map(String::as_str);
        self.service
            .as_deref()
            .is_none_or(|s| label("service") == Some(s))
            && label("service").is_some()
            && self.labels.iter().all(|(k, v)| label(k) == Some(v))
    }

    /// `match service=go-auth, region=us-east-1`, or `are registered` when
    /// nothing narrows the query, for messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = &self.service {
            parts.push(format!("service={s}"));
        }
        parts.extend(self.labels.iter().map(|(k, v)| format!("{k}={v}")));
        if parts.is_empty() {
            "are registered".to_owned()
        } else {
            format!("match {}", parts.join(", "))
        }
    }
}

/// One host of the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetHost {
    /// The instance id, or the id a host off EC2 joined with.
    pub host_id: String,
    /// `aws`, or the provider a host off EC2 joined with (`gcp`, `dc-fra1`).
    pub provider: String,
    /// How it is a target: `instance` (an EC2 instance, found by its tags) or
    /// `ip` (a host off EC2, from the state file).
    pub target: &'static str,
    /// The region it was found in (off EC2: the one it joined with, or `-`).
    pub region: String,
    /// Its availability zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// Its private address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `pending` or `running`; `registered` off EC2.
    pub state: String,
    /// Its service tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Its labels, from its tags.
    pub labels: Labels,
    /// When it was launched (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launched_at: Option<String>,
}

/// The hosts that match a query.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    /// The service asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The labels asked for.
    pub labels: Labels,
    /// The regions searched.
    pub regions: Vec<String>,
    /// How many hosts match.
    pub count: usize,
    /// How many match per region (regions without any are left out).
    pub by_region: BTreeMap<String, usize>,
    /// The hosts, by region, zone and id.
    pub hosts: Vec<FleetHost>,
}

impl StepReport for FleetReport {
    fn text(&self) -> String {
        let query = FleetQuery {
            service: self.service.clone(),
            labels: self.labels.clone(),
        };
        let mut t = String::new();
        if self.hosts.is_empty() {
            let _ = writeln!(
                t,
                "no hosts {} in {}",
                query.describe(),
                self.regions.join(", ")
            );
            return t;
        }
        let rows: Vec<[String; 8]> = self
            .hosts
            .iter()
            .map(|h| {
                [
                    h.host_id.clone(),
                    h.provider.clone(),
                    h.region.clone(),
                    h.availability_zone.clone().unwrap_or_else(|| "-".into()),
                    h.address.clone().unwrap_or_else(|| "-".into()),
                    h.state.clone(),
                    h.service.clone().unwrap_or_else(|| "-".into()),
                    h.labels.display(),
                ]
            })
            .collect();
        let header = [
            "HOST", "PROVIDER", "REGION", "ZONE", "ADDRESS", "STATE", "SERVICE", "LABELS",
        ];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let line = |cells: &[&str]| {
            let mut l = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i + 1 == cells.len() {
                    l.push_str(cell);
                } else {
                    let _ = write!(l, "{cell:<w$}  ");
                }
            }
            l
        };
        let _ = writeln!(t, "{}", line(&header));
        for row in &rows {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            let _ = writeln!(t, "{}", line(&cells));
        }
        let _ = writeln!(
            t,
            "{} host(s) {} ({})",
            self.count,
            query.describe(),
            self.by_region
                .iter()
                .map(|(r, n)| format!("{r}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        t
    }

    fn outputs(&self) -> Vec<(String, String)> {
        vec![
            ("count".to_owned(), self.count.to_string()),
            (
                "hosts".to_owned(),
                self.hosts
                    .iter()
                    .map(|h| h.host_id.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "regions".to_owned(),
                self.by_region.keys().cloned().collect::<Vec<_>>().join(","),
            ),
        ]
    }

    fn summary(&self) -> String {
        let mut s = format!("### register-host list\n\n{} host(s)\n", self.count);
        if !self.hosts.is_empty() {
            s.push_str(
                "\n| host | provider | region | zone | address | labels |\n|---|---|---|---|---|---|\n",
            );
            for h in &self.hosts {
                let _ = writeln!(
                    s,
                    "| `{}` | {} | {} | {} | {} | `{}` |",
                    h.host_id,
                    h.provider,
                    h.region,
                    h.availability_zone.as_deref().unwrap_or("-"),
                    h.address.as_deref().unwrap_or("-"),
                    h.labels.display()
                );
            }
        }
        s
    }
}

/// Lists the EC2 instances matching `query` in each region, with that
/// region's EC2 client, and the hosts off EC2 of `recorded` (the state file's
/// hosts section) that match it.
pub async fn list(
    regions: &[(String, aws_sdk_ec2::Client)],
    query: &FleetQuery,
    recorded: &BTreeMap<String, Host>,
) -> Result<FleetReport, HostError> {
    let mut hosts = off_ec2(recorded, query);
    for (region, client) in regions {
        for instance in ec2::describe_instances(client, query.filters()).await? {
            let Some(id) = instance.instance_id() else {
                continue;
            };
            let (service, labels) = Labels::from_tags(&ec2::tags_of(&instance));
            hosts.push(FleetHost {
                host_id: id.to_owned(),
                provider: AWS.to_owned(),
                target: "instance",
                region: region.clone(),
                availability_zone: instance
                    .placement()
                    .and_then(|p| p.availability_zone())
                    .map(str::to_owned),
                address: instance.private_ip_address().map(str::to_owned),
                state: instance
                    .state()
                    .and_then(|s| s.name())
                    .map_or("unknown", |n| n.as_str())
                    .to_owned(),
                service,
                labels,
                launched_at: instance
                    .launch_time()
                    .and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok()),
            });
        }
    }
    hosts.sort_by(|a, b| {
        (&a.region, &a.availability_zone, &a.host_id).cmp(&(
            &b.region,
            &b.availability_zone,
            &b.host_id,
        ))
    });
    let mut by_region = BTreeMap::new();
    for h in &hosts {
        *by_region.entry(h.region.clone()).or_insert(0) += 1;
    }
    Ok(FleetReport {
        service: query.service.clone(),
        labels: query.labels.clone(),
        regions: regions.iter().map(|(r, _)| r.clone()).collect(),
        count: hosts.len(),
        by_region,
        hosts,
    })
}

/// The hosts off EC2 that the state file records and that match `query`:
/// they carry no EC2 tags to be found by, and are IP targets.
pub fn off_ec2(recorded: &BTreeMap<String, Host>, query: &FleetQuery) -> Vec<FleetHost> {
    recorded
        .iter()
        .filter(|(_, h)| h.provider.as_deref().is_some_and(|p| p != AWS) && query.matches(h))
        .map(|(id, h)| FleetHost {
            host_id: id.clone(),
            provider: h.provider.clone().unwrap_or_default(),
            target: "ip",
            region: h.region.clone().unwrap_or_else(|| "-".to_owned()),
            availability_zone: None,
            address: h.address.clone(),
            state: "registered".to_owned(),
            service: h.labels.get("service").cloned(),
            labels: h
                .labels
                .iter()
                .filter(|(k, _)| k.as_str() != "service")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            launched_at: None,
        })
        .collect()
}

/// The IAM policy `list` needs (DescribeInstances has no resource level).
pub fn list_policy() -> crate::aws::iam::Policy {
    let mut policy = crate::aws::iam::Policy::new();
    policy.allow("DescribeInstances", &["ec2:DescribeInstances"], ["*"]);
    policy
}
