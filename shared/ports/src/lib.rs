//! The ports: small, object-safe traits that the engine and the vault use for everything
//! outside the process. Each has an embedded adapter (`embedded` crate) and an AWS adapter,
//! and both must pass the same conformance suite (`testkit` crate).
//!
//! The traits offer what the AWS services offer and nothing more, so that code which works
//! on the embedded adapters cannot rely on something DynamoDB, S3, KMS or SQS lacks.
//!
//! **Architecture invariant:** no AWS, HTTP or database crate here; only `domain`.

mod catalog;
pub mod catalog_keys;
pub mod catalog_limits;
mod clock;
mod error;
mod events;
pub mod key_envelope;
mod keys;
mod object_store;
mod queue;

pub use catalog::{
    Catalog, CatalogExt, Condition, Page, Record, TxOp, MAX_RECORD_BYTES, MAX_TRANSACTION_ITEMS,
};
pub use catalog_keys::{CatalogKey, KeyRange};
pub use clock::{Clock, FixedClock, SystemClock};
pub use error::{Error, ErrorKind, Result};
pub use events::{Event, EventBus};
pub use key_envelope::{CatalogTenantKeys, KeyEnvelope, LocalRootKey, RootKey, TenantKeyStore};
pub use keys::{DataKey, EncryptionContext, KeyService};
pub use object_store::{
    ByteSource, ListPage, ObjectKey, ObjectStore, ObjectStoreExt, ReadSource, EXPIRING_KINDS,
    EXPORT_KIND, STREAM_PART_BYTES,
};
pub use queue::{
    check_batch, Queue, QueueMessage, MAX_BATCH as QUEUE_MAX_BATCH, MAX_MESSAGE_BYTES,
};
