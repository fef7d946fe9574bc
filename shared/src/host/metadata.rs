//! Who a host is on the clouds whose metadata services register-host reads,
//! and which of them a host is on (`--provider auto`).
//!
//! | provider | service and request | what is read |
//! |---|---|---|
//! | `aws` | EC2 IMDSv2 ([`super::identity`]) | instance-id, placement/region, placement/availability-zone, local-ipv4 |
//! | `digitalocean` | `GET /metadata/v1.json`, no header | `droplet_id`, `region`, `interfaces.private[0]` / `interfaces.public[0]` `.ipv4.ip_address` |
//! | `gcp` | `GET /computeMetadata/v1/instance/…` with `Metadata-Flavor: Google`; the answer carries the same header | `id`, `zone` (`projects/N/zones/us-central1-a`: region `us-central1`), `network-interfaces/0/ip`, `network-interfaces/0/access-configs/0/external-ip` |
//! | `azure` | `GET /metadata/instance?api-version=2021-02-01` with `Metadata: true` | `compute.vmId`, `compute.location`, `compute.zone`, `network.interface[0].ipv4.ipAddress[0]` `.privateIpAddress` / `.publicIpAddress` |
//!
//! The base URLs default to the addresses the clouds document and are set by
//! [`ENDPOINT_ENV`] (EC2, as every AWS SDK reads it), [`DIGITALOCEAN_ENV`],
//! [`GCP_ENV`] and [`AZURE_ENV`], for tests and unusual networks.
//!
//! Detection asks every candidate at once, each with short time-outs and a
//! deadline of its own: the link-local address answers nothing off the
//! clouds, so a host there hears so within seconds. The first answer that has
//! its cloud's shape wins; an answer of another shape (another cloud's
//! service at the same address, a captive portal) rules that cloud out. The
//! host is registered by its private address unless the public one is asked
//! for: an ELBv2 IP target group takes private addresses only.
//!
//! Nothing of an answer but the fields above is kept or shown: DigitalOcean's
//! document holds the droplet's user-data, which may hold secrets.

use std::net::IpAddr;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use reqwest::Url;
use serde_json::Value;

use super::identity::{
    self, base_url, describe, Identity, IdentityError, ImdsSettings, AWS, ENDPOINT_ENV,
};
use super::InputError;

/// `--provider auto`: find the cloud by its metadata service.
pub const AUTO: &str = "auto";

/// Overrides DigitalOcean's metadata base URL (default `http://169.254.169.254`).
pub const DIGITALOCEAN_ENV: &str = "SWITCHYARD_METADATA_DIGITALOCEAN";
/// Overrides GCP's metadata base URL (default `http://metadata.google.internal`).
pub const GCP_ENV: &str = "SWITCHYARD_METADATA_GCP";
/// Overrides Azure's metadata base URL (default `http://169.254.169.254`).
pub const AZURE_ENV: &str = "SWITCHYARD_METADATA_AZURE";

const DIGITALOCEAN_PATH: &str = "metadata/v1.json";
const GCP_INSTANCE: &str = "computeMetadata/v1/instance/";
const GCP_FLAVOR: (&str, &str) = ("Metadata-Flavor", "Google");
const AZURE_PATH: &str = "metadata/instance?api-version=2021-02-01";
const AZURE_HEADER: (&str, &str) = ("Metadata", "true");

/// A cloud whose metadata service says who a host is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    /// EC2 (IMDSv2).
    Aws,
    /// DigitalOcean droplets.
    DigitalOcean,
    /// Google Compute Engine.
    Gcp,
    /// Azure virtual machines.
    Azure,
}

impl Cloud {
    /// Every cloud, in the order their failures are reported.
    pub const ALL: [Self; 4] = [Self::Aws, Self::DigitalOcean, Self::Gcp, Self::Azure];

    /// The provider name hosts on it are labelled with.
    pub fn name(self) -> &'static str {
        match self {
            Self::Aws => AWS,
            Self::DigitalOcean => "digitalocean",
            Self::Gcp => "gcp",
            Self::Azure => "azure",
        }
    }

    /// The cloud of a provider name, if register-host reads its metadata.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The environment variable that sets its metadata base URL.
    pub fn setting(self) -> &'static str {
        match self {
            Self::Aws => ENDPOINT_ENV,
            Self::DigitalOcean => DIGITALOCEAN_ENV,
            Self::Gcp => GCP_ENV,
            Self::Azure => AZURE_ENV,
        }
    }

    fn default_endpoint(self) -> &'static str {
        match self {
            Self::Aws | Self::DigitalOcean | Self::Azure => "http://169.254.169.254/",
            Self::Gcp => "http://metadata.google.internal/",
        }
    }
}

