//! Property tests of the vault over the embedded adapters: whatever is written reads back
//! byte-equal (and is not stored twice), and a flipped byte anywhere in a stored object is
//! detected by `verify` and by reads, never returned as data. Half the cases compress
//! small items with a task dictionary, so that path is covered as well.
//!
//! They run [`DEFAULT_CASES`] cases each; `LIFEBOAT_PROPTEST_CASES` asks for more
//! (`bench/vault.sh` offers a 10,000-case run).

use domain::{AccountId, ItemPath, TaskId, TenantId};
use embedded::{FsObjectStore, SqliteCatalog};
use ports::{catalog_keys, Catalog, Condition, Record};
use proptest::prelude::*;
use proptest::sample::Index;
use std::collections::{HashMap, HashSet};
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use tempfile::TempDir;
use vault::codec::Dict;
use vault::{
    AccountVault, BlobId, BlobKind, BlobRef, Entry, EntryKind, Node, SnapshotRecord, Vault,
    SMALL_ITEM,
};

const TENANT: &str = "acme";
const TASK: &str = "files";
const KEY: [u8; 32] = [7; 32];
const MIB: usize = 1024 * 1024;
/// Cases per property in an ordinary test run.
const DEFAULT_CASES: u32 = 1000;

fn cases() -> u32 {
    std::env::var("LIFEBOAT_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// A dictionary trained once for the whole run, offered to the vaults of the cases that
/// use one (training per case would cost more than the case).
fn dictionary() -> Dict {
    static D: OnceLock<Dict> = OnceLock::new();
    D.get_or_init(|| {
        let samples: Vec<Vec<u8>> = (0..600)
            .map(|i| text_bytes(300 + i * 7, i as u64))
            .collect();
        let sizes: Vec<usize> = samples.iter().map(Vec::len).collect();
        Dict::train(&samples.concat(), &sizes, 16 * 1024).expect("a dictionary")
    })
    .clone()
}

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// A vault over a fresh object directory and catalog.
struct Fixture {
    dir: TempDir,
    store: Arc<FsObjectStore>,
    catalog: Arc<SqliteCatalog>,
    vault: Vault,
}

impl Fixture {
    async fn with_dict(dict: bool) -> Self {
        let fx = Self::new();
        if dict {
            fx.vault
                .offer_dict(dictionary())
                .await
                .expect("dictionary stored");
        }
        fx
    }

    fn av(&self) -> AccountVault {
        self.vault.account(&account())
    }

    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = Arc::new(FsObjectStore::new(dir.path().join("objects")).expect("store"));
        let catalog = Arc::new(SqliteCatalog::open(dir.path().join("catalog.db")).expect("db"));
        let vault = Self::open(&store, &catalog, TENANT, TASK, &KEY);
        Fixture {
            dir,
            store,
            catalog,
            vault,
        }
    }

    fn open(
        store: &Arc<FsObjectStore>,
        catalog: &Arc<SqliteCatalog>,
        tenant: &str,
        task: &str,
        key: &[u8; 32],
    ) -> Vault {
        Vault::new(
            TenantId::new(tenant).unwrap(),
            TaskId::new(task).unwrap(),
            key,
            store.clone(),
            catalog.clone(),
        )
    }

    /// The directory holding the objects of `tenant`/`task`.
    fn task_dir(&self, tenant: &str, task: &str) -> PathBuf {
        self.dir.path().join("objects/t").join(tenant).join(task)
    }

    /// Every object file of one kind of the fixture's own task, sorted by name.
    fn files(&self, kind: &str) -> Vec<PathBuf> {
        let Ok(dir) = std::fs::read_dir(self.task_dir(TENANT, TASK).join(kind)) else {
            return Vec::new();
        };
        let mut v: Vec<PathBuf> = dir
            .map(|e| e.expect("entry").path())
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect();
        v.sort();
        v
    }

    fn pack_files(&self) -> Vec<PathBuf> {
        self.files(vault::PACK_KIND)
    }
}

fn account() -> AccountId {
    AccountId::new("anna@example.com").unwrap()
}

fn at(day: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_795_000_000 + day * 86_400, 0).unwrap()
}

// ---- generated content ----

