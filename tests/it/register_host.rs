//! register-host against moto's server, cross-checked with the aws CLI.
//!
//! moto serves the instance metadata paths on its own port, and join reads
//! them (a dry run shows moto's `i-fake`); but moto refuses to tag `i-fake`
//! (not a valid instance id), so the joins that change something read their
//! identity from a stand-in metadata service on loopback that answers like
//! EC2's IMDSv2 for an instance moto really runs.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Deref;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_tests::aws_cli::{self, aws};
use switchyard_tests::cloud_metadata::{read_request, MetadataServer};
use switchyard_tests::steps::{run, step, StepOutput};

use crate::fixture::{self, env_of, json, state_validates, with_state, write_script};

/// Metadata values by path under `latest/meta-data/`, changeable while served.
type Values = Arc<Mutex<BTreeMap<&'static str, String>>>;

/// The lifecycle state path under `latest/meta-data/`.
const LIFECYCLE_STATE: &str = "autoscaling/target-lifecycle-state";

/// What the stand-in metadata service answers.
#[derive(Debug, Clone)]
enum Metadata {
    /// An instance: id, region, zone, private address (and, in a group, its lifecycle state).
    Instance(Values),
    /// 403 to every token request (metadata turned off for the instance).
    RefuseToken,
}

/// An IMDSv2 stand-in on loopback: a token (with its TTL header) for a PUT
/// that asks for one; metadata only for GETs that carry it.
struct Imds {
    addr: SocketAddr,
    values: Option<Values>,
    /// Each lifecycle state served, with when it was first served.
    served: Arc<Mutex<Vec<(String, Instant)>>>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Imds {
    fn start(metadata: Metadata) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let addr = listener.local_addr().expect("an address");
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (requests.clone(), stop.clone());
        let values = match &metadata {
            Metadata::Instance(v) => Some(v.clone()),
            Metadata::RefuseToken => None,
        };
        let served: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
        let seen = served.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(stream) = stream {
                    count.fetch_add(1, Ordering::SeqCst);
                    if let Ok(Some(state)) = answer(stream, &metadata) {
                        let mut seen = seen.lock().expect("served lock");
                        if seen.last().is_none_or(|(s, _)| *s != state) {
                            seen.push((state, Instant::now()));
                        }
                    }
                }
            }
        });
        Self {
            addr,
            values,
            served,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Serves `value` at `path` (under `latest/meta-data/`) from now on.
    fn set(&self, path: &'static str, value: &str) {
        self.values
            .as_ref()
            .expect("an instance's metadata")
            .lock()
            .expect("values lock")
            .insert(path, value.to_owned());
    }

    /// When `state` was first served as the lifecycle state (after a change to it).
    fn first_served(&self, state: &str) -> Option<Instant> {
        self.served
            .lock()
            .expect("served lock")
            .iter()
            .find(|(s, _)| s == state)
            .map(|(_, at)| *at)
    }
}

impl Drop for Imds {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const TOKEN: &str = "stand-in-token";

/// Answers one request; returns the lifecycle state when that is what it served.
fn answer(stream: TcpStream, metadata: &Metadata) -> std::io::Result<Option<String>> {
    let request = read_request(&stream)?;
    let (method, path, headers) = (
        request.method.as_str(),
        request.path.as_str(),
        &request.headers,
    );
    let mut lifecycle = None;
    let (status, extra, body) = match (metadata, method) {
        (Metadata::RefuseToken, _) => (403, String::new(), String::new()),
        (Metadata::Instance(_), "PUT") if path == "/latest/api/token" => {
            match headers.get("x-aws-ec2-metadata-token-ttl-seconds") {
                Some(ttl) => (
                    200,
                    format!("X-aws-ec2-metadata-token-ttl-seconds: {ttl}\r\n"),
                    TOKEN.to_owned(),
                ),
                None => (400, String::new(), String::new()),
            }
        }
        (Metadata::Instance(_), _)
            if headers.get("x-aws-ec2-metadata-token").map(String::as_str) != Some(TOKEN) =>
        {
            (401, String::new(), String::new())
        }
        (Metadata::Instance(values), "GET") => {
            let key = path.trim_start_matches("/latest/meta-data/");
            match values.lock().expect("values lock").get(key) {
                Some(v) => {
                    if key == LIFECYCLE_STATE {
                        lifecycle = Some(v.clone());
                    }
                    (200, String::new(), v.clone())
                }
                None => (404, String::new(), String::new()),
            }
        }
        _ => (405, String::new(), String::new()),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    )?;
    stream.flush()?;
    Ok(lifecycle)
}

/// One test's world: a moto server, a VPC, a temp dir for the state file.
struct World {
    fixture: fixture::Fixture,
    vpc: String,
}

impl Deref for World {
    type Target = fixture::Fixture;

    fn deref(&self) -> &fixture::Fixture {
        &self.fixture
    }
}

impl World {
    fn new() -> Self {
        let fixture = fixture::Fixture::new();
        let vpc = aws_cli::create_vpc(&fixture.moto);
        Self { fixture, vpc }
    }

    /// A target group of `kind` (`instance` or `ip`) on port 80.
    fn target_group(&self, name: &str, kind: &str) -> String {
        aws_cli::create_target_group(&self.moto, name, &self.vpc, &["--target-type", kind])
    }

