//! A delta page's file downloads: small files whole, a few at a time; large ones streamed
//! one at a time through the vault's chunker, so memory stays bounded whatever the size.

use crate::client::{Fail, Graph};
use crate::run::Run;
use bytes::{Buf, Bytes};
use domain::ItemPath;
use engine::ItemInfo;
use futures::StreamExt;
use reqwest::Method;
use std::io::Read;

/// Files up to this size are downloaded whole, four at a time; larger ones are streamed
/// one at a time through the chunker.
const SMALL_FILE: u64 = 4 << 20;
/// Downloads of small files in flight at once.
const DOWNLOADS: usize = 4;
/// Chunks of a streamed download waiting for the chunker: bounds its memory.
const STREAM_QUEUE: usize = 8;

pub(super) async fn fetch(
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
