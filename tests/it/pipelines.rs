//! The pipeline files stay wired to the real steps: every input a composite
//! action maps to a `SWITCHYARD_*` variable is one the step reads, and an
//! action's scripts install the steps and run one with its outputs in
//! `GITHUB_OUTPUT`, as a GitHub runner would. The Jenkinsfile, the workflow
//! and pipelines/Makefile run one release, the same steps in the same order
//! ([`invocations`]), so the Makefile's real run stands for all three.

mod invocations;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use switchyard_tests::steps::{bin_dir, run, EXECUTABLES};
use switchyard_tests::HealthServer;

use crate::fixture::repo;
use invocations::Release;

/// Every `[env: SWITCHYARD_X=]` of a step and its subcommands.
fn env_vars_of(name: &str, path: &[&str]) -> BTreeSet<String> {
    let out = run(Command::new(bin_dir().join(name)).args(path).arg("--help"));
    assert_eq!(out.code, 0, "{name} {path:?}: {}", out.stderr);
    let mut vars: BTreeSet<String> = out
        .stdout
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split('=').next())
        .map(str::to_owned)
        .collect();
    let subcommands: Vec<String> = out
        .stdout
        .split("Commands:")
        .nth(1)
        .map(|block| {
            block
                .lines()
                .skip(1)
                .take_while(|l| l.starts_with("  "))
                .filter(|l| !l.starts_with("   "))
                .filter_map(|l| l.split_whitespace().next())
                .filter(|s| *s != "help")
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    for sub in &subcommands {
        let mut deeper = path.to_vec();
        deeper.push(sub);
        vars.extend(env_vars_of(name, &deeper));
    }
    vars
}

#[test]
fn every_action_input_is_a_variable_its_step_reads() {
    let mut checked = 0;
    for step in EXECUTABLES {
        if !bin_dir().join(step).exists() {
            continue; // a step that is not built here yet
        }
        let known = env_vars_of(step, &[]);
        let action = std::fs::read_to_string(
            repo().join(format!("pipelines/github/actions/{step}/action.yml")),
        )
        .unwrap();
        for line in action.lines() {
            let Some(rest) = line.trim().strip_prefix("SWITCHYARD_IN_") else {
                continue;
            };
            let name = format!("SWITCHYARD_{}", rest.split(':').next().unwrap());
            checked += 1;
            assert!(
                known.contains(&name),
                "{step}'s action sets {name}, which {step} does not read ({known:?})"
            );
        }
    }
    assert!(checked > 40, "only {checked} inputs checked");
}

#[test]
fn the_verify_health_action_installs_runs_and_exposes_outputs() {
    let server = HealthServer::start(None, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let setup = repo().join("pipelines/github/actions/setup");
    let github_path = dir.path().join("github_path");
    let github_output = dir.path().join("github_output");

    // The setup step, with bin-dir: the executables go on the job's PATH.
    let out = run(Command::new("bash")
        .arg(setup.join("install.sh"))
        .env("SWITCHYARD_BIN_DIR", bin_dir())
        .env("SWITCHYARD_RELEASE", "v0.1.0")
        .env("GITHUB_PATH", &github_path));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let added = std::fs::read_to_string(&github_path).unwrap();
    let added = PathBuf::from(added.trim());
    assert!(added.join("verify-health").is_file(), "{}", added.display());

    // The run step: inputs as SWITCHYARD_IN_*, empty ones not passed on.
    let path = format!(
        "{}:{}",
        added.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let state = dir.path().join("switchyard-state.json");
    let out = run(Command::new("bash")
        .arg(setup.join("run-step.sh"))
        .arg("verify-health")
        .env_clear()
        .env("PATH", path)
        .env("HOME", dir.path())
        .env("GITHUB_OUTPUT", &github_output)
        .env("SWITCHYARD_IN_URLS", server.url())
        .env("SWITCHYARD_IN_STATE", &state)
        .env("SWITCHYARD_IN_INTERVAL", "50ms")
        .env("SWITCHYARD_IN_STACK", "")
        .env("SWITCHYARD_IN_ALARMS", "")
        .env("SWITCHYARD_IN_DRY_RUN", "")
        .env("SWITCHYARD_ARGS", "--successes 1  --attempts 3"));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("$ verify-health --successes 1 --attempts 3"),
        "{}",
        out.stderr
    );
    let outputs = std::fs::read_to_string(&github_output).unwrap();
    assert!(outputs.contains("verdict=healthy\n"), "{outputs}");
    assert!(outputs.contains("healthy=1\n"), "{outputs}");
    assert!(outputs.contains("total=1\n"), "{outputs}");
    assert_eq!(server.served(), 1);

    // A failing endpoint: the step's exit code and error reach the outputs.
    drop(server);
    let failed = run(Command::new("bash")
        .arg(setup.join("run-step.sh"))
        .arg(added.join("verify-health"))
        .env("GITHUB_OUTPUT", &github_output)
        .env("SWITCHYARD_IN_URLS", "http://127.0.0.1:1/health")
        .env("SWITCHYARD_IN_STATE", &state)
        .env("SWITCHYARD_IN_INTERVAL", "50ms")
        .env("SWITCHYARD_ARGS", "--attempts 2 --connect-timeout 200ms"));
    assert_eq!(failed.code, 1, "{}{}", failed.stdout, failed.stderr);
    let outputs = std::fs::read_to_string(&github_output).unwrap();
    assert!(outputs.contains("verdict=unhealthy\n"), "{outputs}");
    assert!(outputs.contains("exit-code=1\n"), "{outputs}");
}

/// `make -n release` in `dir`: the commands the chain would run.
fn make_plan(dir: &Path, extra: &[&str]) -> String {
    let out = run(Command::new("make")
        .arg("-f")
        .arg(repo().join("pipelines/Makefile"))
        .arg("-C")
        .arg(dir)
        .args(["--no-print-directory", "-n", "release", "VERSION=1.4.2"])
        .args(extra));
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout
}

#[test]
fn the_make_chain_runs_every_stage_in_order_and_resumes_after_the_last_done() {
    let dir = tempfile::tempdir().unwrap();
    let plan = make_plan(dir.path(), &["GATE_URL=https://green.example.com/health"]);
    let order = [
        "bake-ami --source-name",
        "deploy-standby --driver asg",
        "verify-health --via target-health --stack standby",
        "--steps 10,50 --gate-url https://green.example.com/health",
        "CONFIRM",
        "--steps 100",
        "verify-health --via target-health --stack active",
        "retire --retire-after 15m --gate-url https://green.example.com/health",
        "switchyard history",
    ];
    let mut at = 0;
    for step in order {
        let found = plan[at..]
            .find(step)
            .unwrap_or_else(|| panic!("{step} not after byte {at} in:\n{plan}"));
        at += found + step.len();
    }

    // The first three stages are done: their files exist, oldest first.
    let stage = dir.path().join(".stage/go-auth-1.4.2");
    std::fs::create_dir_all(&stage).unwrap();
    for name in ["baked", "deployed", "verified"] {
        std::fs::write(stage.join(name), "{}").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let plan = make_plan(dir.path(), &[]);
    assert!(!plan.contains("bake-ami"), "{plan}");
    assert!(
        !plan
            .lines()
            .any(|l| l.trim() == "deploy-standby --driver asg"),
        "{plan}"
    );
    assert!(plan.contains("--steps 10,50"), "{plan}");
    assert!(
        plan.contains("deploy-standby --driver asg retire"),
        "{plan}"
    );

    // A finished release does nothing but show the history.
    for name in ["canary", "confirmed", "promoted", "retired"] {
        std::fs::write(stage.join(name), "{}").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let plan = make_plan(dir.path(), &[]);
    assert_eq!(plan.trim(), "switchyard history");
}

/// Stand-ins for the six executables: each logs its arguments and the state
/// it was given, `switchyard state stack` names green, and the invocation
/// that contains the text in `$FAKE_FAIL_ONCE`'s file fails once.
fn fake_executables(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = r#"#!/usr/bin/env bash
set -u
echo "$(basename "$0") $* | state=${SWITCHYARD_STATE-unset} zone=${SWITCHYARD_ZONE_ID-unset}" >>"$FAKE_LOG"
if [[ -e $FAKE_FAIL_ONCE && "$(basename "$0") $*" == *"$(cat "$FAKE_FAIL_ONCE")"* ]]; then
  rm "$FAKE_FAIL_ONCE"; echo "failing once" >&2; exit 1
fi
if [[ $(basename "$0") == switchyard && ${1-} == state ]]; then echo green; fi
"#;
    for name in EXECUTABLES {
        let path = bin.join(name);
        std::fs::write(&path, script).unwrap();
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&path, perms).unwrap();
    }
    bin
}

#[test]
fn the_make_chain_keeps_an_s3_state_and_resumes_after_a_failed_stage() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let bin = fake_executables(dir.path());
    let log = dir.path().join("calls.log");
    let fail_once = dir.path().join("fail-once");
    std::fs::write(&fail_once, "--steps 100").unwrap();
    let release = || {
        run(Command::new("make")
            .arg("-f")
            .arg(repo().join("pipelines/Makefile"))
            .arg("-C")
            .arg(&work)
            .arg("--no-print-directory")
            .arg("release")
            .arg("VERSION=2.0.0")
            .arg(format!("BIN={}", bin.display()))
            .args([
                "STATE_URL=s3://deploy-state/go-auth.json",
                "CONFIRM=yes",
                "SKIP_BAKE=yes",
                "DRIVER=command",
                "RETIRE_AFTER=2s",
                "CANARY_STEPS=25,50",
                "DEPLOY_FLAGS=--up 'start {color}' --down 'stop {color}'",
                "SHIFT_FLAGS=--router haproxy --backend app",
                "VERIFY_FLAGS=--interval 100ms",
                "RETIRE_FLAGS=--check-every 1s",
            ])
            .env("FAKE_LOG", &log)
            .env("FAKE_FAIL_ONCE", &fail_once))
    };

    // The promotion fails (exit 1: nothing moved): the stages before it are done.
    let first = release();
    assert_ne!(first.code, 0, "{}{}", first.stdout, first.stderr);
    let calls = std::fs::read_to_string(&log).unwrap();
    let expected_first = [
        "deploy-standby --driver command --up start {color} --down stop {color}",
        "verify-health --via probes --interval 100ms --stack standby --junit .stage/go-auth-2.0.0/verify-health.xml",
        "switchyard state stack --role standby",
        "shift-weight --router haproxy --backend app --to green --steps 25,50",
        "switchyard state stack --role standby",
        "shift-weight --router haproxy --backend app --to green --steps 100",
    ];
    let args: Vec<&str> = calls
        .lines()
        .map(|l| l.split(" | ").next().unwrap())
        .collect();
    assert_eq!(args, expected_first, "{calls}");
    for line in calls.lines() {
        assert!(
            line.ends_with("| state=s3://deploy-state/go-auth.json zone=unset"),
            "{line}"
        );
    }
    let stage = work.join(".stage/go-auth-2.0.0");
    for done in ["baked", "deployed", "verified", "canary", "confirmed"] {
        assert!(stage.join(done).is_file(), "{done} is not marked done");
    }
    for not_done in ["promoted", "retired", "switchyard-state.json"] {
        assert!(!stage.join(not_done).exists(), "{not_done} exists");
    }
    let mark = std::fs::read_to_string(stage.join("canary")).unwrap();
    assert!(mark.contains("s3://deploy-state/go-auth.json"), "{mark}");

    // Run again: it continues with the promotion, and retires after waiting.
    std::fs::remove_file(&log).unwrap();
    let second = release();
    assert_eq!(second.code, 0, "{}{}", second.stdout, second.stderr);
    let calls = std::fs::read_to_string(&log).unwrap();
    let args: Vec<&str> = calls
        .lines()
        .map(|l| l.split(" | ").next().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "switchyard state stack --role standby",
            "shift-weight --router haproxy --backend app --to green --steps 100",
            "verify-health --via probes --interval 100ms --stack active --junit .stage/go-auth-2.0.0/verify-health-promoted.xml",
            "deploy-standby --driver command --up start {color} --down stop {color} retire --retire-after 2s --check-every 1s",
            "switchyard history",
        ],
        "{calls}"
    );
    assert!(stage.join("retired").is_file());
}

/// The release every shipped pipeline runs, as [`invocations`] reads it
/// (with a gate URL given and the other parameters at their defaults).
const THE_RELEASE: &str = "\
release:
  bake-ami
  deploy-standby --driver asg
  verify-health --stack standby --junit
  shift-weight --to <the standby stack> --steps 10,50 --gate-url
  shift-weight --to <the standby stack> --steps 100 --gate-url
  verify-health --stack active --junit
  deploy-standby retire --driver asg --retire-after 15m --gate-url
  switchyard history
rollback:
  shift-weight --rollback
";

const GATE: &str = "https://auth.example.com/health";

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn from_makefile(path: &Path) -> Release {
    invocations::makefile(
        path,
        &["VERSION=1.4.2", "CONFIRM=yes", &format!("GATE_URL={GATE}")],
    )
}

fn from_jenkinsfile(src: &str) -> Release {
    invocations::jenkinsfile(src, &[("VERSION", "1.4.2"), ("GATE_URL", GATE)])
}

fn from_workflow(src: &str) -> Release {
    let action = |name: &str| read(&format!("pipelines/github/actions/{name}/action.yml"));
    invocations::workflow(src, &action, &[("version", "1.4.2"), ("gate-url", GATE)])
}

/// A readable diff when `theirs` does not run what `ours` runs.
fn disagreement(ours: (&str, &Release), theirs: (&str, &Release)) -> Option<String> {
    let (a, b) = (ours.1.render(), theirs.1.render());
    (a != b).then(|| {
        similar::TextDiff::from_lines(&a, &b)
            .unified_diff()
            .header(ours.0, theirs.0)
            .to_string()
    })
}

#[test]
fn the_jenkinsfile_the_workflow_and_the_makefile_run_the_same_release() {
    let make = from_makefile(&repo().join("pipelines/Makefile"));
    let jenkins = from_jenkinsfile(&read("Jenkinsfile"));
    let github = from_workflow(&read("pipelines/github/workflows/release.yml"));

    // The Makefile's chain is the one a test runs for real: it is the whole release.
    let mut problems = Vec::new();
    if let Some(diff) = disagreement(
        ("the release", &invocations_of(THE_RELEASE)),
        ("pipelines/Makefile", &make),
    ) {
        problems.push(format!(
            "pipelines/Makefile does not run the release:\n{diff}"
        ));
    }
    for (name, other) in [
        ("Jenkinsfile", &jenkins),
        (
            "pipelines/github/workflows/release.yml (with its actions)",
            &github,
        ),
    ] {
        if let Some(diff) = disagreement(("pipelines/Makefile", &make), (name, other)) {
            problems.push(format!(
                "{name} runs another release than pipelines/Makefile:\n{diff}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// THE_RELEASE parsed back, so that it compares as any pipeline does.
fn invocations_of(rendered: &str) -> Release {
    let mut release = Release::default();
    let mut rollback = false;
    for line in rendered.lines() {
        match line {
            "release:" => rollback = false,
            "rollback:" => rollback = true,
            step => {
                let mut script = step.trim().replace("<the standby stack>", "$S");
                // A presence-only flag stands for any value.
                for flag in ["--junit", "--gate-url"] {
                    script = script.replace(flag, &format!("{flag} x"));
                }
                let src = format!("S=$(switchyard state stack --role standby)\n{script}");
                let mut steps = invocations::shell_steps(&src);
                if rollback {
                    release.rollback.append(&mut steps);
                } else {
                    release.steps.append(&mut steps);
                }
            }
        }
    }
    release
}

#[test]
fn a_dropped_changed_or_reordered_step_is_a_disagreement() {
    let jenkinsfile = read("Jenkinsfile");
    let workflow = read("pipelines/github/workflows/release.yml");
    let makefile = read("pipelines/Makefile");
    let jenkins = from_jenkinsfile(&jenkinsfile);
    let github = from_workflow(&workflow);
    assert!(disagreement(("Jenkinsfile", &jenkins), ("workflow", &github)).is_none());

    // The Jenkinsfile without the check after the promotion.
    let check = "                runStep('verify-health --stack active', verified())\n";
    assert!(jenkinsfile.contains(check));
    let dropped = from_jenkinsfile(&jenkinsfile.replace(check, ""));
    let diff = disagreement(("Jenkinsfile", &jenkins), ("changed", &dropped)).unwrap();
    assert!(
        diff.contains("-  verify-health --stack active --junit"),
        "{diff}"
    );

    // ... with the check before the promotion instead.
    let promote =
        "                runStep('shift-weight --to \"$STANDBY_STACK\" --steps 100', gated())\n";
    assert!(jenkinsfile.contains(promote));
    let reordered = from_jenkinsfile(
        &jenkinsfile
            .replace(check, "")
            .replace(promote, &format!("{check}{promote}")),
    );
    let diff = disagreement(("Jenkinsfile", &jenkins), ("changed", &reordered)).unwrap();
    assert!(
        diff.contains("+  verify-health --stack active --junit"),
        "{diff}"
    );

    // The workflow's canary going straight to 100%.
    let canary = "          steps: ${{ inputs.canary-steps }}\n";
    assert!(workflow.contains(canary));
    let changed = from_workflow(&workflow.replace(canary, "          steps: '100'\n"));
    let diff = disagreement(("workflow", &github), ("changed", &changed)).unwrap();
    assert!(
        diff.contains("+  shift-weight --to <the standby stack> --steps 100 --gate-url"),
        "{diff}"
    );

    // The Makefile retiring without waiting for the gate, and without a rollback target.
    let dir = tempfile::tempdir().unwrap();
    let changed = dir.path().join("Makefile");
    std::fs::write(
        &changed,
        makefile
            .replace(
                "--retire-after $(RETIRE_AFTER)$(GATES)",
                "--retire-after $(RETIRE_AFTER)",
            )
            .replace(
                "rollback:\n\t$(SHIFT_WEIGHT) --rollback\n",
                "rollback:\n\t@echo no\n",
            ),
    )
    .unwrap();
    let make = from_makefile(&repo().join("pipelines/Makefile"));
    let diff = disagreement(("Makefile", &make), ("changed", &from_makefile(&changed))).unwrap();
    assert!(
        diff.contains("+  deploy-standby retire --driver asg --retire-after 15m\n"),
        "{diff}"
    );
    assert!(diff.contains("-  shift-weight --rollback"), "{diff}");
}
