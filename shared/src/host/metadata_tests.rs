//! The clouds' metadata read from loopback stand-ins that answer as each
//! service documents (and refuse as each does), and the detection across them.

use std::collections::BTreeMap;

use serde_json::json;
use tokio::net::TcpListener;

use super::*;
use crate::host::stand_in::{env, Seen, StandIn};
use crate::outcome::{Code, ExitStatus};

type Reply = (u16, Vec<(&'static str, String)>, String);

/// A droplet's `/metadata/v1.json`, with the user-data that must never be shown.
fn droplet() -> Value {
    json!({
        "droplet_id": 2_756_294,
        "hostname": "web-1",
        "user_data": "#!/bin/sh\nexport DB_PASSWORD=hunter2\n",
        "vendor_data": "#cloud-config\n",
        "public_keys": ["ssh-ed25519 AAAA..."],
        "auth_key": "88aa...",
        "region": "nyc3",
        "interfaces": {
            "private": [{"ipv4": {"ip_address": "10.132.255.113", "netmask": "255.255.0.0",
                                  "gateway": "10.132.0.1"}, "mac": "04:01:2a:0f:2a:02", "type": "private"}],
            "public": [{"ipv4": {"ip_address": "104.131.20.105", "netmask": "255.255.192.0",
                                 "gateway": "104.131.0.1"}, "mac": "04:01:2a:0f:2a:01", "type": "public"}]
        },
        "floating_ip": {"ipv4": {"active": false}},
        "dns": {"nameservers": ["2001:4860:4860::8844", "8.8.8.8"]},
        "tags": ["web"],
        "features": {"dhcp_enabled": false}
    })
}

fn digitalocean_like(doc: Value) -> impl Fn(&Seen, usize) -> Reply + Send + Sync {
    move |seen, _| match seen.path.as_str() {
        "/metadata/v1.json" => (
            200,
            vec![("Content-Type", "application/json".into())],
            doc.to_string(),
        ),
        _ => (404, vec![], "not found".into()),
    }
}

/// GCP's metadata server: 403 without `Metadata-Flavor: Google`; every
/// answer carries that header; an instance without an external address has
/// no access config (404).
fn gcp_like(external: Option<&'static str>) -> impl Fn(&Seen, usize) -> Reply + Send + Sync {
    move |seen, _| {
        let flavor = vec![("Metadata-Flavor", "Google".to_owned())];
        if seen.headers.get("metadata-flavor").map(String::as_str) != Some("Google") {
            return (403, flavor, "Missing Metadata-Flavor:Google header.".into());
        }
        let body = match seen
            .path
            .trim_start_matches("/computeMetadata/v1/instance/")
        {
            "id" => "4520031799277581759",
            "zone" => "projects/123456789012/zones/us-central1-a",
            "network-interfaces/0/ip" => "10.128.0.2",
            "network-interfaces/0/access-configs/0/external-ip" => match external {
                Some(ip) => ip,
                None => return (404, flavor, "Not Found".into()),
            },
            _ => return (404, flavor, "Not Found".into()),
        };
        (200, flavor, body.into())
    }
}

/// Azure's IMDS: 400 without `Metadata: true`.
fn azure_like(seen: &Seen, _: usize) -> Reply {
    if seen.headers.get("metadata").map(String::as_str) != Some("true") {
        return (
            400,
            vec![],
            r#"{"error": "Bad request. Required metadata header not specified"}"#.into(),
        );
    }
    if seen.path != "/metadata/instance?api-version=2021-02-01" {
        return (404, vec![], r#"{"error": "Not found"}"#.into());
    }
    let doc = json!({
        "compute": {"location": "westeurope", "name": "web-1", "zone": "2",
                    "vmId": "02aab8a4-74ef-476e-8182-f6d2ba4166a6", "vmSize": "Standard_B2s",
                    "resourceGroupName": "go-auth", "osType": "Linux"},
        "network": {"interface": [{
            "ipv4": {"ipAddress": [{"privateIpAddress": "10.1.0.4", "publicIpAddress": ""}],
                     "subnet": [{"address": "10.1.0.0", "prefix": "24"}]},
            "ipv6": {"ipAddress": []},
            "macAddress": "000D3AF806EC"
        }]}
    });
    (200, vec![], doc.to_string())
}

/// A loopback URL where nothing listens.
fn closed() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    endpoint
}

/// Settings with each cloud's base URL as given (`None`: where nothing listens).
fn settings(urls: &[(Cloud, &str)]) -> MetadataSettings {
    let mut env: BTreeMap<&str, String> =
        Cloud::ALL.iter().map(|c| (c.setting(), closed())).collect();
    for (cloud, url) in urls {
        env.insert(cloud.setting(), (*url).to_owned());
    }
    MetadataSettings::from_lookup(|k| env.get(k).cloned()).unwrap()
}

#[tokio::test]
async fn a_droplet_is_read_from_its_json_document_without_showing_the_rest() {
    let service = StandIn::start(Box::new(digitalocean_like(droplet()))).await;
    let settings = settings(&[(Cloud::DigitalOcean, &service.endpoint)]);
    let identity = identify(&settings, &[Cloud::DigitalOcean], AddressKind::Private)
        .await
        .unwrap();
    assert_eq!(
        identity,
        Identity {
            host_id: "2756294".into(),
            provider: "digitalocean".into(),
            region: Some("nyc3".into()),
            availability_zone: None,
            address: "10.132.255.113".parse().unwrap(),
            public_address: Some("104.131.20.105".parse().unwrap()),
        }
    );
    let public = identify(&settings, &[Cloud::DigitalOcean], AddressKind::Public)
        .await
        .unwrap();
    assert_eq!(public.address.to_string(), "104.131.20.105");

    // A document without the droplet id is not a droplet's; its user-data is never shown.
    let mut wrong = droplet();
    wrong["droplet_id"] = json!("web-1");
    let service = StandIn::start(Box::new(digitalocean_like(wrong))).await;
    let settings = self::settings(&[(Cloud::DigitalOcean, &service.endpoint)]);
    let err = read(Cloud::DigitalOcean, &settings).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "instance metadata /metadata/v1.json#droplet_id returned \"web-1\", which is not a droplet id (a number)"
    );
    assert_eq!(err.exit_code(), Code::Provider);

    let portal = StandIn::start(Box::new(|_: &Seen, _| {
        (200, vec![], "<html>DB_PASSWORD=hunter2</html>".into())
    }))
    .await;
    let settings = self::settings(&[(Cloud::DigitalOcean, &portal.endpoint)]);
    let err = read(Cloud::DigitalOcean, &settings)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("which is not a JSON document"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[tokio::test]
async fn gcp_is_asked_with_and_must_answer_with_the_metadata_flavor_header() {
    let service = StandIn::start(Box::new(gcp_like(Some("34.123.45.67")))).await;
    let settings = settings(&[(Cloud::Gcp, &service.endpoint)]);
    let identity = identify(&settings, &[Cloud::Gcp], AddressKind::Private)
        .await
        .unwrap();
    assert_eq!(
        identity,
        Identity {
            host_id: "4520031799277581759".into(),
            provider: "gcp".into(),
            region: Some("us-central1".into()),
            availability_zone: Some("us-central1-a".into()),
            address: "10.128.0.2".parse().unwrap(),
            public_address: Some("34.123.45.67".parse().unwrap()),
        }
    );
    let seen = service.seen();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen
        .iter()
        .all(|s| s.headers.get("metadata-flavor").map(String::as_str) == Some("Google")));

    // No external address: registering the public one is bad input, exit 2.
    let private_only = StandIn::start(Box::new(gcp_like(None))).await;
    let settings = self::settings(&[(Cloud::Gcp, &private_only.endpoint)]);
    let err = identify(&settings, &[Cloud::Gcp], AddressKind::Public)
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), Code::Usage);
    assert_eq!(
        err.to_string(),
        "the gcp metadata names no public address for this host: register its private address \
         (--address-kind private), or pass --provider gcp --host-id ID --address IP"
    );

    // A server that answers without the header is not GCP's.
    let imitation = StandIn::start(Box::new(|_: &Seen, _| (200, vec![], "1234".into()))).await;
    let settings = self::settings(&[(Cloud::Gcp, &imitation.endpoint)]);
    let err = read(Cloud::Gcp, &settings).await.unwrap_err();
    assert!(matches!(err, IdentityError::NotGoogle { .. }), "{err:?}");
}

