//! The tenant-key envelope, written once for every key service:
//!
//! ```text
//! root key (KMS: one key per region; embedded: the master key file)
//!   └─ tenant key (32 bytes made by the root under the context {tenant};
//!      │           kept wrapped by the root in a TenantKeyStore)
//!      └─ task data key (32 bytes made here; AES-256-GCM-wrapped under the tenant key,
//!                        the context's canonical bytes as associated data)
//! ```
//!
//! Why a key per tenant between the root and the data keys:
//! - **Crypto-shredding.** Deleting one stored tenant key makes every data key of the tenant
//!   unreadable wherever a copy of it survives (a catalog backup, a log), without touching
//!   the root key, which other tenants need.
//! - **One KMS key per region.** A KMS key per tenant would cost more a month than a small
//!   tenant pays; tenant keys are plain records wrapped by the one regional key.
//! - **One root call per tenant per instance.** A tenant key is unwrapped by the root on its
//!   first use in an instance (a Lambda execution environment, a process) and kept, wiped on
//!   drop, for the instance's life; data keys are then wrapped and unwrapped locally.
//!
//! [`RootKey`] and [`TenantKeyStore`] are the two narrow traits an adapter implements;
//! [`KeyEnvelope`] is the [`KeyService`] built over them.
//!
//! # Formats
//! Everything this module writes starts with a version byte, so that bytes made one way are
//! refused cleanly, never read as another kind:
//! - `1 || root-wrapped key`: a data key whose context has no tenant, wrapped by the root;
//! - `2 || 12-byte nonce || AES-256-GCM(tenant key, data key) || 16-byte tag`: a data key
//!   wrapped under its tenant's key;
//! - `3 || root-wrapped key`: a stored tenant key (the root's context is `{tenant}`).

use crate::{
    catalog_keys, Catalog, Condition, DataKey, EncryptionContext, Error, ErrorKind, KeyService,
    Record, Result,
};
use async_trait::async_trait;
use domain::TenantId;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use zeroize::Zeroizing;

/// First byte of a data key wrapped directly by the root (a context without a tenant).
const WRAP_ROOT: u8 = 1;
/// First byte of a data key wrapped under its tenant's key.
const WRAP_TENANT: u8 = 2;
/// First byte of a stored tenant key.
const TENANT_KEY: u8 = 3;
/// AES-256-GCM's tag.
const TAG_LEN: usize = 16;
/// `nonce || AES-256-GCM(key, 32-byte key) || tag`.
const SEALED_LEN: usize = NONCE_LEN + 32 + TAG_LEN;
/// A data key wrapped under its tenant's key: the version byte and the sealed key.
const TENANT_WRAPPED_LEN: usize = 1 + SEALED_LEN;

/// The root of the hierarchy, shaped like KMS: it makes keys and unwraps them, and its own
/// key never leaves it.
#[async_trait]
pub trait RootKey: Send + Sync {
    /// A fresh random 32-byte key and its form wrapped by the root under `ctx`.
    ///
    /// # Errors
    /// `Unavailable` for a transient failure (randomness, network); `Other` for a setup
    /// error (the root key is missing or disabled), with the fix in the message.
    async fn generate(&self, ctx: &EncryptionContext) -> Result<DataKey>;

    /// Unwraps a key made by [`RootKey::generate`] under the same `ctx`.
    ///
    /// # Errors
    /// `Integrity` when the context differs, the bytes were altered or another root made
    /// them.
    async fn decrypt(&self, wrapped: &[u8], ctx: &EncryptionContext)
        -> Result<Zeroizing<[u8; 32]>>;
}

/// Where wrapped tenant keys are kept, one per tenant. The bytes are wrapped by the root,
/// so they are not secret; deleting them is what shreds the tenant.
#[async_trait]
pub trait TenantKeyStore: Send + Sync {
    /// The stored wrapped key of `tenant`, if there is one.
    async fn load(&self, tenant: &TenantId) -> Result<Option<Vec<u8>>>;

    /// Stores `wrapped` as the key of `tenant` unless one is there already, atomically:
    /// `Ok(true)` when stored, `Ok(false)` when another writer's key was there first (and
    /// is kept). Two processes racing here thus agree on one key.
    async fn store_if_absent(&self, tenant: &TenantId, wrapped: &[u8]) -> Result<bool>;

