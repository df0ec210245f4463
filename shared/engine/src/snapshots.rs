//! Snapshots and browsing: every snapshot of a task, a snapshot found by id or `latest`,
//! the entries of a folder in one.

use crate::{Engine, EntryView, Error, Result, TaskRecord};
use chrono::{DateTime, NaiveDate, Utc};
use domain::{AccountId, ItemPath, SnapshotId};
use ports::catalog_keys;
use vault::{Entry, EntryKind, SnapshotRecord};

impl Engine {
    /// Every snapshot of every account of a task, oldest first.
    pub async fn snapshots(&self, task: &TaskRecord) -> Result<Vec<SnapshotRecord>> {
        let vault = self.vault(task).await?;
        let mut all = Vec::new();
        for a in self.accounts(task).await? {
            all.extend(vault.account(&a).snapshots().await?);
        }
        all.sort_by(|a, b| (a.taken_at, &a.id).cmp(&(b.taken_at, &b.id)));
        Ok(all)
    }

    /// The snapshots of one account, oldest first.
    ///
    /// # Errors
    /// `NotFound` for an account the task does not have.
    pub async fn account_snapshots(
        &self,
        task: &TaskRecord,
        account: &AccountId,
    ) -> Result<Vec<SnapshotRecord>> {
        self.account(task, account).await?;
        Ok(self.vault(task).await?.account(account).snapshots().await?)
    }

