//! Route53 health checks for the members of a record group (weighted,
//! latency, geolocation, failover): created idempotently and associated with
//! their record sets, so that Route53 stops answering with a failed member by
//! itself; and their status as Route53's checkers see it.

use std::fmt::Write as _;

use aws_sdk_route53::types::{
    ChangeAction, HealthCheckConfig, HealthCheckType, ResourceRecordSet, RrType,
};
use aws_sdk_route53::Client;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::aws::route53::{self as api, InsyncError};
use crate::aws::ProviderError;
use crate::outcome::{Code, ExitStatus, Failure, StepReport};
use crate::state::{steps, Change, Health, JournalEntry, Outcome, StateError, StateFile};

/// The kind of check. Spelled the same on the command line and in a routes
/// spec (`http`, `https-str-match`, ...).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum CheckKind {
    /// HTTP GET, 2xx or 3xx within 4 s passes.
    Http,
    /// HTTPS GET (the certificate is not validated by Route53).
    Https,
    /// HTTP, and the search string in the first 5,120 bytes of the body.
    HttpStrMatch,
    /// HTTPS, and the search string in the first 5,120 bytes of the body.
    HttpsStrMatch,
    /// A TCP connection.
    Tcp,
}

impl CheckKind {
    /// Every kind, in the order help lists them.
    pub const ALL: [CheckKind; 5] = [
        Self::Http,
        Self::Https,
        Self::HttpStrMatch,
        Self::HttpsStrMatch,
        Self::Tcp,
    ];

    /// The kind as flags and routes specs spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
            Self::HttpStrMatch => "http-str-match",
            Self::HttpsStrMatch => "https-str-match",
            Self::Tcp => "tcp",
        }
    }

    fn api(self) -> HealthCheckType {
        match self {
            Self::Http => HealthCheckType::Http,
            Self::Https => HealthCheckType::Https,
            Self::HttpStrMatch => HealthCheckType::HttpStrMatch,
            Self::HttpsStrMatch => HealthCheckType::HttpsStrMatch,
            Self::Tcp => HealthCheckType::Tcp,
        }
    }

    fn needs_search_string(self) -> bool {
        matches!(self, Self::HttpStrMatch | Self::HttpsStrMatch)
    }
}

/// How every member is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    /// The kind of check.
    pub kind: CheckKind,
    /// Seconds between checks by each checker: 10 or 30.
    pub request_interval: i32,
    /// Consecutive failures before a member is unhealthy: 1-10.
    pub failure_threshold: i32,
    /// String the body must contain (string-match kinds only).
    pub search_string: Option<String>,
}

/// A record group: one name and type in a hosted zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordGroup {
    /// Hosted zone id.
    pub zone_id: String,
    /// Record name.
    pub name: String,
    /// Record type.
    pub rtype: RrType,
}

impl RecordGroup {
    /// Reads the group's record sets: the normalized zone id, the route's id
    /// and the sets, refusing a group with none.
    async fn read(
        &self,
        client: &Client,
    ) -> Result<(String, String, Vec<ResourceRecordSet>), HealthCheckError> {
        let zone_id = api::normalize_zone_id(&self.zone_id);
        let name = api::normalize_name(&self.name);
        let route = format!("route53:{zone_id}/{name}/{}", self.rtype.as_str());
        let sets = api::list_group(client, &zone_id, &name, &self.rtype).await?;
        if sets.is_empty() {
            return Err(HealthCheckError::Invalid(format!(
                "no record group {route}: nothing has that name and type"
            )));
        }
        Ok((zone_id, route, sets))
    }
}

/// A member and the endpoint that represents it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its SetIdentifier.
    pub set_id: String,
    /// Host (IP address or domain name).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path (HTTP kinds).
    pub path: String,
}

/// Errors of health check management.
#[derive(Debug, thiserror::Error)]
pub enum HealthCheckError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Insync(#[from] InsyncError),
}

