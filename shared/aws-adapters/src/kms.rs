//! `KmsKeyService`: envelope encryption with one KMS key per region and a key per tenant.
//!
//! ```text
//! region KMS key ──wraps──▶ tenant key (32 bytes; record t#<tenant> / tenant-key)
//!                             └──wraps──▶ task data key (AES-256-GCM, context as AAD)
//! ```
//!
//! A tenant key is made by KMS `GenerateDataKey` under the context `{tenant}` and kept,
//! wrapped by KMS, in the catalog. Task data keys are made here and wrapped with AES-256-GCM
//! under the tenant key. So KMS holds one key per region (not one per tenant, whose monthly
//! price would dwarf a small tenant's bill) and is called once per tenant per instance: the
//! first use of a tenant unwraps its key, later uses find it in this instance's cache.

use crate::error::{failure, invalid, Failure};
use async_trait::async_trait;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use ports::{
    Catalog, Condition, DataKey, EncryptionContext, Error, ErrorKind, KeyService, Record, Result,
};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use zeroize::{Zeroize, Zeroizing};

/// First byte of a data key wrapped by KMS itself (a context without a tenant).
const WRAP_KMS: u8 = 1;
/// First byte of a data key wrapped under its tenant's key.
const WRAP_TENANT: u8 = 2;
/// `2 || nonce || AES-256-GCM(tenant key, data key) || tag`.
const TENANT_WRAPPED_LEN: usize = 1 + NONCE_LEN + 32 + 16;

/// Sort key of a tenant's key record, in the tenant's own partition `t#<tenant>`.
pub const TENANT_KEY_SK: &str = "tenant-key";

/// The catalog partition of a tenant's records, where its key record lives.
fn tenant_pk(tenant: &str) -> String {
    format!("t#{tenant}")
}

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
    kms: aws_sdk_kms::Client,
    key_id: String,
    catalog: Arc<dyn Catalog>,
    rng: SystemRandom,
    tenants: Mutex<HashMap<String, Arc<Zeroizing<[u8; 32]>>>>,
}