    /// Deletes the key of `tenant` for good; deleting a missing key succeeds.
    async fn delete(&self, tenant: &TenantId) -> Result<()>;
}

#[async_trait]
impl<T: RootKey + ?Sized> RootKey for Arc<T> {
    async fn generate(&self, ctx: &EncryptionContext) -> Result<DataKey> {
        (**self).generate(ctx).await
    }

    async fn decrypt(
        &self,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; 32]>> {
        (**self).decrypt(wrapped, ctx).await
    }
}

#[async_trait]
impl<T: TenantKeyStore + ?Sized> TenantKeyStore for Arc<T> {
    async fn load(&self, tenant: &TenantId) -> Result<Option<Vec<u8>>> {
        (**self).load(tenant).await
    }

    async fn store_if_absent(&self, tenant: &TenantId, wrapped: &[u8]) -> Result<bool> {
        (**self).store_if_absent(tenant, wrapped).await
    }

    async fn delete(&self, tenant: &TenantId) -> Result<()> {
        (**self).delete(tenant).await
    }
}

/// Tenant keys kept in the catalog, each in its tenant's own partition
/// ([`catalog_keys::tenant_key`]), so that deleting a tenant's directory deletes its key
/// too. Store-if-absent is a put conditioned on no record being there.
pub struct CatalogTenantKeys {
    catalog: Arc<dyn Catalog>,
}

impl CatalogTenantKeys {
    pub fn new(catalog: Arc<dyn Catalog>) -> Self {
        CatalogTenantKeys { catalog }
    }
}

impl std::fmt::Debug for CatalogTenantKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogTenantKeys").finish_non_exhaustive()
    }
}

#[async_trait]
impl TenantKeyStore for CatalogTenantKeys {
    async fn load(&self, tenant: &TenantId) -> Result<Option<Vec<u8>>> {
        let key = catalog_keys::tenant_key(tenant);
        Ok(self.catalog.get(&key.pk, &key.sk).await?.map(|r| r.value))
    }

    async fn store_if_absent(&self, tenant: &TenantId, wrapped: &[u8]) -> Result<bool> {
        let key = catalog_keys::tenant_key(tenant);
        let record = Record::new(key.pk, key.sk, wrapped.to_vec());
        match self.catalog.put(record, Condition::Absent).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::ConditionFailed => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn delete(&self, tenant: &TenantId) -> Result<()> {
        let key = catalog_keys::tenant_key(tenant);
        self.catalog.delete(&key.pk, &key.sk, Condition::None).await
    }
}

/// A root key held in memory: 32 bytes, wrapping with AES-256-GCM and the context's
/// canonical bytes as associated data. The embedded adapter loads it from its master key
/// file; tests make one at random.
///
/// Wrapped form: `12-byte random nonce || AES-256-GCM(root, key) || tag`. Random nonces
/// are safe for far more keys than one machine will make (2^32 under one root key).
pub struct LocalRootKey {
    key: Zeroizing<[u8; 32]>,
    rng: SystemRandom,
}

impl LocalRootKey {
    pub fn new(key: Zeroizing<[u8; 32]>) -> Self {
        LocalRootKey {
            key,
            rng: SystemRandom::new(),
        }
    }

    /// A root key of fresh random bytes (for tests: it dies with the process).
    ///
    /// # Errors
    /// `Unavailable` when the system's random source fails.
    pub fn random() -> Result<Self> {
        let rng = SystemRandom::new();
        let key = random_key(&rng)?;
        Ok(LocalRootKey { key, rng })
    }
}

impl std::fmt::Debug for LocalRootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalRootKey(<redacted>)")
    }
}

#[async_trait]
impl RootKey for LocalRootKey {
    async fn generate(&self, ctx: &EncryptionContext) -> Result<DataKey> {
        let plaintext = random_key(&self.rng)?;
        let wrapped = seal(&self.key, &plaintext, &ctx.canonical_bytes(), &self.rng)?;
        Ok(DataKey { plaintext, wrapped })
    }

    async fn decrypt(
        &self,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; 32]>> {
        open(&self.key, wrapped, &ctx.canonical_bytes()).ok_or_else(|| {
            Error::new(
                ErrorKind::Integrity,
                "wrapped key refused by the root key: wrong context, wrong root key or altered",
            )
        })
    }
}

