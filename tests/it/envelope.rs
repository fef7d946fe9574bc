//! Every mode of every executable answers `--output json` with exactly one
//! JSON document on stdout, the same envelope whatever the end: `"ok": true`
//! and the report's fields on success; `"ok": false`, `step`, `exit_code`
//! and `error` on failure, with the report's fields when the step got as far
//! as a report (an unhealthy verdict, a held lock, a refused retire).

use std::path::Path;

use serde_json::Value;
use switchyard_tests::steps::{run, step};
use switchyard_tests::{HealthServer, Moto};

use switchyard_tests::aws_cli;

const NAME: &str = "app.example.com";

/// deploy-standby bringing green up through the command driver.
const UP: &[&str] = &[
    "--driver",
    "command",
    "--service",
    "web",
    "--color",
    "green",
    "--app-version",
    "1",
    "--up",
    "true",
    "--endpoints",
    "echo 127.0.0.1:9",
];

/// One mode of one executable, and the exit code it must end with here
/// (`None`: whatever the emulator makes of it; the envelope is checked anyway).
struct Mode {
    step: &'static str,
    args: Vec<String>,
    code: Option<i32>,
}

fn mode(step: &'static str, args: &[&str], code: Option<i32>) -> Mode {
    Mode {
        step,
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        code,
    }
}

/// Checks that `stdout` is one envelope matching the exit `code`.
fn check_envelope(what: &str, code: i32, stdout: &str, stderr: &str) -> Value {
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: stdout is not one JSON document:\n{stdout}\nstderr:\n{stderr}"
    );
    let doc: Value = serde_json::from_str(lines[0])
        .unwrap_or_else(|e| panic!("{what}: stdout is not JSON ({e}):\n{stdout}"));
    assert!(doc.is_object(), "{what}: not an object: {doc}");
    assert_eq!(
        doc["ok"],
        Value::Bool(code == 0),
        "{what} (exit {code}): {doc}"
    );
    if code != 0 {
        assert_eq!(doc["exit_code"], Value::from(code), "{what}: {doc}");
        assert!(
            doc["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: no error: {doc}"
        );
        assert!(doc["step"].is_string(), "{what}: no step: {doc}");
    }
    doc
}

