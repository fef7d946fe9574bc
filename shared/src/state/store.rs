//! Reading and writing the state document, in a local file or an S3 object.
//!
//! A file is replaced atomically (temp file in the same folder, fsync,
//! rename, fsync of the folder), so a reader never sees a half-written
//! document. An object is read with its ETag and written with a conditional
//! PUT (`If-Match`, or `If-None-Match: *` for the first write).
//!
//! Either way a write that another writer overtook since this run read the
//! document is not lost: the document is read again, the two runs' changes
//! are merged ([`super::merge`]: the journal appended, other sections entry
//! by entry) and written on the same condition. When both changed the same
//! entry, nothing is written and the step stops with exit 5 naming it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

use super::document::{StateDocument, SCHEMA};
use super::location::StateLocation;
use super::merge;
use super::s3::{self, Object, ObjectError, Precondition};
use crate::aws::launch_template::sha256_hex;
use crate::aws::AwsSettings;

/// How often a write that lost a race is merged and tried again.
const MERGE_ATTEMPTS: usize = 5;

/// Errors reading or writing the state document.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {0}")]
    Read(String, #[source] std::io::Error),
    #[error("state file {path} is not valid JSON: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("state file {path} has no \"schema\" field; is it a switchyard state file?")]
    NoSchema { path: String },
    #[error(
        "state file {path} is schema {found}; this build reads {expected}. \
         Upgrade switchyard to read it, or point --state at another file"
    )]
    Version {
        path: String,
        found: String,
        expected: &'static str,
    },
    #[error("state file {path} does not match schema {expected}: {source}")]
    Shape {
        path: String,
        expected: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write state file {0}")]
    Write(String, #[source] std::io::Error),
    #[error("state {0}")]
    Remote(#[source] ObjectError),
    #[error(
        "state {location} was changed by another run while this one worked, and both changed {}: \
         nothing of this run's last change was written; see `switchyard history` for the other run",
        .entries.join(", ")
    )]
    Conflict {
        location: String,
        entries: Vec<String>,
    },
}

impl crate::outcome::ExitStatus for StateError {
    fn exit_code(&self) -> crate::outcome::Code {
        use crate::outcome::Code;
        match self {
            Self::Write(..) | Self::Remote(ObjectError::Call(_) | ObjectError::Precondition(_)) => {
                Code::Provider
            }
            Self::Conflict { .. } => Code::Conflict,
            _ => Code::Usage,
        }
    }
}

/// The document as this run last read or wrote it: the version a write
/// requires and the base of a merge.
#[derive(Debug, Clone)]
struct Base {
    /// The ETag of the object, or the SHA-256 of the file; `None`: absent.
    version: Option<String>,
    value: Value,
}

/// The state document's place, and what this run last saw there.
#[derive(Debug)]
pub struct StateFile {
    location: StateLocation,
    aws: AwsSettings,
    object: tokio::sync::OnceCell<Object>,
    base: Mutex<Option<Base>>,
}

impl Clone for StateFile {
    /// Another handle on the same place, that has seen what this one saw.
    fn clone(&self) -> Self {
        Self {
            location: self.location.clone(),
            aws: self.aws.clone(),
            object: self.object.clone(),
            base: Mutex::new(self.base()),
        }
    }
}