impl ExitStatus for HealthCheckError {
    fn exit_code(&self) -> Code {
        match self {
            Self::Invalid(_) => Code::Usage,
            Self::Insync(InsyncError::Cancelled { .. }) => Code::Interrupted,
            Self::Provider(_) | Self::Insync(_) => Code::Provider,
        }
    }
}

/// Checks the settings and parses `SET_ID=URL` (or `SET_ID=HOST:PORT` for TCP).
pub fn parse_member(text: &str, spec: &CheckSpec) -> Result<Member, HealthCheckError> {
    let bad = |why: &str| HealthCheckError::Invalid(format!("--member {text:?}: {why}"));
    let (set_id, target) = text
        .split_once('=')
        .ok_or_else(|| bad("expected SET_ID=URL"))?;
    if set_id.is_empty() {
        return Err(bad("the set identifier is empty"));
    }
    let default_port = match spec.kind {
        CheckKind::Https | CheckKind::HttpsStrMatch => 443,
        _ => 80,
    };
    let with_scheme = if target.contains("://") {
        target.to_owned()
    } else {
        format!("tcp://{target}")
    };
    let url = reqwest::Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
    let host = url
        .host_str()
        .ok_or_else(|| bad("no host"))?
        .trim_matches(['[', ']'])
        .to_owned();
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        checkable_address(ip).map_err(|why| bad(&why))?;
    }
    let port = url.port().unwrap_or(default_port);
    let path = if url.path().is_empty() {
        "/".to_owned()
    } else {
        url.path().to_owned()
    };
    Ok(Member {
        set_id: set_id.to_owned(),
        host,
        port,
        path,
    })
}

/// Refuses an address Route53's checkers cannot reach, as Route53 does
/// (local, private, non-routable, documentation and multicast ranges of RFC
/// 5735, RFC 6598 and RFC 5156), before any call: a health check on one
/// would be refused, or would fail for ever.
pub fn checkable_address(ip: std::net::IpAddr) -> Result<(), String> {
    use std::net::{IpAddr, Ipv4Addr};
    let v4_refused = |v4: Ipv4Addr| -> Option<&'static str> {
        let [a, b, c, _] = v4.octets();
        match (a, b, c) {
            _ if v4.is_private() => Some("a private (RFC 1918) address"),
            _ if v4.is_loopback() => Some("a loopback address"),
            _ if v4.is_link_local() => Some("a link-local address"),
            (0, ..) => Some("an address of 0.0.0.0/8"),
            (100, 64..=127, _) => Some("a shared (carrier-grade NAT, RFC 6598) address"),
            (192, 0, 0) => Some("an IETF protocol assignment (192.0.0.0/24)"),
            (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => {
                Some("a documentation address (RFC 5737)")
            }
            (198, 18..=19, _) => Some("a benchmarking address (198.18.0.0/15)"),
            (224..=239, ..) => Some("a multicast address"),
            (240..=255, ..) => Some("a reserved address (240.0.0.0/4)"),
            _ => None,
        }
    };
    let why = match ip {
        IpAddr::V4(v4) => v4_refused(v4),
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if let Some(v4) = v6.to_ipv4_mapped() {
                v4_refused(v4)
            } else if v6.is_loopback() || v6.is_unspecified() {
                Some("a loopback or unspecified address")
            } else if first & 0xfe00 == 0xfc00 {
                Some("a unique local address (fc00::/7)")
            } else if first & 0xffc0 == 0xfe80 {
                Some("a link-local address (fe80::/10)")
            } else if first & 0xff00 == 0xff00 {
                Some("a multicast address")
            } else if first == 0x2001 && v6.segments()[1] == 0x0db8 {
                Some("a documentation address (2001:db8::/32)")
            } else {
                None
            }
        }
    };
    match why {
        None => Ok(()),
        Some(why) => Err(format!(
            "{ip} is {why}: Route53's health checkers cannot reach it, and Route53 refuses such a \
             check. Check a public address or name (an Elastic IP, the load balancer), or judge \
             the stack with verify-health --via target-health"
        )),
    }
}

