//! Secrets never leak: the pipeline runs with credentials and a user-data
//! body (deploy-standby's launch template) holding known secret strings, at the most verbose log level (`-vv`:
//! trace, the SDK's own HTTP logging included), writing GitHub outputs and
//! summaries and a JUnit report; then every log line, output, report and the
//! state file are searched for the secrets.

use std::path::{Path, PathBuf};

use switchyard_tests::aws_cli;
use switchyard_tests::steps::{run, step, StepOutput};
use switchyard_tests::{HealthServer, Moto};

use crate::fixture::{base64_decode, World, NAME};

const SECRET_KEY: &str = "sEcReTkEy-9f4c2a71d0b3e8";
const SESSION_TOKEN: &str = "SeSsIoNtOkEn-51be0c7fa2d4";
/// Held in user-data bodies; only their hash may go anywhere.
pub const USER_DATA_SECRET: &str = "DB_PASSWORD=hunter2-c0ffee-7e3d";

/// Everything a pipeline run leaves behind, to be searched.
#[derive(Default)]
pub struct Evidence {
    texts: Vec<(String, String)>,
    files: Vec<PathBuf>,
}

impl Evidence {
    pub fn output(&mut self, what: &str, out: &StepOutput) {
        self.texts
            .push((format!("{what} stdout"), out.stdout.clone()));
        self.texts
            .push((format!("{what} stderr"), out.stderr.clone()));
    }

    pub fn file(&mut self, path: &Path) {
        self.files.push(path.to_owned());
    }

    /// Panics naming every place a secret appears.
    pub fn assert_clean(&self, secrets: &[&str]) {
        let mut found = Vec::new();
        let mut searched = 0;
        let files = self.files.iter().filter_map(|p| {
            std::fs::read(p).ok().map(|b| {
                (
                    p.display().to_string(),
                    String::from_utf8_lossy(&b).into_owned(),
                )
            })
        });
        for (place, text) in self.texts.iter().cloned().chain(files) {
            searched += text.len();
            for secret in secrets {
                if text.contains(secret) {
                    found.push(format!("{secret:?} in {place}"));
                }
            }
        }
        assert!(found.is_empty(), "secrets leaked: {found:#?}");
        assert!(
            searched > 10_000,
            "too little was searched ({searched} bytes)"
        );
    }
}