/// An unwrapped tenant key: wiped on drop, never shown.
struct TenantKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for TenantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TenantKey(<redacted>)")
    }
}

/// The key service over a root key `R` and a store of wrapped tenant keys `S` (see the
/// module's documentation for the hierarchy and the formats).
///
/// A tenant's key is made on the first data key of the tenant; two instances making it at
/// once agree on one (the store keeps the first, the other instance loads it). A data key
/// whose context has no tenant has nothing to be shredded with, so the root wraps it
/// directly; such a key presented with a tenant's context is never unwrapped, since it
/// would survive the tenant's shredding.
///
/// Unwrapped tenant keys are cached for the life of the value and wiped when dropped;
/// `Debug` shows none of them.
pub struct KeyEnvelope<R, S> {
    root: R,
    store: S,
    rng: SystemRandom,
    tenants: Mutex<HashMap<TenantId, Arc<TenantKey>>>,
}

impl<R: std::fmt::Debug, S: std::fmt::Debug> std::fmt::Debug for KeyEnvelope<R, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEnvelope")
            .field("root", &self.root)
            .field("store", &self.store)
            .field("cached_tenants", &self.cache().len())
            .finish()
    }
}

impl<R, S> KeyEnvelope<R, S> {
    pub fn new(root: R, store: S) -> Self {
        KeyEnvelope {
            root,
            store,
            rng: SystemRandom::new(),
            tenants: Mutex::new(HashMap::new()),
        }
    }

