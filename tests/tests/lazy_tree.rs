//! The account tree reads a folder only when a connector looks into it, and lets go of a
//! folder the connector is done with. A folder not read must never look empty (its items
//! would leave the snapshot), and the snapshot's counts must stay exact although most of
//! the tree is never read: exercised by a connector that applies a script of changes,
//! against a model of what the account holds.

use async_trait::async_trait;
use bytes::Bytes;
use domain::{AccountId, ItemPath, Service, TenantId};
use engine::{
    AccountInfo, AccountTree, BackupEnd, BackupOptions, Connector, Engine, ItemInfo,
    RestoreContent, RestoreOptions, SnapshotRecord, SourceRestore, SourceRestoreReport, TaskRecord,
};
use lifeboat_tests::{read_tree, Item, Tree};
use ports::EncryptionContext;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use testkit::env::{fake_setup, TestEnv};

/// One change a connector applies.
#[derive(Clone, Debug)]
enum Op {
    Put(String, Vec<u8>),
    Remove(String),
    Rename(String, String),
    Ensure(String),
    Meta(String, String),
    DoneWith(String),
    /// Looks at an item and checks it is there, with this content size.
    Expect(String, Option<u64>),
    /// Ends the run as a paused one (a checkpoint); the next run goes on from it.
    Pause,
}

fn put(path: &str, data: &[u8]) -> Op {
    Op::Put(path.into(), data.to_vec())
}
fn remove(path: &str) -> Op {
    Op::Remove(path.into())
}
fn rename(from: &str, to: &str) -> Op {
    Op::Rename(from.into(), to.into())
}
fn done(path: &str) -> Op {
    Op::DoneWith(path.into())
}
fn expect(path: &str, size: Option<u64>) -> Op {
    Op::Expect(path.into(), size)
}

fn p(s: &str) -> ItemPath {
    ItemPath::parse(s.as_bytes()).unwrap()
}

/// A connector that applies the script it is given for each backup.
struct Scripted {
    account: AccountId,
    ops: Mutex<Vec<Op>>,
}

impl Scripted {
    fn new() -> Self {
        Scripted {
            account: AccountId::new("anna").unwrap(),
            ops: Mutex::new(Vec::new()),
        }
    }
}

async fn apply(tree: &mut AccountTree, op: Op) -> engine::Result<()> {
    match op {
        Op::Put(path, data) => {
            let info = ItemInfo {
                fingerprint: 1,
                ..Default::default()
            };
            tree.put_item(&p(&path), info, Bytes::from(data)).await?
        }
        Op::Remove(path) => {
            assert!(tree.remove(&p(&path)).await?, "{path} is there to remove");
        }
        Op::Rename(from, to) => tree.rename(&p(&from), &p(&to)).await?,
        Op::Ensure(path) => tree.ensure_folder(&p(&path)).await?,
        Op::Meta(path, value) => {
            tree.set_folder_meta(&p(&path), vec![("note".into(), value)])
                .await?
        }
        Op::DoneWith(path) => tree.done_with(&p(&path)).await?,
        Op::Expect(path, size) => {
            let got = tree.item(&p(&path)).await?.map(|e| e.size);
            assert_eq!(got, size, "{path} as the tree has it");
        }
        Op::Pause => tree.pause(),
    }
    Ok(())
}

#[async_trait]
impl Connector for Scripted {
    async fn accounts(&self) -> engine::Result<Vec<AccountInfo>> {
        Ok(vec![AccountInfo {
            id: self.account.clone(),
            name: "Anna".into(),
            services: vec![Service::Files],
        }])
    }
    async fn backup(
        &self,
        _: &AccountInfo,
        _: Option<&str>,
        tree: &mut AccountTree,
    ) -> engine::Result<Option<String>> {
        let ops = std::mem::take(&mut *self.ops.lock().unwrap());
        for op in ops {
            apply(tree, op).await?;
        }
        Ok(None)
    }
    async fn restore(
        &self,
        _: &SourceRestore,
        _: &RestoreContent,
    ) -> engine::Result<SourceRestoreReport> {
        unreachable!("restores go to a folder here")
    }
}

/// What the account should hold: files by path, and folders.
#[derive(Default, Clone)]
struct Model {
    files: BTreeMap<String, Vec<u8>>,
    dirs: BTreeSet<String>,
}

