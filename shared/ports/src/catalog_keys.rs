//! Every catalog key Lifeboat uses, built here and nowhere else, so the layout of the
//! table (ARCHITECTURE.md, "Catalog layout") is one page of code: a reader finds what a
//! record is from its constructor, and a change of layout is one change.
//!
//! Every key that holds a tenant's data starts with `t#<tenant>` (design decision 7). The
//! schedule index is the one exception: the scheduler must find every tenant's due tasks
//! without scanning the table, so it is keyed by hour and shard and holds only names.

use domain::{AccountId, SnapshotId, TaskId, TenantId};

/// The keys of one record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CatalogKey {
    pub pk: String,
    pub sk: String,
}

/// Records of one partition whose sort keys start with `prefix`: what a query reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub pk: String,
    pub prefix: String,
}

impl KeyRange {
    /// What follows the prefix in `sk` (the id the record is about), if `sk` is in range.
    pub fn rest<'a>(&self, sk: &'a str) -> Option<&'a str> {
        sk.strip_prefix(self.prefix.as_str())
    }
}

fn key(pk: String, sk: String) -> CatalogKey {
    CatalogKey { pk, sk }
}

/// The partition of a tenant's directory: tasks, accounts, jobs, run and state records,
/// and (on AWS) the tenant's wrapped key.
fn tenant_pk(tenant: &TenantId) -> String {
    format!("t#{tenant}")
}

/// Everything in a tenant's directory partition (used to delete it).
pub fn tenant_directory(tenant: &TenantId) -> KeyRange {
    KeyRange {
        pk: tenant_pk(tenant),
        prefix: String::new(),
    }
}

/// A task's record: its connector, settings, wrapped data key and backup hour.
pub fn task(tenant: &TenantId, task: &TaskId) -> CatalogKey {
    key(tenant_pk(tenant), format!("task#{task}"))
}

/// Every task of a tenant.
pub fn tasks(tenant: &TenantId) -> KeyRange {
    KeyRange {
        pk: tenant_pk(tenant),
        prefix: "task#".into(),
    }
}

/// What is known of one account of a task (its name, its services).
pub fn account(tenant: &TenantId, task: &TaskId, account: &AccountId) -> CatalogKey {
    key(tenant_pk(tenant), format!("account#{task}#{account}"))
}

/// Every account of a task; [`KeyRange::rest`] of a record's sort key is the account id.
pub fn accounts(tenant: &TenantId, task: &TaskId) -> KeyRange {
    KeyRange {
        pk: tenant_pk(tenant),
        prefix: format!("account#{task}#"),
    }
}

/// A restore or export job of the tenant.
pub fn job(tenant: &TenantId, id: &str) -> CatalogKey {
    key(tenant_pk(tenant), format!("job#{id}"))
}

/// The last time the tenant asked by hand for `what` of a task (an on-demand backup of the
/// task or of one account, an export of an account): what a cooldown is measured from.
/// `what` is ours (`backup`, `backup#<account>`, `export#<account>`), never user text
/// beyond an account id.
pub fn on_demand(tenant: &TenantId, task: &TaskId, what: &str) -> CatalogKey {
    key(tenant_pk(tenant), format!("demand#{task}#{what}"))
}

/// A task's last scheduled day (claimed, then queued).
pub fn run(tenant: &TenantId, task: &TaskId) -> CatalogKey {
    key(tenant_pk(tenant), format!("run#{task}"))
}

/// An account's backup state: lease, last day done, last snapshot, last error.
pub fn state(tenant: &TenantId, task: &TaskId, account: &AccountId) -> CatalogKey {
    key(tenant_pk(tenant), format!("state#{task}#{account}"))
}

/// Every account state of a task; [`KeyRange::rest`] of a record's sort key is the account id.
pub fn states(tenant: &TenantId, task: &TaskId) -> KeyRange {
    KeyRange {
        pk: tenant_pk(tenant),
        prefix: format!("state#{task}#"),
    }
}

/// The tenant's own key, wrapped by the region's root key (AWS only; the key file adapter
/// keeps it in a file).
pub fn tenant_key(tenant: &TenantId) -> CatalogKey {
    key(tenant_pk(tenant), "tenant-key".into())
}

/// An account's committed snapshots, sorted by time (their ids sort by time).
pub fn snapshots(tenant: &TenantId, task: &TaskId, account: &AccountId) -> KeyRange {
    KeyRange {
        pk: format!("t#{tenant}#snap#{task}#{account}"),
        prefix: String::new(),
    }
}

/// One committed snapshot.
pub fn snapshot(
    tenant: &TenantId,
    task: &TaskId,
    account: &AccountId,
    id: &SnapshotId,
) -> CatalogKey {
    key(snapshots(tenant, task, account).pk, id.to_string())
}

/// An account's work in progress: the checkpoint of a paused backup.
pub fn pending(tenant: &TenantId, task: &TaskId, account: &AccountId) -> KeyRange {
    KeyRange {
        pk: format!("t#{tenant}#pend#{task}#{account}"),
        prefix: String::new(),
    }
}