/// How one item's bytes are made; the bytes themselves are derived, so that shrinking and
/// failure output deal in a few numbers rather than MiB of data.
#[derive(Clone, Debug)]
enum Spec {
    /// Incompressible bytes.
    Random { len: usize, seed: u64 },
    /// Text-like, highly compressible bytes.
    Text { len: usize, seed: u64 },
    /// Zeros.
    Zeros { len: usize },
    /// The same bytes as an earlier item (index taken modulo the items before it).
    Dup(Index),
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => Just(0usize),
        40 => 1usize..4096,
        24 => 4096usize..300_000,
        // Large items are few: each costs a chunker pass over MiB of data, and a thousand
        // cases must stay a matter of seconds.
        1 => prop_oneof![Just(SMALL_ITEM - 1), Just(SMALL_ITEM), Just(SMALL_ITEM + 1)],
        1 => (SMALL_ITEM + 2)..(SMALL_ITEM + 2 * MIB + 12_345),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        4 => (size(), any::<u64>()).prop_map(|(len, seed)| Spec::Random { len, seed }),
        3 => (size(), any::<u64>()).prop_map(|(len, seed)| Spec::Text { len, seed }),
        1 => size().prop_map(|len| Spec::Zeros { len }),
        2 => any::<Index>().prop_map(Spec::Dup),
    ]
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift(seed | 1);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