#[test]
fn every_mode_of_every_executable_answers_json_with_the_envelope() {
    let moto = Moto::start().expect("moto_server starts");
    let zone = aws_cli::create_zone(&moto, "example.com");
    aws_cli::create_weighted(
        &moto,
        &zone,
        NAME,
        &[("blue", 100, "10.0.0.1"), ("green", 0, "10.0.0.2")],
        1,
    );
    let healthy = HealthServer::start(None, None).expect("a health endpoint");
    let dir = tempfile::tempdir().expect("a temp dir");
    let state = dir.path().join("switchyard-state.json");
    let routes = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/routes.json");
    let routes = routes.display().to_string();
    let url = healthy.url();
    let route = ["--zone-id", zone.as_str(), "--record-name", NAME];
    // A mode naming the route: `head`, the route's flags, then `tail`.
    let on_route = |step, head: &[&str], tail: &[&str], code| Mode {
        step,
        args: head
            .iter()
            .chain(&route)
            .chain(tail)
            .map(|a| (*a).to_owned())
            .collect(),
        code,
    };

    let modes = vec![
        // shift-weight: dry run, shift, rollback, and one refused.
        on_route(
            "shift-weight",
            &[],
            &["--to", "green", "--weight", "50", "--force", "--dry-run"],
            Some(0),
        ),
        on_route(
            "shift-weight",
            &[],
            &["--to", "green", "--weight", "50", "--force"],
            Some(0),
        ),
        on_route("shift-weight", &[], &["--rollback"], Some(0)),
        on_route(
            "shift-weight",
            &[],
            &["--to", "green", "--weight", "50"],
            Some(5),
        ),
        // switchyard: lock status and release, history, state validate, routes.
        on_route("switchyard", &["lock", "status"], &[], Some(0)),
        on_route("switchyard", &["lock", "release"], &[], Some(0)),
        mode("switchyard", &["history"], Some(0)),
        mode("switchyard", &["state", "validate"], Some(0)),
        mode(
            "switchyard",
            &["state", "validate", "/nonexistent/state.json"],
            Some(2),
        ),
        mode(
            "switchyard",
            &["route", "check", "--spec", &routes],
            Some(0),
        ),
        mode("switchyard", &["route", "plan", "--spec", &routes], None),
        mode(
            "switchyard",
            &["route", "apply", "--spec", &routes, "--dry-run"],
            None,
        ),
        // verify-health: healthy, unhealthy, dry run, Route53 health checks.
        mode(
            "verify-health",
            &[
                "--url",
                &url,
                "--attempts",
                "1",
                "--successes",
                "1",
                "--failures",
                "1",
            ],
            Some(0),
        ),
        mode(
            "verify-health",
            &[
                "--url",
                "http://127.0.0.1:9/health",
                "--attempts",
                "1",
                "--successes",
                "1",
                "--failures",
                "1",
                "--interval",
                "0s",
            ],
            Some(1),
        ),
        mode("verify-health", &["--url", &url, "--dry-run"], Some(0)),
        on_route(
            "verify-health",
            &["route53", "ensure"],
            &["--member", "blue=http://52.94.236.10/", "--dry-run"],
            Some(0),
        ),
        on_route("verify-health", &["route53", "status"], &[], None),
        // register-host: user-data, list, join and leave of a host off AWS.
        mode("register-host", &["user-data", "--service", "web"], Some(0)),
        mode("register-host", &["list", "--service", "web"], Some(0)),
        mode(
            "register-host",
            &[
                "join",
                "--service",
                "web",
                "--provider",
                "hetzner",
                "--host-id",
                "h1",
                "--address",
                "10.0.0.7",
                "--no-wait",
            ],
            Some(0),
        ),
        mode(
            "register-host",
            &[
                "leave",
                "--provider",
                "hetzner",
                "--host-id",
                "h1",
                "--address",
                "10.0.0.7",
            ],
            Some(0),
        ),
        // deploy-standby: up (and its dry run), retire refused, the rolling modes.
        mode("deploy-standby", &[UP, &["--dry-run"]].concat(), Some(0)),
        mode("deploy-standby", UP, Some(0)),
        mode(
            "deploy-standby",
            &[
                "retire",
                "--driver",
                "command",
                "--service",
                "web",
                "--down",
                "true",
            ],
            Some(5),
        ),
        mode(
            "deploy-standby",
            &[
                "--strategy",
                "rolling",
                "--group",
                "web-blue",
                "--app-version",
                "2",
                "--dry-run",
            ],
            None,
        ),
        mode(
            "deploy-standby",
            &["--confirm", "--service", "web", "--color", "blue"],
            Some(5),
        ),
        mode(
            "deploy-standby",
            &["--rollback", "--service", "web", "--color", "blue"],
            None,
        ),
        // bake-ami: a bake's dry run, and the sweep's.
        mode(
            "bake-ami",
            &[
                "--service",
                "web",
                "--app-version",
                "1",
                "--source-ami",
                "ami-0123456789abcdef0",
                "--dry-run",
            ],
            None,
        ),
        mode(
            "bake-ami",
            &["sweep", "--older-than", "0s", "--dry-run"],
            Some(0),
        ),
    ];

    let mut env = moto.env();
    env.push(("SWITCHYARD_STATE".into(), state.display().to_string()));
    env.push(("SWITCHYARD_TIMEOUT".into(), "60s".into()));
    for m in modes {
        let what = format!("{} {}", m.step, m.args.join(" "));
        let mut cmd = step(m.step, &env);
        cmd.args(&m.args).args(["--output", "json"]);
        let out = run(&mut cmd);
        if let Some(code) = m.code {
            assert_eq!(
                out.code, code,
                "{what}\nstdout:\n{}\nstderr:\n{}",
                out.stdout, out.stderr
            );
        }
        let doc = check_envelope(&what, out.code, &out.stdout, &out.stderr);
        if m.step == "verify-health" && m.args[0] == "--url" && out.code == 1 {
            // The verdict travels in the envelope: one document, not two.
            assert_eq!(doc["verdict"], "unhealthy", "{what}: {doc}");
        }
    }
}
