//! The cloud-init user-data that makes every host a launch template starts
//! join the fleet at boot and leave it at shutdown.
//!
//! The document is `#cloud-config` with two `write_files` entries and two
//! `runcmd` lines; nothing is downloaded or installed (the image must carry
//! the `register-host` executable):
//! - a bash script that runs `register-host join` or `register-host leave`
//!   with this service's flags;
//! - a systemd unit, oneshot with `RemainAfterExit`, whose `ExecStart` joins
//!   and whose `ExecStop` leaves. Ordered after the network (and after the
//!   application's own units, `--after`), it is stopped before them at
//!   shutdown, so the host is drained while the application still serves.
//!   Exit 1 of join (registered, not healthy in time) counts as started, so
//!   that leave still runs at shutdown;
//! - with a termination lifecycle hook (`--lifecycle-hook`, `--asg`), a
//!   second unit that runs `register-host watch` from boot: when the group
//!   terminates the instance, the watcher leaves while the hook holds it in
//!   Terminating:Wait and completes the hook. At shutdown the first unit's
//!   leave then finds nothing left to do; it no longer completes the hook,
//!   which by then was completed (or timed out);
//! - `runcmd` enables and starts the units without waiting for them, so that
//!   cloud-init is not held up by the health wait.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::labels::Labels;
use super::registration::{LifecycleHook, TargetGroupArn};
use super::InputError;
use crate::outcome::StepReport;

/// Where the script is written.
pub const SCRIPT_PATH: &str = "/usr/local/lib/switchyard/register-host.sh";
/// The unit's name.
pub const UNIT_NAME: &str = "switchyard-register-host.service";
/// Where the unit is written.
pub const UNIT_PATH: &str = "/etc/systemd/system/switchyard-register-host.service";
/// The watcher unit's name.
pub const WATCH_UNIT_NAME: &str = "switchyard-register-host-watch.service";
/// Where the watcher unit is written.
pub const WATCH_UNIT_PATH: &str = "/etc/systemd/system/switchyard-register-host-watch.service";
/// EC2 takes at most 16 KiB of user-data (before base64).
pub const MAX_USER_DATA: usize = 16 * 1024;
/// Where the image carries the executable, unless `--binary` says otherwise.
pub const DEFAULT_BINARY: &str = "/usr/local/bin/register-host";
/// The host's own state file, unless `--state-file` says otherwise.
pub const DEFAULT_STATE_FILE: &str = "/var/lib/switchyard/state.json";

/// What the hosts join with.
#[derive(Debug, Clone)]
pub struct UserDataSpec {
    /// The service.
    pub service: String,
    /// The labels.
    pub labels: Labels,
    /// The target groups to join.
    pub target_groups: Vec<TargetGroupArn>,
    /// The port to register (default: each group's).
    pub port: Option<u16>,
    /// The `register-host` executable on the image.
    pub binary: String,
    /// The state file on the host.
    pub state_file: String,
    /// Units the application runs as, started before the join and stopped after the leave.
    pub after: Vec<String>,
    /// How long join waits for the host to be healthy.
    pub wait_healthy: Duration,
    /// How long leave may take at shutdown (the drain wait included).
    pub leave_timeout: Duration,
    /// The terminating lifecycle hook whose action leave completes.
    pub lifecycle: Option<LifecycleHook>,
}

/// A generated user-data document.
#[derive(Debug, Clone, Serialize)]
pub struct UserData {
    /// The document.
    pub user_data: String,
    /// Its size in bytes.
    pub bytes: usize,
    /// Its SHA-256, hex: what a state file or a log may hold instead of the body.
    pub sha256: String,
}

impl StepReport for UserData {
    fn text(&self) -> String {
        self.user_data.clone()
    }

    fn outputs(&self) -> Vec<(String, String)> {
        vec![
            ("user-data-sha256".to_owned(), self.sha256.clone()),
            ("user-data-bytes".to_owned(), self.bytes.to_string()),
        ]
    }

