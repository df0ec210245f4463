//! The Microsoft 365 connector's whole cycle against the Graph simulator, through the
//! engine on the embedded adapters and the connectors list the product opens tasks with:
//! a first backup of every account, a day of changes in every service fetched
//! incrementally, browsing both snapshots, restores to the same and to another user read
//! back through Graph, an export as a zip; then the faults Graph documents (throttling,
//! tokens that expire mid-run, delta tokens that expire), a message whose MIME is broken,
//! and the task's domain filter.

use domain::{AccountId, ItemPath, TaskId};
use engine::{
    AccountInfo, BackupOptions, ChangeKind, Destination, Entry, EntryKind, ExportFormat,
    ExportOptions, NewTask, NoProgress, RestoreOptions, SnapshotRecord, TaskRecord,
};
use lifeboat_tests::TestEnv;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Read;
use zeroize::Zeroizing;

const IMMUTABLE: (&str, &str) = ("Prefer", "IdType=\"ImmutableId\"");

/// A small organisation: two users, the root site, a few items of each kind.
fn org(seed: u64) -> graphsim::Config {
    graphsim::Config {
        seed,
        users: 2,
        domains: 2,
        messages_per_folder: 12,
        folder_depth: 1,
        attachment_every: 3,
        large_attachment_bytes: 120_000,
        contacts_per_user: 4,
        events_per_user: 4,
        tasks_per_list: 3,
        files_per_user: 6,
        large_file_bytes: 400_000,
        sites: 0,
        ..graphsim::Config::default()
    }
}

struct Cycle {
    env: TestEnv,
    engine: engine::Engine,
    sim: graphsim::Running,
    task: TaskRecord,
    http: reqwest::Client,
    token: String,
}

fn settings(sim: &graphsim::Running) -> m365::M365Settings {
    let cfg = &sim.shared.cfg;
    m365::M365Settings {
        graph_url: sim.base_url.clone(),
        login_url: sim.base_url.clone(),
        ..m365::M365Settings::new(&cfg.tenant_id, &cfg.client_id)
    }
}

async fn start(cfg: graphsim::Config) -> Cycle {
    start_with(cfg, |s| s).await
}

async fn start_with(
    cfg: graphsim::Config,
    shape: impl FnOnce(m365::M365Settings) -> m365::M365Settings,
) -> Cycle {
    let sim = graphsim::spawn(cfg).await.expect("the simulator starts");
    let env = TestEnv::new();
    let engine = env.engine("acme");
    let secret = sim.shared.cfg.client_secret.clone();
    let task = engine
        .add_task(
            NewTask {
                name: TaskId::new("m365").unwrap(),
                source: shape(settings(&sim)).to_source(),
                secret: Some(Zeroizing::new(secret)),
                backup_hour: None,
            },
            &connectors::BuiltIn,
        )
        .await
        .expect("task added");
    let http = reqwest::Client::new();
    let token = sim.admin_token();
    Cycle {
        env,
        engine,
        sim,
        task,
        http,
        token,
    }
}

impl Cycle {
    async fn accounts(&self) -> Vec<AccountInfo> {
        let c = self
            .engine
            .connector(&self.task, &connectors::BuiltIn)
            .await
            .unwrap();
        self.engine
            .refresh_accounts(&self.task, c.as_ref())
            .await
            .expect("accounts")
    }

    /// Backs up every account as the scheduler does (by id, the connector opened through
    /// `BuiltIn`).
    async fn backup_all(&self, accounts: &[AccountInfo]) -> BTreeMap<String, SnapshotRecord> {
        self.env.advance(chrono::Duration::days(1));
        let mut out = BTreeMap::new();
        for a in accounts {
            let connector = self
                .engine
                .connector(&self.task, &connectors::BuiltIn)
                .await
                .unwrap();
            let s = self
                .engine
                .backup(
                    &self.task,
                    &a.id,
                    connector.as_ref(),
                    &BackupOptions::default(),
                )
                .await
                .and_then(|end| end.into_snapshot())
                .unwrap_or_else(|e| panic!("backup of {}: {e}", a.id));
            if s.error_count > 0 {
                let errors = self.engine.snapshot_errors(&self.task, &s).await.unwrap();
                panic!("{}: {errors:?}", a.id);
            }
            out.insert(a.id.to_string(), s);
        }
        out
    }

    async fn admin(&self, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/_sim/{path}", self.sim.base_url);
        let req = match (body, path) {
            (Some(b), _) => self.http.post(url).json(&b),
            (None, "stats" | "info") => self.http.get(url),
            (None, _) => self.http.post(url),
        };
        let resp = req.send().await.unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.unwrap_or(Value::Null)
    }

