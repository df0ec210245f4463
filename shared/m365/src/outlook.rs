//! Exchange Online: mail (the whole folder tree, hidden folders included; per-folder
//! message delta; each message stored as its MIME), contacts (per-folder delta, `.vcf`),
//! To Do (per-list task delta, `.ics` VTODO) and calendars (every event, series masters
//! with their exceptions, `.ics`).
//!
//! Delta is a per-folder operation in Graph, so each folder is tracked on its own. A
//! message moved between folders is reported as removed from one and added to the other
//! with the same immutable id; removals wait until the whole service is done, so the
//! added side finds the message in the tree and renames it instead of downloading it.

use crate::client::{BatchRequest, Fail, Graph, BATCH_MAX, MAILBOX_CONCURRENCY};
use crate::formats;
use crate::names::{self, fingerprint, item_name, seg, time_ns, Track};
use crate::run::{Flow, Live, Run};
use bytes::Bytes;
use domain::ItemPath;
use engine::ItemInfo;
use futures::StreamExt;
use serde_json::Value;

/// Rows per delta page: Outlook's largest (200), so that the page request is a small share of
/// the work and a page's messages fill ten batches of 20; the rows are small, and messages
/// are fetched and stored a few at a time.
const PAGE: &str = "odata.maxpagesize=200";

/// The message properties a backup keeps as metadata (the content is the MIME);
/// `hasAttachments` tells small messages, fetched in batches, from those that may be large,
/// fetched on their own.
const MESSAGE_SELECT: &str = "subject,from,receivedDateTime,isRead,importance,categories,flag,isDraft,changeKey,hasAttachments";

/// Fetches (a batch, or one message read on its own) of one mailbox under way at once. The
/// mailbox's four slots bound how many are on the wire; the others wait for a slot, so
/// that one is sent the moment a slot frees, and answers are stored in order meanwhile.
/// A message with attachments may be large (Exchange allows 150 MB), so this also bounds
/// the memory a run holds.
const FETCHES_AHEAD: usize = 6;

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
struct Coll {
    key: String,
    path: ItemPath,
    meta: Vec<(String, String)>,
    /// The first delta request of a full round.
    start: String,
}

