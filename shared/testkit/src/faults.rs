//! Fault injection on the ports: wrappers that fail some calls with a throttling or
//! unavailability error, as S3, DynamoDB and KMS do under load, so that tests can show that
//! jobs retry and finish, that no partial snapshot becomes visible and that nothing is
//! lost. Faults are deterministic (every `n`-th call, up to a budget), so a failing test
//! fails the same way twice.
//!
//! A write may fail *after* it took effect (the response was lost), as a real network
//! allows: the caller then sees an error for a write that happened.

use async_trait::async_trait;
use bytes::Bytes;
use domain::TenantId;
use ports::{
    ByteSource, Catalog, Condition, DataKey, EncryptionContext, Error, ErrorKind, KeyService,
    ListPage, ObjectKey, ObjectStore, Page, Record, Result, TxOp,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use zeroize::Zeroizing;

/// Which calls fail: every `every`-th call counted across all wrappers sharing the plan,
/// at most `budget` times.
#[derive(Debug)]
pub struct FaultPlan {
    every: u64,
    calls: AtomicU64,
    budget: AtomicU64,
    injected: AtomicU64,
}

impl FaultPlan {
    pub fn new(every: u64, budget: u64) -> Arc<Self> {
        Arc::new(FaultPlan {
            every: every.max(1),
            calls: AtomicU64::new(0),
            budget: AtomicU64::new(budget),
            injected: AtomicU64::new(0),
        })
    }

    /// How many calls the wrappers sharing the plan made so far (a plan with no budget
    /// only counts).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// Whether this call fails, and how: alternately throttled and unavailable.
    fn next(&self, what: &str) -> Option<Error> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if !n.is_multiple_of(self.every) {
            return None;
        }
        let took = self
            .budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1));
        if took.is_err() {
            return None;
        }
        let k = self.injected.fetch_add(1, Ordering::SeqCst);
        let kind = if k.is_multiple_of(2) {
            ErrorKind::Throttled
        } else {
            ErrorKind::Unavailable
        };
        Some(Error::new(kind, format!("injected fault on {what}")))
    }

    /// Whether a failing write fails before or after taking effect (alternating).
    fn after(&self) -> bool {
        self.injected.load(Ordering::SeqCst) % 4 >= 2
    }
}

/// An object store whose calls fail by plan.
pub struct FaultyStore {
    pub inner: Arc<dyn ObjectStore>,
    pub plan: Arc<FaultPlan>,
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_if_absent(&self, key: &ObjectKey, data: Bytes) -> Result<()> {
        match self.plan.next("object put") {
            Some(e) if self.plan.after() => {
                self.inner.put_if_absent(key, data).await?;
                Err(e)
            }
            Some(e) => Err(e),
            None => self.inner.put_if_absent(key, data).await,
        }
    }
    /// Forwarded, so that the inner store streams as it would unwrapped (the port's
    /// default would gather the whole object in memory first); one call of the plan, as
    /// the default's one put was.
    async fn put_stream_if_absent(
        &self,
        key: &ObjectKey,
        source: &mut dyn ByteSource,
    ) -> Result<u64> {
        match self.plan.next("object streamed put") {
            Some(e) if self.plan.after() => {
                self.inner.put_stream_if_absent(key, source).await?;
                Err(e)
            }
            Some(e) => Err(e),
            None => self.inner.put_stream_if_absent(key, source).await,
        }
    }
    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        match self.plan.next("object get") {
            Some(e) => Err(e),
            None => self.inner.get(key).await,
        }
    }
    async fn get_range(&self, key: &ObjectKey, start: u64, end: u64) -> Result<Bytes> {
        match self.plan.next("object range get") {
            Some(e) => Err(e),
            None => self.inner.get_range(key, start, end).await,
        }
    }
    async fn size(&self, key: &ObjectKey) -> Result<u64> {
        match self.plan.next("object head") {
            Some(e) => Err(e),
            None => self.inner.size(key).await,
        }
    }
    async fn list(&self, prefix: &str, after: Option<&str>) -> Result<ListPage> {
        match self.plan.next("object list") {
            Some(e) => Err(e),
            None => self.inner.list(prefix, after).await,
        }
    }
    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        match self.plan.next("object delete") {
            Some(e) => Err(e),
            None => self.inner.delete(key).await,
        }
    }
}

/// A catalog whose calls fail by plan.
pub struct FaultyCatalog {
    pub inner: Arc<dyn Catalog>,
    pub plan: Arc<FaultPlan>,
}

#[async_trait]
impl Catalog for FaultyCatalog {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Record>> {
        match self.plan.next("catalog get") {
            Some(e) => Err(e),
            None => self.inner.get(pk, sk).await,
        }
    }
    async fn put(&self, record: Record, cond: Condition) -> Result<()> {
        match self.plan.next("catalog put") {
            Some(e) if self.plan.after() => {
                self.inner.put(record, cond).await?;
                Err(e)
            }
            Some(e) => Err(e),
            None => self.inner.put(record, cond).await,
        }
    }
    async fn delete(&self, pk: &str, sk: &str, cond: Condition) -> Result<()> {
        match self.plan.next("catalog delete") {
            Some(e) => Err(e),
            None => self.inner.delete(pk, sk, cond).await,
        }
    }
    async fn query(
        &self,
        pk: &str,
        sk_prefix: &str,
        after: Option<&str>,
        limit: usize,
        descending: bool,
    ) -> Result<Page> {
        match self.plan.next("catalog query") {
            Some(e) => Err(e),
            None => {
                self.inner
                    .query(pk, sk_prefix, after, limit, descending)
                    .await
            }
        }
    }
    async fn transact(&self, ops: Vec<TxOp>) -> Result<()> {
        match self.plan.next("catalog transaction") {
            Some(e) => Err(e),
            None => self.inner.transact(ops).await,
        }
    }
}

/// A key service whose calls fail by plan.
pub struct FaultyKeys {
    pub inner: Arc<dyn KeyService>,
    pub plan: Arc<FaultPlan>,
}

#[async_trait]
impl KeyService for FaultyKeys {
    async fn generate_data_key(&self, ctx: &EncryptionContext) -> Result<DataKey> {
        match self.plan.next("generate data key") {
            Some(e) => Err(e),
            None => self.inner.generate_data_key(ctx).await,
        }
    }
    async fn decrypt_data_key(
        &self,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; 32]>> {
        match self.plan.next("decrypt data key") {
            Some(e) => Err(e),
            None => self.inner.decrypt_data_key(wrapped, ctx).await,
        }
    }
    async fn destroy_tenant_keys(&self, tenant: &TenantId) -> Result<()> {
        match self.plan.next("destroy tenant keys") {
            Some(e) => Err(e),
            None => self.inner.destroy_tenant_keys(tenant).await,
        }
    }
}
