//! The object store suite: write-once puts, reads and ranges, listing order, prefixes and
//! paging, idempotent deletes.

use crate::{assert_kind, assert_ok, unique_tenant};
use bytes::Bytes;
use domain::{TaskId, TenantId};
use futures::stream::{self, StreamExt};
use ports::{ByteSource, ErrorKind, ObjectKey, ObjectStore, ObjectStoreExt, STREAM_PART_BYTES};

/// Keys the paging test writes: more than one page of S3's (and the embedded store's)
/// 1000 keys.
const PAGING_KEYS: usize = 1100;

/// How many puts the paging test keeps in flight: enough to hide one round trip (or one
/// fsync) per put, few enough not to trip a local server's limits.
const PUT_CONCURRENCY: usize = 16;

/// Runs every object store check against `store`, under a fresh tenant.
///
/// Assumes list pages hold at most 1000 keys (S3's maximum), so that 1100 keys span two
/// pages or more.
pub async fn object_store_suite(store: &dyn ObjectStore) {
    let tenant = unique_tenant();
    round_trip(store, &tenant).await;
    write_once(store, &tenant).await;
    racing_puts(store, &tenant).await;
    missing(store, &tenant).await;
    ranges(store, &tenant).await;
    empty_object(store, &tenant).await;
    large_object(store, &tenant).await;
    streamed(store, &tenant).await;
    streamed_write_once(store, &tenant).await;
    // A tenant of its own: its tenant-wide listing must hold nothing else.
    list_order_and_prefixes(store, &unique_tenant()).await;
    list_paging(store, &tenant).await;
    delete_is_idempotent(store, &tenant).await;
}

fn task(name: &str) -> TaskId {
    TaskId::new(name).expect("suite task names are valid")
}

fn key(tenant: &TenantId, task_name: &str, kind: &str, id: &str) -> ObjectKey {
    ObjectKey::new(tenant, &task(task_name), kind, id)
}

/// Deterministic bytes that are not all alike, so that an offset error shows.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
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

async fn put(store: &dyn ObjectStore, k: &ObjectKey, data: impl Into<Bytes>) {
    assert_ok(
        store.put_if_absent(k, data.into()).await,
        &format!("put {k}"),
    );
}

async fn round_trip(store: &dyn ObjectStore, tenant: &TenantId) {
    let k = key(tenant, "rt", "blob", "one");
    let data = pattern(1000, 1);
    put(store, &k, data.clone()).await;
    assert_eq!(assert_ok(store.get(&k).await, "get").as_ref(), &data[..]);
    assert_eq!(assert_ok(store.size(&k).await, "size"), 1000);
}

async fn write_once(store: &dyn ObjectStore, tenant: &TenantId) {
    let k = key(tenant, "wo", "blob", "one");
    put(store, &k, "first").await;
    assert_kind(
        store.put_if_absent(&k, Bytes::from("second!")).await,
        ErrorKind::AlreadyExists,
        "second put with other content",
    );
    assert_kind(
        store.put_if_absent(&k, Bytes::from("first")).await,
        ErrorKind::AlreadyExists,
        "second put with the same content",
    );
    assert_eq!(assert_ok(store.get(&k).await, "get").as_ref(), b"first");
    assert_eq!(assert_ok(store.size(&k).await, "size"), 5);
}

/// Puts racing for one key: exactly one wins and the object holds the winner's bytes whole.
async fn racing_puts(store: &dyn ObjectStore, tenant: &TenantId) {
    const RACERS: u64 = 8;
    let k = key(tenant, "race", "blob", "one");
    let bodies: Vec<Vec<u8>> = (0..RACERS).map(|i| pattern(64 * 1024, 100 + i)).collect();
    let results = futures::future::join_all(
        bodies
            .iter()
            .map(|b| store.put_if_absent(&k, b.clone().into())),
    )
    .await;
    let mut winner = None;
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(()) => {
                assert!(winner.is_none(), "two racing puts both succeeded");
                winner = Some(i);
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::AlreadyExists, "racing put: {e}"),
        }
    }
    let winner = winner.expect("one racing put succeeds");
    assert_eq!(
        assert_ok(store.get(&k).await, "get after race").as_ref(),
        &bodies[winner][..],
        "the object holds the winning put's bytes"
    );
}

