//! A service's message fetches: a queue that runs beside the folders' delta rounds, packs
//! messages across pages and folders into batches (small ones) or single reads (those
//! that may be large), and keeps the mailbox's four slots busy while answers are stored
//! in order.

use super::round::folder_done;
use crate::client::{BatchRequest, Fail, Graph, BATCH_MAX, MAILBOX_CONCURRENCY};
use crate::names::{Retry, RetryInfo, Track};
use crate::run::Run;
use bytes::Bytes;
use domain::ItemPath;
use engine::ItemInfo;
use futures::StreamExt;

/// Fetches (a batch, or one message read on its own) of one mailbox under way at once. The
/// mailbox's four slots bound how many are on the wire; the others wait for a slot, so
/// that one is sent the moment a slot frees, and answers are stored in order meanwhile.
/// A message with attachments may be large (Exchange allows 150 MB), so this also bounds
/// the memory a run holds.
const FETCHES_AHEAD: usize = 6;

/// A message to fetch: read on its own (`single`: it has attachments and may be large) or
/// in a batch.
pub(super) struct Fetch {
    pub(super) path: ItemPath,
    pub(super) id: String,
    pub(super) info: ItemInfo,
    pub(super) single: bool,
}

/// Messages fetched together: a batch, or one message read on its own.
pub(super) type Job = Vec<(Fetch, std::sync::Arc<str>)>;
/// A job's messages (with their folders' keys) and what was read.
pub(super) type Fetched = Vec<(Fetch, std::sync::Arc<str>, Result<Bytes, Fail>)>;

/// What a report says of a message deleted between its listing and its reading: not a
/// failure, since there is nothing left to keep.
const VANISHED: &str =
    "vanished: the message was deleted at the source after it was listed; nothing to keep";

/// Jobs queued beyond those under way before the next delta page is asked for.
pub(super) const QUEUE_LOW: u64 = FETCHES_AHEAD as u64 + 4;

/// Runs a service's fetch jobs in order, [`FETCHES_AHEAD`] at a time, and hands the
/// answers on. It runs beside the folders' rounds for the whole service, so a page's
/// last fetches overlap the next page's first and the mailbox's slots never drain
/// between pages.
pub(super) async fn fetch_jobs(
    g: &Graph,
    mailbox: Option<String>,
    user: String,
    jobs: tokio::sync::mpsc::UnboundedReceiver<Job>,
    done: tokio::sync::mpsc::Sender<Fetched>,
) {
    let queue = futures::stream::unfold(
        jobs,
        |mut rx| async move { rx.recv().await.map(|j| (j, rx)) },
    );
    let results = queue
        .map(|job| {
            let mailbox = mailbox.clone();
            let user = user.clone();
            async move {
                let url = |id: &str| format!("/users/{user}/messages/{id}/$value");
                let got: Vec<Result<Bytes, Fail>> = if job[0].0.single {
                    let urls: Vec<String> = job.iter().map(|(f, _)| url(&f.id)).collect();
                    futures::future::join_all(
                        urls.iter().map(|u| g.get_bytes(u, mailbox.as_deref())),
                    )
                    .await
                } else {
                    let reqs: Vec<BatchRequest> = job
                        .iter()
                        .map(|(f, _)| BatchRequest {
                            url: url(&f.id),
                            headers: Vec::new(),
                        })
                        .collect();
                    match g.batch(&reqs, mailbox.as_deref()).await {
                        Ok(answers) => answers
                            .into_iter()
                            .map(|a| a.and_then(|a| a.bytes()))
                            .collect(),
                        Err(f) => vec![Err(f); job.len()],
                    }
                };
                job.into_iter()
                    .zip(got)
                    .map(|((f, key), r)| (f, key, r))
                    .collect::<Fetched>()
            }
        })
        .buffered(FETCHES_AHEAD);
    let mut results = std::pin::pin!(results);
    while let Some(done_job) = results.next().await {
        if done.send(done_job).await.is_err() {
            break;
        }
    }
}

/// The folders' side of a service's fetch queue: messages go in, answers are stored as
/// they come back, and a folder's round is ended only once its messages are stored.
///
/// Messages are packed across pages and folders: small ones in batches of 20, those read
/// on their own in fours. A batch runs four of its requests at a time and waits for all
/// four of the mailbox's slots, so whole waves of four keep every slot busy, and what
/// does not fill a wave waits for the next page (or the service's end) instead of
/// leaving slots idle.
pub(super) struct Pipe {
    jobs: Option<tokio::sync::mpsc::UnboundedSender<Job>>,
    done: tokio::sync::mpsc::Receiver<Fetched>,
    sent: u64,
    stored: u64,
    small: Job,
    singles: Job,
    /// Messages of each folder not stored yet.
    outstanding: std::collections::HashMap<std::sync::Arc<str>, usize>,
    /// Folders whose rounds end once their messages are stored.
    waiting: std::collections::HashMap<std::sync::Arc<str>, Track>,
}

impl Pipe {
    pub(super) fn new(
        jobs: tokio::sync::mpsc::UnboundedSender<Job>,
        done: tokio::sync::mpsc::Receiver<Fetched>,
    ) -> Self {
        Pipe {
            jobs: Some(jobs),
            done,
            sent: 0,
            stored: 0,
            small: Vec::new(),
            singles: Vec::new(),
            outstanding: std::collections::HashMap::new(),
            waiting: std::collections::HashMap::new(),
        }
    }