    fn summary(&self) -> String {
        format!(
            "### register-host user-data\n\ncloud-init document, {} bytes, sha256 `{}`\n",
            self.bytes, self.sha256
        )
    }
}

/// Checks an absolute path for the host: `/` then letters, digits, `.`, `_`, `-`, `/`.
pub fn check_path(flag: &'static str, value: &str) -> Result<(), InputError> {
    let ok = value.starts_with('/')
        && value.len() > 1
        && !value.ends_with('/')
        && !value.split('/').any(|part| part == "..")
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if ok {
        Ok(())
    } else {
        Err(InputError::Invalid {
            flag,
            value: value.to_owned(),
            why: "is not an absolute file path of letters, digits, '.', '_', '-' and '/'"
                .to_owned(),
        })
    }
}

/// Checks a systemd unit name such as `go-auth.service`.
pub fn check_unit(value: &str) -> Result<(), InputError> {
    const SUFFIXES: [&str; 7] = [
        ".service", ".target", ".socket", ".mount", ".path", ".timer", ".device",
    ];
    let ok = SUFFIXES
        .iter()
        .any(|s| value.len() > s.len() && value.ends_with(s))
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '@' | '-' | '\\'));
    if ok {
        Ok(())
    } else {
        Err(InputError::Invalid {
            flag: "--after",
            value: value.to_owned(),
            why: "is not a systemd unit name (e.g. go-auth.service)".to_owned(),
        })
    }
}

/// A shell word that stays one word: single-quoted.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

fn seconds(d: Duration) -> u64 {
    d.as_secs().max(1)
}

/// A command line broken over lines: `exec "$bin" WORDS \` ...
fn command(words: &[String]) -> String {
    let mut text = String::from("    exec \"$bin\"");
    for (i, word) in words.iter().enumerate() {
        if i == 0 {
            let _ = write!(text, " {word}");
        } else {
            let _ = write!(text, " \\\n      {word}");
        }
    }
    text
}

fn script(spec: &UserDataSpec) -> String {
    let mut targets = Vec::new();
    for group in &spec.target_groups {
        targets.push(format!("--target-group {}", quote(group.as_str())));
    }
    if let Some(port) = spec.port {
        targets.push(format!("--port {port}"));
    }
    let mut join = vec![
        "join".to_owned(),
        format!("--service {}", quote(&spec.service)),
    ];
    for (k, v) in spec.labels.iter() {
        join.push(format!("--label {}", quote(&format!("{k}={v}"))));
    }
    join.extend(targets.iter().cloned());
    join.push(format!("--wait-healthy {}s", seconds(spec.wait_healthy)));
    join.push(format!("--timeout {}s", seconds(spec.wait_healthy) + 30));
    let mut leave = vec!["leave".to_owned()];
    leave.extend(targets.iter().cloned());
    leave.push(format!("--timeout {}s", seconds(spec.leave_timeout)));
    let watch = spec.lifecycle.as_ref().map(|hook| {
        let mut watch = vec!["watch".to_owned()];
        watch.extend(targets.iter().cloned());
        watch.push(format!("--lifecycle-hook {}", quote(&hook.hook)));
        watch.push(format!("--asg {}", quote(&hook.group)));
        watch.push(format!("--timeout {}s", seconds(spec.leave_timeout)));
        format!("  watch)\n{}\n    ;;\n", command(&watch))
    });
    format!(
        r#"#!/bin/bash
# switchyard register-host: this host joins the fleet of {service} at boot and
# leaves it at shutdown. Written by cloud-init; run by {UNIT_NAME}.
set -euo pipefail

bin={binary}
if [ ! -x "$bin" ]; then
  echo "switchyard: $bin is missing or not executable; bake it into the image" >&2
  exit 2
fi
export SWITCHYARD_STATE={state}
mkdir -p "$(dirname "$SWITCHYARD_STATE")"

case "${{1:-}}" in
  join)
{join}
    ;;
  leave)
{leave}
    ;;
{watch}  *)
    echo "usage: $0 {usage}" >&2
    exit 2
    ;;
