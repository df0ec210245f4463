//! Restores into a local folder when stored data is damaged or storage fails midway: a
//! folder whose listing is damaged, or a file with a damaged chunk, is reported and
//! everything else is restored byte for byte; no file appears under its name without all
//! of its content; no partial file stays behind, and a rerun is not confused by what an
//! interrupted one left.

use async_trait::async_trait;
use bytes::Bytes;
use domain::{ItemPath, OnConflict};
use engine::{
    Destination, Engine, ErrorKind, NoProgress, RestoreOptions, SnapshotRecord, TaskRecord,
};
use ports::{ByteSource, ListPage, ObjectKey, ObjectStore};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use testkit::damage;
use testkit::env::{backup_all, fake_setup, TestEnv};
use testkit::fake::{FakeConnectors, FakeItem, FakeSource};

const TENANT: &str = "acme";
const TASK: &str = "mail";
const ACCOUNT: &str = "ann";

/// Bytes that do not compress, different for every seed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn path(s: &str) -> ItemPath {
    ItemPath::parse(s.as_bytes()).expect("a valid path")
}

/// A fake account holding `items` (uid, folder, body), backed up once.
struct BackedUp {
    env: TestEnv,
    engine: Engine,
    source: Arc<FakeSource>,
    connectors: FakeConnectors,
    task: TaskRecord,
    snap: SnapshotRecord,
    /// Every file as a restore writes it: `<folder>/<uid>.eml` and its bytes.
    files: BTreeMap<String, Vec<u8>>,
}

async fn backed_up(items: Vec<(u32, &str, Vec<u8>)>) -> BackedUp {
    let env = TestEnv::new();
    let engine = env.engine(TENANT);
    let (source, connectors, task) = fake_setup(&engine, TASK, ACCOUNT).await;
    let mut files = BTreeMap::new();
    for (uid, folder, body) in items {
        files.insert(format!("{folder}/{uid}.eml"), body.clone());
        source.put(ACCOUNT, uid, FakeItem::new(folder, &body));
    }
    let snap = backup_all(&engine, &task, &connectors)
        .await
        .pop()
        .expect("one snapshot");
    BackedUp {
        env,
        engine,
        source,
        connectors,
        task,
        snap,
        files,
    }
}

impl BackedUp {
    /// Restores `include` (everything when empty) in place into `to`.
    async fn restore_in_place(
        &self,
        to: &Path,
        on_conflict: OnConflict,
        include: Vec<ItemPath>,
    ) -> engine::RestoreReport {
        let opts = RestoreOptions {
            include,
            in_place: true,
            on_conflict,
            ..Default::default()
        };
        self.engine
            .restore_to_dir(&self.task, &self.snap, to, &opts, &NoProgress)
            .await
            .expect("the restore")
    }
}

