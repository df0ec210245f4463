//! The key service port: envelope encryption as KMS does it. A data key is generated under an
//! encryption context and can be unwrapped only with the same context.

use crate::Result;
use async_trait::async_trait;
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// Names what a data key belongs to (`tenant`, `task`). It is authenticated, not secret:
/// a wrapped key presented with another context does not unwrap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncryptionContext(pub BTreeMap<String, String>);

impl EncryptionContext {
    pub fn for_task(tenant: &domain::TenantId, task: &domain::TaskId) -> Self {
        let mut m = BTreeMap::new();
        m.insert("tenant".to_string(), tenant.to_string());
        m.insert("task".to_string(), task.to_string());
        EncryptionContext(m)
    }

    /// A canonical byte form (sorted, length-prefixed), for use as associated data.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in &self.0 {
            for s in [k, v] {
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
        out
    }
}

/// A fresh 256-bit data key: the plaintext (wiped on drop, never logged) and its wrapped
/// form, which is what gets stored.
pub struct DataKey {
    pub plaintext: Zeroizing<[u8; 32]>,
    pub wrapped: Vec<u8>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("plaintext", &"<redacted>")
            .field("wrapped_len", &self.wrapped.len())
            .finish()
    }
}

#[async_trait]
pub trait KeyService: Send + Sync {
    /// A new random data key, wrapped under the master key with `ctx`.
    async fn generate_data_key(&self, ctx: &EncryptionContext) -> Result<DataKey>;

    /// Unwraps a key made by [`KeyService::generate_data_key`].
    ///
    /// # Errors
    /// `Integrity` when the context differs, the wrapped key was altered, or the tenant's
    /// keys were destroyed.
    async fn decrypt_data_key(
        &self,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; 32]>>;

    /// Crypto-shredding: destroys the key material under which every data key of `tenant`
    /// (a context whose `tenant` is this one) was wrapped, so that no copy of a wrapped key,
    /// wherever it survives (a catalog backup, a log), can ever be unwrapped again. Keys of
    /// other tenants are untouched; destroying twice succeeds. On AWS the tenant's key is a
    /// catalog record wrapped by the region's one KMS key, and this deletes that record;
    /// DynamoDB point-in-time recovery keeps earlier states of the table for up to 35 days,
    /// so the shredding is complete once that window has passed.
    async fn destroy_tenant_keys(&self, tenant: &domain::TenantId) -> Result<()>;
}
