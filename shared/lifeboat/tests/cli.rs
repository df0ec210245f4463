//! The `lifeboat` command's surface, run as a user would run it: tasks, backups, snapshots,
//! browsing, restore (new folder or in place), zip export, diff, verify, tenant deletion,
//! and one clear error line for bad input.

mod common;

use common::*;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;

/// A temp dir with a source folder `src` and a Lifeboat home `home`.
struct Setup {
    dir: TempDir,
    lb: Lifeboat,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let lb = Lifeboat::new(dir.path().join("home"));
        let s = Setup { dir, lb };
        fixture(&s.src());
        s
    }

    fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The source with task `docs` added for it.
    fn with_task() -> Self {
        let s = Setup::new();
        s.lb.add_folder_task("docs", &s.src());
        s
    }
}

/// A small source: text files, a nested folder, a file large enough to be chunked.
fn fixture(src: &Path) {
    write(&src.join("a.txt"), b"alpha\n");
    write(&src.join("keep.txt"), b"keep me\n");
    write(&src.join("gone.txt"), b"to be removed\n");
    write(&src.join("sub/b.txt"), b"bravo\n");
    write(
        &src.join("sub/deeper/c.bin"),
        &random_bytes("c.bin", 200 * 1024),
    );
    write(
        &src.join("big.bin"),
        &random_bytes("big.bin", 3 * 1024 * 1024 + 17),
    );
}

/// Checks a restore folder's name: `Lifeboat Restore YYYY-MM-DD HH-MM-SS UTC`, about now.
fn assert_restore_label(folder: &Path) {
    let name = folder.file_name().unwrap().to_str().unwrap();
    let stamp = name
        .strip_prefix(RESTORE_PREFIX)
        .unwrap_or_else(|| panic!("{name:?} does not start with {RESTORE_PREFIX:?}"));
    let at = chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H-%M-%S UTC")
        .unwrap_or_else(|e| panic!("{name:?} does not end with a UTC timestamp: {e}"))
        .and_utc();
    let age = chrono::Utc::now().signed_duration_since(at).num_seconds();
    assert!(
        (-5..=300).contains(&age),
        "{name:?} is not a timestamp of now (UTC): {age} s off"
    );
}

