//! The first half of a folder's sync: what the folder holds now and what changed since the
//! cursor, listed in pieces whose progress survives reconnects.

use super::{Connection, FolderPlan, FolderState, Retry};
use crate::conn::{Changes, FolderInfo, FolderStatus, MessageMeta};
use crate::error::{Error, Result};
use std::collections::{BTreeMap, BTreeSet};

/// Messages whose metadata is asked for in one command. A listing of a large folder (a
/// Gmail All Mail of half a million messages) is then many short commands: a drop costs
/// one of them, not the whole listing, and no response is held whole in memory.
pub const LIST_CHUNK: usize = 5_000;

/// What changed in a folder.
pub(super) struct Listing {
    /// The folder's state when it was opened: what the new cursor records.
    pub status: FolderStatus,
    pub plan: FolderPlan,
    /// The connection generation under which the folder is open.
    pub selected_gen: u64,
    /// New messages, and known ones whose flags may have changed (`None`: unchanged).
    pub metas: Option<Vec<MessageMeta>>,
    /// UIDs known before that are gone.
    pub gone: Vec<u32>,
    /// UIDs given up on that the folder still holds, when that is known.
    pub given_up: Vec<u32>,
}

/// Progress of a listing, kept across reconnects.
#[derive(Default)]
struct Progress {
    plan: Option<(FolderPlan, FolderStatus)>,
    opened: Option<FolderStatus>,
    selected_gen: u64,
    changes: Option<Changes>,
    /// Pieces of the changes listing received so far.
    changes_done: usize,
    current: Option<Vec<u32>>,
    todo: Option<Vec<u32>>,
    done: usize,
    metas: BTreeMap<u32, MessageMeta>,
}

pub(super) async fn list(
    conn: &mut Connection,
    retry: &mut Retry,
    folder: &FolderInfo,
    prev: &FolderState,
    forced_full: bool,
) -> Result<Listing> {
    let wire = folder.wire.as_str();
    let known: BTreeSet<u32> = prev.messages.keys().copied().collect();
    let cursor = prev.cursor.as_ref();
    let mut p = Progress::default();
    loop {
        let attempt = step(conn, &mut p, retry, wire, folder, prev, &known, forced_full).await;
        match attempt {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => retry.failed(conn, e).await?,
        }
    }
    let (plan, st) = p.plan.expect("planned");
    if plan == FolderPlan::Unchanged {
        return Ok(Listing {
            status: st,
            plan,
            selected_gen: 0,
            metas: None,
            gone: Vec::new(),
            given_up: Vec::new(),
        });
    }
    let status = p.opened.expect("opened");
    let full = plan == FolderPlan::Full;
    let mut given_up: BTreeSet<u32> = if full {
        BTreeSet::new()
    } else {
        cursor
            .map(|c| c.given_up_uids())
            .unwrap_or_default()
            .into_iter()
            .collect()
    };
    let gone: Vec<u32> = if full {
        known.iter().copied().collect()
    } else if let Some(current) = &p.current {
        let current: BTreeSet<u32> = current.iter().copied().collect();
        given_up.retain(|u| current.contains(u));
        known.difference(&current).copied().collect()
    } else {
        let vanished = p.changes.as_ref().and_then(|c| c.vanished.clone());
        vanished
            .unwrap_or_default()
            .into_iter()
            .filter(|u| known.contains(u))
            .collect()
    };
    let mut metas = p.metas;
    if let Some(ch) = p.changes {
        for m in ch.changed {
            metas.entry(m.uid).or_insert(m);
        }
    }
    metas.retain(|u, _| !given_up.contains(u));
    Ok(Listing {
        status,
        plan,
        selected_gen: p.selected_gen,
        metas: Some(metas.into_values().collect()),
        gone,
        given_up: given_up.into_iter().collect(),
    })
}

/// The UID ranges in which changes since the cursor are asked for: each spans about
/// [`LIST_CHUNK`] known messages, the last one open-ended (`n:*`) for what is new. Flag
/// changes to a whole large folder (a "mark all as read") then come in pieces, and a drop
/// costs one of them.
fn change_ranges(known: &BTreeSet<u32>) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 1u32;
    for (i, uid) in known.iter().enumerate() {
        if (i + 1) % LIST_CHUNK == 0 && i + 1 < known.len() && *uid < u32::MAX {
            out.push(format!("{start}:{uid}"));
            start = uid + 1;
        }
    }
    out.push(format!("{start}:*"));
    out
}