async fn missing(store: &dyn ObjectStore, tenant: &TenantId) {
    let k = key(tenant, "miss", "blob", "nothing");
    assert_kind(
        store.get(&k).await,
        ErrorKind::NotFound,
        "get of a missing key",
    );
    assert_kind(
        store.size(&k).await,
        ErrorKind::NotFound,
        "size of a missing key",
    );
    assert_kind(
        store.get_range(&k, 0, 1).await,
        ErrorKind::NotFound,
        "get_range of a missing key",
    );
}

async fn ranges(store: &dyn ObjectStore, tenant: &TenantId) {
    let k = key(tenant, "rng", "blob", "hundred");
    let data: Vec<u8> = (0..100u8).collect();
    put(store, &k, data.clone()).await;
    for (s, e) in [(0, 100), (10, 20), (0, 1), (99, 100), (37, 38), (1, 99)] {
        let got = assert_ok(store.get_range(&k, s, e).await, &format!("range {s}..{e}"));
        assert_eq!(
            got.as_ref(),
            &data[s as usize..e as usize],
            "range {s}..{e}"
        );
    }
    for (s, e) in [
        (0, 0),
        (50, 50),
        (100, 100),
        (60, 50),
        (90, 101),
        (100, 101),
        (200, 300),
    ] {
        assert_kind(
            store.get_range(&k, s, e).await,
            ErrorKind::InvalidInput,
            &format!("range {s}..{e} of a 100-byte object"),
        );
    }
}

async fn empty_object(store: &dyn ObjectStore, tenant: &TenantId) {
    let k = key(tenant, "empty", "blob", "zero");
    put(store, &k, Bytes::new()).await;
    assert!(assert_ok(store.get(&k).await, "get empty").is_empty());
    assert_eq!(assert_ok(store.size(&k).await, "size of empty"), 0);
    assert_kind(
        store.get_range(&k, 0, 1).await,
        ErrorKind::InvalidInput,
        "range past an empty object",
    );
    let listed = assert_ok(
        store
            .list_all(&ObjectKey::task_prefix(tenant, &task("empty")))
            .await,
        "list",
    );
    assert_eq!(listed, vec![(k.clone(), 0)], "an empty object is listed");
    assert_kind(
        store.put_if_absent(&k, Bytes::new()).await,
        ErrorKind::AlreadyExists,
        "second put of an empty object",
    );
}

/// Several MiB, past any small-write fast path an adapter may have.
async fn large_object(store: &dyn ObjectStore, tenant: &TenantId) {
    const LEN: usize = 6 * 1024 * 1024 + 123;
    let k = key(tenant, "large", "pack", "big");
    let data = pattern(LEN, 7);
    put(store, &k, data.clone()).await;
    assert_eq!(assert_ok(store.size(&k).await, "size") as usize, LEN);
    let got = assert_ok(store.get(&k).await, "get large");
    assert!(got.as_ref() == &data[..], "large object reads back equal");
    let mid = (LEN / 2) as u64;
    let got = assert_ok(store.get_range(&k, mid - 5, mid + 5).await, "middle range");
    assert_eq!(got.as_ref(), &data[mid as usize - 5..mid as usize + 5]);
    let end = LEN as u64;
    let got = assert_ok(store.get_range(&k, end - 10, end).await, "last bytes");
    assert_eq!(got.as_ref(), &data[LEN - 10..]);
    let got = assert_ok(store.get_range(&k, 1, end).await, "all but the first byte");
    assert!(
        got.as_ref() == &data[1..],
        "range to the end reads back equal"
    );
}

/// An object's bytes handed out as asked, failing once `fail_after` bytes are out.
struct Pieces {
    data: Vec<u8>,
    at: usize,
    fail_after: Option<usize>,
}

#[async_trait::async_trait]
impl ByteSource for Pieces {
    async fn next_part(&mut self, max: usize) -> ports::Result<Bytes> {
        if self.fail_after.is_some_and(|f| self.at >= f) {
            return Err(ports::Error::new(
                ErrorKind::Unavailable,
                "the source broke off",
            ));
        }
        let n = max.min(self.data.len() - self.at);
        let out = Bytes::copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(out)
    }
}