impl CheckSpec {
    /// Checks the settings fit Route53's limits.
    pub fn check(&self) -> Result<(), HealthCheckError> {
        if ![10, 30].contains(&self.request_interval) {
            return Err(HealthCheckError::Invalid(
                "--request-interval must be 10 or 30 (seconds)".into(),
            ));
        }
        if !(1..=10).contains(&self.failure_threshold) {
            return Err(HealthCheckError::Invalid(
                "--failure-threshold must be from 1 to 10".into(),
            ));
        }
        match (&self.search_string, self.kind.needs_search_string()) {
            (None, true) => Err(HealthCheckError::Invalid(
                "string-match checks need --search-string".into(),
            )),
            (Some(_), false) => Err(HealthCheckError::Invalid(
                "--search-string needs --type http-str-match or https-str-match".into(),
            )),
            (Some(s), true) if s.is_empty() || s.len() > 255 => Err(HealthCheckError::Invalid(
                "--search-string must be 1 to 255 characters".into(),
            )),
            _ => Ok(()),
        }
    }
}

fn config(member: &Member, spec: &CheckSpec) -> HealthCheckConfig {
    let mut b = HealthCheckConfig::builder()
        .r#type(spec.kind.api())
        .port(i32::from(member.port))
        .request_interval(spec.request_interval)
        .failure_threshold(spec.failure_threshold);
    b = if member.host.parse::<std::net::IpAddr>().is_ok() {
        b.ip_address(&member.host)
    } else {
        b.fully_qualified_domain_name(&member.host)
    };
    if spec.kind != CheckKind::Tcp {
        b = b.resource_path(&member.path);
    }
    if matches!(spec.kind, CheckKind::Https | CheckKind::HttpsStrMatch) {
        b = b.enable_sni(true);
    }
    if let Some(s) = &spec.search_string {
        b = b.search_string(s);
    }
    b.build().expect("type is always set")
}

/// The CallerReference of a check: a hash of everything that defines it, so
/// that the same configuration always names the same check.
pub fn caller_reference(zone_id: &str, name: &str, member: &Member, spec: &CheckSpec) -> String {
    let mut h = Sha256::new();
    let canonical = format!(
        "v1|{zone_id}|{name}|{}|{:?}|{}|{}|{}|{}|{}|{}",
        member.set_id,
        spec.kind,
        member.host,
        member.port,
        member.path,
        spec.request_interval,
        spec.failure_threshold,
        spec.search_string.as_deref().unwrap_or("")
    );
    h.update(canonical.as_bytes());
    let digest = h.finalize();
    let mut hex = String::with_capacity(40);
    for byte in &digest[..16] {
        let _ = write!(hex, "{byte:02x}");
    }
    format!("switchyard-{hex}")
}

/// One member's check after `ensure`.
#[derive(Debug, Clone, Serialize)]
pub struct EnsuredCheck {
    /// The member.
    pub set_id: String,
    /// The health check id.
    pub health_check_id: String,
    /// Whether this run created it.
    pub created: bool,
    /// Whether this run associated it with the record set.
    pub associated: bool,
    /// The check it replaced on the record set, if any (no longer used by it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced: Option<String>,
    /// Whether the replaced check was deleted: switchyard made it (its
    /// CallerReference says so) and no record set of the group uses it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replaced_deleted: bool,
}

/// What `ensure` did.
#[derive(Debug, Clone, Serialize)]
pub struct EnsureReport {
    /// The record group.
    pub route: String,
    /// Per member.
    pub checks: Vec<EnsuredCheck>,
    /// The Route53 change that associated them, if one was needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
}

