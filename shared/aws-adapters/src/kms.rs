//! `KmsKeyService`: envelope encryption with one KMS key per region and a key per tenant.
//!
//! ```text
//! region KMS key ──wraps──▶ tenant key (32 bytes; record t#<tenant> / tenant-key)
//!                             └──wraps──▶ task data key (AES-256-GCM, context as AAD)
//! ```
//!
//! The envelope itself is [`ports::KeyEnvelope`], shared with the embedded adapter; this
//! module gives it its root key, KMS (`GenerateDataKey` makes a tenant key under the
//! context `{tenant}`, `Decrypt` unwraps it), and keeps the wrapped tenant keys in the
//! catalog ([`ports::CatalogTenantKeys`]). So KMS holds one key per region (not one per
//! tenant, whose monthly price would dwarf a small tenant's bill) and is called once per
//! tenant per instance: the first use of a tenant unwraps its key, later uses find it in
//! this instance's cache.

use crate::error::{failure, Failure};
use async_trait::async_trait;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use ports::{
    Catalog, CatalogTenantKeys, DataKey, EncryptionContext, Error, ErrorKind, KeyEnvelope,
    KeyService, Result, RootKey,
};
use std::collections::HashMap;
use std::sync::Arc;
use zeroize::{Zeroize, Zeroizing};

/// Data keys wrapped under per-tenant keys that are themselves wrapped by one regional KMS
/// key.
///
/// # Crypto-shredding
/// [`KeyService::destroy_tenant_keys`] deletes the tenant's key record from the catalog.
/// From then on no task data key of the tenant can be unwrapped: KMS never saw them, and the
/// tenant key that wrapped them is gone. DynamoDB point-in-time recovery keeps earlier
/// states of the table for up to 35 days, so the shredding is complete once that window
/// has passed (table backups made on demand must be deleted too).
///
/// Unwrapped tenant keys are cached for the life of the instance (one Lambda execution
/// environment) and wiped when dropped; `Debug` shows none of them.
pub struct KmsKeyService {
    envelope: KeyEnvelope<KmsRootKey, CatalogTenantKeys>,
}

impl std::fmt::Debug for KmsKeyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsKeyService")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl KmsKeyService {
    /// The service over the region's KMS key `key_id` (a key id, ARN or `alias/…`), keeping
    /// tenant key records in `catalog`.
    pub fn new(
        sdk: &aws_config::SdkConfig,
        key_id: impl Into<String>,
        catalog: Arc<dyn Catalog>,
    ) -> Self {
        KmsKeyService::from_client(aws_sdk_kms::Client::new(sdk), key_id, catalog)
    }

    pub fn from_client(
        kms: aws_sdk_kms::Client,
        key_id: impl Into<String>,
        catalog: Arc<dyn Catalog>,
    ) -> Self {
        let root = KmsRootKey {
            kms,
            key_id: key_id.into(),
        };
        KmsKeyService {
            envelope: KeyEnvelope::new(root, CatalogTenantKeys::new(catalog)),
        }
    }

    /// The regional KMS key, as given.
    pub fn key_id(&self) -> &str {
        &self.envelope.root().key_id
    }
}

#[async_trait]
impl KeyService for KmsKeyService {
    async fn generate_data_key(&self, ctx: &EncryptionContext) -> Result<DataKey> {
        self.envelope.generate_data_key(ctx).await
    }

    async fn decrypt_data_key(
        &self,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; 32]>> {
        self.envelope.decrypt_data_key(wrapped, ctx).await
    }

    async fn destroy_tenant_keys(&self, tenant: &domain::TenantId) -> Result<()> {
        self.envelope.destroy_tenant_keys(tenant).await
    }
}

/// The region's KMS key as the envelope's root: `GenerateDataKey` and `Decrypt` under the
/// encryption context, KMS's errors mapped to the ports' kinds.
struct KmsRootKey {
    kms: aws_sdk_kms::Client,
    key_id: String,
}

impl KmsRootKey {
    fn map(&self, f: Failure) -> Error {
        match f.code.as_deref() {
            Some("InvalidCiphertextException" | "IncorrectKeyException") => Error::new(
                ErrorKind::Integrity,
                "wrapped key refused by KMS: wrong context, wrong key or altered",
            ),
            Some("NotFoundException") => Error::new(
                ErrorKind::Other,
                format!(
                    "KMS key {} does not exist (check the configured key id, or create it)",
                    self.key_id
                ),
            ),
            Some("DisabledException" | "KMSInvalidStateException") => Error::new(
                ErrorKind::Other,
                format!("KMS key {} is disabled or pending deletion", self.key_id),
            ),
            Some("KeyUnavailableException" | "DependencyTimeoutException") => {
                Error::new(ErrorKind::Unavailable, f.error.to_string())
            }
            _ => f.error,
        }
    }

    fn what(&self) -> String {
        format!("KMS key {}", self.key_id)
    }
}

#[async_trait]
impl RootKey for KmsRootKey {
    /// A fresh 32-byte key from KMS under `ctx`: its plaintext and KMS's wrapped form.
    async fn generate(&self, ctx: &EncryptionContext) -> Result<DataKey> {
        let out = self
            .kms
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(kms_context(ctx))
            .send()
            .await
            .map_err(|e| self.map(failure(e, "KMS", self.what())))?;
        let wrapped = out
            .ciphertext_blob()
            .map(|b| b.as_ref().to_vec())
            .ok_or_else(|| Error::new(ErrorKind::Unavailable, "KMS returned no wrapped key"))?;
        let plaintext = to_key(out.plaintext.map(Blob::into_inner))?;
        Ok(DataKey { plaintext, wrapped })
    }

    async fn decrypt(
        &self,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; 32]>> {
        let out = self
            .kms
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .set_encryption_context(kms_context(ctx))
            .send()
            .await
            .map_err(|e| self.map(failure(e, "KMS", self.what())))?;
        to_key(out.plaintext.map(Blob::into_inner))
    }
}

fn kms_context(ctx: &EncryptionContext) -> Option<HashMap<String, String>> {
    if ctx.0.is_empty() {
        None
    } else {
        Some(ctx.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

/// KMS's plaintext as a key, the buffer wiped.
fn to_key(plain: Option<Vec<u8>>) -> Result<Zeroizing<[u8; 32]>> {
    let mut plain =
        plain.ok_or_else(|| Error::new(ErrorKind::Unavailable, "KMS returned no key"))?;
    let mut key = Zeroizing::new([0u8; 32]);
    let ok = plain.len() == key.len();
    if ok {
        key.copy_from_slice(&plain);
    }
    plain.zeroize();
    if ok {
        Ok(key)
    } else {
        Err(Error::new(
            ErrorKind::Integrity,
            "KMS returned a key of the wrong length",
        ))
    }
}