#[test]
fn tasks_backups_snapshots_and_ls() {
    let s = Setup::new();
    let lb = &s.lb;
    assert_eq!(lb.ok(["task", "list"]).stdout, "", "no tasks yet");
    assert_eq!(
        lb.ok(["task", "list", "--json"]).json(),
        serde_json::json!([])
    );

    let added = lb.add_folder_task("docs", &s.src());
    let canonical = fs::canonicalize(s.src()).unwrap();
    assert!(
        added.stdout.contains("task docs added") && added.stdout.contains(ps(&canonical)),
        "{}",
        added.show()
    );
    // One line a task: name, connector, its settings as JSON.
    let list = lb.ok(["task", "list"]);
    assert_eq!(
        list.lines(),
        vec![format!(
            "docs\tfolder\t{}",
            serde_json::json!({ "path": ps(&canonical) })
        )]
    );
    let list = lb.ok(["task", "list", "--json"]).json();
    let list = list.as_array().expect("a JSON list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "docs");
    assert_eq!(list[0]["kind"], "folder");
    assert_eq!(
        list[0]["settings"],
        serde_json::json!({ "path": ps(&canonical) })
    );
    assert!(list[0]["created_at"].is_string(), "{}", list[0]);
    assert!(list[0]["backup_hour_utc"].is_u64(), "{}", list[0]);

    // A backup of every account, then one of the named account.
    let first = lb.ok(["backup", "docs"]);
    assert!(
        first.stdout.starts_with("snapshot ") && first.stdout.contains("of docs/folder: 6 items"),
        "{}",
        first.show()
    );
    assert_eq!(first.stderr, "", "nothing on stderr when all went well");
    let second = lb
        .ok(["backup", "docs", "--account", "folder", "--json"])
        .json();
    let second = second.as_array().expect("a JSON list");
    assert_eq!(second.len(), 1);
    let second = &second[0];
    assert_eq!(second["account"], "folder");
    assert_eq!(second["error_count"], 0);
    assert_eq!(second["stats"]["items"], 6);
    // The folders below the root: sub and sub/deeper.
    assert_eq!(second["stats"]["folders"], 2);
    for count in ["items", "folders", "bytes"] {
        assert_eq!(second[count], second["stats"][count], "{count}");
    }
    assert_eq!(
        second["stats"]["items_read"], 0,
        "nothing changed: nothing read"
    );
    assert_eq!(
        second["stats"]["stored_bytes"], 0,
        "nothing changed: nothing stored"
    );
    assert!(second["peak_rss_bytes"].as_u64().is_some_and(|b| b > 0));

    // Snapshots, as a table and as JSON, oldest first.
    let ids = lb.snapshot_ids("docs");
    assert_eq!(ids.len(), 2);
    assert_eq!(second["id"], ids[1].as_str());
    assert_eq!(second["parent"], ids[0].as_str());
    assert!(first.stdout.contains(&ids[0]), "{}", first.show());
    let table = lb.ok(["snapshots", "docs"]);
    let rows = table.lines();
    assert_eq!(rows.len(), 3, "header and two rows:\n{}", table.show());
    assert!(rows[0].starts_with("ID"), "{}", table.show());
    assert!(rows[1].starts_with(&ids[0]) && rows[2].starts_with(&ids[1]));
    assert!(rows[1].contains("folder"));
    let json = lb.ok(["snapshots", "docs", "--json"]).json();
    for snap in json.as_array().unwrap() {
        assert_eq!(snap["account"], "folder");
        assert!(snap["taken_at"].is_string());
        assert_eq!(
            snap["stats"]["bytes"],
            6 + 8 + 14 + 6 + 200 * 1024 + 3 * 1024 * 1024 + 17
        );
        assert_eq!(snap["bytes"], snap["stats"]["bytes"]);
        assert_eq!(snap["items"], 6);
        assert_eq!(snap["folders"], 2);
    }

    // ls: the root, a folder, a file, by `latest`, by id and by id prefix.
    let ls = lb.ok(["ls", "docs", "latest"]);
    let names: Vec<&str> = ls
        .lines()
        .iter()
        .map(|l| l.rsplit("  ").next().unwrap())
        .collect();
    assert_eq!(
        names,
        ["a.txt", "big.bin", "gone.txt", "keep.txt", "sub/"],
        "{}",
        ls.show()
    );
    let a_line = ls.lines()[0];
    assert_eq!(
        a_line.split_whitespace().next(),
        Some("6"),
        "size first: {a_line}"
    );
    let by_id = lb.ok(["ls", "docs", &ids[0]]);
    assert_eq!(by_id.stdout, ls.stdout);
    let prefix = &ids[1][..ids[1].len() - 4];
    if ids[0].starts_with(prefix) {
        // Both taken in the same second: a prefix that short is ambiguous.
        let e = lb.fail(["ls", "docs", prefix]);
        assert!(e.contains(prefix), "{e}");
    } else {
        assert_eq!(lb.ok(["ls", "docs", prefix]).stdout, ls.stdout);
    }

    let sub = lb.ok(["ls", "docs", "latest", "sub", "--json"]).json();
    let sub = sub.as_array().expect("a JSON list");
    assert_eq!(sub.len(), 2);
    assert_eq!(sub[0]["name"], "b.txt");
    assert_eq!(sub[0]["path"], "sub/b.txt");
    assert_eq!(sub[0]["kind"], "item");
    assert_eq!(sub[0]["size"], 6);
    assert!(sub[0]["modified"].is_string());
    assert!(sub[0]["meta"].is_object(), "{}", sub[0]);
    assert!(sub[0].get("link").is_none(), "only links have a target");
    assert_eq!(sub[1]["name"], "deeper");
    assert_eq!(sub[1]["path"], "sub/deeper");
    assert_eq!(sub[1]["kind"], "folder");

    let root = lb.ok(["ls", "docs", "latest", "--json"]).json();
    assert_eq!(root.as_array().unwrap().len(), 5);
    let one = lb.ok(["ls", "docs", "latest", "sub/deeper/c.bin"]);
    assert_eq!(one.lines().len(), 1);
    assert!(one.stdout.contains("204800") && one.stdout.trim_end().ends_with("c.bin"));
}

#[test]
fn restore_makes_a_new_labelled_folder_every_time() {
    let s = Setup::with_task();
    let lb = &s.lb;
    lb.ok(["backup", "docs"]);
    let id = lb.snapshot_ids("docs").remove(0);
    let out = s.path("out");

    // `--to` a folder that does not exist yet: created, with the restore folder inside.
    let r = lb.ok(["restore", "docs", "--snapshot", "latest", "--to", ps(&out)]);
    let first = only_restore_folder(&out);
    assert_restore_label(&first);
    assert!(
        r.stdout.contains(&id) && r.stdout.contains(ps(&first)),
        "{}",
        r.show()
    );
    assert_eq!(
        fs::read_dir(&out).unwrap().count(),
        1,
        "nothing else in --to"
    );
    assert_same_tree(&s.src(), &first);

    // A marker in the first restore: a second restore must leave it alone.
    write(&first.join("marker"), b"mine");
    std::thread::sleep(Duration::from_millis(1100));
    let r = lb.ok(["restore", "docs", "--snapshot", &id, "--to", ps(&out)]);
    let both = restore_folders(&out);
    assert_eq!(both.len(), 2, "a second folder: {both:?}\n{}", r.show());
    assert_eq!(both[0], first);
    let second = both[1].clone();
    assert_restore_label(&second);
    assert_same_tree(&s.src(), &second);
    assert_eq!(fs::read(first.join("marker")).unwrap(), b"mine");

    // Two restores in quick succession: a new folder or a refusal, never a merge.
    let quick = lb.run(["restore", "docs", "--snapshot", "latest", "--to", ps(&out)]);
    assert_no_panic(&quick);
    let after = restore_folders(&out);
    if quick.code == Some(0) {
        assert_eq!(after.len(), 3, "{}", quick.show());
    } else {
        let line = assert_error_line(&quick);
        assert!(line.contains("restore folder"), "{line}");
        assert_eq!(after.len(), 2);
    }
    assert_same_tree(&s.src(), &second);

    // --include: only the named items (with their folders), as JSON.
    std::thread::sleep(Duration::from_millis(1100));
    let r = lb.ok([
        "restore",
        "docs",
        "--snapshot",
        "latest",
        "--to",
        ps(&out),
        "--include",
        "sub/b.txt",
        "--include",
        "a.txt",
        "--json",
    ]);
    let report = r.json();
    let target = PathBuf::from(report["target"].as_str().expect("a target"));
    assert!(restore_folders(&out).contains(&target), "{}", r.show());
    assert_restore_label(&target);
    assert_eq!(report["files"], 2);
    assert_eq!(report["errors"], serde_json::json!([]));
    let got = tree(&target);
    let names: Vec<&[u8]> = got.keys().map(Vec::as_slice).collect();
    assert_eq!(names, [&b"a.txt"[..], b"sub", b"sub/b.txt"]);
    assert_eq!(fs::read(target.join("sub/b.txt")).unwrap(), b"bravo\n");
    assert_eq!(fs::read(target.join("a.txt")).unwrap(), b"alpha\n");
}

/// Without `--to`, a restore goes back into the source: for a folder task, into a new
/// `Lifeboat Restore <time>` folder inside the backed-up folder itself (the folder's own
/// files untouched), or with `--in-place` into the folder, existing files skipped unless
/// told otherwise; `--to-task` names another folder task to restore into.
#[test]
fn restore_without_to_goes_back_into_the_folder() {
    let s = Setup::with_task();
    let lb = &s.lb;
    lb.ok(["backup", "docs"]);
    let id = lb.snapshot_ids("docs").remove(0);
    let snapshot_tree = tree(&s.src());

    // Into a new labelled folder inside the source, the rest of it untouched.
    let r = lb.ok(["restore", "docs", "--snapshot", "latest"]);
    let first = only_restore_folder(&s.src());
    assert_restore_label(&first);
    let bytes = 6 + 8 + 14 + 6 + 200 * 1024 + 3 * 1024 * 1024 + 17;
    assert!(
        r.stdout.contains(&id)
            && r.stdout.contains(ps(&first))
            && r.stdout.contains("of task docs")
            && r.stdout
                .contains(&format!(": 6 items, 2 folders, {bytes} bytes")),
        "{}",
        r.show()
    );
    assert_eq!(r.stderr, "", "{}", r.show());
    assert_tree_is(&snapshot_tree, "the snapshot's source", &first);
    let mut with_restore = tree(&s.src());
    with_restore.retain(|k, _| !k.starts_with(RESTORE_PREFIX.as_bytes()));
    assert_eq!(
        with_restore, snapshot_tree,
        "the source's own files are untouched"
    );

    // A second one, as JSON: another folder beside the first, which is left alone.
    write(&first.join("marker"), b"mine");
    std::thread::sleep(Duration::from_millis(1100));
    let report = lb
        .ok([
            "restore",
            "docs",
            "--snapshot",
            &id,
            "--include",
            "sub",
            "--json",
        ])
        .json();
    let both = restore_folders(&s.src());
    assert_eq!(both.len(), 2, "{both:?}");
    assert_eq!(both[0], first);
    assert_eq!(report["target"], ps(&both[1]), "{report}");
    assert_eq!(report["items"], 2, "{report}");
    assert_eq!(report["folders"], 2, "{report}");
    assert_eq!(report["errors"], serde_json::json!([]));
    let got = tree(&both[1]);
    let names: Vec<&[u8]> = got.keys().map(Vec::as_slice).collect();
    assert_eq!(
        names,
        [
            &b"sub"[..],
            b"sub/b.txt",
            b"sub/deeper",
            b"sub/deeper/c.bin"
        ]
    );
    assert_eq!(fs::read(first.join("marker")).unwrap(), b"mine");
    for p in &both {
        fs::remove_dir_all(p).unwrap();
    }

    // In place, into the folder: what exists is skipped, what is missing comes back.
    write(&s.src().join("a.txt"), b"edited here\n");
    fs::remove_file(s.src().join("gone.txt")).unwrap();
    fs::remove_dir_all(s.src().join("sub/deeper")).unwrap();
    let r = lb.ok(["restore", "docs", "--snapshot", "latest", "--in-place"]);
    assert!(r.stdout.contains("4 skipped"), "{}", r.show());
    assert!(
        restore_folders(&s.src()).is_empty(),
        "no labelled folder in place"
    );
    assert_eq!(fs::read(s.src().join("a.txt")).unwrap(), b"edited here\n");
    assert_eq!(
        fs::read(s.src().join("gone.txt")).unwrap(),
        b"to be removed\n"
    );
    assert_eq!(
        fs::read(s.src().join("sub/deeper/c.bin")).unwrap(),
        random_bytes("c.bin", 200 * 1024)
    );
    // Replace: the snapshot's version wins, and the folder is the snapshot's again.
    lb.ok([
        "restore",
        "docs",
        "--snapshot",
        "latest",
        "--in-place",
        "--on-conflict",
        "replace",
    ]);
    assert_eq!(tree(&s.src()), snapshot_tree);

    // Into another folder task: a labelled folder inside that task's folder.
    let other = s.path("other");
    write(&other.join("theirs.txt"), b"theirs\n");
    lb.add_folder_task("other", &other);
    let e = lb.fail([
        "restore",
        "docs",
        "--snapshot",
        "latest",
        "--to-task",
        "other",
    ]);
    assert!(e.contains("other") && e.contains("back it up"), "{e}");
    lb.ok(["backup", "other"]);
    let r = lb.ok([
        "restore",
        "docs",
        "--snapshot",
        "latest",
        "--to-task",
        "other",
    ]);
    let there = only_restore_folder(&other);
    assert!(r.stdout.contains("of task other"), "{}", r.show());
    assert_tree_is(&snapshot_tree, "the snapshot's source", &there);
    assert_eq!(fs::read(other.join("theirs.txt")).unwrap(), b"theirs\n");
    assert!(
        restore_folders(&s.src()).is_empty(),
        "nothing in the source"
    );
}

#[test]
fn in_place_restore_skips_copies_or_replaces() {
    let s = Setup::with_task();
    let lb = &s.lb;
    lb.ok(["backup", "docs"]);
    let place = s.path("place");
    write(&place.join("a.txt"), b"edited here\n");
    write(&place.join("mine.txt"), b"not in the snapshot\n");
    let in_place = |conflict: Option<&str>| {
        let mut args = vec![
            "restore",
            "docs",
            "--snapshot",
            "latest",
            "--to",
            ps(&place),
            "--in-place",
        ];
        if let Some(c) = conflict {
            args.extend(["--on-conflict", c]);
        }
        lb.ok(args)
    };

    // Default (skip): what exists stays, what is missing comes back.
    let r = in_place(None);
    assert!(r.stdout.contains("1 skipped"), "{}", r.show());
    assert_eq!(fs::read(place.join("a.txt")).unwrap(), b"edited here\n");
    assert_eq!(fs::read(place.join("sub/b.txt")).unwrap(), b"bravo\n");
    assert_eq!(
        fs::read(place.join("mine.txt")).unwrap(),
        b"not in the snapshot\n"
    );
    assert!(
        restore_folders(&place).is_empty(),
        "no labelled folder in place"
    );

    // Skip again: everything exists now, nothing changes.
    let before = tree(&place);
    let r = in_place(Some("skip"));
    assert!(r.stdout.contains("6 skipped"), "{}", r.show());
    assert_eq!(tree(&place), before);

    // Copy: the snapshot's version beside each existing file, originals untouched.
    let r = in_place(Some("copy"));
    assert!(r.stdout.contains("6 restored as copies"), "{}", r.show());
    assert_eq!(fs::read(place.join("a.txt")).unwrap(), b"edited here\n");
    let copies: Vec<PathBuf> = fs::read_dir(&place)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("a (Lifeboat Restore ") && n.ends_with(" UTC).txt")
        })
        .collect();
    assert_eq!(copies.len(), 1, "one copy of a.txt beside it");
    assert_eq!(fs::read(&copies[0]).unwrap(), b"alpha\n");
    let b_copies = fs::read_dir(place.join("sub"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("b (Lifeboat Restore ")
        })
        .count();
    assert_eq!(b_copies, 1);

    // Replace: the snapshot's version wins; nothing half-written is left.
    in_place(Some("replace"));
    assert_eq!(fs::read(place.join("a.txt")).unwrap(), b"alpha\n");
    assert_eq!(
        fs::read(place.join("mine.txt")).unwrap(),
        b"not in the snapshot\n"
    );
    assert_eq!(fs::read(&copies[0]).unwrap(), b"alpha\n", "copies stay");
    for path in tree(&place).keys() {
        let name = String::from_utf8_lossy(path);
        assert!(!name.contains("lifeboat-partial"), "left over: {name}");
    }
    for (path, item) in tree(&s.src()) {
        if let Item::File { .. } = item {
            let rel = String::from_utf8(path).unwrap();
            assert_eq!(
                fs::read(place.join(&rel)).unwrap(),
                fs::read(s.src().join(&rel)).unwrap(),
                "{rel} is the snapshot's version"
            );
        }
    }
}