/// Which of the addresses the metadata names is registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressKind {
    /// The private address (an ELBv2 IP target group takes only those).
    #[default]
    Private,
    /// The public address, for a load balancer outside the host's network.
    Public,
}

impl AddressKind {
    /// `private` or `public`.
    pub fn parse(text: &str) -> Result<Self, InputError> {
        match text.trim() {
            "private" => Ok(Self::Private),
            "public" => Ok(Self::Public),
            _ => Err(InputError::Invalid {
                flag: "--address-kind",
                value: text.to_owned(),
                why: "is neither private nor public".to_owned(),
            }),
        }
    }

    /// `private` or `public`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::Public => "public",
        }
    }

    fn other(self) -> Self {
        match self {
            Self::Private => Self::Public,
            Self::Public => Self::Private,
        }
    }
}

/// Where and how patiently to ask each cloud's metadata service.
#[derive(Debug, Clone)]
pub struct MetadataSettings {
    /// EC2's; `None` when `AWS_EC2_METADATA_DISABLED` turns it off.
    pub ec2: Option<ImdsSettings>,
    /// DigitalOcean's base URL.
    pub digitalocean: Url,
    /// GCP's base URL.
    pub gcp: Url,
    /// Azure's base URL.
    pub azure: Url,
    /// Time-out to connect to the others (EC2's are in [`ImdsSettings`]).
    pub connect_timeout: Duration,
    /// Time-out of one request to the others.
    pub timeout: Duration,
    /// Tries per request to the others; server errors and failed connections are retried.
    pub attempts: u32,
    /// How long detection waits for any one candidate, all requests included.
    pub deadline: Duration,
}

impl MetadataSettings {
    /// Five seconds per candidate bounds a name lookup that hangs off GCP.
    pub const DEADLINE: Duration = Duration::from_secs(5);

    /// The settings from the environment (see the module documentation).
    pub fn from_env() -> Result<Self, IdentityError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// The settings from `lookup` (an environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, IdentityError> {
        let ec2 = match ImdsSettings::from_lookup(&lookup) {
            Ok(settings) => Some(settings),
            Err(IdentityError::Disabled { .. }) => None,
            Err(e) => return Err(e),
        };
        let url = |cloud: Cloud| {
            let value = lookup(cloud.setting()).filter(|v| !v.trim().is_empty());
            base_url(
                cloud.setting(),
                value.as_deref().unwrap_or(cloud.default_endpoint()),
            )
        };
        Ok(Self {
            ec2,
            digitalocean: url(Cloud::DigitalOcean)?,
            gcp: url(Cloud::Gcp)?,
            azure: url(Cloud::Azure)?,
            connect_timeout: ImdsSettings::CONNECT_TIMEOUT,
            timeout: ImdsSettings::TIMEOUT,
            attempts: ImdsSettings::ATTEMPTS,
            deadline: Self::DEADLINE,
        })
    }

    /// The clouds `--provider auto` asks: all, less EC2 when its metadata is turned off.
    pub fn candidates(&self) -> Vec<Cloud> {
        Cloud::ALL
            .into_iter()
            .filter(|c| *c != Cloud::Aws || self.ec2.is_some())
            .collect()
    }

    /// The base URL of `cloud`'s service, for messages.
    pub fn endpoint(&self, cloud: Cloud) -> String {
        let url = match cloud {
            Cloud::Aws => self.ec2.as_ref().map(|s| &s.endpoint),
            Cloud::DigitalOcean => Some(&self.digitalocean),
            Cloud::Gcp => Some(&self.gcp),
            Cloud::Azure => Some(&self.azure),
        };
        url.map_or_else(
            || "(turned off)".to_owned(),
            |u| u.as_str().trim_end_matches('/').to_owned(),
        )
    }
}

/// What a cloud's metadata says about the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The cloud that answered.
    pub cloud: Cloud,
    /// The instance, droplet or VM id.
    pub host_id: String,
    /// Its region (`us-central1`, `nyc3`, `westeurope`).
    pub region: String,
    /// Its zone, where the cloud names one.
    pub zone: Option<String>,
    /// Its private address.
    pub private: Option<IpAddr>,
    /// Its public address.
    pub public: Option<IpAddr>,
}