    /// Starts an instance in `region` with `tags`; returns it as run-instances shows it.
    fn instance(&self, region: &str, tags: &[(&str, &str)]) -> Value {
        let mut args = vec![
            "ec2".to_owned(),
            "run-instances".to_owned(),
            "--image-id".to_owned(),
            "ami-12c6146b".to_owned(),
            "--count".to_owned(),
            "1".to_owned(),
            "--instance-type".to_owned(),
            "t3.micro".to_owned(),
            "--region".to_owned(),
            region.to_owned(),
        ];
        if !tags.is_empty() {
            let list: Vec<String> = tags
                .iter()
                .map(|(k, v)| format!("{{Key={k},Value={v}}}"))
                .collect();
            args.push("--tag-specifications".to_owned());
            args.push(format!("ResourceType=instance,Tags=[{}]", list.join(",")));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        aws(&self.moto, &args)["Instances"][0].clone()
    }

    /// A stand-in metadata service for `instance` (as run-instances shows it).
    fn imds_for(instance: &Value) -> Imds {
        let zone = instance["Placement"]["AvailabilityZone"]
            .as_str()
            .expect("a zone")
            .to_owned();
        let values = BTreeMap::from([
            (
                "instance-id",
                instance["InstanceId"].as_str().expect("an id").to_owned(),
            ),
            ("placement/region", zone[..zone.len() - 1].to_owned()),
            ("placement/availability-zone", zone),
            (
                "local-ipv4",
                instance["PrivateIpAddress"]
                    .as_str()
                    .expect("an address")
                    .to_owned(),
            ),
        ]);
        Imds::start(Metadata::Instance(Arc::new(Mutex::new(values))))
    }

    /// Runs register-host with moto's environment, the state file, and the
    /// metadata service at `imds`.
    fn step(&self, imds: &str, args: &[&str]) -> StepOutput {
        self.step_env(imds, args, &[])
    }

    fn step_env(&self, imds: &str, args: &[&str], env: &[(&str, &str)]) -> StepOutput {
        let mut all = host_env(self.moto.env(), imds, &self.state());
        all.extend(env_of(env));
        let mut cmd = step("register-host", &all);
        cmd.args(args);
        run(&mut cmd)
    }

    /// The target health descriptions of a group, as the aws CLI sees them.
    fn health(&self, group: &str) -> Vec<Value> {
        aws(
            &self.moto,
            &[
                "elbv2",
                "describe-target-health",
                "--target-group-arn",
                group,
            ],
        )["TargetHealthDescriptions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The instance's tags, as the aws CLI sees them.
    fn tags(&self, instance: &str) -> BTreeMap<String, String> {
        let filter = format!("Name=resource-id,Values={instance}");
        aws_cli::tags(&aws(
            &self.moto,
            &["ec2", "describe-tags", "--filters", &filter],
        ))
    }
}

/// `env` (moto's, or a proxy's) for register-host on a host whose metadata
/// service is at `imds`, with the state file `state`.
fn host_env(env: Vec<(String, String)>, imds: &str, state: &Path) -> Vec<(String, String)> {
    // moto's environment turns the metadata service off for the SDK; this step reads it.
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k != "AWS_EC2_METADATA_DISABLED")
        .collect();
    env.push(("AWS_EC2_METADATA_SERVICE_ENDPOINT".into(), imds.to_owned()));
    with_state(env, state)
}

fn actions(doc: &Value) -> Vec<String> {
    doc["journal"]
        .as_array()
        .expect("a journal")
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["action"].as_str().unwrap_or_default(),
                e["outcome"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

/// A loopback URL where nothing listens.
fn closed_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let endpoint = format!("http://{}", listener.local_addr().expect("an address"));
    drop(listener);
    endpoint
}

#[test]
fn join_tags_the_instance_and_registers_it_and_leave_deregisters_it() {
    let world = World::new();
    let group = world.target_group("go-auth-blue", "instance");
    let instance = world.instance("us-east-1", &[("Name", "web-1")]);
    let id = instance["InstanceId"].as_str().unwrap().to_owned();
    let ip = instance["PrivateIpAddress"].as_str().unwrap().to_owned();
    let imds = World::imds_for(&instance);

    let join = [
        "join",
        "--service",
        "go-auth",
        "--label",
        "provider=aws",
        "--label",
        "region=us-east-1",
        "--target-group",
        &group,
        "--port",
        "9000",
        "--wait-healthy",
        "30s",
    ];
    let mut args = join.to_vec();
    args.extend(["--output", "json"]);
    let out = world.step(&imds.endpoint(), &args);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let report = json(&out);
    assert_eq!(report["host"]["host_id"], id.as_str());
    assert_eq!(report["host"]["provider"], "aws");
    assert_eq!(report["host"]["region"], "us-east-1");
    assert_eq!(report["host"]["address"], ip.as_str());
    assert_eq!(report["healthy"], true);
    assert_eq!(report["targets"][0]["target"]["port"], 9000);

    // The aws CLI sees the tags (the instance's own Name tag kept) and the healthy target.
    let tags = world.tags(&id);
    assert_eq!(tags["switchyard:service"], "go-auth");
    assert_eq!(tags["switchyard:label:provider"], "aws");
    assert_eq!(tags["switchyard:label:region"], "us-east-1");
    assert_eq!(tags["Name"], "web-1");
    let health = world.health(&group);
    assert_eq!(health.len(), 1, "{health:?}");
    assert_eq!(health[0]["Target"]["Id"], id.as_str());
    assert_eq!(health[0]["Target"]["Port"], 9000);
    assert_eq!(health[0]["TargetHealth"]["State"], "healthy");

    let doc = world.doc();
    let host = &doc["hosts"][id.as_str()];
    assert_eq!(host["provider"], "aws");
    assert_eq!(host["region"], "us-east-1");
    assert_eq!(host["address"], ip.as_str());
    assert_eq!(host["labels"]["service"], "go-auth");
    assert_eq!(host["labels"]["provider"], "aws");
    assert_eq!(actions(&doc), ["join:ok", "healthy:ok"]);

    // Joining again (a reboot) changes nothing but the journal.
    let out = world.step(&imds.endpoint(), &join);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.starts_with(&format!(
            "joined {id} (aws, us-east-1a, {ip}): service go-auth, labels provider=aws,region=us-east-1\n"
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!("go-auth-blue: {id}:9000 healthy")),
        "{}",
        out.stdout
    );
    assert_eq!(world.health(&group).len(), 1);

    // Leave: deregistered (moto has no draining: unused at once), and out of the state.
    let out = world.step(
        &imds.endpoint(),
        &["leave", "--target-group", &group, "--port", "9000"],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .starts_with(&format!("left {id} (aws, us-east-1a, {ip}): deregistered from 1 of 1 target group(s), drained in")),
        "{}",
        out.stdout
    );
    assert!(
        world.health(&group).is_empty(),
        "{:?}",
        world.health(&group)
    );
    let doc = world.doc();
    assert!(doc["hosts"].get(id.as_str()).is_none(), "{doc}");
    assert_eq!(
        actions(&doc),
        [
            "join:ok",
            "healthy:ok",
            "join:ok",
            "healthy:ok",
            "leave:ok",
            "drained:ok"
        ]
    );

    // Leaving again finds nothing registered and deregisters nothing.
    let out = world.step(
        &imds.endpoint(),
        &[
            "leave",
            "--target-group",
            &group,
            "--port",
            "9000",
            "--output",
            "json",
        ],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(json(&out)["targets"][0]["deregistered"], false);
}

#[test]
fn moto_serves_the_metadata_and_a_metadata_endpoint_down_is_exit_3() {
    let world = World::new();
    let group = world.target_group("go-auth-blue", "instance");
    let join = [
        "join",
        "--service",
        "go-auth",
        "--label",
        "region=us-east-1",
        "--target-group",
        &group,
    ];

    // moto's own metadata endpoints (on moto's port): a dry run reads them and plans.
    let mut args = join.to_vec();
    args.push("--dry-run");
    let out = world.step(&world.moto.endpoint(), &args);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .starts_with("plan for i-fake to join go-auth (dry run: nothing changed)\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("  register i-fake:80 in target group go-auth-blue (instance target)\n"),
        "{}",
        out.stdout
    );
    assert!(world.health(&group).is_empty());
    assert!(!world.state().exists());

    // Nothing listens at the metadata endpoint: a clear message, exit 3, nothing changed.
    let closed = closed_endpoint();
    let out = world.step(&closed, &join);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "error: cannot reach the instance metadata service at {closed}: "
        )) && out.stderr.contains(
            "Is this host an EC2 instance? Off AWS, pass --provider NAME --host-id ID --address IP"
        ),
        "{}",
        out.stderr
    );
    assert!(world.health(&group).is_empty());
    assert!(!world.state().exists());

    // The token is refused (metadata turned off for the instance): exit 3, in JSON too.
    let refusing = Imds::start(Metadata::RefuseToken);
    let mut args = join.to_vec();
    args.extend(["--output", "json"]);
    let out = world.step(&refusing.endpoint(), &args);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    let report = json(&out);
    assert_eq!(report["ok"], false);
    assert_eq!(report["exit_code"], 3);
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("refused an IMDSv2 session token (HTTP 403)"),
        "{report}"
    );
    assert_eq!(refusing.requests(), 1, "a refused token is not retried");

