//! Helpers shared by the folder connector's integration tests. Each test file is its own
//! crate and uses only some of these.
#![allow(dead_code)]

use domain::TaskId;
use engine::{Connector, Connectors, Engine, NewTask, Result, TaskRecord};
use folder::{FolderConnector, FolderSettings};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The folder connector alone, as a build of Lifeboat with no other source opens tasks.
pub struct Folders;

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

/// A folder task named `name` over `src`.
pub async fn folder_task(engine: &Engine, name: &str, src: &Path) -> TaskRecord {
    engine
        .add_task(
            NewTask {
                name: TaskId::new(name).unwrap(),
                source: FolderSettings::new(src).unwrap().to_source(),
                secret: None,
                backup_hour: None,
            },
            &Folders,
        )
        .await
        .unwrap()
}

/// Bytes that do not compress, different for every seed.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
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
pub fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
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
