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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use aws_sdk_route53::types::{
    AliasTarget, ChangeAction, GeoLocation, ResourceRecord, ResourceRecordSet,
    ResourceRecordSetRegion, RrType,
};
use aws_sdk_route53::Client;
use chrono::Utc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::route53::Route53Router;
use super::{Lease, Router, TrafficError};
use crate::aws::route53::{self as api, InsyncError};
use crate::aws::ProviderError;
use crate::health::route53::{self as checks, CheckKind, CheckSpec};
use crate::outcome::{Code, ExitStatus, StepReport};
use crate::state::{
    Change, JournalEntry, Outcome, RouteState, StateDocument, StateError, StateFile, Weights,
};
use crate::wait::Backoff;

/// Continent codes Route53 geolocation records accept.
pub const CONTINENTS: [&str; 7] = ["AF", "AN", "AS", "EU", "OC", "NA", "SA"];

/// Countries whose subdivisions Route53 geolocation records accept.
const SUBDIVISION_COUNTRIES: [&str; 2] = ["US", "UA"];

/// A routes spec as written in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "switchyard routes spec")]
pub struct RoutesSpec {
    /// The JSON Schema of this file, for editors (ignored by switchyard).
    #[serde(default, rename = "$schema", skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Record groups, each one name and type with one routing policy.
    pub groups: Vec<GroupSpec>,
}

/// One record group: a name and type in a hosted zone, answered by its members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Hosted zone id (`Z...` or `/hostedzone/Z...`).
    pub zone_id: String,
    /// Record name, e.g. `api.example.com`.
    pub name: String,
    /// Record type: `A`, `AAAA` or `CNAME`.
    #[serde(rename = "type", default = "default_type")]
    pub record_type: String,
    /// TTL in seconds of the members with plain values (one TTL for the whole
    /// group, as Route53 requires); alias members have none. Default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    /// The members; every one uses the same routing policy.
    pub members: Vec<MemberSpec>,
}

fn default_type() -> String {
    "A".to_owned()
}

/// One member of a group. Its routing policy is given by exactly one of
/// `weight`, `region` or `geo`; its target by exactly one of `alias` or `values`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberSpec {
    /// The SetIdentifier, unique in the group, e.g. `us-east`.
    pub set_identifier: String,
    /// Weighted routing: weight 0-255 (share = weight / sum of the group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    /// Latency routing: the AWS region of the member, e.g. `eu-west-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Geolocation routing: where the member's clients are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo: Option<GeoSpec>,
    /// An alias to a load balancer (or another record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<AliasSpec>,
    /// Plain values: addresses for A/AAAA, one name for CNAME.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// The member's Route53 health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
}

/// An alias target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasSpec {
    /// DNS name of the target, e.g. `my-lb-1234.us-east-1.elb.amazonaws.com`.
    pub dns_name: String,
    /// Hosted zone id of the target (the load balancer's canonical zone).
    pub hosted_zone_id: String,
    /// Whether Route53 also checks the target's health (default true).
    #[serde(default = "yes")]
    pub evaluate_target_health: bool,
}

fn yes() -> bool {
    true
}

/// A geolocation: a continent, or a country (optionally a subdivision of
/// it), or the default record (country `*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GeoSpec {
    /// Continent code: AF, AN, AS, EU, OC, NA, SA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continent: Option<String>,
    /// Two-letter country code (ISO 3166-1), or `*` for the default record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Subdivision code (US states, Ukrainian regions); needs `country`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdivision: Option<String>,
}

/// A member's health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// `http`, `https`, `http-str-match`, `https-str-match` or `tcp`.
    #[serde(rename = "type")]
    pub kind: CheckKind,
    /// Host checked: an IP address or a domain name.
    pub host: String,
    /// Port (default 80, or 443 for the https kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// Path requested (http kinds; default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Seconds between checks by each checker: 10 or 30 (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    /// Consecutive failures before the member counts as unhealthy: 1-10 (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<i64>,
    /// String the body must contain (string-match kinds only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_string: Option<String>,
}

/// The JSON Schema of a routes spec, as published in `schema/routes-v1.schema.json`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(RoutesSpec);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// A group's routing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// By weight.
    Weighted,
    /// By the lowest latency from the client's resolver to the member's region.
    Latency,
    /// By where the client's resolver is.
    Geolocation,
}

