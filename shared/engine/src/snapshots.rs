//! Snapshots and browsing: every snapshot of a task, a snapshot found by id or `latest`,
//! the entries of a folder in one.

use crate::{Engine, EntryView, Error, Result, TaskRecord};
use domain::{AccountId, ItemPath};
use vault::{Entry, EntryKind, SnapshotRecord};

impl Engine {
    /// Every snapshot of every account of a task, oldest first.
    pub async fn snapshots(&self, task: &TaskRecord) -> Result<Vec<SnapshotRecord>> {
        let vault = self.vault(task).await?;
        let mut all = Vec::new();
        for a in self.accounts(task).await? {
            all.extend(vault.snapshots(&a).await?);
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
        Ok(self.vault(task).await?.snapshots(account).await?)
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
        let vault = self.vault(task).await?;
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

    /// Finds a snapshot by `latest`, its id, or a unique prefix of its id, optionally
    /// within one account.
    ///
    /// # Errors
    /// `NotFound` (with a hint) or `Invalid` for an ambiguous prefix or `latest` across
    /// several accounts.
    pub async fn resolve_snapshot(
        &self,
        task: &TaskRecord,
        spec: &str,
        account: Option<&AccountId>,
    ) -> Result<SnapshotRecord> {
        let mut all = self.snapshots(task).await?;
        if let Some(a) = account {
            all.retain(|s| &s.account == a);
        }
        if all.is_empty() {
            return Err(Error::NotFound(format!(
                "task {} has no snapshots yet; run `lifeboat backup {}` first",
                task.name, task.name
            )));
        }
        if spec == "latest" {
            let accounts: std::collections::BTreeSet<_> = all.iter().map(|s| &s.account).collect();
            if accounts.len() > 1 {
                return Err(Error::Invalid(format!(
                    "task {} has {} accounts; say which with --account",
                    task.name,
                    accounts.len()
                )));
            }
            return Ok(all.pop().expect("not empty"));
        }
        let matches: Vec<_> = all
            .into_iter()
            .filter(|s| s.id.as_str().starts_with(spec))
            .collect();
        match matches.len() {
            1 => Ok(matches.into_iter().next().expect("one")),
            0 => Err(Error::NotFound(format!(
                "no snapshot {spec} in task {} (list them with `lifeboat snapshots {}`)",
                task.name, task.name
            ))),
            n => Err(Error::Invalid(format!(
                "{n} snapshots start with {spec}; give more of the id"
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
        let vault = self.vault(task).await?;
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