#[test]
fn export_writes_a_zip_and_never_overwrites_one() {
    let s = Setup::with_task();
    let lb = &s.lb;
    lb.ok(["backup", "docs"]);
    let zip_path = s.path("snap.zip");
    let r = lb.ok([
        "export",
        "docs",
        "--snapshot",
        "latest",
        "--zip",
        ps(&zip_path),
    ]);
    assert!(r.stdout.contains("exported snapshot"), "{}", r.show());

    let entries = read_zip(&zip_path);
    let names: Vec<&str> = entries.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "a.txt",
            "big.bin",
            "gone.txt",
            "keep.txt",
            "sub/",
            "sub/b.txt",
            "sub/deeper/",
            "sub/deeper/c.bin"
        ]
    );
    for (name, data) in &entries {
        if !name.ends_with('/') {
            assert_eq!(
                data,
                &fs::read(s.src().join(name)).unwrap(),
                "{name} in the zip"
            );
        }
    }

    // The same name again: refused, the zip untouched, no partial file.
    let before = fs::read(&zip_path).unwrap();
    let e = lb.fail([
        "export",
        "docs",
        "--snapshot",
        "latest",
        "--zip",
        ps(&zip_path),
    ]);
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(fs::read(&zip_path).unwrap(), before);
    // An existing file that is not a zip is refused too.
    let other = s.path("notes.txt");
    write(&other, b"precious");
    let e = lb.fail([
        "export",
        "docs",
        "--snapshot",
        "latest",
        "--zip",
        ps(&other),
    ]);
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(fs::read(&other).unwrap(), b"precious");

    // Some paths only.
    let part = s.path("sub.zip");
    lb.ok([
        "export",
        "docs",
        "--snapshot",
        "latest",
        "--zip",
        ps(&part),
        "--include",
        "sub/deeper",
    ]);
    let entries = read_zip(&part);
    let names: Vec<&str> = entries.keys().map(String::as_str).collect();
    assert_eq!(names, ["sub/deeper/", "sub/deeper/c.bin"]);
    let leftovers: Vec<_> = fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Every entry of a zip: name -> content.