fn pieces(data: &[u8], fail_after: Option<usize>) -> Pieces {
    Pieces {
        data: data.to_vec(),
        at: 0,
        fail_after,
    }
}

/// Streamed writes: an object of several parts and one smaller than a part read back
/// equal; an existing object is refused and kept; a source that breaks off leaves nothing.
async fn streamed(store: &dyn ObjectStore, tenant: &TenantId) {
    let len = 2 * STREAM_PART_BYTES + 4321;
    let data = pattern(len, 11);
    let k = key(tenant, "stream", "export", "big");
    let n = assert_ok(
        store
            .put_stream_if_absent(&k, &mut pieces(&data, None))
            .await,
        "streamed put of three parts",
    );
    assert_eq!(n as usize, len);
    assert_eq!(assert_ok(store.size(&k).await, "size") as usize, len);
    let got = assert_ok(store.get(&k).await, "get streamed");
    assert!(
        got.as_ref() == &data[..],
        "a streamed object reads back equal"
    );
    let got = assert_ok(
        store
            .get_range(
                &k,
                STREAM_PART_BYTES as u64 - 3,
                STREAM_PART_BYTES as u64 + 3,
            )
            .await,
        "range across a part boundary",
    );
    assert_eq!(
        got.as_ref(),
        &data[STREAM_PART_BYTES - 3..STREAM_PART_BYTES + 3]
    );

    let small = key(tenant, "stream", "export", "small");
    let n = assert_ok(
        store
            .put_stream_if_absent(&small, &mut pieces(b"a small export", None))
            .await,
        "streamed put of one part",
    );
    assert_eq!(n, 14);
    assert_eq!(
        assert_ok(store.get(&small).await, "get small").as_ref(),
        b"a small export"
    );

    for (what, k) in [("large", &k), ("small", &small)] {
        assert_kind(
            store
                .put_stream_if_absent(k, &mut pieces(&pattern(len, 12), None))
                .await,
            ErrorKind::AlreadyExists,
            &format!("streamed put over the existing {what} object"),
        );
    }
    assert!(assert_ok(store.get(&k).await, "get after refusal").as_ref() == &data[..]);

    let broken = key(tenant, "stream", "export", "broken");
    let r = store
        .put_stream_if_absent(&broken, &mut pieces(&data, Some(STREAM_PART_BYTES + 1)))
        .await;
    assert!(r.is_err(), "a source that broke off fails the write");
    assert_kind(
        store.size(&broken).await,
        ErrorKind::NotFound,
        "nothing is left of a broken streamed write",
    );
    assert_kind(
        store.get(&broken).await,
        ErrorKind::NotFound,
        "nothing is left of a broken streamed write",
    );
}