    /// Checks that every path of a selection is in the snapshot, so that a typo is refused
    /// when a restore or export is asked for, not when its job runs.
    ///
    /// # Errors
    /// `NotFound` naming the first path that is not there.
    pub async fn check_selection(
        &self,
        task: &TaskRecord,
        snap: &SnapshotRecord,
        include: &[ItemPath],
    ) -> Result<()> {
        let vault = self.vault(task).await?.account(&snap.account);
        for path in include.iter().filter(|p| !p.is_root()) {
            match vault.lookup(&snap.root(), path).await {
                Ok(_) => {}
                Err(vault::Error::NotFound(_)) => {
                    return Err(Error::NotFound(format!(
                        "{path} is not in snapshot {}",
                        snap.id
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Finds a snapshot by `latest`, its id, a unique prefix of its id, or a date
    /// (`2026-11-30`: the newest snapshot taken that day or before; or a full RFC 3339
    /// time), optionally within one account. Each is a bounded number of catalog reads,
    /// however many snapshots and accounts the task has.
    ///
    /// # Errors
    /// `NotFound` (with a hint) or `Invalid` for an ambiguous prefix, or `latest` or a date
    /// across several accounts.
    pub async fn resolve_snapshot(
        &self,
        task: &TaskRecord,
        spec: &str,
        account: Option<&AccountId>,
    ) -> Result<SnapshotRecord> {
        let vault = self.vault(task).await?;
        let none_yet = || {
            Error::NotFound(format!(
                "task {} has no snapshots yet; run `lifeboat backup {}` first",
                task.name, task.name
            ))
        };
        if let Some(at) = parse_when(spec) {
            let a = self.one_account(task, account).await?;
            return vault.account(&a).snapshot_at(at).await?.ok_or_else(|| {
                Error::NotFound(format!(
                    "account {a} of task {} has no snapshot taken at or before {spec}",
                    task.name
                ))
            });
        }
        if spec == "latest" {
            let a = self.one_account(task, account).await?;
            return vault.account(&a).latest().await?.ok_or_else(none_yet);
        }
        // An id, or the start of one: the ids of the task's snapshots, with their
        // accounts, are listed in one partition, sorted.
        let owners = catalog_keys::snapshot_owners(&self.tenant, &task.name);
        let page = self
            .ports
            .catalog
            .query(
                &owners.pk,
                &format!("{}{spec}", owners.prefix),
                None,
                64,
                false,
            )
            .await?;
        let mut matches = Vec::new();
        for r in &page.records {
            let (Some(id), Ok(owner)) = (
                owners.rest(&r.sk),
                AccountId::new(String::from_utf8_lossy(&r.value).into_owned()),
            ) else {
                continue;
            };
            if account.is_some_and(|a| a != &owner) {
                continue;
            }
            let Ok(id) = SnapshotId::new(id) else {
                continue;
            };
            // The pointer is written just before its snapshot; a commit that failed
            // leaves one that points at nothing.
            match vault.account(&owner).snapshot(&id).await {
                Ok(s) => matches.push(s),
                Err(vault::Error::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        match matches.len() {
            1 => Ok(matches.pop().expect("one")),
            0 => Err(Error::NotFound(format!(
                "no snapshot {spec} in task {} (list them with `lifeboat snapshots {}`)",
                task.name, task.name
            ))),
            n => Err(Error::Invalid(format!(
                "{n} snapshots start with {spec}; give more of the id"
            ))),
        }
    }

    /// Checks that `snap` is a snapshot of `task` as its own catalog has it (one read):
    /// a record from elsewhere, another task's or tenant's, is refused before anything is
    /// read or written for it.
    ///
    /// # Errors
    /// `NotFound` for a snapshot the task does not have.
    pub(crate) async fn check_owned(&self, task: &TaskRecord, snap: &SnapshotRecord) -> Result<()> {
        let av = self.vault(task).await?.account(&snap.account);
        match av.snapshot(&snap.id).await {
            Ok(own) if &own == snap => Ok(()),
            Ok(_) | Err(vault::Error::NotFound(_)) => Err(Error::NotFound(format!(
                "snapshot {} is not a snapshot of task {}",
                snap.id, task.name
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// The account a `latest` or a date refers to: the one given, or the task's only one.
    async fn one_account(
        &self,
        task: &TaskRecord,
        account: Option<&AccountId>,
    ) -> Result<AccountId> {
        if let Some(a) = account {
            return Ok(a.clone());
        }
        let mut accounts = self.accounts(task).await?;
        match accounts.len() {
            1 => Ok(accounts.pop().expect("one")),
            0 => Err(Error::NotFound(format!(
                "task {} has no snapshots yet; run `lifeboat backup {}` first",
                task.name, task.name
            ))),
            n => Err(Error::Invalid(format!(
                "task {} has {n} accounts; say which with --account",
                task.name
            ))),
        }
    }

    /// The entries of a folder (or the single entry of an item) in a snapshot, as shown.
    ///
    /// # Errors
    /// `NotFound` for a path not in the snapshot.
    pub async fn browse(
        &self,
        task: &TaskRecord,
        snap: &SnapshotRecord,
        path: &ItemPath,
    ) -> Result<Vec<EntryView>> {
        let entries = self.list(task, snap, path).await?;
        Ok(entries
            .iter()
            .map(|en| {
                let p = if en.kind == EntryKind::Dir || path.file_name() != Some(&en.name[..]) {
                    path.join(&en.name).unwrap_or_else(|_| path.clone())
                } else {
                    path.clone()
                };
                EntryView::new(&p, en)
            })
            .collect())
    }

    /// The entries of a folder (or the single entry of an item) in a snapshot.
    pub async fn list(
        &self,
        task: &TaskRecord,
        snap: &SnapshotRecord,
        path: &ItemPath,
    ) -> Result<Vec<Entry>> {
        let vault = self.vault(task).await?.account(&snap.account);
        let entry = vault.lookup(&snap.root(), path).await.map_err(not_found)?;
        match (entry.kind, entry.subtree) {
            (EntryKind::Dir, Some(s)) => Ok(vault.read_tree(&s).await?.entries),
            _ => Ok(vec![entry]),
        }
    }
}

/// The selection a restore or export works on: everything when `include` is empty,
/// otherwise the given paths without duplicates and without paths inside another given
/// path (which would be written twice).
pub(crate) fn selection(include: &[ItemPath]) -> Vec<ItemPath> {
    if include.is_empty() {
        return vec![ItemPath::root()];
    }
    let mut v = include.to_vec();
    v.sort();
    let mut out: Vec<ItemPath> = Vec::with_capacity(v.len());
    for p in v {
        if !out.iter().any(|kept| p.starts_with(kept)) {
            out.push(p);
        }
    }
    out
}

pub(crate) fn not_found(e: vault::Error) -> Error {
    match e {
        vault::Error::NotFound(m) => Error::NotFound(m),
        other => other.into(),
    }
}

/// A date (`2026-11-30`, meaning the end of that day, UTC) or an RFC 3339 time.
fn parse_when(spec: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(spec) {
        return Some(t.with_timezone(&Utc));
    }
    let day = NaiveDate::parse_from_str(spec, "%Y-%m-%d").ok()?;
    let end = day.and_hms_milli_opt(23, 59, 59, 999)?;
    Some(DateTime::from_naive_utc_and_offset(end, Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ItemPath {
        ItemPath::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn selection_drops_duplicates_and_nested_paths() {
        assert_eq!(selection(&[]), vec![ItemPath::root()]);
        assert_eq!(
            selection(&[p("a/b"), p("c"), p("a"), p("a"), p("ab")]),
            vec![p("a"), p("ab"), p("c")]
        );
        assert_eq!(selection(&[p("x"), p("")]), vec![ItemPath::root()]);
    }
}
