//! `S3ObjectStore`: the object store port on one S3 bucket. Objects are written once with
//! `If-None-Match: *`, so a duplicate delivery or a racing writer can never replace what is
//! there.

use crate::error::{failure, invalid, Failure};
use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use ports::{ByteSource, Error, ErrorKind, ListPage, ObjectKey, ObjectStore, Result};
use std::time::Duration;

/// S3's largest page of a listing.
const LIST_PAGE_KEYS: i32 = 1000;

/// How often a put that met a concurrent conditional write (409) is tried again. S3 answers
/// 409 while another conditional write of the same key is in flight; once that one ends, the
/// next try gets a clear answer (412, or success if the other failed).
const CONFLICT_RETRIES: u32 = 5;

/// The tag on every object of an expiring kind ([`ports::EXPIRING_KINDS`]): the vault
/// bucket's lifecycle rule deletes the objects that carry it (see `template.yaml`).
pub const EXPIRING_TAG: (&str, &str) = ("lifeboat-expires", "true");

/// The `x-amz-tagging` value for `key`, if its kind expires.
fn tagging(key: &ObjectKey) -> Option<String> {
    key.expires()
        .then(|| format!("{}={}", EXPIRING_TAG.0, EXPIRING_TAG.1))
}

/// An S3 bucket as an object store.
#[derive(Clone, Debug)]
pub struct S3ObjectStore {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3ObjectStore {
    /// The store over `bucket`. With an endpoint override (`AWS_ENDPOINT_URL`, a local
    /// emulator) requests use path-style addressing, since such endpoints have no
    /// per-bucket host names.
    pub fn new(sdk: &aws_config::SdkConfig, bucket: impl Into<String>) -> Self {
        let conf = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(sdk.endpoint_url().is_some())
            .build();
        S3ObjectStore::from_client(aws_sdk_s3::Client::from_conf(conf), bucket)
    }

    /// The store over `bucket` with a client configured by the caller.
    pub fn from_client(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        S3ObjectStore {
            client,
            bucket: bucket.into(),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn what(&self, key: &ObjectKey) -> String {
        format!("S3 object {key} in bucket {}", self.bucket)
    }

    /// The error for a failure that names no object: a missing bucket is a setup problem,
    /// never a missing object.
    fn common(&self, f: Failure) -> Error {
        if f.is_code("NoSuchBucket") {
            return self.no_bucket();
        }
        f.error
    }

    fn no_bucket(&self) -> Error {
        Error::new(
            ErrorKind::Other,
            format!(
                "S3 bucket {} does not exist (check the configured bucket name, or create it)",
                self.bucket
            ),
        )
    }
}

impl S3ObjectStore {
    fn exists_error(&self, key: &ObjectKey) -> Error {
        Error::new(
            ErrorKind::AlreadyExists,
            format!("{} already exists", self.what(key)),
        )
    }

    /// The parts of a multipart upload, uploaded one at a time, then completed with
    /// `If-None-Match: *` so that the object is written once like any other.
    async fn upload_parts(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        first: Bytes,
        source: &mut dyn ByteSource,
    ) -> Result<u64> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        let mut parts = Vec::new();
        let mut total = 0u64;
        let mut next = first;
        let mut number = 1i32;
        while !next.is_empty() {
            total += next.len() as u64;
            let len = next.len() as i64;
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key.as_str())
                .upload_id(upload_id)
                .part_number(number)
                .content_length(len)
                .body(ByteStream::from(next))
                .send()
                .await
                .map_err(|e| self.common(failure(e, "S3", self.what(key))))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build(),
            );
            number += 1;
            next = source.next_part(ports::STREAM_PART_BYTES).await?;
        }
        let done = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(upload_id)
            .if_none_match("*")
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await;
        match done {
            Ok(_) => Ok(total),
            Err(e) => {
                let f = failure(e, "S3", self.what(key));
                if f.status == Some(412) || f.is_code("PreconditionFailed") {
                    Err(self.exists_error(key))
                } else {
                    Err(self.common(f))
                }
            }
        }
    }
}

