//! Runs the `testkit` conformance suites against the embedded adapters, plus the checks
//! only these adapters can be asked (files on disk, processes sharing a catalog).

use bytes::Bytes;
use embedded::{FileKeyService, FsObjectStore, MemEventBus, MemQueue, SqliteCatalog};
use ports::{
    ByteSource, Catalog, Condition, EncryptionContext, ErrorKind, Event, EventBus, KeyService,
    ObjectKey, ObjectStore, ObjectStoreExt, Queue, Record, TxOp, STREAM_PART_BYTES,
};
use std::path::{Path, PathBuf};
use std::time::Duration;
use testkit::{assert_kind, assert_ok};

fn tenant() -> domain::TenantId {
    testkit::unique_tenant()
}

fn task(name: &str) -> domain::TaskId {
    domain::TaskId::new(name).unwrap()
}

// ---- object store ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_object_store_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsObjectStore::new(dir.path().join("objects")).unwrap();
    testkit::object_store_suite(&store).await;
}

#[tokio::test]
async fn fs_object_store_on_a_current_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsObjectStore::new(dir.path()).unwrap();
    let k = ObjectKey::new(&tenant(), &task("t"), "blob", "a");
    store.put_if_absent(&k, Bytes::from("x")).await.unwrap();
    assert_eq!(store.get(&k).await.unwrap(), Bytes::from("x"));
}

#[tokio::test]
async fn stale_temp_files_are_never_listed() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsObjectStore::new(dir.path()).unwrap();
    let t = tenant();
    let k = ObjectKey::new(&t, &task("t"), "pack", "aa");
    store.put_if_absent(&k, Bytes::from("data")).await.unwrap();
    // What a crash between write and link leaves behind, beside the object and above it.
    let pack_dir = dir.path().join(format!("t/{t}/t/pack"));
    std::fs::write(pack_dir.join(".tmp-0123456789abcdef"), b"half").unwrap();
    std::fs::write(pack_dir.join(".tmp-ab"), b"").unwrap();
    std::fs::create_dir(dir.path().join(format!("t/{t}/t/.tmp-dir"))).unwrap();
    std::fs::write(dir.path().join(format!("t/{t}/t/.tmp-dir/x")), b"x").unwrap();
    // A foreign file that is no object key.
    std::fs::write(dir.path().join(format!("t/{t}/stray")), b"?").unwrap();

    let listed = store.list_all(&ObjectKey::tenant_prefix(&t)).await.unwrap();
    assert_eq!(listed, vec![(k.clone(), 4)]);
    let listed = store.list_all(&format!("t/{t}/t/pack/.tmp")).await.unwrap();
    assert!(
        listed.is_empty(),
        "a prefix naming temp files finds nothing"
    );
    // Writes beside the stale files still work.
    let k2 = ObjectKey::new(&t, &task("t"), "pack", "bb");
    store.put_if_absent(&k2, Bytes::from("more")).await.unwrap();
    assert_eq!(
        store
            .list_all(&ObjectKey::tenant_prefix(&t))
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn puts_leave_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsObjectStore::new(dir.path()).unwrap();
    let t = tenant();
    let k = ObjectKey::new(&t, &task("t"), "pack", "aa");
    store.put_if_absent(&k, Bytes::from("one")).await.unwrap();
    assert_kind(
        store.put_if_absent(&k, Bytes::from("two")).await,
        ErrorKind::AlreadyExists,
        "again",
    );
    let names: Vec<String> = std::fs::read_dir(dir.path().join(format!("t/{t}/t/pack")))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["aa".to_string()]);
}

/// The byte at `i` of a generated object: not all alike, so an offset error shows.
fn generated_byte(i: usize) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ (i >> 20) as u8
}

/// The names in `dir` (none when it does not exist).
fn names_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// An object made up as it is read, which watches the store's directory while it is
/// read: at every call, one temp file there holds exactly what was handed out so far, so
/// the store writes each part as it comes instead of gathering the object.
struct Generated {
    len: usize,
    at: usize,
    calls: usize,
    dir: PathBuf,
    /// This call fails, as a broken export does.
    fail_on_call: Option<usize>,
    /// This call never returns (the put's future is then dropped).
    hang_on_call: Option<usize>,
}

