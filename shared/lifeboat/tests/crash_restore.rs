//! Crash safety of restores to a folder: `lifeboat restore --to DIR` killed with SIGKILL at
//! many points of a restore that has real work to do (small files in folders, files of a
//! few MiB, larger ones, and the odd ones). After every kill, whatever is under its own
//! name is whole and the source's (a file never short or zero-filled: what is not whole is
//! under a partial name only), the home verifies clean, and a rerun restores the source
//! exactly, both into a new restore folder and in place into the killed one, leaving no
//! partial file. Then restores of the older snapshot, in place over the newer files, are
//! killed: every file is one version or the other, whole. Last, a backup of a folder that
//! holds a killed restore's leftovers does not take its partial files.

mod common;

use common::kill::*;
use common::*;
use engine::partial::partial_of;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

type Tree = BTreeMap<Vec<u8>, Item>;

/// Day 1: ~50 MiB. 800 small text files in 20 folders (a third of them one level
/// deeper), 12 files of 1-2 MiB, 2 of 12 MiB, and the odd ones: empty files, a read-only
/// file, a script, a link, a name that is not UTF-8, a name of 240 bytes (its partial name
/// is shortened).
fn day1(src: &Path) -> u64 {
    let mut total = 0;
    let mut put = |rel: &[u8], data: Vec<u8>| {
        total += data.len() as u64;
        write(&src.join(OsStr::from_bytes(rel)), &data);
    };
    for d in 0..20 {
        let folder = if d % 3 == 0 {
            format!("docs/d{d:02}/inner")
        } else {
            format!("docs/d{d:02}")
        };
        for f in 0..40 {
            let seed = format!("note {d} {f}");
            let len = 256
                + random_bytes(&seed, 2)
                    .iter()
                    .map(|b| *b as usize)
                    .sum::<usize>()
                    * 48;
            put(
                format!("{folder}/note-{f:03}.txt").as_bytes(),
                text_bytes(&seed, len),
            );
        }
    }
    for i in 0..12 {
        put(
            format!("media/m{i:02}.bin").as_bytes(),
            random_bytes(&format!("media {i}"), MIB + i * 80 * KIB),
        );
    }
    for i in 0..2 {
        put(
            format!("big/b{i}.dat").as_bytes(),
            random_bytes(&format!("big {i}"), 12 * MIB),
        );
    }
    put(b"odd/empty-1", Vec::new());
    put(b"odd/empty-2", Vec::new());
    put(b"odd/caf\xe9.txt", text_bytes("latin-1", 3000));
    let long = format!("odd/{}.txt", "n".repeat(236));
    put(long.as_bytes(), random_bytes("long", 300 * KIB));
    put(b"odd/readonly.txt", text_bytes("readonly", 5000));
    chmod(&src.join("odd/readonly.txt"), 0o444);
    put(b"odd/run.sh", b"#!/bin/sh\necho restored\n".to_vec());
    chmod(&src.join("odd/run.sh"), 0o755);
    std::os::unix::fs::symlink("../media/m00.bin", src.join("odd/link")).unwrap();
    total
}

/// Day 2: a large file rewritten, one changed in the middle, a file appended to, 120
/// small files edited, a folder removed, a folder of new files added.
fn day2(src: &Path) {
    write(
        &src.join("big/b0.dat"),
        &random_bytes("big 0 day 2", 12 * MIB),
    );
    let f = OpenOptions::new()
        .write(true)
        .open(src.join("big/b1.dat"))
        .unwrap();
    f.write_all_at(&random_bytes("b1 patch", MIB), 5 * MIB as u64)
        .unwrap();
    append(
        &src.join("media/m03.bin"),
        &random_bytes("m03 tail", 200 * KIB),
    );
    for d in 1..4 {
        for f in 0..40 {
            let data = text_bytes(&format!("note {d} {f} day 2"), 6 * KIB + f * 64);
            write(&src.join(format!("docs/d{d:02}/note-{f:03}.txt")), &data);
        }
    }
    fs::remove_dir_all(src.join("docs/d19")).unwrap();
    for f in 0..60 {
        let data = text_bytes(&format!("new {f}"), 4 * KIB + f * 32);
        write(&src.join(format!("new/n{f:03}.txt")), &data);
    }
}

