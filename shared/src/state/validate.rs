//! Checks a state file against the published JSON Schema
//! (`schema/state-v1.schema.json`, generated from the Rust types), and
//! that this build can read it: a guard a pipeline can run before a stage.

use serde::Serialize;
use serde_json::Value;

use super::{StateError, StateFile, StateLocation};
use crate::aws::AwsSettings;
use crate::outcome::{Code, Failure, StepReport};

/// The published schema, as checked in.
pub const PUBLISHED_SCHEMA: &str = include_str!("../../../schema/state-v1.schema.json");

/// The outcome of a validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Validation {
    /// The file checked.
    pub path: String,
    /// Whether it is valid.
    pub valid: bool,
    /// What is wrong, one line per problem (`/pointer: message`).
    pub problems: Vec<String>,
}

/// Validates the state at `location`. Only an unreadable one is an error;
/// every problem with its content is reported in the [`Validation`].
pub async fn validate(
    location: &StateLocation,
    aws: &AwsSettings,
) -> Result<Validation, StateError> {
    let file = StateFile::at(location.clone(), aws.clone());
    let path = location.to_string();
    let Some((bytes, _)) = file.read_bytes().await? else {
        return Err(StateError::Read(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "it does not exist"),
        ));
    };
    let mut problems = Vec::new();
    match serde_json::from_slice::<Value>(&bytes) {
        Err(e) => problems.push(format!("not valid JSON: {e}")),
        Ok(instance) => {
            let schema: Value =
                serde_json::from_str(PUBLISHED_SCHEMA).expect("the published schema is JSON");
            let validator = jsonschema::validator_for(&schema)
                .expect("the published schema is a valid JSON Schema");
            for error in validator.iter_errors(&instance) {
                let at = error.instance_path().to_string();
                problems.push(format!(
                    "{}: {error}",
                    if at.is_empty() { "/" } else { &at }
                ));
            }
            if problems.is_empty() {
                if let Err(e) = super::store::parse(&path, &bytes) {
                    problems.push(e.to_string());
                }
            }
        }
    }
    Ok(Validation {
        path,
        valid: problems.is_empty(),
        problems,
    })
}

impl StepReport for Validation {
    fn text(&self) -> String {
        if self.valid {
            return format!("{}: valid {}\n", self.path, super::document::SCHEMA);
        }
        let mut text = format!("{}: not valid\n", self.path);
        for p in &self.problems {
            text.push_str("  ");
            text.push_str(p);
            text.push('\n');
        }
        text
    }

    fn outputs(&self) -> Vec<(String, String)> {
        vec![("valid".to_owned(), self.valid.to_string())]
    }

    fn summary(&self) -> String {
        format!("### switchyard state validate\n\n```\n{}```\n", self.text())
    }

    fn failure(&self) -> Option<Failure> {
        (!self.valid).then(|| {
            Failure::message(
                Code::CheckFailed,
                format!("{} is not a valid state file", self.path),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Validation {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(&path, text).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime
            .block_on(validate(&path.into(), &AwsSettings::default()))
            .unwrap()
    }

    #[test]
    fn valid_and_invalid_documents() {
        assert!(check(r#"{"schema": "switchyard/state/v1", "journal": []}"#).valid);
        let v =
            check(r#"{"schema": "switchyard/state/v1", "stacks": {"green": {"role": "primary"}}}"#);
        assert!(!v.valid);
        assert!(
            v.problems[0].starts_with("/stacks/green/role: "),
            "{:?}",
            v.problems
        );
        let v = check(r#"{"journal": []}"#);
        assert!(
            !v.valid && v.problems[0].contains("schema"),
            "{:?}",
            v.problems
        );
        let v = check(r#"{"schema": "switchyard/state/v9"}"#);
        assert!(
            !v.valid && v.problems[0].contains("this build reads switchyard/state/v1"),
            "{:?}",
            v.problems
        );
        assert!(!check("{").valid);
    }
}
