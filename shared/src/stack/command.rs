//! The `command` driver: any orchestrator (docker compose, kubectl, nomad,
//! rancher-compose) driven through three command templates.
//!
//! - `up` brings the stack up, e.g. `docker compose -p go-auth-{color} up -d`;
//! - `down` takes it down, e.g. `docker compose -p go-auth-{color} down`;
//! - `endpoints` (optional) prints where the stack serves, after `up`: one URL
//!   or `host:port` a line (blank lines and `#` comments skipped), or one JSON
//!   array of strings. Each must be an `http(s)` URL with a host, or
//!   `host:port`; anything else fails the step with the offending line named
//!   ([`StackError::Command`], exit 3: `up` has run by then).
//!
//! # Templates
//!
//! A template may use the fields of [`StackSpec::template_fields`]:
//! `{service}`, `{color}`, `{version}`, `{image}`, `{region}`. Each value is
//! substituted as ONE single-quoted shell word, so a version such as
//! `1.2; rm -rf /` stays a harmless argument: write `--tag {version}`, not
//! `--tag "{version}"` (the quotes would become part of the value). An
//! unknown field (`{colour}`) is bad input, found by
//! [`CommandDriver::new`] before anything runs. `{{` and `}}` are literal
//! braces; `${VAR}` and braces around anything that is not a plain name
//! (`{"a": 1}`, `{a,b}`) are left to the shell untouched.
//!
//! # Running
//!
//! Each command runs as `sh -c '<rendered>'` in its own process group, with
//! the step's environment plus `SWITCHYARD_SERVICE`, `SWITCHYARD_COLOR`,
//! `SWITCHYARD_VERSION`, `SWITCHYARD_IMAGE` and `SWITCHYARD_REGION` (the same
//! values, for templates that prefer `"$SWITCHYARD_VERSION"`). Its stderr
//! (and the stdout of `up`/`down`) is echoed to the step's stderr line by
//! line. A non-zero exit fails with [`StackError::Command`] carrying the last
//! [`STDERR_TAIL_LINES`] lines of stderr (exit 3). At the deadline, or on
//! SIGINT/SIGTERM, the whole process group gets SIGTERM, then SIGKILL after
//! [`KILL_GRACE`] ([`StackError::Timeout`], exit 3, or
//! [`StackError::Interrupted`], exit 130). A command that leaves a daemon
//! behind holding its output open (`service &`) is not waited on: once `sh`
//! has exited, its output is read for [`OUTPUT_GRACE`] more at most.
//!
//! # Idempotence
//!
//! Idempotence is the orchestrator's business: `docker compose up -d`,
//! `kubectl apply` and `nomad job run` change nothing when run twice with the
//! same input. This driver cannot see what a command changed, so
//! [`StackStatus::changed`] is `true` whenever a command ran.
//!
//! # Wiring (for the deploy-standby step)
//!
//! ```text
//! let driver = CommandDriver::new(&CommandTemplates { up, down, endpoints })?; // Invalid -> exit 2
//! driver.plan(&spec).await?            // --dry-run: the rendered commands, in order
//! let status = driver.up(&spec, &wait).await?;
//! stack::record(&mut doc, &spec, &status, driver.kind());
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::time::Instant;

use super::{StackDriver, StackError, StackSpec, StackStatus, Wait};
use crate::wait::progress::short;

/// Lines of a failed command's stderr shown in the error.
pub const STDERR_TAIL_LINES: usize = 20;

/// Time between SIGTERM and SIGKILL when a command is stopped.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// How long output is still read after `sh` exited (a daemon it started may
/// hold the pipes open for ever).
pub const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// Largest `endpoints` output kept, in bytes.
const MAX_STDOUT: usize = 1 << 20;

/// The three command templates, as given on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandTemplates {
    /// Brings the stack up (`--up`). Required.
    pub up: String,
    /// Takes it down (`--down`). Without it, `down` is refused as bad input.
    pub down: Option<String>,
    /// Prints the endpoints after `up` (`--endpoints`). Without it the stack
    /// has no endpoints in the state (verify-health then needs `--url`).
    pub endpoints: Option<String>,
}

