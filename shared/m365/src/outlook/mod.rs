//! Exchange Online's shared machinery: what mail, contacts, To Do and calendars have in
//! common (collections listed whole, folders tracked by per-folder delta), and the
//! pipeline that keeps a mailbox's four request slots busy across a service's folders.
//! What is particular to a category (its folders, its items' metadata and export format)
//! is in that category's module; this one schedules.
//!
//! Delta is a per-folder operation in Graph, so each folder is tracked on its own. A
//! message moved between folders is reported as removed from one and added to the other
//! with the same immutable id; removals wait until the whole service is done, so the
//! added side finds the message in the tree and renames it instead of downloading it.

mod pipe;
mod round;

use crate::client::{BatchRequest, Fail, Graph, BATCH_MAX, MAILBOX_CONCURRENCY};
use crate::names::{self, fingerprint, time_ns};
use crate::run::{Flow, Live, Run};
use crate::{contacts, mail, todo};
use domain::ItemPath;
use engine::ItemInfo;
use futures::StreamExt;
use pipe::{fetch_jobs, Fetched, Job, Pipe};
use round::round;
use serde_json::Value;

/// Rows per delta page: Outlook's largest (200), so that the page request is a small share of
/// the work and a page's messages fill ten batches of 20; the rows are small, and messages
/// are fetched and stored a few at a time.
const PAGE: &str = "odata.maxpagesize=200";

/// Folders whose first delta page is asked for ahead of their turn.
const FOLDERS_AHEAD: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Mail,
    Contacts,
    Tasks,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Mail => "mail",
            Kind::Contacts => "contacts",
            Kind::Tasks => "tasks",
        }
    }

    fn ext(self) -> &'static str {
        match self {
            Kind::Mail => "eml",
            Kind::Contacts => "vcf",
            Kind::Tasks => "ics",
        }
    }

    pub fn top(self) -> &'static str {
        match self {
            Kind::Mail => "Mail",
            Kind::Contacts => "Contacts",
            Kind::Tasks => "Tasks",
        }
    }
}

/// One folder tracked by delta.
pub(crate) struct Coll {
    pub(crate) key: String,
    pub(crate) path: ItemPath,
    pub(crate) meta: Vec<(String, String)>,
    /// The first delta request of a full round.
    pub(crate) start: String,
}

pub(crate) fn s<'v>(v: &'v Value, k: &str) -> &'v str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// Follows `@odata.nextLink` to the end of a collection.
pub(crate) async fn list_all(run: &Run<'_>, url: &str) -> Result<Vec<Value>, Fail> {
    let mut out = Vec::new();
    let mut first = run.take_prefetched(url);
    let mut next = Some(run.g.url(url));
    let mut pages = 0;
    while let Some(u) = next {
        let page = match first.take() {
            Some(p) => p?,
            None => run.g.get_json(&u, run.mailbox.as_deref()).await?,
        };
        let value = page
            .get("value")
            .and_then(Value::as_array)
            .ok_or_else(|| Fail::Protocol("a Graph collection page without a value".into()))?;
        out.extend(value.iter().cloned());
        next = page
            .get("@odata.nextLink")
            .and_then(Value::as_str)
            .map(str::to_string);
        pages += 1;
        if pages > 100_000 {
            return Err(Fail::Protocol(
                "a Graph collection pages without end".into(),
            ));
        }
    }
    Ok(out)
}

/// Every collection of `urls`, listed side by side (as many at once as the mailbox
/// serves), in their order.
pub(crate) async fn list_side_by_side(
    run: &Run<'_>,
    urls: Vec<String>,
) -> Vec<Result<Vec<Value>, Fail>> {
    futures::stream::iter(urls)
        .map(|url| async move { list_all(run, &url).await })
        .buffered(MAILBOX_CONCURRENCY)
        .collect()
        .await
}

pub(crate) fn folder_meta(id: &str, name: &str, hidden: bool) -> Vec<(String, String)> {
    let mut m = vec![("id".into(), id.into()), ("name".into(), name.into())];
    if hidden {
        m.push(("hidden".into(), "true".into()));
    }
    m
}