/// The environment of a step: moto, the secret credentials, GitHub files.
pub fn secret_env(moto: &Moto, state: &Path, dir: &Path) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = moto
        .env()
        .into_iter()
        .filter(|(k, _)| k != "AWS_SECRET_ACCESS_KEY" && k != "AWS_SESSION_TOKEN")
        .collect();
    env.extend(
        [
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_SESSION_TOKEN", SESSION_TOKEN.to_owned()),
            ("SWITCHYARD_STATE", state.display().to_string()),
            (
                "GITHUB_OUTPUT",
                dir.join("github-output").display().to_string(),
            ),
            (
                "GITHUB_STEP_SUMMARY",
                dir.join("github-summary.md").display().to_string(),
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    env
}

#[test]
fn no_secret_reaches_a_log_an_output_a_report_or_the_state() {
    let world = World::blue_green();
    let (moto, zone, name) = (&world.moto, &world.zone, NAME);
    let (dir, state) = (&world.dir, world.state());
    let green = HealthServer::start(None, None).unwrap();
    let junit = dir.path().join("junit.xml");
    let env = secret_env(moto, &state, dir.path());
    let mut evidence = Evidence::default();

    let steps: Vec<(&str, Vec<String>)> = vec![
        (
            "verify-health",
            vec![
                "--stack".into(),
                "green".into(),
                "--url".into(),
                green.url(),
                "--junit".into(),
                junit.display().to_string(),
            ],
        ),
        (
            "shift-weight",
            vec![
                "--zone-id".into(),
                zone.clone(),
                "--record-name".into(),
                name.into(),
                "--to".into(),
                "green".into(),
                "--steps".into(),
                "50,100".into(),
                "--settle".into(),
                "0s".into(),
                "--gate-url".into(),
                green.url(),
                "--gate-successes".into(),
                "1".into(),
                "--gate-interval".into(),
                "50ms".into(),
            ],
        ),
        (
            "switchyard",
            vec![
                "lock".into(),
                "status".into(),
                "--zone-id".into(),
                zone.clone(),
                "--record-name".into(),
                name.into(),
            ],
        ),
        ("switchyard", vec!["history".into()]),
        (
            "shift-weight",
            vec![
                "--zone-id".into(),
                zone.clone(),
                "--record-name".into(),
                name.into(),
                "--rollback".into(),
            ],
        ),
    ];
    for (name, args) in &steps {
        // A shift changes things: run it once; the read-only steps in both formats.
        let formats: &[&str] = if *name == "shift-weight" {
            &["text"]
        } else {
            &["text", "json"]
        };
        for format in formats {
            let mut cmd = step(name, &env);
            cmd.args(args).args(["-vv", "--output", format]);
            let out = run(&mut cmd);
            assert!(
                out.code == 0,
                "{name} {args:?}: exit {}\n{}",
                out.code,
                out.stderr
            );
            evidence.output(&format!("{name} {args:?} --output {format}"), &out);
        }
    }
    // deploy-standby with a user-data body holding a secret: only its hash may
    // reach the state, the logs or the output (the launch template carries it).
    let subnet = aws_cli::aws(moto, &["ec2", "describe-subnets"])["Subnets"][0]["SubnetId"]
        .as_str()
        .unwrap()
        .to_owned();
    let image = aws_cli::aws(moto, &["ec2", "describe-images", "--owners", "amazon"])["Images"][0]
        ["ImageId"]
        .as_str()
        .unwrap()
        .to_owned();
    let user_data = dir.path().join("user-data.sh");
    std::fs::write(
        &user_data,
        format!("#!/bin/bash\nexport {USER_DATA_SECRET}\nexec /opt/app/run\n"),
    )
    .unwrap();
    for format in ["text", "json"] {
        let mut cmd = step("deploy-standby", &env);
        cmd.args([
            "--service",
            "app",
            "--color",
            "green",
            "--release",
            "2",
            "--image",
            &image,
            "--desired",
            "1",
            "--subnet",
            &subnet,
            "--port",
            "8080",
            "--region",
            "us-east-1",
            "--no-scaling",
            "-vv",
            "--output",
            format,
        ])
        .arg("--user-data")
        .arg(&user_data);
        let out = run(&mut cmd);
        assert_eq!(out.code, 0, "deploy-standby: {}", out.stderr);
        evidence.output(&format!("deploy-standby --output {format}"), &out);
    }
    // The body really went where it belongs: the launch template holds it.
    let versions = aws_cli::aws(
        moto,
        &[
            "ec2",
            "describe-launch-template-versions",
            "--launch-template-name",
            "app-green",
        ],
    );
    let encoded = versions["LaunchTemplateVersions"][0]["LaunchTemplateData"]["UserData"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let decoded = base64_decode(&encoded);
    assert!(
        String::from_utf8_lossy(&decoded).contains(USER_DATA_SECRET),
        "the launch template carries the user-data"
    );
    // The trace logs really include the SDK's requests: the search means something.
    let traced = evidence
        .texts
        .iter()
        .any(|(_, t)| t.contains("ChangeResourceRecordSets") || t.contains("rrset"));
    assert!(traced, "the -vv logs show the SDK's calls");
    for f in [
        state.clone(),
        junit,
        dir.path().join("github-output"),
        dir.path().join("github-summary.md"),
    ] {
        assert!(f.exists(), "{} was written", f.display());
        evidence.file(&f);
    }
    evidence.assert_clean(&[SECRET_KEY, SESSION_TOKEN, USER_DATA_SECRET]);
}