fn read_zip(path: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut z = zip::ZipArchive::new(fs::File::open(path).unwrap()).expect("a valid zip");
    let mut out = std::collections::BTreeMap::new();
    for i in 0..z.len() {
        let mut f = z.by_index(i).unwrap();
        let mut data = Vec::new();
        f.read_to_end(&mut data).unwrap();
        out.insert(f.name().to_string(), data);
    }
    out
}

#[test]
fn diff_lists_added_changed_and_removed() {
    let s = Setup::with_task();
    let lb = &s.lb;
    lb.ok(["backup", "docs"]);
    write(&s.src().join("a.txt"), b"alpha, edited\n");
    fs::remove_file(s.src().join("gone.txt")).unwrap();
    write(&s.src().join("new.txt"), b"new\n");
    write(&s.src().join("newdir/n.txt"), b"n\n");
    lb.ok(["backup", "docs"]);
    let ids = lb.snapshot_ids("docs");

    let d = lb.ok(["diff", "docs", &ids[0], &ids[1]]);
    let mut lines = d.lines();
    let summary = lines.pop().expect("a summary line");
    lines.sort();
    assert_eq!(
        lines,
        [
            "+ new.txt",
            "+ newdir/",
            "+ newdir/n.txt",
            "- gone.txt",
            "M a.txt"
        ],
        "{}",
        d.show()
    );
    assert_eq!(summary, "3 added, 1 changed, 1 removed");

    // The other way round, with `latest`.
    let d = lb.ok(["diff", "docs", "latest", &ids[0]]);
    let mut lines = d.lines();
    let summary = lines.pop().unwrap();
    lines.sort();
    assert_eq!(
        lines,
        [
            "+ gone.txt",
            "- new.txt",
            "- newdir/",
            "- newdir/n.txt",
            "M a.txt"
        ]
    );
    assert_eq!(summary, "1 added, 1 changed, 3 removed");

    let same = lb.ok(["diff", "docs", "latest", "latest"]);
    assert_eq!(same.lines(), ["0 added, 0 changed, 0 removed"]);

    let json = lb.ok(["diff", "docs", &ids[0], "latest", "--json"]).json();
    let json = json.as_array().expect("a JSON list");
    assert_eq!(json.len(), 5);
    assert!(json
        .iter()
        .any(|c| c["kind"] == "changed" && c["path"] == "a.txt"));
    assert!(json
        .iter()
        .any(|c| c["kind"] == "removed" && c["path"] == "gone.txt"));
}

