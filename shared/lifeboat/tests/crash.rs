//! Crash safety: `lifeboat backup` killed with SIGKILL at many points of a backup that has
//! real work to do. After every kill the home verifies clean, no half-made snapshot is
//! visible, and the earlier snapshot restores byte for byte; a rerun then completes, reusing
//! the packs that the killed runs had already written.

mod common;

use common::kill::*;
use common::*;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Day 1: ~200 MiB. 2400 small text files in 40 folders, 20 files of 1.5-3 MiB, 5 of 25 MiB.
fn day1(src: &Path) -> u64 {
    let mut total = 0;
    let mut put = |rel: String, data: Vec<u8>| {
        total += data.len() as u64;
        write(&src.join(rel), &data);
    };
    for d in 0..40 {
        for f in 0..60 {
            let seed = format!("note {d} {f}");
            let len = 256
                + random_bytes(&seed, 2)
                    .iter()
                    .map(|b| *b as usize)
                    .sum::<usize>()
                    * 48;
            put(
                format!("docs/d{d:02}/note-{f:03}.txt"),
                text_bytes(&seed, len),
            );
        }
    }
    for i in 0..20 {
        put(
            format!("media/m{i:02}.bin"),
            random_bytes(&format!("media {i}"), 3 * MIB / 2 + i * 80 * KIB),
        );
    }
    for i in 0..5 {
        put(
            format!("big/b{i}.dat"),
            random_bytes(&format!("big {i}"), 25 * MIB),
        );
    }
    total
}

/// Day 2: ~120 MiB of new data. Four large files rewritten, one changed in the middle, one
/// appended to, 300 small files edited, a folder removed, a folder of new files added.
fn day2(src: &Path) -> u64 {
    let mut new = 0u64;
    for i in [0, 1, 3, 4] {
        let data = random_bytes(&format!("big {i} day 2"), 25 * MIB);
        new += data.len() as u64;
        write(&src.join(format!("big/b{i}.dat")), &data);
    }
    let f = OpenOptions::new()
        .write(true)
        .open(src.join("big/b2.dat"))
        .unwrap();
    f.write_all_at(&random_bytes("b2 patch", MIB), 10 * MIB as u64)
        .unwrap();
    new += MIB as u64;
    append(
        &src.join("media/m03.bin"),
        &random_bytes("m03 tail", 300 * KIB),
    );
    new += 300 * KIB as u64;
    for d in 0..5 {
        for f in 0..60 {
            let data = text_bytes(&format!("note {d} {f} day 2"), 8 * KIB + f * 64);
            new += data.len() as u64;
            write(&src.join(format!("docs/d{d:02}/note-{f:03}.txt")), &data);
        }
    }
    fs::remove_dir_all(src.join("docs/d39")).unwrap();
    for f in 0..200 {
        let data = text_bytes(&format!("new {f}"), 4 * KIB + f * 32);
        new += data.len() as u64;
        write(&src.join(format!("new/n{f:03}.txt")), &data);
    }
    let video = random_bytes("video", 15 * MIB);
    new += video.len() as u64;
    write(&src.join("new/video.bin"), &video);
    new
}

/// More work after a killed run managed to commit: two large files rewritten and 100
/// small ones edited (~50 MiB, nearly all incompressible). Returns the random bytes written.
fn more_work(src: &Path, round: usize) -> u64 {
    let mut new = 0u64;
    for i in [round % 5, (round + 2) % 5] {
        let data = random_bytes(&format!("big {i} round {round}"), 25 * MIB);
        new += data.len() as u64;
        write(&src.join(format!("big/b{i}.dat")), &data);
    }
    for f in 0..100 {
        let d = 10 + f % 20;
        let data = text_bytes(&format!("note {d} {f} round {round}"), 6 * KIB);
        write(&src.join(format!("docs/d{d:02}/note-{f:03}.txt")), &data);
    }
    new
}