/// A parsed template: literal text and fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(String),
}

/// The field names a template may use.
pub const FIELDS: [&str; 5] = ["service", "color", "version", "image", "region"];

impl Template {
    /// Parses `source`; `what` names it in messages (`--up`).
    pub fn parse(what: &str, source: &str) -> Result<Self, StackError> {
        if source.trim().is_empty() {
            return Err(StackError::Invalid(format!("{what} is empty")));
        }
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = source;
        while let Some(c) = rest.chars().next() {
            if rest.starts_with("{{") || rest.starts_with("}}") {
                text.push(c);
                rest = &rest[2..];
                continue;
            }
            if c == '{' && !text.ends_with('$') {
                if let Some(end) = rest.find('}') {
                    let name = &rest[1..end];
                    if is_name(name) {
                        if !FIELDS.contains(&name) {
                            return Err(StackError::Invalid(format!(
                                "{what} uses an unknown field {{{name}}}; known: {}",
                                FIELDS.map(|p| format!("{{{p}}}")).join(" ")
                            )));
                        }
                        if !text.is_empty() {
                            parts.push(Part::Text(std::mem::take(&mut text)));
                        }
                        parts.push(Part::Field(name.to_owned()));
                        rest = &rest[end + 1..];
                        continue;
                    }
                }
            }
            text.push(c);
            rest = &rest[c.len_utf8()..];
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// The template as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The command with every field replaced by its shell-quoted value.
    pub fn render(&self, values: &BTreeMap<&'static str, String>) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                Part::Field(name) => {
                    shell_quote(values.get(name.as_str()).map_or("", String::as_str))
                }
            })
            .collect()
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `value` as one POSIX shell word: single-quoted, with `'` written `'\''`.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The command driver.
#[derive(Debug, Clone)]
pub struct CommandDriver {
    up: Template,
    down: Option<Template>,
    endpoints: Option<Template>,
    workdir: Option<std::path::PathBuf>,
}

impl CommandDriver {
    /// Checks the templates (unknown fields, empty commands): bad input
    /// is [`StackError::Invalid`] before anything runs.
    pub fn new(templates: &CommandTemplates) -> Result<Self, StackError> {
        Ok(Self {
            up: Template::parse("--up", &templates.up)?,
            down: templates
                .down
                .as_deref()
                .map(|t| Template::parse("--down", t))
                .transpose()?,
            endpoints: templates
                .endpoints
                .as_deref()
                .map(|t| Template::parse("--endpoints", t))
                .transpose()?,
            workdir: None,
        })
    }

    /// Runs the commands in `dir` instead of the step's working folder.
    #[must_use]
    pub fn in_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.workdir = Some(dir.into());
        self
    }

    /// Runs the `endpoints` command and returns the validated endpoints
    /// (empty when there is no `endpoints` template).
    pub async fn endpoints(
        &self,
        spec: &StackSpec,
        wait: &Wait,
    ) -> Result<Vec<String>, StackError> {
        let Some(template) = &self.endpoints else {
            return Ok(Vec::new());
        };
        let command = template.render(&spec.template_fields());
        let out = self.run("endpoints", &command, spec, wait, false).await?;
        // `up` has run by now: bad output is a failed command (exit 3), not bad input.
        let bad = |why: String| StackError::Command {
            command: format!("endpoints command `{command}`"),
            status: "exit status 0".to_owned(),
            stderr_tail: why,
        };
        let endpoints = parse_endpoints(&out)
            .map_err(|e| bad(format!("its output is not a list of endpoints: {e}")))?;
        if endpoints.is_empty() {
            return Err(bad("it printed no endpoints".to_owned()));
        }
        Ok(endpoints)
    }

