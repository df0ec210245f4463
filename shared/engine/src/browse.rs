//! Finding things in snapshots: resolve a snapshot by id or `latest`, list a folder, and
//! compare two snapshots.

use crate::{Engine, Error, Result, TaskRecord};
use domain::{escape, AccountId, ItemPath};
use vault::{BlobRef, Entry, EntryKind, Node, SnapshotRecord, Vault};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Changed,
    Removed,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    pub kind: ChangeKind,
    /// The item's path, escaped where not UTF-8; folders end with `/`.
    pub path: String,
}

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

    /// What was added, changed and removed from snapshot `a` to snapshot `b`.
    pub async fn diff(
        &self,
        task: &TaskRecord,
        a: &SnapshotRecord,
        b: &SnapshotRecord,
    ) -> Result<Vec<Change>> {
        let vault = self.vault(task).await?;
        let mut out = Vec::new();
        diff_nodes(
            &vault,
            Some(a.root()),
            Some(b.root()),
            &mut Vec::new(),
            &mut out,
        )
        .await?;
        Ok(out)
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

fn show(path: &[Vec<u8>], dir: bool) -> String {
    let mut s = path.iter().map(|p| escape(p)).collect::<Vec<_>>().join("/");
    if dir {
        s.push('/');
    }
    s
}

fn same_content(a: &Entry, b: &Entry) -> bool {
    a.kind == b.kind
        && a.size == b.size
        && a.link == b.link
        && a.content.len() == b.content.len()
        && a.content.iter().zip(&b.content).all(|(x, y)| x.id == y.id)
        && a.meta == b.meta
}

fn diff_nodes<'a>(
    vault: &'a Vault,
    a: Option<BlobRef>,
    b: Option<BlobRef>,
    path: &'a mut Vec<Vec<u8>>,
    out: &'a mut Vec<Change>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
    Box::pin(async move {
        if let (Some(x), Some(y)) = (&a, &b) {
            if x.id == y.id {
                return Ok(());
            }
        }
        let na = match a {
            Some(r) => vault.read_tree(&r).await?,
            None => Node::default(),
        };
        let nb = match b {
            Some(r) => vault.read_tree(&r).await?,
            None => Node::default(),
        };
        let (mut i, mut j) = (0, 0);
        while i < na.entries.len() || j < nb.entries.len() {
            let ea = na.entries.get(i);
            let eb = nb.entries.get(j);
            let ord = match (ea, eb) {
                (Some(x), Some(y)) => x.name.cmp(&y.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            let (ea, eb) = match ord {
                std::cmp::Ordering::Less => {
                    i += 1;
                    (ea, None)
                }
                std::cmp::Ordering::Greater => {
                    j += 1;
                    (None, eb)
                }
                std::cmp::Ordering::Equal => {
                    i += 1;
                    j += 1;
                    (ea, eb)
                }
            };
            let name = ea.or(eb).expect("one side").name.clone();
            path.push(name);
            let dir_a = ea.filter(|e| e.kind == EntryKind::Dir);
            let dir_b = eb.filter(|e| e.kind == EntryKind::Dir);
            if dir_a.is_some() || dir_b.is_some() {
                // Report the non-folder side of a type change, then recurse into folders.
                if ea.is_some_and(|e| e.kind != EntryKind::Dir) {
                    out.push(Change {
                        kind: ChangeKind::Removed,
                        path: show(path, false),
                    });
                }
                if eb.is_some_and(|e| e.kind != EntryKind::Dir) {
                    out.push(Change {
                        kind: ChangeKind::Added,
                        path: show(path, false),
                    });
                }
                if dir_a.is_none() {
                    out.push(Change {
                        kind: ChangeKind::Added,
                        path: show(path, true),
                    });
                }
                if dir_b.is_none() {
                    out.push(Change {
                        kind: ChangeKind::Removed,
                        path: show(path, true),
                    });
                }
                diff_nodes(
                    vault,
                    dir_a.and_then(|e| e.subtree),
                    dir_b.and_then(|e| e.subtree),
                    path,
                    out,
                )
                .await?;
            } else {
                match (ea, eb) {
                    (Some(_), None) => out.push(Change {
                        kind: ChangeKind::Removed,
                        path: show(path, false),
                    }),
                    (None, Some(_)) => out.push(Change {
                        kind: ChangeKind::Added,
                        path: show(path, false),
                    }),
                    (Some(x), Some(y)) if !same_content(x, y) => out.push(Change {
                        kind: ChangeKind::Changed,
                        path: show(path, false),
                    }),
                    _ => {}
                }
            }
            path.pop();
        }
        Ok(())
    })
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