impl StateFile {
    /// The state file at `path` (it need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::at(StateLocation::File(path.into()), AwsSettings::default())
    }

    /// The state at `location`; `aws` says how to reach S3.
    pub fn at(location: StateLocation, aws: AwsSettings) -> Self {
        Self {
            location,
            aws,
            object: tokio::sync::OnceCell::new(),
            base: Mutex::new(None),
        }
    }

    /// The state at `location` in S3, reached with `client` (for callers
    /// that configure their own client).
    pub fn with_s3_client(location: StateLocation, client: aws_sdk_s3::Client) -> Self {
        let file = Self::at(location, AwsSettings::default());
        if let StateLocation::S3 { bucket, key } = &file.location {
            let _ = file.object.set(Object::new(client, bucket, key));
        }
        file
    }

    /// Where it lives.
    pub fn location(&self) -> &StateLocation {
        &self.location
    }

    /// The local file's path (tests keep their state in files).
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        self.location.file().expect("a local state file")
    }

    /// The local file's document, read at once (tests check what a step wrote).
    #[cfg(test)]
    pub fn read_now(&self) -> StateDocument {
        parse(
            &self.location.to_string(),
            &std::fs::read(self.path()).expect("the state file"),
        )
        .expect("a valid state file")
    }

    /// Writes the local file at once, as another run would (tests set the scene).
    #[cfg(test)]
    pub fn write_now(&self, doc: &StateDocument) {
        let bytes = serde_json::to_vec_pretty(doc).expect("a document");
        write_atomically(self.path(), &bytes).expect("the state file written");
    }

    /// The S3 object, for a state in S3.
    async fn object(&self, bucket: &str, key: &str) -> &Object {
        self.object
            .get_or_init(|| async {
                Object::new(Box::pin(s3::client(&self.aws)).await, bucket, key)
            })
            .await
    }

    /// The document's bytes and version as they are now; `None` when absent.
    pub async fn read_bytes(&self) -> Result<Option<(Vec<u8>, String)>, StateError> {
        match &self.location {
            StateLocation::File(path) => match std::fs::read(path) {
                Ok(bytes) => {
                    let version = sha256_hex(&bytes);
                    Ok(Some((bytes, version)))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(StateError::Read(self.location.to_string(), e)),
            },
            StateLocation::S3 { bucket, key } => self
                .object(bucket, key)
                .await
                .get()
                .await
                .map_err(StateError::Remote),
        }
    }

    /// Reads the document as it is now, and its version.
    async fn current(&self) -> Result<(StateDocument, Base), StateError> {
        let Some((bytes, version)) = self.read_bytes().await? else {
            return Ok((
                StateDocument::default(),
                Base {
                    version: None,
                    value: Value::Object(serde_json::Map::new()),
                },
            ));
        };
        let name = self.location.to_string();
        let doc = parse(&name, &bytes)?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|source| StateError::Parse { path: name, source })?;
        Ok((
            doc,
            Base {
                version: Some(version),
                value,
            },
        ))
    }

    fn base(&self) -> Option<Base> {
        self.base.lock().map_or(None, |b| b.clone())
    }

    fn set_base(&self, base: Base) {
        if let Ok(mut b) = self.base.lock() {
            *b = Some(base);
        }
    }

    /// Reads the document, or a new empty one when there is none yet.
    pub async fn load(&self) -> Result<StateDocument, StateError> {
        let (doc, base) = self.current().await?;
        self.set_base(base);
        Ok(doc)
    }

    /// Writes `doc` in place of the version this run last read or wrote.
    /// When another run wrote in between, merges both runs' changes into
    /// `doc` and writes that; when both changed the same entry, writes
    /// nothing and answers [`StateError::Conflict`].
    pub async fn save(&self, doc: &mut StateDocument) -> Result<(), StateError> {
        let name = self.location.to_string();
        let encode = |e: serde_json::Error| StateError::Write(name.clone(), e.into());
        let mut ours = serde_json::to_value(&*doc).map_err(encode)?;
        let mut base = match self.base() {
            Some(b) => b,
            // Never read: what is there now is the base, and ours replaces it.
            None => self.current().await?.1,
        };
        for _ in 0..MERGE_ATTEMPTS {
            let bytes = encoded(&ours).map_err(encode)?;
            match self.write(bytes, base.version.as_deref()).await {
                Ok(version) => {
                    if ours != serde_json::to_value(&*doc).map_err(encode)? {
                        *doc = serde_json::from_value(ours.clone()).map_err(|source| {
                            StateError::Shape {
                                path: name.clone(),
                                expected: SCHEMA,
                                source,
                            }
                        })?;
                    }
                    self.set_base(Base {
                        version: Some(version),
                        value: ours,
                    });
                    return Ok(());
                }
                Err(StateError::Remote(ObjectError::Precondition(why))) => {
                    tracing::info!("{why}; merging this run's changes with the other run's");
                    let (_, theirs) = self.current().await?;
                    ours = merge::merge(&base.value, &ours, &theirs.value).map_err(
                        |merge::Conflicts(entries)| StateError::Conflict {
                            location: name.clone(),
                            entries,
                        },
                    )?;
                    base = theirs;
                }
                Err(e) => return Err(e),
            }
        }
        Err(StateError::Conflict {
            location: name,
            entries: vec![format!(
                "the whole document ({MERGE_ATTEMPTS} writes in a row were overtaken)"
            )],
        })
    }

    /// Writes `bytes` if the document is still at `version` (`None`: absent);
    /// the new version.
    async fn write(&self, bytes: Vec<u8>, version: Option<&str>) -> Result<String, StateError> {
        match &self.location {
            StateLocation::File(path) => {
                let now = self.read_bytes().await?.map(|(_, v)| v);
                if now.as_deref() != version {
                    return Err(StateError::Remote(ObjectError::Precondition(format!(
                        "state file {} changed since it was read",
                        path.display()
                    ))));
                }
                let written = sha256_hex(&bytes);
                write_atomically(path, &bytes)
                    .map_err(|e| StateError::Write(self.location.to_string(), e))?;
                Ok(written)
            }
            StateLocation::S3 { bucket, key } => {
                let condition =
                    version.map_or(Precondition::Absent, |v| Precondition::Is(v.to_owned()));
                self.object(bucket, key)
                    .await
                    .put(bytes, &condition)
                    .await
                    .map_err(StateError::Remote)
            }
        }
    }
}