/// One attempt at the listing from where `p` left it; `true` once it is complete.
#[allow(clippy::too_many_arguments)]
async fn step(
    conn: &mut Connection,
    p: &mut Progress,
    retry: &mut Retry,
    wire: &str,
    folder: &FolderInfo,
    prev: &FolderState,
    known: &BTreeSet<u32>,
    forced_full: bool,
) -> Result<bool> {
    conn.get().await?;
    let generation = conn.generation();
    let s = conn.get().await?;
    if p.plan.is_none() {
        // A server may refuse STATUS for one folder (or for the one selected): EXAMINE
        // tells the same, so only a folder that refuses both is lost, and only that one.
        let st = match s.status(wire).await {
            Ok(st) => st,
            Err(Error::Server { .. }) => s.examine(wire).await?,
            Err(e) => return Err(e),
        };
        let plan = if forced_full {
            FolderPlan::Full
        } else {
            prev.plan(&st)
        };
        p.plan = Some((plan, st));
        if plan == FolderPlan::Unchanged {
            return Ok(true);
        }
    }
    let (plan, _) = p.plan.expect("planned");
    if p.opened.is_none() || p.selected_gen != generation {
        let now = s.examine(wire).await?;
        match &p.opened {
            Some(first) if first.uid_validity != now.uid_validity => {
                return Err(Error::UidValidityChanged(folder.name.clone()));
            }
            Some(_) => {}
            None => p.opened = Some(now),
        }
        p.selected_gen = generation;
    }
    let now = p.opened.expect("opened");
    let cursor = prev.cursor.as_ref().filter(|_| plan != FolderPlan::Full);
    let need_all = match plan {
        FolderPlan::Incremental {
            changed_since: Some(modseq),
        } => {
            let pieces = change_ranges(known);
            while p.changes_done < pieces.len() {
                let got = s.changes_since_in(&pieces[p.changes_done], modseq).await?;
                let ch = p.changes.get_or_insert_with(|| Changes {
                    changed: Vec::new(),
                    vanished: got.vanished.as_ref().map(|_| Vec::new()),
                });
                ch.changed.extend(got.changed);
                if let (Some(all), Some(v)) = (ch.vanished.as_mut(), got.vanished) {
                    all.extend(v);
                }
                p.changes_done += 1;
                retry.progress();
            }
            // A last range `n:*` past the highest UID means `highest:n` (RFC 3501 §9), so
            // pieces may overlap by one message.
            if let Some(v) = p.changes.as_mut().and_then(|c| c.vanished.as_mut()) {
                v.sort_unstable();
                v.dedup();
            }
            let ch = p.changes.as_ref().expect("listed");
            // The count must add up; if the server cannot say what was expunged, or a
            // VANISHED report was lost, the full UID list decides rather than keep ghosts.
            match &ch.vanished {
                None => true,
                Some(v) => {
                    let mut after: BTreeSet<u32> = known.clone();
                    for u in v {
                        after.remove(u);
                    }
                    after.extend(ch.changed.iter().map(|m| m.uid));
                    if let Some(c) = cursor {
                        after.extend(c.retries.keys().copied());
                        after.extend(c.pending_uids());
                        after.extend(c.given_up_uids());
                    }
                    after.len() != now.messages as usize
                }
            }
        }
        _ => true,
    };
    if need_all && p.current.is_none() {
        p.current = Some(if now.messages == 0 {
            Vec::new()
        } else {
            s.uids().await?
        });
        retry.progress();
    }
    if p.todo.is_none() {
        p.todo = Some(match plan {
            FolderPlan::Incremental {
                changed_since: Some(_),
            } => {
                let changed: BTreeSet<u32> = p
                    .changes
                    .as_ref()
                    .map(|c| c.changed.iter().map(|m| m.uid).collect())
                    .unwrap_or_default();
                let given_up: BTreeSet<u32> = cursor
                    .map(|c| c.given_up_uids().into_iter().collect())
                    .unwrap_or_default();
                let mut todo: BTreeSet<u32> = BTreeSet::new();
                if let Some(c) = cursor {
                    todo.extend(c.retries.keys().copied());
                    todo.extend(c.pending_uids());
                }
                if let Some(current) = &p.current {
                    let current: BTreeSet<u32> = current.iter().copied().collect();
                    todo.retain(|u| current.contains(u));
                    todo.extend(current.difference(known));
                }
                todo.retain(|u| !changed.contains(u) && !given_up.contains(u));
                todo.into_iter().collect()
            }
            // Every message's flags: without CONDSTORE nothing else tells what changed.
            _ => p.current.clone().unwrap_or_default(),
        });
    }
    let todo = p.todo.as_ref().expect("planned");
    while p.done < todo.len() {
        let end = (p.done + LIST_CHUNK).min(todo.len());
        let got = s.fetch_meta_of(&todo[p.done..end]).await?;
        for m in got {
            p.metas.insert(m.uid, m);
        }
        p.done = end;
        retry.progress();
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_asked_for_in_ranges_of_about_a_chunk_of_known_messages() {
        assert_eq!(change_ranges(&BTreeSet::new()), vec!["1:*"]);
        let few: BTreeSet<u32> = (1..=10).collect();
        assert_eq!(change_ranges(&few), vec!["1:*"]);
        // Exactly one chunk: no empty piece after it besides what is new.
        let one: BTreeSet<u32> = (1..=LIST_CHUNK as u32).collect();
        assert_eq!(change_ranges(&one), vec!["1:*"]);
        let many: BTreeSet<u32> = (1..=(2 * LIST_CHUNK as u32 + 7)).map(|u| u * 3).collect();
        let c = LIST_CHUNK as u32;
        assert_eq!(
            change_ranges(&many),
            vec![
                format!("1:{}", 3 * c),
                format!("{}:{}", 3 * c + 1, 6 * c),
                format!("{}:*", 6 * c + 1),
            ]
        );
    }
}