/// Pack files in the object store (not the `.tmp-…` files an interrupted put leaves).
/// Counted by name only, nothing read: cheap enough to watch a running backup with.
fn count_packs(objects: &Path) -> usize {
    let Ok(rd) = fs::read_dir(objects) else {
        return 0;
    };
    let mut n = 0;
    for ent in rd.flatten() {
        let Ok(ft) = ent.file_type() else { continue };
        if ft.is_dir() {
            n += count_packs(&ent.path());
        } else if ft.is_file() && !ent.file_name().as_encoded_bytes().starts_with(b".") {
            n += 1;
        }
    }
    n
}

/// `lifeboat backup t`, to be killed.
fn backup(lb: &Lifeboat) -> Command {
    lb.command(["backup", "t", "--json"])
}

#[test]
fn backups_killed_at_any_point_leave_a_consistent_home() {
    let start = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let lb = Lifeboat::new(dir.path().join("home"));
    let objects = lb.home.join("objects");

    let t = Instant::now();
    let day1_bytes = day1(&src);
    let day1_tree = tree(&src);
    println!(
        "day 1: {} MiB in {} items, generated in {:.1?}",
        day1_bytes / MIB as u64,
        day1_tree.len(),
        t.elapsed()
    );

    lb.add_folder_task("t", &src);
    let t = Instant::now();
    let snap1 = lb.backup_json("t", 0);
    println!("backup 1: {:.1?}", t.elapsed());
    let id1 = snap1["id"].as_str().unwrap().to_string();

    let t = Instant::now();
    let day2_new = day2(&src);
    let mut current = tree(&src);
    println!(
        "day 2: {} MiB new, generated in {:.1?}",
        day2_new / MIB as u64,
        t.elapsed()
    );

    // Time an uninterrupted day-2 backup on a copy of the home, to place the kills.
    let probe = dir.path().join("probe-home");
    copy_dir(&lb.home, &probe);
    let t = Instant::now();
    let full = Lifeboat::new(&probe).backup_json("t", 0);
    let full_time = t.elapsed();
    let full_stored = full["stats"]["stored_bytes"].as_u64().unwrap();
    fs::remove_dir_all(&probe).unwrap();
    println!(
        "uninterrupted day-2 backup (on a copy): {full_time:.2?}, stored {} KiB",
        full_stored / KIB as u64
    );

    // What a rerun would store without reuse: the uninterrupted backup's stored bytes for
    // day 2; after a further change, the random bytes of that change (a lower bound).
    let mut reference_stored = full_stored;
    let mut packs_at_last_commit = count_packs(&objects);
    let mut expected: Vec<String> = vec![id1.clone()];

    // Kills from 20 ms to 60% of the uninterrupted time, denser early: every killed run
    // leaves packs that the next one reuses, so later runs get further in the same time
    // (and the last ones commit; a later delay would only time runs that finish).
    const KILLS: usize = 20;
    let delays = kill_delays(KILLS, Duration::from_millis(20), full_time, 0.6);
    let mut attempts = Vec::new();
    for (i, delay) in delays.into_iter().enumerate() {
        let a = kill_after(backup(&lb), delay);

        let v = lb.run(["verify"]);
        assert_eq!(
            v.code,
            Some(0),
            "verify after a kill at {delay:?}:\n{}",
            v.show()
        );

        // Only whole snapshots are visible: the ones before, plus at most this run's.
        let ids = lb.snapshot_ids("t");
        assert_eq!(
            ids[..expected.len().min(ids.len())],
            expected[..],
            "earlier snapshots are intact"
        );
        let outcome = match ids.len() - expected.len() {
            0 => {
                assert!(!a.success, "a run exited 0 without a snapshot: {a:?}");
                "killed mid-backup"
            }
            1 => {
                // This run got to its commit: its snapshot must be whole.
                let id = ids.last().unwrap().clone();
                let out = dir.path().join(format!("check-{i}"));
                lb.ok(["restore", "t", "--snapshot", &id, "--to", ps(&out)]);
                assert_tree_is(&current, "the source", &only_restore_folder(&out));
                fs::remove_dir_all(&out).unwrap();
                expected.push(id);
                // Give the next runs work to be killed in again.
                reference_stored = more_work(&src, i);
                current = tree(&src);
                packs_at_last_commit = count_packs(&objects);
                if a.finished_first {
                    "had already finished (source changed again)"
                } else {
                    "killed after its commit (source changed again)"
                }
            }
            n => panic!("{n} new snapshots from one run: {ids:?}"),
        };

        if i % 4 == 0 || i == KILLS - 1 {
            let out = dir.path().join(format!("restore-{i}"));
            lb.ok(["restore", "t", "--snapshot", &id1, "--to", ps(&out)]);
            assert_tree_is(&day1_tree, "the day-1 source", &only_restore_folder(&out));
            fs::remove_dir_all(&out).unwrap();
        }
        println!(
            "kill {i:2} at {:>9.1?}: {outcome}; {} packs; {:.1?} so far",
            a.delay,
            count_packs(&objects),
            start.elapsed()
        );
        attempts.push(a);
    }

    // The timed kills may all have come before any pack was out, or the last run may have
    // committed: then one more run is killed once it has written three packs since the last
    // commit, so that the rerun below always has uploaded packs to reuse.
    let mut extra = 0;
    while count_packs(&objects) < packs_at_last_commit + 3 {
        extra += 1;
        assert!(
            extra <= 3,
            "no run could be killed after three packs: {attempts:?}"
        );
        let a = kill_when(backup(&lb), || {
            count_packs(&objects) >= packs_at_last_commit + 3
        });
        let v = lb.run(["verify"]);
        assert_eq!(v.code, Some(0), "verify after {a:?}:\n{}", v.show());
        let ids = lb.snapshot_ids("t");
        assert_eq!(
            ids[..expected.len()],
            expected[..],
            "earlier snapshots are intact"
        );
        match ids.len() - expected.len() {
            0 => assert!(!a.success, "a run exited 0 without a snapshot: {a:?}"),
            1 => {
                // It committed before the kill: its snapshot is whole; more work, and again.
                let id = ids.last().unwrap().clone();
                let out = dir.path().join(format!("check-extra-{extra}"));
                lb.ok(["restore", "t", "--snapshot", &id, "--to", ps(&out)]);
                assert_tree_is(&current, "the source", &only_restore_folder(&out));
                fs::remove_dir_all(&out).unwrap();
                expected.push(id);
                reference_stored = more_work(&src, KILLS + extra);
                current = tree(&src);
                packs_at_last_commit = count_packs(&objects);
            }
            n => panic!("{n} new snapshots from one run: {ids:?}"),
        }
        println!(
            "extra kill {extra} at {:>9.1?}: {} packs",
            a.delay,
            count_packs(&objects)
        );
        attempts.push(a);
    }
    let packs_before_rerun = count_packs(&objects);

    // The rerun completes and captures the source exactly.
    let rerun = lb.backup_json("t", 0);
    let rerun_stored = rerun["stats"]["stored_bytes"].as_u64().unwrap();
    let ids = lb.snapshot_ids("t");
    assert_eq!(ids.len(), expected.len() + 1);
    assert_eq!(ids[..expected.len()], expected[..]);
    assert_eq!(ids.last().unwrap(), rerun["id"].as_str().unwrap());
    let out = dir.path().join("final");
    lb.ok(["restore", "t", "--snapshot", "latest", "--to", ps(&out)]);
    assert_tree_is(&current, "the source", &only_restore_folder(&out));
    fs::remove_dir_all(&out).unwrap();
    lb.ok(["verify"]);

    let left = packs_before_rerun - packs_at_last_commit;
    println!(
        "rerun stored {} KiB (without reuse: {} KiB); killed runs since the last commit left {left} packs",
        rerun_stored / KIB as u64,
        reference_stored / KIB as u64,
    );
    // Killed runs that got several packs out (so at least some were journalled as pending)
    // save the rerun that work.
    assert!(left >= 3, "the killed runs left {left} packs");
    assert!(
        rerun_stored < reference_stored,
        "the rerun stored {rerun_stored} bytes, no less than without reuse \
         ({reference_stored}): the killed runs' pending packs were not reused"
    );
    let killed = attempts.iter().filter(|a| a.killed()).count();
    assert!(
        killed >= KILLS / 3,
        "most runs were really killed: {attempts:?}"
    );
    println!(
        "{killed} of {} runs killed; crash test: {:.1?} in all",
        attempts.len(),
        start.elapsed()
    );
}