impl Policy {
    /// Its name in messages and in the state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Weighted => "weighted",
            Self::Latency => "latency",
            Self::Geolocation => "geolocation",
        }
    }
}

/// How a checked member is routed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routing {
    /// Weighted, 0-255.
    Weight(i64),
    /// Latency, an AWS region.
    Region(String),
    /// Geolocation.
    Geo(GeoSpec),
}

/// Where a checked member points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An alias: DNS name (normalized), hosted zone id, evaluate target health.
    Alias {
        /// DNS name, lower case, ending in a dot.
        dns_name: String,
        /// Hosted zone id of the target.
        hosted_zone_id: String,
        /// Whether Route53 checks the target's health too.
        evaluate: bool,
    },
    /// Plain values with the group's TTL.
    Values {
        /// The values, in the spec's order.
        values: Vec<String>,
        /// The TTL.
        ttl: i64,
    },
}

/// A checked member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its SetIdentifier.
    pub set_id: String,
    /// Its routing.
    pub routing: Routing,
    /// Its target.
    pub target: Target,
    /// Its health check: the endpoint and how it is checked.
    pub check: Option<(checks::Member, CheckSpec)>,
}

/// A checked record group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Hosted zone id without the prefix.
    pub zone_id: String,
    /// Record name as Route53 returns it.
    pub name: String,
    /// Record type.
    pub rtype: RrType,
    /// The policy of every member.
    pub policy: Policy,
    /// The members, in the spec's order.
    pub members: Vec<Member>,
}

impl Group {
    /// The route's id, the same as the route53 router's (and the state's key).
    pub fn route(&self) -> String {
        format!(
            "route53:{}/{}/{}",
            self.zone_id,
            self.name,
            self.rtype.as_str()
        )
    }
}

/// A checked routes spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    /// The groups, in the spec's order.
    pub groups: Vec<Group>,
}

/// Errors of regional routing.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("cannot read routes spec {0}")]
    Read(String, #[source] std::io::Error),
    #[error("routes spec {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{0}")]
    Prune(String),
    #[error("{route} has an unfinished shift ({status}) in {state}; finish it or roll it back with shift-weight before applying routes")]
    ShiftUnfinished {
        route: String,
        status: String,
        state: String,
    },
    #[error(transparent)]
    Traffic(#[from] TrafficError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Insync(#[from] InsyncError),
    #[error("read back of {route} after the change: {detail}")]
    ReadBack { route: String, detail: String },
    #[error(transparent)]
    State(#[from] StateError),
}

impl ExitStatus for RouteError {
    fn exit_code(&self) -> Code {
        match self {
            Self::Read(..) | Self::Invalid { .. } | Self::Prune(_) => Code::Usage,
            Self::ShiftUnfinished { .. } => Code::Conflict,
            Self::Traffic(e) => e.exit_code(),
            Self::Insync(InsyncError::Cancelled { .. }) => Code::Interrupted,
            Self::Provider(_) | Self::Insync(_) | Self::ReadBack { .. } => Code::Provider,
            Self::State(e) => e.exit_code(),
        }
    }
}

/// Reads and checks a routes spec file.
pub fn load(path: &Path) -> Result<Routes, RouteError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| RouteError::Read(shown.clone(), e))?;
    parse(&text).map_err(|message| RouteError::Invalid {
        path: shown,
        message,
    })
}

/// Parses and checks a routes spec: every problem is found here, before any
/// call to AWS, and named by group, member and field.
pub fn parse(text: &str) -> Result<Routes, String> {
    let spec: RoutesSpec = serde_json::from_str(text).map_err(|e| e.to_string())?;
    check(&spec)
}

/// Checks a parsed spec.
pub fn check(spec: &RoutesSpec) -> Result<Routes, String> {
    if spec.groups.is_empty() {
        return Err("\"groups\" is empty; declare at least one record group".into());
    }
    let mut groups = Vec::new();
    let mut seen: BTreeMap<(String, String), Vec<RrType>> = BTreeMap::new();
    for (i, g) in spec.groups.iter().enumerate() {
        let group = check_group(g).map_err(|e| {
            format!(
                "group {} ({} {}): {e}",
                i + 1,
                g.name.trim(),
                g.record_type.trim()
            )
        })?;
        let types = seen
            .entry((group.zone_id.clone(), group.name.clone()))
            .or_default();
        if types.contains(&group.rtype) {
            return Err(format!(
                "group {} ({} {}): the spec declares this name and type twice; a name and type has one routing policy, so its members belong in one group",
                i + 1,
                group.name,
                group.rtype.as_str()
            ));
        }
        if types
            .iter()
            .chain([&group.rtype])
            .any(|t| *t == RrType::Cname)
            && !types.is_empty()
        {
            return Err(format!(
                "group {} ({} {}): a CNAME cannot share its name with another record type",
                i + 1,
                group.name,
                group.rtype.as_str()
            ));
        }
        types.push(group.rtype.clone());
        groups.push(group);
    }
    Ok(Routes { groups })
}

