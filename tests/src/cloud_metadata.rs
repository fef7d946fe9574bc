//! Stand-ins for the metadata services of DigitalOcean, GCP and Azure on
//! loopback, answering as each documents and refusing as each does:
//!
//! - DigitalOcean: `GET /metadata/v1.json` (no header), the droplet's whole
//!   document; 404 elsewhere.
//! - GCP: `GET /computeMetadata/v1/instance/...`; 403 without
//!   `Metadata-Flavor: Google`; every answer carries that header; 404 for an
//!   access config the instance does not have.
//! - Azure: `GET /metadata/instance?api-version=...`; 400 without
//!   `Metadata: true` (or without an api-version), as IMDS refuses them.
//!
//! Each serves one host, counts requests and stops when dropped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use serde_json::json;

/// One request line and its headers (names in lower case).
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The path with its query.
    pub path: String,
    /// Header values by lower-case name.
    pub headers: BTreeMap<String, String>,
}

/// Status, extra headers and body.
type Reply = (u16, Vec<(&'static str, String)>, String);

/// A cloud's metadata service for one host, on a loopback port.
#[derive(Debug)]
pub struct MetadataServer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetadataServer {
    /// A droplet: `droplet_id`, `region`, a private and a public interface.
    pub fn digitalocean(droplet_id: u64, region: &str, private: &str, public: &str) -> Self {
        let document = json!({
            "droplet_id": droplet_id,
            "hostname": format!("web-{droplet_id}"),
            "user_data": "#cloud-config\n",
            "vendor_data": "",
            "public_keys": [],
            "auth_key": "withheld",
            "region": region,
            "interfaces": {
                "private": [{"ipv4": {"ip_address": private, "netmask": "255.255.240.0",
                                      "gateway": "0.0.0.0"}, "type": "private"}],
                "public": [{"ipv4": {"ip_address": public, "netmask": "255.255.240.0",
                                     "gateway": "0.0.0.0"}, "type": "public"}]
            },
            "floating_ip": {"ipv4": {"active": false}},
            "dns": {"nameservers": ["67.207.67.3"]},
            "tags": ["go-auth"],
            "features": {"dhcp_enabled": false}
        })
        .to_string();
        Self::serve(move |r| match (r.method.as_str(), r.path.as_str()) {
            ("GET", "/metadata/v1.json") => (
                200,
                vec![("Content-Type", "application/json".to_owned())],
                document.clone(),
            ),
            _ => (404, vec![], "404 page not found\n".to_owned()),
        })
    }

    /// A Compute Engine instance: numeric `id`, `zone` (e.g. `us-central1-a`) in
    /// project 123456789012, internal `ip`, and an external one if any.
    pub fn gcp(id: &str, zone: &str, ip: &str, external: Option<&str>) -> Self {
        let values: BTreeMap<String, String> = [
            ("id", id.to_owned()),
            ("zone", format!("projects/123456789012/zones/{zone}")),
            ("hostname", format!("web-{id}.c.project.internal")),
            ("network-interfaces/0/ip", ip.to_owned()),
        ]
        .into_iter()
        .chain(external.map(|e| {
            (
                "network-interfaces/0/access-configs/0/external-ip",
                e.to_owned(),
            )
        }))
        .map(|(k, v)| (format!("/computeMetadata/v1/instance/{k}"), v))
        .collect();
        Self::serve(move |r| {
            let flavor = vec![("Metadata-Flavor", "Google".to_owned())];
            if r.headers.get("metadata-flavor").map(String::as_str) != Some("Google") {
                return (
                    403,
                    flavor,
                    "Missing Metadata-Flavor:Google header.\n".into(),
                );
            }
            match values.get(&r.path) {
                Some(v) if r.method == "GET" => (200, flavor, v.clone()),
                _ => (404, flavor, "Not Found\n".into()),
            }
        })
    }

    /// An Azure VM: `vm_id` (a GUID), `location`, its NIC's private and public address.
    pub fn azure(vm_id: &str, location: &str, private: &str, public: &str) -> Self {
        let document = json!({
            "compute": {
                "azEnvironment": "AzurePublicCloud",
                "location": location,
                "name": "web-1",
                "osType": "Linux",
                "resourceGroupName": "go-auth",
                "vmId": vm_id,
                "vmSize": "Standard_B2s",
                "zone": ""
            },
            "network": {"interface": [{
                "ipv4": {
                    "ipAddress": [{"privateIpAddress": private, "publicIpAddress": public}],
                    "subnet": [{"address": "10.1.0.0", "prefix": "24"}]
                },
                "ipv6": {"ipAddress": []},
                "macAddress": "000D3AF806EC"
            }]}
        })
        .to_string();
        Self::serve(move |r| {
            if r.headers.get("metadata").map(String::as_str) != Some("true") {
                return (
                    400,
                    vec![],
                    r#"{"error":"Bad request. Required metadata header not specified"}"#.into(),
                );
            }
            let (path, query) = r.path.split_once('?').unwrap_or((r.path.as_str(), ""));
            if !query.split('&').any(|q| q.starts_with("api-version=")) {
                return (
                    400,
                    vec![],
                    r#"{"error":"Bad request. api-version was not specified in the request"}"#
                        .into(),
                );
            }
            match path {
                "/metadata/instance" => (
                    200,
                    vec![("Content-Type", "application/json; charset=utf-8".to_owned())],
                    document.clone(),
                ),
                _ => (404, vec![], r#"{"error":"Not found"}"#.into()),
            }
        })
    }

    fn serve(answer: impl Fn(&Request) -> Reply + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let addr = listener.local_addr().expect("an address");
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(stream) = stream {
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = reply(stream, &answer);
                }
            }
        });
        Self {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests it has answered.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for MetadataServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request's line and headers from `stream`.
pub fn read_request(stream: &TcpStream) -> std::io::Result<Request> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let mut parts = first.split(' ');
    Ok(Request {
        method: parts.next().unwrap_or_default().to_owned(),
        path: parts.next().unwrap_or_default().to_owned(),
        headers,
    })
}

fn reply(stream: TcpStream, answer: &impl Fn(&Request) -> Reply) -> std::io::Result<()> {
    let request = read_request(&stream)?;
    let (status, extra, body) = answer(&request);
    let mut out = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        let _ = std::fmt::Write::write_fmt(&mut out, format_args!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    let mut stream = stream;
    stream.write_all(out.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(server: &MetadataServer, path: &str, header: Option<(&str, &str)>) -> (u16, String) {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        let extra = header.map_or_else(String::new, |(k, v)| format!("{k}: {v}\r\n"));
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stream, &mut text).unwrap();
        let status = text[9..12].parse().unwrap();
        (status, text)
    }

    #[test]
    fn each_stand_in_refuses_what_its_service_refuses() {
        let gcp = MetadataServer::gcp("1", "us-central1-a", "10.128.0.2", None);
        let path = "/computeMetadata/v1/instance/id";
        assert_eq!(get(&gcp, path, None).0, 403);
        let (status, text) = get(&gcp, path, Some(("Metadata-Flavor", "Google")));
        assert_eq!(status, 200);
        assert!(text.contains("Metadata-Flavor: Google\r\n"), "{text}");
        let external =
            "/computeMetadata/v1/instance/network-interfaces/0/access-configs/0/external-ip";
        assert_eq!(
            get(&gcp, external, Some(("Metadata-Flavor", "Google"))).0,
            404
        );

        let azure = MetadataServer::azure("x", "westeurope", "10.1.0.4", "");
        let path = "/metadata/instance?api-version=2021-02-01";
        assert_eq!(get(&azure, path, None).0, 400);
        assert_eq!(
            get(&azure, "/metadata/instance", Some(("Metadata", "true"))).0,
            400
        );
        assert_eq!(get(&azure, path, Some(("Metadata", "true"))).0, 200);

        let droplet = MetadataServer::digitalocean(1, "nyc3", "10.116.0.2", "203.0.113.2");
        assert_eq!(get(&droplet, "/metadata/v1.json", None).0, 200);
        assert_eq!(get(&droplet, "/latest/api/token", None).0, 404);
        assert_eq!(droplet.requests(), 2);
    }
}