impl EnsureReport {
    /// Journals the checks in the state: which check each member has, and
    /// the ones created or newly associated as changes.
    pub async fn record(&self, file: &StateFile) -> Result<(), StateError> {
        let mut doc = file.load().await?;
        let mut entry =
            JournalEntry::new(steps::VERIFY_HEALTH, "route53-health-checks", Outcome::Ok).detail(
                format!(
                    "{}: {}",
                    self.route,
                    self.checks
                        .iter()
                        .map(|c| format!("{}={}", c.set_id, c.health_check_id))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        for c in self.checks.iter().filter(|c| c.created || c.associated) {
            entry = entry.change(Change {
                resource: format!("{}#{}", self.route, c.set_id),
                before: c.replaced.clone().map(Into::into),
                after: Some(c.health_check_id.clone().into()),
                reference: self.change.clone(),
            });
        }
        for c in self.checks.iter().filter(|c| c.replaced_deleted) {
            if let Some(old) = &c.replaced {
                entry = entry.change(Change {
                    resource: format!("route53:healthcheck/{old}"),
                    before: Some(format!("replaced on {}#{}", self.route, c.set_id).into()),
                    after: Some("deleted".into()),
                    reference: None,
                });
            }
        }
        doc.record(entry);
        file.save(&mut doc).await
    }
}

/// Creates (once) a health check per member and associates each with its
/// record set in one change batch. Running it again with the same settings
/// changes nothing.
pub async fn ensure(
    client: &Client,
    group: &RecordGroup,
    members: &[Member],
    spec: &CheckSpec,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<EnsureReport, HealthCheckError> {
    let (zone_id, route, sets) = group.read(client).await?;
    let name = api::normalize_name(&group.name);
    let known: Vec<&str> = sets.iter().filter_map(|s| s.set_identifier()).collect();
    for m in members {
        if !known.contains(&m.set_id.as_str()) {
            return Err(HealthCheckError::Invalid(format!(
                "{:?} is not a member of {route}; members are {}",
                m.set_id,
                known.join(", ")
            )));
        }
    }
    let existing = existing_checks(client).await?;
    let mut checks = Vec::new();
    let mut changes = Vec::new();
    for m in members {
        let (id, created) = find_or_create(client, &existing, &zone_id, &name, m, spec).await?;
        let set = sets
            .iter()
            .find(|s| s.set_identifier() == Some(m.set_id.as_str()))
            .expect("checked above");
        let associated = set.health_check_id() != Some(id.as_str());
        if associated {
            let mut updated = set.clone();
            updated.health_check_id = Some(id.clone());
            changes.push(api::change(ChangeAction::Upsert, updated));
        }
        checks.push(EnsuredCheck {
            set_id: m.set_id.clone(),
            replaced: set
                .health_check_id()
                .filter(|old| *old != id)
                .map(str::to_owned),
            health_check_id: id,
            created,
            associated,
            replaced_deleted: false,
        });
    }
    let change = if changes.is_empty() {
        None
    } else {
        let submitted = api::submit(
            client,
            &zone_id,
            changes,
            "switchyard: associate health checks",
        )
        .await?;
        api::wait_insync(
            client,
            &submitted,
            deadline,
            cancel,
            crate::aws::route53::CHANGE_BACKOFF,
        )
        .await?;
        Some(submitted.id)
    };
    // The record sets no longer use the replaced checks (the change is
    // INSYNC): the ones switchyard made go, so they are not billed forever.
    let still_used: Vec<String> = checks.iter().map(|c| c.health_check_id.clone()).collect();
    for c in &mut checks {
        let Some(old) = c.replaced.clone() else {
            continue;
        };
        if still_used.contains(&old) || !made_by_switchyard(&existing, &old) {
            continue;
        }
        c.replaced_deleted = delete_check(client, &old).await?;
    }
    Ok(EnsureReport {
        route,
        checks,
        change,
    })
}

/// Whether check `id` is one switchyard created (its CallerReference is one
/// of [`caller_reference`]'s), among `existing`.
pub fn made_by_switchyard(existing: &[(String, String)], id: &str) -> bool {
    existing
        .iter()
        .any(|(reference, i)| i == id && reference.starts_with("switchyard-"))
}

/// Deletes health check `id`; one already gone counts as deleted. One that
/// a record set still uses (`HealthCheckInUse`, e.g. outside the group) is
/// kept: returns false.
pub async fn delete_check(client: &Client, id: &str) -> Result<bool, ProviderError> {
    match client
        .delete_health_check()
        .health_check_id(id)
        .send()
        .await
    {
        Ok(_) => {
            tracing::info!("deleted Route53 health check {id}, which no record set uses any more");
            Ok(true)
        }
        Err(e) => {
            let code = e
                .as_service_error()
                .and_then(aws_smithy_types::error::metadata::ProvideErrorMetadata::code);
            match code {
                Some("NoSuchHealthCheck") => Ok(true),
                Some("HealthCheckInUse") => {
                    tracing::warn!("kept Route53 health check {id}: a record set still uses it");
                    Ok(false)
                }
                _ => Err(ProviderError::from_sdk("route53:DeleteHealthCheck", &e)),
            }
        }
    }
}

/// What `ensure` would replace: per member whose record set uses another
/// check than the one its settings name, that check's id, and whether
/// switchyard made it (and so would delete it). Reads only.
pub async fn would_replace(
    client: &Client,
    group: &RecordGroup,
    members: &[Member],
    spec: &CheckSpec,
) -> Result<Vec<(String, String, bool)>, HealthCheckError> {
    let (zone_id, _, sets) = group.read(client).await?;
    let name = api::normalize_name(&group.name);
    let existing = existing_checks(client).await?;
    let mut out = Vec::new();
    for m in members {
        let reference = caller_reference(&zone_id, &name, m, spec);
        let wanted = existing
            .iter()
            .find(|(r, _)| *r == reference)
            .map(|(_, id)| id.as_str());
        let Some(old) = sets
            .iter()
            .find(|s| s.set_identifier() == Some(m.set_id.as_str()))
            .and_then(|s| s.health_check_id())
        else {
            continue;
        };
        if wanted != Some(old) {
            out.push((
                m.set_id.clone(),
                old.to_owned(),
                made_by_switchyard(&existing, old),
            ));
        }
    }
    Ok(out)
}

/// The check of `member` (found by its CallerReference among `existing`, see
/// [`existing_checks`]), created when there is none. Returns its id and
/// whether this call created it.
pub async fn find_or_create(
    client: &Client,
    existing: &[(String, String)],
    zone_id: &str,
    name: &str,
    member: &Member,
    spec: &CheckSpec,
) -> Result<(String, bool), ProviderError> {
    let reference = caller_reference(zone_id, name, member, spec);
    match existing.iter().find(|(r, _)| *r == reference) {
        Some((_, id)) => Ok((id.clone(), false)),
        None => Ok((create(client, &reference, member, spec).await?, true)),
    }
}

async fn create(
    client: &Client,
    reference: &str,
    m: &Member,
    spec: &CheckSpec,
) -> Result<String, ProviderError> {
    let out = client
        .create_health_check()
        .caller_reference(reference)
        .health_check_config(config(m, spec))
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("route53:CreateHealthCheck", &e))?;
    let id = out
        .health_check()
        .map(|h| h.id().to_owned())
        .unwrap_or_default();
    tracing::info!(
        "created Route53 health check {id} for {} ({}:{}{})",
        m.set_id,
        m.host,
        m.port,
        m.path
    );
    Ok(id)
}

/// Every health check of the account as (CallerReference, id).
pub async fn existing_checks(client: &Client) -> Result<Vec<(String, String)>, ProviderError> {
    let mut out = Vec::new();
    let mut pages = client.list_health_checks().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| ProviderError::from_sdk("route53:ListHealthChecks", &e))?;
        for h in page.health_checks() {
            out.push((h.caller_reference().to_owned(), h.id().to_owned()));
        }
    }
    Ok(out)
}