    async fn run(
        &self,
        what: &str,
        command: &str,
        spec: &StackSpec,
        wait: &Wait,
        echo_stdout: bool,
    ) -> Result<String, StackError> {
        tracing::info!("running {what} command: {command}");
        let started = Instant::now();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        for (name, value) in spec.template_fields() {
            cmd.env(format!("SWITCHYARD_{}", name.to_ascii_uppercase()), value);
        }
        if let Some(dir) = &self.workdir {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().map_err(|e| StackError::Command {
            command: command.to_owned(),
            status: "not started".to_owned(),
            stderr_tail: format!("cannot run sh: {e}"),
        })?;
        let pgid = child.id();
        let stdout = child
            .stdout
            .take()
            .map(|s| tokio::spawn(read_lines(s, echo_stdout.then_some("out"), usize::MAX)));
        let stderr = child
            .stderr
            .take()
            .map(|s| tokio::spawn(read_lines(s, Some("err"), STDERR_TAIL_LINES)));
        let status = tokio::select! {
            status = child.wait() => status.map_err(|e| StackError::Command {
                command: command.to_owned(),
                status: "unknown".to_owned(),
                stderr_tail: format!("cannot wait for sh: {e}"),
            })?,
            () = tokio::time::sleep_until(wait.deadline) => {
                stop_group(pgid, &mut child).await;
                return Err(StackError::Timeout(format!(
                    "{what} command `{command}` still ran at the deadline after {}; its processes were stopped",
                    short(started.elapsed())
                )));
            }
            () = wait.cancel.cancelled() => {
                stop_group(pgid, &mut child).await;
                return Err(StackError::Interrupted(format!(
                    "interrupted while the {what} command `{command}` ran; its processes were stopped"
                )));
            }
        };
        let stdout = collect(stdout).await;
        let stderr = collect(stderr).await;
        tracing::info!(
            "{what} command ended with {status} after {}",
            short(started.elapsed())
        );
        if !status.success() {
            let status = match status.code() {
                Some(code) => format!("exit status {code}"),
                None => "a signal".to_owned(),
            };
            let tail = if stderr.lines.is_empty() {
                "(no stderr output)".to_owned()
            } else {
                format!(
                    "\n{}",
                    stderr.lines.into_iter().collect::<Vec<_>>().join("\n")
                )
            };
            return Err(StackError::Command {
                command: format!("{what} command `{command}`"),
                status,
                stderr_tail: tail,
            });
        }
        Ok(stdout.lines.into_iter().collect::<Vec<_>>().join("\n"))
    }
}

impl StackDriver for CommandDriver {
    fn kind(&self) -> &'static str {
        "command"
    }

    fn name_of(&self, spec: &StackSpec) -> String {
        format!("{}-{}", spec.service, spec.color)
    }

    /// The commands cannot tell.
    async fn capacity(&self, _: &StackSpec) -> Result<Option<u32>, StackError> {
        Ok(None)
    }

    /// The orchestrator sizes the stack.
    fn capacity_from(&self, _: &str) -> Self {
        self.clone()
    }

    async fn plan(&self, spec: &StackSpec) -> Result<Vec<String>, StackError> {
        let values = spec.template_fields();
        let mut plan = vec![format!("run up command: {}", self.up.render(&values))];
        if let Some(t) = &self.endpoints {
            plan.push(format!(
                "run endpoints command: {} (its output becomes stack {}'s endpoints)",
                t.render(&values),
                spec.color
            ));
        }
        Ok(plan)
    }

    async fn plan_down(&self, spec: &StackSpec) -> Result<Vec<String>, StackError> {
        Ok(vec![format!(
            "run the down command for {} {}",
            spec.service, spec.color
        )])
    }

    async fn up(&self, spec: &StackSpec, wait: &Wait) -> Result<StackStatus, StackError> {
        let command = self.up.render(&spec.template_fields());
        self.run("up", &command, spec, wait, true).await?;
        let mut changes = vec![format!("ran up command: {command}")];
        let endpoints = self.endpoints(spec, wait).await?;
        if let Some(t) = &self.endpoints {
            changes.push(format!(
                "read {} endpoint(s) with: {}",
                endpoints.len(),
                t.render(&spec.template_fields())
            ));
        }
        Ok(StackStatus {
            endpoints,
            ids: Vec::new(),
            changed: true,
            changes,
            detail: BTreeMap::from([("up".to_owned(), self.up.source().to_owned())]),
        })
    }