/// Streamed and plain puts keep one write-once rule: a streamed put of several parts
/// refuses a key a plain put wrote (before or after reading its source) and the reverse;
/// an empty stream is an empty object; of streamed puts racing for one key exactly one
/// wins, whole.
async fn streamed_write_once(store: &dyn ObjectStore, tenant: &TenantId) {
    let plain = key(tenant, "stream-once", "export", "plain");
    put(store, &plain, "written plainly").await;
    assert_kind(
        store
            .put_stream_if_absent(
                &plain,
                &mut pieces(&pattern(STREAM_PART_BYTES + 99, 21), None),
            )
            .await,
        ErrorKind::AlreadyExists,
        "streamed put of two parts over a plainly written object",
    );
    assert_eq!(
        assert_ok(store.get(&plain).await, "get after refusal").as_ref(),
        b"written plainly",
        "a refused streamed put leaves the object as it was"
    );

    let streamed = key(tenant, "stream-once", "export", "streamed");
    let data = pattern(STREAM_PART_BYTES + 1, 22);
    assert_ok(
        store
            .put_stream_if_absent(&streamed, &mut pieces(&data, None))
            .await,
        "streamed put of two parts",
    );
    assert_kind(
        store.put_if_absent(&streamed, Bytes::from("plain")).await,
        ErrorKind::AlreadyExists,
        "plain put over a streamed object",
    );
    assert!(assert_ok(store.get(&streamed).await, "get streamed").as_ref() == &data[..]);

    let empty = key(tenant, "stream-once", "export", "empty");
    let n = assert_ok(
        store
            .put_stream_if_absent(&empty, &mut pieces(b"", None))
            .await,
        "streamed put of nothing",
    );
    assert_eq!(n, 0);
    assert_eq!(assert_ok(store.size(&empty).await, "size of empty"), 0);
    assert_kind(
        store
            .put_stream_if_absent(&empty, &mut pieces(b"", None))
            .await,
        ErrorKind::AlreadyExists,
        "second streamed put of nothing",
    );

    const RACERS: u64 = 4;
    let raced = key(tenant, "stream-once", "export", "raced");
    let bodies: Vec<Vec<u8>> = (0..RACERS)
        .map(|i| pattern(64 * 1024 + i as usize, 200 + i))
        .collect();
    let mut sources: Vec<Pieces> = bodies.iter().map(|b| pieces(b, None)).collect();
    let results = futures::future::join_all(
        sources
            .iter_mut()
            .map(|src| store.put_stream_if_absent(&raced, src)),
    )
    .await;
    let mut winner = None;
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(n) => {
                assert!(winner.is_none(), "two racing streamed puts both succeeded");
                assert_eq!(n as usize, bodies[i].len());
                winner = Some(i);
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::AlreadyExists, "racing put: {e}"),
        }
    }
    let winner = winner.expect("one racing streamed put succeeds");
    assert!(
        assert_ok(store.get(&raced).await, "get after race").as_ref() == &bodies[winner][..],
        "the object holds the winning streamed put's bytes"
    );
}

/// Keys come back in byte order of the whole key, and a prefix selects exactly the keys
/// that start with it: task `a` never shows `ab`'s objects, kind `pack` never `pack-x`'s.
async fn list_order_and_prefixes(store: &dyn ObjectStore, tenant: &TenantId) {
    // '-' sorts before '/', '_' after it: a listing that walks directories by name alone
    // gets these wrong.
    let written = [
        key(tenant, "a", "pack", "01"),
        key(tenant, "a", "pack", "02"),
        key(tenant, "a", "pack", "10"),
        key(tenant, "a", "pack-x", "y"),
        key(tenant, "a", "pack_y", "z"),
        key(tenant, "a", "dict", "x"),
        key(tenant, "a-b", "pack", "01"),
        key(tenant, "ab", "pack", "01"),
        key(tenant, "b", "pack", "01"),
    ];
    for (i, k) in written.iter().enumerate() {
        put(store, k, pattern(i + 1, i as u64)).await;
    }
    let with_size = |ks: &[&ObjectKey]| -> Vec<(ObjectKey, u64)> {
        let mut v: Vec<(ObjectKey, u64)> = ks
            .iter()
            .map(|k| {
                let i = written.iter().position(|w| w == *k).unwrap_or(0);
                ((*k).clone(), i as u64 + 1)
            })
            .collect();
        v.sort_by(|x, y| x.0.as_str().cmp(y.0.as_str()));
        v
    };
    let list = |prefix: String| async move {
        assert_ok(store.list_all(&prefix).await, &format!("list {prefix}"))
    };
    let w = &written;

    let all = list(ObjectKey::tenant_prefix(tenant)).await;
    assert_eq!(
        all,
        with_size(&w.iter().collect::<Vec<_>>()),
        "tenant listing"
    );
    let strs: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
    let mut sorted = strs.clone();
    sorted.sort();
    assert_eq!(strs, sorted, "keys come in ascending byte order");

    let a = list(ObjectKey::task_prefix(tenant, &task("a"))).await;
    assert_eq!(
        a,
        with_size(&[&w[0], &w[1], &w[2], &w[3], &w[4], &w[5]]),
        "task a holds only its own keys (not a-b's or ab's)"
    );
    let pack = list(ObjectKey::kind_prefix(tenant, &task("a"), "pack")).await;
    assert_eq!(
        pack,
        with_size(&[&w[0], &w[1], &w[2]]),
        "kind pack excludes pack-x and pack_y"
    );
    let bare = list(format!("t/{tenant}/a")).await;
    assert_eq!(
        bare,
        with_size(&w[..8].iter().collect::<Vec<_>>()),
        "a prefix that is not a whole segment matches by bytes"
    );
    let partial_kind = list(format!("t/{tenant}/a/pack")).await;
    assert_eq!(
        partial_kind,
        with_size(&[&w[0], &w[1], &w[2], &w[3], &w[4]]),
        "partial kind"
    );
    let partial_id = list(format!("t/{tenant}/a/pack/0")).await;
    assert_eq!(partial_id, with_size(&[&w[0], &w[1]]), "partial id");
    let exact = list(w[2].as_str().to_string()).await;
    assert_eq!(exact, with_size(&[&w[2]]), "a whole key as prefix");
    assert!(
        list(format!("t/{tenant}/zzz")).await.is_empty(),
        "no match lists nothing"
    );
    let page = assert_ok(
        store.list(&format!("t/{tenant}/nothing/"), None).await,
        "list",
    );
    assert!(
        page.keys.is_empty() && page.next.is_none(),
        "empty listing has no next"
    );
}

