//! Where the state document lives: a local file, or an S3 object
//! (`s3://BUCKET/KEY`) that outlives a pipeline run.

use std::fmt;
use std::path::{Path, PathBuf};

/// The state document's place, as `--state` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLocation {
    /// A file on this machine.
    File(PathBuf),
    /// An object in S3, read with its ETag and written with a conditional PUT.
    S3 {
        /// The bucket.
        bucket: String,
        /// The object's key.
        key: String,
    },
}

/// A `--state` value that names no usable place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--state {value:?}: {reason}")]
pub struct LocationError {
    /// What was given.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl crate::outcome::ExitStatus for LocationError {
    fn exit_code(&self) -> crate::outcome::Code {
        crate::outcome::Code::Usage
    }
}

impl StateLocation {
    /// Reads `--state`: `s3://BUCKET/KEY`, or a file path.
    pub fn parse(value: &str) -> Result<Self, LocationError> {
        let refuse = |reason: &str| LocationError {
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let Some(rest) = value.strip_prefix("s3://") else {
            if value.is_empty() {
                return Err(refuse("names no file"));
            }
            if value.contains("://") {
                return Err(refuse(
                    "is neither a file path nor an s3://BUCKET/KEY URL (the only remote kind)",
                ));
            }
            return Ok(Self::File(PathBuf::from(value)));
        };
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| refuse("names no object key: write s3://BUCKET/KEY"))?;
        check_bucket(bucket).map_err(|r| refuse(&r))?;
        if key.is_empty() || key.ends_with('/') {
            return Err(refuse(
                "names a folder, not an object: write s3://BUCKET/path/to/state.json",
            ));
        }
        if key.len() > 1000 {
            return Err(refuse(
                "has a key longer than 1,000 bytes (S3 allows 1,024, and the lock object adds a suffix)",
            ));
        }
        if key.chars().any(char::is_control) {
            return Err(refuse("has a control character in its key"));
        }
        Ok(Self::S3 {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }

    /// The local path, when it is a file.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Self::File(p) => Some(p),
            Self::S3 { .. } => None,
        }
    }

    /// The object's ARN, when it is in S3 (for IAM policies).
    pub fn arn(&self) -> Option<String> {
        match self {
            Self::File(_) => None,
            Self::S3 { bucket, key } => Some(format!("arn:aws:s3:::{bucket}/{key}")),
        }
    }

    /// The place of the lock beside it: the same name with `.lock` appended.
    #[must_use]
    pub fn lock(&self) -> Self {
        match self {
            Self::File(p) => {
                let mut name = p.as_os_str().to_owned();
                name.push(".lock");
                Self::File(PathBuf::from(name))
            }
            Self::S3 { bucket, key } => Self::S3 {
                bucket: bucket.clone(),
                key: format!("{key}.lock"),
            },
        }
    }
}

impl fmt::Display for StateLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

impl From<PathBuf> for StateLocation {
    fn from(path: PathBuf) -> Self {
        Self::File(path)
    }
}

impl From<&Path> for StateLocation {
    fn from(path: &Path) -> Self {
        Self::File(path.to_owned())
    }
}

/// S3's rules for a general purpose bucket's name.
fn check_bucket(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !(3..=63).contains(&name.len()) {
        return Err(format!(
            "bucket name {name:?} must be 3 to 63 characters long"
        ));
    }
    if !ok_chars {
        return Err(format!(
            "bucket name {name:?} may hold only lower case letters, digits, dots and hyphens"
        ));
    }
    if !ends_ok(name.chars().next()) || !ends_ok(name.chars().last()) {
        return Err(format!(
            "bucket name {name:?} must begin and end with a letter or digit"
        ));
    }
    if name.contains("..") {
        return Err(format!("bucket name {name:?} has two dots in a row"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_objects_are_told_apart() {
        assert_eq!(
            StateLocation::parse("switchyard-state.json").unwrap(),
            StateLocation::File("switchyard-state.json".into())
        );
        let s3 = StateLocation::parse("s3://acme-deploys/go-auth/prod.json").unwrap();
        assert_eq!(
            s3,
            StateLocation::S3 {
                bucket: "acme-deploys".into(),
                key: "go-auth/prod.json".into()
            }
        );
        assert_eq!(s3.to_string(), "s3://acme-deploys/go-auth/prod.json");
        assert_eq!(
            s3.arn().unwrap(),
            "arn:aws:s3:::acme-deploys/go-auth/prod.json"
        );
        assert_eq!(
            s3.lock().to_string(),
            "s3://acme-deploys/go-auth/prod.json.lock"
        );
        assert_eq!(
            StateLocation::parse("a/s.json").unwrap().lock().to_string(),
            "a/s.json.lock"
        );
    }

    #[test]
    fn unusable_urls_are_refused_with_the_reason() {
        for (value, reason) in [
            ("s3://bucket", "names no object key"),
            ("s3://bucket/", "names a folder"),
            ("s3://bucket/dir/", "names a folder"),
            ("s3://Bucket/k", "lower case"),
            ("s3://ab/k", "3 to 63"),
            ("s3://-ab/k", "begin and end"),
            ("s3://a..b/k", "two dots"),
            ("gs://bucket/k", "neither a file path nor"),
            ("", "names no file"),
        ] {
            let err = StateLocation::parse(value).unwrap_err().to_string();
            assert!(err.contains(reason), "{value}: {err}");
            assert!(err.starts_with("--state "), "{err}");
        }
    }
}