    fn send(&mut self, job: Job) {
        if job.is_empty() {
            return;
        }
        if let Some(tx) = &self.jobs {
            if tx.send(job).is_ok() {
                self.sent += 1;
            }
        }
    }

    pub(super) fn submit(&mut self, key: &str, fetches: Vec<Fetch>) {
        if fetches.is_empty() {
            return;
        }
        let key: std::sync::Arc<str> = key.into();
        *self.outstanding.entry(key.clone()).or_default() += fetches.len();
        for f in fetches {
            if f.single {
                self.singles.push((f, key.clone()));
                if self.singles.len() == MAILBOX_CONCURRENCY {
                    for one in std::mem::take(&mut self.singles) {
                        self.send(vec![one]);
                    }
                }
            } else {
                self.small.push((f, key.clone()));
                if self.small.len() == BATCH_MAX {
                    let batch = std::mem::take(&mut self.small);
                    self.send(batch);
                }
            }
        }
    }

    /// Sends what waits for a wave to fill: whole waves of small messages as a batch, the
    /// rest on their own.
    fn flush(&mut self) {
        let whole = self.small.len() - self.small.len() % MAILBOX_CONCURRENCY;
        let rest = self.small.split_off(whole);
        let batch = std::mem::take(&mut self.small);
        self.send(batch);
        for (mut f, key) in rest.into_iter().chain(std::mem::take(&mut self.singles)) {
            f.single = true;
            self.send(vec![(f, key)]);
        }
    }

    async fn store(&mut self, run: &mut Run<'_>, done: Fetched) -> engine::Result<()> {
        for (f, key, r) in done {
            match r {
                Ok(mime) => {
                    run.tree.put_item(&f.path, f.info, mime).await?;
                    run.note(&f.path, None);
                    run.cur.retried(&key, &f.id);
                }
                Err(e) if e.is_not_found() => {
                    run.tree.record_note(&f.path, VANISHED);
                    run.cur.retried(&key, &f.id);
                }
                Err(e) if !e.costs_one_item() => return Err(e.into()),
                Err(e) => {
                    run.tree
                        .record_error(&f.path, format!("{e}; it is asked for again next run"));
                    let info = RetryInfo {
                        t: f.info.mtime_ns,
                        f: f.info.fingerprint,
                        m: f.info.meta,
                        single: f.single,
                    };
                    run.cur.retry_later(
                        &key,
                        Retry {
                            id: f.id,
                            info: Some(info),
                        },
                    );
                }
            }
            let left = self.outstanding.entry(key.clone()).or_default();
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.outstanding.remove(&key);
                if let Some(t) = self.waiting.remove(&key) {
                    folder_done(run, &key, t).await?;
                }
            }
        }
        self.stored += 1;
        Ok(())
    }

    /// Whether messages of folder `key` are still being fetched.
    pub(super) fn has_outstanding(&self, key: &str) -> bool {
        self.outstanding.contains_key(key)
    }

    pub(super) async fn finish_folder(
        &mut self,
        run: &mut Run<'_>,
        key: &str,
        t: Track,
    ) -> engine::Result<()> {
        if self.outstanding.contains_key(key) {
            self.waiting.insert(key.into(), t);
            Ok(())
        } else {
            folder_done(run, key, t).await
        }
    }

    /// Awaits `fut`, storing answers meanwhile: a request waiting for one of the mailbox's
    /// slots must not wait on answers nobody reads, which hold the slots. With the queue
    /// nearly empty, what waits for a wave to fill is sent rather than left idle.
    pub(super) async fn wait<T>(
        &mut self,
        run: &mut Run<'_>,
        fut: impl std::future::Future<Output = T>,
    ) -> engine::Result<T> {
        if self.sent - self.stored <= 1 {
            self.flush();
        }
        let mut fut = std::pin::pin!(fut);
        loop {
            tokio::select! {
                biased;
                v = &mut fut => return Ok(v),
                Some(d) = self.done.recv() => self.store(run, d).await?,
            }
        }
    }

    /// Stores answers until at most `n` jobs are queued or under way.
    pub(super) async fn wait_below(&mut self, run: &mut Run<'_>, n: u64) -> engine::Result<()> {
        while self.sent - self.stored > n {
            match self.done.recv().await {
                Some(d) => self.store(run, d).await?,
                None => break,
            }
        }
        Ok(())
    }

    /// Sends what is left, then no more jobs, and stores every answer still to come.
    pub(super) async fn drain(&mut self, run: &mut Run<'_>) -> engine::Result<()> {
        self.flush();
        self.jobs = None;
        while let Some(d) = self.done.recv().await {
            self.store(run, d).await?;
        }
        for (key, t) in std::mem::take(&mut self.waiting) {
            if self.outstanding.contains_key(&key) {
                // Never answered (the queue broke off): the folder is read again from its
                // last delta link next time rather than recorded as done.
                tracing::warn!(
                    "a folder's messages were not all fetched; it is read again next run"
                );
                continue;
            }
            folder_done(run, &key, t).await?;
        }
        Ok(())
    }
}