#[test]
fn verify_passes_on_a_healthy_home() {
    let s = Setup::with_task();
    let lb = &s.lb;
    // Verify on a task without snapshots, then with two.
    lb.ok(["verify"]);
    lb.ok(["backup", "docs"]);
    write(&s.src().join("a.txt"), b"alpha 2\n");
    lb.ok(["backup", "docs"]);
    let v = lb.ok(["verify"]);
    assert!(
        v.stdout.contains("task docs:") && v.stdout.contains("2 snapshots checked: no damage"),
        "{}",
        v.show()
    );
    let j = lb.ok(["verify", "--json"]).json();
    assert_eq!(j[0]["task"], "docs");
    assert_eq!(j[0]["snapshots"], 2);
    assert_eq!(j[0]["damage"], serde_json::json!([]));
    assert!(j[0]["packs"].as_u64().unwrap() > 0);
}

#[test]
fn bad_input_gives_one_clear_error_line() {
    let s = Setup::new();
    let lb = &s.lb;
    let out = s.path("out");

    // No tasks at all.
    let e = lb.fail(["backup", "docs"]);
    assert!(
        e.contains("no task named docs") && e.contains("no tasks yet"),
        "{e}"
    );

    // Adding tasks: a missing folder, a file, a bad name, a taken name.
    // (`files` is the old name of `folder`, and still accepted.)
    let missing = s.path("no-such-folder");
    for add in ["folder", "files"] {
        let e = lb.fail(["task", "add", add, "x", ps(&missing)]);
        assert!(e.contains(ps(&missing)), "names the folder: {e}");
        let e = lb.fail(["task", "add", add, "x", ps(&s.src().join("a.txt"))]);
        assert!(e.contains("not a folder"), "{e}");
    }
    for bad in ["a/b", "../up", "has space", ".hidden"] {
        let e = lb.fail(["task", "add", "folder", bad, ps(&s.src())]);
        assert!(e.contains("task name") && e.contains(bad), "{e}");
    }
    lb.add_folder_task("docs", &s.src());
    let e = lb.fail(["task", "add", "files", "docs", ps(&s.src())]);
    assert!(e.contains("docs") && e.contains("already exists"), "{e}");
    let e = lb.fail(["task", "add", "folder", "docs", ps(&s.src())]);
    assert!(e.contains("docs") && e.contains("already exists"), "{e}");
    lb.add_task_as("files", "pics", &s.src());
    let tasks = lb.ok(["task", "list"]);
    assert_eq!(
        tasks.lines().len(),
        2,
        "only the good tasks:\n{}",
        tasks.show()
    );
    assert!(
        tasks
            .lines()
            .iter()
            .all(|l| l.split('\t').nth(1) == Some("folder")),
        "a task added as `files` is a folder task:\n{}",
        tasks.show()
    );

    // Unknown task: the message lists the tasks there are.
    for args in [
        vec!["backup", "nope"],
        vec!["snapshots", "nope"],
        vec!["ls", "nope", "latest"],
        vec!["restore", "nope", "--snapshot", "latest", "--to", ps(&out)],
    ] {
        let e = lb.fail(&args);
        assert!(
            e.contains("no task named nope") && e.contains("tasks: docs, pics"),
            "{args:?}: {e}"
        );
    }

    // No snapshot yet.
    let e = lb.fail(["ls", "docs", "latest"]);
    assert!(e.contains("no snapshots yet"), "{e}");

    lb.ok(["backup", "docs"]);

    // Unknown snapshot ids.
    let bogus = "19990101T000000Z-deadbeef";
    for args in [
        vec!["ls", "docs", bogus],
        vec!["restore", "docs", "--snapshot", bogus, "--to", ps(&out)],
        vec![
            "export",
            "docs",
            "--snapshot",
            bogus,
            "--zip",
            ps(&s.path("x.zip")),
        ],
        vec!["diff", "docs", "latest", bogus],
    ] {
        let e = lb.fail(&args);
        assert!(e.contains(&format!("no snapshot {bogus}")), "{args:?}: {e}");
    }
    assert!(!out.exists(), "a failed restore wrote nothing");

    // Paths not in the snapshot.
    let e = lb.fail(["ls", "docs", "latest", "no/such/thing"]);
    assert!(
        e.contains("no/such/thing") && e.contains("not found"),
        "{e}"
    );
    let e = lb.fail(["ls", "docs", "latest", "a.txt/below-a-file"]);
    assert!(e.contains("not found"), "{e}");
    let e = lb.fail([
        "restore",
        "docs",
        "--snapshot",
        "latest",
        "--to",
        ps(&out),
        "--include",
        "sub/missing.txt",
    ]);
    assert!(
        e.contains("sub/missing.txt") && e.contains("not found"),
        "{e}"
    );
    let zip = s.path("x.zip");
    let e = lb.fail([
        "export",
        "docs",
        "--snapshot",
        "latest",
        "--zip",
        ps(&zip),
        "--include",
        "nothing-here",
    ]);
    assert!(e.contains("nothing-here") && e.contains("not found"), "{e}");
    assert!(!zip.exists() && !s.path("x.zip.partial").exists());

    // A path that cannot be a path, an account that does not exist.
    let e = lb.fail(["ls", "docs", "latest", "sub/../a.txt"]);
    assert!(e.contains(".."), "{e}");
    let e = lb.fail(["backup", "docs", "--account", "someone-else"]);
    assert!(e.contains("folder"), "names the one account: {e}");

    // The snapshot list is unharmed by all of this.
    assert_eq!(lb.snapshot_ids("docs").len(), 1);
}

