//! A delta page's file downloads: small files whole, a few at a time; large ones streamed
//! one at a time through the vault's chunker, so memory stays bounded whatever the size.
//!
//! The run's deadline is looked at before each file, not each page: a page of large files
//! can take longer than a Lambda function lives. A download that breaks off is resumed
//! with a `Range` request from where it stopped. A file that fails is recorded and asked
//! for again on the next run; one deleted since it was listed is reported as vanished.
//! SharePoint serves Office files with properties written into them, so the bytes served
//! may differ in number from the listed size: what is served is what a user downloads,
//! and it is stored, with both sizes noted.

use crate::client::{Fail, Graph};
use crate::names::Retry;
use crate::run::Run;
use bytes::{Buf, Bytes};
use domain::ItemPath;
use engine::{Entry, EntryKind, ItemInfo};
use futures::StreamExt;
use reqwest::Method;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};

/// Files up to this size are downloaded whole, four at a time; larger ones are streamed
/// one at a time through the chunker.
const SMALL_FILE: u64 = 4 << 20;
/// Downloads of small files in flight at once.
const DOWNLOADS: usize = 4;
/// Chunks of a streamed download waiting for the chunker: bounds its memory.
const STREAM_QUEUE: usize = 8;
/// Times one download is resumed after breaking off before it counts as failed.
const RESUMES: u32 = 3;

/// What a report says of a file deleted between its listing and its download.
const VANISHED: &str =
    "vanished: the file was deleted at the source after it was listed; nothing to keep";

/// One file to download: where it goes, its metadata, its URL and its listed size.
pub(super) type Download = (ItemPath, ItemInfo, String, u64);

/// Downloads a page's files into the tree. Returns `false` when the run's time ran out
/// before every file was read: the page is read again next run, and the files already
/// stored are recognised and not downloaded again.
///
/// # Errors
/// A storage failure, or a failure that stops the run (the token lost, throttling
/// beyond what the run can wait).
pub(super) async fn fetch(
    run: &mut Run<'_>,
    key: &str,
    downloads: Vec<Download>,
) -> engine::Result<bool> {
    let (small, large): (Vec<_>, Vec<_>) = downloads
        .into_iter()
        .partition(|(_, _, _, size)| *size <= SMALL_FILE);
    let g = run.g;
    let stop = AtomicBool::new(false);
    let stop = &stop;
    let mut complete = true;
    let mut results = futures::stream::iter(small)
        .map(|(path, info, url, size)| async move {
            // Files not started when the time is up wait for the next run.
            if stop.load(Ordering::SeqCst) {
                return (path, info, None, size);
            }
            let r = match open(g, &url).await {
                Ok((resp, url, auth)) => read_whole(g, &url, auth, resp).await,
                Err(f) => Err(f),
            };
            (path, info, Some(r), size)
        })
        .buffered(DOWNLOADS);
    while let Some((path, info, r, size)) = results.next().await {
        match r {
            None => complete = false,
            Some(Ok(b)) => {
                let served = b.len() as u64;
                let id = id_of(&info);
                let info = with_sizes(info, size, served);
                run.tree.put_item(&path, info, b).await?;
                stored(run, key, &path, &id, size, served);
            }
            Some(Err(f)) => item_failure(run, key, &path, &info, f)?,
        }
        if run.out_of_time() {
            stop.store(true, Ordering::SeqCst);
        }
    }
    drop(results);
    for (path, info, url, size) in large {
        if run.out_of_time() {
            return Ok(false);
        }
        let (resp, url, auth) = match open(g, &url).await {
            Ok(r) => r,
            Err(f) => {
                item_failure(run, key, &path, &info, f)?;
                continue;
            }
        };
        let id = id_of(&info);
        let info = with_sizes(info, size, size);
        let mut entry = Entry::new(path.file_name().unwrap_or(b"_").to_vec(), EntryKind::File);
        entry.mtime_ns = info.mtime_ns;
        entry.fingerprint = info.fingerprint;
        entry.meta = info.meta;
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(STREAM_QUEUE);
        let reader = ChannelReader {
            rx,
            cur: Bytes::new(),
        };
        let (_, put) = futures::join!(
            feed(g, &url, auth, resp, tx),
            run.tree.put_entry_stream(&path, entry, reader)
        );
        match put? {
            Some(served) => {
                if served != size {
                    // The listed size goes with the entry, so the next run sees it
                    // unchanged.
                    let note = ("listed_size".to_string(), size.to_string());
                    run.tree
                        .update_item(&path, |e| e.meta.push(note.clone()))
                        .await?;
                }
                stored(run, key, &path, &id, size, served);
            }
            // The tree recorded why; the file is asked for again next run.
            None => run.cur.retry_later(key, Retry { id, info: None }),
        }
    }
    Ok(complete)
}