impl Generated {
    fn new(len: usize, dir: PathBuf) -> Self {
        Generated {
            len,
            at: 0,
            calls: 0,
            dir,
            fail_on_call: None,
            hang_on_call: None,
        }
    }
}

#[async_trait::async_trait]
impl ByteSource for Generated {
    async fn next_part(&mut self, max: usize) -> ports::Result<Bytes> {
        self.calls += 1;
        if self.at > 0 {
            let temps: Vec<String> = names_in(&self.dir)
                .into_iter()
                .filter(|n| n.starts_with('.'))
                .collect();
            assert_eq!(temps.len(), 1, "one temp file while writing: {temps:?}");
            let size = std::fs::metadata(self.dir.join(&temps[0])).unwrap().len();
            assert_eq!(
                size as usize, self.at,
                "the temp file holds every part so far"
            );
        }
        if self.hang_on_call == Some(self.calls) {
            std::future::pending::<()>().await;
        }
        if self.fail_on_call == Some(self.calls) {
            return Err(ports::Error::new(
                ErrorKind::Unavailable,
                "the export broke off",
            ));
        }
        let n = max.min(self.len - self.at);
        let part: Vec<u8> = (self.at..self.at + n).map(generated_byte).collect();
        self.at += n;
        Ok(part.into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_streamed_object_is_written_a_part_at_a_time() {
    const LEN: usize = 64 << 20;
    let dir = tempfile::tempdir().unwrap();
    let store = FsObjectStore::new(dir.path()).unwrap();
    let t = tenant();
    let k = ObjectKey::new(&t, &task("t"), "export", "big");
    let kind_dir = dir.path().join(format!("t/{t}/t/export"));
    let mut source = Generated::new(LEN, kind_dir.clone());
    let n = store.put_stream_if_absent(&k, &mut source).await.unwrap();
    assert_eq!(n as usize, LEN);
    assert_eq!(
        source.calls,
        LEN / STREAM_PART_BYTES + 1,
        "read a part at a time"
    );
    assert_eq!(
        names_in(&kind_dir),
        vec!["big".to_string()],
        "no temp file left"
    );
    assert_eq!(store.size(&k).await.unwrap() as usize, LEN);
    for start in (0..LEN).step_by(STREAM_PART_BYTES) {
        let end = (start + STREAM_PART_BYTES).min(LEN);
        let got = store.get_range(&k, start as u64, end as u64).await.unwrap();
        assert!(
            got.iter()
                .zip(start..end)
                .all(|(b, i)| *b == generated_byte(i)),
            "bytes {start}..{end} read back equal"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_abandoned_streamed_put_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsObjectStore::new(dir.path()).unwrap();
    let t = tenant();
    let k = ObjectKey::new(&t, &task("t"), "export", "broken");
    let kind_dir = dir.path().join(format!("t/{t}/t/export"));

    let mut failing = Generated::new(4 * STREAM_PART_BYTES, kind_dir.clone());
    failing.fail_on_call = Some(3);
    assert_kind(
        store.put_stream_if_absent(&k, &mut failing).await,
        ErrorKind::Unavailable,
        "a source that fails fails the put",
    );
    assert!(names_in(&kind_dir).is_empty(), "{:?}", names_in(&kind_dir));

    let mut hanging = Generated::new(4 * STREAM_PART_BYTES, kind_dir.clone());
    hanging.hang_on_call = Some(3);
    let abandoned = tokio::time::timeout(
        Duration::from_millis(200),
        store.put_stream_if_absent(&k, &mut hanging),
    )
    .await;
    assert!(abandoned.is_err(), "the put waits on its source");
    assert_eq!(
        hanging.calls, 3,
        "two parts were written before it was dropped"
    );
    assert!(names_in(&kind_dir).is_empty(), "{:?}", names_in(&kind_dir));
    assert_kind(store.size(&k).await, ErrorKind::NotFound, "no object");

    // The key is still free: a later export writes it.
    let mut whole = Generated::new(STREAM_PART_BYTES + 7, kind_dir.clone());
    store.put_stream_if_absent(&k, &mut whole).await.unwrap();
    assert_eq!(names_in(&kind_dir), vec!["broken".to_string()]);
}

#[tokio::test]
async fn a_streamed_put_over_an_existing_object_reads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsObjectStore::new(dir.path()).unwrap();
    let t = tenant();
    let k = ObjectKey::new(&t, &task("t"), "export", "taken");
    store.put_if_absent(&k, Bytes::from("first")).await.unwrap();
    let kind_dir = dir.path().join(format!("t/{t}/t/export"));
    let mut source = Generated::new(3 * STREAM_PART_BYTES, kind_dir.clone());
    assert_kind(
        store.put_stream_if_absent(&k, &mut source).await,
        ErrorKind::AlreadyExists,
        "streamed put over an existing object",
    );
    assert_eq!(source.calls, 0, "the source was not read in vain");
    assert_eq!(names_in(&kind_dir), vec!["taken".to_string()]);
    assert_eq!(store.get(&k).await.unwrap(), Bytes::from("first"));
}

#[tokio::test]
async fn list_pages_hold_1000_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsObjectStore::new(dir.path()).unwrap();
    let t = tenant();
    // Spread over two kinds, so that a page ends inside one directory and the next page
    // must skip the directories before it.
    for i in 0..1001 {
        let kind = if i < 600 { "a" } else { "b" };
        let k = ObjectKey::new(&t, &task("t"), kind, &format!("{i:04}"));
        store.put_if_absent(&k, Bytes::new()).await.unwrap();
    }
    let prefix = ObjectKey::tenant_prefix(&t);
    let first = store.list(&prefix, None).await.unwrap();
    assert_eq!(first.keys.len(), 1000);
    let next = first.next.expect("a second page");
    let second = store.list(&prefix, Some(&next)).await.unwrap();
    assert_eq!(second.keys.len(), 1);
    assert_eq!(second.keys[0].0.id(), "1000");
    assert!(second.next.is_none());
}

#[tokio::test]
async fn keys_that_would_leave_their_directory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsObjectStore::new(dir.path().join("objects")).unwrap();
    // No key with a `..` part can be built, so none reaches the store.
    assert!(ObjectKey::parse("t/ten/task/../escape").is_none());
    let listed = store.list_all("t/ten/task/../").await.unwrap();
    assert!(listed.is_empty());
}

// ---- catalog ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_catalog_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = SqliteCatalog::open(dir.path().join("catalog.db")).unwrap();
    testkit::catalog_suite(&catalog).await;
}

#[tokio::test]
async fn two_handles_on_one_file_see_each_others_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.db");
    let a = SqliteCatalog::open(&path).unwrap();
    let b = SqliteCatalog::open(&path).unwrap();
    a.put(Record::new("p", "k", b"from a".to_vec()), Condition::Absent)
        .await
        .unwrap();
    assert_eq!(b.get("p", "k").await.unwrap().unwrap().value, b"from a");
    assert_kind(
        b.put(Record::new("p", "k", b"from b".to_vec()), Condition::Absent)
            .await,
        ErrorKind::ConditionFailed,
        "b sees a's record in its condition",
    );
    let mut next = b.get("p", "k").await.unwrap().unwrap();
    next.version = 2;
    next.value = b"b's update".to_vec();
    b.put(next, Condition::Version(1)).await.unwrap();
    assert_eq!(a.get("p", "k").await.unwrap().unwrap().version, 2);
}