    // Metadata turned off by configuration is bad input: exit 2.
    let out = world.step_env(
        &world.moto.endpoint(),
        &join,
        &[("AWS_EC2_METADATA_DISABLED", "true")],
    );
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("instance metadata is turned off (AWS_EC2_METADATA_DISABLED=true)"),
        "{}",
        out.stderr
    );
    assert!(!world.state().exists());
}

#[test]
fn a_host_off_aws_registers_its_address_in_an_ip_target_group() {
    let world = World::new();
    let ip_group = world.target_group("go-auth-dc", "ip");
    let instance_group = world.target_group("go-auth-blue", "instance");
    // No metadata service is asked off AWS: point it where nothing listens.
    let closed = closed_endpoint();
    let host = [
        "--provider",
        "dc-fra1",
        "--host-id",
        "fra1-web-7",
        "--address",
        "127.0.0.5",
    ];
    // Hooks see the action and the host; a failing pre-hook stops the join before any change.
    let seen = world.path("post-hook.env");
    world.hook("pre-register-host", "exit 9");
    let hooks_dir = world.hooks().display().to_string();
    let mut args = vec![
        "join",
        "--service",
        "go-auth",
        "--label",
        "provider=dc-fra1",
        "--label",
        "region=eu-central",
        "--target-group",
        &ip_group,
        "--port",
        "9000",
        "--hooks-dir",
        &hooks_dir,
    ];
    args.extend(host);
    let out = world.step(&closed, &args);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("hook pre-register-host failed"),
        "{}",
        out.stderr
    );
    assert!(world.health(&ip_group).is_empty());
    world.hook("pre-register-host", "exit 0");
    world.hook(
        "post-register-host",
        &format!(
            "echo \"$SWITCHYARD_ACTION $SWITCHYARD_HOST_ID $SWITCHYARD_PROVIDER $SWITCHYARD_SERVICE\" > '{}'",
            seen.display()
        ),
    );
    let out = world.step(&closed, &args);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        "join fra1-web-7 dc-fra1 go-auth\n"
    );
    assert!(
        out.stdout
            .starts_with("joined fra1-web-7 (dc-fra1, 127.0.0.5): service go-auth"),
        "{}",
        out.stdout
    );
    let health = world.health(&ip_group);
    assert_eq!(health[0]["Target"]["Id"], "127.0.0.5");
    assert_eq!(health[0]["Target"]["Port"], 9000);
    assert_eq!(health[0]["TargetHealth"]["State"], "healthy");
    let doc = world.doc();
    assert_eq!(doc["hosts"]["fra1-web-7"]["provider"], "dc-fra1");
    assert_eq!(doc["hosts"]["fra1-web-7"]["region"], "eu-central");
    assert_eq!(doc["hosts"]["fra1-web-7"]["address"], "127.0.0.5");

    // An instance target group cannot take a host that has no instance id.
    let mut args = vec![
        "join",
        "--service",
        "go-auth",
        "--target-group",
        &instance_group,
    ];
    args.extend(host);
    let out = world.step(&closed, &args);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(
            "target group go-auth-blue has target type instance: a host off AWS (--provider dc-fra1) has no instance id"
        ),
        "{}",
        out.stderr
    );
    assert!(world.health(&instance_group).is_empty());

    let mut args = vec!["leave", "--target-group", &ip_group, "--port", "9000"];
    args.extend(host);
    let out = world.step(&closed, &args);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(world.health(&ip_group).is_empty());
    assert!(world.doc()["hosts"].get("fra1-web-7").is_none());
}

/// The environment of a host whose metadata services are `services` (the
/// rest, EC2's included, where nothing listens), besides moto's and the state.
fn cloud_env(services: &[(&str, &str)]) -> Vec<(String, String)> {
    [
        "SWITCHYARD_METADATA_DIGITALOCEAN",
        "SWITCHYARD_METADATA_GCP",
        "SWITCHYARD_METADATA_AZURE",
    ]
    .into_iter()
    .map(|setting| {
        let url = services
            .iter()
            .find(|(s, _)| *s == setting)
            .map_or_else(closed_endpoint, |(_, url)| (*url).to_owned());
        (setting.to_owned(), url)
    })
    .collect()
}

