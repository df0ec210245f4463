//! Crash safety of `lifeboat prune` and `lifeboat repack`: each killed with SIGKILL at many
//! points, every time on a fresh copy of one home that has something to do (forty days of
//! small packs, and the uploads of a backup killed mid-way). After every kill the home
//! verifies clean and snapshots restore byte for byte; a rerun then finishes the job, and
//! the home is clean and whole again.

mod common;

use common::kill::{copy_dir, kill_after, kill_when};
use common::*;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// Kill points per command.
const KILLS: usize = 14;

/// Pack files in the object store (not the hidden temporary names of puts in progress).
fn packs(objects: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(objects) else {
        return out;
    };
    for ent in rd.flatten() {
        let ft = ent.file_type().unwrap();
        if ft.is_dir() {
            out.extend(packs(&ent.path()));
        } else if !ent.file_name().as_encoded_bytes().starts_with(b".")
            && ent.path().parent().and_then(|p| p.file_name()) == Some("pack".as_ref())
        {
            out.push(ent.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

fn copy_home(from: &Path, to: &Path) {
    if to.exists() {
        fs::remove_dir_all(to).unwrap();
    }
    copy_dir(from, to);
}

struct Home {
    dir: tempfile::TempDir,
    pristine: std::path::PathBuf,
    /// Every snapshot, with the source as it was.
    days: Vec<(String, std::collections::BTreeMap<Vec<u8>, Item>)>,
    /// Packs a killed backup left.
    garbage: Vec<String>,
}

/// Forty days of small changes and one backup killed once it had uploaded four packs.
fn build_home() -> Home {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let lb = Lifeboat::new(dir.path().join("home"));
    let objects = lb.home.join("objects");
    let mut days = Vec::new();
    for day in 0..40 {
        for i in 0..15 {
            let seed = format!("day {day} note {i}");
            write(
                &src.join(format!("d{:02}/note-{i:02}.txt", day % 7)),
                &text_bytes(&seed, 1500 + i * 97),
            );
        }
        if day == 0 {
            lb.add_folder_task("t", &src);
        }
        let snap = lb.backup_json("t", 0);
        days.push((snap["id"].as_str().unwrap().to_string(), tree(&src)));
    }
    // A backup of 48 MiB of new files, killed once four more packs are out; the files
    // are then removed, so nothing will ever need those packs.
    for i in 0..6 {
        write(
            &src.join(format!("big/b{i}.bin")),
            &random_bytes(&format!("big {i}"), 8 << 20),
        );
    }
    let kept = packs(&objects);
    let before = kept.len();
    let a = kill_when(lb.command(["backup", "t"]), || {
        packs(&objects).len() >= before + 4
    });
    assert!(a.killed(), "the backup finished before it could be killed");
    fs::remove_dir_all(src.join("big")).unwrap();
    let garbage: Vec<String> = packs(&objects)
        .into_iter()
        .filter(|p| !kept.contains(p))
        .collect();
    let pristine = dir.path().join("pristine");
    copy_home(&lb.home, &pristine);
    Home {
        dir,
        pristine,
        days,
        garbage,
    }
}

fn check_home(h: &Home, lb: &Lifeboat, what: &str, which: &[usize]) {
    let v = lb.run(["verify"]);
    assert_eq!(v.code, Some(0), "verify after {what}:\n{}", v.show());
    assert_eq!(
        lb.snapshot_ids("t"),
        h.days.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        "after {what}"
    );
    for &d in which {
        let (id, expected) = &h.days[d];
        let out = h.dir.path().join("restore");
        if out.exists() {
            fs::remove_dir_all(&out).unwrap();
        }
        lb.ok(["restore", "t", "--snapshot", id, "--to", ps(&out)]);
        assert_tree_is(
            expected,
            &format!("day {d} after {what}"),
            &only_restore_folder(&out),
        );
        fs::remove_dir_all(&out).unwrap();
    }
}

/// Kills `args` at `KILLS` points of its uninterrupted run, each on a fresh copy of the
/// home, then reruns it to the end.
fn kill_points(h: &Home, args: &[&str]) {
    let lb = Lifeboat::new(h.dir.path().join("work"));
    // The faster of two uninterrupted runs places the kills: on a busy machine one run
    // can take twice as long as the next, and kills placed late would find most runs
    // already done.
    let full = (0..2)
        .map(|_| {
            copy_home(&h.pristine, &lb.home);
            let t = Instant::now();
            lb.ok(args);
            t.elapsed()
        })
        .min()
        .unwrap();
    println!("{args:?} uninterrupted: {full:.1?}");
    let last = full.mul_f64(0.8).max(Duration::from_millis(20));
    let mut finished = 0;
    for k in 0..KILLS {
        copy_home(&h.pristine, &lb.home);
        let x = k as f64 / (KILLS - 1) as f64;
        let delay = Duration::from_millis(2) + last.mul_f64(x);
        finished += usize::from(kill_after(lb.command(args), delay).finished_first);
        let what = format!("{args:?} killed at {delay:.1?}");
        check_home(h, &lb, &what, &[k % h.days.len(), h.days.len() - 1]);
        lb.ok(args);
        let left = packs(&lb.home.join("objects"));
        let kept: Vec<&String> = h.garbage.iter().filter(|p| left.contains(p)).collect();
        assert!(
            kept.is_empty(),
            "a killed backup's packs outlived {what} and a rerun: {kept:?}"
        );
        check_home(h, &lb, &format!("{what} and a rerun"), &[0]);
    }
    assert!(
        finished <= KILLS / 2,
        "most runs must be killed, {finished} finished first"
    );
    println!("{args:?}: {} of {KILLS} runs killed", KILLS - finished);
}

fn packs_in(home: &Path) -> Vec<String> {
    packs(&home.join("objects"))
}

#[test]
fn prune_and_repack_killed_at_any_point_lose_nothing() {
    let start = Instant::now();
    let h = build_home();
    let before = packs_in(&h.pristine);
    println!(
        "home: {} snapshots, {} packs, built in {:.1?}",
        h.days.len(),
        before.len(),
        start.elapsed()
    );

    // Prune with no grace deletes the killed backup's uploads at once.
    kill_points(&h, &["prune", "t", "--grace", "0s"]);
    let lb = Lifeboat::new(h.dir.path().join("work"));
    let after_prune = packs_in(&lb.home);
    assert!(
        after_prune.len() + 2 <= before.len(),
        "{} -> {}",
        before.len(),
        after_prune.len()
    );

    // Repack merges the small daily packs too.
    kill_points(&h, &["repack", "t", "--grace", "0s"]);
    let after_repack = packs_in(&lb.home);
    assert!(
        after_repack.len() < after_prune.len() / 2,
        "{} -> {}",
        after_prune.len(),
        after_repack.len()
    );
    let all: Vec<usize> = (0..h.days.len()).collect();
    check_home(&h, &lb, "the last repack", &all);
    println!("{:.1?} in all", start.elapsed());
}
