//! Completions and man pages as `make dist` makes them: each built step
//! answers `--generate KIND [DIR]` from its own clap definition.

use switchyard_tests::steps::{run, step, EXECUTABLES};

#[test]
fn bash_completion_of_shift_weight_offers_its_flags() {
    let out = run(step("shift-weight", &[]).args(["--generate", "bash"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    for flag in [
        "--steps",
        "--rollback",
        "--gate-url",
        "--state",
        "--dry-run",
    ] {
        assert!(out.stdout.contains(flag), "bash completion lacks {flag}");
    }
    // Routers are a value enum: the completion offers them.
    assert!(out.stdout.contains("route53"));
}

#[test]
fn every_step_writes_completions_for_three_shells_and_man_pages() {
    let dir = tempfile::tempdir().unwrap();
    for name in EXECUTABLES {
        for kind in ["bash", "zsh", "fish", "man"] {
            let target = dir.path().join(kind);
            let out = run(step(name, &[]).arg("--generate").arg(kind).arg(&target));
            assert_eq!(out.code, 0, "{name} {kind}: {}", out.stderr);
            assert!(
                !out.stdout.trim().is_empty(),
                "{name} {kind} listed no file"
            );
            for path in out.stdout.lines() {
                let meta = std::fs::metadata(path).unwrap();
                assert!(meta.len() > 100, "{path} is nearly empty");
            }
        }
        assert!(dir.path().join(format!("bash/{name}.bash")).is_file());
        assert!(dir.path().join(format!("zsh/_{name}")).is_file());
        assert!(dir.path().join(format!("fish/{name}.fish")).is_file());
        assert!(dir.path().join(format!("man/{name}.1")).is_file());
    }
    // Subcommands get their own pages.
    for page in [
        "register-host-join.1",
        "verify-health-route53-ensure.1",
        "switchyard-lock.1",
    ] {
        assert!(dir.path().join("man").join(page).is_file(), "no {page}");
    }
}

#[test]
fn man_page_renders_with_groff() {
    if std::process::Command::new("groff")
        .arg("-v")
        .output()
        .is_err()
    {
        eprintln!("groff is not installed; checking the roff source only");
    }
    let out = run(step("shift-weight", &[]).args(["--generate", "man"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains(".TH shift-weight 1"), "{}", out.stdout);
    assert!(out.stdout.contains(".SH \"EXIT STATUS\""));
    let Ok(mut groff) = std::process::Command::new("groff")
        .args(["-man", "-Tutf8", "-P-cbou", "-ww"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        return;
    };
    std::io::Write::write_all(&mut groff.stdin.take().unwrap(), out.stdout.as_bytes()).unwrap();
    let rendered = groff.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&rendered.stdout);
    let warnings = String::from_utf8_lossy(&rendered.stderr);
    assert!(rendered.status.success(), "{warnings}");
    assert!(warnings.trim().is_empty(), "groff warned: {warnings}");
    // Formatted text, not roff: section headings and the flag in plain words.
    assert!(text.contains("NAME"), "{text}");
    assert!(text.contains("--steps"), "{text}");
    assert!(text.contains("EXIT STATUS"));
    assert!(!text.contains(".SH"));
}

#[test]
fn a_bad_request_exits_2_and_says_what_is_expected() {
    let out = run(step("verify-health", &[]).args(["--generate", "powershell"]));
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("expected one of bash, zsh, fish, man"),
        "{}",
        out.stderr
    );
    // The flag only counts first: later it is an ordinary (unknown) argument for clap.
    let out = run(step("shift-weight", &[]).args(["--rollback", "--generate", "bash"]));
    assert_eq!(out.code, 2);
    assert!(!out.stdout.contains("complete -F"));
}
