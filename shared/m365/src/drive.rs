//! OneDrive and SharePoint document libraries: the drive's delta feed, file content
//! streamed from its pre-authenticated download URL into the vault's chunker (memory stays
//! bounded whatever the size), folders kept, moves and renames applied without a download.
//!
//! Delta pages name an item's parent by id only (`parentReference.path` is not part of a
//! delta answer), so every file and folder keeps its Graph id in its metadata, and the tree
//! itself is the map from id to path.

use crate::client::{Body, Fail, Graph};
use crate::names::{self, fingerprint, seg, time_ns, Track};
use crate::run::{Flow, Run};
use bytes::{Buf, Bytes};
use domain::ItemPath;
use engine::ItemInfo;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};
use std::io::Read;

/// Files up to this size are downloaded whole, four at a time; larger ones are streamed
/// one at a time through the chunker.
const SMALL_FILE: u64 = 4 << 20;
/// Downloads of small files in flight at once.
const DOWNLOADS: usize = 4;
/// Chunks of a streamed download waiting for the chunker: bounds its memory.
const STREAM_QUEUE: usize = 8;

fn s<'v>(v: &'v Value, ptr: &str) -> &'v str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// One drive to back up: its Graph id and the folder of the tree it fills.
pub struct DriveRef {
    pub id: String,
    pub path: ItemPath,
    pub name: String,
}

/// Backs up a drive from its delta feed.
pub async fn backup(run: &mut Run<'_>, d: &DriveRef) -> engine::Result<Flow> {
    let key = format!("drive:{}", d.id);
    if run.cur.done.contains(&key) {
        return Ok(Flow::Done);
    }
    let mut t: Track = run.track(&key);
    if !t.p.is_empty() {
        let old = names::path(&t.p);
        if old != d.path && run.tree.has_folder(&old) && !run.tree.has_folder(&d.path) {
            run.rename(&old, &d.path).await?;
        }
    }
    t.p = names::parts(&d.path);
    run.tree.ensure_folder(&d.path)?;
    run.tree.set_folder_meta(
        &d.path,
        vec![
            ("drive".into(), d.id.clone()),
            ("name".into(), d.name.clone()),
        ],
    )?;
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
        apply(run, d, &mut t, rows, &mut deleted, &mut orphans).await?;
        run.worked = true;
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
        if run.tree.has_folder(&staging) {
            run.tree.remove(&staging).await?;
        }
        t.full = false;
    }
    run.set_track(&key, t);
    run.cur.done.insert(key);
    Ok(Flow::Done)
}

/// A full enumeration: the drive's current content waits in staging, items come back
/// from there when they are found unchanged.
async fn start_full(
    run: &mut Run<'_>,
    t: &mut Track,
    d: &DriveRef,
    key: &str,
) -> engine::Result<()> {
    let has_content =
        run.tree.items(&d.path).next().is_some() || !run.tree.subfolders(&d.path).is_empty();
    if has_content {
        let staging = names::staging(key);
        if run.tree.has_folder(&staging) {
            // A restarted full round: what is in the drive's folder now is newer.
            let fresh = staging.join(b"fresh")?;
            run.rename(&d.path, &fresh).await?;
        } else {
            run.rename(&d.path, &staging).await?;
        }
        run.tree.ensure_folder(&d.path)?;
        run.tree.set_folder_meta(
            &d.path,
            vec![
                ("drive".into(), d.id.clone()),
                ("name".into(), d.name.clone()),
            ],
        )?;
        t.full = true;
    }
    Ok(())
}