/// `restore t --snapshot SNAP --to TO [EXTRA…]`.
fn restore(snap: &str, to: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["restore", "t", "--snapshot", snap, "--to", ps(to)]
        .map(String::from)
        .into();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// What a killed restore left.
#[derive(Debug, Default)]
struct Left {
    /// Files and links under their own names.
    whole: usize,
    /// Partial files.
    partial: usize,
}

/// Checks what a killed restore of `restored` left in `dir`: a file or link under its own
/// name equals its version in one of `versions` (mode included); a folder is one of theirs;
/// anything else is a partial file of a file or link `restored` has in the same folder.
fn check_killed(restored: &Tree, versions: &[&Tree], dir: &Path) -> Left {
    let mut left = Left::default();
    let mut problems = Vec::new();
    for (path, item) in tree(dir) {
        let (parent, name) = match path.iter().rposition(|b| *b == b'/') {
            Some(i) => (&path[..i + 1], &path[i + 1..]),
            None => (&path[..0], &path[..]),
        };
        let shown = String::from_utf8_lossy(&path).into_owned();
        if let Some(stem) = partial_of(name) {
            left.partial += 1;
            let of_a_file = restored.iter().any(|(p, i)| {
                !matches!(i, Item::Dir { .. })
                    && p.strip_prefix(parent)
                        .is_some_and(|n| !n.contains(&b'/') && n.starts_with(stem))
            });
            if !of_a_file {
                problems.push(format!("a partial file of no file restored: {shown}"));
            }
            continue;
        }
        let ours = versions.iter().filter_map(|t| t.get(&path));
        let fits = match item {
            Item::Dir { .. } => ours.into_iter().any(|v| matches!(v, Item::Dir { .. })),
            _ => {
                left.whole += 1;
                ours.into_iter().any(|v| *v == item)
            }
        };
        if !fits {
            let what = match item {
                Item::File { len, mode, .. } => format!("a file of {len} bytes, mode {mode:o}"),
                other => format!("{other:?}"),
            };
            problems.push(format!(
                "under its name but no version of it: {shown}: {what}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "a killed restore left in {} {} wrong items; first ones:\n{}",
        dir.display(),
        problems.len(),
        problems[..problems.len().min(15)].join("\n")
    );
    left
}

/// Files and partial files under `dir`, by name alone (nothing read, nothing statted):
/// cheap enough to watch a running restore with.
fn count_names(dir: &Path) -> Left {
    let mut left = Left::default();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for ent in rd.flatten() {
            match ent.file_type() {
                Ok(t) if t.is_dir() => dirs.push(ent.path()),
                Ok(_) if partial_of(ent.file_name().as_bytes()).is_some() => left.partial += 1,
                Ok(_) => left.whole += 1,
                Err(_) => {}
            }
        }
    }
    left
}

/// The restore folder being written in `out`, if there is one yet.
fn restore_folder(out: &Path) -> Option<PathBuf> {
    restore_folders(out).pop()
}

/// When a restore is killed.
enum Kill {
    After(Duration),
    /// Once a partial file shows in `big/`.
    LargeFileHalfWritten,
    /// Once more than half of the files and links have their names.
    HalfTheFilesInPlace,
}

/// The home verifies clean.
fn verify(lb: &Lifeboat, after: &str) {
    let v = lb.run(["verify"]);
    assert_eq!(v.code, Some(0), "verify after {after}:\n{}", v.show());
}

/// How the in-place rerun into a killed restore's folder runs, by kill: what is there is
/// skipped (the resume) or replaced, once in four waiting for the disk (a sync of the
/// whole file system: on a busy disk it takes seconds).
fn in_place_args(i: usize) -> &'static [&'static str] {
    match i % 4 {
        0 | 2 => &["--in-place"],
        1 => &["--in-place", "--on-conflict", "replace", "--sync"],
        _ => &["--in-place", "--on-conflict", "replace"],
    }
}

#[test]
fn restores_killed_at_any_point_leave_only_whole_files_and_rerun_clean() {
    let start = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let lb = Lifeboat::new(dir.path().join("home"));

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
    let id1 = lb.backup_json("t", 0)["id"].as_str().unwrap().to_string();
    println!("backup 1: {:.1?}", t.elapsed());

    // Time an uninterrupted restore, to place the kills: the faster of two, so that on a
    // noisy machine the late kills still find runs to kill.
    let mut full_time = Duration::MAX;
    for run in 0..2 {
        let probe = dir.path().join(format!("probe-{run}"));
        let t = Instant::now();
        lb.ok(restore(&id1, &probe, &[]));
        full_time = full_time.min(t.elapsed());
        assert_tree_is(&day1_tree, "the source", &only_restore_folder(&probe));
        fs::remove_dir_all(&probe).unwrap();
    }
    println!("uninterrupted restore: {full_time:.2?}");

    // Kills from 10 ms to 95% of the uninterrupted time, denser early; every fourth run
    // waits for the disk (--sync), so that whole files wait under partial names for their
    // batch. Two more are killed at what can be seen: a large file half written, and
    // about half of the small files in place.
    const KILLS: usize = 22;
    let leftovers = dir.path().join("leftovers");
    let mut attempts = Vec::new();
    let mut left_partials = 0;
    let mut mid_restore = 0;
    let total_files = day1_tree
        .values()
        .filter(|i| !matches!(i, Item::Dir { .. }))
        .count();
    let mut kills: Vec<Kill> = kill_delays(KILLS, Duration::from_millis(10), full_time, 0.95)
        .into_iter()
        .map(Kill::After)
        .collect();
    kills.extend([Kill::LargeFileHalfWritten, Kill::HalfTheFilesInPlace]);
    for (i, kill) in kills.into_iter().enumerate() {
        let out = dir.path().join(format!("kill-{i}"));
        let sync: &[&str] = if i % 4 == 3 { &["--sync"] } else { &[] };
        let cmd = lb.command(restore(&id1, &out, sync));
        let (a, how) = match kill {
            Kill::After(delay) => (kill_after(cmd, delay), "timed"),
            Kill::LargeFileHalfWritten => (
                kill_when(cmd, || {
                    restore_folder(&out).is_some_and(|f| count_names(&f.join("big")).partial > 0)
                }),
                "a large file half written",
            ),
            Kill::HalfTheFilesInPlace => (
                kill_when(cmd, || {
                    restore_folder(&out).is_some_and(|f| count_names(&f).whole > total_files / 2)
                }),
                "half of the files in place",
            ),
        };

        let killed_in = restore_folder(&out);
        let left = match &killed_in {
            Some(f) if a.success => {
                assert_tree_is(&day1_tree, "the source", f);
                Left {
                    whole: total_files,
                    partial: 0,
                }
            }
            Some(f) => check_killed(&day1_tree, &[&day1_tree], f),
            None => Left::default(),
        };
        assert!(
            a.killed() || a.success,
            "a restore that was not killed failed: {a:?}"
        );
        if left.partial > 0 {
            left_partials += 1;
        }
        // Some files (not just the link, which is made first) but not all.
        if left.whole >= 10 && left.whole < total_files {
            mid_restore += 1;
        }
        verify(&lb, &format!("a restore killed at {:?}", a.delay));

        if let Some(f) = killed_in
            .as_ref()
            .filter(|_| left.partial > 0 && !leftovers.exists())
        {
            // The first leftovers with partial files are backed up at the end.
            copy_dir(f, &leftovers);
        }

        // The same restore again, into a new folder (every other time: a restore does not
        // write to the home, which verifies clean anyway): the source exactly.
        if i % 2 == 0 {
            let fresh = dir.path().join(format!("fresh-{i}"));
            lb.ok(restore(&id1, &fresh, &[]));
            assert_tree_is(&day1_tree, "the source", &only_restore_folder(&fresh));
            fs::remove_dir_all(&fresh).unwrap();
        }
        // And in place into the killed one: the source exactly, no partial file left.
        let target = killed_in.unwrap_or_else(|| out.join("in place"));
        let args = in_place_args(i);
        lb.ok(restore(&id1, &target, args));
        assert_tree_is(&day1_tree, "the source", &target);
        fs::remove_dir_all(&out).unwrap();
        println!(
            "kill {i:2} ({how}{}) at {:>9.1?}: {}; left {} whole, {} partial; rerun in place {}; {:.1?} so far",
            if sync.is_empty() { "" } else { ", --sync" },
            a.delay,
            if a.killed() { "killed" } else { "had finished" },
            left.whole,
            left.partial,
            args[1..].join(" "),
            start.elapsed()
        );
        attempts.push(a);
    }
    let killed = attempts.iter().filter(|a| a.killed()).count();
    assert!(
        killed >= attempts.len() / 2,
        "most runs were really killed: {attempts:?}"
    );
    assert!(
        left_partials >= 2 && mid_restore >= 2,
        "kills mid-restore: {left_partials} left partial files, {mid_restore} some files \
         but not all; {attempts:?}"
    );
    println!(
        "{killed} of {} restores killed, {:.1?} so far",
        attempts.len(),
        start.elapsed()
    );

    // Day 2, backed up; then restores of the day-1 snapshot in place over the day-2 files,
    // killed, each followed by a rerun that skips what is there, then one that replaces it.
    day2(&src);
    let day2_tree = tree(&src);
    lb.backup_json("t", 0);
    let mut day1_over_day2 = day2_tree.clone();
    day1_over_day2.extend(day1_tree.clone());
    let probe = dir.path().join("probe-day-2");
    copy_dir(&src, &probe);
    let over = ["--in-place", "--on-conflict", "replace"];
    let t = Instant::now();
    lb.ok(restore(&id1, &probe, &over));
    let full_time = t.elapsed();
    assert_tree_is(&day1_over_day2, "day 1 over day 2", &probe);
    fs::remove_dir_all(&probe).unwrap();
    println!("uninterrupted day-1 restore over day 2: {full_time:.2?}");
    const OLD_KILLS: usize = 4;
    for (i, delay) in kill_delays(OLD_KILLS, Duration::from_millis(10), full_time, 0.9)
        .into_iter()
        .enumerate()
    {
        let target = dir.path().join(format!("over-{i}"));
        copy_dir(&src, &target);
        let a = kill_after(lb.command(restore(&id1, &target, &over)), delay);
        let left = check_killed(&day1_tree, &[&day1_tree, &day2_tree], &target);
        verify(
            &lb,
            &format!("a restore over day 2 killed at {:?}", a.delay),
        );
        // Skipped: whichever version is there stays; what is missing comes back; no
        // partial file is left, whether of a name written or skipped.
        lb.ok(restore(&id1, &target, &["--in-place"]));
        let after_skip = check_killed(&day1_tree, &[&day1_tree, &day2_tree], &target);
        assert_eq!(after_skip.partial, 0, "partial files left after a rerun");
        for path in day1_tree.keys() {
            assert!(
                fs::symlink_metadata(target.join(OsStr::from_bytes(path))).is_ok(),
                "missing after a rerun: {}",
                String::from_utf8_lossy(path)
            );
        }
        // Replaced: day 1 over day 2 exactly.
        lb.ok(restore(&id1, &target, &over));
        assert_tree_is(&day1_over_day2, "day 1 over day 2", &target);
        fs::remove_dir_all(&target).unwrap();
        println!(
            "kill over day 2 {i} at {:>9.1?}: {}; left {} whole, {} partial; {:.1?} so far",
            a.delay,
            if a.killed() { "killed" } else { "had finished" },
            left.whole,
            left.partial,
            start.elapsed()
        );
    }

    // A backup of a folder that holds a killed restore's leftovers: the partial files are
    // not taken, everything else is.
    let before = tree(&leftovers);
    assert!(
        before.keys().any(|p| {
            let name = p.rsplit(|b| *b == b'/').next().unwrap_or_default();
            partial_of(name).is_some()
        }),
        "the leftovers hold partial files"
    );
    lb.add_folder_task("leftovers", &leftovers);
    lb.backup_json("leftovers", 0);
    let back = dir.path().join("leftovers-back");
    lb.ok([
        "restore",
        "leftovers",
        "--snapshot",
        "latest",
        "--to",
        ps(&back),
    ]);
    let without: Tree = before
        .into_iter()
        .filter(|(p, _)| {
            let name = p.rsplit(|b| *b == b'/').next().unwrap_or_default();
            partial_of(name).is_none()
        })
        .collect();
    assert_tree_is(
        &without,
        "the leftovers without partial files",
        &only_restore_folder(&back),
    );
    println!("restore crash test: {:.1?} in all", start.elapsed());
}