/// `backup TASK --account A` backs up that one account, also as a task's first backup
/// (the accounts are recorded by a task's first backup, not when the task is added).
#[test]
fn backup_of_one_account_works_as_the_first_backup() {
    let s = Setup::with_task();
    let lb = &s.lb;
    let r = lb.ok(["backup", "docs", "--account", "folder", "--json"]);
    let snap = r.json();
    assert_eq!(snap[0]["account"], "folder", "{}", r.show());
    assert_eq!(snap[0]["items"], 6, "{}", r.show());
    assert_eq!(lb.snapshot_ids("docs").len(), 1);
}

#[test]
fn delete_tenant_needs_yes_then_removes_everything() {
    let s = Setup::with_task();
    let lb = &s.lb;
    lb.ok(["backup", "docs"]);
    let objects = lb.home.join("objects");
    let stored = count_files(&objects);
    assert!(stored > 0);
    // The installation's one tenant has its key beside the master key.
    let tenant_key = lb.home.join("tenant-keys/local.key");
    assert!(
        tenant_key.is_file(),
        "no tenant key at {}",
        tenant_key.display()
    );

    let e = lb.fail(["delete-tenant"]);
    assert!(e.contains("--yes"), "says how to confirm: {e}");
    assert_eq!(
        count_files(&objects),
        stored,
        "nothing deleted without --yes"
    );
    assert!(tenant_key.is_file(), "the key is kept without --yes");
    assert_eq!(lb.snapshot_ids("docs").len(), 1);

    let r = lb.ok(["delete-tenant", "--yes"]);
    assert!(r.stdout.contains("tenant deleted"), "{}", r.show());
    assert_eq!(count_files(&objects), 0, "no object left");
    // The tenant's key went first: no copy of its wrapped data keys opens again.
    assert!(!tenant_key.exists(), "the tenant's key is left");
    assert_eq!(
        count_files(&lb.home.join("tenant-keys")),
        0,
        "a key file is left"
    );
    assert_eq!(lb.ok(["task", "list"]).stdout, "");
    assert_eq!(
        lb.ok(["task", "list", "--json"]).json(),
        serde_json::json!([])
    );
    let e = lb.fail(["snapshots", "docs"]);
    assert!(e.contains("no task named docs"), "{e}");
    lb.ok(["verify"]);
    // The source itself is never touched.
    assert_eq!(fs::read(s.src().join("a.txt")).unwrap(), b"alpha\n");
}