esac
"#,
        service = spec.service,
        binary = quote(&spec.binary),
        state = quote(&spec.state_file),
        join = command(&join),
        leave = command(&leave),
        usage = if watch.is_some() {
            "join|leave|watch"
        } else {
            "join|leave"
        },
        watch = watch.as_deref().unwrap_or_default(),
    )
}

fn watch_unit(spec: &UserDataSpec) -> String {
    let mut after = String::from("network-online.target");
    for u in &spec.after {
        let _ = write!(after, " {u}");
    }
    format!(
        "[Unit]
Description=switchyard: this {service} host leaves the fleet before its Auto Scaling group terminates it
Wants=network-online.target
After={after}

[Service]
Type=simple
ExecStart={SCRIPT_PATH} watch
Restart=on-failure
RestartSec=5
# 130: stopped (SIGTERM) while watching, e.g. at a reboot.
SuccessExitStatus=130
TimeoutStopSec=30

[Install]
WantedBy=multi-user.target
",
        service = spec.service,
    )
}

fn unit(spec: &UserDataSpec) -> String {
    let mut after = String::from("network-online.target");
    for u in &spec.after {
        let _ = write!(after, " {u}");
    }
    let wants = if spec.after.is_empty() {
        String::new()
    } else {
        format!("Wants={}\n", spec.after.join(" "))
    };
    format!(
        "[Unit]
Description=switchyard: this {service} host joins the fleet at boot and leaves it at shutdown
Wants=network-online.target
{wants}After={after}

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={SCRIPT_PATH} join
ExecStop={SCRIPT_PATH} leave
# Exit 1 is registered but not healthy in time: the host is in its target
# groups, so the unit counts as started and leave still runs at shutdown.
SuccessExitStatus=1
TimeoutStartSec={start}
TimeoutStopSec={stop}

[Install]
WantedBy=multi-user.target
",
        service = spec.service,
        start = seconds(spec.wait_healthy) + 60,
        stop = seconds(spec.leave_timeout) + 30,
    )
}

