//! One folder's delta round: its pages asked for one after the other, each applied to the
//! tree (removals, moves, metadata, contacts and tasks whole) while the messages it names
//! go to the pipe; a token the service forgot starts the folder over without storing
//! anything twice.

use super::pipe::{Fetch, Pipe, QUEUE_LOW};
use super::{page, s, Coll, Kind};
use crate::client::Fail;
use crate::names::{self, item_name, Track};
use crate::run::{Flow, Run};
use crate::{contacts, mail, todo};
use bytes::Bytes;
use domain::ItemPath;
use engine::ItemInfo;
use serde_json::Value;

/// One delta round of one folder, from where its tracking stands; `first` is its next page
/// when it was already asked for. Each page is stored while the next one is asked for, so
/// that the mailbox's other slots are not idle while a page request is out.
pub(super) async fn round(
    run: &mut Run<'_>,
    kind: Kind,
    c: &Coll,
    mut first: Option<Result<Value, Fail>>,
    pipe: &mut Pipe,
) -> engine::Result<Flow> {
    if run.cur.done.contains(&c.key) {
        return Ok(Flow::Done);
    }
    let g = run.g;
    let mailbox = run.mailbox.clone();
    let mut t: Track = run.track(&c.key);
    if run.cur.take_rescan(&c.key) {
        // More items failed than the retry list keeps: enumerate the folder again, which
        // fetches whatever the tree lacks.
        t.d = None;
        t.n = None;
    }
    if kind == Kind::Mail {
        pipe.submit(&c.key, retries(run, c));
    }
    let mut url = match t.n.clone().or_else(|| t.d.clone()) {
        Some(u) => u,
        None => {
            start_full(run, &mut t, c).await?;
            c.start.clone()
        }
    };
    let mut restarted = false;
    loop {
        if run.out_of_time() {
            t.n = Some(url);
            run.set_track(&c.key, t);
            return Ok(Flow::Paused);
        }
        let asked = match first.take() {
            Some(a) => a,
            None => {
                pipe.wait(run, page(g, url.clone(), mailbox.clone()))
                    .await?
            }
        };
        let body = match asked {
            Ok(p) => p,
            Err(f) if f.is_collection_gone() => {
                folder_gone(run, c, pipe).await?;
                return Ok(Flow::Done);
            }
            Err(f) if f.is_expired_token() && !restarted => {
                // The service forgot our place: enumerate the folder again, keeping what
                // the tree has in staging so that nothing is downloaded or stored twice.
                tracing::info!(
                    service = kind.prefix(),
                    "delta token expired; enumerating again"
                );
                restarted = true;
                t.d = None;
                t.n = None;
                start_full(run, &mut t, c).await?;
                url = c.start.clone();
                continue;
            }
            Err(f) => return Err(f.into()),
        };
        let rows = body
            .get("value")
            .and_then(Value::as_array)
            .ok_or_else(|| Fail::Protocol("a delta page without a value".into()))?;
        let next = body.get("@odata.nextLink").and_then(Value::as_str);
        let delta = body.get("@odata.deltaLink").and_then(Value::as_str);
        if next.is_none() && delta.is_none() {
            return Err(
                Fail::Protocol("a delta page with neither a next nor a delta link".into()).into(),
            );
        }
        let fetches = plan(run, kind, &c.path, rows).await?;
        pipe.submit(&c.key, fetches);
        if let Some(n) = next {
            // The next page is asked for while this one's messages are fetched, once the
            // queue is short enough that asking further ahead would only fill memory.
            pipe.wait_below(run, QUEUE_LOW).await?;
            first = Some(
                pipe.wait(run, page(g, n.to_string(), mailbox.clone()))
                    .await?,
            );
        }
        run.worked = true;
        if let Some(next) = next {
            url = next.to_string();
            t.n = Some(url.clone());
        } else if let Some(delta) = delta {
            t.d = Some(delta.to_string());
            t.n = None;
            break;
        }
    }
    pipe.finish_folder(run, &c.key, t).await?;
    Ok(Flow::Done)
}

/// Ends a folder's round: what a full enumeration did not find again goes, and the folder
/// goes on from its delta link next time.
pub(super) async fn folder_done(run: &mut Run<'_>, key: &str, mut t: Track) -> engine::Result<()> {
    if t.full {
        let staging = names::staging(key);
        if run.tree.has_folder(&staging).await? {
            run.tree.remove(&staging).await?;
        }
        t.full = false;
    }
    run.set_track(key, t);
    run.cur.done.insert(key.to_string());
    Ok(())
}