#[tokio::test]
async fn azure_is_asked_with_the_metadata_header_and_its_api_version() {
    let service = StandIn::start(Box::new(azure_like)).await;
    let settings = settings(&[(Cloud::Azure, &service.endpoint)]);
    let identity = identify(&settings, &[Cloud::Azure], AddressKind::Private)
        .await
        .unwrap();
    assert_eq!(
        identity,
        Identity {
            host_id: "02aab8a4-74ef-476e-8182-f6d2ba4166a6".into(),
            provider: "azure".into(),
            region: Some("westeurope".into()),
            availability_zone: Some("westeurope-2".into()),
            address: "10.1.0.4".parse().unwrap(),
            // Azure answers "" for a VM without a public address.
            public_address: None,
        }
    );
    let seen = service.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/metadata/instance?api-version=2021-02-01");

    // The stand-in refuses a request without the header, as Azure does.
    let refused = reqwest::get(format!(
        "{}/metadata/instance?api-version=2021-02-01",
        service.endpoint
    ))
    .await
    .unwrap();
    assert_eq!(refused.status().as_u16(), 400);
}

#[tokio::test]
async fn detection_takes_the_cloud_whose_answer_has_its_shape() {
    // One server at the link-local address answers every path with 200 and
    // a page (a captive portal): neither DigitalOcean nor Azure, nor EC2.
    let portal = StandIn::start(Box::new(|_: &Seen, _| {
        (200, vec![], "<html>welcome</html>".into())
    }))
    .await;
    let gcp = StandIn::start(Box::new(gcp_like(None))).await;
    let settings = settings(&[
        (Cloud::Aws, &portal.endpoint),
        (Cloud::DigitalOcean, &portal.endpoint),
        (Cloud::Gcp, &gcp.endpoint),
        (Cloud::Azure, &portal.endpoint),
    ]);
    let identity = identify(&settings, &settings.candidates(), AddressKind::Private)
        .await
        .unwrap();
    assert_eq!(identity.provider, "gcp");
    assert_eq!(identity.region.as_deref(), Some("us-central1"));

    // Two services at one address, as on a droplet: Azure's path is not found there.
    let droplet = StandIn::start(Box::new(digitalocean_like(droplet()))).await;
    let settings = self::settings(&[
        (Cloud::DigitalOcean, &droplet.endpoint),
        (Cloud::Azure, &droplet.endpoint),
        (Cloud::Aws, &droplet.endpoint),
    ]);
    let found = detect(&settings, &settings.candidates()).await.unwrap();
    assert_eq!(found.cloud, Cloud::DigitalOcean);
}