    async fn down(&self, spec: &StackSpec, wait: &Wait) -> Result<StackStatus, StackError> {
        let Some(template) = &self.down else {
            return Err(StackError::Invalid(
                "the command driver needs --down to take a stack down".to_owned(),
            ));
        };
        let command = template.render(&spec.template_fields());
        self.run("down", &command, spec, wait, true).await?;
        Ok(StackStatus {
            endpoints: Vec::new(),
            ids: Vec::new(),
            changed: true,
            changes: vec![format!("ran down command: {command}")],
            detail: BTreeMap::from([("down".to_owned(), template.source().to_owned())]),
        })
    }
}

/// Lines read from a command's output: the last `keep` of them.
#[derive(Debug, Default)]
struct Lines {
    lines: VecDeque<String>,
}

async fn read_lines<R: AsyncRead + Unpin>(stream: R, echo: Option<&str>, keep: usize) -> Lines {
    let mut reader = BufReader::new(stream).lines();
    let mut out = Lines::default();
    let mut bytes = 0;
    while let Ok(Some(line)) = reader.next_line().await {
        if let Some(tag) = echo {
            eprintln!("  {tag}| {line}");
        }
        bytes += line.len() + 1;
        if keep == usize::MAX && bytes > MAX_STDOUT {
            continue;
        }
        out.lines.push_back(line);
        if out.lines.len() > keep {
            out.lines.pop_front();
        }
    }
    out
}

/// What a reader got, waiting at most [`OUTPUT_GRACE`] for the pipe to close.
async fn collect(task: Option<tokio::task::JoinHandle<Lines>>) -> Lines {
    let Some(mut task) = task else {
        return Lines::default();
    };
    if let Ok(Ok(lines)) = tokio::time::timeout(OUTPUT_GRACE, &mut task).await {
        lines
    } else {
        // A daemon the command started keeps the pipe open: stop reading.
        task.abort();
        Lines::default()
    }
}

/// SIGTERM to the command's process group, SIGKILL after [`KILL_GRACE`].
async fn stop_group(pgid: Option<u32>, child: &mut tokio::process::Child) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    let Some(pgid) = pgid.and_then(|p| i32::try_from(p).ok()) else {
        let _ = child.kill().await;
        return;
    };
    let group = Pid::from_raw(pgid);
    let _ = killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(KILL_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    } else {
        // sh is gone; anything it left in the group gets the same grace.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = killpg(group, Signal::SIGKILL);
    }
}

/// Parses what an `endpoints` command printed: one endpoint a line (blank
/// lines and `#` comments skipped) or a JSON array of strings. Every
/// endpoint must be an `http(s)` URL with a host, or `host:port`.
pub fn parse_endpoints(text: &str) -> Result<Vec<String>, String> {
    let trimmed = text.trim();
    let items: Vec<String> = if trimmed.starts_with('[') {
        let value: serde_json::Value = serde_json::from_str(trimmed)
            .map_err(|e| format!("output starts with `[` but is not a JSON array: {e}"))?;
        value
            .as_array()
            .ok_or("output is JSON but not an array")?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("JSON array item {v} is not a string"))
            })
            .collect::<Result<_, _>>()?
    } else {
        trimmed
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    let bad: Vec<String> = items
        .iter()
        .filter_map(|e| check_endpoint(e).err())
        .collect();
    if !bad.is_empty() {
        return Err(bad.join("; "));
    }
    let mut seen = std::collections::BTreeSet::new();
    Ok(items
        .into_iter()
        .filter(|e| seen.insert(e.clone()))
        .collect())
}