/// The document's bytes as written: pretty JSON and a final newline.
fn encoded(value: &Value) -> Result<Vec<u8>, serde_json::Error> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Replaces the file at `path` with `bytes`: a temp file in the same folder,
/// fsync, rename, fsync of the folder.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".switchyard-state.")
        .suffix(".tmp")
        .tempfile_in(&dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // The rename is durable only once the folder itself is synced.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Parses a state document read from `path`, refusing unknown schema versions.
pub fn parse(path: &str, bytes: &[u8]) -> Result<StateDocument, StateError> {
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

    #[tokio::test]
    async fn missing_file_reads_as_new_document() {
        let dir = tempfile::tempdir().unwrap();
        let doc = StateFile::new(dir.path().join("s.json"))
            .load()
            .await
            .unwrap();
        assert_eq!(doc.schema, SCHEMA);
        assert!(doc.journal.is_empty());
    }

    #[tokio::test]
    async fn unknown_fields_survive_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("s.json"));
        let text = r#"{
            "schema": "switchyard/state/v1",
            "future_section": {"a": [1, 2]},
            "stacks": {"green": {"role": "standby", "future_field": true}},
            "journal": []
        }"#;
        std::fs::write(dir.path().join("s.json"), text).unwrap();
        let mut doc = file.load().await.unwrap();
        doc.stack_mut("blue").version = Some("1".into());
        file.save(&mut doc).await.unwrap();
        let back: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("s.json")).unwrap()).unwrap();
        assert_eq!(back["future_section"]["a"][1], 2);
        assert_eq!(back["stacks"]["green"]["future_field"], true);
        assert_eq!(back["stacks"]["blue"]["version"], "1");
    }

    #[test]
    fn newer_schema_is_refused_with_a_clear_message() {
        let err = parse(
            "s.json",
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
            parse("s", b"{not json"),
            Err(StateError::Parse { .. })
        ));
        assert!(matches!(
            parse("s", b"{}"),
            Err(StateError::NoSchema { .. })
        ));
        assert!(matches!(
            parse("s", br#"{"schema":"switchyard/state/v1","journal":"x"}"#),
            Err(StateError::Shape { .. })
        ));
    }

    #[tokio::test]
    async fn save_leaves_no_temp_files_behind() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("s.json"));
        file.save(&mut StateDocument::default()).await.unwrap();
        file.save(&mut StateDocument::default()).await.unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("s.json")]);
    }

    /// Two runs' handles on one new file, and the document each read.
    async fn two_runs(
        dir: &tempfile::TempDir,
    ) -> ((StateFile, StateDocument), (StateFile, StateDocument)) {
        let path = dir.path().join("s.json");
        let (ours, theirs) = (StateFile::new(&path), StateFile::new(&path));
        let (mine, other) = (ours.load().await.unwrap(), theirs.load().await.unwrap());
        ((ours, mine), (theirs, other))
    }

    /// Two runs that read the same file: the second writer merges the
    /// first one's change instead of overwriting it.
    #[tokio::test]
    async fn a_write_overtaken_by_another_run_keeps_both_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let ((ours, mut mine), (theirs, mut other)) = two_runs(&dir).await;
        other.stack_mut("green").version = Some("2".into());
        other.record(crate::state::JournalEntry::new(
            "deploy-standby",
            "deployed",
            crate::state::Outcome::Ok,
        ));
        theirs.save(&mut other).await.unwrap();
        mine.stack_mut("blue").version = Some("1".into());
        mine.record(crate::state::JournalEntry::new(
            "verify-health",
            "verdict",
            crate::state::Outcome::Ok,
        ));
        ours.save(&mut mine).await.unwrap();
        // The caller's document now holds both runs' changes, as the file does.
        assert_eq!(mine.stacks["green"].version.as_deref(), Some("2"));
        let back = StateFile::new(&path).load().await.unwrap();
        assert_eq!(back, mine);
        assert_eq!(back.stacks["blue"].version.as_deref(), Some("1"));
        let steps: Vec<_> = back.journal.iter().map(|e| e.step.as_str()).collect();
        assert_eq!(steps, ["deploy-standby", "verify-health"]);
        // A later write of this run starts from the merged document.
        mine.stack_mut("blue").version = Some("1.1".into());
        ours.save(&mut mine).await.unwrap();
        assert_eq!(StateFile::new(&path).load().await.unwrap(), mine);
    }

    #[tokio::test]
    async fn the_same_entry_changed_by_two_runs_is_a_conflict_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let ((ours, mut mine), (theirs, mut other)) = two_runs(&dir).await;
        other.stack_mut("green").version = Some("2".into());
        theirs.save(&mut other).await.unwrap();
        mine.stack_mut("green").version = Some("3".into());
        let err = ours.save(&mut mine).await.unwrap_err();
        assert!(matches!(err, StateError::Conflict { .. }), "{err}");
        assert_eq!(
            crate::outcome::ExitStatus::exit_code(&err),
            crate::outcome::Code::Conflict
        );
        assert!(
            err.to_string().contains("both changed stacks.green"),
            "{err}"
        );
        assert_eq!(StateFile::new(&path).load().await.unwrap(), other);
    }

    /// S3's answers moto does not give: a concurrent write answered 409
    /// ConditionalRequestConflict is read again, merged and written on the
    /// new ETag; a first write goes out with `If-None-Match: *`.
    #[tokio::test]
    async fn a_conflicting_s3_write_is_read_again_merged_and_written_on_the_new_etag() {
        use aws_sdk_s3::operation::get_object::GetObjectOutput;
        use aws_sdk_s3::operation::put_object::PutObjectOutput;
        use aws_sdk_s3::primitives::ByteStream;
        use aws_smithy_mocks::{mock, mock_client, RuleMode};
        use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;

        let body = |doc: serde_json::Value| ByteStream::from(doc.to_string().into_bytes());
        let ours_read = mock!(aws_sdk_s3::Client::get_object).then_output(move || {
            GetObjectOutput::builder()
                .body(body(serde_json::json!({"schema": SCHEMA, "journal": []})))
                .e_tag("\"e1\"")
                .build()
        });
        let conflict = mock!(aws_sdk_s3::Client::put_object)
            .match_requests(|r| r.if_match() == Some("\"e1\"") && r.if_none_match().is_none())
            .then_http_response(|| {
                HttpResponse::new(
                    StatusCode::try_from(409).unwrap(),
                    SdkBody::from(
                        "<Error><Code>ConditionalRequestConflict</Code>\
                         <Message>A conflicting operation occurred</Message></Error>",
                    ),
                )
            });
        let theirs_read = mock!(aws_sdk_s3::Client::get_object).then_output(move || {
            GetObjectOutput::builder()
                .body(body(serde_json::json!({
                    "schema": SCHEMA,
                    "hosts": {"i-1": {"provider": "aws"}},
                    "journal": [{"at": "2026-12-02T09:00:00Z", "step": "register-host",
                                 "action": "joined", "outcome": "ok", "actor": "h"}]
                })))
                .e_tag("\"e2\"")
                .build()
        });
        let merged_write = mock!(aws_sdk_s3::Client::put_object)
            .match_requests(|r| {
                let text = r
                    .body()
                    .bytes()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                r.if_match() == Some("\"e2\"")
                    && text.contains("i-1")
                    && text.contains("\"blue\"")
                    && text.contains("register-host")
            })
            .then_output(|| PutObjectOutput::builder().e_tag("\"e3\"").build());
        let client = mock_client!(
            aws_sdk_s3,
            RuleMode::Sequential,
            [&ours_read, &conflict, &theirs_read, &merged_write]
        );
        let file =
            StateFile::with_s3_client(StateLocation::parse("s3://b-1/k.json").unwrap(), client);
        let mut doc = file.load().await.unwrap();
        doc.stack_mut("blue").version = Some("1".into());
        file.save(&mut doc).await.unwrap();
        assert!(
            doc.hosts.contains_key("i-1"),
            "the caller's document is the merged one"
        );
        assert_eq!(merged_write.num_calls(), 1);

        // A first write: nothing there, so If-None-Match: *.
        let absent = mock!(aws_sdk_s3::Client::get_object).then_http_response(|| {
            HttpResponse::new(
                StatusCode::try_from(404).unwrap(),
                SdkBody::from("<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>"),
            )
        });
        let create = mock!(aws_sdk_s3::Client::put_object)
            .match_requests(|r| r.if_none_match() == Some("*") && r.if_match().is_none())
            .then_output(|| PutObjectOutput::builder().e_tag("\"n1\"").build());
        let client = mock_client!(aws_sdk_s3, RuleMode::Sequential, [&absent, &create]);
        let file =
            StateFile::with_s3_client(StateLocation::parse("s3://b-1/new.json").unwrap(), client);
        let mut doc = file.load().await.unwrap();
        doc.stack_mut("green").version = Some("1".into());
        file.save(&mut doc).await.unwrap();
        assert_eq!(create.num_calls(), 1);
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
