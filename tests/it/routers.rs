//! shift-weight's ALB and HAProxy routers: HAProxy from Debian's package on
//! loopback under a steady load (zero failed requests, the answer mix
//! following the weights, rollback, reload), and an ALB listener and rule on
//! moto's server, cross-checked with the aws CLI.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use switchyard_tests::aws_cli::{self, aws};
use switchyard_tests::haproxy::{Haproxy, Server, BACKEND};
use switchyard_tests::health_server::Behaviour;
use switchyard_tests::load::{Load, LoadReport, VersionServer};
use switchyard_tests::steps::{run, step, StepOutput};
use switchyard_tests::{HealthServer, Moto};

use crate::fixture::{read_json, with_state, Fixture};

/// Requests per second of the steady load.
const RATE: u32 = 2000;

/// blue1, blue2 (weight 50 each) and green1 (weight 0) behind HAProxy.
struct Proxy {
    haproxy: Haproxy,
    _servers: Vec<VersionServer>,
    dir: tempfile::TempDir,
}

impl Proxy {
    fn new() -> Self {
        let servers: Vec<VersionServer> = ["blue", "blue", "green"]
            .iter()
            .map(|v| VersionServer::start(v).unwrap())
            .collect();
        let layout = [("blue1", 50), ("blue2", 50), ("green1", 0)];
        let haproxy = Haproxy::start(
            &layout
                .iter()
                .zip(&servers)
                .map(|((name, weight), s)| Server {
                    name: (*name).to_owned(),
                    addr: s.addr(),
                    weight: *weight,
                })
                .collect::<Vec<_>>(),
        )
        .expect("haproxy starts (apt-get install haproxy)");
        Self {
            haproxy,
            _servers: servers,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state.json")
    }

    fn shift(&self, args: &[&str]) -> StepOutput {
        self.run("shift-weight", &[], args)
    }

    /// `switchyard lock SUBCOMMAND` on this backend's lease.
    fn lock(&self, subcommand: &str, args: &[&str]) -> StepOutput {
        self.run("switchyard", &["lock", subcommand], args)
    }

    /// Runs `program` with `before`, the flags naming this backend's route, then `after`.
    fn run(&self, program: &str, before: &[&str], after: &[&str]) -> StepOutput {
        let mut cmd = step(program, &with_state(Vec::new(), &self.state()));
        cmd.args(before).args([
            "--router",
            "haproxy",
            "--haproxy-socket",
            &self.haproxy.socket().display().to_string(),
            "--backend",
            BACKEND,
            "--server-state-file",
            &self.haproxy.state_file().display().to_string(),
        ]);
        cmd.args(after);
        run(&mut cmd)
    }

    fn doc(&self) -> Value {
        read_json(&self.state())
    }

    fn weights(&self) -> BTreeMap<&'static str, u32> {
        ["blue1", "blue2", "green1"]
            .into_iter()
            .map(|s| (s, self.haproxy.weight(s).unwrap()))
            .collect()
    }

    /// Admin state bits of one server (`show servers state`).
    fn admin_state(&self, server: &str) -> u32 {
        let answer = self
            .haproxy
            .command(&format!("show servers state {BACKEND}"))
            .unwrap();
        answer
            .lines()
            .find(|l| l.split_whitespace().nth(3) == Some(server))
            .and_then(|l| l.split_whitespace().nth(6))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {server} in {answer}"))
    }
}

fn journal(doc: &Value) -> Vec<(String, SystemTime)> {
    doc["journal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let at: chrono::DateTime<chrono::Utc> = e["at"].as_str().unwrap().parse().unwrap();
            (
                e["action"].as_str().unwrap().to_owned(),
                SystemTime::from(at),
            )
        })
        .collect()
}

