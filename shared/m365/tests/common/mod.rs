//! What the connector's tests share: a Graph simulator on a free port, the one test
//! environment of every crate (`testkit::env::TestEnv`: a Lifeboat installation on the
//! embedded adapters in a temp directory), and a Microsoft 365 task pointed at the
//! simulator, all over real HTTP.
#![allow(dead_code)]

use domain::{ItemPath, TaskId};
use engine::{
    AccountInfo, BackupOptions, Connector, Engine, EntryKind, NewTask, NoProgress, RestoreOptions,
    SnapshotRecord, TaskRecord,
};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use testkit::env::TestEnv;
use zeroize::Zeroizing;

pub const IMMUTABLE: (&str, &str) = ("Prefer", "IdType=\"ImmutableId\"");

pub fn small() -> graphsim::Config {
    graphsim::Config {
        users: 2,
        domains: 2,
        messages_per_folder: 3,
        folder_depth: 1,
        attachment_every: 3,
        large_attachment_bytes: 150_000,
        contacts_per_user: 4,
        events_per_user: 3,
        tasks_per_list: 2,
        files_per_user: 7,
        large_file_bytes: 5 << 20,
        sites: 1,
        ..graphsim::Config::default()
    }
}

pub struct Env {
    /// The Lifeboat installation (store, catalog, keys, clock) in a temp directory.
    pub test: TestEnv,
    pub engine: Engine,
    pub sim: graphsim::Running,
    pub task: TaskRecord,
    pub http: reqwest::Client,
    pub token: String,
}

pub fn settings(sim: &graphsim::Running) -> m365::M365Settings {
    let cfg = &sim.shared.cfg;
    m365::M365Settings {
        graph_url: sim.base_url.clone(),
        login_url: sim.base_url.clone(),
        ..m365::M365Settings::new(&cfg.tenant_id, &cfg.client_id)
    }
}

pub async fn start(cfg: graphsim::Config) -> Env {
    start_tuned(cfg, None).await
}

/// Adds a Microsoft 365 task named `name` over the simulator, holding `secret` (the
/// simulator's own secret when `None`) and keeping under `throttle`. Adding signs in
/// (`Connector::check`), so a wrong secret is refused here.
pub async fn add_task(
    engine: &Engine,
    sim: &graphsim::Running,
    name: &str,
    secret: Option<&str>,
    throttle: Option<m365::client::Throttle>,
) -> engine::Result<TaskRecord> {
    let secret = secret.map_or_else(|| sim.shared.cfg.client_secret.clone(), str::to_string);
    engine
        .add_task(
            NewTask {
                name: TaskId::new(name).unwrap(),
                source: m365::M365Settings {
                    throttle,
                    ..settings(sim)
                }
                .to_source(),
                secret: Some(Zeroizing::new(secret)),
                backup_hour: None,
            },
            &m365::Opener,
        )
        .await
}

/// An environment whose task keeps under the given service limits.
pub async fn start_tuned(cfg: graphsim::Config, throttle: Option<m365::client::Throttle>) -> Env {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let sim = graphsim::spawn(cfg).await.expect("the simulator starts");
    let test = TestEnv::new();
    let engine = test.engine("acme");
    let task = add_task(&engine, &sim, "m365", None, throttle)
        .await
        .expect("task added");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let token = sim.admin_token();
    Env {
        test,
        engine,
        sim,
        task,
        http,
        token,
    }
}

impl Env {
    pub async fn connector(&self) -> Arc<dyn Connector> {
        self.engine
            .connector(&self.task, &m365::Opener)
            .await
            .expect("the connector opens")
    }

    /// The accounts the task protects now, recorded (as the listing job does): a task's
    /// accounts are recorded at their first listing, not when the task is added.
    pub async fn accounts(&self) -> Vec<AccountInfo> {
        let c = self.connector().await;
        self.engine
            .refresh_accounts(&self.task, c.as_ref())
            .await
            .expect("accounts")
    }

    pub async fn user(&self, i: usize) -> AccountInfo {
        let upn = self.sim.shared.sim().users[i].upn.clone();
        self.accounts()
            .await
            .into_iter()
            .find(|a| a.id.as_str() == upn)
            .expect("the user is an account")
    }

