//! The folder connector's restore into its own folder when stored data is damaged: a
//! folder whose listing is damaged and a file with a damaged chunk are reported, the rest
//! is restored byte for byte, nothing appears under its name without all of its content,
//! and a rerun into the same restore folder (a restore job delivered again) clears what
//! an interrupted run left.

use domain::{restore_label, ItemPath, TaskId, RESTORE_PREFIX};
use engine::{
    Connector, Connectors, Destination, Engine, ErrorKind, NewTask, NoProgress, RestoreOptions,
    Result, TaskRecord,
};
use folder::{FolderConnector, FolderSettings};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use testkit::damage;
use testkit::env::{backup_all, TestEnv};

const TENANT: &str = "acme";
const TASK: &str = "docs";

/// The folder connector alone, as a build of Lifeboat with no other source opens tasks.
struct Folders;

impl Connectors for Folders {
    fn open(
        &self,
        task: &TaskRecord,
        secret: Option<zeroize::Zeroizing<String>>,
    ) -> Result<Arc<dyn Connector>> {
        FolderConnector::open_dyn(task, secret)
    }

    fn offers(&self, connector: &str) -> bool {
        connector == folder::CONNECTOR
    }
}

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

/// Every file under `dir` by its path there, with its bytes.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_into_the_folder_reports_damage_and_a_rerun_clears_leftovers() {
    let env = TestEnv::new();
    let engine: Engine = env.engine(TENANT);
    let src = env.folder("src");
    let files: BTreeMap<String, Vec<u8>> = [
        ("a/1.txt", noise(3000, 1)),
        ("a/2.txt", noise(4000, 2)),
        ("big.bin", noise(20 << 20, 3)),
        ("bad/x.txt", noise(5000, 4)),
        ("bad/y.txt", noise(6000, 5)),
    ]
    .into_iter()
    .map(|(p, b)| (p.to_string(), b))
    .collect();
    for (p, body) in &files {
        let p = src.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    let task = engine
        .add_task(
            NewTask {
                name: TaskId::new(TASK).unwrap(),
                source: FolderSettings::new(&src).unwrap().to_source(),
                secret: None,
                backup_hour: None,
            },
            &Folders,
        )
        .await
        .unwrap();
    let snap = backup_all(&engine, &task, &Folders).await.pop().unwrap();
    let (engine, task, snap) = (&engine, &task, &snap);

    // A chunk of the large file: a restore elsewhere shows which file a byte belongs to.
    let scratch = env.folder("scratch");
    let chunk = damage::damage_first(damage::middles(&env, TENANT, TASK), || {
        let scratch = scratch.clone();
        async move {
            let r = engine
                .restore_to_dir(
                    task,
                    snap,
                    &scratch,
                    &RestoreOptions::default(),
                    &NoProgress,
                )
                .await;
            let _ = std::fs::remove_dir_all(&scratch);
            matches!(&r, Ok(r) if r.errors.len() == 1 && r.errors[0].starts_with("big.bin"))
        }
    })
    .await;
    assert!(chunk.is_some(), "some stored byte is in a chunk of big.bin");
    // The listing of `bad`, and nothing else on the way.
    let listing = damage::damage_first(
        damage::every_nth_byte(&env, TENANT, TASK, 16),
        || async move {
            let bad = engine
                .list(task, snap, &ItemPath::parse(b"bad").unwrap())
                .await;
            matches!(&bad, Err(e) if e.kind() == ErrorKind::Damaged)
                && engine.list(task, snap, &ItemPath::root()).await.is_ok()
                && engine
                    .list(task, snap, &ItemPath::parse(b"a").unwrap())
                    .await
                    .is_ok()
        },
    )
    .await;
    assert!(listing.is_some(), "some stored byte is the listing of bad");

    // What an interrupted run of the same restore job left in its restore folder.
    let at = env.now();
    let target = src.join(restore_label(RESTORE_PREFIX, at));
    std::fs::create_dir_all(target.join("a")).unwrap();
    let stale = target.join("a/.1.txt.lifeboat-partial-0123456789abcdef");
    std::fs::write(&stale, vec![0u8; 4096]).unwrap();

    let opts = RestoreOptions {
        at: Some(at),
        ..Default::default()
    };
    let report = engine
        .restore(task, snap, &Destination::default(), &opts, &Folders)
        .await
        .expect("the restore goes on past damage");
    assert_eq!(report.errors.len(), 2, "{:?}", report.errors);
    assert!(
        report.errors.iter().any(|e| e.starts_with("big.bin")),
        "{:?}",
        report.errors
    );
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.starts_with("bad: folder not restored")),
        "{:?}",
        report.errors
    );
    assert_eq!(report.items, 2);
    assert_eq!(
        files_under(&target),
        files
            .iter()
            .filter(|(p, _)| p.starts_with("a/"))
            .map(|(p, b)| (p.clone(), b.clone()))
            .collect::<BTreeMap<_, _>>(),
        "the sound files byte for byte; no partial file, stale or new; nothing of big.bin"
    );
    assert!(!target.join("bad").exists());
}