/// Share of green answers (percent) between two moments, and how many answers.
fn green_share(load: &LoadReport, from: SystemTime, to: SystemTime) -> (f64, u64) {
    let mix = load.mix(from, to);
    let total: u64 = mix.values().sum();
    let green = mix.get("green").copied().unwrap_or(0);
    #[allow(clippy::cast_precision_loss)]
    let share = if total == 0 {
        0.0
    } else {
        green as f64 * 100.0 / total as f64
    };
    (share, total)
}

/// The windows in which each step's weights held: from its read-back (plus
/// a margin) to the next submitted change (minus a margin), or to `end`.
fn step_windows(doc: &Value, end: SystemTime) -> Vec<(SystemTime, SystemTime)> {
    let entries = journal(doc);
    let margin = Duration::from_millis(100);
    let mut windows = Vec::new();
    for (i, (action, at)) in entries.iter().enumerate() {
        if action != "weights-verified" {
            continue;
        }
        let next = entries[i + 1..]
            .iter()
            .find(|(a, _)| a == "weights-submitted")
            .map_or(end, |(_, t)| *t);
        windows.push((*at + margin, next - margin));
    }
    windows
}

fn assert_no_failures(load: &LoadReport) {
    assert_eq!(
        load.failures(),
        0,
        "failed requests: {:?} (of {})",
        load.errors,
        load.samples.len()
    );
    assert!(
        load.rate() > f64::from(RATE) * 0.5,
        "the load ran at {:.0} requests/s, well under {RATE}",
        load.rate()
    );
}