impl Found {
    /// The identity that registers the `kind` address.
    pub fn identity(self, kind: AddressKind) -> Result<Identity, IdentityError> {
        let address = match kind {
            AddressKind::Private => self.private,
            AddressKind::Public => self.public,
        }
        .ok_or(IdentityError::NoAddress {
            provider: self.cloud.name(),
            kind: kind.as_str(),
            other: kind.other().as_str(),
        })?;
        Ok(Identity {
            host_id: self.host_id,
            provider: self.cloud.name().to_owned(),
            region: Some(self.region),
            availability_zone: self.zone,
            address,
            public_address: self.public,
        })
    }
}

/// Reads who the host is from the metadata of `clouds`: of the one named, or
/// (more than one) of the first that answers with its cloud's shape.
pub async fn identify(
    settings: &MetadataSettings,
    clouds: &[Cloud],
    kind: AddressKind,
) -> Result<Identity, IdentityError> {
    let found = match clouds {
        [cloud] => read(*cloud, settings).await?,
        _ => detect(settings, clouds).await?,
    };
    tracing::info!(
        "{} metadata: {} in {} at {}",
        found.cloud.name(),
        found.host_id,
        found.zone.as_ref().unwrap_or(&found.region),
        found
            .private
            .or(found.public)
            .map_or_else(|| "no address".to_owned(), |a| a.to_string())
    );
    found.identity(kind)
}