#[test]
fn hosts_on_other_clouds_join_with_provider_auto_and_are_listed_beside_instances() {
    let world = World::new();
    let group = world.target_group("go-auth-clouds", "ip");
    let instance = world.instance(
        "us-east-1",
        &[
            ("switchyard:service", "go-auth"),
            ("switchyard:label:provider", "aws"),
            ("switchyard:label:region", "us-east-1"),
        ],
    );
    let instance_id = instance["InstanceId"].as_str().unwrap().to_owned();
    let ec2 = closed_endpoint();
    let hosts = [
        (
            MetadataServer::digitalocean(3_164_494, "nyc3", "10.116.0.2", "203.0.113.20"),
            "SWITCHYARD_METADATA_DIGITALOCEAN",
            ("digitalocean", "3164494", "nyc3", "10.116.0.2"),
        ),
        (
            MetadataServer::gcp(
                "4520031799277581759",
                "us-central1-a",
                "10.128.0.2",
                Some("203.0.113.30"),
            ),
            "SWITCHYARD_METADATA_GCP",
            ("gcp", "4520031799277581759", "us-central1", "10.128.0.2"),
        ),
        (
            MetadataServer::azure(
                "02aab8a4-74ef-476e-8182-f6d2ba4166a6",
                "westeurope",
                "10.1.0.4",
                "",
            ),
            "SWITCHYARD_METADATA_AZURE",
            (
                "azure",
                "02aab8a4-74ef-476e-8182-f6d2ba4166a6",
                "westeurope",
                "10.1.0.4",
            ),
        ),
    ];
    let join = |env: &[(String, String)]| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        world.step_env(
            &ec2,
            &[
                "join",
                "--provider",
                "auto",
                "--service",
                "go-auth",
                "--label",
                "tier=web",
                "--target-group",
                &group,
                "--port",
                "9000",
                "--no-wait",
                "--output",
                "json",
            ],
            &env,
        )
    };
    for (server, setting, (provider, id, region, address)) in &hosts {
        let endpoint = server.endpoint();
        let out = join(&cloud_env(&[(setting, &endpoint)]));
        assert_eq!(out.code, 0, "{provider}: {}{}", out.stdout, out.stderr);
        let report = json(&out);
        assert_eq!(report["host"]["provider"], *provider);
        assert_eq!(report["host"]["host_id"], *id);
        assert_eq!(report["host"]["region"], *region);
        assert_eq!(report["host"]["address"], *address, "the private address");
        assert_eq!(
            report["labels"]["provider"], *provider,
            "labelled by itself"
        );
        assert_eq!(report["labels"]["region"], *region);
        assert_eq!(report["labels"]["tier"], "web");
        assert!(server.requests() > 0, "{provider} was asked");
        let doc = world.doc();
        assert_eq!(doc["hosts"][*id]["provider"], *provider);
        assert_eq!(doc["hosts"][*id]["labels"]["region"], *region);
    }
    // moto has the three addresses as IP targets.
    let mut targets: Vec<String> = world
        .health(&group)
        .iter()
        .map(|h| {
            format!(
                "{}:{}",
                h["Target"]["Id"].as_str().unwrap(),
                h["Target"]["Port"]
            )
        })
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        ["10.1.0.4:9000", "10.116.0.2:9000", "10.128.0.2:9000"]
    );
    assert!(state_validates(&world.state()));

    // The fleet view shows the hosts off EC2 beside the instance, with their labels.
    let out = world.step(&ec2, &["list", "--service", "go-auth", "--output", "json"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let report = json(&out);
    let mut listed: Vec<String> = report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            format!(
                "{} {} {} {}",
                h["host_id"].as_str().unwrap(),
                h["provider"].as_str().unwrap(),
                h["target"].as_str().unwrap(),
                h["labels"]["region"].as_str().unwrap_or("-")
            )
        })
        .collect();
    listed.sort();
    let mut expected: Vec<String> = hosts
        .iter()
        .map(|(_, _, (provider, id, region, _))| format!("{id} {provider} ip {region}"))
        .collect();
    expected.push(format!("{instance_id} aws instance us-east-1"));
    expected.sort();
    assert_eq!(listed, expected);
    let out = world.step(
        &ec2,
        &["list", "--service", "go-auth", "--label", "provider=gcp"],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(lines[0].starts_with("HOST  "), "{}", out.stdout);
    assert!(
        lines[1].starts_with("4520031799277581759  gcp  ")
            && lines[1].contains("10.128.0.2")
            && lines[1].ends_with("provider=gcp,region=us-central1,tier=web"),
        "{}",
        out.stdout
    );

    // No metadata service answers: exit 2 naming what was tried, nothing changed.
    let env = cloud_env(&[]);
    let out = join(&env);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("no metadata service says who this host is (tried aws at")
            && out
                .stderr
                .contains("pass --provider NAME --host-id ID --address IP"),
        "{}",
        out.stderr
    );
    assert_eq!(world.health(&group).len(), 3);

    // The droplet leaves by its metadata too, and is no longer listed.
    let (droplet, setting, _) = &hosts[0];
    let endpoint = droplet.endpoint();
    let env = cloud_env(&[(setting, &endpoint)]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = world.step_env(
        &ec2,
        &[
            "leave",
            "--provider",
            "auto",
            "--target-group",
            &group,
            "--port",
            "9000",
        ],
        &env,
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(world.health(&group).len(), 2);
    let out = world.step(&ec2, &["list", "--service", "go-auth", "--output", "json"]);
    assert_eq!(json(&out)["count"], 3);
}

#[test]
fn list_filters_the_fleet_by_labels_across_regions() {
    let world = World::new();
    let tagged = |region: &str, service: &str, labels: &[(&str, &str)]| {
        let mut tags = vec![("switchyard:service".to_owned(), service.to_owned())];
        for (k, v) in labels {
            tags.push((format!("switchyard:label:{k}"), (*v).to_owned()));
        }
        let tags: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        world.instance(region, &tags)["InstanceId"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let first = tagged(
        "us-east-1",
        "go-auth",
        &[("region", "us-east-1"), ("provider", "aws")],
    );
    let canary = tagged(
        "us-east-1",
        "go-auth",
        &[
            ("region", "us-east-1"),
            ("provider", "aws"),
            ("canary", "yes"),
        ],
    );
    let _other_service = tagged("us-east-1", "billing", &[("region", "us-east-1")]);
    let _untagged = world.instance("us-east-1", &[("Name", "bastion")]);
    let europe = tagged(
        "eu-west-1",
        "go-auth",
        &[("region", "eu-west-1"), ("provider", "aws")],
    );
    let imds = closed_endpoint();
    let listed = |out: &StepOutput| -> Vec<String> {
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        let mut found: Vec<String> = json(out)["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["host_id"].as_str().unwrap().to_owned())
            .collect();
        found.sort();
        found
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };

    let out = world.step(
        &imds,
        &[
            "list",
            "--service",
            "go-auth",
            "--label",
            "region=us-east-1",
            "--output",
            "json",
        ],
    );
    assert_eq!(listed(&out), sorted(vec![first.clone(), canary.clone()]));
    let report = json(&out);
    assert_eq!(report["count"], 2);
    let host = report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host_id"] == canary.as_str())
        .unwrap()
        .clone();
    assert_eq!(host["labels"]["canary"], "yes");
    assert_eq!(host["service"], "go-auth");
    assert_eq!(host["region"], "us-east-1");
    assert_eq!(host["state"], "running");

    let out = world.step(
        &imds,
        &[
            "list",
            "--service",
            "go-auth",
            "--label",
            "canary=yes",
            "--output",
            "json",
        ],
    );
    assert_eq!(listed(&out), std::slice::from_ref(&canary));

    // The placement view across regions.
    let out = world.step(
        &imds,
        &[
            "list",
            "--service",
            "go-auth",
            "--regions",
            "us-east-1,eu-west-1",
            "--output",
            "json",
        ],
    );
    assert_eq!(
        listed(&out),
        sorted(vec![first.clone(), canary.clone(), europe])
    );
    let report = json(&out);
    assert_eq!(report["by_region"]["us-east-1"], 2);
    assert_eq!(report["by_region"]["eu-west-1"], 1);

    // A stopped host is not in the fleet.
    aws(
        &world.moto,
        &["ec2", "stop-instances", "--instance-ids", &canary],
    );
    let out = world.step(&imds, &["list", "--service", "go-auth"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("HOST "), "{}", out.stdout);
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(lines[1].starts_with(&first) && lines[1].contains("provider=aws,region=us-east-1"));
    assert_eq!(lines[2], "1 host(s) match service=go-auth (us-east-1: 1)");

    let out = world.step(&imds, &["list", "--service", "nothing"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(out.stdout, "no hosts match service=nothing in us-east-1\n");
}

#[test]
fn bad_input_exits_2_naming_the_problem_before_any_call() {
    let world = World::new();
    let group = world.target_group("go-auth-blue", "instance");
    let instance = world.instance("us-east-1", &[]);
    let imds = World::imds_for(&instance);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--label", "region"],
            "error: --label \"region\" is not KEY=VALUE; e.g. --label region=us-east-1",
        ),
        (
            vec!["--label", "service=other"],
            "names the service, which is given with --service, not as a label",
        ),
        (
            vec!["--label", "region=a", "--label", "region=b"],
            "label \"region\" is given twice (--label region=a and --label region=b)",
        ),
        (
            vec!["--label", "team=a b"],
            "--label \"team=a b\" has a value that holds ' '",
        ),
        (
            vec!["--target-group", "go-auth-blue"],
            "--target-group \"go-auth-blue\" is not a target group ARN",
        ),
        (
            vec!["--target-group", &group, "--region", "eu-west-1"],
            "is in us-east-1, but this host's calls go to eu-west-1",
        ),
        (
            vec!["--provider", "hetzner"],
            "--provider hetzner needs --host-id ID and --address IP",
        ),
    ];
    for (extra, message) in cases {
        let mut args = vec!["join", "--service", "go-auth"];
        args.extend(extra.iter().copied());
        let out = world.step(&imds.endpoint(), &args);
        assert_eq!(out.code, 2, "{extra:?}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains(message),
            "{extra:?}: expected {message:?} in {}",
            out.stderr
        );
    }
    assert_eq!(
        imds.requests(),
        0,
        "nothing was asked before the input was checked"
    );
    assert!(!world.state().exists());
    assert!(world.health(&group).is_empty());
    let id = instance["InstanceId"].as_str().unwrap();
    assert!(world.tags(id).is_empty());

    // A target group that does not exist is bad input too, found before any change.
    let missing = group.replace("go-auth-blue", "go-auth-gone");
    let out = world.step(
        &imds.endpoint(),
        &["join", "--service", "go-auth", "--target-group", &missing],
    );
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains(&format!("error: no target group {missing} in us-east-1")),
        "{}",
        out.stderr
    );
    assert!(world.tags(id).is_empty());
}

/// Parses the document with PyYAML and returns it as JSON.
fn parse_yaml(document: &str) -> Value {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin.read()), sys.stdout)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (PyYAML comes with moto[server])");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(document.as_bytes())
        .expect("the document is written");
    let out = child.wait_with_output().expect("python3 ends");
    assert!(
        out.status.success(),
        "PyYAML refused the document: {}\n{document}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from python3")
}

/// Checks `document` with cloud-init's own schema check (`cloud-init schema
/// --config-file`, Debian package `cloud-init`, installed by `make deps`),
/// and that the check refuses a broken document (so it is not a no-op).
/// Skipped, with the reason printed, where cloud-init is not installed.
fn cloud_init_schema(dir: &Path, document: &str) {
    let check = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(&path)
            .output()
    };
    let out = match check("user-data.yaml", document) {
        Ok(out) => out,
        Err(e) => {
            println!("skipped cloud-init's schema check: cloud-init cannot run ({e}); `make deps` installs it");
            return;
        }
    };
    assert!(
        out.status.success(),
        "cloud-init schema refused the user-data: {}{}\n{document}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let broken = document.replacen("    owner: 'root:root'", "    ownr: 'root:root'", 1);
    let out = check("broken.yaml", &broken).expect("cloud-init runs");
    assert!(
        !out.status.success(),
        "cloud-init schema took a broken document"
    );
}

fn bash_n(script: &Path) {
    let out = Command::new("bash")
        .arg("-n")
        .arg(script)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "bash -n {}: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn user_data_is_a_cloud_config_document_whose_script_runs_join_and_leave() {
    let dir = tempfile::tempdir().unwrap();
    let group =
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/go-auth-blue/50dc6c495c0c9188";
    // A stand-in for the executable on the image, recording its arguments.
    let fake = dir.path().join("register-host");
    let recorded = dir.path().join("args");
    write_script(
        &fake,
        &format!(
            "printf '%s\\n' \"$@\" >> '{}'\necho --- >> '{}'",
            recorded.display(),
            recorded.display()
        ),
    );
    let state_file = dir.path().join("host").join("state.json");
    let fake_path = fake.display().to_string();
    let state_path = state_file.display().to_string();
    let args = [
        "user-data",
        "--service",
        "go-auth",
        "--label",
        "provider=aws",
        "--label",
        "region=us-east-1",
        "--target-group",
        group,
        "--port",
        "9000",
        "--after",
        "go-auth.service",
        "--lifecycle-hook",
        "drain",
        "--asg",
        "go-auth-green",
        "--binary",
        &fake_path,
        "--state-file",
        &state_path,
    ];
    let mut cmd = step("register-host", &[]);
    cmd.args(args);
    let out = run(&mut cmd);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let document = out.stdout;
    assert!(document.starts_with("#cloud-config\n"), "{document}");

    let parsed = parse_yaml(&document);
    let files = parsed["write_files"].as_array().expect("write_files");
    assert_eq!(files.len(), 3);
    assert_eq!(
        files[0]["path"],
        "/usr/local/lib/switchyard/register-host.sh"
    );
    assert_eq!(files[0]["permissions"], "0755");
    assert_eq!(
        files[1]["path"],
        "/etc/systemd/system/switchyard-register-host.service"
    );
    let unit = files[1]["content"].as_str().unwrap();
    for line in [
        "ExecStart=/usr/local/lib/switchyard/register-host.sh join",
        "ExecStop=/usr/local/lib/switchyard/register-host.sh leave",
        "RemainAfterExit=yes",
        "After=network-online.target go-auth.service",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line:?} not in\n{unit}");
    }
    // With a termination hook, the watcher runs from boot.
    assert_eq!(
        files[2]["path"],
        "/etc/systemd/system/switchyard-register-host-watch.service"
    );
    let watcher = files[2]["content"].as_str().unwrap();
    for line in [
        "ExecStart=/usr/local/lib/switchyard/register-host.sh watch",
        "Type=simple",
        "Restart=on-failure",
        "After=network-online.target go-auth.service",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            watcher.lines().any(|l| l == line),
            "{line:?} not in\n{watcher}"
        );
    }
    assert_eq!(
        parsed["runcmd"][1],
        "systemctl enable --now --no-block switchyard-register-host.service switchyard-register-host-watch.service"
    );
    cloud_init_schema(dir.path(), &document);

    // The shell parts parse: the script, and every runcmd line.
    let script = dir.path().join("register-host.sh");
    std::fs::write(&script, files[0]["content"].as_str().unwrap()).unwrap();
    bash_n(&script);
    let runcmd = parsed["runcmd"].as_array().expect("runcmd");
    assert_eq!(runcmd.len(), 2);
    for (i, line) in runcmd.iter().enumerate() {
        let path = dir.path().join(format!("runcmd-{i}.sh"));
        std::fs::write(&path, line.as_str().expect("a shell line")).unwrap();
        bash_n(&path);
    }

    // And runs: join, leave and watch reach the executable with their words intact.
    for action in ["join", "leave", "watch"] {
        let out = Command::new("bash")
            .arg(&script)
            .arg(action)
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let recorded = std::fs::read_to_string(&recorded).unwrap();
    let runs: Vec<Vec<&str>> = recorded
        .split("---\n")
        .filter(|r| !r.is_empty())
        .map(|r| r.lines().collect())
        .collect();
    assert_eq!(
        runs[0],
        [
            "join",
            "--service",
            "go-auth",
            "--label",
            "provider=aws",
            "--label",
            "region=us-east-1",
            "--target-group",
            group,
            "--port",
            "9000",
            "--wait-healthy",
            "300s",
            "--timeout",
            "330s"
        ]
    );
    assert_eq!(
        runs[1],
        [
            "leave",
            "--target-group",
            group,
            "--port",
            "9000",
            "--timeout",
            "600s"
        ]
    );
    assert_eq!(
        runs[2],
        [
            "watch",
            "--target-group",
            group,
            "--port",
            "9000",
            "--lifecycle-hook",
            "drain",
            "--asg",
            "go-auth-green",
            "--timeout",
            "600s"
        ]
    );
    assert!(
        state_file.parent().unwrap().is_dir(),
        "the state folder is made"
    );
    let unknown = Command::new("bash")
        .arg(&script)
        .arg("restart")
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));

    // JSON output carries the document and its hash.
    let mut cmd = step("register-host", &[]);
    cmd.args(args).args(["--output", "json"]);
    let out = run(&mut cmd);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = json(&out);
    assert_eq!(report["user_data"], document.as_str());
    assert_eq!(report["bytes"], document.len());
    assert_eq!(report["sha256"].as_str().unwrap().len(), 64);
}

