//! verify-health against real local HTTP(S) servers, and against moto's
//! server for CloudWatch alarms and Route53 health checks.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_tests::aws_cli::{self, aws};
use switchyard_tests::health_server::Behaviour;
use switchyard_tests::steps::{run, step, StepOutput};
use switchyard_tests::{HealthServer, Moto};

use crate::fixture::{read_json, state_validates, with_state};

fn verify(env: &[(String, String)], args: &[&str]) -> StepOutput {
    let mut cmd = step("verify-health", env);
    cmd.args(args);
    run(&mut cmd)
}

fn fast() -> Vec<&'static str> {
    vec!["--interval", "50ms", "--probe-timeout", "2s"]
}

fn state_in(dir: &Path) -> Vec<(String, String)> {
    with_state(Vec::new(), &dir.join("state.json"))
}

/// A weighted group `svcN.DOMAIN` of two regions, 50/50, for round `n`:
/// its name, the two addresses, and the two `--member` values.
fn two_regions(
    moto: &Moto,
    zone: &str,
    domain: &str,
    n: usize,
) -> (String, [String; 2], [String; 2]) {
    let name = format!("svc{n}.{domain}");
    // Public addresses: Route53 refuses checks of private ones.
    let (east, west) = (format!("52.94.{n}.1"), format!("54.239.{n}.1"));
    aws_cli::create_weighted(
        moto,
        zone,
        &name,
        &[("us-east", 50, &east), ("eu-west", 50, &west)],
        60,
    );
    let members = [
        format!("us-east=http://{east}:8080/health"),
        format!("eu-west=http://{west}:8080/health"),
    ];
    (name, [east, west], members)
}

/// A CPU alarm named `name` in moto's CloudWatch.
fn put_alarm(moto: &Moto, name: &str) {
    aws(
        moto,
        &[
            "cloudwatch",
            "put-metric-alarm",
            "--alarm-name",
            name,
            "--namespace",
            "AWS/EC2",
            "--metric-name",
            "CPUUtilization",
            "--statistic",
            "Average",
            "--period",
            "300",
            "--evaluation-periods",
            "1",
            "--threshold",
            "70",
            "--comparison-operator",
            "GreaterThanOrEqualToThreshold",
        ],
    );
}

/// Sets alarm `name` to `state` (OK, ALARM, INSUFFICIENT_DATA).
fn set_alarm(moto: &Moto, name: &str, state: &str) {
    aws(
        moto,
        &[
            "cloudwatch",
            "set-alarm-state",
            "--alarm-name",
            name,
            "--state-value",
            state,
            "--state-reason",
            "test",
        ],
    );
}

#[test]
fn a_healthy_stack_from_the_state_passes_and_its_verdict_is_recorded() {
    let a = HealthServer::start(None, None).unwrap();
    let b = HealthServer::start(None, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let doc = json!({"schema": "switchyard/state/v1", "stacks": {"green": {"role": "standby",
        "endpoints": [a.addr().to_string(), format!("http://{}/health", b.addr())]}}});
    std::fs::write(&state, doc.to_string()).unwrap();
    let mut args = vec!["--stack", "standby"];
    args.extend(fast());
    let out = verify(&state_in(dir.path()), &args);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .starts_with("green: healthy — 2/2 endpoints healthy"),
        "{}",
        out.stdout
    );
    let doc = read_json(&state);
    let verdict = &doc["health"]["green"];
    assert_eq!(verdict["status"], "healthy");
    assert_eq!(verdict["endpoints"].as_array().unwrap().len(), 2);
    assert_eq!(verdict["endpoints"][0]["pass"], true);
    assert!(verdict["latency_ms"]["p95"].is_u64());
    assert_eq!(doc["journal"][0]["action"], "verdict");
    // Two consecutive successes each (the default), nothing more.
    assert_eq!(a.served() + b.served(), 4);
}