/// Asks every cloud of `clouds` at once; the first right-shaped answer wins.
pub async fn detect(settings: &MetadataSettings, clouds: &[Cloud]) -> Result<Found, IdentityError> {
    let mut pending: FuturesUnordered<_> = clouds
        .iter()
        .map(|&cloud| async move {
            let read = tokio::time::timeout(settings.deadline, read(cloud, settings)).await;
            (cloud, read)
        })
        .collect();
    let mut missed = Vec::new();
    while let Some((cloud, read)) = pending.next().await {
        let reason = match read {
            Ok(Ok(found)) => return Ok(found),
            Ok(Err(e)) => e.reason(),
            Err(_) => format!(
                "no answer within {}",
                crate::wait::progress::short(settings.deadline)
            ),
        };
        tracing::debug!("not {}: {reason}", cloud.name());
        missed.push((cloud, reason));
    }
    missed.sort_by_key(|(cloud, _)| Cloud::ALL.iter().position(|c| c == cloud));
    let tried = missed
        .iter()
        .map(|(cloud, reason)| {
            format!(
                "{} at {}: {reason}",
                cloud.name(),
                settings.endpoint(*cloud)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    Err(IdentityError::NoneFound {
        tried: if tried.is_empty() {
            "nothing".to_owned()
        } else {
            tried
        },
    })
}

/// Reads what `cloud`'s metadata says about this host.
pub async fn read(cloud: Cloud, settings: &MetadataSettings) -> Result<Found, IdentityError> {
    let service = |base: &Url| Service::new(cloud, base.clone(), settings);
    match cloud {
        Cloud::Aws => {
            let Some(imds) = &settings.ec2 else {
                return Err(IdentityError::Disabled {
                    value: "true".to_owned(),
                });
            };
            let identity = identity::from_imds(imds).await?;
            Ok(Found {
                cloud,
                host_id: identity.host_id,
                region: identity.region.unwrap_or_default(),
                zone: identity.availability_zone,
                private: Some(identity.address),
                public: None,
            })
        }
        Cloud::DigitalOcean => digitalocean(&service(&settings.digitalocean)?).await,
        Cloud::Gcp => gcp(&service(&settings.gcp)?).await,
        Cloud::Azure => azure(&service(&settings.azure)?).await,
    }
}

/// One answer of a metadata service.
struct Answer {
    status: u16,
    flavor: Option<String>,
    body: String,
}

/// A small client of one cloud's metadata service.
struct Service {
    cloud: Cloud,
    base: Url,
    http: reqwest::Client,
    timeout: Duration,
    attempts: u32,
}

impl Service {
    fn new(cloud: Cloud, base: Url, settings: &MetadataSettings) -> Result<Self, IdentityError> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            // Link-local (or a name only the cloud resolves): never through a proxy, never redirected.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| IdentityError::Request {
                path: base.to_string(),
                detail: e.to_string(),
            })?;
        Ok(Self {
            cloud,
            base,
            http,
            timeout: settings.timeout,
            attempts: settings.attempts.max(1),
        })
    }

    fn shown(path: &str) -> String {
        format!("/{}", path.trim_start_matches('/'))
    }

    /// GETs `path` with `header`; retries failed connections and server errors.
    async fn get(&self, path: &str, header: Option<(&str, &str)>) -> Result<Answer, IdentityError> {
        let url = self.base.join(path).map_err(|e| IdentityError::Request {
            path: Self::shown(path),
            detail: e.to_string(),
        })?;
        let mut attempt = 1;
        loop {
            let mut request = self.http.get(url.clone());
            if let Some((name, value)) = header {
                request = request.header(name, value);
            }
            match request.send().await {
                Ok(answer) if answer.status().is_server_error() && attempt < self.attempts => {
                    tracing::debug!("{} answered {}; retrying", url, answer.status());
                }
                Ok(answer) => {
                    let status = answer.status().as_u16();
                    let flavor = answer
                        .headers()
                        .get(GCP_FLAVOR.0)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let body = answer.text().await.map_err(|e| IdentityError::Request {
                        path: Self::shown(path),
                        detail: describe(&e, self.timeout),
                    })?;
                    return Ok(Answer {
                        status,
                        flavor,
                        body,
                    });
                }
                Err(e) if attempt < self.attempts => {
                    tracing::debug!("{url} failed ({}); retrying", describe(&e, self.timeout));
                }
                Err(e) => {
                    return Err(IdentityError::CloudUnreachable {
                        provider: self.cloud.name(),
                        endpoint: self.base.as_str().trim_end_matches('/').to_owned(),
                        setting: self.cloud.setting(),
                        detail: describe(&e, self.timeout),
                    })
                }
            }
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The body of a 200 answer; any other status is an error.
    async fn body(
        &self,
        path: &str,
        header: Option<(&str, &str)>,
    ) -> Result<Answer, IdentityError> {
        let answer = self.get(path, header).await?;
        if answer.status == 200 {
            return Ok(answer);
        }
        Err(self.refused(path, answer.status))
    }

    fn refused(&self, path: &str, status: u16) -> IdentityError {
        IdentityError::Status {
            path: Self::shown(path),
            status,
            hint: match (status, self.cloud) {
                (404, _) => " (not found: this metadata is not served here)",
                (403, Cloud::Gcp) => " (refused: GCP wants the Metadata-Flavor: Google header)",
                (400, Cloud::Azure) => " (refused: Azure wants the Metadata: true header)",
                _ => "",
            },
        }
    }

    /// The JSON document at `path`.
    async fn json(&self, path: &str, header: Option<(&str, &str)>) -> Result<Value, IdentityError> {
        let answer = self.body(path, header).await?;
        serde_json::from_str(&answer.body).map_err(|_| IdentityError::Unexpected {
            path: Self::shown(path),
            // Never the body: it may hold the host's user-data.
            value: format!("{} bytes", answer.body.len()),
            expected: "a JSON document",
        })
    }
}

fn unexpected(path: &str, value: &Value, expected: &'static str) -> IdentityError {
    let mut value = match value {
        Value::String(s) => s.clone(),
        Value::Null => "nothing".to_owned(),
        other => other.to_string(),
    };
    if value.len() > 80 {
        value = format!("{}...", value.chars().take(77).collect::<String>());
    }
    IdentityError::Unexpected {
        path: Service::shown(path),
        value,
        expected,
    }
}

/// Letters, digits and `-`, at most 64: a region or zone name.
fn plain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// An IP address, `None` when absent or empty; `label` names where it was read.
fn address(value: Option<&Value>, label: &str) -> Result<Option<IpAddr>, IdentityError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) if s.trim().parse::<IpAddr>().is_ok() => {
            Ok(s.trim().parse::<IpAddr>().ok())
        }
        Some(other) => Err(unexpected(label, other, "an IP address")),
    }
}

/// DigitalOcean: one JSON document, no header.
async fn digitalocean(service: &Service) -> Result<Found, IdentityError> {
    let doc = service.json(DIGITALOCEAN_PATH, None).await?;
    let id = doc.get("droplet_id").unwrap_or(&Value::Null);
    let Some(id) = id.as_u64() else {
        return Err(unexpected(
            &format!("{DIGITALOCEAN_PATH}#droplet_id"),
            id,
            "a droplet id (a number)",
        ));
    };
    let region = doc.get("region").unwrap_or(&Value::Null);
    let Some(region) = region.as_str().filter(|r| plain(r)) else {
        return Err(unexpected(
            &format!("{DIGITALOCEAN_PATH}#region"),
            region,
            "a region name",
        ));
    };
    Ok(Found {
        cloud: Cloud::DigitalOcean,
        host_id: id.to_string(),
        region: region.to_owned(),
        zone: None,
        private: interface_address(&doc, "private")?,
        public: interface_address(&doc, "public")?,
    })
}