/// The checkpoint of an account's paused backup: tree so far, side data, start time.
pub fn checkpoint(tenant: &TenantId, task: &TaskId, account: &AccountId) -> CatalogKey {
    key(pending(tenant, task, account).pk, "checkpoint".into())
}

/// The format of a task's vault: written when the vault is first written to, checked
/// whenever it is opened, so a build never misreads data of a format it does not know.
pub fn vault_format(tenant: &TenantId, task: &TaskId) -> CatalogKey {
    key(tenant_pk(tenant), format!("format#{task}"))
}

/// Which account a snapshot id belongs to, so a snapshot is found by its id (or the start
/// of it) alone with two reads, however many accounts the task has.
pub fn snapshot_owner(tenant: &TenantId, task: &TaskId, id: &SnapshotId) -> CatalogKey {
    let r = snapshot_owners(tenant, task);
    key(r.pk, format!("{}{id}", r.prefix))
}

/// Every snapshot id of a task with its account, sorted by id (so by time).
pub fn snapshot_owners(tenant: &TenantId, task: &TaskId) -> KeyRange {
    KeyRange {
        pk: tenant_pk(tenant),
        prefix: format!("snapid#{task}#"),
    }
}

/// The tasks due at `hour` (UTC) in `shard` of the schedule index.
pub fn schedule_shard(hour: u8, shard: u32) -> KeyRange {
    KeyRange {
        pk: format!("sched#{hour:02}#{shard:02}"),
        prefix: String::new(),
    }
}

/// The sort key of a task in the schedule index: also what its shard is hashed from.
pub fn schedule_name(tenant: &TenantId, task: &TaskId) -> String {
    format!("{tenant}#{task}")
}

/// A task's entry in the schedule index.
pub fn schedule(hour: u8, shard: u32, tenant: &TenantId, task: &TaskId) -> CatalogKey {
    key(schedule_shard(hour, shard).pk, schedule_name(tenant, task))
}

/// The tenant and task of a schedule entry's sort key; `None` for one that does not parse.
pub fn parse_schedule(sk: &str) -> Option<(TenantId, TaskId)> {
    let (t, k) = sk.split_once('#')?;
    Some((TenantId::new(t).ok()?, TaskId::new(k).ok()?))
}

/// The markers of the schedule shards whose tasks are all queued for `day` (`YYYY-MM-DD`).
pub fn schedule_done(day: &str) -> KeyRange {
    KeyRange {
        pk: format!("schedrun#{day}"),
        prefix: String::new(),
    }
}

/// The marker of one shard done for `day`.
pub fn schedule_done_shard(day: &str, hour: u8, shard: u32) -> CatalogKey {
    key(schedule_done(day).pk, format!("{hour:02}#{shard:02}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (TenantId, TaskId, AccountId) {
        (
            TenantId::new("acme").unwrap(),
            TaskId::new("mail").unwrap(),
            AccountId::new("ann@example.com").unwrap(),
        )
    }

    #[test]
    fn every_tenant_key_starts_with_the_tenant() {
        let (t, k, a) = ids();
        let id = SnapshotId::generate(chrono::Utc::now(), 7);
        for ck in [
            task(&t, &k),
            account(&t, &k, &a),
            job(&t, "j1"),
            run(&t, &k),
            state(&t, &k, &a),
            tenant_key(&t),
            snapshot(&t, &k, &a, &id),
            checkpoint(&t, &k, &a),
            vault_format(&t, &k),
            snapshot_owner(&t, &k, &id),
        ] {
            assert!(ck.pk == "t#acme" || ck.pk.starts_with("t#acme#"), "{ck:?}");
        }
    }

    #[test]
    fn ranges_cover_their_keys_and_give_back_the_id() {
        let (t, k, a) = ids();
        let r = accounts(&t, &k);
        let ak = account(&t, &k, &a);
        assert_eq!(r.pk, ak.pk);
        assert_eq!(r.rest(&ak.sk), Some("ann@example.com"));
        assert!(task(&t, &k).sk.starts_with(&tasks(&t).prefix));
        assert_eq!(
            states(&t, &k).rest(&state(&t, &k, &a).sk),
            Some("ann@example.com")
        );
        assert_eq!(r.rest(&task(&t, &k).sk), None);
    }

    #[test]
    fn schedule_entries_parse_back() {
        let (t, k, _) = ids();
        let e = schedule(2, 5, &t, &k);
        assert_eq!(e.pk, "sched#02#05");
        assert_eq!(parse_schedule(&e.sk), Some((t, k)));
        assert_eq!(parse_schedule("nonsense"), None);
        assert_eq!(
            schedule_done_shard("2026-11-25", 2, 3),
            CatalogKey {
                pk: "schedrun#2026-11-25".into(),
                sk: "02#03".into()
            }
        );
    }
}