/// The restore code resolves every `--include` "before writing anything, so a typo fails
/// cleanly", and its error says "(nothing was written)" — yet the labelled restore folder is
/// created first and left behind, empty.
#[test]
fn failed_restore_leaves_no_folder() {
    let s = Setup::with_task();
    let lb = &s.lb;
    lb.ok(["backup", "docs"]);
    let out = s.path("out");
    fs::create_dir(&out).unwrap();
    lb.fail([
        "restore",
        "docs",
        "--snapshot",
        "latest",
        "--to",
        ps(&out),
        "--include",
        "typo.txt",
    ]);
    assert_eq!(restore_folders(&out), Vec::<PathBuf>::new());
}

/// The snapshot's root has no recorded time (its entry is synthesised with mtime 0), and the
/// restore applies it anyway: a full in-place restore sets the user's own folder to
/// 1970-01-01, and every `Lifeboat Restore …` folder shows 1970 as its modification time.
#[test]
fn restore_keeps_a_sensible_time_on_the_target_folder() {
    let s = Setup::with_task();
    let lb = &s.lb;
    lb.ok(["backup", "docs"]);
    let place = s.path("place");
    fs::create_dir(&place).unwrap();
    lb.ok([
        "restore",
        "docs",
        "--snapshot",
        "latest",
        "--to",
        ps(&place),
        "--in-place",
    ]);
    let year_2000 = std::time::UNIX_EPOCH + Duration::from_secs(946_684_800);
    let mtime = |dir: &Path| fs::metadata(dir).unwrap().modified().unwrap();
    assert!(
        mtime(&place) > year_2000,
        "in place: the user's folder now has mtime {:?}",
        mtime(&place)
    );
    lb.ok([
        "restore",
        "docs",
        "--snapshot",
        "latest",
        "--to",
        ps(&place),
    ]);
    let labelled = only_restore_folder(&place);
    assert!(
        mtime(&labelled) > year_2000,
        "the restore folder has mtime {:?}",
        mtime(&labelled)
    );
}