/// The item's change key: `changeKey` where Outlook has one, else the etag.
pub(crate) fn change_key(v: &Value) -> &str {
    let ck = s(v, "changeKey");
    if ck.is_empty() {
        s(v, "@odata.etag")
    } else {
        ck
    }
}

/// Metadata of a contact or task from its delta row: `meta` as its category shows it, the
/// time and change key as Outlook gives them.
pub(crate) fn doc_info(v: &Value, meta: Vec<(String, String)>) -> ItemInfo {
    let key = change_key(v);
    ItemInfo {
        mtime_ns: time_ns(s(v, "lastModifiedDateTime")),
        fingerprint: if key.is_empty() {
            fingerprint(&v.to_string())
        } else {
            fingerprint(key)
        },
        meta,
    }
}

/// Backs up one delta-tracked service (mail, contacts or To Do).
pub async fn backup(run: &mut Run<'_>, kind: Kind) -> engine::Result<Flow> {
    let listed = match kind {
        Kind::Mail => mail::backup::folders(run).await,
        Kind::Contacts => contacts::backup::folders(run).await,
        Kind::Tasks => todo::backup::lists(run).await,
    };
    let colls = match listed {
        Ok(c) => c,
        // No mailbox (an unlicensed user, a mailbox not on Exchange Online): the service
        // is simply not there for this account.
        Err(f) if f.is_not_found() => {
            tracing::debug!(service = kind.prefix(), "not available for this account");
            return Ok(Flow::Done);
        }
        Err(f) => return Err(f.into()),
    };
    let prefix = format!("{}:", kind.prefix());
    let known: Vec<(String, ItemPath)> = run
        .cur
        .tracks
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(k, t)| (k.clone(), names::path(&t.p)))
        .collect();
    let live: Vec<Live> = colls
        .iter()
        .map(|c| (c.key.clone(), c.path.clone(), c.meta.clone()))
        .collect();
    let top = names::path(&[kind.top().as_bytes()]);
    run.tree.ensure_folder(&top).await?;
    for key in run.reconcile(&live, known).await? {
        let mut t = run.track(&key);
        t.d = None;
        t.n = None;
        run.set_track(&key, t);
    }
    for c in &colls {
        let mut t = run.track(&c.key);
        t.p = names::parts(&c.path);
        run.set_track(&c.key, t);
    }
    let mut first = first_pages(run, &colls).await?;
    // The first pages of the folders a batch did not bring are asked for a few folders
    // ahead, while the folders before them are stored: a folder with little in it then
    // costs no round trip of its own.
    let ahead: Vec<(String, String)> = colls
        .iter()
        .filter(|c| !first.contains_key(&c.key))
        .filter_map(|c| Some((c.key.clone(), first_url(run, c)?)))
        .collect();
    let g = run.g;
    let mailbox = run.mailbox.clone();
    // A request holds one of the mailbox's slots until its answer is read, so the pages
    // are always read as they come (never left waiting on a full queue, which could hold
    // the slots a batch is waiting for); credits, given back as pages are taken, keep the
    // asking a few folders ahead.
    let credits = tokio::sync::Semaphore::new(FOLDERS_AHEAD);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(String, Result<Value, Fail>)>();
    let prefetch = async {
        // Owned here, so that the receiver sees the end once every page is sent.
        let tx = tx;
        let mut pages = futures::stream::iter(ahead)
            .map(|(key, url)| {
                let mailbox = mailbox.clone();
                let credits = &credits;
                async move {
                    match credits.acquire().await {
                        Ok(c) => c.forget(),
                        // The folders' work has ended (paused, or failed): ask nothing more.
                        Err(_) => return (key, Err(Fail::Unavailable("not asked".into()))),
                    }
                    (key, page(g, url, mailbox).await)
                }
            })
            .buffered(FOLDERS_AHEAD);
        while let Some(p) = pages.next().await {
            if tx.send(p).is_err() {
                break;
            }
        }
    };
    let (jobs_tx, jobs_rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
    let (done_tx, done_rx) = tokio::sync::mpsc::channel::<Fetched>(2);
    let fetching = fetch_jobs(g, run.mailbox.clone(), run.key.clone(), jobs_rx, done_tx);
    let work = async {
        let mut rx = rx;
        let mut pipe = Pipe::new(jobs_tx, done_rx);
        let flow = folders(run, kind, &colls, &mut first, &mut rx, &credits, &mut pipe).await;
        credits.close();
        let flow = flow?;
        // Whether done or out of time, what was asked for is stored before the service
        // ends (and before a paused run's checkpoint).
        pipe.drain(run).await?;
        Ok::<_, engine::Error>(flow)
    };
    let ((), (), flow) = futures::join!(prefetch, fetching, work);
    let flow = flow?;
    run.flush_removals().await?;
    if flow == Flow::Paused {
        run.tree.pause();
    }
    Ok(flow)
}