/// Indents every non-empty line by `by` spaces, for a YAML block scalar.
fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    let mut out = String::with_capacity(text.len() + text.lines().count() * by);
    for line in text.lines() {
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Renders the cloud-init document. Fails over EC2's 16 KiB limit.
pub fn render(spec: &UserDataSpec) -> Result<UserData, InputError> {
    if let Some(hook) = &spec.lifecycle {
        for (flag, value) in [("--lifecycle-hook", &hook.hook), ("--asg", &hook.group)] {
            if value.chars().any(char::is_control) {
                return Err(InputError::Invalid {
                    flag,
                    value: value.clone(),
                    why: "holds a control character".to_owned(),
                });
            }
        }
    }
    let mut doc = String::new();
    let _ = write!(
        doc,
        "#cloud-config
# switchyard register-host user-data for service {service}: at every boot
# systemd runs `register-host join`, at shutdown `register-host leave`
# (deregister, then wait until drained). Nothing is downloaded: the image
# must carry {binary}.
write_files:
  - path: {SCRIPT_PATH}
    owner: 'root:root'
    permissions: '0755'
    content: |
{script}  - path: {UNIT_PATH}
    owner: 'root:root'
    permissions: '0644'
    content: |
{unit}{watcher}runcmd:
  - systemctl daemon-reload
  - systemctl enable --now --no-block {UNIT_NAME}{watch_name}
",
        service = spec.service,
        binary = spec.binary,
        script = indent(&script(spec), 6),
        unit = indent(&unit(spec), 6),
        watcher = if spec.lifecycle.is_some() {
            format!(
                "  - path: {WATCH_UNIT_PATH}
    owner: 'root:root'
    permissions: '0644'
    content: |
{}",
                indent(&watch_unit(spec), 6)
            )
        } else {
            String::new()
        },
        watch_name = if spec.lifecycle.is_some() {
            format!(" {WATCH_UNIT_NAME}")
        } else {
            String::new()
        },
    );
    let bytes = doc.len();
    if bytes > MAX_USER_DATA {
        return Err(InputError::UserDataTooLarge {
            size: bytes,
            limit: MAX_USER_DATA,
        });
    }
    let sha256 = format!("{:x}", Sha256::digest(doc.as_bytes()));
    Ok(UserData {
        user_data: doc,
        bytes,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> UserDataSpec {
        UserDataSpec {
            service: "go-auth".into(),
            labels: Labels::parse(&["provider=aws".into(), "region=us-east-1".into()]).unwrap(),
            target_groups: vec![TargetGroupArn::parse(
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/go-auth-blue/50dc6c495c0c9188",
            )
            .unwrap()],
            port: Some(9000),
            binary: DEFAULT_BINARY.into(),
            state_file: DEFAULT_STATE_FILE.into(),
            after: vec!["go-auth.service".into()],
            wait_healthy: Duration::from_secs(300),
            leave_timeout: Duration::from_secs(600),
            lifecycle: Some(LifecycleHook {
                hook: "drain".into(),
                group: "go-auth-green".into(),
            }),
        }
    }

    #[test]
    fn the_document_joins_at_boot_and_leaves_at_shutdown() {
        let out = render(&spec()).unwrap();
        let doc = &out.user_data;
        assert!(doc.starts_with("#cloud-config\n"));
        assert_eq!(out.bytes, doc.len());
        assert_eq!(out.sha256.len(), 64);
        for needle in [
            "      ExecStart=/usr/local/lib/switchyard/register-host.sh join\n",
            "      ExecStop=/usr/local/lib/switchyard/register-host.sh leave\n",
            "      After=network-online.target go-auth.service\n",
            "      Wants=go-auth.service\n",
            "      TimeoutStopSec=630\n",
            "      --label 'region=us-east-1' \\\n",
            "      --port 9000 \\\n",
            "      --lifecycle-hook 'drain' \\\n",
            "      --asg 'go-auth-green' \\\n",
            "      ExecStart=/usr/local/lib/switchyard/register-host.sh watch\n",
            "  - path: /etc/systemd/system/switchyard-register-host-watch.service\n",
            "      --wait-healthy 300s \\\n",
            "  - systemctl enable --now --no-block switchyard-register-host.service switchyard-register-host-watch.service\n",
        ] {
            assert!(doc.contains(needle), "{needle:?} not in\n{doc}");
        }
        // Nothing is fetched from outside.
        for word in [
            "curl",
            "wget",
            "apt-get",
            "yum ",
            "pip ",
            "packages:",
            "http://",
            "https://",
        ] {
            assert!(!doc.contains(word), "{word} in\n{doc}");
        }
        // The watcher completes the hook; the leave at shutdown does not.
        let leave = &doc[doc.find("  leave)").unwrap()..doc.find("  watch)").unwrap()];
        assert!(!leave.contains("--lifecycle-hook"), "{leave}");
        // Without a hook there is no watcher.
        let mut plain = spec();
        plain.lifecycle = None;
        let doc = render(&plain).unwrap().user_data;
        assert!(!doc.contains("watch"), "{doc}");
        assert!(doc.contains("echo \"usage: $0 join|leave\""), "{doc}");
    }

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn paths_units_and_size_are_checked() {
        assert!(check_path("--binary", "/usr/local/bin/register-host").is_ok());
        assert!(check_path("--binary", "register-host").is_err());
        assert!(check_path("--binary", "/opt/../etc/x").is_err());
        assert!(check_path("--state-file", "/var/lib/x y").is_err());
        assert!(check_unit("go-auth.service").is_ok());
        assert!(check_unit("docker.socket").is_ok());
        assert!(check_unit("go-auth").is_err());
        assert!(check_unit("a b.service").is_err());
        let mut big = spec();
        let labels: Vec<String> = (0..200)
            .map(|i| format!("label-{i}={}", "v".repeat(100)))
            .collect();
        big.labels = Labels::parse(&labels).unwrap();
        assert!(matches!(
            render(&big),
            Err(InputError::UserDataTooLarge { limit: 16384, .. })
        ));
    }
}