#[test]
fn a_slow_endpoint_trips_the_latency_limit() {
    let slow = HealthServer::with(Behaviour {
        delay: Duration::from_millis(300),
        ..Behaviour::default()
    })
    .unwrap();
    let url = slow.url();
    let mut args = vec!["--url", &url, "--p95-limit", "100ms"];
    args.extend(fast());
    let out = verify(&[], &args);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("p95 latency") && out.stdout.contains("over the 100ms limit"),
        "{}",
        out.stdout
    );
    // Without the limit, the same endpoint is healthy.
    let mut args = vec!["--url", &url];
    args.extend(fast());
    assert_eq!(verify(&[], &args).code, 0);
}

#[test]
fn a_flapping_endpoint_is_decided_by_the_thresholds() {
    // ok, fail, ok, ok, ...: two successes in a row come before two failures in a row.
    let script = vec![true, false, true, true];
    let flapping = HealthServer::with(Behaviour {
        script: script.clone(),
        ..Behaviour::default()
    })
    .unwrap();
    let url = flapping.url();
    let mut args = vec!["--url", &url, "--successes", "2", "--failures", "2"];
    args.extend(fast());
    let out = verify(&[], &args);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(flapping.served(), 4);

    // The same flapping fails a policy that tolerates no failure.
    let flapping = HealthServer::with(Behaviour {
        script,
        ..Behaviour::default()
    })
    .unwrap();
    let url = flapping.url();
    let mut args = vec!["--url", &url, "--successes", "2", "--failures", "1"];
    args.extend(fast());
    let out = verify(&[], &args);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("500"), "{}", out.stdout);

    // An endpoint that never settles is inconclusive, not healthy.
    let never = HealthServer::with(Behaviour {
        script: (0..50).map(|i| i % 2 == 0).collect(),
        ..Behaviour::default()
    })
    .unwrap();
    let url = never.url();
    let mut args = vec![
        "--url",
        &url,
        "--successes",
        "2",
        "--failures",
        "2",
        "--attempts",
        "6",
    ];
    args.extend(fast());
    let out = verify(&[], &args);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with("inconclusive"), "{}", out.stdout);
}

#[test]
fn a_wrong_body_fails_body_and_json_rules() {
    let degraded = HealthServer::with(Behaviour {
        body: Some(r#"{"status": "degraded", "queue": {"depth": 7}}"#.into()),
        ..Behaviour::default()
    })
    .unwrap();
    let url = degraded.url();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["--body-regex", "\"status\": \"ok\""],
            1,
            "body does not match",
        ),
        (vec!["--body-not-regex", "degraded"], 1, "which it must not"),
        (
            vec!["--json", "/status == ok"],
            1,
            "/status is \"degraded\", expected == \"ok\"",
        ),
        (
            vec!["--json", "/queue/depth < 5"],
            1,
            "/queue/depth is 7, expected < 5",
        ),
        (
            vec!["--json", "/queue/depth < 10", "--body-regex", "depth"],
            0,
            "1/1 endpoints healthy",
        ),
        (vec!["--expect-status", "204"], 1, "status 200 not in 204"),
    ];
    for (extra, code, message) in cases {
        let mut args = vec!["--url", &url, "--successes", "1", "--failures", "1"];
        args.extend(extra.iter().copied());
        let out = verify(&[], &args);
        assert_eq!(out.code, code, "{extra:?}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stdout.contains(message),
            "{extra:?}: expected {message:?} in {}",
            out.stdout
        );
    }
}

struct TlsServer {
    child: Child,
    port: u16,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA and a server certificate for 127.0.0.1 signed by it.
fn make_certificates(dir: &Path) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=switchyard test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
    dir.join("ca.pem")
}

