//! Prune and repack as a user meets them: packs moved and deleted while every snapshot
//! restores byte for byte, what crashed runs left deleted after the grace period, and
//! backups running beside a prune that either record a whole snapshot or nothing.

use bytes::Bytes;
use chrono::{Duration, Utc};
use domain::TenantId;
use engine::{Engine, NoProgress, PruneOptions, RestoreOptions, SnapshotRecord, TaskRecord};
use lifeboat_tests::{backup, folder_task, random_bytes, read_tree, write, TestEnv, Tree};
use ports::EncryptionContext;
use vault::{BlobKind, Entry, EntryKind, Node};

async fn open_vault(env: &TestEnv, task: &TaskRecord) -> vault::Vault {
    let tenant = TenantId::new("acme").unwrap();
    let ctx = EncryptionContext::for_task(&tenant, &task.name);
    let key = env
        .ports
        .keys
        .decrypt_data_key(&task.wrapped_key, &ctx)
        .await
        .unwrap();
    vault::Vault::new(
        tenant,
        task.name.clone(),
        &key,
        env.store.clone(),
        env.catalog.clone(),
    )
}

fn packs_dir(env: &TestEnv, task: &TaskRecord) -> std::path::PathBuf {
    env.dir
        .path()
        .join("objects/t/acme")
        .join(task.name.as_str())
        .join(vault::PACK_KIND)
}

fn pack_names(env: &TestEnv, task: &TaskRecord) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(packs_dir(env, task))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                // Uploads in progress are written under a hidden temporary name.
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

