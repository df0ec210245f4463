//! A drive's backup from its delta feed: rows applied in the tree (folders, moves,
//! renames, deletions at the round's end), unchanged files kept, the others handed to the
//! downloads; a full enumeration stages what the tree held and takes back what it finds.

use super::download::fetch;
use super::{s, DriveRef};
use crate::client::Fail;
use crate::names::{self, fingerprint, seg, time_ns, Track};
use crate::run::{Flow, Run};
use domain::ItemPath;
use engine::ItemInfo;
use serde_json::Value;

/// Backs up a drive from its delta feed.
pub async fn backup(run: &mut Run<'_>, d: &DriveRef) -> engine::Result<Flow> {
    let key = format!("drive:{}", d.id);
    if run.cur.done.contains(&key) {
        return Ok(Flow::Done);
    }
    let mut t: Track = run.track(&key);
    if !t.p.is_empty() {
        let old = names::path(&t.p);
        if old != d.path
            && run.tree.has_folder(&old).await?
            && !run.tree.has_folder(&d.path).await?
        {
            run.rename(&old, &d.path).await?;
        }
    }
    t.p = names::parts(&d.path);
    run.tree.ensure_folder(&d.path).await?;
    run.tree
        .set_folder_meta(
            &d.path,
            vec![
                ("drive".into(), d.id.clone()),
                ("name".into(), d.name.clone()),
            ],
        )
        .await?;
    if run.cur.take_rescan(&key) {
        // More files failed than the retry list keeps: enumerate the drive again, which
        // downloads whatever the tree lacks.
        t.d = None;
        t.n = None;
    }
    let start = format!("/drives/{}/root/delta", d.id);
    let mut url = match t.n.clone().or_else(|| t.d.clone()) {
        Some(u) => u,
        None => {
            start_full(run, &mut t, d, &key).await?;
            start.clone()
        }
    };
    let mut restarted = false;
    let mut deleted: Vec<String> = Vec::new();
    let mut orphans: Vec<Value> = Vec::new();
    let again = retries(run, d, &key).await?;
    if !again.is_empty() {
        apply(run, d, &mut t, &again, &mut deleted, &mut orphans, &key).await?;
    }
    loop {
        if run.out_of_time() {
            apply_deletions(run, &mut deleted).await?;
            t.n = Some(url);
            run.set_track(&key, t);
            run.tree.pause();
            return Ok(Flow::Paused);
        }
        let page = match run.g.get_json(&url, None).await {
            Ok(p) => p,
            Err(f) if f.is_expired_token() && !restarted => {
                tracing::info!("drive delta token expired; enumerating again");
                restarted = true;
                t.d = None;
                t.n = None;
                deleted.clear();
                start_full(run, &mut t, d, &key).await?;
                url = start.clone();
                continue;
            }
            Err(f) => return Err(f.into()),
        };
        let rows = page
            .get("value")
            .and_then(Value::as_array)
            .ok_or_else(|| Fail::Protocol("a drive delta page without a value".into()))?;
        let complete = apply(run, d, &mut t, rows, &mut deleted, &mut orphans, &key).await?;
        run.worked = true;
        if !complete {
            // Out of time within the page: it is read again next run, and the files
            // stored from it are recognised and not downloaded again.
            apply_deletions(run, &mut deleted).await?;
            t.n = Some(url);
            run.set_track(&key, t);
            run.tree.pause();
            return Ok(Flow::Paused);
        }
        if let Some(next) = page.get("@odata.nextLink").and_then(Value::as_str) {
            url = next.to_string();
            t.n = Some(url.clone());
        } else if let Some(delta) = page.get("@odata.deltaLink").and_then(Value::as_str) {
            t.d = Some(delta.to_string());
            t.n = None;
            break;
        } else {
            return Err(
                Fail::Protocol("a drive delta page without a next or delta link".into()).into(),
            );
        }
    }
    for o in orphans {
        let name = s(&o, "/name");
        let p = d.path.join(&seg(name))?;
        run.tree.record_error(
            &p,
            "its folder was not in the drive's change feed; kept as it was",
        );
    }
    apply_deletions(run, &mut deleted).await?;
    if t.full {
        let staging = names::staging(&key);
        if run.tree.has_folder(&staging).await? {
            run.tree.remove(&staging).await?;
        }
        t.full = false;
    }
    run.set_track(&key, t);
    run.cur.done.insert(key);
    Ok(Flow::Done)
}