/// One member's health as Route53's checkers report it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    /// The member.
    pub set_id: String,
    /// Its health check, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check_id: Option<String>,
    /// Healthy, unhealthy, or inconclusive (no check, or no checker reported).
    pub verdict: Health,
    /// Checkers reporting success.
    pub checkers_ok: usize,
    /// Checkers reporting.
    pub checkers: usize,
}

/// The group's health check status.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The record group.
    pub route: String,
    /// Per member.
    pub members: Vec<MemberStatus>,
}

/// Reads each member's health check status. Route53 counts a member healthy
/// when more than 18% of its checkers report success.
pub async fn status(
    client: &Client,
    group: &RecordGroup,
) -> Result<StatusReport, HealthCheckError> {
    let (_, route, sets) = group.read(client).await?;
    let lookups = sets.iter().map(|set| async move {
        let set_id = set.set_identifier().unwrap_or("(simple)").to_owned();
        let Some(id) = set.health_check_id() else {
            return Ok(MemberStatus {
                set_id,
                health_check_id: None,
                verdict: Health::Inconclusive,
                checkers_ok: 0,
                checkers: 0,
            });
        };
        let out = client
            .get_health_check_status()
            .health_check_id(id)
            .send()
            .await
            .map_err(|e| ProviderError::from_sdk("route53:GetHealthCheckStatus", &e))?;
        let reports = out.health_check_observations();
        let ok = reports
            .iter()
            .filter(|o| {
                o.status_report()
                    .and_then(|r| r.status())
                    .is_some_and(|s| s.starts_with("Success"))
            })
            .count();
        #[allow(clippy::cast_precision_loss)]
        let verdict = if reports.is_empty() {
            Health::Inconclusive
        } else if ok as f64 > reports.len() as f64 * 0.18 {
            Health::Healthy
        } else {
            Health::Unhealthy
        };
        Ok::<_, HealthCheckError>(MemberStatus {
            set_id,
            health_check_id: Some(id.to_owned()),
            verdict,
            checkers_ok: ok,
            checkers: reports.len(),
        })
    });
    let members = futures::future::try_join_all(lookups).await?;
    Ok(StatusReport { route, members })
}