    /// The item problems recorded with a snapshot.
    pub async fn errors(&self, s: &SnapshotRecord) -> Vec<engine::ItemError> {
        self.engine
            .snapshot_errors(&self.task, s)
            .await
            .expect("the snapshot's side data reads")
    }

    /// A backup of `a` to the end, a day after the last one.
    pub async fn backup(&self, a: &AccountInfo) -> engine::Result<SnapshotRecord> {
        self.test.advance(chrono::Duration::days(1));
        let c = self.connector().await;
        self.engine
            .backup(&self.task, &a.id, c.as_ref(), &BackupOptions::default())
            .await
            .and_then(|end| end.into_snapshot())
    }

    /// GET of a Graph path (or URL) as the test's own client.
    pub async fn get(&self, path: &str) -> Value {
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
        resp.json().await.unwrap()
    }

    pub async fn get_bytes(&self, path: &str) -> Vec<u8> {
        let resp = self
            .http
            .get(format!("{}{path}", self.sim.graph_url()))
            .bearer_auth(&self.token)
            .header(IMMUTABLE.0, IMMUTABLE.1)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.bytes().await.unwrap().to_vec()
    }

    /// Every item of a collection, following next links.
    pub async fn all(&self, path: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut next = Some(path.to_string());
        while let Some(u) = next {
            let page = self.get(&u).await;
            out.extend(page["value"].as_array().unwrap().iter().cloned());
            next = page["@odata.nextLink"].as_str().map(str::to_string);
        }
        out
    }

    pub async fn admin(&self, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/_sim/{path}", self.sim.base_url);
        let req = match (body, path) {
            (Some(b), _) => self.http.post(url).json(&b),
            (None, "stats" | "info" | "faults") => self.http.get(url),
            (None, _) => self.http.post(url),
        };
        let resp = req.send().await.unwrap();
        assert!(
            resp.status().is_success(),
            "admin {path}: {}",
            resp.status()
        );
        resp.json().await.unwrap_or(Value::Null)
    }

    pub async fn stats(&self) -> Value {
        self.admin("stats", None).await
    }

    pub async fn reset_stats(&self) {
        let url = format!("{}/_sim/stats/reset", self.sim.base_url);
        self.http.post(url).send().await.unwrap();
    }

    /// The bytes of one item of a snapshot, restored into the temp directory.
    pub async fn item_bytes(&self, snap: &SnapshotRecord, path: &ItemPath) -> Vec<u8> {
        let to = self.test.folder(&format!("out-{}", rand_suffix()));
        let opts = RestoreOptions {
            include: vec![path.clone()],
            in_place: true,
            ..Default::default()
        };
        self.engine
            .restore_to_dir(&self.task, snap, &to, &opts, &NoProgress)
            .await
            .expect("restore to a folder");
        find_file(&to, path.file_name().unwrap()).expect("the restored item")
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

fn find_file(dir: &Path, name: &[u8]) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    for e in std::fs::read_dir(dir).ok()? {
        let e = e.ok()?;
        let p = e.path();
        if p.is_dir() {
            if let Some(b) = find_file(&p, name) {
                return Some(b);
            }
        } else if e.file_name().as_bytes() == name {
            return std::fs::read(&p).ok();
        }
    }
    None
}

pub fn p(s: &str) -> ItemPath {
    ItemPath::parse(s.as_bytes()).unwrap()
}

/// Every item path of a snapshot below `at`, walking folders.
pub async fn walk(env: &Env, snap: &SnapshotRecord, at: &ItemPath) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![at.clone()];
    while let Some(dir) = stack.pop() {
        for e in env.engine.list(&env.task, snap, &dir).await.unwrap() {
            let child = dir.join(&e.name).unwrap();
            if e.kind == EntryKind::Dir {
                stack.push(child);
            } else {
                out.push(child.to_string());
            }
        }
    }
    out.sort();
    out
}

pub fn num(v: &Value, ptr: &str) -> u64 {
    v.pointer(ptr).and_then(Value::as_u64).unwrap_or(0)
}

/// How many files user `i`'s OneDrive holds in the simulator now.
pub fn drive_files(env: &Env, i: usize) -> usize {
    let sim = env.sim.shared.sim();
    sim.drives[&sim.users[i].drive_id]
        .items
        .values()
        .filter(|f| !f.is_folder)
        .count()
}