async fn restored(env: &TestEnv, eng: &Engine, task: &TaskRecord, snap: &SnapshotRecord) -> Tree {
    let out = env.folder(&format!("out-{}", snap.id));
    let r = eng
        .restore_to_dir(task, snap, &out, &RestoreOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let t = read_tree(&r.target);
    std::fs::remove_dir_all(&out).unwrap();
    t
}

fn opts(now: chrono::DateTime<Utc>, grace: Duration, repack: bool) -> PruneOptions {
    PruneOptions { now, grace, repack }
}

/// Six days of small changes leave a dozen small packs; a repack with no grace merges
/// them into a few and deletes the old ones, and every snapshot restores byte for byte.
#[tokio::test(flavor = "multi_thread")]
async fn repack_merges_small_packs_and_every_snapshot_restores() {
    let env = TestEnv::new();
    let eng = env.engine("acme");
    let src = env.folder("src");
    let task = {
        write(&src, b"base/big.bin", &random_bytes(300_000, 1));
        folder_task(&eng, "files", &src).await
    };
    let mut days: Vec<(SnapshotRecord, Tree)> = Vec::new();
    for day in 0..6u64 {
        for i in 0..20u64 {
            let name = format!("d{day}/note-{i}.txt");
            write(
                &src,
                name.as_bytes(),
                &random_bytes(2_000 + i as usize * 50, day * 100 + i),
            );
        }
        if day > 0 {
            std::fs::remove_file(src.join(format!("d{}/note-3.txt", day - 1))).unwrap();
        }
        let s = backup(&eng, &task).await;
        days.push((s, read_tree(&src)));
        env.advance(Duration::days(1));
    }
    let before = pack_names(&env, &task);
    assert!(before.len() >= 12, "{before:?}");

    let report = eng
        .prune(
            &task,
            &opts(Utc::now(), Duration::zero(), true),
            &NoProgress,
        )
        .await
        .unwrap();
    let t = &report.total;
    assert!(t.repacked >= 10, "{t:?}");
    assert!(t.moved_blobs > 0 && t.new_packs >= 1, "{t:?}");
    assert_eq!(t.deleted, t.repacked, "{t:?}");
    let after = pack_names(&env, &task);
    assert_eq!(
        after.len(),
        before.len() - t.deleted as usize + t.new_packs as usize
    );
    assert!(after.len() <= 4, "{after:?}");
    for old in &before[..] {
        if report.total.deleted > 0 && !after.contains(old) {
            assert!(!packs_dir(&env, &task).join(old).exists());
        }
    }

    let v = eng.verify(&task, &NoProgress).await.unwrap();
    assert!(v.is_ok(), "{:?}", v.damage);
    for (snap, tree) in &days {
        assert_eq!(
            &restored(&env, &eng, &task, snap).await,
            tree,
            "{}",
            snap.id
        );
    }
    // A fresh handle (no cached index) finds the moved blobs too, and a second repack has
    // nothing left to merge.
    let again = eng
        .prune(
            &task,
            &opts(Utc::now(), Duration::zero(), true),
            &NoProgress,
        )
        .await
        .unwrap();
    assert_eq!(again.total.repacked, 0, "{:?}", again.total);
    assert_eq!(again.total.deleted, 0, "{:?}", again.total);
    // The next backup after a repack reuses what moved.
    write(&src, b"d5/new.txt", b"one more\n");
    let s = backup(&eng, &task).await;
    assert_eq!(s.stats.items_read, 1);
    assert_eq!(restored(&env, &eng, &task, &s).await, read_tree(&src));
}

/// Packs a crashed backup left are condemned once older than the grace period and deleted
/// by a prune after it; a backup running meanwhile, which would have reused their blobs,
/// stores the content again and commits a whole snapshot; its own packs, condemned while
/// it ran, are revived once it has committed.
#[tokio::test(flavor = "multi_thread")]
async fn prune_reclaims_crashed_uploads_and_a_backup_beside_it_stays_whole() {
    let env = TestEnv::new();
    let eng = env.engine("acme");
    let src = env.folder("src");
    write(&src, b"a.txt", b"day one\n");
    let task = folder_task(&eng, "files", &src).await;
    let s1 = backup(&eng, &task).await;
    let day1 = read_tree(&src);
    env.advance(Duration::days(1));

    // Day 2: 40 MiB of new files; the first attempt dies once two packs are out.
    for i in 0..5u64 {
        write(
            &src,
            format!("big/{i}.bin").as_bytes(),
            &random_bytes(8 << 20, 100 + 2 * i),
        );
    }
    let base = pack_names(&env, &task).len();
    crash_backup_after_packs(&env, &eng, &task, base + 2).await;
    let garbage: Vec<String> = pack_names(&env, &task);
    assert!(garbage.len() >= base + 2);

    // Indexed packs are not condemned before they are older than the grace period (an
    // upload killed before its index segment is condemned at once, and waits as well);
    // nothing is deleted.
    let first = eng
        .prune(
            &task,
            &opts(Utc::now(), Duration::days(1), false),
            &NoProgress,
        )
        .await
        .unwrap();
    assert_eq!(first.total.deleted, 0);
    let ix = open_vault(&env, &task)
        .await
        .account(&s1.account)
        .index()
        .await
        .unwrap();
    for name in pack_names(&env, &task) {
        let p = vault::PackId::from_hex(name.split_once('-').unwrap().1).unwrap();
        if ix.born(&p).is_some() {
            assert_eq!(ix.condemned(&p), None, "{name} is indexed and young");
        } else {
            assert!(ix.condemned(&p).is_some(), "{name} is not indexed");
        }
    }
    // A day later (the prune is told the time), the crashed uploads are condemned.
    let day = Utc::now() + Duration::days(1) + Duration::minutes(1);
    let marked = eng
        .prune(&task, &opts(day, Duration::days(1), false), &NoProgress)
        .await
        .unwrap();
    assert!(
        marked.total.condemned + first.total.condemned >= 2,
        "{:?}",
        marked.total
    );
    // What the first prune condemned has waited its day: it goes now.
    assert_eq!(marked.total.deleted, first.total.condemned);

    // A backup runs while prunes two days on sweep the condemned packs and condemn
    // whatever is dead and older than a day, including its own uploads so far.
    let later = day + Duration::days(2);
    let runner = {
        let (eng, task) = (eng.clone(), task.clone());
        tokio::spawn(async move { backup(&eng, &task).await })
    };
    let mut sweeps = 0;
    while !runner.is_finished() {
        let r = eng
            .prune(&task, &opts(later, Duration::days(1), false), &NoProgress)
            .await
            .unwrap();
        sweeps += 1;
        assert!(r.total.held_back.is_none());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let s2 = runner.await.unwrap();
    assert!(sweeps >= 1);
    // The condemned content was not reused: it was stored again.
    assert!(s2.stats.new_bytes >= 40 << 20, "{:?}", s2.stats);

    let after = eng
        .prune(&task, &opts(later, Duration::days(1), false), &NoProgress)
        .await
        .unwrap();
    assert_eq!(after.total.condemned, 0, "{:?}", after.total);
    let v = eng.verify(&task, &NoProgress).await.unwrap();
    assert!(v.is_ok(), "{:?}", v.damage);
    assert_eq!(restored(&env, &eng, &task, &s1).await, day1);
    assert_eq!(restored(&env, &eng, &task, &s2).await, read_tree(&src));
    // The crashed run's packs are gone, the backup's are all kept.
    let now = pack_names(&env, &task);
    let crashed: Vec<&String> = garbage[..].iter().filter(|p| !now.contains(p)).collect();
    assert!(crashed.len() >= 2, "{crashed:?}");
}

/// Runs a backup and kills it (drops the run) once `packs` pack objects exist.
async fn crash_backup_after_packs(env: &TestEnv, eng: &Engine, task: &TaskRecord, packs: usize) {
    let run = {
        let (eng, task) = (eng.clone(), task.clone());
        tokio::spawn(async move { backup(&eng, &task).await })
    };
    loop {
        if pack_names(env, task).len() >= packs {
            run.abort();
            let _ = run.await;
            // Uploads already started may still land (as after a real crash).
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            return;
        }
        assert!(
            !run.is_finished(),
            "the backup finished before it could be killed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// A writer that reused blobs of a crashed run's packs, which a prune with no grace then
/// deleted under it, records nothing: its commit fails, the earlier snapshots stay whole,
/// and the next backup stores the content again. With a grace, the same writer commits
/// and the prune after revives the packs it used.
#[tokio::test(flavor = "multi_thread")]
async fn a_writer_whose_reused_packs_were_pruned_records_nothing() {
    let env = TestEnv::new();
    let eng = env.engine("acme");
    let src = env.folder("src");
    write(&src, b"a.txt", b"day one\n");
    let task = folder_task(&eng, "files", &src).await;
    let s1 = backup(&eng, &task).await;
    let v = open_vault(&env, &task).await;
    let av = v.account(&s1.account);

    let items: Vec<Bytes> = (0..3u64)
        .map(|i| Bytes::from(random_bytes(3 << 20, 900 + 2 * i)))
        .collect();
    for (grace, commits) in [(Duration::zero(), false), (Duration::days(1), true)] {
        // A run that uploads the items and dies: its packs are indexed, nothing names them.
        let stored = store_and_crash(&v, &s1, &items).await;
        let fresh = v.account(&s1.account);
        let parent = fresh.latest().await.unwrap();
        let mut w = fresh.writer(parent).await.unwrap();
        let refs = w.store_batch(items.clone()).await.unwrap();
        assert_eq!(refs, stored, "the crashed run's blobs are reused");
        assert_eq!(w.stats().new_blobs, 0);
        let mut node = Node::default();
        for (i, r) in refs.iter().enumerate() {
            let mut e = Entry::new(format!("f{i}").into_bytes(), EntryKind::File);
            e.size = r.raw_len as u64;
            e.content = vec![*r];
            node.entries.push(e);
        }
        let root = w.store_tree(node).await.unwrap();
        // The prune: the crashed run's packs are dead (no snapshot names them yet).
        let report = av
            .prune(&opts(Utc::now() + Duration::days(2), grace, false))
            .await
            .unwrap();
        assert!(report.condemned >= 1, "{report:?}");
        let got = w.commit(root, Utc::now(), None).await;
        if commits {
            let snap = got.expect("a grace leaves time to commit");
            let r = av
                .prune(&opts(Utc::now() + Duration::days(2), grace, false))
                .await
                .unwrap();
            assert!(r.revived >= 1, "{r:?}");
            assert_eq!(r.deleted, 0, "{r:?}");
            let back = fresh
                .lookup(&snap.root(), &domain::ItemPath::parse(b"f1").unwrap())
                .await
                .unwrap();
            let bytes = fresh
                .read_blob(&back.content[0], BlobKind::Data)
                .await
                .unwrap();
            assert_eq!(bytes, items[1]);
        } else {
            let err = got.expect_err("the packs it used are gone");
            assert!(err.to_string().contains("pruned while it ran"), "{err}");
            assert_eq!(fresh.latest().await.unwrap().unwrap().id, s1.id);
        }
        let rep = eng.verify(&task, &NoProgress).await.unwrap();
        assert!(rep.is_ok(), "{:?}", rep.damage);
    }
}

/// Stores `items` through a writer that is then dropped without a commit, once its packs
/// are durable; returns the references.
async fn store_and_crash(
    v: &vault::Vault,
    parent: &SnapshotRecord,
    items: &[Bytes],
) -> Vec<vault::BlobRef> {
    let av = v.account(&parent.account);
    let mut w = av.writer(Some(parent.clone())).await.unwrap();
    let refs = w.store_batch(items.to_vec()).await.unwrap();
    // A checkpoint makes the uploads durable; removing it leaves them unreferenced.
    let mut node = Node::default();
    node.entries
        .push(Entry::new(b"x".to_vec(), EntryKind::File));
    let root = w.store_tree(node).await.unwrap();
    w.checkpoint(root, vault::TreeTotals::default(), None, Utc::now(), 1)
        .await
        .unwrap();
    let key = ports::catalog_keys::checkpoint(v.tenant(), v.task(), &parent.account);
    v.catalog()
        .delete(&key.pk, &key.sk, ports::Condition::None)
        .await
        .unwrap();
    refs
}