fn text_bytes(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "backup", "restore", "snapshot", "vault", "pack", "the", "and",
    ];
    let mut rng = XorShift(seed | 1);
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        let r = rng.next();
        out.extend_from_slice(WORDS[(r % WORDS.len() as u64) as usize].as_bytes());
        out.push(if r & 7 == 0 { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

/// Names and bytes of the items `specs` describe, named `<prefix>-<n>`. A `Dup` may copy
/// an item of `earlier` (another snapshot's items) or of this list.
fn materialise(specs: &[Spec], prefix: &str, earlier: &[(String, Vec<u8>)]) -> Vec<Item> {
    let mut out: Vec<Item> = Vec::new();
    for (n, s) in specs.iter().enumerate() {
        let data = match s {
            Spec::Random { len, seed } => random_bytes(*len, *seed),
            Spec::Text { len, seed } => text_bytes(*len, *seed),
            Spec::Zeros { len } => vec![0; *len],
            Spec::Dup(ix) => {
                let pool = earlier.len() + out.len();
                if pool == 0 {
                    b"first item".to_vec()
                } else {
                    let i = ix.index(pool);
                    if i < earlier.len() {
                        earlier[i].1.clone()
                    } else {
                        out[i - earlier.len()].1.clone()
                    }
                }
            }
        };
        out.push((format!("{prefix}-{n:03}"), data));
    }
    out
}

type Item = (String, Vec<u8>);

/// Where to flip a byte: anywhere, or (so that the small magic, index and trailer are hit
/// often enough) near either end.
#[derive(Clone, Debug)]
enum Pos {
    Anywhere(Index),
    Head(usize),
    FromEnd(usize),
}

/// Writes `items` as one snapshot (small ones with `store_batch` in two batches, large
/// ones with `store_stream`), commits it, and returns the record and each item's content.
async fn write_snapshot(
    av: &AccountVault,
    parent: Option<SnapshotRecord>,
    items: &[Item],
    day: i64,
) -> Result<(SnapshotRecord, Vec<Vec<BlobRef>>), TestCaseError> {
    let mut w = av.writer(parent).await.expect("writer");
    let mut refs: Vec<Vec<BlobRef>> = vec![Vec::new(); items.len()];
    let small: Vec<usize> = (0..items.len())
        .filter(|&i| items[i].1.len() <= SMALL_ITEM)
        .collect();
    let (a, b) = small.split_at(small.len() / 2);
    for part in [a, b] {
        if part.is_empty() {
            continue;
        }
        let got = w
            .store_batch(part.iter().map(|&i| items[i].1.clone()).collect())
            .await
            .expect("store_batch");
        prop_assert_eq!(got.len(), part.len());
        for (&i, r) in part.iter().zip(got) {
            prop_assert_eq!(r.raw_len as usize, items[i].1.len());
            prop_assert_eq!(r.id, av.vault().keys().blob_id(&items[i].1), "content id");
            refs[i] = vec![r];
        }
    }
    for (i, (name, data)) in items.iter().enumerate() {
        if data.len() <= SMALL_ITEM {
            continue;
        }
        let (r, n) = w
            .store_stream(Cursor::new(data.clone()), name.clone())
            .await
            .expect("store_stream");
        prop_assert_eq!(n as usize, data.len());
        prop_assert_eq!(
            r.iter().map(|c| c.raw_len as usize).sum::<usize>(),
            data.len()
        );
        prop_assert!(r
            .iter()
            .all(|c| c.raw_len as usize <= vault::CHUNK_MAX as usize));
        refs[i] = r;
    }
    let mut node = Node::default();
    for ((name, data), content) in items.iter().zip(&refs) {
        let mut e = Entry::new(name.clone().into_bytes(), EntryKind::File);
        e.size = data.len() as u64;
        e.content = content.clone();
        node.entries.push(e);
    }
    let root = w.store_tree(node).await.expect("store_tree");
    let rec = w.commit(root, at(day), None).await.expect("commit");
    Ok((rec, refs))
}

/// Reads every item back through `lookup` and `read_blob` and compares it.
async fn read_back(
    av: &AccountVault,
    rec: &SnapshotRecord,
    items: &[Item],
) -> Result<(), TestCaseError> {
    for (name, data) in items {
        let e = av
            .lookup(&rec.root(), &ItemPath::parse(name.as_bytes()).unwrap())
            .await
            .expect("lookup");
        prop_assert_eq!(e.kind, EntryKind::File);
        prop_assert_eq!(e.size as usize, data.len());
        let mut got = Vec::with_capacity(data.len());
        for r in &e.content {
            got.extend(av.read_blob(r, BlobKind::Data).await.expect("read_blob"));
        }
        prop_assert!(
            got == *data,
            "{name}: read {} bytes that differ from the {} written",
            got.len(),
            data.len()
        );
    }
    Ok(())
}

fn ids(refs: &[Vec<BlobRef>]) -> HashSet<BlobId> {
    refs.iter().flatten().map(|r| r.id).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn anything_written_reads_back_byte_equal(
        first in prop::collection::vec(spec(), 1..8),
        extra in prop::collection::vec(spec(), 0..4),
        dict in any::<bool>(),
    ) {
        rt().block_on(async {
            let fx = Fixture::with_dict(dict).await;
            let av = fx.av();
            let items1 = materialise(&first, "item", &[]);
            let (rec1, refs1) = write_snapshot(&av, None, &items1, 0).await?;
            read_back(&av, &rec1, &items1).await?;
            // One new blob per distinct content (chunk), plus the root node and the side
            // data.
            prop_assert_eq!(rec1.stats.new_blobs, ids(&refs1).len() as u64 + 2);
            prop_assert_eq!(av.latest().await.unwrap(), Some(rec1.clone()));

            // Snapshot 2: the same items again, plus new ones that may repeat old content.
            let added = materialise(&extra, "extra", &items1);
            let items2: Vec<Item> = items1.iter().cloned().chain(added).collect();
            let (rec2, refs2) = write_snapshot(&av, Some(rec1.clone()), &items2, 1).await?;
            prop_assert_eq!(rec2.parent.as_ref(), Some(&rec1.id));
            for (i, r) in refs1.iter().enumerate() {
                prop_assert_eq!(&refs2[i], r, "an unchanged item keeps its stored blobs");
            }
            let old = ids(&refs1);
            let new_contents = ids(&refs2).difference(&old).count() as u64;
            let new_root = u64::from(!extra.is_empty());
            // The side data (no cursor, no errors) is the same as the first one's.
            prop_assert_eq!(rec2.stats.new_blobs, new_contents + new_root);
            if extra.is_empty() {
                prop_assert_eq!(rec2.root(), rec1.root(), "an unchanged tree is reused");
                prop_assert_eq!(rec2.stats.packs_written, 0);
                prop_assert_eq!(rec2.stats.stored_bytes, 0);
            }
            read_back(&av, &rec2, &items2).await?;
            read_back(&av, &rec1, &items1).await?;
            // A fresh handle (nothing cached) reads the same.
            let fresh = Fixture::open(&fx.store, &fx.catalog, TENANT, TASK, &KEY).account(&account());
            read_back(&fresh, &rec2, &items2).await?;
            let all = av.snapshots().await.unwrap();
            prop_assert_eq!(all, vec![rec1, rec2]);
            Ok(())
        })?;
    }

    #[test]
    fn a_flipped_byte_in_any_object_is_detected_never_returned(
        specs in prop::collection::vec(spec(), 1..6),
        dict in any::<bool>(),
        pick in any::<Index>(),
        pos in prop_oneof![
            3 => any::<Index>().prop_map(Pos::Anywhere),
            1 => (0usize..8).prop_map(Pos::Head),
            1 => (1usize..160).prop_map(Pos::FromEnd),
        ],
        mask in 1u8..=255,
    ) {
        rt().block_on(async {
            let fx = Fixture::with_dict(dict).await;
            let av = fx.av();
            let items = materialise(&specs, "item", &[]);
            let (rec, refs) = write_snapshot(&av, None, &items, 0).await?;
            let clean = fx.vault.verify(&[account()], &|_| {}).await.unwrap();
            prop_assert!(clean.is_ok(), "fresh vault damaged: {:?}", clean.damage);
            let index = av.index().await.unwrap();

            // Flip one byte of one object (pack, index segment, dictionary copy), in place.
            let packs = fx.pack_files();
            prop_assert!(packs.len() >= 2, "a data pack and a tree pack");
            let objects: Vec<PathBuf> = packs
                .iter()
                .cloned()
                .chain(fx.files(vault::index::SEGMENT_KIND))
                .chain(fx.files(vault::DICT_KIND))
                .collect();
            let file = objects[pick.index(objects.len())].clone();
            let kind = file.parent().unwrap().file_name().unwrap().to_str().unwrap().to_string();
            let mut bytes = std::fs::read(&file).unwrap();
            let n = bytes.len();
            let at = match pos {
                Pos::Anywhere(ix) => ix.index(n),
                Pos::Head(i) => i.min(n - 1),
                Pos::FromEnd(i) => n - i.min(n),
            };
            // For a pack: the record area lies between the magic and the sealed index,
            // whose length is in the trailer (read before the flip).
            let records = if kind == vault::PACK_KIND {
                let index_len = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
                vault::pack::MAGIC.len()..n - 8 - index_len
            } else {
                0..0
            };
            bytes[at] ^= mask;
            std::fs::write(&file, &bytes).unwrap();
            let name = file.file_name().unwrap().to_str().unwrap().to_string();
            let fresh = || Fixture::open(&fx.store, &fx.catalog, TENANT, TASK, &KEY);

            // (a) verify names the object, and what it affects unless it is a dictionary
            // copy (the other copy stands in for it).
            let report = fresh().verify(&[account()], &|_| {}).await.unwrap();
            prop_assert!(!report.is_ok(), "flip at {at} of {kind}/{name} not reported");
            if kind == vault::DICT_KIND {
                prop_assert!(report.damage.iter().all(|d| d.affects.is_empty()), "{:?}", report.damage);
            } else {
                prop_assert!(report.damage.iter().any(|d| !d.affects.is_empty()), "{:?}", report.damage);
            }

            // Which items a flipped record must make unreadable.
            let pack = vault::Vault::parse_pack_name(&name).map(|(_, p)| p);
            let in_record = |id: &BlobId, kind: BlobKind| {
                index.get(id, kind).is_some_and(|l| {
                    Some(l.pack) == pack
                        && (l.offset as usize..(l.offset + l.len) as usize).contains(&at)
                })
            };
            let root_hit = in_record(&rec.root().id, BlobKind::Tree);
            let mut must_fail: HashSet<usize> = HashSet::new();
            for (i, rs) in refs.iter().enumerate() {
                if root_hit || rs.iter().any(|r| in_record(&r.id, BlobKind::Data)) {
                    must_fail.insert(i);
                }
            }
            if records.contains(&at) {
                let referenced = root_hit
                    || in_record(&BlobRef::from(rec.meta).id, BlobKind::Meta)
                    || !must_fail.is_empty();
                prop_assert!(referenced, "byte {at} is in a record nobody references");
            }

            // (b) every read gives the original bytes or an error, never other bytes.
            let v = fresh().account(&account());
            let mut failed = HashSet::new();
            for (i, (name, data)) in items.iter().enumerate() {
                let got = async {
                    let e = v.lookup(&rec.root(), &ItemPath::parse(name.as_bytes()).unwrap()).await?;
                    let mut got = Vec::new();
                    for r in &e.content {
                        got.extend(v.read_blob(r, BlobKind::Data).await?);
                    }
                    Ok::<_, vault::Error>(got)
                }
                .await;
                match got {
                    Ok(got) => prop_assert!(got == *data, "{name}: wrong bytes returned"),
                    Err(e) => {
                        prop_assert!(e.is_damage(), "{name}: {e}");
                        failed.insert(i);
                    }
                }
            }
            prop_assert!(must_fail.is_subset(&failed), "affected {must_fail:?}, failed {failed:?}");

            // The batched read path (restores) behaves the same.
            let by_id: HashMap<BlobId, u32> =
                refs.iter().flatten().map(|r| (r.id, r.raw_len)).collect();
            let v = fresh().account(&account());
            let mut bad = 0;
            let read = v.read_many(refs.iter().flatten().copied().collect(), BlobKind::Data, |r, got| {
                match got {
                    Ok(b) => {
                        assert_eq!(v.vault().keys().blob_id(&b), r.id);
                        assert_eq!(b.len() as u32, by_id[&r.id]);
                    }
                    Err(e) => {
                        assert!(e.is_damage(), "{e}");
                        bad += 1;
                    }
                }
                Ok(())
            })
            .await;
            match read {
                Ok(()) => {}
                // A damaged index segment fails the read as a whole, as damage.
                Err(e) => prop_assert!(kind == vault::index::SEGMENT_KIND && e.is_damage(), "{e}"),
            }
            let data_hit = refs.iter().flatten().any(|r| in_record(&r.id, BlobKind::Data));
            if records.contains(&at) && data_hit {
                prop_assert!(bad >= 1, "read_many returned the damaged record");
            }
            Ok(())
        })?;
    }
}

/// A record sealed for one tenant and task does not open anywhere else, even under the
/// same data key: not copied to another task, nor another tenant, nor with another key.
#[test]
fn a_record_copied_to_another_task_or_tenant_does_not_open() {
    rt().block_on(async {
        let fx = Fixture::with_dict(true).await;
        let items = vec![
            ("a".to_string(), b"some private bytes".to_vec()),
            ("b".to_string(), text_bytes(2 * MIB, 9)),
            ("c".to_string(), text_bytes(3000, 4)),
        ];
        let (rec, refs) = write_snapshot(&fx.av(), None, &items, 0).await.unwrap();
        let src = fx.task_dir(TENANT, TASK);

        for (tenant, task, key) in [
            (TENANT, "other-task", KEY),
            ("other-tenant", TASK, KEY),
            (TENANT, TASK, [8; 32]),
        ] {
            let v = Fixture::open(&fx.store, &fx.catalog, tenant, task, &key);
            let av = v.account(&account());
            let what = format!("{tenant}/{task}/key {}", key[0]);
            // Copy every object into the other vault's key space (a no-op for the same
            // one), renaming packs and segments to the names the other vault looks for.
            let dst = fx.task_dir(tenant, task);
            let own_tag = fx.av().tag().to_string();
            for kind in [
                vault::PACK_KIND,
                vault::index::SEGMENT_KIND,
                vault::DICT_KIND,
            ] {
                std::fs::create_dir_all(dst.join(kind)).unwrap();
                for f in fx.files(kind) {
                    let name = f.file_name().unwrap().to_str().unwrap();
                    let renamed = name.replacen(&own_tag, av.tag(), 1);
                    if dst != src || renamed != name {
                        std::fs::copy(&f, dst.join(kind).join(renamed)).unwrap();
                    }
                }
            }
            // And the snapshot record into its catalog partition.
            let from =
                catalog_keys::snapshot(fx.vault.tenant(), fx.vault.task(), &account(), &rec.id);
            let to = catalog_keys::snapshot(v.tenant(), v.task(), &account(), &rec.id);
            if from != to {
                let r = fx.catalog.get(&from.pk, &from.sk).await.unwrap().unwrap();
                fx.catalog
                    .put(Record::new(to.pk, to.sk, r.value), Condition::Absent)
                    .await
                    .unwrap();
            }
            for r in refs.iter().flatten() {
                let e = av.read_blob(r, BlobKind::Data).await.expect_err(&what);
                assert!(e.is_damage(), "{what}: {e}");
            }
            let e = av
                .read_blob(&rec.root(), BlobKind::Tree)
                .await
                .expect_err(&what);
            assert!(e.is_damage(), "{what}: {e}");
            let (good, bad) = av.snapshots_checked().await.unwrap();
            assert!(good.is_empty(), "{what}: a foreign record opened");
            assert_eq!(bad.len(), 1, "{what}");
            assert!(av.snapshot(&rec.id).await.is_err(), "{what}");
            let report = v.verify(&[account()], &|_| {}).await.unwrap();
            assert!(!report.is_ok(), "{what}: verify accepted foreign objects");
            assert!(
                report
                    .damage
                    .iter()
                    .any(|d| d.object.contains("catalog record")),
                "{what}: {:?}",
                report.damage
            );
            for p in fx.pack_files() {
                let hex = p
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .split_once('-')
                    .unwrap()
                    .1
                    .to_string();
                assert!(
                    report.damage.iter().any(|d| d.object.contains(&hex)),
                    "{what}: pack {hex} not reported"
                );
            }
        }
        // The original still reads.
        read_back(&fx.av(), &rec, &items).await.unwrap();
    });
}