fn start_tls(dir: &Path) -> TlsServer {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls_server.py");
    let port_file = dir.join("port");
    let child = Command::new("python3")
        .arg(script)
        .arg(&port_file)
        .arg(dir.join("server.pem"))
        .arg(dir.join("server.key"))
        .spawn()
        .expect("python3 runs");
    // Owned at once, so the server is stopped (and reaped) however this ends.
    let mut server = TlsServer { child, port: 0 };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(port) = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
        {
            server.port = port;
            return server;
        }
        assert!(Instant::now() < deadline, "the TLS server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn tls_with_a_self_signed_ca_fails_without_the_ca_and_passes_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_certificates(dir.path());
    let server = start_tls(dir.path());
    let url = format!("https://127.0.0.1:{}/health", server.port);
    let mut args = vec!["--url", &url, "--successes", "1", "--failures", "1"];
    args.extend(fast());
    let out = verify(&[], &args);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.to_lowercase().contains("certificate"),
        "{}",
        out.stdout
    );

    let ca = ca.display().to_string();
    let mut with_ca = args.clone();
    with_ca.extend(["--ca-bundle", &ca]);
    let out = verify(&[], &with_ca);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);

    // The certificate names 127.0.0.1 and localhost: another name fails even
    // with the CA, and --resolve keeps that name for SNI and verification.
    let other = format!("https://app.internal:{}/health", server.port);
    let resolve = format!("app.internal:{}:127.0.0.1", server.port);
    let out = verify(
        &[],
        &[
            "--url",
            &other,
            "--resolve",
            &resolve,
            "--ca-bundle",
            &ca,
            "--successes",
            "1",
            "--failures",
            "1",
        ],
    );
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let out = verify(
        &[],
        &[
            "--url",
            &other,
            "--resolve",
            &resolve,
            "--insecure",
            "--successes",
            "1",
            "--failures",
            "1",
        ],
    );
    assert_eq!(
        out.code, 0,
        "--insecure accepts it: {}{}",
        out.stdout, out.stderr
    );
}

