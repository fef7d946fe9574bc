//! The one reporter: how a step's end reaches its caller. stdout carries the
//! result (lines for people, or one JSON object with `--output json`), stderr
//! the error, and in GitHub Actions the step outputs (`GITHUB_OUTPUT`) and a
//! markdown summary (`GITHUB_STEP_SUMMARY`) are written too.
//!
//! Every mode of every executable ends through [`emit`], so `--output json`
//! always prints exactly one document with the same envelope: `"ok": true`
//! and the report's fields on success; `"ok": false`, `step`, `exit_code` and
//! `error` on failure, followed by the report's fields when the step got as
//! far as a report (an unhealthy verdict, a held lock).

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;

use super::{Code, Failure};

/// How a step prints its result on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Lines for people.
    Text,
    /// One JSON object, for programs.
    Json,
}

/// What a step reports when it is done.
pub trait StepReport: Serialize {
    /// Lines for people.
    fn text(&self) -> String;
    /// `name=value` pairs for the CI system (GitHub step outputs).
    fn outputs(&self) -> Vec<(String, String)>;
    /// A short markdown summary.
    fn summary(&self) -> String;
    /// The check this report fails, when it is the evidence of a failed check
    /// (an unhealthy verdict, a held lock, an invalid file): the step then
    /// prints the report and exits with the failure's code.
    fn failure(&self) -> Option<Failure> {
        None
    }
    /// Variables the hooks that run after the step get from its result.
    fn hook_vars(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

/// The report of a dry run, or of any mode whose result is a list of
/// actions: one line each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Whether nothing was changed (a dry run).
    pub dry_run: bool,
    /// The lines, in order.
    pub plan: Vec<String>,
}

impl Plan {
    /// A dry run's plan: nothing was changed.
    pub fn dry_run(lines: Vec<String>) -> Self {
        Self {
            dry_run: true,
            plan: lines,
        }
    }
}

impl StepReport for Plan {
    fn text(&self) -> String {
        self.plan.join("\n")
    }

    fn outputs(&self) -> Vec<(String, String)> {
        vec![("plan".to_owned(), self.plan.join("\n"))]
    }