#[test]
fn handles_in_threads_race_without_losing_updates() {
    // Two connections on two threads, as two processes would: every increment lands once.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(
        SqliteCatalog::open(&path)
            .unwrap()
            .put(Record::new("p", "n", vec![]), Condition::Absent),
    )
    .unwrap();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                let c = SqliteCatalog::open(&path).unwrap();
                rt.block_on(async {
                    let mut done = 0;
                    while done < 25 {
                        let mut r = c.get("p", "n").await.unwrap().unwrap();
                        let old = r.version;
                        r.version += 1;
                        match c.put(r, Condition::Version(old)).await {
                            Ok(()) => done += 1,
                            Err(e) => assert_eq!(e.kind(), ErrorKind::ConditionFailed),
                        }
                    }
                });
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let c = SqliteCatalog::open(&path).unwrap();
    assert_eq!(rt.block_on(c.get("p", "n")).unwrap().unwrap().version, 51);
}

#[tokio::test]
async fn catalog_keeps_dynamodb_key_limits() {
    let dir = tempfile::tempdir().unwrap();
    let c = SqliteCatalog::open(dir.path().join("c.db")).unwrap();
    assert_kind(
        c.put(Record::new("", "k", vec![]), Condition::None).await,
        ErrorKind::InvalidInput,
        "empty pk",
    );
    assert_kind(
        c.put(Record::new("p", "", vec![]), Condition::None).await,
        ErrorKind::InvalidInput,
        "empty sk",
    );
    assert_kind(
        c.put(Record::new("p", "s".repeat(1025), vec![]), Condition::None)
            .await,
        ErrorKind::InvalidInput,
        "sk over 1024 bytes",
    );
    assert_kind(
        c.query("p", "", None, 0, false).await,
        ErrorKind::InvalidInput,
        "limit 0",
    );
    assert_kind(
        c.transact(vec![]).await,
        ErrorKind::InvalidInput,
        "empty transaction",
    );
    let ok = vec![TxOp::Check {
        pk: "p".into(),
        sk: "s".into(),
        cond: Condition::Absent,
    }];
    assert_ok(c.transact(ok).await, "check-only transaction");
}