/// Whether `endpoint` is an `http(s)` URL with a host, or `host:port`.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let shown: String = endpoint.chars().take(120).collect();
    if endpoint.contains("://") {
        let url =
            reqwest::Url::parse(endpoint).map_err(|e| format!("{shown:?} is not a URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(format!("{shown:?} is not an http(s) URL with a host"));
        }
        return Ok(());
    }
    let (host, port) = endpoint
        .rsplit_once(':')
        .ok_or_else(|| format!("{shown:?} is neither a URL nor host:port"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = !host.is_empty()
        && (host.parse::<std::net::IpAddr>().is_ok()
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'));
    if !port_ok || !host_ok {
        return Err(format!("{shown:?} is neither a URL nor host:port"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    fn spec(version: &str) -> StackSpec {
        StackSpec {
            service: "go-auth".into(),
            color: "green".into(),
            version: version.into(),
            image: Some("registry/go-auth:1".into()),
            region: "local".into(),
        }
    }

    fn wait(secs: u64) -> Wait {
        Wait {
            deadline: Instant::now() + Duration::from_secs(secs),
            cancel: CancellationToken::new(),
        }
    }

    fn driver(up: &str, down: Option<&str>, endpoints: Option<&str>) -> CommandDriver {
        CommandDriver::new(&CommandTemplates {
            up: up.into(),
            down: down.map(Into::into),
            endpoints: endpoints.map(Into::into),
        })
        .unwrap()
    }

    #[test]
    fn templates_render_quoted_values() {
        let t = Template::parse(
            "--up",
            "docker compose -p {service}-{color} up -d --tag {version} ${HOME} {{x}} {\"a\": 1}",
        )
        .unwrap();
        assert_eq!(
            t.render(&spec("1.2; rm -rf /").template_fields()),
            "docker compose -p 'go-auth'-'green' up -d --tag '1.2; rm -rf /' ${HOME} {x} {\"a\": 1}"
        );
        let t = Template::parse("--up", "echo {version}").unwrap();
        assert_eq!(t.render(&spec("it's").template_fields()), r"echo 'it'\''s'");
    }

    #[test]
    fn unknown_fields_and_empty_templates_are_bad_input() {
        let err = CommandDriver::new(&CommandTemplates {
            up: "deploy {colour}".into(),
            ..CommandTemplates::default()
        })
        .unwrap_err();
        assert!(matches!(err, StackError::Invalid(_)));
        assert!(err.to_string().contains("unknown field {colour}"), "{err}");
        let err = CommandDriver::new(&CommandTemplates {
            up: "ok".into(),
            endpoints: Some("  ".into()),
            ..CommandTemplates::default()
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "--endpoints is empty");
    }

    #[test]
    fn endpoints_are_lines_or_a_json_array_and_garbage_is_named() {
        assert_eq!(
            parse_endpoints(
                "http://127.0.0.1:8080\n\n# comment\n10.0.0.2:80\nhttp://127.0.0.1:8080\n"
            )
            .unwrap(),
            vec!["http://127.0.0.1:8080", "10.0.0.2:80"]
        );
        assert_eq!(
            parse_endpoints(r#"["https://lb.example.com/health", "[::1]:9000"]"#).unwrap(),
            vec!["https://lb.example.com/health", "[::1]:9000"]
        );
        let err = parse_endpoints("Creating network go-auth_default\nhttp://ok:1").unwrap_err();
        assert!(
            err.contains("\"Creating network go-auth_default\" is neither"),
            "{err}"
        );
        assert!(parse_endpoints("ftp://x/").is_err());
        assert!(parse_endpoints("host:0").is_err());
        assert!(parse_endpoints("[1, 2]")
            .unwrap_err()
            .contains("not a string"));
        assert!(parse_endpoints("[oops")
            .unwrap_err()
            .contains("not a JSON array"));
    }

    #[tokio::test]
    async fn plan_lists_the_rendered_commands() {
        let d = driver("up {color}", Some("down {color}"), Some("list {color}"));
        assert_eq!(
            d.plan(&spec("2")).await.unwrap(),
            vec![
                "run up command: up 'green'",
                "run endpoints command: list 'green' (its output becomes stack green's endpoints)"
            ]
        );
    }

    #[tokio::test]
    async fn up_runs_with_env_and_reads_endpoints() {
        let dir = tempfile::tempdir().unwrap();
        let d = driver(
            "echo \"$SWITCHYARD_VERSION $SWITCHYARD_COLOR\" > up.txt; echo {version} >> up.txt",
            Some("rm up.txt"),
            Some("printf '[\"http://127.0.0.1:1/\", \"127.0.0.1:2\"]'"),
        )
        .in_dir(dir.path());
        let status = d.up(&spec("1.2; touch pwned"), &wait(10)).await.unwrap();
        assert_eq!(status.endpoints, vec!["http://127.0.0.1:1/", "127.0.0.1:2"]);
        let written = std::fs::read_to_string(dir.path().join("up.txt")).unwrap();
        assert_eq!(written, "1.2; touch pwned green\n1.2; touch pwned\n");
        assert!(!dir.path().join("pwned").exists());
        d.down(&spec("1"), &wait(10)).await.unwrap();
        assert!(!dir.path().join("up.txt").exists());
    }

    #[tokio::test]
    async fn a_failing_command_shows_the_tail_of_its_stderr() {
        let d = driver(
            "for i in $(seq 1 30); do echo line$i >&2; done; exit 3",
            None,
            None,
        );
        let err = d.up(&spec("1"), &wait(10)).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("exit status 3"), "{text}");
        assert!(text.contains("line30") && text.contains("line11"), "{text}");
        assert!(!text.contains("line10\n"), "{text}");
        assert!(matches!(err, StackError::Command { .. }));
        let err = d.down(&spec("1"), &wait(10)).await.unwrap_err();
        assert!(matches!(err, StackError::Invalid(_)), "{err}");
    }

    #[tokio::test]
    async fn garbage_endpoints_fail_clearly() {
        let d = driver(
            "true",
            None,
            Some("echo 'Starting...'; echo 127.0.0.1:8080"),
        );
        let err = d.up(&spec("1"), &wait(10)).await.unwrap_err();
        assert!(matches!(err, StackError::Command { .. }), "{err}");
        assert!(
            err.to_string().contains("\"Starting...\" is neither"),
            "{err}"
        );
        let d = driver("true", None, Some("true"));
        let err = d.up(&spec("1"), &wait(10)).await.unwrap_err();
        assert!(err.to_string().contains("printed no endpoints"), "{err}");
    }

    /// Whether `pid` runs (a zombie left for a non-reaping init does not).
    fn running(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
            .unwrap_or(false)
    }

    #[tokio::test]
    async fn the_deadline_kills_the_process_group() {
        let dir = tempfile::tempdir().unwrap();
        // A child of sh that would outlive sh if only sh were killed.
        let d = driver("sleep 30 & echo $! > child.pid; wait", None, None).in_dir(dir.path());
        let w = Wait {
            deadline: Instant::now() + Duration::from_millis(700),
            cancel: CancellationToken::new(),
        };
        let started = std::time::Instant::now();
        let err = d.up(&spec("1"), &w).await.unwrap_err();
        assert!(matches!(err, StackError::Timeout(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid: i32 = std::fs::read_to_string(dir.path().join("child.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!running(pid), "the sleep child survived");
    }

    #[tokio::test]
    async fn cancel_interrupts_and_a_left_daemon_is_not_waited_on() {
        let cancel = CancellationToken::new();
        let w = Wait {
            deadline: Instant::now() + Duration::from_secs(30),
            cancel: cancel.clone(),
        };
        let d = driver("sleep 30", None, None);
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            c.cancel();
        });
        let err = d.up(&spec("1"), &w).await.unwrap_err();
        assert!(matches!(err, StackError::Interrupted(_)), "{err}");

        // `sleep 5 &` keeps stdout open; up returns long before it ends.
        let d = driver("sleep 5 & echo started", None, None);
        let started = std::time::Instant::now();
        d.up(&spec("1"), &wait(10)).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