/// The object's total size from a `Content-Range: bytes a-b/total` header.
fn total_from_content_range(header: &str) -> Option<u64> {
    header.rsplit('/').next()?.trim().parse().ok()
}

#[async_trait]
impl ObjectStore for S3ObjectStore {
    async fn put_if_absent(&self, key: &ObjectKey, data: Bytes) -> Result<()> {
        let mut conflicts = 0;
        loop {
            let sent = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(key.as_str())
                .if_none_match("*")
                .set_tagging(tagging(key))
                .content_length(data.len() as i64)
                .body(ByteStream::from(data.clone()))
                .send()
                .await;
            let f = match sent {
                Ok(_) => return Ok(()),
                Err(e) => failure(e, "S3", self.what(key)),
            };
            if f.status == Some(412) || f.is_code("PreconditionFailed") {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("{} already exists", self.what(key)),
                ));
            }
            if f.status == Some(409) && conflicts < CONFLICT_RETRIES {
                conflicts += 1;
                tokio::time::sleep(Duration::from_millis(50 << conflicts)).await;
                continue;
            }
            return Err(self.common(f));
        }
    }

    /// One `PutObject` when the content fits in a part; otherwise a multipart upload
    /// (`CreateMultipartUpload`, one `UploadPart` per 8 MiB, `CompleteMultipartUpload`),
    /// aborted when anything fails so that no parts are left to pay for. An object already
    /// there is refused before the upload starts and again, atomically, at completion.
    async fn put_stream_if_absent(
        &self,
        key: &ObjectKey,
        source: &mut dyn ByteSource,
    ) -> Result<u64> {
        let first = source.next_part(ports::STREAM_PART_BYTES).await?;
        if first.len() < ports::STREAM_PART_BYTES {
            let len = first.len() as u64;
            self.put_if_absent(key, first).await?;
            return Ok(len);
        }
        match self.size(key).await {
            Ok(_) => return Err(self.exists_error(key)),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .set_tagging(tagging(key))
            .send()
            .await
            .map_err(|e| self.common(failure(e, "S3", self.what(key))))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        if upload_id.is_empty() {
            return Err(Error::new(
                ErrorKind::Other,
                format!("{}: S3 started an upload without an id", self.what(key)),
            ));
        }
        let result = self.upload_parts(key, &upload_id, first, source).await;
        if result.is_err() {
            // Best effort: an abort that fails too leaves the parts to the bucket's
            // lifecycle rule (AbortIncompleteMultipartUpload after a day).
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key.as_str())
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| {
                let f = failure(e, "S3", self.what(key));
                if f.is_code("NoSuchKey") {
                    Error::not_found(self.what(key))
                } else {
                    self.common(f)
                }
            })?;
        let expected = out.content_length();
        let body = out.body.collect().await.map_err(|_| {
            Error::new(
                ErrorKind::Unavailable,
                format!("{}: the body broke off while being read", self.what(key)),
            )
        })?;
        let body = body.into_bytes();
        if let Some(n) = expected {
            if n != body.len() as i64 {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "{}: got {} bytes of {n}; read it again",
                        self.what(key),
                        body.len()
                    ),
                ));
            }
        }
        Ok(body)
    }

    async fn get_range(&self, key: &ObjectKey, start: u64, end: u64) -> Result<Bytes> {
        if start >= end {
            return Err(invalid(format!(
                "{}: empty or reversed range {start}..{end}",
                self.what(key)
            )));
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .range(format!("bytes={start}-{}", end - 1))
            .send()
            .await
            .map_err(|e| {
                let f = failure(e, "S3", self.what(key));
                if f.is_code("NoSuchKey") {
                    Error::not_found(self.what(key))
                } else if f.status == Some(416) || f.is_code("InvalidRange") {
                    invalid(format!(
                        "{}: range {start}..{end} starts past its end",
                        self.what(key)
                    ))
                } else {
                    self.common(f)
                }
            })?;
        let total = out.content_range().and_then(total_from_content_range);
        let body = out
            .body
            .collect()
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("{}: the body broke off while being read", self.what(key)),
                )
            })?
            .into_bytes();
        let want = end - start;
        match total {
            // A ranged answer: S3 cuts a range that ends past the object short.
            Some(total) if total < end => Err(invalid(format!(
                "{}: range {start}..{end} ends past its end ({total} bytes)",
                self.what(key)
            ))),
            Some(_) if body.len() as u64 == want => Ok(body),
            // No Content-Range: the whole object came back, the range ignored.
            None if body.len() as u64 >= end => Ok(body.slice(start as usize..end as usize)),
            None => Err(invalid(format!(
                "{}: range {start}..{end} ends past its end ({} bytes)",
                self.what(key),
                body.len()
            ))),
            // The range is inside the object, yet fewer bytes came: never hand them out.
            Some(_) => Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "{}: range {start}..{end} returned {} bytes instead of {want}; read it again",
                    self.what(key),
                    body.len()
                ),
            )),
        }
    }

    async fn size(&self, key: &ObjectKey) -> Result<u64> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await;
        match out {
            Ok(o) => o.content_length().map(|n| n.max(0) as u64).ok_or_else(|| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("{}: S3 gave no size", self.what(key)),
                )
            }),
            Err(e) => {
                let f = failure(e, "S3", self.what(key));
                if f.status != Some(404) {
                    return Err(self.common(f));
                }
                // A HEAD answer has no body, so a missing bucket looks like a missing
                // object: ask about the bucket before saying the object is missing.
                match self.client.head_bucket().bucket(&self.bucket).send().await {
                    Ok(_) => Err(Error::not_found(self.what(key))),
                    Err(e) => {
                        let f = failure(e, "S3", format!("S3 bucket {}", self.bucket));
                        if f.status == Some(404) {
                            Err(self.no_bucket())
                        } else {
                            Err(f.error)
                        }
                    }
                }
            }
        }
    }

    async fn list(&self, prefix: &str, after: Option<&str>) -> Result<ListPage> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(LIST_PAGE_KEYS)
            .set_continuation_token(after.map(str::to_string))
            .send()
            .await
            .map_err(|e| {
                self.common(failure(
                    e,
                    "S3",
                    format!("S3 listing of {prefix} in bucket {}", self.bucket),
                ))
            })?;
        let keys = out
            .contents()
            .iter()
            .filter_map(|o| {
                // Anything in the bucket that is not one of our keys is ignored, never
                // parsed as ours.
                let key = ObjectKey::parse(o.key()?)?;
                Some((key, o.size().unwrap_or(0).max(0) as u64))
            })
            .collect();
        let next = if out.is_truncated() == Some(true) {
            out.next_continuation_token().map(str::to_string)
        } else {
            None
        };
        Ok(ListPage { keys, next })
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| self.common(failure(e, "S3", self.what(key))))?;
        Ok(())
    }

    /// A presigned GET: the link carries a signature of this function's credentials, valid
    /// for `expires` (at most 7 days, S3's limit, and never longer than the credentials
    /// themselves live), so an export can be downloaded without the API in the path.
    async fn presign_get(&self, key: &ObjectKey, expires: Duration) -> Result<Option<String>> {
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(expires)
            .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("download link: {e}")))?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .presigned(config)
            .await
            .map_err(|e| self.common(failure(e, "S3", self.what(key))))?;
        Ok(Some(req.uri().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_gives_the_total() {
        assert_eq!(total_from_content_range("bytes 90-99/100"), Some(100));
        assert_eq!(total_from_content_range("bytes 0-0/1"), Some(1));
        assert_eq!(total_from_content_range("bytes */100"), Some(100));
        assert_eq!(total_from_content_range("bytes 0-9/*"), None);
    }
}