    async fn graph(&self, path: &str) -> reqwest::Response {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.sim.graph_url())
        };
        let resp = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .header(IMMUTABLE.0, IMMUTABLE.1)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp
    }

    async fn get(&self, path: &str) -> Value {
        self.graph(path).await.json().await.unwrap()
    }

    async fn bytes(&self, path: &str) -> Vec<u8> {
        self.graph(path).await.bytes().await.unwrap().to_vec()
    }

    /// Every item of a Graph collection, following next links.
    async fn all(&self, path: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut next = Some(path.to_string());
        while let Some(u) = next {
            let page = self.get(&u).await;
            out.extend(page["value"].as_array().unwrap().iter().cloned());
            next = page["@odata.nextLink"].as_str().map(str::to_string);
        }
        out
    }

    /// Every item of a snapshot by path, with its entry.
    async fn tree(&self, snap: &SnapshotRecord) -> BTreeMap<String, Entry> {
        let mut out = BTreeMap::new();
        let mut stack = vec![ItemPath::root()];
        while let Some(dir) = stack.pop() {
            for e in self.engine.list(&self.task, snap, &dir).await.unwrap() {
                let child = dir.join(&e.name).unwrap();
                if e.kind == EntryKind::Dir {
                    stack.push(child);
                } else {
                    out.insert(child.to_string(), e);
                }
            }
        }
        out
    }

    /// The snapshot's items restored into a new local folder: what the snapshot holds.
    async fn local(&self, snap: &SnapshotRecord, name: &str) -> lifeboat_tests::Tree {
        let to = self.env.dir.path().join(name);
        let opts = RestoreOptions {
            in_place: true,
            ..Default::default()
        };
        self.engine
            .restore_to_dir(&self.task, snap, &to, &opts, &NoProgress)
            .await
            .expect("restore to a folder");
        lifeboat_tests::read_tree(&to)
    }
}

fn p(s: &str) -> ItemPath {
    ItemPath::parse(s.as_bytes()).unwrap()
}

fn meta<'e>(e: &'e Entry, k: &str) -> &'e str {
    e.meta
        .iter()
        .find(|(x, _)| x == k)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

fn num(v: &Value, ptr: &str) -> u64 {
    v.pointer(ptr).and_then(Value::as_u64).unwrap_or(0)
}

fn ids(v: &Value, ptr: &str) -> Vec<String> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{ptr} missing in {v}"))
        .iter()
        .map(|x| match x {
            Value::String(s) => s.clone(),
            o => o["immutableId"]
                .as_str()
                .or(o["itemId"].as_str())
                .unwrap_or_default()
                .to_string(),
        })
        .collect()
}

fn name(id: &str, ext: &str) -> String {
    String::from_utf8(m365::names::item_name(id, ext)).unwrap()
}

/// Every account's items as paths and a digest of their bytes (restored from the vault):
/// what two runs must agree on. (Content ids are keyed per installation, so two
/// installations are compared by content.)
async fn shape(c: &Cycle, snaps: &BTreeMap<String, SnapshotRecord>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, (acc, s)) in snaps.iter().enumerate() {
        for (path, item) in c.local(s, &format!("shape-{i}")).await {
            if let lifeboat_tests::Item::File(b) = item {
                let path = String::from_utf8_lossy(&path).into_owned();
                let h = blake3::hash(&b).to_hex().to_string();
                out.push((format!("{acc}/{path}"), h));
            }
        }
    }
    out
}

/// Two runs' trees are the same; the first difference otherwise.
fn same(got: &[(String, String)], want: &[(String, String)]) {
    let a: std::collections::BTreeSet<_> = got.iter().collect();
    let b: std::collections::BTreeSet<_> = want.iter().collect();
    let extra: Vec<_> = a.difference(&b).take(5).collect();
    let missing: Vec<_> = b.difference(&a).take(5).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "not the same tree: {} extra, e.g. {extra:?}; missing e.g. {missing:?}",
        a.difference(&b).count()
    );
}

/// Unfolded content lines of a vCard or iCalendar text, checked to nest properly.
fn content_lines(text: &str) -> Vec<(String, String)> {
    let mut lines: Vec<String> = Vec::new();
    for l in text.split("\r\n") {
        if let Some(rest) = l.strip_prefix(' ').or_else(|| l.strip_prefix('\t')) {
            lines
                .last_mut()
                .expect("a folded line follows another")
                .push_str(rest);
        } else if !l.is_empty() {
            lines.push(l.to_string());
        }
    }
    let mut open = Vec::new();
    let mut out = Vec::new();
    for l in lines {
        let (head, value) = l.split_once(':').unwrap_or_else(|| panic!("{l:?}"));
        let prop = head.split(';').next().unwrap().to_ascii_uppercase();
        match prop.as_str() {
            "BEGIN" => open.push(value.to_string()),
            "END" => assert_eq!(open.pop().as_deref(), Some(value), "{text}"),
            _ => assert!(!open.is_empty(), "{l} outside any component"),
        }
        let value = value
            .replace("\\n", "\n")
            .replace("\\,", ",")
            .replace("\\;", ";")
            .replace("\\\\", "\\");
        out.push((prop, value));
    }
    assert!(open.is_empty(), "unclosed {open:?}");
    out
}