/// A host's join and leave in `group`, as the kill and fault tests run them.
struct Member<'a> {
    world: &'a World,
    group: String,
}

impl Member<'_> {
    fn join(&self) -> [&str; 11] {
        [
            "join",
            "--service",
            "go-auth",
            "--label",
            "provider=aws",
            "--target-group",
            &self.group,
            "--port",
            "9000",
            "--wait-healthy",
            "30s",
        ]
    }

    fn leave(&self) -> [&str; 5] {
        ["leave", "--target-group", &self.group, "--port", "9000"]
    }

    /// register-host with `env` (moto's, or a proxy's), the metadata service
    /// at `imds` and the world's state file.
    fn command(&self, env: Vec<(String, String)>, imds: &Imds, args: &[&str]) -> Command {
        let env = host_env(env, &imds.endpoint(), &self.world.state());
        let mut cmd = step("register-host", &env);
        cmd.args(args);
        cmd
    }

    /// After a join: labelled, one healthy target, one host in the state.
    fn assert_joined(&self, id: &str, context: &str) {
        let health = self.world.health(&self.group);
        let mine: Vec<&Value> = health.iter().filter(|h| h["Target"]["Id"] == id).collect();
        assert_eq!(mine.len(), 1, "{context}: {health:?}");
        assert_eq!(mine[0]["TargetHealth"]["State"], "healthy", "{context}");
        let tags = self.world.tags(id);
        assert_eq!(tags["switchyard:service"], "go-auth", "{context}");
        assert_eq!(tags["switchyard:label:provider"], "aws", "{context}");
        let doc = self.world.doc();
        assert_eq!(doc["hosts"][id]["labels"]["provider"], "aws", "{context}");
    }

    /// After a leave: no target, no host in the state.
    fn assert_left(&self, id: &str, context: &str) {
        let health = self.world.health(&self.group);
        assert!(
            !health.iter().any(|h| h["Target"]["Id"] == id),
            "{context}: {health:?}"
        );
        assert!(self.world.doc()["hosts"].get(id).is_none(), "{context}");
    }
}