#[tokio::test]
async fn catalog_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    {
        let c = SqliteCatalog::open(&path).unwrap();
        c.put(Record::new("p", "k", b"kept".to_vec()), Condition::None)
            .await
            .unwrap();
    }
    let c = SqliteCatalog::open(&path).unwrap();
    assert_eq!(c.get("p", "k").await.unwrap().unwrap().value, b"kept");
}

// ---- key service ----

#[tokio::test]
async fn file_key_service_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let keys = FileKeyService::open(dir.path().join("keys/master.key")).unwrap();
    testkit::key_service_suite(&keys).await;
}

#[cfg(unix)]
#[tokio::test]
async fn master_key_file_is_private_and_reused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let ctx = EncryptionContext::for_task(&tenant(), &task("mail"));
    let first = FileKeyService::open(&path).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "created with mode 0600"
    );
    assert_eq!(meta.len(), 32);
    let dk = first.generate_data_key(&ctx).await.unwrap();

    // A second opening (another process) uses the same key.
    let second = FileKeyService::open(&path).unwrap();
    assert_eq!(
        *second.decrypt_data_key(&dk.wrapped, &ctx).await.unwrap(),
        *dk.plaintext
    );
    // No temp file left: the master key and the folder of tenant keys, whose one file is
    // private too.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["master.key", "tenant-keys"]);
    let tenant_keys: Vec<_> = std::fs::read_dir(dir.path().join("tenant-keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(tenant_keys.len(), 1);
    assert_eq!(
        std::fs::metadata(&tenant_keys[0])
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // Debug shows no key material.
    let shown = format!("{second:?}");
    assert!(
        shown.contains("master.key") && !shown.contains("key:"),
        "{shown}"
    );

    // Readable by group: refused, with the fix in the message.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = FileKeyService::open(&path).unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(FileKeyService::open(&path).is_ok());
}

#[tokio::test]
async fn master_key_of_wrong_length_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    for len in [0, 31, 33] {
        let _ = std::fs::remove_file(&path);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        std::io::Write::write_all(&mut opts.open(&path).unwrap(), &vec![1; len]).unwrap();
        let err = FileKeyService::open(&path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Other);
        assert!(err.to_string().contains("not 32"), "{err}");
    }
}

#[test]
fn racing_openers_agree_on_one_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let ctx = EncryptionContext::default();
    let services: Vec<FileKeyService> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| FileKeyService::open(&path).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let dk = rt.block_on(services[0].generate_data_key(&ctx)).unwrap();
    for s in &services {
        assert_eq!(
            *rt.block_on(s.decrypt_data_key(&dk.wrapped, &ctx)).unwrap(),
            *dk.plaintext
        );
    }
}