fn check_group(g: &GroupSpec) -> Result<Group, String> {
    let zone_id = api::normalize_zone_id(&g.zone_id);
    if zone_id.is_empty() || zone_id.contains('/') {
        return Err(format!(
            "\"zone_id\" {:?} is not a hosted zone id",
            g.zone_id
        ));
    }
    check_name(&g.name).map_err(|e| format!("\"name\": {e}"))?;
    let rtype = match g.record_type.trim().to_ascii_uppercase().as_str() {
        "A" => RrType::A,
        "AAAA" => RrType::Aaaa,
        "CNAME" => RrType::Cname,
        other => {
            return Err(format!(
                "\"type\" {other:?} is not supported; regional groups are A, AAAA or CNAME"
            ))
        }
    };
    let ttl = g.ttl.unwrap_or(60);
    if !(0..=2_147_483_647).contains(&ttl) {
        return Err(format!("\"ttl\" {ttl} is outside 0-2147483647 seconds"));
    }
    if g.members.is_empty() {
        return Err("\"members\" is empty".into());
    }
    let name = api::normalize_name(g.name.trim());
    let mut members: Vec<Member> = Vec::new();
    let mut policy: Option<(Policy, String)> = None;
    for m in &g.members {
        let member = check_member(m, &rtype, ttl)
            .map_err(|e| format!("member {:?}: {e}", m.set_identifier))?;
        let this = match member.routing {
            Routing::Weight(_) => Policy::Weighted,
            Routing::Region(_) => Policy::Latency,
            Routing::Geo(_) => Policy::Geolocation,
        };
        match &policy {
            None => policy = Some((this, member.set_id.clone())),
            Some((p, first)) if *p != this => {
                return Err(format!(
                    "member {:?} is {} but member {first:?} is {}; a name and type uses one routing policy, so put them in separate groups (different names)",
                    member.set_id,
                    this.as_str(),
                    p.as_str()
                ))
            }
            Some(_) => {}
        }
        if let Some(other) = members.iter().find(|o| o.set_id == member.set_id) {
            return Err(format!(
                "member {:?}: \"set_identifier\" is used twice (set identifiers are unique in a group)",
                other.set_id
            ));
        }
        if let Some(other) = members
            .iter()
            .find(|o| match (&o.routing, &member.routing) {
                (Routing::Region(a), Routing::Region(b)) => a == b,
                (Routing::Geo(a), Routing::Geo(b)) => a == b,
                _ => false,
            })
        {
            return Err(format!(
                "member {:?}: {} is already routed to member {:?}; Route53 takes one record per {}",
                member.set_id,
                describe_routing(&member.routing),
                other.set_id,
                if matches!(member.routing, Routing::Region(_)) {
                    "region"
                } else {
                    "location"
                }
            ));
        }
        members.push(member);
    }
    let policy = policy.map_or(Policy::Weighted, |(p, _)| p);
    if rtype == RrType::Cname
        && members
            .iter()
            .any(|m| matches!(m.target, Target::Values { ref values, .. } if values.len() != 1))
    {
        return Err("a CNAME member has exactly one value".into());
    }
    Ok(Group {
        zone_id,
        name,
        rtype,
        policy,
        members,
    })
}

fn check_name(name: &str) -> Result<(), String> {
    let trimmed = name.trim().trim_end_matches('.');
    if trimmed.is_empty() {
        return Err("empty".into());
    }
    if trimmed.len() > 253 {
        return Err(format!("{name:?} is longer than 253 characters"));
    }
    for label in trimmed.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "{name:?} has an empty label or one longer than 63 characters"
            ));
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '*')
        {
            return Err(format!(
                "{name:?}: label {label:?} holds characters other than letters, digits, '-', '_' and '*'"
            ));
        }
    }
    Ok(())
}