/// The current rows of the files that failed on earlier runs (one request each); those
/// deleted since are reported as vanished and forgotten.
async fn retries(run: &mut Run<'_>, d: &DriveRef, key: &str) -> engine::Result<Vec<Value>> {
    let ids: Vec<String> = match run.cur.retry.get(key) {
        Some(list) => list.iter().map(|r| r.id.clone()).collect(),
        None => return Ok(Vec::new()),
    };
    let mut rows = Vec::new();
    for id in ids {
        match run
            .g
            .get_json(&format!("/drives/{}/items/{id}", d.id), None)
            .await
        {
            Ok(row) => rows.push(row),
            Err(f) if f.is_not_found() => {
                tracing::debug!("a file that failed before was deleted since");
                run.cur.retried(key, &id);
            }
            Err(f) if !f.costs_one_item() => return Err(f.into()),
            Err(f) => run.tree.record_error(
                &d.path,
                format!("a file that failed before could not be asked for again ({f}); it is asked for next run"),
            ),
        }
    }
    Ok(rows)
}

/// A full enumeration: the drive's current content waits in staging, items come back
/// from there when they are found unchanged.
async fn start_full(
    run: &mut Run<'_>,
    t: &mut Track,
    d: &DriveRef,
    key: &str,
) -> engine::Result<()> {
    let has_content = run.tree.items(&d.path).await?.next().is_some()
        || !run.tree.subfolders(&d.path).await?.is_empty();
    if has_content {
        let staging = names::staging(key);
        if run.tree.has_folder(&staging).await? {
            // A restarted full round: what is in the drive's folder now is newer.
            let fresh = staging.join(b"fresh")?;
            run.rename(&d.path, &fresh).await?;
        } else {
            run.rename(&d.path, &staging).await?;
        }
        run.tree.ensure_folder(&d.path).await?;
        run.tree
            .set_folder_meta(
                &d.path,
                vec![
                    ("drive".into(), d.id.clone()),
                    ("name".into(), d.name.clone()),
                ],
            )
            .await?;
        t.full = true;
    }
    Ok(())
}

/// Deleted items are applied when the round ends (or pauses): a folder deleted in the
/// feed may still have had items moved out of it later in the same round.
async fn apply_deletions(run: &mut Run<'_>, deleted: &mut Vec<String>) -> engine::Result<()> {
    for id in std::mem::take(deleted) {
        if let Some(p) = run.find_id(&id).await? {
            run.tree.remove(&p).await?;
        }
    }
    Ok(())
}

fn file_info(row: &Value) -> ItemInfo {
    let hash = s(row, "/file/hashes/quickXorHash");
    let key = if hash.is_empty() {
        let c = s(row, "/cTag");
        if c.is_empty() {
            s(row, "/eTag")
        } else {
            c
        }
    } else {
        hash
    };
    let mut meta = vec![
        ("id".to_string(), s(row, "/id").to_string()),
        (
            "modified".to_string(),
            s(row, "/lastModifiedDateTime").to_string(),
        ),
    ];
    let by = s(row, "/lastModifiedBy/user/displayName");
    if !by.is_empty() {
        meta.push(("by".into(), by.into()));
    }
    ItemInfo {
        mtime_ns: time_ns(s(row, "/lastModifiedDateTime")),
        fingerprint: fingerprint(&format!("{key}/{}", row["size"].as_u64().unwrap_or(0))),
        meta,
    }
}