/// Deleted items are applied when the round ends (or pauses): a folder deleted in the
/// feed may still have had items moved out of it later in the same round.
async fn apply_deletions(run: &mut Run<'_>, deleted: &mut Vec<String>) -> engine::Result<()> {
    for id in std::mem::take(deleted) {
        if let Some(p) = run.find_id(&id) {
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

async fn apply(
    run: &mut Run<'_>,
    d: &DriveRef,
    t: &mut Track,
    rows: &[Value],
    deleted: &mut Vec<String>,
    orphans: &mut Vec<Value>,
) -> engine::Result<()> {
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
                run.find_id(parent_id).filter(|p| p.starts_with(&d.path))
            };
            let Some(parent) = parent else {
                left.push(row);
                continue;
            };
            progress = true;
            let path = parent.join(&seg(s(&row, "/name")))?;
            deleted.retain(|x| x != &id);
            if row.get("folder").is_some() || row.get("package").is_some() {
                match run.find_id(&id) {
                    // In a full round the folder's staged content must not come back
                    // whole: each item returns on its own if it still exists.
                    Some(old) if old != path && !full => run.rename(&old, &path).await?,
                    _ => {}
                }
                if run.tree.item(&path).is_some() {
                    run.tree.remove(&path).await?;
                }
                run.tree.ensure_folder(&path)?;
                run.tree.set_folder_meta(
                    &path,
                    vec![
                        ("id".into(), id.clone()),
                        ("name".into(), s(&row, "/name").into()),
                    ],
                )?;
                run.note(&path, Some(&id));
                continue;
            }
            if row.get("file").is_none() {
                // Neither file nor folder (a OneNote section group, a remote item): not
                // content this drive holds.
                continue;
            }
            if let Some(old) = run.find_id(&id) {
                if old != path {
                    if run.tree.has_folder(&path) {
                        run.tree.remove(&path).await?;
                    }
                    run.rename(&old, &path).await?;
                }
            }
            let info = file_info(&row);
            let size = row["size"].as_u64().unwrap_or(0);
            match run.tree.item(&path) {
                Some(e) if e.fingerprint == info.fingerprint && e.size == size => {
                    run.update_meta(&path, &info)?;
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
    fetch(run, downloads).await
}

async fn fetch(
    run: &mut Run<'_>,
    downloads: Vec<(ItemPath, ItemInfo, String, u64)>,
) -> engine::Result<()> {
    let (small, large): (Vec<_>, Vec<_>) = downloads
        .into_iter()
        .partition(|(_, _, _, size)| *size <= SMALL_FILE);
    let g = run.g;
    let mut results = futures::stream::iter(small)
        .map(|(path, info, url, size)| async move {
            let r = match open(g, &url).await {
                Ok(resp) => resp
                    .bytes()
                    .await
                    .map_err(|e| Fail::Unavailable(format!("a download broke off: {e}"))),
                Err(f) => Err(f),
            };
            (path, info, r, size)
        })
        .buffered(DOWNLOADS);
    while let Some((path, info, r, size)) = results.next().await {
        match r {
            Ok(b) if b.len() as u64 == size => {
                let id = crate::run::meta_of(&info.meta, "id").map(str::to_string);
                run.tree.put_item(&path, info, b).await?;
                run.note(&path, id.as_deref());
            }
            Ok(b) => run.tree.record_error(
                &path,
                format!(
                    "the source sent {} bytes of a file of {size}; kept the previous version",
                    b.len()
                ),
            ),
            Err(f) => item_failure(run, &path, f)?,
        }
    }
    drop(results);
    for (path, info, url, size) in large {
        match open(g, &url).await {
            Ok(resp) => {
                let id = crate::run::meta_of(&info.meta, "id").map(str::to_string);
                let reader = stream_reader(resp);
                run.tree.put_item_stream(&path, info, reader, size).await?;
                run.note(&path, id.as_deref());
            }
            Err(f) => item_failure(run, &path, f)?,
        }
    }
    Ok(())
}

fn item_failure(run: &mut Run<'_>, path: &ItemPath, f: Fail) -> engine::Result<()> {
    if f.is_not_found() {
        run.tree.record_error(
            path,
            "the file was deleted at the source before it could be read",
        );
        Ok(())
    } else if f.is_fatal() {
        Err(f.into())
    } else {
        run.tree.record_error(path, f.to_string());
        Ok(())
    }
}

/// Opens a download: a pre-authenticated URL is fetched without the bearer token; a
/// Graph `content` URL answers with a redirect to one.
async fn open(g: &Graph, url: &str) -> Result<reqwest::Response, Fail> {
    let graph = url.starts_with(&g.root);
    let a = g.send(Method::GET, url, None, &[], None, graph).await?;
    if a.resp.status().is_redirection() {
        let to = a
            .resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Fail::Protocol("a download redirect without a location".into()))?
            .to_string();
        let b = g.send(Method::GET, &to, None, &[], None, false).await?;
        return Ok(b.resp);
    }
    Ok(a.resp)
}

/// A blocking reader over a download, for the vault's chunker: a task reads the body and
/// hands chunks through a bounded channel, so at most a few chunks wait in memory.
fn stream_reader(mut resp: reqwest::Response) -> ChannelReader {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(STREAM_QUEUE);
    tokio::spawn(async move {
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    tracing::trace!(len = c.len(), "download chunk");
                    if tx.send(Ok(c)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    tracing::trace!("download done");
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e))).await;
                    return;
                }
            }
        }
    });
    ChannelReader {
        rx,
        cur: Bytes::new(),
    }
}

pub struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}

// ---- restore ------------------------------------------------------------------------------