fn parents(path: &str) -> impl Iterator<Item = String> + '_ {
    path.match_indices('/').map(|(i, _)| path[..i].to_string())
}

fn under(path: &str, top: &str) -> bool {
    path == top || path.starts_with(&format!("{top}/"))
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Put(path, data) => {
                self.dirs.extend(parents(path));
                self.files.insert(path.clone(), data.clone());
            }
            Op::Remove(path) => {
                self.files.retain(|f, _| !under(f, path));
                self.dirs.retain(|d| !under(d, path));
            }
            Op::Rename(from, to) => {
                let moved = |x: &str| format!("{to}{}", &x[from.len()..]);
                let files: Vec<(String, Vec<u8>)> = self
                    .files
                    .iter()
                    .filter(|(f, _)| under(f, from))
                    .map(|(f, d)| (moved(f), d.clone()))
                    .collect();
                let dirs: Vec<String> = self
                    .dirs
                    .iter()
                    .filter(|d| under(d, from))
                    .map(|d| moved(d))
                    .collect();
                self.apply(&Op::Remove(from.clone()));
                self.apply(&Op::Remove(to.clone()));
                self.dirs.extend(parents(to));
                self.files.extend(files);
                self.dirs.extend(dirs);
            }
            Op::Ensure(path) | Op::Meta(path, _) => {
                self.dirs.extend(parents(path));
                self.dirs.insert(path.clone());
            }
            Op::DoneWith(_) | Op::Expect(..) | Op::Pause => {}
        }
    }

    fn tree(&self) -> Tree {
        let mut t: Tree = self
            .files
            .iter()
            .map(|(f, d)| (f.as_bytes().to_vec(), Item::File(d.clone())))
            .collect();
        t.extend(self.dirs.iter().map(|d| (d.as_bytes().to_vec(), Item::Dir)));
        t
    }

    fn is_file(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }
}

struct Fixture {
    env: TestEnv,
    engine: Engine,
    task: TaskRecord,
    source: Scripted,
    model: Model,
    day: u32,
}

impl Fixture {
    async fn new() -> Self {
        let env = TestEnv::new();
        let engine = env.engine("acme");
        let (_, _, task) = fake_setup(&engine, "scripted", "anna").await;
        let source = Scripted::new();
        engine.refresh_accounts(&task, &source).await.unwrap();
        Fixture {
            env,
            engine,
            task,
            source,
            model: Model::default(),
            day: 0,
        }
    }

    /// Backs up with `ops` applied, and checks the snapshot holds what the model says,
    /// content and counts.
    async fn day(&mut self, ops: Vec<Op>) -> SnapshotRecord {
        let snap = self.run(ops).await.into_snapshot().unwrap();
        self.check(&snap).await;
        snap
    }

    /// One backup run with `ops` applied.
    async fn run(&mut self, ops: Vec<Op>) -> BackupEnd {
        for op in &ops {
            self.model.apply(op);
        }
        *self.source.ops.lock().unwrap() = ops;
        self.env.advance(chrono::Duration::days(1));
        self.day += 1;
        self.engine
            .backup(
                &self.task,
                &self.source.account,
                &self.source,
                &BackupOptions::default(),
            )
            .await
            .unwrap()
    }

    async fn check(&self, snap: &SnapshotRecord) {
        let out = self.env.folder(&format!("out-{}", self.day));
        let r = self
            .engine
            .restore_to_dir(
                &self.task,
                snap,
                &out,
                &RestoreOptions::default(),
                &engine::NoProgress,
            )
            .await
            .unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let got = read_tree(&r.target);
        let want = self.model.tree();
        if got != want {
            let g: BTreeSet<_> = got.keys().collect();
            let w: BTreeSet<_> = want.keys().collect();
            panic!(
                "day {}: snapshot differs; missing {:?}, extra {:?}",
                self.day,
                w.difference(&g)
                    .map(|k| String::from_utf8_lossy(k))
                    .collect::<Vec<_>>(),
                g.difference(&w)
                    .map(|k| String::from_utf8_lossy(k))
                    .collect::<Vec<_>>(),
            );
        }
        let bytes: u64 = self.model.files.values().map(|d| d.len() as u64).sum();
        assert_eq!(
            (snap.stats.items, snap.stats.folders, snap.stats.bytes),
            (
                self.model.files.len() as u64,
                self.model.dirs.len() as u64,
                bytes
            ),
            "day {}: the snapshot's counts",
            self.day
        );
    }
}