fn s<'v>(v: &'v Value, k: &str) -> &'v str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// Follows `@odata.nextLink` to the end of a collection.
async fn list_all(run: &Run<'_>, url: &str) -> Result<Vec<Value>, Fail> {
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
async fn list_side_by_side(run: &Run<'_>, urls: Vec<String>) -> Vec<Result<Vec<Value>, Fail>> {
    futures::stream::iter(urls)
        .map(|url| async move { list_all(run, &url).await })
        .buffered(MAILBOX_CONCURRENCY)
        .collect()
        .await
}

/// The first request of each Outlook service of user `u`: what a backup asks for first.
pub fn mail_root(u: &str) -> String {
    format!("/users/{u}/mailFolders?includeHiddenFolders=true&$top=250")
}

pub fn contacts_root(u: &str) -> String {
    format!("/users/{u}/contactFolders?$top=250")
}

pub fn calendars_root(u: &str) -> String {
    format!("/users/{u}/calendars?$top=250")
}

pub fn todo_root(u: &str) -> String {
    format!("/users/{u}/todo/lists?$top=250")
}

fn folder_meta(id: &str, name: &str, hidden: bool) -> Vec<(String, String)> {
    let mut m = vec![("id".into(), id.into()), ("name".into(), name.into())];
    if hidden {
        m.push(("hidden".into(), "true".into()));
    }
    m
}

async fn mail_folders(run: &Run<'_>) -> Result<Vec<Coll>, Fail> {
    let u = &run.key;
    let mut out = Vec::new();
    // Level by level, the children of a level's folders listed side by side.
    let mut level: Vec<(String, ItemPath)> = vec![(mail_root(u), names::path(&[b"Mail"]))];
    while !level.is_empty() {
        let urls: Vec<String> = level.iter().map(|(url, _)| url.clone()).collect();
        let listed = list_side_by_side(run, urls).await;
        let mut next = Vec::new();
        for ((_, parent), folders) in level.iter().zip(listed) {
            for f in folders? {
                let id = s(&f, "id");
                let name = s(&f, "displayName");
                if id.is_empty() {
                    continue;
                }
                let path = parent.join(&seg(name)).expect("valid segment");
                if f.get("childFolderCount").and_then(Value::as_u64) != Some(0) {
                    next.push((
                        format!(
                            "/users/{u}/mailFolders/{id}/childFolders?includeHiddenFolders=true&$top=250"
                        ),
                        path.clone(),
                    ));
                }
                out.push(Coll {
                    key: format!("mail:{id}"),
                    start: format!(
                        "/users/{u}/mailFolders/{id}/messages/delta?$select={MESSAGE_SELECT}"
                    ),
                    meta: folder_meta(
                        id,
                        name,
                        f.get("isHidden").and_then(Value::as_bool) == Some(true),
                    ),
                    path,
                });
            }
        }
        level = next;
    }
    Ok(out)
}

async fn contact_folders(run: &Run<'_>) -> Result<Vec<Coll>, Fail> {
    let u = &run.key;
    let top = list_all(run, &contacts_root(u)).await?;
    // Listed folders are children of the default Contacts folder, whose id they name.
    let default = top
        .iter()
        .map(|f| s(f, "parentFolderId"))
        .find(|p| !p.is_empty())
        .unwrap_or("contacts")
        .to_string();
    let root = names::path(&[b"Contacts"]);
    let mut out = vec![Coll {
        key: "contacts:default".into(),
        start: format!("/users/{u}/contactFolders/{default}/contacts/delta"),
        meta: folder_meta(&default, "Contacts", false),
        path: root.clone(),
    }];
    // Level by level, the children of a level's folders listed side by side.
    let mut level: Vec<(Value, ItemPath)> = top.into_iter().map(|f| (f, root.clone())).collect();
    while !level.is_empty() {
        let mut here = Vec::new();
        for (f, parent) in level {
            let id = s(&f, "id").to_string();
            let name = s(&f, "displayName").to_string();
            if id.is_empty() {
                continue;
            }
            let path = parent.join(&seg(&name)).expect("valid segment");
            here.push((id, name, path));
        }
        let urls: Vec<String> = here
            .iter()
            .map(|(id, _, _)| format!("/users/{u}/contactFolders/{id}/childFolders?$top=250"))
            .collect();
        let listed = list_side_by_side(run, urls).await;
        let mut next = Vec::new();
        for ((id, name, path), children) in here.into_iter().zip(listed) {
            next.extend(children?.into_iter().map(|c| (c, path.clone())));
            out.push(Coll {
                key: format!("contacts:{id}"),
                start: format!("/users/{u}/contactFolders/{id}/contacts/delta"),
                meta: folder_meta(&id, &name, false),
                path,
            });
        }
        level = next;
    }
    Ok(out)
}

async fn todo_lists(run: &Run<'_>) -> Result<Vec<Coll>, Fail> {
    let u = &run.key;
    let lists = list_all(run, &todo_root(u)).await?;
    Ok(lists
        .iter()
        .filter(|l| !s(l, "id").is_empty())
        .map(|l| {
            let id = s(l, "id");
            let name = s(l, "displayName");
            Coll {
                key: format!("tasks:{id}"),
                start: format!("/users/{u}/todo/lists/{id}/tasks/delta"),
                meta: folder_meta(id, name, false),
                path: names::path(&[b"Tasks".to_vec(), seg(name)]),
            }
        })
        .collect())
}

/// Metadata of a message from its delta row.
fn message_info(m: &Value) -> ItemInfo {
    let from = m.pointer("/from/emailAddress");
    let from = match from {
        Some(a) if !s(a, "name").is_empty() => format!("{} <{}>", s(a, "name"), s(a, "address")),
        Some(a) => s(a, "address").to_string(),
        None => String::new(),
    };
    let categories: Vec<&str> = m
        .get("categories")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut meta = vec![
        ("from".to_string(), from),
        ("subject".to_string(), s(m, "subject").to_string()),
        ("received".to_string(), s(m, "receivedDateTime").to_string()),
        (
            "read".to_string(),
            (m.get("isRead").and_then(Value::as_bool) == Some(true)).to_string(),
        ),
        ("importance".to_string(), s(m, "importance").to_string()),
        ("categories".to_string(), categories.join(", ")),
    ];
    let flag = m
        .pointer("/flag/flagStatus")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !flag.is_empty() && flag != "notFlagged" {
        meta.push(("flag".into(), flag.into()));
    }
    if m.get("isDraft").and_then(Value::as_bool) == Some(true) {
        meta.push(("draft".into(), "true".into()));
    }
    ItemInfo {
        mtime_ns: time_ns(s(m, "receivedDateTime")),
        fingerprint: fingerprint(change_key(m)),
        meta,
    }
}

/// The item's change key: `changeKey` where Outlook has one, else the etag.
fn change_key(v: &Value) -> &str {
    let ck = s(v, "changeKey");
    if ck.is_empty() {
        s(v, "@odata.etag")
    } else {
        ck
    }
}

fn doc_info(kind: Kind, v: &Value) -> ItemInfo {
    let meta = match kind {
        Kind::Contacts => vec![
            ("name".to_string(), s(v, "displayName").to_string()),
            (
                "email".to_string(),
                v.pointer("/emailAddresses/0/address")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            ),
        ],
        _ => vec![
            ("subject".to_string(), s(v, "title").to_string()),
            ("status".to_string(), s(v, "status").to_string()),
        ],
    };
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
        Kind::Mail => mail_folders(run).await,
        Kind::Contacts => contact_folders(run).await,
        Kind::Tasks => todo_lists(run).await,
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
    run.tree.ensure_folder(&top)?;
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

/// One delta round of one folder, from where its tracking stands; `first` is its next page
/// when it was already asked for. Each page is stored while the next one is asked for, so
/// that the mailbox's other slots are not idle while a page request is out.
async fn round(
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
async fn folder_done(run: &mut Run<'_>, key: &str, mut t: Track) -> engine::Result<()> {
    if t.full {
        let staging = names::staging(key);
        if run.tree.has_folder(&staging) {
            run.tree.remove(&staging).await?;
        }
        t.full = false;
    }
    run.set_track(key, t);
    run.cur.done.insert(key.to_string());
    Ok(())
}

async fn start_full(run: &mut Run<'_>, t: &mut Track, c: &Coll) -> engine::Result<()> {
    if run.tree.items(&c.path).next().is_some() {
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
            Kind::Mail => message_info(row),
            k => doc_info(k, row),
        };
        let draft = row.get("isDraft").and_then(Value::as_bool) == Some(true);
        let here = run.tree.item(&path).map(|e| e.fingerprint);
        if here.is_none() {
            if let Some(old) = run.find_name(&name) {
                // Moved here from another folder (or back from staging): keep its content.
                run.rename(&old, &path).await?;
            }
        }
        match (kind, run.tree.item(&path).map(|e| e.fingerprint)) {
            (_, Some(fp)) if fp == info.fingerprint => {}
            // A sent or received message's content does not change; what changes is its
            // read state, flag, categories: metadata only.
            (Kind::Mail, Some(_)) if !draft => {
                run.update_meta(&path, &info)?;
            }
            (Kind::Mail, _) => {
                let attachments = row.get("hasAttachments").and_then(Value::as_bool) != Some(false);
                fetch.push((path, id.to_string(), info, attachments))
            }
            (k, _) => {
                let content = if k == Kind::Contacts {
                    formats::vcard(row)
                } else {
                    formats::ics_task(row)
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

/// A message to fetch: read on its own (`single`: it has attachments and may be large) or
/// in a batch.
struct Fetch {
    path: ItemPath,
    id: String,
    info: ItemInfo,
    single: bool,
}

/// Messages fetched together: a batch, or one message read on its own.
type Job = Vec<(Fetch, std::sync::Arc<str>)>;
/// A job's messages (with their folders' keys) and what was read.
type Fetched = Vec<(Fetch, std::sync::Arc<str>, Result<Bytes, Fail>)>;

/// Jobs queued beyond those under way before the next delta page is asked for.
const QUEUE_LOW: u64 = FETCHES_AHEAD as u64 + 4;

/// Runs a service's fetch jobs in order, [`FETCHES_AHEAD`] at a time, and hands the
/// answers on. It runs beside the folders' rounds for the whole service, so a page's
/// last fetches overlap the next page's first and the mailbox's slots never drain
/// between pages.
async fn fetch_jobs(
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
struct Pipe {
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
    fn new(
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

    fn submit(&mut self, key: &str, fetches: Vec<Fetch>) {
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
                }
                Err(e) if e.is_not_found() => run.tree.record_error(
                    &f.path,
                    "the message was deleted at the source before it could be read",
                ),
                Err(e) if e.is_fatal() => return Err(e.into()),
                Err(e) => run.tree.record_error(&f.path, e.to_string()),
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

    async fn finish_folder(
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
    async fn wait<T>(
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
    async fn wait_below(&mut self, run: &mut Run<'_>, n: u64) -> engine::Result<()> {
        while self.sent - self.stored > n {
            match self.done.recv().await {
                Some(d) => self.store(run, d).await?,
                None => break,
            }
        }
        Ok(())
    }

    /// Sends what is left, then no more jobs, and stores every answer still to come.
    async fn drain(&mut self, run: &mut Run<'_>) -> engine::Result<()> {
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

/// How far ahead of a series' start its exceptions are looked for.
const SERIES_WINDOW_DAYS: i64 = 1825;

/// Backs up every calendar: events are listed (Graph v1.0 tracks event changes only as
/// occurrences in a window, which cannot bring back a series master); an event is written
/// again only when its change key changed.
pub async fn calendars(run: &mut Run<'_>) -> engine::Result<Flow> {
    let u = run.key.clone();
    let cals = match list_all(run, &calendars_root(&u)).await {
        Ok(c) => c,
        Err(f) if f.is_not_found() => return Ok(Flow::Done),
        Err(f) => return Err(f.into()),
    };
    let top = names::path(&[b"Calendar"]);
    run.tree.ensure_folder(&top)?;
    let live: Vec<Live> = cals
        .iter()
        .filter(|c| !s(c, "id").is_empty())
        .map(|c| {
            (
                format!("calendar:{}", s(c, "id")),
                top.join(&seg(s(c, "name"))).expect("valid segment"),
                folder_meta(s(c, "id"), s(c, "name"), false),
            )
        })
        .collect();
    let known = run.known_folders("calendar:");
    run.reconcile(&live, known).await?;
    for (key, path, _) in &live {
        run.cur.folders.insert(key.clone(), names::parts(path));
    }
    // The calendars' events are listed side by side (a mailbox has a few calendars).
    let todo: Vec<&Live> = live
        .iter()
        .filter(|(key, _, _)| !run.cur.done.contains(key))
        .collect();
    let urls: Vec<String> = todo
        .iter()
        .map(|(_, _, meta)| format!("/users/{u}/calendars/{}/events?$top=250", meta[0].1))
        .collect();
    let listed = list_side_by_side(run, urls).await;
    for ((key, path, _), events) in todo.into_iter().zip(listed) {
        if run.out_of_time() {
            run.tree.pause();
            return Ok(Flow::Paused);
        }
        let events = events?;
        // The exceptions of the series that changed, read side by side.
        let masters: Vec<Value> = events
            .iter()
            .filter(|e| s(e, "type") == "seriesMaster" && !s(e, "id").is_empty())
            .filter(|e| {
                let p = path.join(&item_name(s(e, "id"), "ics"));
                p.ok()
                    .and_then(|p| run.tree.item(&p).map(|x| x.fingerprint))
                    != Some(fingerprint(change_key(e)))
            })
            .cloned()
            .collect();
        let mut exceptions: std::collections::HashMap<String, Result<Vec<Value>, Fail>> = {
            let r: &Run<'_> = run;
            futures::stream::iter(masters)
                .map(|m| async move { (s(&m, "id").to_string(), exceptions_of(r, &m).await) })
                .buffered(MAILBOX_CONCURRENCY)
                .collect()
                .await
        };
        let mut seen = std::collections::HashSet::new();
        for e in &events {
            let eid = s(e, "id");
            if eid.is_empty() {
                continue;
            }
            let name = item_name(eid, "ics");
            seen.insert(name.clone());
            let p = path.join(&name)?;
            let info = ItemInfo {
                mtime_ns: time_ns(s(e, "lastModifiedDateTime")),
                fingerprint: fingerprint(change_key(e)),
                meta: vec![
                    ("subject".into(), s(e, "subject").into()),
                    (
                        "start".into(),
                        e.pointer("/start/dateTime")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .into(),
                    ),
                    (
                        "organizer".into(),
                        e.pointer("/organizer/emailAddress/address")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .into(),
                    ),
                ],
            };
            if run.tree.item(&p).map(|x| x.fingerprint) == Some(info.fingerprint) {
                continue;
            }
            let exceptions = if s(e, "type") == "seriesMaster" {
                match exceptions
                    .remove(eid)
                    .unwrap_or_else(|| Err(Fail::Unavailable("not asked".into())))
                {
                    Ok(x) => x,
                    Err(f) if f.is_fatal() => return Err(f.into()),
                    Err(f) => {
                        run.tree.record_error(
                            &p,
                            format!("the series' exceptions could not be read: {f}"),
                        );
                        Vec::new()
                    }
                }
            } else {
                Vec::new()
            };
            run.tree
                .put_item(&p, info, Bytes::from(formats::ics_event(e, &exceptions)))
                .await?;
        }
        let gone: Vec<Vec<u8>> = run
            .tree
            .items(path)
            .filter(|x| !seen.contains(&x.name))
            .map(|x| x.name.clone())
            .collect();
        for n in gone {
            run.tree.remove(&path.join(&n)?).await?;
        }
        run.worked = true;
        run.cur.done.insert(key.clone());
    }
    Ok(Flow::Done)
}

/// The exceptions of a series master: the instances Graph marks `exception`.
async fn exceptions_of(run: &Run<'_>, master: &Value) -> Result<Vec<Value>, Fail> {
    let start = master
        .pointer("/recurrence/range/startDate")
        .and_then(Value::as_str)
        .map(|d| format!("{d}T00:00:00Z"))
        .unwrap_or_else(|| {
            let dt = master
                .pointer("/start/dateTime")
                .and_then(Value::as_str)
                .unwrap_or("2000-01-01T00:00:00");
            format!("{}Z", dt.get(..19).unwrap_or(dt))
        });
    let from = chrono::DateTime::parse_from_rfc3339(&start)
        .map(|d| d.with_timezone(&chrono::Utc))
        .unwrap_or_else(|_| chrono::Utc::now());
    let to = from + chrono::Duration::days(SERIES_WINDOW_DAYS);
    let url = format!(
        "/users/{}/events/{}/instances?startDateTime={}&endDateTime={}&$top=250",
        run.key,
        s(master, "id"),
        from.format("%Y-%m-%dT%H:%M:%SZ"),
        to.format("%Y-%m-%dT%H:%M:%SZ")
    );
    Ok(list_all(run, &url)
        .await?
        .into_iter()
        .filter(|i| s(i, "type") == "exception")
        .collect())
}