type Pages = std::collections::HashMap<String, Result<Value, Fail>>;

/// The delta rounds of a service's folders in order, each starting from the page a batch
/// brought (`first`) or the one asked for ahead (`rx`, one credit given back per page).
async fn folders(
    run: &mut Run<'_>,
    kind: Kind,
    colls: &[Coll],
    first: &mut Pages,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Result<Value, Fail>)>,
    credits: &tokio::sync::Semaphore,
    pipe: &mut Pipe,
) -> engine::Result<Flow> {
    for c in colls {
        let mut got = first.remove(&c.key);
        if got.is_none() && !run.cur.done.contains(&c.key) {
            // Pages come in the folders' order.
            while let Some((key, p)) = pipe.wait(run, rx.recv()).await? {
                credits.add_permits(1);
                if key == c.key {
                    got = Some(p);
                    break;
                }
                first.insert(key, p);
            }
        }
        if round(run, kind, c, got, pipe).await? == Flow::Paused {
            return Ok(Flow::Paused);
        }
    }
    Ok(Flow::Done)
}

/// The next delta page of every folder that goes on from a delta link (a daily run), asked
/// in batches of 20: most folders have not changed, and one round trip answers twenty.
async fn first_pages(run: &Run<'_>, colls: &[Coll]) -> engine::Result<Pages> {
    let mut out = std::collections::HashMap::new();
    if !run.g.throttle.batch {
        return Ok(out);
    }
    let todo: Vec<(String, String)> = colls
        .iter()
        .filter(|c| !run.cur.done.contains(&c.key))
        .filter_map(|c| {
            let t = run.cur.tracks.get(&c.key)?;
            match (&t.n, &t.d) {
                (None, Some(d)) if d.starts_with(&run.g.root) => Some((c.key.clone(), d.clone())),
                _ => None,
            }
        })
        .collect();
    // A single folder gains nothing from a batch.
    if todo.len() < 2 {
        return Ok(out);
    }
    for chunk in todo.chunks(BATCH_MAX) {
        let reqs: Vec<BatchRequest> = chunk
            .iter()
            .map(|(_, url)| BatchRequest {
                url: url.clone(),
                headers: vec![("Prefer".into(), PAGE.into())],
            })
            .collect();
        let answers = run.g.batch(&reqs, run.mailbox.as_deref()).await?;
        for ((key, _), a) in chunk.iter().zip(answers) {
            out.insert(key.clone(), a.map(|a| a.body));
        }
    }
    Ok(out)
}

/// Where a folder's next delta round starts: its next page, its delta link, or (never
/// tracked, or forgotten) the start of a full enumeration. `None` when done this run.
fn first_url(run: &Run<'_>, c: &Coll) -> Option<String> {
    if run.cur.done.contains(&c.key) {
        return None;
    }
    let t = run.cur.tracks.get(&c.key);
    Some(
        t.and_then(|t| t.n.clone().or_else(|| t.d.clone()))
            .unwrap_or_else(|| c.start.clone()),
    )
}

/// A delta page of one mailbox's folder.
async fn page(g: &Graph, url: String, mailbox: Option<String>) -> Result<Value, Fail> {
    g.json(
        reqwest::Method::GET,
        &url,
        None,
        &[("Prefer", PAGE.to_string())],
        mailbox.as_deref(),
    )
    .await
}