#[tokio::test]
async fn every_altered_byte_of_a_wrapped_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = FileKeyService::open(dir.path().join("m.key")).unwrap();
    let ctx = EncryptionContext::for_task(&tenant(), &task("mail"));
    let dk = keys.generate_data_key(&ctx).await.unwrap();
    for i in 0..dk.wrapped.len() {
        for bit in [0x01, 0x80] {
            let mut bad = dk.wrapped.clone();
            bad[i] ^= bit;
            assert_kind(
                keys.decrypt_data_key(&bad, &ctx).await,
                ErrorKind::Integrity,
                "flipped",
            );
        }
    }
    assert_kind(
        keys.decrypt_data_key(&[], &ctx).await,
        ErrorKind::Integrity,
        "empty",
    );
    let mut longer = dk.wrapped.clone();
    longer.push(0);
    assert_kind(
        keys.decrypt_data_key(&longer, &ctx).await,
        ErrorKind::Integrity,
        "longer",
    );
    // Another master key does not unwrap it either.
    let other = FileKeyService::open(dir.path().join("other.key")).unwrap();
    assert_kind(
        other.decrypt_data_key(&dk.wrapped, &ctx).await,
        ErrorKind::Integrity,
        "other master",
    );
}

// ---- queue ----

#[tokio::test]
async fn mem_queue_conformance() {
    testkit::queue_suite(
        |max_receives| async move { Box::new(MemQueue::new(max_receives)) as Box<dyn Queue> },
        Duration::from_millis(200),
    )
    .await;
}

#[tokio::test]
async fn mem_queue_ignores_stale_receipts_and_keeps_sqs_limits() {
    let q = MemQueue::new(5);
    q.send_batch(&["m".to_string()]).await.unwrap();
    let first = q.receive(10, Duration::ZERO).await.unwrap().remove(0);
    let second = q
        .receive(10, Duration::from_secs(60))
        .await
        .unwrap()
        .remove(0);
    q.delete(&first.receipt).await.unwrap();
    assert_eq!(q.len(), 1, "a stale receipt deletes nothing");
    q.delete("no such receipt").await.unwrap();
    q.delete(&second.receipt).await.unwrap();
    assert!(q.is_empty());

    assert_kind(
        q.receive(0, Duration::ZERO).await,
        ErrorKind::InvalidInput,
        "receive 0",
    );
    assert_kind(
        q.receive(11, Duration::ZERO).await,
        ErrorKind::InvalidInput,
        "receive 11",
    );
    assert_kind(
        q.receive(1, Duration::from_secs(13 * 3600)).await,
        ErrorKind::InvalidInput,
        "visibility over 12 h",
    );
    assert_kind(
        q.send_batch(&["nul \0".to_string()]).await,
        ErrorKind::InvalidInput,
        "NUL",
    );
    assert!(q.is_empty());
}

#[tokio::test]
async fn mem_queue_delivers_in_send_order() {
    let q = MemQueue::default();
    let sent: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    q.send_batch(&sent).await.unwrap();
    let got: Vec<String> = q
        .receive(10, Duration::from_secs(1))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(got, sent);
}

// ---- event bus ----

#[tokio::test]
async fn mem_event_bus_conformance() {
    testkit::event_bus_suite(&MemEventBus::new()).await;
}

#[tokio::test]
async fn mem_event_bus_keeps_what_it_accepted_only() {
    let bus = MemEventBus::new();
    let ev = |detail: &str| Event {
        source: "lifeboat".into(),
        detail_type: "Backup Finished".into(),
        detail: detail.into(),
    };
    bus.put_events(&[ev(r#"{"a":1}"#), ev("{}")]).await.unwrap();
    assert_kind(
        bus.put_events(&[ev("{}"), ev("[]")]).await,
        ErrorKind::InvalidInput,
        "array",
    );
    assert_kind(
        bus.put_events(&vec![ev("{}"); 11]).await,
        ErrorKind::InvalidInput,
        "eleven",
    );
    bus.put_events(&[]).await.unwrap();
    assert_eq!(
        bus.events(),
        vec![ev(r#"{"a":1}"#), ev("{}")],
        "refused batches publish nothing"
    );
}