/// Every file under `dir` by its path there, with its bytes; folders are walked, not
/// listed.
fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).expect("a folder") {
            let p = e.expect("an entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).expect("under root");
                out.insert(
                    rel.to_string_lossy().into_owned(),
                    std::fs::read(&p).expect("a file"),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The partial files under `dir`, wherever they are.
fn partials_under(dir: &Path) -> Vec<String> {
    files_under(dir)
        .into_keys()
        .filter(|p| p.contains(".lifeboat-partial"))
        .collect()
}

/// The `files` outside the folders named in `without`, as a restore writes them.
fn except(files: &BTreeMap<String, Vec<u8>>, without: &[&str]) -> BTreeMap<String, Vec<u8>> {
    files
        .iter()
        .filter(|(p, _)| !without.iter().any(|w| p.starts_with(w)))
        .map(|(p, b)| (p.clone(), b.clone()))
        .collect()
}

/// The one folder `to` holds: a restore's own new folder.
fn restore_folder(to: &Path) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(to)
        .expect("a folder")
        .map(|e| e.expect("an entry").path())
        .collect();
    assert_eq!(dirs.len(), 1, "one restore folder in {}", to.display());
    dirs.pop().expect("one")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_folder_is_reported_and_everything_else_restored() {
    let b = backed_up(vec![
        (1, "Inbox", noise(2000, 1)),
        (2, "Inbox", noise(3000, 2)),
        (3, "Inbox", noise(10, 3)),
        (4, "Archive/2026", noise(4000, 4)),
        (5, "Archive/2026", noise(5000, 5)),
        (6, "Damaged", noise(6000, 6)),
        (7, "Damaged", noise(7000, 7)),
    ])
    .await;
    let (engine, task, snap) = (&b.engine, &b.task, &b.snap);
    // A byte whose damage breaks the listing of `Damaged` and nothing else a restore reads
    // on its way there, wherever the vault keeps that listing.
    let found = damage::damage_first(
        damage::every_nth_byte(&b.env, TENANT, TASK, 16),
        || async move {
            let damaged = engine.list(task, snap, &path("Damaged")).await;
            matches!(&damaged, Err(e) if e.kind() == ErrorKind::Damaged)
                && engine.list(task, snap, &ItemPath::root()).await.is_ok()
                && engine.list(task, snap, &path("Inbox")).await.is_ok()
                && engine.list(task, snap, &path("Archive/2026")).await.is_ok()
        },
    )
    .await;
    assert!(found.is_some(), "some stored byte is the folder's listing");

    let to = b.env.folder("out");
    let report = engine
        .restore_to_dir(task, snap, &to, &RestoreOptions::default(), &NoProgress)
        .await
        .expect("the restore goes on past a damaged folder");
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(
        report.errors[0].starts_with("Damaged: folder not restored"),
        "{}",
        report.errors[0]
    );
    assert_eq!(
        files_under(&report.target),
        except(&b.files, &["Damaged/"]),
        "every other file restored byte for byte"
    );
    assert!(!report.target.join("Damaged").exists());
    assert_eq!(report.files, 5);
    assert!(partials_under(&to).is_empty());

    // A restore into the source goes on past it too, and says so.
    let report = engine
        .restore(
            task,
            snap,
            &Destination::default(),
            &RestoreOptions::default(),
            &b.connectors,
        )
        .await
        .expect("the restore goes on past a damaged folder");
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(report.errors[0].starts_with("Damaged: folder not restored"));
    let restored: BTreeMap<String, Vec<u8>> = b
        .source
        .restored()
        .into_iter()
        .map(|r| {
            let (_label, p) = r.path.split_once('/').expect("inside the restore folder");
            (p.to_string(), r.body)
        })
        .collect();
    assert_eq!(restored, except(&b.files, &["Damaged/"]));
}

/// One large file of many chunks (`Inbox/2.eml`) among others, another of several chunks
/// that stays sound (`Inbox/3.eml`), and small ones.
async fn with_large_files() -> BackedUp {
    backed_up(vec![
        (1, "Inbox", noise(5000, 1)),
        (2, "Inbox", noise(20 << 20, 2)),
        (3, "Inbox", noise(6 << 20, 3)),
        (4, "Archive", noise(7000, 4)),
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_chunk_leaves_no_file_under_its_name_and_no_partial_file() {
    let b = with_large_files().await;
    let (engine, task, snap, connectors) = (&b.engine, &b.task, &b.snap, &b.connectors);
    // A byte inside one chunk of the large file: what a restore into the source says
    // shows which file a byte belongs to.
    let found = damage::damage_first(damage::middles(&b.env, TENANT, TASK), || async move {
        let opts = RestoreOptions::default();
        let r = engine
            .restore(task, snap, &Destination::default(), &opts, connectors)
            .await;
        matches!(&r, Ok(r) if r.errors.len() == 1 && r.errors[0].starts_with("Inbox/2.eml"))
    })
    .await;
    assert!(
        found.is_some(),
        "some stored byte is in a chunk of Inbox/2.eml"
    );

    let to = b.env.folder("out");
    let report = engine
        .restore_to_dir(task, snap, &to, &RestoreOptions::default(), &NoProgress)
        .await
        .expect("the restore goes on past a damaged file");
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(
        report.errors[0].starts_with("Inbox/2.eml: not restored: its stored data is damaged"),
        "{}",
        report.errors[0]
    );
    assert!(!report.target.join("Inbox/2.eml").exists());
    assert!(partials_under(&to).is_empty(), "{:?}", partials_under(&to));
    assert_eq!(
        files_under(&report.target),
        except(&b.files, &["Inbox/2.eml"]),
        "the other files, the sound large one included, restored byte for byte"
    );
    assert_eq!(report.files, 3);
}

/// A store whose large reads fail from the `fail_from`-th on, as storage that becomes
/// unreachable in the middle of a restore (small reads, of folder listings, go through).
struct FailingReads {
    inner: Arc<dyn ObjectStore>,
    large_reads: AtomicUsize,
    fail_from: usize,
}

#[async_trait]
impl ObjectStore for FailingReads {
    async fn put_if_absent(&self, key: &ObjectKey, data: Bytes) -> ports::Result<()> {
        self.inner.put_if_absent(key, data).await
    }
    async fn put_stream_if_absent(
        &self,
        key: &ObjectKey,
        source: &mut dyn ByteSource,
    ) -> ports::Result<u64> {
        self.inner.put_stream_if_absent(key, source).await
    }
    async fn get(&self, key: &ObjectKey) -> ports::Result<Bytes> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &ObjectKey, start: u64, end: u64) -> ports::Result<Bytes> {
        if end - start > 1 << 20
            && self.large_reads.fetch_add(1, Ordering::SeqCst) + 1 >= self.fail_from
        {
            return Err(ports::Error::new(
                ports::ErrorKind::Unavailable,
                "storage went away",
            ));
        }
        self.inner.get_range(key, start, end).await
    }
    async fn size(&self, key: &ObjectKey) -> ports::Result<u64> {
        self.inner.size(key).await
    }
    async fn list(&self, prefix: &str, after: Option<&str>) -> ports::Result<ListPage> {
        self.inner.list(prefix, after).await
    }
    async fn delete(&self, key: &ObjectKey) -> ports::Result<()> {
        self.inner.delete(key).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_failing_midway_leaves_only_whole_files_and_a_rerun_finishes() {
    let b = with_large_files().await;
    let mut ports = b.env.ports.clone();
    ports.store = Arc::new(FailingReads {
        inner: b.env.store.clone(),
        large_reads: AtomicUsize::new(0),
        fail_from: 2,
    });
    let failing = Engine::new(ports, b.engine.tenant().clone());

    let to = b.env.folder("out");
    let err = failing
        .restore_to_dir(
            &b.task,
            &b.snap,
            &to,
            &RestoreOptions::default(),
            &NoProgress,
        )
        .await
        .expect_err("storage that goes away fails the restore");
    assert_eq!(err.kind(), ErrorKind::StorageUnavailable, "{err}");
    assert!(err.is_retryable());
    assert!(partials_under(&to).is_empty(), "{:?}", partials_under(&to));
    let target = restore_folder(&to);
    let written = files_under(&target);
    assert!(
        !written.contains_key("Inbox/2.eml"),
        "the large file never got its last chunks"
    );
    for (p, bytes) in &written {
        assert!(b.files.get(p) == Some(bytes), "{p} is whole");
    }

    // Run again in place over what the first run wrote: everything, whole.
    let report = b
        .restore_in_place(&target, OnConflict::Replace, vec![])
        .await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(files_under(&target), b.files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_rerun_removes_stale_partial_files_of_the_names_it_writes() {
    let b = backed_up(vec![
        (1, "Inbox", noise(3000, 1)),
        (2, "Inbox", Vec::new()),
        (3, "Inbox", noise(9 << 20, 3)),
    ])
    .await;
    let to = b.env.folder("in-place");
    let inbox = to.join("Inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    // What interrupted runs left: zero-filled partial files of names the snapshot has,
    // one of a name it does not have, and an older version of one file.
    let stale = [
        ".1.eml.lifeboat-partial-0123456789abcdef",
        ".3.eml.lifeboat-partial-00000000deadbeef",
        ".2.eml.lifeboat-partial-ffffffffffffffff",
    ];
    for name in stale {
        std::fs::write(inbox.join(name), vec![0u8; 4096]).unwrap();
    }
    let other = ".9.eml.lifeboat-partial-0123456789abcdef";
    std::fs::write(inbox.join(other), b"not ours to judge").unwrap();
    std::fs::write(inbox.join("1.eml"), b"an older version").unwrap();

    let report = b.restore_in_place(&to, OnConflict::Replace, vec![]).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.files, 3);
    let mut want = b.files.clone();
    want.insert(format!("Inbox/{other}"), b"not ours to judge".to_vec());
    assert_eq!(files_under(&to), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_rerun_removes_stale_partial_files_of_the_names_it_skips() {
    let b = backed_up(vec![
        (1, "Inbox", noise(3000, 1)),
        (2, "Inbox", noise(5000, 2)),
    ])
    .await;
    let to = b.env.folder("in-place");
    let inbox = to.join("Inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    // An in-place restore that replaced 1.eml was killed: the file keeps its version, and
    // its partial file is beside it.
    std::fs::write(inbox.join("1.eml"), b"kept as it is").unwrap();
    let stale = ".1.eml.lifeboat-partial-0123456789abcdef";
    std::fs::write(inbox.join(stale), vec![0u8; 4096]).unwrap();

    let report = b.restore_in_place(&to, OnConflict::Skip, vec![]).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!((report.files, report.skipped), (1, 1));
    let mut want = b.files.clone();
    want.insert("Inbox/1.eml".into(), b"kept as it is".to_vec());
    assert_eq!(files_under(&to), want, "the skipped file's partial is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_restore_never_writes_through_a_link_in_a_folders_place() {
    let b = backed_up(vec![
        (1, "Inbox", noise(3000, 1)),
        (2, "Inbox", noise(4000, 2)),
        (3, "Sent", noise(5000, 3)),
    ])
    .await;
    let to = b.env.folder("in-place");
    // Inbox is a link to another folder, whose 1.eml is not the snapshot's.
    let elsewhere = b.env.folder("elsewhere");
    std::fs::write(elsewhere.join("1.eml"), b"not to be replaced").unwrap();
    std::os::unix::fs::symlink(&elsewhere, to.join("Inbox")).unwrap();
    let untouched = BTreeMap::from([("1.eml".to_string(), b"not to be replaced".to_vec())]);

    for include in [vec![], vec![path("Inbox/1.eml"), path("Sent")]] {
        let report = b.restore_in_place(&to, OnConflict::Replace, include).await;
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        assert!(report.errors[0].starts_with("Inbox"), "{:?}", report.errors);
        assert_eq!(report.files, 1, "Sent/3.eml only");
        assert_eq!(files_under(&elsewhere), untouched);
        assert!(to.join("Inbox").symlink_metadata().unwrap().is_symlink());
        assert_eq!(
            std::fs::read(to.join("Sent/3.eml")).unwrap(),
            b.files["Sent/3.eml"]
        );
    }
}

/// More files than one batch plans (32 Ki): the restore writes them batch after batch,
/// every file whole, and a blob shared across batches is written into each file that
/// holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_of_more_files_than_a_batch_writes_every_one() {
    let n = 33_000u32;
    let items = (1..=n)
        .map(|uid| {
            let folder = ["Inbox", "Archive/2026", "Sent"][(uid % 3) as usize];
            // Every hundredth message is the same bytes: a blob of several batches.
            let body = if uid % 100 == 0 {
                b"the same message".to_vec()
            } else {
                format!("message {uid}").into_bytes()
            };
            (uid, folder, body)
        })
        .collect();
    let b = backed_up(items).await;
    let to = b.env.folder("out");
    let report = b
        .engine
        .restore_to_dir(
            &b.task,
            &b.snap,
            &to,
            &RestoreOptions::default(),
            &NoProgress,
        )
        .await
        .expect("the restore");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.files, n as u64);
    assert_eq!(files_under(&restore_folder(&to)), b.files);
}