fn body(i: usize) -> Vec<u8> {
    format!("item {i}: {}", "x".repeat(i % 50)).into_bytes()
}

/// Day 1: `folders` folders two levels deep (`f00/g0/…`), `per` items each.
fn day1(folders: usize, per: usize) -> Vec<Op> {
    let mut ops = Vec::new();
    for f in 0..folders {
        for i in 0..per {
            let path = format!("f{:02}/g{}/item-{i:03}.txt", f / 4, f % 4);
            ops.push(Op::Put(path, body(f * 1000 + i)));
        }
    }
    ops.push(put("top.txt", b"at the root"));
    ops
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_that_touches_one_deep_folder_keeps_every_other_item() {
    let mut fx = Fixture::new().await;
    fx.day(day1(16, 20)).await;
    fx.day(vec![
        put("f02/g1/item-007.txt", b"changed"),
        put("f03/g3/deeper/new.txt", b"new"),
    ])
    .await;
    // A day when the connector looks at nothing at all.
    let s3 = fx.day(vec![]).await;
    let s4 = fx.day(vec![expect("f01/g2/item-004.txt", Some(15))]).await;
    assert_eq!(s3.root, s4.root, "a look changes nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn renames_and_removals_in_folders_never_read_keep_the_rest() {
    let mut fx = Fixture::new().await;
    fx.day(day1(16, 12)).await;
    // A folder moved whole, unread; one item removed from a folder not read before; a
    // folder removed unread; a folder moved over another one.
    fx.day(vec![
        rename("f00", "moved/f00"),
        remove("f01/g2/item-005.txt"),
        remove("f02/g0"),
        rename("f03/g1", "f03/g2"),
    ])
    .await;
    // The moved folder is read where it is now, and an item put into it.
    fx.day(vec![
        expect("moved/f00/g3/item-002.txt", Some(13)),
        put("moved/f00/g3/item-999.txt", b"more"),
        remove("moved"),
        Op::Ensure("empty/one".into()),
        Op::Meta("f01".into(), "with metadata".into()),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_folder_let_go_of_can_be_looked_into_again() {
    let mut fx = Fixture::new().await;
    fx.day(day1(8, 10)).await;
    fx.day(vec![
        put("f00/g1/new.txt", b"one"),
        done("f00/g1"),
        done("f00"),
        // Stored and let go of: read back from what this run stored.
        expect("f00/g1/new.txt", Some(3)),
        put("f00/g1/newer.txt", b"two"),
        rename("f00/g1", "f01/g9"),
        done("f01"),
        remove("f01/g9/item-001.txt"),
        done("f01/g9"),
        // A folder let go of, then removed: its counts leave with it.
        put("f01/g0/x.txt", b"x"),
        done("f01/g0"),
        remove("f01/g0"),
    ])
    .await;
    fx.day(vec![expect("f01/g9/newer.txt", Some(3))]).await;
}

/// A paused run's tree (a checkpoint) is where the next run goes on from, folders not
/// read included, and the snapshot that commits counts exactly.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_run_goes_on_from_its_checkpoint() {
    let mut fx = Fixture::new().await;
    fx.day(day1(8, 6)).await;
    let end = fx
        .run(vec![
            put("f00/g0/a.txt", b"first run"),
            remove("f01/g1"),
            rename("f01/g2", "f05"),
            done("f00/g0"),
            Op::Pause,
        ])
        .await;
    assert!(matches!(end, BackupEnd::Paused { .. }), "{end:?}");
    let end = fx
        .run(vec![
            expect("f00/g0/a.txt", Some(9)),
            remove("f05/item-003.txt"),
            put("f00/g3/b.txt", b"second run"),
            Op::Pause,
        ])
        .await;
    assert!(matches!(end, BackupEnd::Paused { .. }), "{end:?}");
    fx.day(vec![put("f01/g3/c.txt", b"third run")]).await;
}

/// Seeded random days of changes, checked against the model after each.
#[tokio::test(flavor = "multi_thread")]
async fn random_days_of_changes_keep_the_snapshot_and_its_counts_exact() {
    let mut fx = Fixture::new().await;
    fx.day(day1(12, 6)).await;
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let names = ["a", "b", "f00", "f01", "f02", "g0", "g1", "g2"];
    for _ in 0..6 {
        let mut model = fx.model.clone();
        let mut ops = Vec::new();
        for _ in 0..25 {
            let dirs: Vec<String> = model.dirs.iter().cloned().collect();
            let files: Vec<String> = model.files.keys().cloned().collect();
            let op = match rnd(6) {
                0 | 1 => {
                    // A new or changed item in an existing or new folder.
                    let base = if dirs.is_empty() || rnd(4) == 0 {
                        names[rnd(names.len())].to_string()
                    } else {
                        dirs[rnd(dirs.len())].clone()
                    };
                    let path = format!("{base}/n{}.txt", rnd(40));
                    if parents(&path).any(|d| model.is_file(&d)) || model.dirs.contains(&path) {
                        continue;
                    }
                    Op::Put(path, body(rnd(1000)))
                }
                2 if !files.is_empty() => Op::Remove(files[rnd(files.len())].clone()),
                3 if !dirs.is_empty() => Op::DoneWith(dirs[rnd(dirs.len())].clone()),
                4 if !dirs.is_empty() && rnd(3) == 0 => Op::Remove(dirs[rnd(dirs.len())].clone()),
                5 if !dirs.is_empty() || !files.is_empty() => {
                    let all: Vec<&String> = dirs.iter().chain(files.iter()).collect();
                    let from = all[rnd(all.len())].clone();
                    let to = format!("{}/r{}", names[rnd(names.len())], rnd(5));
                    if under(&to, &from)
                        || under(&from, &to)
                        || parents(&to).any(|d| model.is_file(&d))
                    {
                        continue;
                    }
                    Op::Rename(from, to)
                }
                _ => continue,
            };
            model.apply(&op);
            ops.push(op);
        }
        fx.day(ops).await;
    }
}

/// A folder the connector does not look into is not read at all: a backup that touches
/// another folder goes through even when that folder's stored node cannot be read (and
/// `verify` still names it).
#[tokio::test(flavor = "multi_thread")]
async fn a_folder_not_looked_into_is_not_read() {
    let mut fx = Fixture::new().await;
    let s1 = fx.day(day1(8, 5)).await;
    // Flip a byte of the stored node of f01/g0.
    let tenant = TenantId::new("acme").unwrap();
    let ctx = EncryptionContext::for_task(&tenant, &fx.task.name);
    let key = fx
        .env
        .ports
        .keys
        .decrypt_data_key(&fx.task.wrapped_key, &ctx)
        .await
        .unwrap();
    let v = vault::Vault::new(
        tenant,
        fx.task.name.clone(),
        &key,
        fx.env.store.clone(),
        fx.env.catalog.clone(),
    );
    let av = v.account(&s1.account);
    let folder = av.lookup(&s1.root(), &p("f01/g0")).await.unwrap();
    let node = folder.subtree.unwrap();
    let loc = av
        .index()
        .await
        .unwrap()
        .get(&node.id, vault::BlobKind::Tree)
        .unwrap();
    let file = fx
        .env
        .dir
        .path()
        .join("objects/t/acme")
        .join(fx.task.name.as_str())
        .join(vault::PACK_KIND)
        .join(format!("{}-{}", av.tag(), loc.pack.to_hex()));
    let mut b = std::fs::read(&file).unwrap();
    b[loc.offset as usize + 20] ^= 0x20;
    std::fs::write(&file, b).unwrap();

    *fx.source.ops.lock().unwrap() = vec![put("f00/g1/item-000.txt", b"new")];
    fx.env.advance(chrono::Duration::days(1));
    let s2 = fx
        .engine
        .backup(
            &fx.task,
            &fx.source.account,
            &fx.source,
            &BackupOptions::default(),
        )
        .await
        .and_then(BackupEnd::into_snapshot)
        .unwrap();
    assert_eq!(s2.stats.items, s1.stats.items);
    let report = fx
        .engine
        .verify(&fx.task, &engine::NoProgress)
        .await
        .unwrap();
    assert!(!report.is_ok());
}