fn check_member(m: &MemberSpec, rtype: &RrType, ttl: i64) -> Result<Member, String> {
    let set_id = m.set_identifier.clone();
    if set_id.is_empty() || set_id.len() > 128 {
        return Err("\"set_identifier\" must be 1 to 128 characters".into());
    }
    let routing = match (m.weight, &m.region, &m.geo) {
        (Some(w), None, None) => {
            if !(0..=255).contains(&w) {
                return Err(format!("\"weight\" {w} is outside 0-255"));
            }
            Routing::Weight(w)
        }
        (None, Some(r), None) => {
            if !ResourceRecordSetRegion::values().contains(&r.as_str()) {
                return Err(format!(
                    "\"region\" {r:?} is not a Route53 latency region ({})",
                    ResourceRecordSetRegion::values().join(", ")
                ));
            }
            Routing::Region(r.clone())
        }
        (None, None, Some(g)) => Routing::Geo(check_geo(g)?),
        (None, None, None) => {
            return Err(
                "no routing policy; give one of \"weight\" (weighted), \"region\" (latency) or \"geo\" (geolocation)"
                    .into(),
            )
        }
        _ => {
            return Err(
                "more than one routing policy; give only one of \"weight\", \"region\" or \"geo\""
                    .into(),
            )
        }
    };
    let target = match (&m.alias, &m.values) {
        (Some(a), None) => {
            if a.dns_name.trim().is_empty() {
                return Err("\"alias.dns_name\" is empty".into());
            }
            check_name(&a.dns_name).map_err(|e| format!("\"alias.dns_name\": {e}"))?;
            let zone = api::normalize_zone_id(&a.hosted_zone_id);
            if zone.is_empty() {
                return Err("\"alias.hosted_zone_id\" is empty".into());
            }
            Target::Alias {
                dns_name: api::normalize_name(a.dns_name.trim()),
                hosted_zone_id: zone,
                evaluate: a.evaluate_target_health,
            }
        }
        (None, Some(values)) => {
            if values.is_empty() {
                return Err("\"values\" is empty".into());
            }
            for (i, v) in values.iter().enumerate() {
                check_value(rtype, v).map_err(|e| format!("\"values\": {e}"))?;
                if values[..i].iter().any(|o| o.trim() == v.trim()) {
                    return Err(format!("\"values\": {v:?} is given twice"));
                }
            }
            Target::Values {
                values: values.iter().map(|v| v.trim().to_owned()).collect(),
                ttl,
            }
        }
        (None, None) => return Err("no target; give \"alias\" or \"values\"".into()),
        (Some(_), Some(_)) => {
            return Err("both \"alias\" and \"values\"; give only one".into());
        }
    };
    let check = m
        .health_check
        .as_ref()
        .map(|h| check_health(&set_id, h))
        .transpose()?;
    Ok(Member {
        set_id,
        routing,
        target,
        check,
    })
}

fn check_value(rtype: &RrType, value: &str) -> Result<(), String> {
    let v = value.trim();
    match rtype {
        RrType::A if v.parse::<std::net::Ipv4Addr>().is_err() => {
            Err(format!("{value:?} is not an IPv4 address"))
        }
        RrType::Aaaa if v.parse::<std::net::Ipv6Addr>().is_err() => {
            Err(format!("{value:?} is not an IPv6 address"))
        }
        RrType::Cname => check_name(v),
        _ => Ok(()),
    }
}