/// Kill and resume: `register-host join`, then `leave`, killed just after
/// each AWS call of a whole run and at random, each round a new instance; the
/// retry must converge: after join the instance carries its labels, is one
/// healthy target and one host in the state; after leave it is no target and
/// out of the state; the state file validates throughout.
#[test]
fn join_and_leave_killed_at_every_call_and_at_random_resume_to_a_consistent_end() {
    use crate::kill_resume::{campaign, run_and_kill};
    let world = World::new();
    let member = Member {
        world: &world,
        group: world.target_group("go-auth-kill", "instance"),
    };
    let (join, leave) = (member.join(), member.leave());
    let state = world.state();
    let env = || world.moto.env();
    let mut round = 0;
    campaign("register-host-join", 6, |at| {
        round += 1;
        let instance = world.instance("us-east-1", &[]);
        let id = instance["InstanceId"].as_str().unwrap().to_owned();
        let imds = World::imds_for(&instance);
        let ran = run_and_kill(member.command(env(), &imds, &join), &state, at);
        world.moto.wait_idle();
        let out = run(&mut member.command(env(), &imds, &join));
        let context = format!("join round {round} ({at:?})");
        assert_eq!(out.code, 0, "{context}: {}{}", out.stdout, out.stderr);
        assert!(state_validates(&state), "{context}");
        member.assert_joined(&id, &context);
        ran
    });
    campaign("register-host-leave", 6, |at| {
        round += 1;
        let instance = world.instance("us-east-1", &[]);
        let id = instance["InstanceId"].as_str().unwrap().to_owned();
        let imds = World::imds_for(&instance);
        let out = run(&mut member.command(env(), &imds, &join));
        assert_eq!(out.code, 0, "{}", out.stderr);
        let ran = run_and_kill(member.command(env(), &imds, &leave), &state, at);
        world.moto.wait_idle();
        let out = run(&mut member.command(env(), &imds, &leave));
        let context = format!("leave round {round} ({at:?})");
        assert_eq!(out.code, 0, "{context}: {}{}", out.stdout, out.stderr);
        assert!(state_validates(&state), "{context}");
        member.assert_left(&id, &context);
        ran
    });
}