impl StepReport for EnsureReport {
    fn text(&self) -> String {
        let mut t = format!("health checks for {}:\n", self.route);
        for c in &self.checks {
            let _ = write!(
                t,
                "  {}: {} ({}, {})",
                c.set_id,
                c.health_check_id,
                if c.created { "created" } else { "exists" },
                if c.associated {
                    "associated now"
                } else {
                    "already associated"
                }
            );
            if let Some(old) = &c.replaced {
                let _ = write!(t, "; replaced {old}, which this record no longer uses");
                if c.replaced_deleted {
                    let _ = write!(t, " (deleted)");
                }
            }
            t.push('\n');
        }
        t
    }

    fn outputs(&self) -> Vec<(String, String)> {
        let ids: Vec<String> = self
            .checks
            .iter()
            .map(|c| format!("{}={}", c.set_id, c.health_check_id))
            .collect();
        vec![("health-checks".into(), ids.join(","))]
    }

    fn summary(&self) -> String {
        let mut s = format!("### verify-health route53 ensure: {}\n\n| member | health check | created | associated |\n|---|---|---|---|\n", self.route);
        for c in &self.checks {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                c.set_id, c.health_check_id, c.created, c.associated
            );
        }
        s
    }
}

impl StepReport for StatusReport {
    fn text(&self) -> String {
        let mut t = format!("health check status of {}:\n", self.route);
        for m in &self.members {
            let _ = writeln!(
                t,
                "  {}: {:?} ({}/{} checkers report success){}",
                m.set_id,
                m.verdict,
                m.checkers_ok,
                m.checkers,
                m.health_check_id
                    .as_ref()
                    .map_or_else(|| ", no health check".into(), |id| format!(", check {id}"))
            );
        }
        t.to_lowercase()
    }

    fn outputs(&self) -> Vec<(String, String)> {
        let all = self.members.iter().all(|m| m.verdict == Health::Healthy);
        vec![("healthy".into(), all.to_string())]
    }

    fn failure(&self) -> Option<Failure> {
        let unhealthy: Vec<&str> = self
            .members
            .iter()
            .filter(|m| m.verdict != Health::Healthy)
            .map(|m| m.set_id.as_str())
            .collect();
        (!unhealthy.is_empty()).then(|| {
            Failure::message(
                Code::CheckFailed,
                format!("not healthy in Route53's view: {}", unhealthy.join(", ")),
            )
        })
    }

