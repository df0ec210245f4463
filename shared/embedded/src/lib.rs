//! The embedded adapters: every port served from one machine, for the single-host
//! deployment and for fast offline tests.
//!
//! | port | adapter | backed by |
//! | --- | --- | --- |
//! | `ObjectStore` | [`FsObjectStore`] | a directory tree, write-once via temp file + hard link |
//! | `Catalog` | [`SqliteCatalog`] | one SQLite file (WAL, `synchronous=FULL`) |
//! | `KeyService` | [`FileKeyService`] | a 0600 master key file, AES-256-GCM wrapping |
//! | `Queue` | [`MemQueue`] | process memory |
//! | `EventBus` | [`MemEventBus`] | process memory |
//!
//! Every adapter passes the `testkit` conformance suite the AWS adapters pass, and keeps the
//! AWS limits (record and message sizes, batch sizes) so that nothing that works here fails
//! on AWS. Errors are the ports' [`ports::Error`]; this crate adds no error type of its own.
//!
//! **Architecture invariant:** no AWS or HTTP crate here; only `ports` of ours.

mod file_key_service;
mod fs_object_store;
mod mem_event_bus;
mod mem_queue;
mod sqlite_catalog;

pub use file_key_service::FileKeyService;
pub use fs_object_store::FsObjectStore;
pub use mem_event_bus::MemEventBus;
pub use mem_queue::MemQueue;
pub use sqlite_catalog::SqliteCatalog;

use ports::{Error, ErrorKind, Result};
use std::fmt::Display;
use std::io;

/// Runs blocking file or database work off the async worker threads when a tokio runtime
/// is there (so a multi-thread runtime's workers never stall on an fsync), inline when not.
///
/// # Errors
/// Whatever `f` returns; `Unavailable` if the blocking task panicked or was cancelled.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle
            .spawn_blocking(f)
            .await
            .map_err(|e| Error::with_source(ErrorKind::Unavailable, "blocking task failed", e))?,
        Err(_) => f(),
    }
}

/// Maps an I/O error on `what` (an object key, a file name: never data) to a port error:
/// a missing file is `NotFound`, anything else a transient `Unavailable`.
pub(crate) fn io_error(e: io::Error, what: impl Display) -> Error {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {
            Error::with_source(ErrorKind::NotFound, format!("{what} not found"), e)
        }
        _ => Error::with_source(ErrorKind::Unavailable, format!("{what}: I/O error"), e),
    }
}

/// Makes a directory's entries (a new name linked or created in it) durable.
pub(crate) fn sync_dir(dir: &std::path::Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// A random name for a temporary file, unique across processes and threads.
pub(crate) fn temp_name(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::random::<u64>())
}
