//! The routes spec: the file as written (the serde types, from which the
//! published JSON Schema is generated) and its checked form ([`Routes`],
//! [`Group`], [`Member`]). Every problem is found here, before any call to
//! AWS, and named by group, member and field.

use std::collections::BTreeMap;
use std::path::Path;

use aws_sdk_route53::types::{ResourceRecordSetRegion, RrType};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::aws::route53::{self as api, InsyncError};
use crate::aws::ProviderError;
use crate::health::route53::{self as checks, CheckKind, CheckSpec};
use crate::outcome::{Code, ExitStatus};
use crate::state::StateError;
use crate::traffic::TrafficError;

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
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            checks::checkable_address(ip).map_err(|e| format!("\"health_check.host\": {e}"))?;
        }
        Err(_) => check_name(&host).map_err(|e| format!("\"health_check.host\": {e}"))?,
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

pub(super) fn describe_geo(
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

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