impl std::fmt::Debug for KmsKeyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsKeyService")
            .field("key_id", &self.key_id)
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
        KmsKeyService {
            kms,
            key_id: key_id.into(),
            catalog,
            rng: SystemRandom::new(),
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// The regional KMS key, as given.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

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

    /// A fresh 32-byte key from KMS under `ctx`: its plaintext and KMS's wrapped form.
    async fn kms_generate(&self, ctx: &EncryptionContext) -> Result<DataKey> {
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

    async fn kms_decrypt(
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

    /// The tenant's key: from this instance's cache, from its catalog record, or (when
    /// `create`) made now. Two instances making it at once agree: the record is written
    /// only if absent, and the loser uses the winner's.
    ///
    /// # Errors
    /// `Integrity` when there is no key and none may be made (destroyed, or never made).
    async fn tenant_key(&self, tenant: &str, create: bool) -> Result<Arc<Zeroizing<[u8; 32]>>> {
        if let Some(k) = self.cached(tenant) {
            return Ok(k);
        }
        domain::TenantId::new(tenant).map_err(|_| invalid("context has an invalid tenant"))?;
        let pk = tenant_pk(tenant);
        let ctx = tenant_context(tenant);
        let key =
            match self.catalog.get(&pk, TENANT_KEY_SK).await? {
                Some(rec) => self.kms_decrypt(&rec.value, &ctx).await?,
                None if create => {
                    let made = self.kms_generate(&ctx).await?;
                    let rec = Record::new(pk.clone(), TENANT_KEY_SK, made.wrapped);
                    match self.catalog.put(rec, Condition::Absent).await {
                        Ok(()) => made.plaintext,
                        Err(e) if e.kind() == ErrorKind::ConditionFailed => {
                            match self.catalog.get(&pk, TENANT_KEY_SK).await? {
                                Some(rec) => self.kms_decrypt(&rec.value, &ctx).await?,
                                None => return Err(Error::new(
                                    ErrorKind::Unavailable,
                                    "the tenant's key was destroyed while being made; try again",
                                )),
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
                None => {
                    return Err(Error::new(
                        ErrorKind::Integrity,
                        "wrapped data key refused: the tenant's key is destroyed or was never made",
                    ))
                }
            };
        // Another call may have cached it meanwhile: keep one.
        let key = self
            .lock()
            .entry(tenant.to_string())
            .or_insert_with(|| Arc::new(key))
            .clone();
        Ok(key)
    }

    fn cached(&self, tenant: &str) -> Option<Arc<Zeroizing<[u8; 32]>>> {
        self.lock().get(tenant).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Zeroizing<[u8; 32]>>>> {
        // The map is consistent at every step; a poisoned lock is safe to use.
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The context KMS sees for a tenant key. Only tenant keys are ever made under a context
/// holding nothing but `tenant`, and a wrapped key presented with a tenant in its context is
/// never sent to KMS (see `decrypt_data_key`), so a tenant key record can only be opened
/// as a tenant key.
fn tenant_context(tenant: &str) -> EncryptionContext {
    EncryptionContext([("tenant".to_string(), tenant.to_string())].into())
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

fn aead_key(bytes: &[u8; 32]) -> Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| Error::new(ErrorKind::Other, "tenant key rejected by AES-256-GCM"))
}

fn refused() -> Error {
    Error::new(
        ErrorKind::Integrity,
        "wrapped data key refused: wrong context, wrong key or altered",
    )
}

#[async_trait]
impl KeyService for KmsKeyService {
    async fn generate_data_key(&self, ctx: &EncryptionContext) -> Result<DataKey> {
        let Some(tenant) = ctx.0.get("tenant") else {
            // No tenant to shred it with: KMS wraps it directly.
            let mut dk = self.kms_generate(ctx).await?;
            dk.wrapped.insert(0, WRAP_KMS);
            return Ok(dk);
        };
        let tenant_key = self.tenant_key(tenant, true).await?;
        let mut plaintext = Zeroizing::new([0u8; 32]);
        let mut nonce = [0u8; NONCE_LEN];
        for buf in [&mut plaintext[..], &mut nonce[..]] {
            self.rng
                .fill(buf)
                .map_err(|_| Error::new(ErrorKind::Unavailable, "system random source failed"))?;
        }
        let mut sealed = Zeroizing::new(plaintext.to_vec());
        aead_key(&tenant_key)?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(ctx.canonical_bytes()),
                &mut *sealed,
            )
            .map_err(|_| Error::new(ErrorKind::Other, "key wrapping failed"))?;
        let mut wrapped = Vec::with_capacity(TENANT_WRAPPED_LEN);
        wrapped.push(WRAP_TENANT);
        wrapped.extend_from_slice(&nonce);
        wrapped.extend_from_slice(&sealed);
        Ok(DataKey { plaintext, wrapped })
    }

    async fn decrypt_data_key(
        &self,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; 32]>> {
        match (wrapped.first(), ctx.0.get("tenant")) {
            (Some(&WRAP_KMS), None) if wrapped.len() > 1 => {
                self.kms_decrypt(&wrapped[1..], ctx).await
            }
            (Some(&WRAP_TENANT), Some(tenant)) if wrapped.len() == TENANT_WRAPPED_LEN => {
                let tenant_key = self.tenant_key(tenant, false).await?;
                let nonce = Nonce::try_assume_unique_for_key(&wrapped[1..1 + NONCE_LEN])
                    .map_err(|_| refused())?;
                let mut buf = Zeroizing::new(wrapped[1 + NONCE_LEN..].to_vec());
                let plain = aead_key(&tenant_key)?
                    .open_in_place(nonce, Aad::from(ctx.canonical_bytes()), &mut buf[..])
                    .map_err(|_| refused())?;
                let mut out = Zeroizing::new([0u8; 32]);
                if plain.len() != out.len() {
                    return Err(refused());
                }
                out.copy_from_slice(plain);
                Ok(out)
            }
            // Among others: a key KMS wrapped directly, presented with a tenant's context.
            // It would escape the tenant's shredding, so it is never unwrapped.
            _ => Err(refused()),
        }
    }

    async fn destroy_tenant_keys(&self, tenant: &domain::TenantId) -> Result<()> {
        self.lock().remove(tenant.as_str());
        self.catalog
            .delete(&tenant_pk(tenant.as_str()), TENANT_KEY_SK, Condition::None)
            .await
    }
}