fn prop(lines: &[(String, String)], name: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|(p, _)| p == name)
        .map(|(_, v)| v.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cycle_of_backups_browsing_restores_and_export() {
    let c = start(org(11)).await;
    let accounts = c.accounts().await;
    let (users, sites): (Vec<_>, Vec<_>) =
        accounts.iter().partition(|a| a.id.as_str().contains('@'));
    assert_eq!((users.len(), sites.len()), (2, 1), "{accounts:?}");
    let upn = |i: usize| c.sim.shared.sim().users[i].upn.clone();
    let (u0, u1) = (upn(0), upn(1));

    // Day 1: everything.
    c.admin("stats/reset", None).await;
    let day1 = c.backup_all(&accounts).await;
    let req1 = graph_counted(&c.admin("stats", None).await);
    let first_look = c.tree(&day1[&u0]).await;
    let held1 = c.local(&day1[&u0], "held1").await;

    // A day of changes in every service, as the simulator reports them.
    let before: BTreeMap<String, String> = {
        let sim = c.sim.shared.sim();
        sim.drives
            .values()
            .flat_map(|d| d.items.values().map(|i| (i.id.clone(), i.name.clone())))
            .collect()
    };
    let day = c.admin("advance-day", None).await;
    let mut changes = 0usize;
    let mut fetches = 0usize;
    for u in day["users"].as_array().unwrap() {
        for ptr in [
            "/mail/added",
            "/mail/updated",
            "/mail/moved",
            "/mail/deleted",
            "/contacts/added",
            "/contacts/updated",
            "/contacts/deleted",
            "/events/added",
            "/events/updated",
            "/events/deleted",
            "/tasks/added",
            "/tasks/updated",
            "/tasks/deleted",
            "/drive/added",
            "/drive/modified",
            "/drive/moved",
            "/drive/deleted",
        ] {
            let n = ids(u, ptr).len();
            assert!(n > 0, "the day changed nothing in {ptr}: {u}");
            changes += n;
        }
        fetches += ids(u, "/mail/added").len();
    }
    for s in day["sites"].as_array().unwrap() {
        for ptr in [
            "/addedFiles",
            "/modifiedFiles",
            "/movedFiles",
            "/deletedFiles",
            "/addedListItems",
            "/editedListItems",
            "/deletedListItems",
        ] {
            let n = ids(s, ptr).len();
            assert!(n > 0, "the day changed nothing in {ptr}: {s}");
            changes += n;
        }
    }

    // Day 2 asks only for what changed: per tracked collection (mail and contact folder,
    // calendar, To Do list, OneDrive, library, site list) at most a listing and a delta
    // round; per service (five a user, two a site) its collections' listing and a second
    // page; one MIME read per new message. Files come through download URLs, counted
    // apart below. Nothing grows with the number of items kept.
    let (collections, services) = {
        let sim = c.sim.shared.sim();
        let mut n = 0;
        for mb in &sim.mailboxes {
            n += mb.mail.folders.len()
                + mb.contacts.folders.len()
                + mb.calendars.folders.len()
                + mb.todo.folders.len()
                + 1;
        }
        for s in &sim.sites {
            n += s.drives.len() + s.lists.len();
        }
        (n, sim.mailboxes.len() * 5 + sim.sites.len() * 2)
    };
    let bound = (2 * collections + 2 * services + fetches) as u64;
    c.admin("stats/reset", None).await;
    let day2 = c.backup_all(&accounts).await;
    let stats = c.admin("stats", None).await;
    let req2 = graph_counted(&stats);
    println!(
        "day 1: {req1} requests; day 2: {req2} requests, bound {bound} \
         ({collections} collections, {changes} changes, {fetches} new messages)"
    );
    assert!(
        req2 <= bound,
        "day 2 made {req2} requests, more than {bound}"
    );
    assert!(
        req2 * 3 < req1,
        "day 2 ({req2}) is not far below day 1 ({req1})"
    );
    // Only new and edited files are downloaded; a moved one is not.
    let downloads: usize = day["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| ids(u, "/drive/added").len() + ids(u, "/drive/modified").len())
        .chain(
            day["sites"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| ids(s, "/addedFiles").len() + ids(s, "/modifiedFiles").len()),
        )
        .sum();
    assert_eq!(num(&stats, "/downloads"), downloads as u64, "{stats}");

    // Browse: snapshot 2 shows every change of the day, snapshot 1 is as it was.
    let report = day["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user"] == u0.as_str())
        .unwrap()
        .clone();
    let (s1, s2) = (&day1[&u0], &day2[&u0]);
    let (t1, t2) = (c.tree(s1).await, c.tree(s2).await);
    let diff = c.engine.diff(&c.task, s1, s2).await.unwrap();
    let has = |kind: ChangeKind, file: &str| {
        diff.iter()
            .any(|d| d.kind == kind && d.path.ends_with(&format!("/{file}")))
    };
    let in_tree = |t: &BTreeMap<String, Entry>, file: &str| {
        t.keys().any(|k| k.ends_with(&format!("/{file}")))
    };
    for (service, ext) in [
        ("mail", "eml"),
        ("contacts", "vcf"),
        ("events", "ics"),
        ("tasks", "ics"),
    ] {
        for id in ids(&report, &format!("/{service}/added")) {
            let f = name(&id, ext);
            assert!(has(ChangeKind::Added, &f), "{service} {f} added");
            assert!(in_tree(&t2, &f) && !in_tree(&t1, &f), "{service} {f}");
        }
        for id in ids(&report, &format!("/{service}/updated")) {
            let f = name(&id, ext);
            assert!(has(ChangeKind::Changed, &f), "{service} {f} changed");
        }
        for id in ids(&report, &format!("/{service}/deleted")) {
            let f = name(&id, ext);
            assert!(has(ChangeKind::Removed, &f), "{service} {f} removed");
            assert!(in_tree(&t1, &f) && !in_tree(&t2, &f), "{service} {f}");
        }
    }
    for id in ids(&report, "/mail/moved") {
        let f = name(&id, "eml");
        assert!(has(ChangeKind::Removed, &f) && has(ChangeKind::Added, &f));
        let from = t1.iter().find(|(k, _)| k.ends_with(&f)).unwrap();
        let to = t2.iter().find(|(k, _)| k.ends_with(&f)).unwrap();
        assert_ne!(from.0, to.0, "moved");
        assert_eq!(from.1.content, to.1.content, "a move stores nothing new");
    }
    let files_now: BTreeMap<String, String> = {
        let sim = c.sim.shared.sim();
        sim.drives
            .values()
            .flat_map(|d| d.items.values().map(|i| (i.id.clone(), i.name.clone())))
            .collect()
    };
    for id in ids(&report, "/drive/added") {
        assert!(in_tree(&t2, &files_now[&id]) && !in_tree(&t1, &files_now[&id]));
    }
    for id in ids(&report, "/drive/modified") {
        assert!(
            has(ChangeKind::Changed, &files_now[&id]),
            "{}",
            files_now[&id]
        );
    }
    for id in ids(&report, "/drive/moved") {
        let f = &files_now[&id];
        let from = t1
            .iter()
            .find(|(k, _)| k.ends_with(&format!("/{f}")))
            .unwrap();
        let to = t2
            .iter()
            .find(|(k, _)| k.ends_with(&format!("/{f}")))
            .unwrap();
        assert_ne!(from.0, to.0, "{f} moved");
        assert_eq!(from.1.content, to.1.content, "a move stores nothing new");
    }
    for id in ids(&report, "/drive/deleted") {
        let f = &before[&id];
        assert!(in_tree(&t1, f) && !in_tree(&t2, f), "{f} deleted");
    }
    assert!(t1 == first_look, "snapshot 1 lists as it did before day 2");
    assert!(
        c.local(s1, "held1-again").await == held1,
        "snapshot 1 holds the same bytes"
    );
    // The site: its library and list changes.
    let site = &sites[0].id.to_string();
    let (st1, st2) = (c.tree(&day1[site]).await, c.tree(&day2[site]).await);
    let sday = &day["sites"][0];
    for id in ids(sday, "/addedFiles") {
        assert!(in_tree(&st2, &files_now[&id]) && !in_tree(&st1, &files_now[&id]));
    }
    for id in ids(sday, "/deletedFiles") {
        assert!(in_tree(&st1, &before[&id]) && !in_tree(&st2, &before[&id]));
    }
    for id in ids(sday, "/addedListItems") {
        assert!(in_tree(&st2, &format!("{id}.json")) && !in_tree(&st1, &format!("{id}.json")));
    }
    for id in ids(sday, "/deletedListItems") {
        assert!(in_tree(&st1, &format!("{id}.json")) && !in_tree(&st2, &format!("{id}.json")));
    }
    for id in ids(sday, "/editedListItems") {
        let k = format!("{id}.json");
        let a = st1.iter().find(|(p, _)| p.ends_with(&k)).unwrap().1;
        let b = st2.iter().find(|(p, _)| p.ends_with(&k)).unwrap().1;
        assert_ne!(a.content, b.content, "list item {id} edited");
    }

    // What snapshot 2 holds, as plain files.
    let held = c.local(s2, "held").await;
    let held_file = |path: &str| match held.get(path.as_bytes()) {
        Some(lifeboat_tests::Item::File(b)) => b.clone(),
        other => panic!("{path}: {other:?}"),
    };

    // (a) The inbox and OneDrive's Documents folder, back into the same user's
    // `Lifeboat Restore <time>` folders.
    let at = chrono::DateTime::parse_from_rfc3339("2026-12-01T09:30:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let label = domain::restore_label(domain::RESTORE_PREFIX, at);
    assert!(label.starts_with("Lifeboat Restore 2026-12-01"), "{label}");
    let opts = RestoreOptions {
        include: vec![p("Mail/Inbox"), p("OneDrive/Documents")],
        at: Some(at),
        ..Default::default()
    };
    let r = c
        .engine
        .restore(
            &c.task,
            s2,
            &Destination::default(),
            &opts,
            &connectors::BuiltIn,
        )
        .await
        .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let inbox_items: Vec<(&String, &Entry)> = t2
        .iter()
        .filter(|(k, _)| k.starts_with("Mail/Inbox/"))
        .collect();
    let docs_items: Vec<(&String, &Entry)> = t2
        .iter()
        .filter(|(k, _)| k.starts_with("OneDrive/Documents/"))
        .collect();
    assert!(
        !inbox_items.is_empty() && !docs_items.is_empty(),
        "the snapshot has mail in the inbox and files in Documents: {} and {}",
        inbox_items.len(),
        docs_items.len()
    );
    assert_eq!(r.items as usize, inbox_items.len() + docs_items.len());
    check_mail(&c, &u0, &label, &t2, &held_file).await;
    let drive0 = c.sim.shared.sim().users[0].drive_id.clone();
    for (path, _) in &docs_items {
        let rel = path.strip_prefix("OneDrive/").unwrap();
        let got = c
            .bytes(&format!(
                "/drives/{drive0}/root:/{}/{}:/content",
                label.replace(' ', "%20"),
                rel.replace(' ', "%20")
            ))
            .await;
        assert!(got == held_file(path), "{path} restored byte for byte");
    }

    // (b) The whole user, to the other user.
    let opts = RestoreOptions {
        at: Some(at),
        ..Default::default()
    };
    let to_u1 = Destination {
        task: None,
        account: Some(AccountId::new(&u1).unwrap()),
    };
    let r = c
        .engine
        .restore(&c.task, s2, &to_u1, &opts, &connectors::BuiltIn)
        .await
        .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.items as usize, t2.len(), "every item of the snapshot");
    check_mail(&c, &u1, &label, &t2, &held_file).await;
    let drive1 = c.sim.shared.sim().users[1].drive_id.clone();
    let files: Vec<(&String, &Entry)> = t2
        .iter()
        .filter(|(k, _)| k.starts_with("OneDrive/"))
        .collect();
    assert!(!files.is_empty(), "the snapshot has OneDrive files");
    for (path, e) in files {
        let rel = path.strip_prefix("OneDrive/").unwrap();
        let got = c
            .bytes(&format!(
                "/drives/{drive1}/root:/{}/{}:/content",
                label.replace(' ', "%20"),
                rel.replace(' ', "%20")
            ))
            .await;
        assert_eq!(got.len() as u64, e.size);
        assert!(got == held_file(path), "{path} restored byte for byte");
    }
    let contacts = c.all(&format!("/users/{u1}/contactFolders")).await;
    let folder = contacts
        .iter()
        .find(|f| f["displayName"] == label.as_str())
        .expect("the restored contacts' folder");
    let restored = c
        .all(&format!(
            "/users/{u1}/contactFolders/{}/contacts",
            folder["id"].as_str().unwrap()
        ))
        .await;
    let mut got: Vec<&str> = restored
        .iter()
        .map(|x| x["displayName"].as_str().unwrap())
        .collect();
    let mut want: Vec<&str> = t2
        .iter()
        .filter(|(k, _)| k.starts_with("Contacts/") && k.matches('/').count() == 1)
        .map(|(_, e)| meta(e, "name"))
        .collect();
    got.sort();
    want.sort();
    assert!(!want.is_empty(), "the snapshot has contacts");
    assert_eq!(got, want, "contacts restored");

    let cals = c.all(&format!("/users/{u1}/calendars")).await;
    let events_wanted = t2.keys().filter(|k| k.starts_with("Calendar/")).count();
    assert!(events_wanted > 0, "the snapshot has events");
    let mut events_got = 0;
    for cal in cals
        .iter()
        .filter(|x| x["name"].as_str().unwrap().starts_with(&label))
    {
        events_got += c
            .all(&format!(
                "/users/{u1}/calendars/{}/events?$top=100",
                cal["id"].as_str().unwrap()
            ))
            .await
            .len();
    }
    assert_eq!(events_got, events_wanted, "every event (series as one)");
    let lists = c.all(&format!("/users/{u1}/todo/lists")).await;
    let mut tasks_got = Vec::new();
    for l in lists
        .iter()
        .filter(|x| x["displayName"].as_str().unwrap().starts_with(&label))
    {
        for t in c
            .all(&format!(
                "/users/{u1}/todo/lists/{}/tasks",
                l["id"].as_str().unwrap()
            ))
            .await
        {
            tasks_got.push(t["title"].as_str().unwrap().to_string());
        }
    }
    let mut tasks_wanted: Vec<String> = t2
        .iter()
        .filter(|(k, _)| k.starts_with("Tasks/"))
        .map(|(_, e)| meta(e, "subject").to_string())
        .collect();
    tasks_got.sort();
    tasks_wanted.sort();
    assert!(!tasks_wanted.is_empty(), "the snapshot has To Do tasks");
    assert_eq!(tasks_got, tasks_wanted, "every task");

    // Export a selection as a zip: the snapshot's own bytes, in formats that parse.
    let zip_path = c.env.dir.path().join("export.zip");
    let include = vec![
        p("Mail/Inbox"),
        p("Contacts"),
        p("Calendar"),
        p("Tasks"),
        p("OneDrive/Documents"),
    ];
    let export = ExportOptions {
        format: ExportFormat::Zip,
        include: include.clone(),
        ..Default::default()
    };
    let rep = c
        .engine
        .export(&c.task, s2, &zip_path, &export, &NoProgress)
        .await
        .unwrap();
    let by_name: BTreeMap<String, String> = c.sim.shared.sim().mailboxes[0]
        .mail
        .items
        .values()
        .map(|m| (name(&m.imm_id, "eml"), m.imm_id.clone()))
        .collect();
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    let mut seen = 0;
    // Files of each format checked below: mail, contacts, events and tasks.
    let (mut eml, mut vcf, mut ics) = (0, 0, 0);
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).unwrap();
        if f.is_dir() {
            continue;
        }
        let path = f.name().trim_start_matches('/').to_string();
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        let e = t2
            .get(&path)
            .unwrap_or_else(|| panic!("{path} not in the snapshot"));
        assert_eq!(bytes, held_file(&path), "{path}");
        seen += 1;
        if path.ends_with(".eml") {
            eml += 1;
            // The stored MIME is the service's own, byte for byte, where unchanged.
            let file = path.rsplit('/').next().unwrap();
            let id = &by_name[file];
            let src = c.bytes(&format!("/users/{u0}/messages/{id}/$value")).await;
            assert!(bytes == src, "{path}: the service's MIME, byte for byte");
            let m = mail_parser::MessageParser::default().parse(&bytes).unwrap();
            assert_eq!(m.subject().unwrap_or(""), meta(e, "subject"), "{path}");
        } else if path.ends_with(".vcf") {
            vcf += 1;
            let lines = content_lines(std::str::from_utf8(&bytes).unwrap());
            assert_eq!(prop(&lines, "BEGIN")[0], "VCARD");
            assert_eq!(prop(&lines, "FN"), [meta(e, "name")], "{path}");
        } else if path.ends_with(".ics") {
            ics += 1;
            let lines = content_lines(std::str::from_utf8(&bytes).unwrap());
            assert_eq!(prop(&lines, "BEGIN")[0], "VCALENDAR");
            assert!(
                prop(&lines, "SUMMARY").contains(&meta(e, "subject").to_string()),
                "{path}: {lines:?}"
            );
        }
    }
    let selected = t2
        .keys()
        .filter(|k| include.iter().any(|i| k.starts_with(&format!("{i}/"))))
        .count();
    assert!(selected > 0, "nothing selected for export");
    assert_eq!((seen, rep.items as usize), (selected, selected));
    assert!(
        eml > 0 && vcf > 0 && ics > 0,
        "every format was checked: {eml} messages, {vcf} contacts, {ics} events and tasks"
    );
}