fn id_of(info: &ItemInfo) -> String {
    crate::run::meta_of(&info.meta, "id")
        .unwrap_or_default()
        .to_string()
}

/// The entry's metadata with the listed size kept beside the one served, when they differ.
fn with_sizes(mut info: ItemInfo, listed: u64, served: u64) -> ItemInfo {
    if listed != served {
        info.meta.push(("listed_size".into(), listed.to_string()));
    }
    info
}

/// A file is in the tree: its id is noted, it leaves the retry list, and a size other than
/// the listed one is reported.
fn stored(run: &mut Run<'_>, key: &str, path: &ItemPath, id: &str, listed: u64, served: u64) {
    run.note(path, (!id.is_empty()).then_some(id));
    run.cur.retried(key, id);
    run.worked = true;
    if listed != served {
        run.tree.record_note(
            path,
            format!(
                "stored as served: {served} bytes, where the library lists {listed} \
                 (SharePoint writes a document's properties into Office files it serves)"
            ),
        );
    }
}

fn item_failure(
    run: &mut Run<'_>,
    key: &str,
    path: &ItemPath,
    info: &ItemInfo,
    f: Fail,
) -> engine::Result<()> {
    let id = id_of(info);
    if f.is_not_found() {
        run.tree.record_note(path, VANISHED);
        run.cur.retried(key, &id);
        Ok(())
    } else if !f.costs_one_item() {
        Err(f.into())
    } else {
        run.tree
            .record_error(path, format!("{f}; it is asked for again next run"));
        run.cur.retry_later(key, Retry { id, info: None });
        Ok(())
    }
}

/// Opens a download: a pre-authenticated URL is fetched without the bearer token; a
/// Graph `content` URL answers with a redirect to one. Returns the answer with the URL
/// that gave it and whether that URL takes the token, for resuming.
async fn open(g: &Graph, url: &str) -> Result<(reqwest::Response, String, bool), Fail> {
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
        return Ok((b.resp, to, false));
    }
    Ok((a.resp, url.to_string(), graph))
}

/// Asks for the rest of a download from byte `from` on.
async fn resume(g: &Graph, url: &str, auth: bool, from: u64) -> Result<reqwest::Response, Fail> {
    let range = [("Range", format!("bytes={from}-"))];
    let a = g.send(Method::GET, url, None, &range, None, auth).await?;
    let starts = a
        .resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(&format!("bytes {from}-")));
    if a.resp.status() != reqwest::StatusCode::PARTIAL_CONTENT || !starts {
        return Err(Fail::Broken(
            "the source would not resume a download where it broke off".into(),
        ));
    }
    Ok(a.resp)
}

/// A small file's whole body, resumed with a `Range` request where the connection breaks
/// off.
///
/// # Errors
/// [`Fail::Broken`] when it breaks off more than [`RESUMES`] times or the source will not
/// resume it; what [`resume`] meets otherwise.
async fn read_whole(
    g: &Graph,
    url: &str,
    auth: bool,
    mut resp: reqwest::Response,
) -> Result<Bytes, Fail> {
    let mut buf = bytes::BytesMut::new();
    let mut resumes = 0;
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c),
            Ok(None) => return Ok(buf.freeze()),
            Err(e) if resumes < RESUMES => {
                resumes += 1;
                tracing::debug!(error = %e, at = buf.len(), "a download broke off; resuming");
                resp = resume(g, url, auth, buf.len() as u64).await?;
            }
            Err(e) => {
                return Err(Fail::Broken(format!(
                    "a download broke off {resumes} times and was not resumed: {e}"
                )))
            }
        }
    }
}

/// Hands a download's body to the chunker through a bounded channel (at most a few chunks
/// wait in memory), resuming it with a `Range` request when the connection breaks off.
async fn feed(
    g: &Graph,
    url: &str,
    auth: bool,
    mut resp: reqwest::Response,
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
) {
    let mut got = 0u64;
    let mut resumes = 0;
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                got += c.len() as u64;
                if tx.send(Ok(c)).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) if resumes < RESUMES => {
                resumes += 1;
                tracing::debug!(error = %e, at = got, "a download broke off; resuming");
                match resume(g, url, auth, got).await {
                    Ok(r) => resp = r,
                    Err(f) => {
                        let _ = tx.send(Err(std::io::Error::other(f.to_string()))).await;
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = tx
                    .send(Err(std::io::Error::other(format!(
                        "a download broke off: {e}"
                    ))))
                    .await;
                return;
            }
        }
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
