//! Comparing two snapshots of an account: what was added, changed and removed. Unchanged
//! folders share their node, so a diff reads only the folders that differ.

use crate::{Engine, Result, TaskRecord};
use domain::escape;
use vault::{AccountVault, BlobRef, Entry, EntryKind, Node, SnapshotRecord};

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
    /// What was added, changed and removed from snapshot `a` to snapshot `b`.
    pub async fn diff(
        &self,
        task: &TaskRecord,
        a: &SnapshotRecord,
        b: &SnapshotRecord,
    ) -> Result<Vec<Change>> {
        let vault = self.vault(task).await?;
        // Two snapshots of different accounts are compared too: each is read through its
        // own account's index.
        let sides = (vault.account(&a.account), vault.account(&b.account));
        let mut out = Vec::new();
        diff_nodes(
            &sides,
            Some(a.root()),
            Some(b.root()),
            &mut Vec::new(),
            &mut out,
        )
        .await?;
        Ok(out)
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
    vault: &'a (AccountVault, AccountVault),
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
            Some(r) => vault.0.read_tree(&r).await?,
            None => Node::default(),
        };
        let nb = match b {
            Some(r) => vault.1.read_tree(&r).await?,
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
