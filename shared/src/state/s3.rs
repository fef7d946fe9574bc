//! One S3 object read with its ETag and written only on a condition, for the
//! state document and the lock beside it. Path-style addressing when an
//! endpoint URL is set (moto, LocalStack, MinIO), virtual-hosted otherwise.

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;

use crate::aws::AwsSettings;

/// What a write requires of the object as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// It does not exist (`If-None-Match: *`).
    Absent,
    /// It is the version with this ETag (`If-Match`).
    Is(String),
}

/// Why a call on the object failed.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The precondition did not hold: another writer came first (412), or
    /// wrote at the same moment (409 ConditionalRequestConflict).
    #[error("{0}")]
    Precondition(String),
    /// The bucket does not exist.
    #[error("bucket {0} does not exist (create it, or point --state elsewhere)")]
    NoBucket(String),
    /// Anything else S3 or the network answered, after the SDK's retries.
    #[error("{0}")]
    Call(String),
}

/// An object of a bucket.
#[derive(Debug, Clone)]
pub struct Object {
    client: Client,
    bucket: String,
    key: String,
}

/// The S3 client for `settings`.
pub async fn client(settings: &AwsSettings) -> Client {
    let config = crate::aws::config::load(settings).await;
    let mut builder = aws_sdk_s3::config::Builder::from(&config);
    if config.endpoint_url().is_some() {
        builder = builder.force_path_style(true);
    }
    Client::from_conf(builder.build())
}

fn describe<E: ProvideErrorMetadata + std::error::Error + 'static>(
    e: &aws_sdk_s3::error::SdkError<E>,
) -> String {
    match e.as_service_error() {
        Some(s) => format!(
            "{}: {}",
            s.code().unwrap_or("error"),
            s.message().unwrap_or("no message")
        ),
        None => aws_smithy_types::error::display::DisplayErrorContext(e).to_string(),
    }
}

fn status<E>(e: &aws_sdk_s3::error::SdkError<E>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

impl Object {
    /// The object `key` of `bucket`.
    pub fn new(client: Client, bucket: &str, key: &str) -> Self {
        Self {
            client,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        }
    }

    fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// Its bytes and ETag, or `None` when it does not exist.
    pub async fn get(&self) -> Result<Option<(Vec<u8>, String)>, ObjectError> {
        // The SDK's futures are large; boxed, every step that awaits the
        // state stays small.
        let answer = Box::pin(
            self.client
                .get_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .send(),
        )
        .await;
        let output = match answer {
            Ok(o) => o,
            Err(e)
                if e.as_service_error().is_some_and(
                    aws_sdk_s3::operation::get_object::GetObjectError::is_no_such_key,
                ) =>
            {
                return Ok(None)
            }
            Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("NoSuchBucket") => {
                return Err(ObjectError::NoBucket(self.bucket.clone()))
            }
            Err(e) if status(&e) == Some(403) => {
                return Err(ObjectError::Call(format!(
                    "reading {}: {} (S3 answers 403 for a missing object unless s3:ListBucket \
                     is granted; see --print-iam-policy)",
                    self.url(),
                    describe(&e)
                )))
            }
            Err(e) => {
                return Err(ObjectError::Call(format!(
                    "reading {}: {}",
                    self.url(),
                    describe(&e)
                )))
            }
        };
        let etag = output.e_tag().unwrap_or_default().to_owned();
        let bytes = output
            .body
            .collect()
            .await
            .map_err(|e| ObjectError::Call(format!("reading {}: {e}", self.url())))?
            .into_bytes()
            .to_vec();
        Ok(Some((bytes, etag)))
    }

    /// Writes `bytes` if `condition` holds; the new ETag.
    pub async fn put(
        &self,
        bytes: Vec<u8>,
        condition: &Precondition,
    ) -> Result<String, ObjectError> {
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_type("application/json")
            .body(ByteStream::from(bytes));
        request = match condition {
            Precondition::Absent => request.if_none_match("*"),
            Precondition::Is(etag) => request.if_match(etag),
        };
        match Box::pin(request.send()).await {
            Ok(o) => Ok(o.e_tag().unwrap_or_default().to_owned()),
            Err(e) if matches!(status(&e), Some(412 | 409)) => {
                Err(ObjectError::Precondition(format!(
                    "{} changed since it was read ({})",
                    self.url(),
                    describe(&e)
                )))
            }
            Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("NoSuchBucket") => {
                Err(ObjectError::NoBucket(self.bucket.clone()))
            }
            Err(e) => Err(ObjectError::Call(format!(
                "writing {}: {}",
                self.url(),
                describe(&e)
            ))),
        }
    }

    /// Deletes it (nothing when it is gone already).
    pub async fn delete(&self) -> Result<(), ObjectError> {
        Box::pin(
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .send(),
        )
        .await
        .map(|_| ())
        .map_err(|e| ObjectError::Call(format!("deleting {}: {}", self.url(), describe(&e))))
    }
}