/// The messages of this folder that failed on earlier runs, fetched again (from what
/// their delta rows said, so no listing is needed).
fn retries(run: &Run<'_>, c: &Coll) -> Vec<Fetch> {
    let Some(list) = run.cur.retry.get(&c.key) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|r| {
            let i = r.info.clone()?;
            Some(Fetch {
                path: c.path.join(&item_name(&r.id, Kind::Mail.ext())).ok()?,
                id: r.id.clone(),
                info: ItemInfo {
                    mtime_ns: i.t,
                    fingerprint: i.f,
                    meta: i.m,
                },
                single: i.single || !run.g.throttle.batch,
            })
        })
        .collect()
}

/// A folder deleted at the source after it was listed (its delta has no sync state): it
/// goes from the backup as a deleted folder does, at no cost to the account.
async fn folder_gone(run: &mut Run<'_>, c: &Coll, pipe: &Pipe) -> engine::Result<()> {
    tracing::info!("a folder was deleted at the source while the backup ran");
    run.cur.retry.remove(&c.key);
    run.cur.done.insert(c.key.clone());
    if pipe.has_outstanding(&c.key) {
        // Messages of an earlier page are still being fetched into it: the folder keeps
        // its track, and the next run's listing, which no longer has it, removes it.
        return Ok(());
    }
    run.cur.tracks.remove(&c.key);
    if !c.path.is_root() && run.tree.has_folder(&c.path).await? {
        run.tree.remove(&c.path).await?;
    }
    Ok(())
}

async fn start_full(run: &mut Run<'_>, t: &mut Track, c: &Coll) -> engine::Result<()> {
    if run.tree.items(&c.path).await?.next().is_some() {
        run.stage_items(&c.path, &c.key).await?;
        t.full = true;
    }
    Ok(())
}

/// Applies one delta page to the folder at `folder`: removals, moves, metadata and the
/// items a row carries whole are done here; the messages to fetch are returned.
async fn plan(
    run: &mut Run<'_>,
    kind: Kind,
    folder: &ItemPath,
    rows: &[Value],
) -> engine::Result<Vec<Fetch>> {
    let mut fetch: Vec<(ItemPath, String, ItemInfo, bool)> = Vec::new();
    for row in rows {
        let id = s(row, "id");
        if id.is_empty() {
            tracing::warn!(
                service = kind.prefix(),
                "a delta row without an id; skipped"
            );
            continue;
        }
        let name = item_name(id, kind.ext());
        let path = folder.join(&name)?;
        if row.get("@removed").is_some() {
            run.removals.push(path);
            continue;
        }
        let info = match kind {
            Kind::Mail => mail::backup::message_info(row),
            Kind::Contacts => contacts::backup::info(row),
            Kind::Tasks => todo::backup::info(row),
        };
        let draft = row.get("isDraft").and_then(Value::as_bool) == Some(true);
        let here = run.tree.item(&path).await?.map(|e| e.fingerprint);
        if here.is_none() {
            if let Some(old) = run.find_name(&name).await? {
                // Moved here from another folder (or back from staging): keep its content.
                run.rename(&old, &path).await?;
            }
        }
        match (kind, run.tree.item(&path).await?.map(|e| e.fingerprint)) {
            (_, Some(fp)) if fp == info.fingerprint => {}
            // A sent or received message's content does not change; what changes is its
            // read state, flag, categories: metadata only.
            (Kind::Mail, Some(_)) if !draft => {
                run.update_meta(&path, &info).await?;
            }
            (Kind::Mail, _) => {
                let attachments = row.get("hasAttachments").and_then(Value::as_bool) != Some(false);
                fetch.push((path, id.to_string(), info, attachments))
            }
            (k, _) => {
                let content = if k == Kind::Contacts {
                    contacts::vcard::vcard(row)
                } else {
                    todo::ics::ics_task(row)
                };
                run.tree.put_item(&path, info, Bytes::from(content)).await?;
                run.note(&path, None);
            }
        }
    }
    Ok(fetch
        .into_iter()
        .map(|(path, id, info, attachments)| Fetch {
            path,
            id,
            info,
            single: attachments || !run.g.throttle.batch,
        })
        .collect())
}
