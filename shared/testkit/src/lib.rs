//! What every crate's tests share: the conformance suites for the ports (one public async
//! function per port, run by every adapter: embedded in `embedded/tests/conformance.rs`,
//! AWS against moto's server, so that code proven on one backend behaves the same on the
//! other), the one test environment ([`mod@env`]), the one fake connector ([`fake`]) and
//! damage done on purpose to stored objects ([`damage`]).
//!
//! The suites test the contract written in the port traits' doc comments, edge cases
//! included. They panic with a message naming the failed check, as test helpers do.
//!
//! Backends may be shared between runs (a long-lived moto server, a real bucket), so every
//! suite writes under fresh random names ([`unique`], [`unique_tenant`]) and never expects
//! a backend to be empty.

mod catalog;
pub mod damage;
pub mod env;
mod events;
pub mod fake;
pub mod faults;
mod keys;
mod object_store;
mod queue;

pub use catalog::catalog_suite;
pub use events::event_bus_suite;
pub use keys::key_service_suite;
pub use object_store::object_store_suite;
pub use queue::queue_suite;

use ports::ErrorKind;
use std::time::Duration;

/// A name no earlier run used: `base` followed by 16 random hex digits, valid as a tenant
/// id, a task name, a catalog partition or a queue name.
pub fn unique(base: &str) -> String {
    format!("{base}{:016x}", rand::random::<u64>())
}

/// A fresh tenant, so that a suite's objects never meet those of an earlier run.
pub fn unique_tenant() -> domain::TenantId {
    domain::TenantId::new(unique("tk")).expect("generated tenant ids are valid")
}

/// Asserts that `r` failed with `kind`; `what` names the check in the panic message.
#[track_caller]
pub fn assert_kind<T>(r: ports::Result<T>, kind: ErrorKind, what: &str) {
    match r {
        Ok(_) => panic!("{what}: expected a {kind:?} error, got Ok"),
        Err(e) => assert_eq!(
            e.kind(),
            kind,
            "{what}: expected a {kind:?} error, got {:?}: {e}",
            e.kind()
        ),
    }
}

/// Asserts that `r` succeeded and returns its value; `what` names the check.
#[track_caller]
pub fn assert_ok<T>(r: ports::Result<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: expected Ok, got {:?}: {e}", e.kind()),
    }
}

/// A bounded wait for backends whose effects show with a delay (SQS short polling, a
/// visibility timeout running out): ask, and if the answer is not there yet, call
/// [`Patience::again`].
pub(crate) struct Patience {
    deadline: tokio::time::Instant,
    step: Duration,
}

impl Patience {
    pub(crate) fn new(limit: Duration, step: Duration) -> Self {
        Patience {
            deadline: tokio::time::Instant::now() + limit,
            step,
        }
    }

    /// Sleeps one step and returns true, or returns false once the time is up.
    pub(crate) async fn again(&self) -> bool {
        if tokio::time::Instant::now() >= self.deadline {
            return false;
        }
        tokio::time::sleep(self.step).await;
        true
    }
}
