//! The command driver bringing up a real local stack: two instances of
//! pipelines/demo/sample_service.py per color on free loopback ports, started
//! and stopped by the `up` and `down` templates, listed by the `endpoints`
//! template; the stack is written into a state file with `stack::record` and
//! the built `verify-health` executable verifies it from there.

use std::path::Path;
use std::time::Duration;

use switchyard::stack::command::{CommandDriver, CommandTemplates};
use switchyard::stack::{self, StackDriver, StackError, StackSpec};
use switchyard::state::{StateDocument, StateFile};
use switchyard_tests::moto::free_port;
use switchyard_tests::steps::{run, step, StepOutput};

use crate::fixture::{read_json, sample_service, wait, with_state};

/// Templates as a team would write them for its own orchestrator; the ports
/// of each color come from `ports-<color>.env` in the working folder.
fn templates() -> CommandTemplates {
    let svc = sample_service().display().to_string();
    CommandTemplates {
        up: format!(
            "set -e; . ./ports-{{color}}.env; for p in $PORT_A $PORT_B; do \
             python3 {svc} --daemon --port $p --version {{version}} --fail-version=\"$FAIL\" \
             --pid-file {{color}}-$p.pid --log-file {{color}}-$p.log; done"
        ),
        down: Some(format!(
            "for f in {{color}}-*.pid; do [ -e \"$f\" ] && python3 {svc} --stop \"$f\"; done; true"
        )),
        endpoints: Some(
            ". ./ports-{color}.env; for p in $PORT_A $PORT_B; do echo http://127.0.0.1:$p; done"
                .to_owned(),
        ),
    }
}

fn write_ports(dir: &Path, color: &str) -> [u16; 2] {
    let ports = [free_port().unwrap(), free_port().unwrap()];
    std::fs::write(
        dir.join(format!("ports-{color}.env")),
        format!("PORT_A={}\nPORT_B={}\nFAIL=-rc\n", ports[0], ports[1]),
    )
    .unwrap();
    ports
}

fn spec(color: &str, version: &str) -> StackSpec {
    StackSpec {
        service: "go-auth".into(),
        color: color.into(),
        version: version.into(),
        image: None,
        region: "local".into(),
    }
}

fn verify(state: &Path, stack: &str) -> StepOutput {
    let mut cmd = step("verify-health", &with_state(Vec::new(), state));
    cmd.args([
        "--stack",
        stack,
        "--interval",
        "50ms",
        "--probe-timeout",
        "2s",
        "--attempts",
        "4",
    ]);
    run(&mut cmd)
}

fn get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300))
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_stack_comes_up_is_verified_from_the_state_and_goes_down() {
    let dir = tempfile::tempdir().unwrap();
    let green = write_ports(dir.path(), "green");
    let blue = write_ports(dir.path(), "blue");
    let driver = CommandDriver::new(&templates()).unwrap().in_dir(dir.path());
    let state_path = dir.path().join("state.json");
    let state = StateFile::new(&state_path);
    let mut doc = StateDocument::default();

    // A version that would run a command if it were not quoted.
    let version = "1.4.2; touch pwned";
    let green_spec = spec("green", version);
    let status = driver.up(&green_spec, &wait()).await.unwrap();
    assert_eq!(
        status.endpoints,
        green
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
    );
    assert!(!dir.path().join("pwned").exists());
    assert!(get(green[0], "/").contains("sample-service 1.4.2; touch pwned"));
    stack::record(&mut doc, &green_spec, &status, driver.kind());

    // A release candidate whose health fails (the ports file's FAIL pattern).
    let blue_spec = spec("blue", "1.5.0-rc1");
    let status = driver.up(&blue_spec, &wait()).await.unwrap();
    stack::record(&mut doc, &blue_spec, &status, driver.kind());
    state.save(&mut doc).await.unwrap();

    let out = verify(&state_path, "green");
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .starts_with("green: healthy — 2/2 endpoints healthy"),
        "{}",
        out.stdout
    );
    let out = verify(&state_path, "blue");
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with("blue: unhealthy"), "{}", out.stdout);

    let saved = read_json(&state_path);
    assert_eq!(saved["stacks"]["green"]["driver"], "command");
    assert_eq!(saved["stacks"]["green"]["version"], version);
    assert_eq!(
        saved["stacks"]["green"]["endpoints"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(saved["health"]["green"]["status"], "healthy");
    assert_eq!(saved["health"]["blue"]["status"], "unhealthy");

    // Down stops the processes: the ports close and the pid files are gone.
    for (color, ports) in [("green", green), ("blue", blue)] {
        let status = driver.down(&spec(color, version), &wait()).await.unwrap();
        assert_eq!(status.changes.len(), 1);
        for port in ports {
            assert!(!listening(port), "{color} port {port} still listens");
            assert!(!dir.path().join(format!("{color}-{port}.pid")).exists());
        }
    }
    let out = verify(&state_path, "green");
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
}

#[tokio::test]
async fn a_failing_up_shows_the_tail_of_its_stderr_and_a_taken_port_fails_up() {
    let dir = tempfile::tempdir().unwrap();
    let ports = write_ports(dir.path(), "green");
    // The port is taken: the sample service cannot start, up fails with its log.
    let holder = std::net::TcpListener::bind(("127.0.0.1", ports[0])).unwrap();
    let driver = CommandDriver::new(&templates()).unwrap().in_dir(dir.path());
    let err = driver.up(&spec("green", "1.0"), &wait()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StackError::Command { .. }), "{text}");
    assert!(text.contains("exit status 1"), "{text}");
    assert!(text.contains("Address already in use"), "{text}");
    drop(holder);

    let driver = CommandDriver::new(&CommandTemplates {
        up: "echo pulling >&2; echo 'Error: image go-auth:{version} not found' >&2; exit 17".into(),
        ..CommandTemplates::default()
    })
    .unwrap();
    let err = driver.up(&spec("green", "9.9"), &wait()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "up command `echo pulling >&2; echo 'Error: image go-auth:'9.9' not found' >&2; exit 17` \
         exited with exit status 17: \npulling\nError: image go-auth:9.9 not found"
    );
    assert_eq!(
        switchyard::outcome::ExitStatus::exit_code(&err),
        switchyard::outcome::Code::Provider
    );
}
