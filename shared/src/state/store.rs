//! Reading and writing the state file: version check on read, atomic
//! replacement on write (temp file in the same folder, fsync, rename, fsync of
//! the folder), so a reader never sees a half-written document.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::document::{StateDocument, SCHEMA};

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("state file {path} is not valid JSON: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("state file {path} has no \"schema\" field; is it a switchyard state file?")]
    NoSchema { path: PathBuf },
    #[error(
        "state file {path} is schema {found}; this build reads {expected}. \
         Upgrade switchyard to read it, or point --state at another file"
    )]
    Version {
        path: PathBuf,
        found: String,
        expected: &'static str,
    },
    #[error("state file {path} does not match schema {expected}: {source}")]
    Shape {
        path: PathBuf,
        expected: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write state file {0}")]
    Write(PathBuf, #[source] std::io::Error),
}

impl crate::outcome::ExitStatus for StateError {
    fn exit_code(&self) -> crate::outcome::Code {
        match self {
            Self::Write(..) => crate::outcome::Code::Provider,
            _ => crate::outcome::Code::Usage,
        }
    }
}

/// The state file on disk.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The state file at `path` (it need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the document, or a new empty one when the file does not exist.
    pub fn load(&self) -> Result<StateDocument, StateError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => parse(&self.path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StateDocument::default()),
            Err(e) => Err(StateError::Read(self.path.clone(), e)),
        }
    }

    /// Replaces the file with `doc`, atomically.
    pub fn save(&self, doc: &StateDocument) -> Result<(), StateError> {
        let err = |e| StateError::Write(self.path.clone(), e);
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut bytes = serde_json::to_vec_pretty(doc).map_err(|e| err(e.into()))?;
        bytes.push(b'\n');
        let mut tmp = tempfile::Builder::new()
            .prefix(".switchyard-state.")
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(err)?;
        tmp.write_all(&bytes).map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        tmp.persist(&self.path).map_err(|e| err(e.error))?;
        // The rename is durable only once the folder itself is synced.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Parses a state document, refusing unknown schema versions.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<StateDocument, StateError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|source| StateError::Parse {
        path: path.to_owned(),
        source,
    })?;
    let Some(found) = value.get("schema").and_then(Value::as_str) else {
        return Err(StateError::NoSchema {
            path: path.to_owned(),
        });
    };
    if found != SCHEMA {
        return Err(StateError::Version {
            path: path.to_owned(),
            found: found.to_owned(),
            expected: SCHEMA,
        });
    }
    serde_json::from_value(value).map_err(|source| StateError::Shape {
        path: path.to_owned(),
        expected: SCHEMA,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_reads_as_new_document() {
        let dir = tempfile::tempdir().unwrap();
        let doc = StateFile::new(dir.path().join("s.json")).load().unwrap();
        assert_eq!(doc.schema, SCHEMA);
        assert!(doc.journal.is_empty());
    }

    #[test]
    fn unknown_fields_survive_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("s.json"));
        let text = r#"{
            "schema": "switchyard/state/v1",
            "future_section": {"a": [1, 2]},
            "stacks": {"green": {"role": "standby", "future_field": true}},
            "journal": []
        }"#;
        std::fs::write(file.path(), text).unwrap();
        let mut doc = file.load().unwrap();
        doc.stack_mut("blue").version = Some("1".into());
        file.save(&doc).unwrap();
        let back: Value = serde_json::from_slice(&std::fs::read(file.path()).unwrap()).unwrap();
        assert_eq!(back["future_section"]["a"][1], 2);
        assert_eq!(back["stacks"]["green"]["future_field"], true);
        assert_eq!(back["stacks"]["blue"]["version"], "1");
    }

    #[test]
    fn newer_schema_is_refused_with_a_clear_message() {
        let err = parse(
            Path::new("s.json"),
            br#"{"schema":"switchyard/state/v2","journal":[]}"#,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("switchyard/state/v2"), "{msg}");
        assert!(
            msg.contains("this build reads switchyard/state/v1"),
            "{msg}"
        );
    }

    #[test]
    fn malformed_json_and_missing_schema_are_refused() {
        assert!(matches!(
            parse(Path::new("s"), b"{not json"),
            Err(StateError::Parse { .. })
        ));
        assert!(matches!(
            parse(Path::new("s"), b"{}"),
            Err(StateError::NoSchema { .. })
        ));
        assert!(matches!(
            parse(
                Path::new("s"),
                br#"{"schema":"switchyard/state/v1","journal":"x"}"#
            ),
            Err(StateError::Shape { .. })
        ));
    }

    #[test]
    fn save_leaves_no_temp_files_behind() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("s.json"));
        file.save(&StateDocument::default()).unwrap();
        file.save(&StateDocument::default()).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("s.json")]);
    }

    /// The schema users validate against is generated from these types and
    /// published in schema/state-v1.schema.json; a change to the types must
    /// show up as a diff of its snapshot and of that file. `make schema`
    /// (`INSTA_UPDATE=always`) rewrites both.
    #[test]
    fn json_schema_is_the_published_one() {
        let generated = super::super::json_schema();
        insta::with_settings!({
            description => "schema/state-v1.schema.json: the published file holds this text",
            omit_expression => true,
        }, {
            insta::assert_snapshot!("state-v1.schema.json", generated);
        });
        switchyard_tests::published::assert_published(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/state-v1.schema.json"),
            &generated,
            "make schema",
        );
    }
}