    fn summary(&self) -> String {
        format!("```\n{}\n```\n", self.plan.join("\n"))
    }
}

/// Declares the report of a command with several modes: an enum with one
/// variant per mode's report, serialized as the variant's report itself,
/// and a [`StepReport`] that answers as the variant does.
#[macro_export]
macro_rules! step_reports {
    ($(#[$meta:meta])* $vis:vis enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident($report:ty)),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Debug, serde::Serialize)]
        #[serde(untagged)]
        $vis enum $name {
            $($(#[$vmeta])* $variant($report)),+
        }

        impl $crate::outcome::StepReport for $name {
            fn text(&self) -> String {
                match self { $(Self::$variant(r) => r.text()),+ }
            }
            fn outputs(&self) -> Vec<(String, String)> {
                match self { $(Self::$variant(r) => r.outputs()),+ }
            }
            fn summary(&self) -> String {
                match self { $(Self::$variant(r) => r.summary()),+ }
            }
            fn failure(&self) -> Option<$crate::outcome::Failure> {
                match self { $(Self::$variant(r) => r.failure()),+ }
            }
            fn hook_vars(&self) -> Vec<(&'static str, String)> {
                match self { $(Self::$variant(r) => r.hook_vars()),+ }
            }
        }

        $(impl From<$report> for $name {
            fn from(report: $report) -> Self {
                Self::$variant(report)
            }
        })+
    };
}

/// Prints a step's end in `format` and returns its exit code: the report (if
/// the step got as far as one) and the failure (if it failed).
pub fn emit<R: StepReport>(
    format: OutputFormat,
    step: &str,
    report: Option<&R>,
    failure: Option<&Failure>,
) -> ExitCode {
    let message = failure.map(Failure::text);
    if let Some(message) = &message {
        eprintln!("error: {message}");
    }
    print!("{}", stdout(format, step, report, failure));
    if let Some(report) = report {
        if let Some(path) = env_path("GITHUB_OUTPUT") {
            append(&path, &github_outputs(&report.outputs()));
        }
        if let Some(path) = env_path("GITHUB_STEP_SUMMARY") {
            append(&path, &ensure_newline(report.summary()));
        }
    }
    match (failure, &message) {
        (Some(failure), Some(message)) => {
            github_failure(step, failure.code, message);
            ExitCode::from(failure.code.number())
        }
        _ => ExitCode::SUCCESS,
    }
}

/// What a step's end puts on stdout: the report's lines, or one JSON envelope.
pub fn stdout<R: StepReport>(
    format: OutputFormat,
    step: &str,
    report: Option<&R>,
    failure: Option<&Failure>,
) -> String {
    match format {
        OutputFormat::Text => report.map(|r| ensure_newline(r.text())).unwrap_or_default(),
        OutputFormat::Json => {
            let mut object = serde_json::Map::new();
            object.insert("ok".into(), failure.is_none().into());
            if let Some(failure) = failure {
                object.insert("step".into(), step.into());
                object.insert("exit_code".into(), failure.code.number().into());
                object.insert("error".into(), failure.text().into());
            }
            match report.map(serde_json::to_value).transpose() {
                Ok(Some(serde_json::Value::Object(fields))) => {
                    for (name, value) in fields {
                        object.entry(name).or_insert(value);
                    }
                }
                Ok(Some(other)) => {
                    object.insert("result".into(), other);
                }
                Ok(None) => {}
                Err(e) => tracing::error!("cannot encode the result as JSON: {e}"),
            }
            ensure_newline(serde_json::Value::Object(object).to_string())
        }
    }
}

/// In GitHub Actions, records a failed step in its outputs and summary.
fn github_failure(step: &str, code: Code, message: &str) {
    if let Some(path) = env_path("GITHUB_OUTPUT") {
        append(
            &path,
            &github_outputs(&[
                ("exit-code".to_owned(), code.number().to_string()),
                ("error".to_owned(), message.to_owned()),
            ]),
        );
    }
    if let Some(path) = env_path("GITHUB_STEP_SUMMARY") {
        append(
            &path,
            &format!("### {step}: failed (exit {})\n\n{message}\n", code.number()),
        );
    }
}

/// The `GITHUB_OUTPUT` encoding: `name=value`, or a heredoc for multi-line values.
pub fn github_outputs(pairs: &[(String, String)]) -> String {
    let mut text = String::new();
    for (name, value) in pairs {
        if value.contains('\n') {
            let mut delimiter = String::from("SWITCHYARD_EOF");
            while value.contains(&delimiter) {
                delimiter.push('_');
            }
            let _ = writeln!(text, "{name}<<{delimiter}\n{value}\n{delimiter}");
        } else {
            let _ = writeln!(text, "{name}={value}");
        }
    }
    text
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn append(path: &PathBuf, text: &str) {
    let result = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = result {
        tracing::warn!("cannot write to {}: {e}", path.display());
    }
}

fn ensure_newline(mut text: String) -> String {
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Verdict {
        stack: &'static str,
        healthy: bool,
    }

    impl StepReport for Verdict {
        fn text(&self) -> String {
            format!(
                "{}: {}",
                self.stack,
                if self.healthy { "healthy" } else { "unhealthy" }
            )
        }
        fn outputs(&self) -> Vec<(String, String)> {
            Vec::new()
        }
        fn summary(&self) -> String {
            String::new()
        }
    }

    #[test]
    fn json_is_one_envelope_whatever_the_end() {
        let report = Verdict {
            stack: "green",
            healthy: false,
        };
        let failure = Failure::message(Code::CheckFailed, "green is unhealthy");
        let json = |report: Option<&Verdict>, failure: Option<&Failure>| {
            stdout(OutputFormat::Json, "verify-health", report, failure)
        };
        insta::assert_snapshot!(json(Some(&report), None), @r#"{"ok":true,"stack":"green","healthy":false}
"#);
        insta::assert_snapshot!(json(Some(&report), Some(&failure)), @r#"{"ok":false,"step":"verify-health","exit_code":1,"error":"green is unhealthy","stack":"green","healthy":false}
"#);
        insta::assert_snapshot!(json(None, Some(&failure)), @r#"{"ok":false,"step":"verify-health","exit_code":1,"error":"green is unhealthy"}
"#);
        for text in [
            json(Some(&report), Some(&failure)),
            json(None, Some(&failure)),
        ] {
            assert_eq!(text.lines().count(), 1, "{text}");
        }
        assert_eq!(
            stdout(
                OutputFormat::Text,
                "verify-health",
                Some(&report),
                Some(&failure)
            ),
            "green: unhealthy\n"
        );
        assert_eq!(
            stdout::<Verdict>(OutputFormat::Text, "x", None, Some(&failure)),
            ""
        );
    }

    #[test]
    fn github_outputs_use_heredocs_for_multiline_values() {
        let text = github_outputs(&[
            ("weights".into(), "blue=0,green=100".into()),
            ("plan".into(), "a\nSWITCHYARD_EOF\nb".into()),
        ]);
        assert_eq!(
            text,
            "weights=blue=0,green=100\nplan<<SWITCHYARD_EOF_\na\nSWITCHYARD_EOF\nb\nSWITCHYARD_EOF_\n"
        );
    }
}