#[tokio::test]
async fn no_metadata_service_is_exit_2_saying_what_was_tried_and_what_to_pass() {
    let settings = settings(&[]);
    let err = detect(&settings, &settings.candidates()).await.unwrap_err();
    assert_eq!(err.exit_code(), Code::Usage);
    let message = err.to_string();
    for cloud in Cloud::ALL {
        let tried = format!("{} at {}: ", cloud.name(), settings.endpoint(cloud));
        assert!(message.contains(&tried), "{tried} in {message}");
    }
    assert!(message.starts_with("no metadata service says who this host is (tried aws at"));
    assert!(
        message.contains("pass --provider NAME --host-id ID --address IP")
            && message.contains(GCP_ENV),
        "{message}"
    );
}

#[tokio::test]
async fn a_silent_candidate_is_given_up_at_its_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = format!("http://{}", listener.local_addr().unwrap());
    let _hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket); // accepted, never answered
        }
    });
    let mut settings = settings(&[(Cloud::DigitalOcean, &silent)]);
    settings.deadline = Duration::from_millis(300);
    let err = detect(&settings, &settings.candidates())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("digitalocean at {silent}: no answer within 300ms")),
        "{err}"
    );
}

#[test]
fn settings_follow_the_environment() {
    let default = MetadataSettings::from_lookup(env(&[])).unwrap();
    assert_eq!(
        default.endpoint(Cloud::DigitalOcean),
        "http://169.254.169.254"
    );
    assert_eq!(
        default.endpoint(Cloud::Gcp),
        "http://metadata.google.internal"
    );
    assert_eq!(default.endpoint(Cloud::Azure), "http://169.254.169.254");
    assert_eq!(default.candidates(), Cloud::ALL);
    let local = MetadataSettings::from_lookup(env(&[(GCP_ENV, "http://127.0.0.1:9/gce")])).unwrap();
    assert_eq!(
        local
            .gcp
            .join("computeMetadata/v1/instance/id")
            .unwrap()
            .as_str(),
        "http://127.0.0.1:9/gce/computeMetadata/v1/instance/id"
    );
    let off = MetadataSettings::from_lookup(env(&[(identity::DISABLED_ENV, "true")])).unwrap();
    assert_eq!(
        off.candidates(),
        [Cloud::DigitalOcean, Cloud::Gcp, Cloud::Azure]
    );
    let bad = MetadataSettings::from_lookup(env(&[(AZURE_ENV, "169.254.169.254")])).unwrap_err();
    assert_eq!(bad.exit_code(), Code::Usage);
    assert!(
        bad.to_string()
            .starts_with("SWITCHYARD_METADATA_AZURE=\"169.254.169.254\""),
        "{bad}"
    );
    assert_eq!(Cloud::named("gcp"), Some(Cloud::Gcp));
    assert_eq!(Cloud::named("hetzner"), None);
    assert_eq!(AddressKind::parse("public").unwrap(), AddressKind::Public);
    assert!(AddressKind::parse("elastic").is_err());
}