/// The restored inbox in `user`'s `<label>/Inbox`: each message as the snapshot holds it
/// (Graph cannot import MIME as a sent or received message, so it is created from the
/// parsed MIME: subject, addresses, body, attachments and Message-ID are what compare),
/// with its received time and read state, and not a draft.
async fn check_mail(
    c: &Cycle,
    user: &str,
    label: &str,
    t2: &BTreeMap<String, Entry>,
    held: &dyn Fn(&str) -> Vec<u8>,
) {
    let top = c.all(&format!("/users/{user}/mailFolders?$top=100")).await;
    let restored = top
        .iter()
        .find(|f| f["displayName"] == label)
        .unwrap_or_else(|| panic!("no {label} folder in {user}'s mailbox"));
    let inner = c
        .all(&format!(
            "/users/{user}/mailFolders/{}/childFolders",
            restored["id"].as_str().unwrap()
        ))
        .await;
    let inbox = inner
        .iter()
        .find(|f| f["displayName"] == "Inbox")
        .expect("Inbox inside the restore folder");
    let got = c
        .all(&format!(
            "/users/{user}/mailFolders/{}/messages?$top=100",
            inbox["id"].as_str().unwrap()
        ))
        .await;
    let want: Vec<(&String, &Entry)> = t2
        .iter()
        .filter(|(k, _)| k.starts_with("Mail/Inbox/") && k.matches('/').count() == 2)
        .collect();
    assert!(!want.is_empty(), "the snapshot has messages in the inbox");
    assert_eq!(got.len(), want.len(), "every message of the inbox");
    let parser = mail_parser::MessageParser::default();
    for (path, e) in want {
        let orig_bytes = held(path);
        let orig = parser.parse(&orig_bytes).unwrap();
        let mid = orig.message_id().unwrap();
        let m = got
            .iter()
            .find(|m| m["internetMessageId"] == format!("<{mid}>").as_str())
            .unwrap_or_else(|| panic!("{path} ({mid}) not restored"));
        assert_eq!(m["isDraft"], false, "{path}");
        assert_eq!(m["isRead"].as_bool().unwrap().to_string(), meta(e, "read"));
        assert_eq!(m["receivedDateTime"].as_str().unwrap(), meta(e, "received"));
        let id = m["id"].as_str().unwrap();
        let mime = c
            .bytes(&format!("/users/{user}/messages/{id}/$value"))
            .await;
        let back = parser.parse(&mime).unwrap();
        assert_eq!(back.subject(), orig.subject(), "{path}");
        assert_eq!(back.message_id(), orig.message_id(), "{path}");
        let addr = |a: Option<&mail_parser::Address<'_>>| -> Vec<String> {
            a.map(|a| {
                a.iter()
                    .filter_map(|x| x.address().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
        };
        assert_eq!(addr(back.from()), addr(orig.from()), "{path}");
        assert_eq!(addr(back.to()), addr(orig.to()), "{path}");
        assert_eq!(back.body_html(0), orig.body_html(0), "{path}");
        let atts = |m: &mail_parser::Message<'_>| -> Vec<Vec<u8>> {
            let mut v: Vec<Vec<u8>> = m
                .attachments()
                .map(|a| {
                    mail_parser::MimeHeaders::attachment_name(a)
                        .unwrap_or("")
                        .as_bytes()
                        .to_vec()
                })
                .chain(m.attachments().map(|a| a.contents().to_vec()))
                .collect();
            v.sort();
            v
        };
        assert!(atts(&back) == atts(&orig), "{path}: attachments");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_at_20_percent_the_result_is_the_same() {
    let clean = start(org(12)).await;
    let accounts = clean.accounts().await;
    let expected = shape(&clean, &clean.backup_all(&accounts).await).await;

    let mut cfg = org(12);
    cfg.faults.throttle_rate = 0.2;
    cfg.faults.retry_after_secs = 0;
    let c = start(cfg).await;
    let accounts = c.accounts().await;
    let got = shape(&c, &c.backup_all(&accounts).await).await;
    let stats = c.admin("stats", None).await;
    assert!(num(&stats, "/by_status/429") > 10, "{stats}");
    assert!(!expected.is_empty(), "the clean run backed up nothing");
    assert_eq!(got.len(), expected.len());
    same(&got, &expected);
}

/// Day 1, a day of changes, day 2: with `expire_delta`, every delta token expires before
/// day 2; with `expire_tokens_mid_run`, every access token expires while day 2 runs (once
/// it has made a few requests; each request is slowed so that most are still to come). Day 2's items, how much it stored, and
/// the simulator's counters.
async fn two_days(
    seed: u64,
    expire_delta: Option<Value>,
    expire_tokens_mid_run: bool,
) -> (Vec<(String, String)>, u64, u64, Value) {
    let mut cfg = org(seed);
    if expire_tokens_mid_run {
        cfg.faults.latency_ms = 20;
    }
    let c = start(cfg).await;
    let accounts = c.accounts().await;
    c.backup_all(&accounts).await;
    c.admin("advance-day", None).await;
    if let Some(body) = expire_delta {
        c.admin("expire-delta", Some(body)).await;
    }
    c.admin("stats/reset", None).await;
    let day2 = if expire_tokens_mid_run {
        let (d, _) = tokio::join!(c.backup_all(&accounts), async {
            // Once the run has tokens in hand and requests going (a fixed delay can fall
            // before the first token on a busy machine, and then no request is refused).
            while num(&c.admin("stats", None).await, "/requests") < 5 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            c.admin("expire-tokens", None).await
        });
        d
    } else {
        c.backup_all(&accounts).await
    };
    let new_bytes = day2.values().map(|s| s.stats.new_bytes).sum();
    let stored = day2.values().map(|s| s.stats.stored_bytes).sum();
    (
        shape(&c, &day2).await,
        new_bytes,
        stored,
        c.admin("stats", None).await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_and_delta_links_recover_without_storing_twice() {
    let (normal, new_bytes, stored, _) = two_days(13, None, false).await;
    let (expired, new_bytes2, stored2, stats) = two_days(13, Some(json!({})), true).await;
    println!("day 2 stored {new_bytes2} new bytes after the resync, {new_bytes} normally");
    assert!(num(&stats, "/by_status/410") > 0, "delta refused: {stats}");
    assert!(num(&stats, "/by_status/401") > 0, "token refused: {stats}");
    assert!(num(&stats, "/token_requests") >= 2, "{stats}");
    assert!(!normal.is_empty(), "the normal day 2 holds nothing");
    assert_eq!(expired.len(), normal.len());
    same(&expired, &normal);
    // Enumerating again stores nothing that was stored already: a few bytes of metadata
    // (folder nodes) at most.
    assert!(
        new_bytes2 <= new_bytes + new_bytes / 20 + 4096,
        "{new_bytes2} new bytes after the resync, {new_bytes} on a normal day"
    );
    assert!(
        stored2 <= stored + stored / 20 + 4096,
        "{stored2} vs {stored}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_with_broken_mime_is_kept_byte_for_byte() {
    let c = start(org(14)).await;
    let upn = c.sim.shared.sim().users[0].upn.clone();
    let mut broken = Vec::new();
    for kind in ["truncated-multipart", "bad-base64", "8bit-headers"] {
        let v = c
            .admin(
                "malformed-message",
                Some(json!({ "user": upn, "kind": kind })),
            )
            .await;
        broken.push(v);
    }
    let refused = c
        .http
        .post(format!("{}/_sim/malformed-message", c.sim.base_url))
        .json(&json!({ "user": upn, "kind": "nonsense" }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let accounts = c.accounts().await;
    let user: Vec<AccountInfo> = accounts
        .into_iter()
        .filter(|a| a.id.as_str() == upn)
        .collect();
    // The connector reads a message's metadata from Graph's JSON, not from its MIME, so
    // there is nothing to fail: the account completes with no item reported.
    let snaps = c.backup_all(&user).await;
    let snap = &snaps[&upn];
    let tree = c.tree(snap).await;
    let held = c.local(snap, "held").await;
    for b in &broken {
        let id = b["immutableId"].as_str().unwrap();
        let path = format!("Mail/Inbox/{}", name(id, "eml"));
        let e = tree.get(&path).unwrap_or_else(|| panic!("{path} kept"));
        assert!(meta(e, "subject").starts_with("Malformed"), "{:?}", e.meta);
        let served = c.bytes(&format!("/users/{upn}/messages/{id}/$value")).await;
        match held.get(path.as_bytes()) {
            Some(lifeboat_tests::Item::File(bytes)) => {
                assert!(*bytes == served, "{path} stored as served")
            }
            other => panic!("{other:?}"),
        }
    }
    // Restoring them works as far as the MIME allows, and never stops the others.
    let opts = RestoreOptions {
        include: vec![p("Mail/Inbox")],
        ..Default::default()
    };
    let r = c
        .engine
        .restore(
            &c.task,
            snap,
            &Destination::default(),
            &opts,
            &connectors::BuiltIn,
        )
        .await
        .unwrap();
    println!(
        "restore of the inbox: {} items, errors {:?}",
        r.items, r.errors
    );
    let inbox = tree.keys().filter(|k| k.starts_with("Mail/Inbox/")).count();
    assert_eq!(r.items as usize + r.errors.len(), inbox, "{:?}", r.errors);
    assert!(r.items as usize >= inbox - broken.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_filter_leaves_the_organisations_sites_out_unless_named() {
    let sim_domains = |c: &Cycle| c.sim.shared.sim().domains.clone();
    let probe = start(org(15)).await;
    let domains = sim_domains(&probe);
    drop(probe);
    let one = domains[0].clone();
    let c = start_with(org(15), |s| m365::M365Settings {
        domains: vec![one.clone()],
        ..s
    })
    .await;
    let accounts = c.accounts().await;
    assert!(!accounts.is_empty());
    assert!(
        accounts
            .iter()
            .all(|a| a.id.as_str().ends_with(&format!("@{one}"))),
        "only users of {one}: {accounts:?}"
    );
    // Naming a site takes it, with the domain's users.
    let url = {
        let sim = c.sim.shared.sim();
        format!("https://{}/", sim.hostname)
    };
    let c = start_with(org(15), |s| m365::M365Settings {
        domains: vec![one.clone()],
        sites: vec![url.clone()],
        ..s
    })
    .await;
    let accounts = c.accounts().await;
    assert_eq!(
        accounts
            .iter()
            .filter(|a| a.id.as_str().starts_with("site+"))
            .count(),
        1,
        "{accounts:?}"
    );
    // Without a domain filter every site is there.
    let c = start(org(15)).await;
    assert!(c
        .accounts()
        .await
        .iter()
        .any(|a| a.id.as_str().starts_with("site+")));
}

/// Requests as Graph counts them against its limits: each request inside a `$batch` on its
/// own, the batch's envelope not at all.
fn graph_counted(stats: &serde_json::Value) -> u64 {
    num(stats, "/requests") - num(stats, "/batches")
}