#[test]
fn a_quorum_can_be_partly_met() {
    let servers: Vec<HealthServer> = (0..3)
        .map(|_| HealthServer::start(None, None).unwrap())
        .collect();
    let dead = switchyard_tests::moto::free_port().unwrap();
    let mut urls: Vec<String> = servers.iter().map(HealthServer::url).collect();
    urls.push(format!("http://127.0.0.1:{dead}/health"));
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let junit_arg = junit.display().to_string();
    let joined = urls.join(",");
    let mut args = vec![
        "--url", &joined, "--quorum", "75", "--junit", &junit_arg, "--stack", "green",
    ];
    args.extend(fast());
    let out = verify(&state_in(dir.path()), &args);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("3/4 endpoints healthy (needed 3)"),
        "{}",
        out.stdout
    );

    // The JUnit report, read by a real JUnit parser: a case for the verdict
    // and one per endpoint. The verdict is healthy, so the suite has no
    // failure (Jenkins' junit step keeps the build green): the dead endpoint,
    // which the quorum tolerated, is reported as skipped, saying why.
    let parsed = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/junit_check.py"))
        .arg(&junit)
        .output()
        .expect("python3 runs");
    assert!(
        parsed.status.success(),
        "junitparser: {}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let report: Value = serde_json::from_slice(&parsed.stdout).unwrap();
    assert_eq!(report["tests"], 5);
    assert_eq!(report["failures"], 0);
    let cases = report["suites"][0]["cases"].as_array().unwrap();
    assert_eq!(cases[0]["name"], "verdict");
    assert_eq!(cases[0]["results"], json!([]));
    let noted: Vec<&Value> = cases
        .iter()
        .filter(|c| !c["results"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(noted.len(), 1);
    assert_eq!(noted[0]["name"], urls[3].as_str());
    assert_eq!(noted[0]["results"][0]["kind"], "Skipped");
    let message = noted[0]["results"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("tolerated: 3 of 4 endpoints healthy, 3 needed")
            && message.contains("connection failed"),
        "{message}"
    );

    // Below the quorum the verdict fails, and so do the suite and the endpoint.
    let mut args = vec!["--url", &joined, "--quorum", "90", "--junit", &junit_arg];
    args.extend(fast());
    let out = verify(&[], &args);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let parsed = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/junit_check.py"))
        .arg(&junit)
        .output()
        .expect("python3 runs");
    let report: Value = serde_json::from_slice(&parsed.stdout).unwrap();
    assert_eq!(report["failures"], 2, "{report}");
    let cases = report["suites"][0]["cases"].as_array().unwrap();
    assert_eq!(cases[0]["results"][0]["kind"], "Failure");
    assert_eq!(cases[4]["results"][0]["kind"], "Failure");

    let mut args = vec!["--url", &joined, "--quorum", "90", "--output", "json"];
    args.extend(fast());
    let out = verify(&[], &args);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let result: Value = serde_json::from_str(out.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(result["verdict"], "unhealthy");
    assert_eq!(result["probes"]["needed"], 4);
}

#[test]
fn bad_input_exits_2() {
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![], "nothing to verify"),
        (vec!["--url", "ftp://x"], "not an http(s) URL"),
        (
            vec![
                "--url",
                "http://127.0.0.1:9/",
                "--successes",
                "5",
                "--attempts",
                "2",
            ],
            "no endpoint could ever be decided",
        ),
        (
            vec!["--url", "http://127.0.0.1:9/", "--quorum", "150"],
            "--quorum must be a percentage",
        ),
        (
            vec!["--stack", "green"],
            "no stack \"green\" in the state file",
        ),
        (
            vec!["--url", "http://127.0.0.1:9/", "--json", "nope"],
            "invalid JSON check",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (args, message) in cases {
        let out = verify(&state_in(dir.path()), &args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(message),
            "{args:?}: expected {message:?} in {}",
            out.stderr
        );
    }
    assert!(!dir.path().join("state.json").exists());
}

#[test]
fn cloudwatch_alarms_gate_the_verdict() {
    let moto = Moto::start().unwrap();
    let alarm = |name: &str| put_alarm(&moto, name);
    let set = |name: &str, state: &str| set_alarm(&moto, name, state);
    alarm("green-5xx");
    alarm("green-latency");
    let env = moto.env();
    // An alarm without data is never a silent pass.
    set("green-5xx", "INSUFFICIENT_DATA");
    let out = verify(&env, &["--alarm", "green-5xx"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with("inconclusive"), "{}", out.stdout);
    let out = verify(
        &env,
        &["--alarm", "green-5xx", "--insufficient-data", "pass"],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("counted as passed"), "{}", out.stdout);

    set("green-5xx", "OK");
    set("green-latency", "OK");
    let out = verify(
        &env,
        &[
            "--alarm-prefix",
            "green-",
            "--alarm-window",
            "300ms",
            "--alarm-interval",
            "100ms",
        ],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("2/2 alarms OK through 300ms"),
        "{}",
        out.stdout
    );

    set("green-latency", "ALARM");
    let server = HealthServer::start(None, None).unwrap();
    let url = server.url();
    let out = verify(
        &env,
        &[
            "--alarm-prefix",
            "green-",
            "--url",
            &url,
            "--successes",
            "1",
        ],
    );
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("in ALARM: green-latency"),
        "{}",
        out.stdout
    );

    let out = verify(&env, &["--alarm", "no-such-alarm"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("no CloudWatch alarm named no-such-alarm"),
        "{}",
        out.stderr
    );
}

#[test]
fn route53_health_checks_are_created_once_and_associated_with_their_records() {
    let moto = Moto::start().unwrap();
    let zone = aws_cli::create_zone(&moto, "example.net");
    let name = "svc.example.net";
    aws_cli::create_weighted(
        &moto,
        &zone,
        name,
        &[
            ("us-east", 50, "52.94.236.1"),
            ("eu-west", 50, "54.239.28.1"),
        ],
        60,
    );
    let dir = tempfile::tempdir().unwrap();
    let mut env = moto.env();
    env.extend(state_in(dir.path()));
    let ensure = |env: &[(String, String)]| {
        verify(
            env,
            &[
                "route53",
                "ensure",
                "--zone-id",
                &zone,
                "--record-name",
                name,
                "--member",
                "us-east=http://52.94.236.1:8080/health",
                "--member",
                "eu-west=http://54.239.28.1:8080/health",
                "--type",
                "http",
                "--request-interval",
                "10",
                "--failure-threshold",
                "2",
                "--output",
                "json",
            ],
        )
    };
    let first = ensure(&env);
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    let first: Value = serde_json::from_str(&first.stdout).unwrap();
    assert!(first["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["created"] == true && c["associated"] == true));
    let second = ensure(&env);
    assert_eq!(second.code, 0, "{}{}", second.stdout, second.stderr);
    let second: Value = serde_json::from_str(&second.stdout).unwrap();
    assert!(second["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["created"] == false && c["associated"] == false));
    assert_eq!(
        first["checks"][0]["health_check_id"],
        second["checks"][0]["health_check_id"]
    );

    // The aws CLI sees two checks, each on its record.
    let listed = aws(&moto, &["route53", "list-health-checks"]);
    let checks = listed["HealthChecks"].as_array().unwrap();
    assert_eq!(checks.len(), 2);
    let config = &checks
        .iter()
        .find(|c| c["HealthCheckConfig"]["IPAddress"] == "52.94.236.1")
        .unwrap()["HealthCheckConfig"];
    assert_eq!(config["Type"], "HTTP");
    assert_eq!(config["Port"], 8080);
    assert_eq!(config["ResourcePath"], "/health");
    assert_eq!(config["RequestInterval"], 10);
    assert_eq!(config["FailureThreshold"], 2);
    for record in aws_cli::records(&moto, &zone)
        .iter()
        .filter(|r| r["Type"] == "A")
    {
        let id = record["HealthCheckId"].as_str().expect("associated");
        assert!(checks.iter().any(|c| c["Id"] == id));
        assert!(record["Weight"] == 50, "weights untouched");
    }
    let out = verify(
        &env,
        &[
            "route53",
            "status",
            "--zone-id",
            &zone,
            "--record-name",
            name,
        ],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("us-east: healthy"), "{}", out.stdout);
    let doc = read_json(&dir.path().join("state.json"));
    assert_eq!(doc["journal"].as_array().unwrap().len(), 2);
    assert_eq!(doc["journal"][0]["changes"].as_array().unwrap().len(), 2);
}

/// Faults: verify-health's AWS paths through the fault-injecting proxy:
/// Route53 health checks made and associated (a new record group each
/// round), and a CloudWatch alarm gate. Every run exits 0, or 3 with a state
/// file that validates and then converges when run again: one health check
/// per member, each on its record, and the gate passes.
#[test]
fn route53_checks_and_alarm_gates_complete_or_stop_cleanly_under_20_percent_injected_faults() {
    use crate::faults::{through, Tally, FAULT_RATE};
    use switchyard_tests::fault_proxy::{FaultProxy, Faults, Outcome};
    let moto = Moto::start().unwrap();
    let proxy = FaultProxy::start(&moto.direct_endpoint(), Faults::spread(FAULT_RATE)).unwrap();
    let zone = aws_cli::create_zone(&moto, "example.org");
    for name in ["green-5xx", "green-latency"] {
        put_alarm(&moto, name);
        set_alarm(&moto, name, "OK");
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let mut env = through(moto.env(), &proxy);
    env.extend(state_in(dir.path()));
    let mut tally = Tally::default();
    for round in 0..5 {
        let (name, [east, west], members) = two_regions(&moto, &zone, "example.org", round);
        let context = format!("round {round}");
        let before = proxy.calls().len();
        tally.until_done(&context, &state, || {
            verify(
                &env,
                &[
                    "route53",
                    "ensure",
                    "--zone-id",
                    &zone,
                    "--record-name",
                    &name,
                    "--member",
                    &members[0],
                    "--member",
                    &members[1],
                    "--type",
                    "http",
                ],
            )
        });
        moto.wait_idle();
        // AWS answers a CreateHealthCheck retried with the same
        // CallerReference with the check it made; moto makes another. So
        // moto holds one check per create that reached it: two, plus one per
        // retried create whose first answer was lost.
        let creates = proxy.calls()[before..]
            .iter()
            .filter(|c| {
                c.action == "CreateHealthCheck"
                    && matches!(
                        c.outcome,
                        Outcome::Forwarded | Outcome::Slow | Outcome::DroppedAfter
                    )
            })
            .count();
        let listed = aws(&moto, &["route53", "list-health-checks"]);
        let checks: Vec<&Value> = listed["HealthChecks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| {
                let ip = &c["HealthCheckConfig"]["IPAddress"];
                *ip == east.as_str() || *ip == west.as_str()
            })
            .collect();
        assert_eq!(checks.len(), creates.max(2), "{context}: {checks:?}");
        let records: Vec<Value> = aws_cli::records(&moto, &zone)
            .into_iter()
            .filter(|r| r["Type"] == "A" && r["Name"] == format!("{name}."))
            .collect();
        assert_eq!(records.len(), 2, "{context}");
        for record in &records {
            let ip = record["ResourceRecords"][0]["Value"].as_str().unwrap();
            assert!(
                checks.iter().any(|c| c["Id"] == record["HealthCheckId"]
                    && c["HealthCheckConfig"]["IPAddress"] == ip),
                "{context}: {ip}'s record carries its own check: {record}"
            );
        }
        let context = format!("alarm gate {round}");
        tally.until_done(&context, &state, || {
            verify(
                &env,
                &[
                    "--alarm-prefix",
                    "green-",
                    "--alarm-window",
                    "200ms",
                    "--alarm-interval",
                    "50ms",
                ],
            )
        });
    }
    tally.report("verify-health", &proxy);
}

/// Kill and resume: `verify-health route53 ensure` killed just after each
/// AWS call of a whole run and at random, a new record group each round; the
/// retry finds a check the killed run made by its CallerReference instead of
/// making another: one check per member, each on its own record, and a state
/// file that validates.
#[test]
fn route53_ensure_killed_at_every_call_and_at_random_resumes_without_duplicate_checks() {
    use crate::kill_resume::{campaign, run_and_kill};
    let moto = Moto::start().unwrap();
    let zone = aws_cli::create_zone(&moto, "example.com");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let mut env = moto.env();
    env.extend(state_in(dir.path()));
    let mut round = 0;
    campaign("verify-health", 6, |at| {
        round += 1;
        let (name, _, [east_member, west_member]) = two_regions(&moto, &zone, "example.com", round);
        let args = [
            "route53",
            "ensure",
            "--zone-id",
            &zone,
            "--record-name",
            &name,
            "--member",
            &east_member,
            "--member",
            &west_member,
            "--type",
            "http",
        ];
        let command = || {
            let mut cmd = step("verify-health", &env);
            cmd.args(args);
            cmd
        };
        let ran = run_and_kill(command(), &state, at);
        moto.wait_idle();
        let out = run(&mut command());
        let context = format!("round {round} ({at:?})");
        assert_eq!(out.code, 0, "{context}: {}{}", out.stdout, out.stderr);
        assert!(state_validates(&state), "{context}");
        let listed = aws(&moto, &["route53", "list-health-checks"]);
        let checks = listed["HealthChecks"].as_array().unwrap();
        for record in aws_cli::records(&moto, &zone)
            .iter()
            .filter(|r| r["Type"] == "A" && r["Name"] == format!("{name}."))
        {
            let ip = record["ResourceRecords"][0]["Value"].as_str().unwrap();
            let mine: Vec<&Value> = checks
                .iter()
                .filter(|c| c["HealthCheckConfig"]["IPAddress"] == ip)
                .collect();
            assert_eq!(mine.len(), 1, "{context}: one check for {ip}: {mine:?}");
            assert_eq!(record["HealthCheckId"], mine[0]["Id"], "{context}");
        }
        ran
    });
}

#[test]
fn a_replaced_route53_health_check_is_deleted_unless_switchyard_did_not_create_it() {
    let moto = Moto::start().unwrap();
    let zone = aws_cli::create_zone(&moto, "example.net");
    let name = "svc.example.net";
    aws_cli::create_weighted(
        &moto,
        &zone,
        name,
        &[
            ("us-east", 50, "52.94.236.1"),
            ("eu-west", 50, "54.239.28.1"),
        ],
        60,
    );
    let dir = tempfile::tempdir().unwrap();
    let mut env = moto.env();
    env.extend(state_in(dir.path()));
    let ensure = |threshold: &str, extra: &[&str]| {
        let mut args = vec![
            "route53",
            "ensure",
            "--zone-id",
            &zone,
            "--record-name",
            name,
            "--member",
            "us-east=http://52.94.236.1:8080/health",
            "--member",
            "eu-west=http://54.239.28.1:8080/health",
            "--failure-threshold",
            threshold,
        ];
        args.extend_from_slice(extra);
        verify(&env, &args)
    };
    let ids = || -> Vec<String> {
        let mut ids: Vec<String> = aws(&moto, &["route53", "list-health-checks"])["HealthChecks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["Id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let out = ensure("2", &["--output", "json"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let first = ids();
    assert_eq!(first.len(), 2);

    // A dry run with another threshold lists the checks it would delete.
    let out = ensure("3", &["--dry-run"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    for old in &first {
        assert!(
            out.stdout
                .contains(&format!("would delete health check {old}")),
            "{}",
            out.stdout
        );
    }
    assert_eq!(ids(), first, "a dry run deletes nothing");

    // The real run replaces both and deletes the old ones once the records use the new ones.
    let out = ensure("3", &["--output", "json"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["replaced_deleted"] == true && c["replaced"].is_string()));
    let second = ids();
    assert_eq!(second.len(), 2, "the old checks are gone: {second:?}");
    assert!(second.iter().all(|id| !first.contains(id)));
    for record in aws_cli::records(&moto, &zone)
        .iter()
        .filter(|r| r["Type"] == "A")
    {
        assert!(second
            .iter()
            .any(|id| record["HealthCheckId"] == id.as_str()));
    }
    let doc = read_json(&dir.path().join("state.json"));
    let deleted: Vec<&Value> = doc["journal"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["changes"].as_array().unwrap().iter())
        .filter(|c| c["after"] == "deleted")
        .collect();
    assert_eq!(deleted.len(), 2, "{doc}");

    // A check someone else made and put on a record is replaced but kept.
    let manual = aws(
        &moto,
        &[
            "route53",
            "create-health-check",
            "--caller-reference",
            "made-by-hand-1",
            "--health-check-config",
            r#"{"IPAddress":"52.94.236.1","Port":80,"Type":"TCP"}"#,
        ],
    )["HealthCheck"]["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    aws_cli::change(
        &moto,
        &zone,
        &json!([{"Action": "UPSERT", "ResourceRecordSet": {
            "Name": name, "Type": "A", "SetIdentifier": "us-east", "Weight": 50, "TTL": 60,
            "HealthCheckId": manual, "ResourceRecords": [{"Value": "52.94.236.1"}]}}]),
    );
    let out = ensure("3", &["--output", "json"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["checks"][0]["replaced"], manual.as_str());
    assert!(report["checks"][0].get("replaced_deleted").is_none());
    assert!(ids().contains(&manual), "not switchyard's: kept");
}