fn check_geo(g: &GeoSpec) -> Result<GeoSpec, String> {
    let up = |s: &Option<String>| s.as_ref().map(|v| v.trim().to_ascii_uppercase());
    let (continent, country, subdivision) = (up(&g.continent), up(&g.country), up(&g.subdivision));
    match (&continent, &country, &subdivision) {
        (Some(c), None, None) => {
            if !CONTINENTS.contains(&c.as_str()) {
                return Err(format!(
                    "\"geo.continent\" {c:?} is not a continent code ({})",
                    CONTINENTS.join(", ")
                ));
            }
        }
        (None, Some(c), sub) => {
            let is_code = c.len() == 2 && c.chars().all(|ch| ch.is_ascii_uppercase());
            if c != "*" && !is_code {
                return Err(format!(
                    "\"geo.country\" {c:?} is not a two-letter country code or \"*\" (the default record)"
                ));
            }
            if let Some(s) = sub {
                if !SUBDIVISION_COUNTRIES.contains(&c.as_str()) {
                    return Err(format!(
                        "\"geo.subdivision\" {s:?}: Route53 takes subdivisions only of {}",
                        SUBDIVISION_COUNTRIES.join(" and ")
                    ));
                }
                if s.is_empty() || s.len() > 3 || !s.chars().all(|ch| ch.is_ascii_alphanumeric()) {
                    return Err(format!(
                        "\"geo.subdivision\" {s:?} is not a subdivision code"
                    ));
                }
            }
        }
        (None, None, _) => {
            return Err(
                "\"geo\" needs \"continent\" or \"country\" (\"*\" for the default record)".into(),
            )
        }
        (Some(_), Some(_), _) | (Some(_), None, Some(_)) => {
            return Err(
                "\"geo\" takes a continent or a country (with an optional subdivision), not both"
                    .into(),
            )
        }
    }
    Ok(GeoSpec {
        continent,
        country,
        subdivision,
    })
}

fn check_health(set_id: &str, h: &HealthCheckSpec) -> Result<(checks::Member, CheckSpec), String> {
    let host = h.host.trim().trim_matches(['[', ']']).to_owned();
    if host.is_empty() {
        return Err("\"health_check.host\" is empty".into());
    }
    if host.parse::<std::net::IpAddr>().is_err() {
        check_name(&host).map_err(|e| format!("\"health_check.host\": {e}"))?;
    }
    let https = matches!(h.kind, CheckKind::Https | CheckKind::HttpsStrMatch);
    let port = h.port.unwrap_or(if https { 443 } else { 80 });
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("\"health_check.port\" {port} is outside 1-65535"))?;
    let path = match (&h.path, h.kind) {
        (Some(_), CheckKind::Tcp) => {
            return Err("\"health_check.path\" is for http kinds; a tcp check has none".into())
        }
        (Some(p), _) if !p.starts_with('/') || p.len() > 255 => {
            return Err(format!(
                "\"health_check.path\" {p:?} must start with '/' and be at most 255 characters"
            ))
        }
        (Some(p), _) => p.clone(),
        (None, _) => "/".to_owned(),
    };
    let interval = h.interval.unwrap_or(30);
    if ![10, 30].contains(&interval) {
        return Err(format!(
            "\"health_check.interval\" {interval} must be 10 or 30 (seconds)"
        ));
    }
    let threshold = h.threshold.unwrap_or(3);
    if !(1..=10).contains(&threshold) {
        return Err(format!(
            "\"health_check.threshold\" {threshold} must be from 1 to 10"
        ));
    }
    let spec = CheckSpec {
        kind: h.kind,
        request_interval: i32::try_from(interval).unwrap_or(30),
        failure_threshold: i32::try_from(threshold).unwrap_or(3),
        search_string: h.search_string.clone(),
    };
    spec.check().map_err(|e| {
        format!(
            "\"health_check\": {}",
            e.to_string()
                .replace("--search-string", "\"search_string\"")
                .replace("--type ", "type ")
        )
    })?;
    Ok((
        checks::Member {
            set_id: set_id.to_owned(),
            host,
            port,
            path,
        },
        spec,
    ))
}

fn describe_routing(r: &Routing) -> String {
    match r {
        Routing::Weight(w) => format!("weight {w}"),
        Routing::Region(r) => format!("region {r}"),
        Routing::Geo(g) => describe_geo(
            g.continent.as_deref(),
            g.country.as_deref(),
            g.subdivision.as_deref(),
        ),
    }
}

fn describe_geo(
    continent: Option<&str>,
    country: Option<&str>,
    subdivision: Option<&str>,
) -> String {
    match (continent, country, subdivision) {
        (Some(c), _, _) => format!("continent {c}"),
        (None, Some("*"), _) => "default location (*)".to_owned(),
        (None, Some(c), Some(s)) => format!("country {c}-{s}"),
        (None, Some(c), None) => format!("country {c}"),
        (None, None, _) => "no location".to_owned(),
    }
}

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

/// How `apply` runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
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

