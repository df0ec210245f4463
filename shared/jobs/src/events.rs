//! What background work announces on the event bus (EventBridge on AWS): a backup of an
//! account completed or failed, a restore or export completed or failed. Subscribers
//! (alerting, a tenant's webhook, billing) match on the source [`SOURCE`] and the detail
//! types below; ARCHITECTURE.md lists the fields.
//!
//! Events carry ids and counts, never personal data: no item names, no error text (which
//! may quote a mailbox or a file name), and no account id, since a Microsoft 365 account
//! is a person's address. An account is named by [`account_ref`], an opaque digest that
//! stays the same from day to day, so that a subscriber can follow one account's backups
//! without learning whose they are.

use crate::Context;
use domain::{AccountId, TaskId, TenantId};
use ports::Event;
use serde_json::{json, Value};

/// The `source` of every event Lifeboat publishes.
pub const SOURCE: &str = "lifeboat";

pub const BACKUP_COMPLETED: &str = "Backup Completed";
pub const BACKUP_FAILED: &str = "Backup Failed";
pub const RESTORE_COMPLETED: &str = "Restore Completed";
pub const RESTORE_FAILED: &str = "Restore Failed";
pub const EXPORT_COMPLETED: &str = "Export Completed";
pub const EXPORT_FAILED: &str = "Export Failed";

/// An opaque name for an account in events: 16 bytes of a BLAKE3 digest of tenant, task
/// and account, in hex.
pub fn account_ref(tenant: &TenantId, task: &TaskId, account: &AccountId) -> String {
    let mut h = blake3::Hasher::new_derive_key("lifeboat 2026 event account reference");
    for part in [tenant.as_str(), task.as_str(), account.as_str()] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex(&h.finalize().as_bytes()[..16])
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Publishes one event when the context has a bus. A bus that fails is logged and
/// otherwise ignored: the work it reports is done and recorded either way.
pub(crate) async fn publish(ctx: &Context, detail_type: &str, detail: Value) {
    let Some(bus) = &ctx.events else {
        return;
    };
    let event = Event {
        source: SOURCE.to_string(),
        detail_type: detail_type.to_string(),
        detail: detail.to_string(),
    };
    if let Err(e) = bus.put_events(&[event]).await {
        tracing::warn!(detail_type, error = %e, "event not published");
    }
}

/// The fields every event has.
pub(crate) fn base(tenant: &TenantId, task: &TaskId, account: &AccountId) -> Value {
    json!({
        "tenant": tenant,
        "task": task,
        "account_ref": account_ref(tenant, task, account),
    })
}