    pub fn root(&self) -> &R {
        &self.root
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<TenantId, Arc<TenantKey>>> {
        // The map is consistent at every step; a poisoned lock is safe to use.
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<R: RootKey, S: TenantKeyStore> KeyEnvelope<R, S> {
    /// The tenant's key: from the cache, from the store, or (when `create`) made now.
    ///
    /// # Errors
    /// `Integrity` when there is no key and none may be made (destroyed, or never made) or
    /// the stored key does not unwrap; `Unavailable` when it was destroyed while being made.
    async fn tenant_key(&self, tenant: &TenantId, create: bool) -> Result<Arc<TenantKey>> {
        if let Some(k) = self.cache().get(tenant) {
            return Ok(k.clone());
        }
        let ctx = tenant_context(tenant);
        let key = match self.store.load(tenant).await? {
            Some(stored) => self.open_tenant_key(&stored, &ctx).await?,
            None if create => {
                let made = self.root.generate(&ctx).await?;
                let mut stored = Vec::with_capacity(1 + made.wrapped.len());
                stored.push(TENANT_KEY);
                stored.extend_from_slice(&made.wrapped);
                if self.store.store_if_absent(tenant, &stored).await? {
                    made.plaintext
                } else {
                    // Another instance made it first: use theirs.
                    match self.store.load(tenant).await? {
                        Some(stored) => self.open_tenant_key(&stored, &ctx).await?,
                        None => {
                            return Err(Error::new(
                                ErrorKind::Unavailable,
                                "the tenant's key was destroyed while being made; try again",
                            ))
                        }
                    }
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
            .cache()
            .entry(tenant.clone())
            .or_insert_with(|| Arc::new(TenantKey(key)))
            .clone();
        Ok(key)
    }

    async fn open_tenant_key(
        &self,
        stored: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; 32]>> {
        match stored.split_first() {
            Some((&TENANT_KEY, wrapped)) if !wrapped.is_empty() => {
                self.root.decrypt(wrapped, ctx).await
            }
            _ => Err(Error::new(
                ErrorKind::Integrity,
                "stored tenant key is damaged or not in a format this version reads",
            )),
        }
    }
}

#[async_trait]
impl<R: RootKey, S: TenantKeyStore> KeyService for KeyEnvelope<R, S> {
    async fn generate_data_key(&self, ctx: &EncryptionContext) -> Result<DataKey> {
        let Some(tenant) = context_tenant(ctx)? else {
            // No tenant to shred it with: the root wraps it directly.
            let made = self.root.generate(ctx).await?;
            let mut wrapped = Vec::with_capacity(1 + made.wrapped.len());
            wrapped.push(WRAP_ROOT);
            wrapped.extend_from_slice(&made.wrapped);
            return Ok(DataKey {
                plaintext: made.plaintext,
                wrapped,
            });
        };
        let tenant_key = self.tenant_key(&tenant, true).await?;
        let plaintext = random_key(&self.rng)?;
        let sealed = seal(&tenant_key.0, &plaintext, &ctx.canonical_bytes(), &self.rng)?;
        let mut wrapped = Vec::with_capacity(TENANT_WRAPPED_LEN);
        wrapped.push(WRAP_TENANT);
        wrapped.extend_from_slice(&sealed);
        Ok(DataKey { plaintext, wrapped })
    }

    async fn decrypt_data_key(
        &self,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; 32]>> {
        match (wrapped.split_first(), context_tenant(ctx)?) {
            (Some((&WRAP_ROOT, rest)), None) if !rest.is_empty() => {
                self.root.decrypt(rest, ctx).await
            }
            (Some((&WRAP_TENANT, rest)), Some(tenant)) if rest.len() == SEALED_LEN => {
                let tenant_key = self.tenant_key(&tenant, false).await?;
                open(&tenant_key.0, rest, &ctx.canonical_bytes()).ok_or_else(refused)
            }
            // Among others: a key the root wrapped directly, presented with a tenant's
            // context. It would escape the tenant's shredding, so it is never unwrapped.
            _ => Err(refused()),
        }
    }

    async fn destroy_tenant_keys(&self, tenant: &TenantId) -> Result<()> {
        self.cache().remove(tenant);
        let deleted = self.store.delete(tenant).await;
        // Again, for a use of the tenant that loaded its key while it was being deleted.
        self.cache().remove(tenant);
        deleted
    }
}

/// The context the root sees for a tenant key. Only tenant keys are ever made by the root
/// under a context holding a tenant (data keys of a tenant are wrapped here), and a
/// root-wrapped key presented with a tenant's context is refused, so a stored tenant key can
/// only ever be opened as a tenant key.
fn tenant_context(tenant: &TenantId) -> EncryptionContext {
    EncryptionContext([("tenant".to_string(), tenant.to_string())].into())
}

/// The tenant of `ctx`, if it names one.
///
/// # Errors
/// `InvalidInput` when it names one that is not a valid tenant id.
fn context_tenant(ctx: &EncryptionContext) -> Result<Option<TenantId>> {
    ctx.0
        .get("tenant")
        .map(|t| {
            TenantId::new(t.as_str())
                .map_err(|_| Error::new(ErrorKind::InvalidInput, "context has an invalid tenant"))
        })
        .transpose()
}

fn refused() -> Error {
    Error::new(
        ErrorKind::Integrity,
        "wrapped data key refused: wrong context, wrong key or altered",
    )
}

fn random_key(rng: &SystemRandom) -> Result<Zeroizing<[u8; 32]>> {
    let mut key = Zeroizing::new([0u8; 32]);
    rng.fill(&mut key[..]).map_err(|_| random_failed())?;
    Ok(key)
}

fn random_failed() -> Error {
    Error::new(ErrorKind::Unavailable, "system random source failed")
}

fn aead_key(key: &[u8; 32]) -> Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| Error::new(ErrorKind::Other, "key rejected by AES-256-GCM"))
}

/// `nonce || AES-256-GCM(key, plaintext, aad) || tag`, with a random nonce.
fn seal(key: &[u8; 32], plaintext: &[u8; 32], aad: &[u8], rng: &SystemRandom) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| random_failed())?;
    let mut sealed = Zeroizing::new(plaintext.to_vec());
    aead_key(key)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut *sealed,
        )
        .map_err(|_| Error::new(ErrorKind::Other, "key wrapping failed"))?;
    let mut out = Vec::with_capacity(SEALED_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The key sealed by [`seal`], or `None` when it does not open (wrong key, wrong `aad`,
/// altered, wrong length).
fn open(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
    if sealed.len() != SEALED_LEN {
        return None;
    }
    let nonce = Nonce::try_assume_unique_for_key(&sealed[..NONCE_LEN]).ok()?;
    let mut buf = Zeroizing::new(sealed[NONCE_LEN..].to_vec());
    let plain = aead_key(key)
        .ok()?
        .open_in_place(nonce, Aad::from(aad), &mut buf[..])
        .ok()?;
    let mut out = Zeroizing::new([0u8; 32]);
    if plain.len() != out.len() {
        return None;
    }
    out.copy_from_slice(plain);
    Some(out)
}

#[cfg(test)]
mod tests;