async fn list_paging(store: &dyn ObjectStore, tenant: &TenantId) {
    // Neighbours on both sides of the listed task, which must not leak into its pages.
    for name in ["many-a", "manyx"] {
        put(store, &key(tenant, name, "obj", "00000"), "n").await;
    }
    let ids: Vec<String> = (0..PAGING_KEYS).map(|i| format!("{i:05}")).collect();
    let puts = stream::iter(ids.iter().enumerate())
        .map(|(i, id)| {
            let k = key(tenant, "many", "obj", id);
            async move {
                (
                    store
                        .put_if_absent(&k, Bytes::from(vec![b'x'; i % 7]))
                        .await,
                    k,
                )
            }
        })
        .buffer_unordered(PUT_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    for (r, k) in puts {
        assert_ok(r, &format!("put {k}"));
    }

    let prefix = ObjectKey::task_prefix(tenant, &task("many"));
    let mut after: Option<String> = None;
    let mut got = Vec::new();
    let mut pages = 0;
    loop {
        let page = assert_ok(store.list(&prefix, after.as_deref()).await, "list page");
        pages += 1;
        assert!(pages <= PAGING_KEYS, "listing does not end");
        assert!(page.keys.len() <= 1000, "a page holds at most 1000 keys");
        got.extend(page.keys);
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert!(pages >= 2, "{PAGING_KEYS} keys span more than one page");
    let want: Vec<(ObjectKey, u64)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (key(tenant, "many", "obj", id), (i % 7) as u64))
        .collect();
    assert_eq!(got.len(), want.len(), "every key listed once");
    assert!(
        got == want,
        "pages join into the ascending listing, sizes right"
    );

    let sub = assert_ok(
        store
            .list_all(&format!(
                "{}0105",
                ObjectKey::kind_prefix(tenant, &task("many"), "obj")
            ))
            .await,
        "list sub-prefix",
    );
    assert_eq!(
        sub,
        want[1050..1060].to_vec(),
        "sub-prefix of a large listing"
    );
}

async fn delete_is_idempotent(store: &dyn ObjectStore, tenant: &TenantId) {
    let k = key(tenant, "del", "blob", "one");
    let other = key(tenant, "del", "blob", "two");
    assert_ok(store.delete(&k).await, "delete of a missing key");
    put(store, &k, "gone soon").await;
    put(store, &other, "stays").await;
    assert_ok(store.delete(&k).await, "delete");
    assert_kind(store.get(&k).await, ErrorKind::NotFound, "get after delete");
    assert_kind(
        store.size(&k).await,
        ErrorKind::NotFound,
        "size after delete",
    );
    assert_ok(store.delete(&k).await, "second delete");
    let listed = assert_ok(
        store
            .list_all(&ObjectKey::task_prefix(tenant, &task("del")))
            .await,
        "list after delete",
    );
    assert_eq!(
        listed,
        vec![(other.clone(), 5)],
        "a deleted key is not listed"
    );
    put(store, &k, "again").await;
    assert_eq!(
        assert_ok(store.get(&k).await, "get after re-put").as_ref(),
        b"again",
        "a deleted key can be written anew"
    );
}