/// Faults: `register-host join` then `leave` through the fault-injecting
/// proxy, each round a new instance; every run exits 0, or 3 with a state
/// file that validates and then converges when run again.
#[test]
fn join_and_leave_complete_or_stop_cleanly_under_20_percent_injected_faults() {
    use crate::faults::{through, Tally, FAULT_RATE};
    use switchyard_tests::fault_proxy::{FaultProxy, Faults};
    let world = World::new();
    let proxy =
        FaultProxy::start(&world.moto.direct_endpoint(), Faults::spread(FAULT_RATE)).unwrap();
    let member = Member {
        world: &world,
        group: world.target_group("go-auth-faults", "instance"),
    };
    let (join, leave) = (member.join(), member.leave());
    let state = world.state();
    let env = || through(world.moto.env(), &proxy);
    let mut tally = Tally::default();
    for round in 0..6 {
        let instance = world.instance("us-east-1", &[]);
        let id = instance["InstanceId"].as_str().unwrap().to_owned();
        let imds = World::imds_for(&instance);
        let context = format!("join round {round}");
        tally.until_done(&context, &state, || {
            run(&mut member.command(env(), &imds, &join))
        });
        world.moto.wait_idle();
        member.assert_joined(&id, &context);
        let context = format!("leave round {round}");
        tally.until_done(&context, &state, || {
            run(&mut member.command(env(), &imds, &leave))
        });
        world.moto.wait_idle();
        member.assert_left(&id, &context);
    }
    tally.report("register-host", &proxy);
}

/// An Auto Scaling group `name` of one instance, made with the termination
/// hook `hook` in its CreateAutoScalingGroup call (as deploy-standby makes
/// its groups); returns the instance as describe-instances shows it.
fn group_with_hook(world: &World, name: &str, hook: &str) -> Value {
    aws(
        &world.moto,
        &[
            "ec2",
            "create-launch-template",
            "--launch-template-name",
            name,
            "--launch-template-data",
            r#"{"ImageId":"ami-12c6146b","InstanceType":"t3.micro"}"#,
        ],
    );
    let hooks = format!(
        r#"[{{"LifecycleHookName":"{hook}","LifecycleTransition":"autoscaling:EC2_INSTANCE_TERMINATING","HeartbeatTimeout":600,"DefaultResult":"CONTINUE"}}]"#
    );
    aws(
        &world.moto,
        &[
            "autoscaling",
            "create-auto-scaling-group",
            "--auto-scaling-group-name",
            name,
            "--launch-template",
            &format!("LaunchTemplateName={name},Version=$Latest"),
            "--min-size",
            "1",
            "--max-size",
            "1",
            "--desired-capacity",
            "1",
            "--availability-zones",
            "us-east-1a",
            "--lifecycle-hook-specification-list",
            &hooks,
        ],
    );
    let group = aws_cli::auto_scaling_group(&world.moto, "us-east-1", name);
    let id = group["Instances"][0]["InstanceId"]
        .as_str()
        .expect("the group's instance")
        .to_owned();
    aws_cli::instances(&world.moto, &["--instance-ids", &id])
        .first()
        .cloned()
        .expect("the instance")
}