    fn summary(&self) -> String {
        let mut s = format!("### verify-health route53 status: {}\n\n| member | verdict | checkers ok |\n|---|---|---|\n", self.route);
        for m in &self.members {
            let _ = writeln!(
                s,
                "| {} | {:?} | {}/{} |",
                m.set_id, m.verdict, m.checkers_ok, m.checkers
            );
        }
        s
    }
}

/// The IAM policy of `ensure` (`create` true: changing the group's record
/// sets only) or `status` on `group`.
pub fn policy(group: &RecordGroup, create: bool) -> crate::aws::iam::Policy {
    use crate::aws::iam::arn;
    let zone_id = group.zone_id.as_str();
    let mut policy = crate::aws::iam::Policy::new();
    policy.allow(
        "ReadRecords",
        &["route53:ListResourceRecordSets"],
        [arn::hosted_zone(zone_id)],
    );
    if !create {
        policy.allow(
            "ReadHealthChecks",
            &["route53:GetHealthCheckStatus"],
            [arn::ROUTE53_HEALTH_CHECKS],
        );
    }
    if create {
        policy
            .allow(
                "ChangeRecords",
                &["route53:ChangeResourceRecordSets"],
                [arn::hosted_zone(zone_id)],
            )
            .only_records(
                "ChangeRecords",
                [group.name.as_str()],
                [group.rtype.as_str().to_owned()],
            );
        policy.allow(
            "ReadChanges",
            &["route53:GetChange"],
            [arn::ROUTE53_CHANGES],
        );
        // CreateHealthCheck and ListHealthChecks have no resource level.
        policy.allow(
            "CreateHealthChecks",
            &["route53:CreateHealthCheck", "route53:ListHealthChecks"],
            ["*"],
        );
        // The checks it replaced, once no record set uses them.
        policy.allow(
            "DeleteReplacedHealthChecks",
            &["route53:DeleteHealthCheck"],
            [arn::ROUTE53_HEALTH_CHECKS],
        );
    }
    policy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_replaced_check_in_use_is_kept_one_gone_counts_as_deleted_and_throttling_is_retried()
    {
        use aws_sdk_route53::operation::delete_health_check::DeleteHealthCheckOutput;
        use aws_smithy_mocks::{mock, mock_client, RuleMode};

        use crate::aws::mocked::route53_error;
        let refused = |code: &'static str, status: u16| {
            move || {
                aws_smithy_runtime_api::http::Response::new(
                    aws_smithy_runtime_api::http::StatusCode::try_from(status).unwrap(),
                    aws_smithy_types::body::SdkBody::from(route53_error(code, "as Route53 says")),
                )
            }
        };
        let in_use = mock!(aws_sdk_route53::Client::delete_health_check)
            .match_requests(|r| r.health_check_id() == Some("hc-used"))
            .then_http_response(refused("HealthCheckInUse", 400));
        let gone = mock!(aws_sdk_route53::Client::delete_health_check)
            .match_requests(|r| r.health_check_id() == Some("hc-gone"))
            .then_http_response(refused("NoSuchHealthCheck", 404));
        let throttled = mock!(aws_sdk_route53::Client::delete_health_check)
            .match_requests(|r| r.health_check_id() == Some("hc-old"))
            .sequence()
            .http_status(400, Some(route53_error("Throttling", "Rate exceeded")))
            .times(2)
            .output(|| DeleteHealthCheckOutput::builder().build())
            .build();
        let denied = mock!(aws_sdk_route53::Client::delete_health_check)
            .match_requests(|r| r.health_check_id() == Some("hc-denied"))
            .then_http_response(refused("AccessDenied", 403));
        let client = mock_client!(
            aws_sdk_route53,
            RuleMode::MatchAny,
            &[&in_use, &gone, &throttled, &denied],
            |c| c.retry_config(crate::aws::config::retry_policy())
        );
        assert!(!delete_check(&client, "hc-used").await.unwrap());
        assert!(delete_check(&client, "hc-gone").await.unwrap());
        assert!(delete_check(&client, "hc-old").await.unwrap());
        assert_eq!(throttled.num_calls(), 3);
        let err = delete_check(&client, "hc-denied").await.unwrap_err();
        assert_eq!(err.operation, "route53:DeleteHealthCheck");
        let existing = vec![
            ("switchyard-0123".to_owned(), "hc-ours".to_owned()),
            ("terraform-1".to_owned(), "hc-theirs".to_owned()),
        ];
        assert!(made_by_switchyard(&existing, "hc-ours"));
        assert!(!made_by_switchyard(&existing, "hc-theirs"));
        assert!(!made_by_switchyard(&existing, "hc-unknown"));
    }

    fn spec(kind: CheckKind) -> CheckSpec {
        CheckSpec {
            kind,
            request_interval: 30,
            failure_threshold: 3,
            search_string: None,
        }
    }

    #[test]
    fn members_parse_urls_and_host_ports() {
        let m = parse_member(
            "blue=https://52.94.236.1:8443/healthz",
            &spec(CheckKind::Https),
        )
        .unwrap();
        assert_eq!(
            (m.host.as_str(), m.port, m.path.as_str()),
            ("52.94.236.1", 8443, "/healthz")
        );
        let m = parse_member("eu=api.example.eu", &spec(CheckKind::Https)).unwrap();
        assert_eq!((m.host.as_str(), m.port), ("api.example.eu", 443));
        let m = parse_member("db=52.94.236.2:5432", &spec(CheckKind::Tcp)).unwrap();
        assert_eq!((m.host.as_str(), m.port), ("52.94.236.2", 5432));
        assert!(parse_member("nourl", &spec(CheckKind::Http)).is_err());
        assert!(parse_member("=http://x", &spec(CheckKind::Http)).is_err());
    }

    /// Route53 refuses checks of addresses its checkers cannot reach; so
    /// does the step, before any call (moto accepts them).
    #[test]
    fn unreachable_addresses_are_refused_before_any_call() {
        for (address, why) in [
            ("10.1.0.1", "private"),
            ("172.16.5.4", "private"),
            ("192.168.1.1", "private"),
            ("127.0.0.1", "loopback"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("203.0.113.7", "documentation"),
            ("[::1]", "loopback"),
            ("[fd00::1]", "unique local"),
            ("[fe80::1]", "link-local"),
            ("[::ffff:10.0.0.1]", "private"),
        ] {
            let err = parse_member(
                &format!("m=http://{address}/health"),
                &spec(CheckKind::Http),
            )
            .unwrap_err();
            assert!(err.to_string().contains(why), "{address}: {err}");
            assert_eq!(err.exit_code(), Code::Usage);
        }
        for public in ["52.94.236.1", "[2600:1f18::1]", "api.example.com"] {
            assert!(
                parse_member(&format!("m=http://{public}/health"), &spec(CheckKind::Http)).is_ok(),
                "{public}"
            );
        }
    }

    #[test]
    fn caller_reference_follows_the_configuration() {
        let m = parse_member("blue=http://52.94.236.1/health", &spec(CheckKind::Http)).unwrap();
        let a = caller_reference("Z1", "app.example.com.", &m, &spec(CheckKind::Http));
        assert_eq!(
            a,
            caller_reference("Z1", "app.example.com.", &m, &spec(CheckKind::Http))
        );
        assert_ne!(
            a,
            caller_reference("Z1", "app.example.com.", &m, &spec(CheckKind::Tcp))
        );
        assert!(a.len() <= 64 && a.starts_with("switchyard-"));
    }

    #[test]
    fn spec_limits() {
        assert!(spec(CheckKind::Http).check().is_ok());
        let mut s = spec(CheckKind::Http);
        s.request_interval = 20;
        assert!(s.check().is_err());
        let mut s = spec(CheckKind::HttpsStrMatch);
        assert!(s.check().is_err());
        s.search_string = Some("ok".into());
        assert!(s.check().is_ok());
        let mut s = spec(CheckKind::Http);
        s.failure_threshold = 11;
        assert!(s.check().is_err());
    }
}