fn describe_check(m: &checks::Member, spec: &CheckSpec) -> String {
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

/// Makes every group of `routes` what the spec declares: health checks found
/// or created, one change batch per zone, waited INSYNC, read back, recorded
/// in the state file and its journal. With `dry_run`, reads only and reports
/// the plan.
pub async fn apply(
    client: &Client,
    routes: &Routes,
    file: &StateFile,
    options: &Options,
    cancel: &CancellationToken,
) -> Result<ApplyReport, RouteError> {
    let deadline = Instant::now() + options.timeout;
    let mut doc = file.load()?;

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
        let batches = zone_batches(routes, &plans)
            .into_iter()
            .map(|(zone, groups)| BatchLine {
                zone_id: zone,
                changes: groups.iter().map(|&i| plans[i].len()).sum(),
                change_id: String::new(),
            })
            .collect();
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
        let changes: Vec<_> = in_zone
            .iter()
            .flat_map(|&i| {
                plans[i]
                    .iter()
                    .map(|c| api::change(c.action.clone(), c.set.clone()))
            })
            .collect();
        let count = changes.len();
        let submitted = match api::submit(client, &zone, changes, "switchyard route apply").await {
            Ok(s) => s,
            Err(e) => {
                doc.record(
                    JournalEntry::new("switchyard", "routes-failed", Outcome::Failed)
                        .detail(format!("zone {zone}: {e}")),
                );
                file.save(&doc)?;
                return Err(e.into());
            }
        };
        doc.record(journal_entry(
            routes,
            &plans,
            &current,
            &zone,
            &in_zone,
            &submitted.id,
        ));
        file.save(&doc)?;
        api::wait_insync(client, &submitted, deadline, cancel, options.backoff).await?;
        batches.push(BatchLine {
            zone_id: zone,
            changes: count,
            change_id: submitted.id,
        });
    }
    read_back(client, routes, &plans, &ids, !options.reset_weights).await?;

    let kept = kept_all(routes, &current, options.reset_weights);
    let report = report(routes, &plans, &ids, &kept, check_lines, batches, false);
    record_routes(&mut doc, routes, &report);
    file.save(&doc)?;
    Ok(report)
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
                    JournalEntry::new("switchyard", "health-check-created", Outcome::Ok)
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
                    state: file.path().display().to_string(),
                });
            }
        }
        let lock = Route53Router::new(client.clone(), &g.zone_id, &g.name, g.rtype.clone());
        let now = Utc::now();
        if let Some(held) = lock.leases().await?.into_iter().find(|l| !l.expired(now)) {
            let ours = state
                .and_then(|r| r.extra.get("lease"))
                .and_then(Value::as_str)
                .and_then(Lease::decode)
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

/// Each member's health check as it exists (or `(to be created)`), per group,
/// and the report's lines about them.
fn known_checks(
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
            });
        }
        ids.push(map);
    }
    (lines, ids)
}

fn plan_all(
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

/// Deleting records the spec does not name needs `--prune`.
fn refuse_unasked_prune(
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
    let mut entry = JournalEntry::new("switchyard", "routes-applied", Outcome::Ok).detail(format!(
        "zone {zone}: one batch of {count} change(s), change {change_id}"
    ));
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

/// Per group, the weights `apply` keeps (none when resetting them).
fn kept_all(
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

fn report(
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

/// The IAM policy of planning (`apply` false) or applying the groups of a spec.
pub fn policy(routes: &Routes, apply: bool) -> crate::aws::iam::Policy {
    use crate::aws::iam::arn;
    let mut policy = crate::aws::iam::Policy::new();
    let zones: std::collections::BTreeSet<String> = routes
        .groups
        .iter()
        .map(|g| arn::hosted_zone(&g.zone_id))
        .collect();
    let mut actions = vec!["route53:ListResourceRecordSets"];
    if apply {
        actions.push("route53:ChangeResourceRecordSets");
        policy.allow(
            "ReadChanges",
            &["route53:GetChange"],
            [arn::ROUTE53_CHANGES],
        );
    }
    policy.allow("RecordGroups", &actions, zones);
    // The health check calls have no resource level.
    let checks: &[&str] = if apply {
        &["route53:ListHealthChecks", "route53:CreateHealthCheck"]
    } else {
        &["route53:ListHealthChecks"]
    };
    policy.allow("HealthChecks", checks, ["*"]);
    policy
}

#[cfg(test)]
#[path = "regional_tests.rs"]
mod tests;
