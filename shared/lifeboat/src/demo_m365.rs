//! `lifeboat demo` (the default): a Microsoft 365 organisation, served by the Graph
//! simulator inside this process, backed up, changed by a day of use, backed up again,
//! browsed, restored into a `Lifeboat Restore` folder and to another user, exported and
//! verified. Every restore is read back through Graph, as an administrator would see it.
//! It is the README's first command: it needs nothing but this binary (no AWS account, no
//! tenant, no internet; the simulator listens on 127.0.0.1 only).

use crate::home::open_home;
use anyhow::{bail, ensure, Context, Result};
use connectors::BuiltIn;
use domain::{AccountId, ItemPath, TaskId};
use engine::{
    AccountInfo, BackupOptions, ChangeKind, Connector, Destination, Engine, EntryKind,
    ExportOptions, NewTask, NoProgress, RestoreOptions, SnapshotRecord, TaskRecord,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

/// Graph as the demo's own administrator sees it: a token of the simulated app, and GETs.
struct Admin {
    http: reqwest::Client,
    graph: String,
    token: String,
}

impl Admin {
    fn new(sim: &graphsim::Running) -> Self {
        Admin {
            http: reqwest::Client::new(),
            graph: sim.graph_url(),
            token: sim.admin_token(),
        }
    }

    async fn get(&self, path: &str) -> Result<reqwest::Response> {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.graph)
        };
        Ok(self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .header("Prefer", "IdType=\"ImmutableId\"")
            .send()
            .await?
            .error_for_status()?)
    }

    /// Every member of a collection, following `@odata.nextLink`.
    async fn all(&self, path: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut next = Some(path.to_string());
        while let Some(u) = next {
            let page: Value = self.get(&u).await?.json().await?;
            if let Some(v) = page["value"].as_array() {
                out.extend(v.iter().cloned());
            }
            next = page["@odata.nextLink"].as_str().map(str::to_string);
        }
        Ok(out)
    }
}

/// Requests as Graph counts them against its limits: those inside a `$batch` one by one.
fn requests(sim: &graphsim::Running) -> u64 {
    let s = graphsim::server::lock(&sim.shared.stats);
    s.requests - s.batches
}

/// Every file of a snapshot below `at` with its size, walking folders.
async fn files(
    eng: &Engine,
    task: &TaskRecord,
    snap: &SnapshotRecord,
    at: &ItemPath,
) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![at.clone()];
    while let Some(dir) = stack.pop() {
        for e in eng.list(task, snap, &dir).await? {
            let child = dir.join(&e.name)?;
            match e.kind {
                EntryKind::Dir => stack.push(child),
                _ => {
                    out.insert(child.to_string(), e.size);
                }
            }
        }
    }
    Ok(out)
}

/// The bytes of one item of a snapshot, restored into `scratch`.
async fn item_bytes(
    eng: &Engine,
    task: &TaskRecord,
    snap: &SnapshotRecord,
    item: &ItemPath,
    scratch: &Path,
) -> Result<Vec<u8>> {
    let opts = RestoreOptions {
        include: vec![item.clone()],
        ..Default::default()
    };
    let r = eng
        .restore_to_dir(task, snap, scratch, &opts, &NoProgress)
        .await?;
    let rel = item.to_string();
    fs::read(r.target.join(&rel)).with_context(|| format!("{item} was not restored"))
}

async fn backup_all(
    eng: &Engine,
    task: &TaskRecord,
    accounts: &[AccountInfo],
    connector: &dyn Connector,
) -> Result<BTreeMap<AccountId, SnapshotRecord>> {
    let mut out = BTreeMap::new();
    for a in accounts {
        let s = eng
            .backup(task, &a.id, connector, &BackupOptions::default())
            .await
            .and_then(|end| end.into_snapshot())
            .with_context(|| format!("backup of {}", a.name))?;
        out.insert(a.id.clone(), s);
    }
    Ok(out)
}