/// The watcher: a host of an Auto Scaling group waits (reading the
/// metadata's target-lifecycle-state every 200 ms) while it is InService;
/// when the stand-in metadata flips to Terminated, it deregisters, waits
/// for the drain and completes the lifecycle action with CONTINUE, which the
/// fault proxy answers as Auto Scaling does (moto does not implement it) and
/// records. The times from the flip are measured and printed.
#[test]
fn watch_leaves_and_completes_the_lifecycle_action_when_the_group_terminates_the_host() {
    let world = World::new();
    let target_group = world.target_group("go-auth-green", "instance");
    let instance = group_with_hook(&world, "go-auth-green", "switchyard-drain");
    let id = instance["InstanceId"].as_str().unwrap().to_owned();
    let hooks = aws(
        &world.moto,
        &[
            "autoscaling",
            "describe-lifecycle-hooks",
            "--auto-scaling-group-name",
            "go-auth-green",
        ],
    );
    assert_eq!(
        hooks["LifecycleHooks"][0]["LifecycleHookName"], "switchyard-drain",
        "the group is made with its hook: {hooks}"
    );
    let imds = World::imds_for(&instance);
    imds.set(LIFECYCLE_STATE, "InService");
    let recorder = world.moto.recorder().expect("the recording proxy");

    let join = [
        "join",
        "--service",
        "go-auth",
        "--target-group",
        &target_group,
        "--port",
        "9000",
        "--wait-healthy",
        "30s",
    ];
    let out = world.step(&imds.endpoint(), &join);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(world.health(&target_group).len(), 1);

    let watch = [
        "watch",
        "--target-group",
        &target_group,
        "--port",
        "9000",
        "--asg",
        "go-auth-green",
        "--poll-interval",
        "200ms",
        "--output",
        "json",
    ];
    // The plan first: nothing changes.
    let mut dry = watch.to_vec();
    dry.push("--dry-run");
    let out = world.step(&imds.endpoint(), &dry);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let plan = json(&out)["plan"].clone();
    assert!(
        plan[0]
            .as_str()
            .unwrap()
            .contains("(now InService) until it is Terminated"),
        "{plan}"
    );
    assert!(
        plan.as_array().unwrap().iter().any(|l| l
            == &Value::from(format!("complete the lifecycle action of hook switchyard-drain in group go-auth-green for {id} with CONTINUE"))),
        "{plan}"
    );
    assert_eq!(world.health(&target_group).len(), 1);

    let mut env = host_env(world.moto.env(), &imds.endpoint(), &world.state());
    env.push(("SWITCHYARD_LOG".into(), "info".into()));
    let mut cmd = step("register-host", &env);
    cmd.args(watch);
    let watcher = std::thread::spawn(move || run(&mut cmd));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!watcher.is_finished(), "the watcher waits while InService");
    assert_eq!(world.health(&target_group).len(), 1, "still registered");
    assert!(recorder.lifecycle_calls().is_empty());

    let flipped = Instant::now();
    imds.set(LIFECYCLE_STATE, "Terminated");
    let deadline = flipped + Duration::from_secs(60);
    while !watcher.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the watcher did not end within 60s of the flip"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = watcher.join().expect("the watcher thread");
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let report = json(&out);
    assert_eq!(report["lifecycle_state"], "Terminated");
    assert_eq!(report["leave"]["targets"][0]["deregistered"], true);
    assert_eq!(report["leave"]["lifecycle"]["result"], "CONTINUE");
    assert!(world.health(&target_group).is_empty(), "deregistered");

    let calls = recorder.lifecycle_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call.action, "CompleteLifecycleAction");
    assert_eq!(
        (
            call.group.as_str(),
            call.hook.as_str(),
            call.instance.as_str()
        ),
        ("go-auth-green", "switchyard-drain", id.as_str())
    );
    assert_eq!(call.result.as_deref(), Some("CONTINUE"));
    assert_eq!(call.refused, None);

    let noticed = imds
        .first_served("Terminated")
        .expect("Terminated was read")
        .duration_since(flipped);
    let done = call.at.duration_since(flipped);
    println!(
        "watch: flip -> noticed {} ms, flip -> left and completed {} ms (poll every 200 ms)",
        noticed.as_millis(),
        done.as_millis()
    );
    assert!(noticed < Duration::from_secs(2), "{noticed:?}");
    assert!(done >= noticed);

    let doc = world.doc();
    assert!(doc["hosts"].get(id.as_str()).is_none(), "{doc}");
    let journal = actions(&doc);
    assert_eq!(
        journal[journal.len() - 4..],
        [
            "terminating:ok",
            "leave:ok",
            "drained:ok",
            "lifecycle-action:ok"
        ]
    );
    assert!(state_validates(&world.state()));

    // The action is completed: Auto Scaling (here the proxy) refuses a second completion.
    let out = world.step(
        &imds.endpoint(),
        &[
            "leave",
            "--lifecycle-hook",
            "switchyard-drain",
            "--asg",
            "go-auth-green",
        ],
    );
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("No active Lifecycle Action found"),
        "{}",
        out.stderr
    );
}

/// Outside an Auto Scaling lifecycle (the metadata path answers 404) the
/// watcher keeps polling, or with --exit-outside-group ends at once; bad
/// intervals are exit 2 before any call.
#[test]
fn watch_outside_a_group_polls_on_or_exits_and_bad_intervals_exit_2() {
    let world = World::new();
    let instance = world.instance("us-east-1", &[]);
    let imds = World::imds_for(&instance);
    let base = [
        "watch",
        "--asg",
        "go-auth-green",
        "--poll-interval",
        "100ms",
    ];
    let mut args = base.to_vec();
    args.push("--exit-outside-group");
    let out = world.step(&imds.endpoint(), &args);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("is in no Auto Scaling lifecycle"),
        "{}",
        out.stdout
    );

    // Without the flag it polls on; --timeout does not end the watch itself.
    let mut env = host_env(world.moto.env(), &imds.endpoint(), &world.state());
    env.push(("SWITCHYARD_TIMEOUT".into(), "1s".into()));
    let mut cmd = step("register-host", &env);
    cmd.args(base);
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the watcher starts");
    let before = imds.requests();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(child.try_wait().unwrap().is_none(), "still watching");
    assert!(
        imds.requests() >= before + 10,
        "polled on: {}",
        imds.requests()
    );
    // SIGTERM (systemd stopping it at shutdown): exit 130, nothing changed.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));

    for (flag, value, why) in [
        (
            "--poll-interval",
            "2m",
            "--poll-interval 2m00s is outside 100ms to 1m",
        ),
        ("--poll-interval", "10ms", "outside 100ms to 1m"),
        (
            "--heartbeat-every",
            "0s",
            "--heartbeat-every must be 1s or more",
        ),
    ] {
        let out = world.step(&closed_endpoint(), &["watch", "--asg", "web", flag, value]);
        assert_eq!(out.code, 2, "{flag} {value}: {}", out.stderr);
        assert!(out.stderr.contains(why), "{}", out.stderr);
    }
    let out = world.step(&closed_endpoint(), &["watch"]);
    assert_eq!(out.code, 2, "--asg is required: {}", out.stderr);
}
