//! The task's compression dictionary: small items are compressed with it, so it is stored
//! twice, and a damaged copy is reported by `verify` without costing any item; were both
//! copies damaged, the items that need it fail to read (as damage), never as wrong bytes.

use domain::{AccountId, TaskId, TenantId};
use embedded::{FsObjectStore, SqliteCatalog};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vault::{BlobKind, Entry, EntryKind, Node, Vault, DICT_COPIES};

fn open(dir: &Path) -> Vault {
    let store = Arc::new(FsObjectStore::new(dir.join("objects")).unwrap());
    let catalog = Arc::new(SqliteCatalog::open(dir.join("catalog.db")).unwrap());
    Vault::new(
        TenantId::new("acme").unwrap(),
        TaskId::new("mail").unwrap(),
        &[5; 32],
        store,
        catalog,
    )
}

/// Mail-like messages: enough of them (over 2 MiB) to train a dictionary.
fn messages() -> Vec<Vec<u8>> {
    (0..900)
        .map(|i| {
            format!(
                "From: anna.smith{}@example.com\r\nTo: team{}@example.org\r\nSubject: report {i}\r\n\
                 Content-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n",
                i % 17,
                i % 5,
                "Please review the budget for the next project meeting. Regards. ".repeat(40 + i % 9)
            )
            .into_bytes()
        })
        .collect()
}

fn dict_files(dir: &Path) -> Vec<PathBuf> {
    let root = dir.join("objects/t/acme/mail/dict");
    let mut v: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[at] ^= 0x5a;
    std::fs::write(path, b).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_dictionary_copy_costs_nothing_and_both_are_never_wrong_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let account = AccountId::new("anna").unwrap();
    let msgs = messages();
    let v = open(dir.path());
    let mut w = v.account(&account).writer(None).await.unwrap();
    let refs = w.store_batch(msgs.clone()).await.unwrap();
    let entries = refs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut e = Entry::new(format!("m{i:04}.eml").into_bytes(), EntryKind::File);
            e.size = r.raw_len as u64;
            e.content = vec![*r];
            e
        })
        .collect();
    let root = w.store_tree(Node { entries }).await.unwrap();
    w.commit(root, chrono::Utc::now(), None).await.unwrap();

    // The dictionary was trained and is stored twice; items use it.
    let copies = dict_files(dir.path());
    assert_eq!(copies.len(), DICT_COPIES as usize, "{copies:?}");
    assert!(v.dict().await.unwrap().is_some());
    let total: u64 = msgs.iter().map(|m| m.len() as u64).sum();
    assert!(stored_bytes(&v, &account).await < total / 4);

    // One copy damaged: every item still reads, verify names that copy only.
    flip(&copies[0], 40);
    let v = open(dir.path());
    for (r, m) in refs.iter().zip(&msgs) {
        assert_eq!(
            &v.account(&account)
                .read_blob(r, BlobKind::Data)
                .await
                .unwrap(),
            m
        );
    }
    let report = v
        .verify(std::slice::from_ref(&account), &|_| {})
        .await
        .unwrap();
    assert_eq!(report.damage.len(), 1, "{:?}", report.damage);
    assert!(report.damage[0].object.contains("/dict/"));
    assert!(report.damage[0].affects.is_empty());

    // Both damaged: the items fail to read as damage, and verify names what they affect.
    flip(&copies[1], 40);
    let v = open(dir.path());
    let mut failed = 0;
    for (r, m) in refs.iter().zip(&msgs) {
        match v.account(&account).read_blob(r, BlobKind::Data).await {
            Ok(got) => assert_eq!(&got, m, "wrong bytes returned"),
            Err(e) => {
                assert!(e.is_damage(), "{e}");
                failed += 1;
            }
        }
    }
    assert!(
        failed > msgs.len() / 2,
        "only {failed} items needed the dictionary"
    );
    let report = v
        .verify(std::slice::from_ref(&account), &|_| {})
        .await
        .unwrap();
    assert!(report.damage.iter().any(|d| !d.affects.is_empty()));
}

/// Bytes the account's one snapshot added to the store.
async fn stored_bytes(v: &Vault, account: &AccountId) -> u64 {
    v.account(account)
        .latest()
        .await
        .unwrap()
        .unwrap()
        .stats
        .stored_bytes
}