#[test]
fn haproxy_gradual_shift_under_load_has_no_failed_requests_and_follows_the_weights() {
    let proxy = Proxy::new();
    let gate = HealthServer::start(None, None).unwrap();
    let load = Load::start(proxy.haproxy.addr(), RATE, 16).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = proxy.shift(&[
        "--to",
        "green",
        "--steps",
        "10,50,100",
        "--pause",
        "2s",
        "--gate-url",
        &gate.url(),
        "--gate-successes",
        "2",
        "--gate-interval",
        "100ms",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    let end = SystemTime::now();
    let report = load.stop();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_no_failures(&report);
    eprintln!(
        "load: {} requests at {:.0}/s, 0 failed",
        report.samples.len(),
        report.rate()
    );

    let doc = proxy.doc();
    let windows = step_windows(&doc, end);
    assert_eq!(windows.len(), 3, "{:?}", journal(&doc));
    for ((from, to), expected) in windows.iter().zip([10.0, 50.0, 100.0]) {
        let (share, total) = green_share(&report, *from, *to);
        eprintln!("step green={expected}%: measured {share:.1}% of {total} answers");
        assert!(
            total > 500,
            "only {total} answers in the window of step {expected}"
        );
        assert!(
            (share - expected).abs() <= 3.0,
            "green answered {share:.1}% while its weight was {expected}%"
        );
    }
    // Before the shift: blue only.
    let first = journal(&doc)[0].1;
    let (share, _) = green_share(&report, report.samples[0].at, first);
    assert!(
        share.abs() < f64::EPSILON,
        "green answered before the shift"
    );

    // blue drained and in maint, green ready at 100; all saved for a reload.
    assert_eq!(
        proxy.weights(),
        BTreeMap::from([("blue1", 0), ("blue2", 0), ("green1", 100)])
    );
    assert_eq!(proxy.admin_state("blue1") & 0x01, 0x01, "blue1 in maint");
    assert_eq!(proxy.admin_state("green1"), 0, "green1 ready");
    let saved = std::fs::read_to_string(proxy.haproxy.state_file()).unwrap();
    assert!(
        saved
            .lines()
            .any(|l| l.contains(" green1 ") && l.split_whitespace().nth(7) == Some("100")),
        "{saved}"
    );
    assert!(
        out.stderr.contains("set server app/blue1 state drain"),
        "{}",
        out.stderr
    );
    let lock = PathBuf::from(format!(
        "{}.switchyard-lock",
        proxy.haproxy.state_file().display()
    ));
    assert!(!lock.exists(), "the lease is released");
}

#[test]
fn haproxy_failed_gate_rolls_back_under_load_with_no_failed_requests_exit_4() {
    let proxy = Proxy::new();
    // Healthy before any change and at step 1 (2 answers each), then 500s.
    let gate = HealthServer::with(Behaviour {
        script: vec![true, true, true, true, false],
        ..Behaviour::default()
    })
    .unwrap();
    let load = Load::start(proxy.haproxy.addr(), RATE, 16).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = proxy.shift(&[
        "--to",
        "green",
        "--steps",
        "10,50,100",
        "--gate-url",
        &gate.url(),
        "--gate-successes",
        "2",
        "--gate-failures",
        "1",
        "--gate-interval",
        "100ms",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    let end = SystemTime::now();
    let report = load.stop();
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("gate failed at step 2"),
        "{}",
        out.stderr
    );
    assert_no_failures(&report);

    let doc = proxy.doc();
    let rolled_back = journal(&doc)
        .into_iter()
        .find(|(a, _)| a == "rollback-completed")
        .expect("a rollback-completed entry")
        .1;
    let (share, total) = green_share(&report, rolled_back + Duration::from_millis(50), end);
    assert!(total > 500, "{total}");
    assert!(
        share.abs() < f64::EPSILON,
        "green still answered {share:.2}% after the rollback"
    );
    assert_eq!(
        proxy.weights(),
        BTreeMap::from([("blue1", 50), ("blue2", 50), ("green1", 0)])
    );
    let route = doc["traffic"].as_object().unwrap().values().next().unwrap();
    assert_eq!(route["shift"]["status"], "rolled_back");
    assert_eq!(route["weights"]["blue"], 100);
}

#[test]
fn haproxy_reload_keeps_the_runtime_weights_and_the_lease_is_exclusive() {
    let mut proxy = Proxy::new();
    let out = proxy.shift(&["--to", "green", "--weight", "30", "--force"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        proxy.weights(),
        BTreeMap::from([("blue1", 35), ("blue2", 35), ("green1", 30)])
    );
    proxy.haproxy.reload().unwrap();
    assert_eq!(
        proxy.weights(),
        BTreeMap::from([("blue1", 35), ("blue2", 35), ("green1", 30)]),
        "a reload keeps the weights saved in the server-state file"
    );
    // The runtime API over TCP reads the same.
    let mut cmd = step("shift-weight", &[]);
    cmd.args([
        "--router",
        "haproxy",
        "--backend",
        BACKEND,
        "--to",
        "green",
        "--weight",
        "50",
    ])
    .args(["--dry-run", "--force", "--state"])
    .arg(proxy.state())
    .args([
        "--haproxy-socket",
        &proxy.haproxy.admin_tcp(),
        "--lock-file",
    ])
    .arg(proxy.dir.path().join("tcp.lock"));
    let out = run(&mut cmd);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("now: blue=70,green=30"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("set server app/green1 weight 50; set server app/blue1 weight 25"),
        "{}",
        out.stdout
    );

    let out = proxy.shift(&["--to", "green", "--weight", "100", "--force"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    proxy.haproxy.reload().unwrap();
    assert_eq!(
        proxy.admin_state("blue2") & 0x01,
        0x01,
        "maint survives a reload"
    );
    assert_eq!(proxy.haproxy.weight("green1").unwrap(), 100);

    // A live lease of another deployment: exit 5, nothing changes.
    let lock = format!("{}.switchyard-lock", proxy.haproxy.state_file().display());
    let expires = chrono::Utc::now().timestamp() + 600;
    std::fs::write(
        &lock,
        format!("switchyard-lease=1;token=0000000000001-other;since=1;expires={expires};holder=jenkins@ci-9;message=release_7\n"),
    )
    .unwrap();
    let out = proxy.shift(&["--rollback"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(out.stderr.contains("jenkins@ci-9"), "{}", out.stderr);
    assert_eq!(proxy.haproxy.weight("green1").unwrap(), 100);
    // `switchyard lock` shows it, keeps it when this state file's run does not
    // hold it, and removes it with --force.
    let out = proxy.lock("status", &[]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(
        out.stdout.contains("held by jenkins@ci-9"),
        "{}",
        out.stdout
    );
    let out = proxy.lock("release", &[]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(Path::new(&lock).exists(), "another run's lease is kept");
    let out = proxy.lock("release", &["--force"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!Path::new(&lock).exists(), "{}", out.stdout);
    let out = proxy.lock("status", &["--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let status: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(status["held"], false, "{status}");
    let released = proxy.doc()["journal"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "lock-released");
    assert!(released, "the release is journaled");
    // Expired: taken over, and the rollback restores the weights from before
    // green's first 30%: the shift to 100% continued that one (the same
    // member, from where it left the weights), as a promotion continues a
    // canary.
    std::fs::write(
        &lock,
        "switchyard-lease=1;token=0000000000001-other;since=1;expires=2;holder=jenkins@ci-9\n",
    )
    .unwrap();
    let out = proxy.shift(&["--rollback"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        proxy.weights(),
        BTreeMap::from([("blue1", 50), ("blue2", 50), ("green1", 0)])
    );
}

/// A load balancer with a listener forwarding to blue (weight 1) and green
/// (weight 0), and a path rule forwarding to both; returns (listener, rule,
/// blue ARN, green ARN).
fn alb(moto: &Moto) -> (String, String, String, String) {
    let vpc = aws_cli::create_vpc(moto);
    let subnet = |cidr: &str, az: &str| {
        aws(
            moto,
            &[
                "ec2",
                "create-subnet",
                "--vpc-id",
                &vpc,
                "--cidr-block",
                cidr,
                "--availability-zone",
                az,
            ],
        )["Subnet"]["SubnetId"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (a, b) = (
        subnet("10.0.1.0/24", "us-east-1a"),
        subnet("10.0.2.0/24", "us-east-1b"),
    );
    let lb = aws(
        moto,
        &[
            "elbv2",
            "create-load-balancer",
            "--name",
            "app",
            "--subnets",
            &a,
            &b,
        ],
    )["LoadBalancers"][0]["LoadBalancerArn"]
        .as_str()
        .unwrap()
        .to_owned();
    let group = |name: &str| aws_cli::create_target_group(moto, name, &vpc, &[]);
    let (blue, green) = (group("app-blue"), group("app-green"));
    let forward = format!(
        r#"[{{"Type":"forward","ForwardConfig":{{"TargetGroups":[{{"TargetGroupArn":"{blue}","Weight":1}},{{"TargetGroupArn":"{green}","Weight":0}}]}}}}]"#
    );
    let listener = aws(
        moto,
        &[
            "elbv2",
            "create-listener",
            "--load-balancer-arn",
            &lb,
            "--protocol",
            "HTTP",
            "--port",
            "80",
            "--default-actions",
            &forward,
        ],
    )["Listeners"][0]["ListenerArn"]
        .as_str()
        .unwrap()
        .to_owned();
    let rule = aws(
        moto,
        &[
            "elbv2",
            "create-rule",
            "--listener-arn",
            &listener,
            "--priority",
            "10",
            "--conditions",
            r#"[{"Field":"path-pattern","Values":["/api/*"]}]"#,
            "--actions",
            &forward,
        ],
    )["Rules"][0]["RuleArn"]
        .as_str()
        .unwrap()
        .to_owned();
    (listener, rule, blue, green)
}

/// Target group ARN -> weight, as the aws CLI shows a listener's or rule's forward action.
fn cli_weights(actions: &Value) -> BTreeMap<String, u64> {
    actions[0]["ForwardConfig"]["TargetGroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["TargetGroupArn"].as_str().unwrap().to_owned(),
                t["Weight"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn alb_listener_and_rule_weights_shift_and_read_back_in_the_aws_cli() {
    let fx = Fixture::new();
    let moto = &fx.moto;
    let (listener, rule, blue, green) = alb(moto);
    let shift = |args: &[&str]| {
        let mut cmd = step("shift-weight", &fx.env());
        cmd.args(["--router", "alb", "--force"]).args(args);
        run(&mut cmd)
    };
    let listener_weights = || {
        cli_weights(
            &aws(
                moto,
                &["elbv2", "describe-listeners", "--listener-arns", &listener],
            )["Listeners"][0]["DefaultActions"],
        )
    };

    // Members named by target group name; 10, 50, 100 with the CLI checking the end.
    let out = shift(&[
        "--listener-arn",
        &listener,
        "--to",
        "app-green",
        "--steps",
        "10,50,100",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        listener_weights(),
        BTreeMap::from([(blue.clone(), 0), (green.clone(), 100)])
    );
    assert!(
        out.stderr.contains("step 1/3: one ModifyListener"),
        "{}",
        out.stderr
    );
    let tags = aws(
        moto,
        &["elbv2", "describe-tags", "--resource-arns", &listener],
    );
    assert_eq!(
        tags["TagDescriptions"][0]["Tags"],
        Value::Array(vec![]),
        "lease released"
    );
    let out = shift(&["--listener-arn", &listener, "--rollback"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        listener_weights(),
        BTreeMap::from([(blue.clone(), 1), (green.clone(), 0)])
    );

    // The rule: members named by ARN, stickiness set, conditions kept.
    let member_blue = format!("blue={blue}");
    let member_green = format!("green={green}");
    let out = shift(&[
        "--rule-arn",
        &rule,
        "--member",
        &member_blue,
        "--member",
        &member_green,
        "--to",
        "green",
        "--weight",
        "50",
        "--stickiness",
        "10m",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let described = aws(moto, &["elbv2", "describe-rules", "--rule-arns", &rule]);
    let described = &described["Rules"][0];
    assert_eq!(
        cli_weights(&described["Actions"]),
        BTreeMap::from([(blue.clone(), 50), (green.clone(), 50)])
    );
    let sticky = &described["Actions"][0]["ForwardConfig"]["TargetGroupStickinessConfig"];
    assert_eq!(sticky["Enabled"], true);
    assert_eq!(sticky["DurationSeconds"], 600);
    assert_eq!(described["Conditions"][0]["Values"][0], "/api/*");
    // The listener's default action is untouched by the rule's shift.
    assert_eq!(
        listener_weights(),
        BTreeMap::from([(blue.clone(), 1), (green, 0)])
    );

    // A live lease tag of another deployment: exit 5.
    let expires = chrono::Utc::now().timestamp() + 600;
    aws(
        moto,
        &[
            "elbv2", "add-tags", "--resource-arns", &rule, "--tags",
            &format!("Key=switchyard-lease/0000000000001-x,Value=switchyard-lease=1 token=0000000000001-x since=1 expires={expires} holder=jenkins@ci-3"),
        ],
    );
    let out = shift(&[
        "--rule-arn",
        &rule,
        "--member",
        &member_blue,
        "--member",
        "green=app-green",
        "--rollback",
    ]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(out.stderr.contains("jenkins@ci-3"), "{}", out.stderr);

    // `switchyard lock` finds the tag lease and removes it with --force.
    let lock = |args: &[&str]| {
        let mut cmd = step("switchyard", &fx.env());
        cmd.args(["lock"])
            .args(args)
            .args(["--router", "alb", "--rule-arn", &rule]);
        run(&mut cmd)
    };
    let out = lock(&["status"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(out.stdout.contains("jenkins@ci-3"), "{}", out.stdout);
    let out = lock(&["release", "--force"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let tags = aws(moto, &["elbv2", "describe-tags", "--resource-arns", &rule]);
    assert_eq!(
        tags["TagDescriptions"][0]["Tags"],
        Value::Array(vec![]),
        "lease tag removed"
    );
    assert_eq!(lock(&["status"]).code, 0);
}