/// The IPv4 address of a droplet's first interface of `kind` (`private` or `public`).
fn interface_address(doc: &Value, kind: &str) -> Result<Option<IpAddr>, IdentityError> {
    let pointer = format!("/interfaces/{kind}/0/ipv4/ip_address");
    address(
        doc.pointer(&pointer),
        &format!("{DIGITALOCEAN_PATH}#{pointer}"),
    )
}

/// GCP: one value per path, asked and answered with `Metadata-Flavor: Google`.
async fn gcp(service: &Service) -> Result<Found, IdentityError> {
    let value = |name: &'static str| async move {
        let path = format!("{GCP_INSTANCE}{name}");
        let answer = service.get(&path, Some(GCP_FLAVOR)).await?;
        if answer.flavor.as_deref() != Some(GCP_FLAVOR.1) {
            return Err(IdentityError::NotGoogle {
                path: Service::shown(&path),
            });
        }
        match answer.status {
            200 => Ok(Some(answer.body.trim().to_owned())),
            // An instance without an external address has no access config.
            404 if name.contains("access-configs") => Ok(None),
            status => Err(service.refused(&path, status)),
        }
    };
    let id = value("id").await?.unwrap_or_default();
    if id.is_empty() || id.len() > 20 || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(unexpected(
            &format!("{GCP_INSTANCE}id"),
            &Value::String(id),
            "an instance id (digits)",
        ));
    }
    let zone_path = value("zone").await?.unwrap_or_default();
    let zone = match zone_path.split('/').collect::<Vec<_>>()[..] {
        ["projects", project, "zones", zone] if !project.is_empty() && plain(zone) => zone,
        _ => {
            return Err(unexpected(
                &format!("{GCP_INSTANCE}zone"),
                &Value::String(zone_path),
                "projects/NUMBER/zones/ZONE",
            ))
        }
    };
    // us-central1-a is in us-central1.
    let Some((region, _)) = zone.rsplit_once('-') else {
        return Err(unexpected(
            &format!("{GCP_INSTANCE}zone"),
            &Value::String(zone.to_owned()),
            "a zone name (REGION-LETTER)",
        ));
    };
    let ip = |name: &'static str| async move {
        let text = value(name).await?.map(Value::String);
        address(text.as_ref(), &format!("{GCP_INSTANCE}{name}"))
    };
    Ok(Found {
        cloud: Cloud::Gcp,
        host_id: id,
        region: region.to_owned(),
        zone: Some(zone.to_owned()),
        private: ip("network-interfaces/0/ip").await?,
        public: ip("network-interfaces/0/access-configs/0/external-ip").await?,
    })
}

/// Azure: one JSON document, asked with `Metadata: true`.
async fn azure(service: &Service) -> Result<Found, IdentityError> {
    let doc = service.json(AZURE_PATH, Some(AZURE_HEADER)).await?;
    let field = |pointer: &str| doc.pointer(pointer).unwrap_or(&Value::Null);
    let vm_id = field("/compute/vmId");
    let guid = |s: &str| {
        s.len() == 36
            && s.chars().enumerate().all(|(i, c)| {
                matches!(i, 8 | 13 | 18 | 23) == (c == '-') && (c == '-' || c.is_ascii_hexdigit())
            })
    };
    let Some(vm_id) = vm_id.as_str().filter(|s| guid(s)) else {
        return Err(unexpected(
            &format!("{AZURE_PATH}#/compute/vmId"),
            vm_id,
            "a VM id (a GUID)",
        ));
    };
    let location = field("/compute/location");
    let Some(location) = location.as_str().filter(|l| plain(l)) else {
        return Err(unexpected(
            &format!("{AZURE_PATH}#/compute/location"),
            location,
            "a location name",
        ));
    };
    let zone = field("/compute/zone")
        .as_str()
        .filter(|z| plain(z))
        .map(|z| format!("{location}-{z}"));
    let first = "/network/interface/0/ipv4/ipAddress/0";
    Ok(Found {
        cloud: Cloud::Azure,
        host_id: vm_id.to_owned(),
        region: location.to_owned(),
        zone,
        private: address(
            doc.pointer(&format!("{first}/privateIpAddress")),
            &format!("{AZURE_PATH}#{first}/privateIpAddress"),
        )?,
        public: address(
            doc.pointer(&format!("{first}/publicIpAddress")),
            &format!("{AZURE_PATH}#{first}/publicIpAddress"),
        )?,
    })
}

#[cfg(test)]
#[path = "metadata_tests.rs"]
mod tests;
