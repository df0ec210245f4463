//! The catalog port: a key-value index with a partition key and a sort key, conditional
//! writes, prefix queries and small transactions — exactly what DynamoDB offers.

use crate::Result;
use async_trait::async_trait;

/// DynamoDB's limit on the items of one `TransactWriteItems`.
pub const MAX_TRANSACTION_ITEMS: usize = 100;

/// DynamoDB's item size limit (400 KB, keys included). The embedded catalog enforces it too,
/// so nothing that works locally fails on AWS.
pub const MAX_RECORD_BYTES: usize = 400 * 1024;

/// One record. `version` is the caller's optimistic-concurrency counter: writers read a
/// record, change it, and write it back with `Condition::Version(old)` and `version: old+1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub pk: String,
    pub sk: String,
    pub version: u64,
    pub value: Vec<u8>,
}

impl Record {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>, value: Vec<u8>) -> Self {
        Record {
            pk: pk.into(),
            sk: sk.into(),
            version: 1,
            value,
        }
    }

    /// The size DynamoDB counts for this item: attribute names and values, with the
    /// version as a number of up to 21 bytes. The AWS adapter stores the attributes `pk`,
    /// `sk`, `ver` and `v`; counting them here keeps a record that fits locally from
    /// failing on AWS.
    pub fn size(&self) -> usize {
        const ATTRIBUTE_OVERHEAD: usize = 2 + 2 + 3 + 21 + 1;
        self.pk.len() + self.sk.len() + self.value.len() + ATTRIBUTE_OVERHEAD
    }
}

/// A condition on the record currently stored under the same keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// No condition.
    None,
    /// No record is there (`attribute_not_exists(pk)`).
    Absent,
    /// A record is there (`attribute_exists(pk)`).
    Exists,
    /// A record is there with this version.
    Version(u64),
}

/// One write of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxOp {
    Put(Record, Condition),
    Delete {
        pk: String,
        sk: String,
        cond: Condition,
    },
    /// Writes nothing; the transaction fails unless the condition holds.
    Check {
        pk: String,
        sk: String,
        cond: Condition,
    },
}

impl TxOp {
    pub fn keys(&self) -> (&str, &str) {
        match self {
            TxOp::Put(r, _) => (&r.pk, &r.sk),
            TxOp::Delete { pk, sk, .. } | TxOp::Check { pk, sk, .. } => (pk, sk),
        }
    }
}

/// One page of a query, in sort-key order.
#[derive(Clone, Debug, Default)]
pub struct Page {
    pub records: Vec<Record>,
    /// The sort key to pass as `after` for the next page; `None` on the last page.
    pub next: Option<String>,
}

#[async_trait]
pub trait Catalog: Send + Sync {
    /// # Errors
    /// `Unavailable`/`Throttled` only; a missing record is `Ok(None)`.
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Record>>;

    /// Writes the record if `cond` holds.
    ///
    /// # Errors
    /// `ConditionFailed`; `InvalidInput` when the record exceeds [`MAX_RECORD_BYTES`].
    async fn put(&self, record: Record, cond: Condition) -> Result<()>;

    /// As [`Catalog::put`], for a record nobody needs after `expires_at` (Unix seconds):
    /// DynamoDB's time to live deletes it some time after (within days, at no cost), so
    /// records written every day do not pile up. Until it is deleted it reads as usual,
    /// so a reader must not count on it being gone. A store without expiry keeps it
    /// (the default): the local catalog is small.
    ///
    /// # Errors
    /// As [`Catalog::put`].
    async fn put_expiring(&self, record: Record, cond: Condition, expires_at: u64) -> Result<()> {
        let _ = expires_at;
        self.put(record, cond).await
    }

    /// Deletes the record if `cond` holds; deleting a missing record with `Condition::None`
    /// succeeds.
    ///
    /// # Errors
    /// `ConditionFailed`.
    async fn delete(&self, pk: &str, sk: &str, cond: Condition) -> Result<()>;

    /// Records of partition `pk` whose sort key starts with `sk_prefix`, ascending (or
    /// descending), at most `limit` (the adapter may return fewer and a `next`).
    /// `after` is the `next` of the previous page.
    async fn query(
        &self,
        pk: &str,
        sk_prefix: &str,
        after: Option<&str>,
        limit: usize,
        descending: bool,
    ) -> Result<Page>;

    /// All or nothing: every condition holds and every write happens, or nothing does.
    ///
    /// # Errors
    /// `ConditionFailed` when a condition fails; `InvalidInput` for more than
    /// [`MAX_TRANSACTION_ITEMS`] operations, two operations on the same record, or an
    /// oversized record.
    async fn transact(&self, ops: Vec<TxOp>) -> Result<()>;
}

/// Convenience methods for any catalog.
#[async_trait]
pub trait CatalogExt: Catalog {
    /// Every record under the prefix, all pages, ascending.
    async fn query_all(&self, pk: &str, sk_prefix: &str) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .query(pk, sk_prefix, after.as_deref(), 1000, false)
                .await?;
            out.extend(page.records);
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }
}

impl<T: Catalog + ?Sized> CatalogExt for T {}