/// Applies delta rows to the drive's folder and downloads the files they name. Returns
/// `false` when the run's time ran out before every file was read.
async fn apply(
    run: &mut Run<'_>,
    d: &DriveRef,
    t: &mut Track,
    rows: &[Value],
    deleted: &mut Vec<String>,
    orphans: &mut Vec<Value>,
    key: &str,
) -> engine::Result<bool> {
    let mut downloads: Vec<(ItemPath, ItemInfo, String, u64)> = Vec::new();
    // Rows whose parent is not known yet are tried again after the others (and after
    // the rest of the round): the feed does not promise parents first.
    let mut queue: Vec<Value> = std::mem::take(orphans);
    queue.extend(rows.iter().cloned());
    let full = t.full;
    loop {
        let mut progress = false;
        let mut left = Vec::new();
        for row in queue {
            let id = s(&row, "/id").to_string();
            if id.is_empty() {
                continue;
            }
            if row.get("root").is_some() {
                t.r = Some(id);
                continue;
            }
            if row.get("deleted").is_some() {
                deleted.push(id);
                continue;
            }
            let parent_id = s(&row, "/parentReference/id");
            let parent = if t.r.as_deref() == Some(parent_id)
                || (t.r.is_none() && s(&row, "/parentReference/path").ends_with("root:"))
            {
                Some(d.path.clone())
            } else {
                run.find_id(parent_id)
                    .await?
                    .filter(|p| p.starts_with(&d.path))
            };
            let Some(parent) = parent else {
                left.push(row);
                continue;
            };
            progress = true;
            let path = parent.join(&seg(s(&row, "/name")))?;
            deleted.retain(|x| x != &id);
            if row.get("folder").is_some() || row.get("package").is_some() {
                match run.find_id(&id).await? {
                    // In a full round the folder's staged content must not come back
                    // whole: each item returns on its own if it still exists.
                    Some(old) if old != path && !full => run.rename(&old, &path).await?,
                    _ => {}
                }
                if run.tree.item(&path).await?.is_some() {
                    run.tree.remove(&path).await?;
                }
                run.tree.ensure_folder(&path).await?;
                run.tree
                    .set_folder_meta(
                        &path,
                        vec![
                            ("id".into(), id.clone()),
                            ("name".into(), s(&row, "/name").into()),
                        ],
                    )
                    .await?;
                run.note(&path, Some(&id));
                continue;
            }
            if row.get("file").is_none() {
                // Neither file nor folder (a OneNote section group, a remote item): not
                // content this drive holds.
                continue;
            }
            if let Some(old) = run.find_id(&id).await? {
                if old != path {
                    if run.tree.has_folder(&path).await? {
                        run.tree.remove(&path).await?;
                    }
                    run.rename(&old, &path).await?;
                }
            }
            let info = file_info(&row);
            let size = row["size"].as_u64().unwrap_or(0);
            match run.tree.item(&path).await? {
                // A file stored as served with another size than listed keeps the listed
                // one beside it.
                Some(e)
                    if e.fingerprint == info.fingerprint
                        && (e.size == size
                            || crate::run::meta_of(&e.meta, "listed_size")
                                == Some(size.to_string().as_str())) =>
                {
                    let mut info = info;
                    if e.size != size {
                        info.meta.push(("listed_size".into(), size.to_string()));
                    }
                    run.update_meta(&path, &info).await?;
                    run.note(&path, Some(&id));
                }
                _ => {
                    let url = row
                        .get("@microsoft.graph.downloadUrl")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .unwrap_or_else(|| {
                            run.g.url(&format!("/drives/{}/items/{id}/content", d.id))
                        });
                    downloads.push((path, info, url, size));
                }
            }
        }
        queue = left;
        if queue.is_empty() || !progress {
            break;
        }
    }
    *orphans = queue;
    fetch(run, key, downloads).await
}