/// Simple uploads are used up to this size; larger files go through an upload session.
/// Graph documents 250 MB for simple uploads today; the older 4 MiB line works everywhere.
pub const SIMPLE_UPLOAD: u64 = 4 << 20;
/// Upload session fragments must be multiples of 320 KiB; ten of them per request.
pub const FRAGMENT: usize = 10 * 320 * 1024;

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A drive item's URL: the root has its own (`/root`), others are addressed by id.
fn item(drive: &str, id: &str) -> String {
    if id == "root" {
        format!("/drives/{drive}/root")
    } else {
        format!("/drives/{drive}/items/{id}")
    }
}

/// A child of `parent` by name, if there is one.
pub async fn child(
    g: &Graph,
    drive: &str,
    parent: &str,
    name: &str,
) -> Result<Option<Value>, Fail> {
    match g
        .get_json(&format!("{}:/{}:", item(drive, parent), enc(name)), None)
        .await
    {
        Ok(v) => Ok(Some(v)),
        Err(f) if f.is_not_found() => Ok(None),
        Err(f) => Err(f),
    }
}

/// The id of folder `name` in `parent`, created unless it exists.
pub async fn ensure_folder(
    g: &Graph,
    drive: &str,
    parent: &str,
    name: &str,
) -> Result<String, Fail> {
    let body = json!({ "name": name, "folder": {}, "@microsoft.graph.conflictBehavior": "fail" });
    match g
        .json(
            Method::POST,
            &format!("{}/children", item(drive, parent)),
            Some(Body::Json(body)),
            &[],
            None,
        )
        .await
    {
        Ok(v) => Ok(s(&v, "/id").to_string()),
        Err(f) if f.status() == Some(409) => match child(g, drive, parent, name).await? {
            Some(v) if v.get("folder").is_some() => Ok(s(&v, "/id").to_string()),
            _ => Err(Fail::Protocol(format!(
                "a file named {name} is in the way of a folder"
            ))),
        },
        Err(f) => Err(f),
    }
}

/// Uploads `content` (read chunk by chunk from the snapshot) as `name` in `parent`.
pub async fn upload(
    g: &Graph,
    drive: &str,
    parent: &str,
    name: &str,
    entry: &vault::Entry,
    content: &engine::RestoreContent,
) -> engine::Result<()> {
    let target = format!("{}:/{}:", item(drive, parent), enc(name));
    if entry.size <= SIMPLE_UPLOAD {
        let bytes = content.read(entry).await?;
        g.json(
            Method::PUT,
            &format!("{target}/content"),
            Some(Body::Bytes(Bytes::from(bytes), "application/octet-stream")),
            &[],
            None,
        )
        .await?;
        return Ok(());
    }
    let session = g
        .json(
            Method::POST,
            &format!("{target}/createUploadSession"),
            Some(Body::Json(
                json!({ "item": { "@microsoft.graph.conflictBehavior": "replace" } }),
            )),
            &[],
            None,
        )
        .await?;
    let url = session
        .get("uploadUrl")
        .and_then(Value::as_str)
        .ok_or_else(|| Fail::Protocol("an upload session without an upload URL".into()))?
        .to_string();
    let total = entry.size;
    let mut sent = 0u64;
    let mut buf: Vec<u8> = Vec::with_capacity(FRAGMENT * 2);
    // Each stored chunk is read alone, so memory holds one chunk and one fragment.
    for c in &entry.content {
        let mut one = entry.clone();
        one.content = vec![*c];
        buf.extend_from_slice(&content.read(&one).await?);
        while buf.len() >= FRAGMENT {
            let rest = buf.split_off(FRAGMENT);
            let frag = std::mem::replace(&mut buf, rest);
            put_fragment(g, &url, frag, sent, total).await?;
            sent += FRAGMENT as u64;
        }
    }
    if !buf.is_empty() || sent < total {
        let n = buf.len() as u64;
        put_fragment(g, &url, buf, sent, total).await?;
        sent += n;
    }
    if sent != total {
        return Err(engine::Error::source(
            engine::SourceErrorKind::Protocol,
            format!("{name}: the snapshot holds {sent} bytes of a file of {total}"),
        ));
    }
    Ok(())
}

async fn put_fragment(
    g: &Graph,
    url: &str,
    frag: Vec<u8>,
    at: u64,
    total: u64,
) -> Result<(), Fail> {
    let end = at + frag.len() as u64 - 1;
    g.send(
        Method::PUT,
        url,
        Some(Body::Bytes(Bytes::from(frag), "application/octet-stream")),
        &[("Content-Range", format!("bytes {at}-{end}/{total}"))],
        None,
        false,
    )
    .await?;
    Ok(())
}