fn totals(snaps: &BTreeMap<AccountId, SnapshotRecord>) -> (u64, u64, u64, u64) {
    snaps.values().fold((0, 0, 0, 0), |t, s| {
        (
            t.0 + s.stats.items,
            t.1 + s.stats.items_read,
            t.2 + s.stats.bytes,
            t.3 + s.stats.stored_bytes,
        )
    })
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

pub async fn run(dir: PathBuf) -> Result<u8> {
    let home = dir.join("home");
    let scratch = dir.join("restored");
    println!("Lifeboat demo (Microsoft 365) in {}", dir.display());

    let cfg = graphsim::Config {
        seed: 2026,
        ..Default::default()
    };
    let sim = graphsim::spawn(cfg.clone())
        .await
        .context("the Graph simulator cannot listen on 127.0.0.1")?;
    let admin = Admin::new(&sim);
    let (users, domains) = {
        let s = sim.shared.sim();
        (s.users.clone(), s.domains.clone())
    };
    println!(
        "1. Graph simulator at {}: an organisation of {} users in {} domains ({}) with mail, contacts, calendars, To Do, OneDrive and SharePoint sites",
        sim.base_url,
        users.len(),
        domains.len(),
        domains.join(", ")
    );

    // The task is added as `lifeboat task add m365` adds one: sign in, list the accounts,
    // keep the secret sealed with the task's key.
    let eng = open_home(&home)?;
    let mut settings = m365::M365Settings::new(&cfg.tenant_id, &cfg.client_id);
    settings.graph_url = sim.base_url.clone();
    settings.login_url = sim.base_url.clone();
    let task = eng
        .add_task(
            NewTask {
                name: TaskId::new("contoso")?,
                source: settings.to_source(),
                secret: Some(Zeroizing::new(cfg.client_secret.clone())),
                backup_hour: None,
            },
            &BuiltIn,
        )
        .await?;
    let connector: Arc<dyn Connector> = eng.connector(&task, &BuiltIn).await?;
    let accounts = eng.refresh_accounts(&task, connector.as_ref()).await?;
    let sites = accounts
        .iter()
        .filter(|a| a.id.as_str().starts_with("site+"))
        .count();
    println!(
        "2. task contoso added: {} accounts ({} users, {} SharePoint sites and sub-sites)",
        accounts.len(),
        accounts.len() - sites,
        sites
    );

    let r0 = requests(&sim);
    let day1 = backup_all(&eng, &task, &accounts, connector.as_ref()).await?;
    let (items, _, bytes, stored) = totals(&day1);
    let req1 = requests(&sim) - r0;
    println!(
        "3. day 1: {} snapshots, {items} items, {} of data, {} stored (compressed, encrypted), {req1} Graph requests",
        day1.len(),
        mib(bytes),
        mib(stored)
    );

    let anna = &users[0];
    let other = &users[1];
    let anna_id = AccountId::new(&anna.upn)?;
    let s1 = day1
        .get(&anna_id)
        .context("no snapshot of the first user")?;
    let mut line = Vec::new();
    for top in eng.list(&task, s1, &ItemPath::root()).await? {
        let p = ItemPath::root().join(&top.name)?;
        let n = files(&eng, &task, s1, &p).await?.len();
        line.push(format!("{} {n}", String::from_utf8_lossy(&top.name)));
    }
    println!("4. browse {}: {}", anna.upn, line.join(", "));

    let changes = {
        let mut s = sim.shared.sim();
        graphsim::day::advance(&sim.shared.cfg, &mut s)
    };
    let mut tally = [0usize; 4];
    count_changes(&changes, &mut tally);
    println!(
        "5. a day of use: {} items added (mail, files, events, contacts, tasks, list items), {} changed, {} moved, {} deleted",
        tally[0], tally[1], tally[2], tally[3]
    );

    let r0 = requests(&sim);
    let day2 = backup_all(&eng, &task, &accounts, connector.as_ref()).await?;
    let (items2, read2, _, stored2) = totals(&day2);
    let req2 = requests(&sim) - r0;
    println!(
        "6. day 2: {items2} items, only {read2} fetched (the changes, by Graph delta), {} stored, {req2} Graph requests ({}% of day 1)",
        mib(stored2),
        req2 * 100 / req1.max(1)
    );

    let s2 = day2.get(&anna_id).context("no second snapshot")?;
    let diff = eng.diff(&task, s1, s2).await?;
    let n = |k: ChangeKind| diff.iter().filter(|c| c.kind == k).count();
    println!(
        "7. diff of {}'s two snapshots: {} added, {} changed, {} removed",
        anna.upn,
        n(ChangeKind::Added),
        n(ChangeKind::Changed),
        n(ChangeKind::Removed)
    );

    // A message deleted on day 2 comes back from day 1, into a new labelled folder.
    let gone = diff
        .iter()
        .find(|c| c.kind == ChangeKind::Removed && c.path.starts_with("Mail/"))
        .context("no mail was deleted on day 2")?;
    let gone_path = ItemPath::parse(gone.path.as_bytes())?;
    let stored_mime = item_bytes(&eng, &task, s1, &gone_path, &scratch.join("a")).await?;
    let at = chrono::Utc::now();
    let label = domain::restore_label(domain::RESTORE_PREFIX, at);
    let opts = RestoreOptions {
        include: vec![gone_path.clone()],
        at: Some(at),
        ..Default::default()
    };
    let r = eng
        .restore(&task, s1, &Destination::default(), &opts, &BuiltIn)
        .await?;
    ensure!(r.errors.is_empty(), "restore problems: {:?}", r.errors);
    let upn = &anna.upn;
    let top = admin
        .all(&format!("/users/{upn}/mailFolders?$top=100"))
        .await?;
    let folder = top
        .iter()
        .find(|f| f["displayName"].as_str() == Some(label.as_str()))
        .with_context(|| format!("no folder \"{label}\" in the mailbox"))?;
    let mut msgs = Vec::new();
    let mut stack = vec![folder["id"].as_str().unwrap_or_default().to_string()];
    while let Some(id) = stack.pop() {
        msgs.extend(
            admin
                .all(&format!("/users/{upn}/mailFolders/{id}/messages"))
                .await?,
        );
        for c in admin
            .all(&format!("/users/{upn}/mailFolders/{id}/childFolders"))
            .await?
        {
            stack.push(c["id"].as_str().unwrap_or_default().to_string());
        }
    }
    ensure!(msgs.len() == 1, "{} messages restored, not 1", msgs.len());
    let id = msgs[0]["id"].as_str().unwrap_or_default();
    let mime = admin
        .get(&format!("/users/{upn}/messages/{id}/$value"))
        .await?
        .bytes()
        .await?;
    // Exchange writes a message's MIME anew from what it stores, so the restored message
    // is compared by what its reader sees, not byte for byte.
    for h in ["subject", "from", "to", "date"] {
        ensure!(
            header(&mime, h) == header(&stored_mime, h),
            "the restored message's {h} differs from the one backed up"
        );
    }
    ensure!(
        msgs[0]["isDraft"] == false,
        "the restored message is a draft"
    );
    println!(
        "8. restored a message deleted on day 2 from the day-1 snapshot into \"{label}\" of {upn}: same subject, sender, recipients and date, not a draft"
    );

    // The whole OneDrive, to another user: every file's bytes read back through Graph.
    let onedrive = ItemPath::parse(b"OneDrive")?;
    let want = files(&eng, &task, s2, &onedrive).await?;
    let at = chrono::Utc::now();
    let label = domain::restore_label(domain::RESTORE_PREFIX, at);
    let opts = RestoreOptions {
        include: vec![onedrive.clone()],
        at: Some(at),
        ..Default::default()
    };
    let r = eng
        .restore(
            &task,
            s2,
            &Destination {
                task: None,
                account: Some(AccountId::new(&other.upn)?),
            },
            &opts,
            &BuiltIn,
        )
        .await?;
    ensure!(r.errors.is_empty(), "restore problems: {:?}", r.errors);
    let local = eng
        .restore_to_dir(&task, s2, &scratch.join("b"), &opts, &NoProgress)
        .await?;
    let mut checked = 0;
    let mut bytes = 0;
    for (path, size) in &want {
        let rel = path.strip_prefix("OneDrive/").unwrap_or(path);
        let url = format!(
            "/users/{}/drive/root:/{}/{}:/content",
            other.upn,
            enc(&label),
            rel.split('/').map(enc).collect::<Vec<_>>().join("/")
        );
        let got = admin.get(&url).await?.bytes().await?;
        let orig = fs::read(local.target.join(path))?;
        ensure!(
            got.as_ref() == orig.as_slice() && got.len() as u64 == *size,
            "{rel} restored to {} differs from the backup",
            other.upn
        );
        checked += 1;
        bytes += *size;
    }
    println!(
        "9. restored {}'s OneDrive to {} under \"{label}\": {checked} files, {}, each read back through Graph byte-equal",
        anna.upn,
        other.upn,
        mib(bytes)
    );

    let zip = dir.join("export.zip");
    let ex = eng
        .export(&task, s2, &zip, &ExportOptions::default(), &NoProgress)
        .await?;
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for p in files(&eng, &task, s2, &ItemPath::root()).await?.keys() {
        let ext = match p.rsplit_once('.') {
            Some((_, e)) if ["eml", "vcf", "ics"].contains(&e) => e.to_string(),
            _ => "files".into(),
        };
        *kinds.entry(ext).or_default() += 1;
    }
    println!(
        "10. exported {}'s day-2 snapshot to {}: {} entries ({})",
        anna.upn,
        zip.display(),
        ex.items,
        kinds
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let v = eng.verify(&task, &NoProgress).await?;
    if !v.is_ok() {
        bail!("verify found damage: {:?}", v.damage);
    }
    println!(
        "11. verify: {} packs, {} blobs, {} snapshots: no damage",
        v.packs, v.blobs, v.snapshots
    );
    println!(
        "demo passed. The snapshots stay in {} (lifeboat --home {} snapshots contoso); the simulator stops with this command.",
        home.display(),
        home.display()
    );
    Ok(0)
}

/// Adds up the simulator's report of a day: each list under a key that names a kind of
/// change (`added`, `addedFiles`, `modified`, `editedListItems`, `moved`, `deleted`…).
fn count_changes(v: &Value, tally: &mut [usize; 4]) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let kind = ["added", "updated|modified|edited", "moved", "deleted"]
                    .iter()
                    .position(|names| names.split('|').any(|n| k.starts_with(n)));
                match (kind, v) {
                    (Some(i), Value::Array(a)) => tally[i] += a.len(),
                    _ => count_changes(v, tally),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| count_changes(v, tally)),
        _ => {}
    }
}

/// A header's value (unfolded, trimmed), from a message's header section.
fn header(mime: &[u8], name: &str) -> Option<String> {
    let end = mime
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(mime.len());
    let text = String::from_utf8_lossy(&mime[..end])
        .replace("\r\n ", " ")
        .replace("\r\n\t", " ");
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// A path segment for a Graph `root:/path:` address.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
