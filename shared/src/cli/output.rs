//! A step's result: text or one JSON object on stdout, and in GitHub Actions
//! also step outputs (`GITHUB_OUTPUT`) and a markdown summary (`GITHUB_STEP_SUMMARY`).

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use super::args::OutputFormat;
use super::exit::Code;

/// What a step reports when it is done.
pub trait StepReport: Serialize {
    /// Lines for people.
    fn text(&self) -> String;
    /// `name=value` pairs for the CI system (GitHub step outputs).
    fn outputs(&self) -> Vec<(String, String)>;
    /// A short markdown summary.
    fn summary(&self) -> String;
}

/// Prints the report on stdout in the asked format, and writes the GitHub
/// Actions outputs and summary when running there.
pub fn emit<R: StepReport>(format: OutputFormat, report: &R) {
    match format {
        OutputFormat::Text => print!("{}", ensure_newline(report.text())),
        OutputFormat::Json => match serde_json::to_value(report) {
            Ok(serde_json::Value::Object(fields)) => {
                let mut object = serde_json::Map::with_capacity(fields.len() + 1);
                object.insert("ok".into(), true.into());
                object.extend(fields);
                println!("{}", serde_json::Value::Object(object));
            }
            Ok(other) => println!("{other}"),
            Err(e) => tracing::error!("cannot encode the result as JSON: {e}"),
        },
    }
    if let Some(path) = env_path("GITHUB_OUTPUT") {
        append(&path, &github_outputs(&report.outputs()));
    }
    if let Some(path) = env_path("GITHUB_STEP_SUMMARY") {
        append(&path, &ensure_newline(report.summary()));
    }
}

/// In GitHub Actions, records a failed step in its outputs and summary.
pub fn github_failure(step: &str, code: Code, message: &str) {
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
