//! Sources that are not tidy: unreadable files and folders, names that are not UTF-8, empty
//! files and folders, symlinks, and a file of several GiB that must stream in bounded
//! memory.

mod common;

use common::*;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Instant;

#[test]
fn unreadable_items_are_reported_and_the_rest_is_backed_up() {
    // Root reads everything whatever the mode: run Lifeboat as nobody instead.
    let wrap = if running_as_root() {
        if !have_setpriv() {
            eprintln!(
                "NOTICE: skipping unreadable_items_are_reported_and_the_rest_is_backed_up: \
                 running as root and setpriv (util-linux) is missing"
            );
            return;
        }
        as_nobody()
    } else {
        Vec::new()
    };
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o777);
    let src = dir.path().join("src");
    let lb = Lifeboat::new(dir.path().join("home")).wrapped(wrap);

    write(&src.join("keep.txt"), b"keep v1\n");
    write(&src.join("secret.txt"), b"secret v1\n");
    write(&src.join("locked/inner.txt"), b"inner v1\n");
    write(&src.join("locked/deep/d.txt"), b"deep v1\n");
    write(&src.join("other/x.txt"), b"x\n");
    // A large (chunked) file takes another read path than small ones.
    write(&src.join("large.bin"), &random_bytes("large v1", 2 << 20));
    // Readable by anyone, as a real home's files are to their owner.
    make_readable(&src);

    // The first command as the backup user, so that it creates the home (and the master
    // key, which must be that user's and 0600).
    lb.add_folder_task("t", &src);
    let first = lb.backup_json("t", 0);
    assert_eq!(first["error_count"], 0);

    // Day 2: everything changes; some of it cannot be read.
    write(&src.join("keep.txt"), b"keep v2, longer\n");
    write(&src.join("secret.txt"), b"secret v2\n");
    write(&src.join("locked/inner.txt"), b"inner v2\n");
    write(&src.join("large.bin"), &random_bytes("large v2", 2 << 20));
    write(&src.join("brand-new-secret.txt"), b"never readable\n");
    write(&src.join("new.txt"), b"new\n");
    make_readable(&src);
    for p in ["secret.txt", "brand-new-secret.txt", "large.bin"] {
        chmod(&src.join(p), 0o000);
    }
    chmod(&src.join("locked"), 0o000);

    let r = lb.expect(3, ["backup", "t"]);
    for name in ["secret.txt", "brand-new-secret.txt", "large.bin", "locked"] {
        assert!(
            r.stderr.contains(name),
            "stderr names {name}:\n{}",
            r.show()
        );
    }
    assert!(r.stderr.contains("ermission denied"), "{}", r.show());
    assert!(
        r.stdout.starts_with("snapshot "),
        "committed:\n{}",
        r.show()
    );

    // The snapshot is committed, with its errors counted, and listed by the backup.
    let snaps = lb.ok(["snapshots", "t", "--json"]).json();
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 2, "the partial backup is a snapshot");
    assert_eq!(snaps[1]["error_count"], 4, "{}", snaps[1]);
    let listed: Vec<&str> = r
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .filter_map(|l| l.split(": ").next())
        .collect();
    assert_eq!(listed.len(), 4, "{}", r.show());
    for p in ["secret.txt", "brand-new-secret.txt", "large.bin", "locked"] {
        assert!(listed.contains(&p), "{p} not listed:\n{}", r.show());
    }
    lb.ok(["verify"]);

    // Everything readable is in it, new content; what could not be read keeps its
    // previous version; what never could be read is absent.
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    chmod(&out, 0o777);
    lb.ok(["restore", "t", "--snapshot", "latest", "--to", ps(&out)]);
    let got = only_restore_folder(&out);
    let read = |p: &str| fs::read(got.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(read("keep.txt"), b"keep v2, longer\n");
    assert_eq!(read("new.txt"), b"new\n");
    assert_eq!(read("other/x.txt"), b"x\n");
    assert_eq!(read("secret.txt"), b"secret v1\n", "previous version kept");
    assert_eq!(
        read("large.bin"),
        random_bytes("large v1", 2 << 20),
        "previous version kept"
    );
    assert_eq!(
        read("locked/inner.txt"),
        b"inner v1\n",
        "folder kept as before"
    );
    assert_eq!(read("locked/deep/d.txt"), b"deep v1\n");
    assert!(!got.join("brand-new-secret.txt").exists());
    let names = lb.ok(["ls", "t", "latest"]).stdout;
    assert!(!names.contains("brand-new-secret.txt"), "{names}");

    // Readable again: the next backup takes the new versions and has no errors.
    for p in ["secret.txt", "brand-new-secret.txt", "large.bin"] {
        chmod(&src.join(p), 0o644);
    }
    chmod(&src.join("locked"), 0o755);
    let third = lb.backup_json("t", 0);
    assert_eq!(third["error_count"], 0, "{third}");
    let out2 = dir.path().join("out2");
    fs::create_dir(&out2).unwrap();
    chmod(&out2, 0o777);
    lb.ok(["restore", "t", "--snapshot", "latest", "--to", ps(&out2)]);
    assert_same_tree(&src, &only_restore_folder(&out2));
}

/// Every folder 0755 and file 0644 below `root` (and `root`).
fn make_readable(root: &Path) {
    chmod(root, 0o755);
    for ent in fs::read_dir(root).unwrap() {
        let p = ent.unwrap().path();
        let m = fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            make_readable(&p);
        } else if m.is_file() {
            chmod(&p, 0o644);
        }
    }
}

#[test]
fn odd_names_empty_items_and_links_round_trip_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let lb = Lifeboat::new(dir.path().join("home"));
    let cafe = OsStr::from_bytes(b"caf\xe9.txt");
    write(&src.join(cafe), b"latin-1 name\n");
    write(
        &src.join(OsStr::from_bytes(b"d\xffir")).join("inner.txt"),
        b"in a non-UTF-8 folder\n",
    );
    write(&src.join("caf\u{e9}-utf8.txt"), b"utf-8 name\n");
    write(&src.join("tab\there.txt"), b"a control character\n");
    write(&src.join("empty.bin"), b"");
    write(&src.join("folder/empty-too"), b"");
    fs::create_dir_all(src.join("void")).unwrap();
    fs::create_dir_all(src.join("deep/er/still-empty")).unwrap();
    std::os::unix::fs::symlink(cafe, src.join("link")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", src.join("dangling")).unwrap();
    std::os::unix::fs::symlink("../void", src.join("folder/to-dir")).unwrap();
    write(&src.join("script.sh"), b"#!/bin/sh\n");
    chmod(&src.join("script.sh"), 0o750);
    chmod(&src.join("void"), 0o700);
    // Modes a restore must give back exactly: read-only (the file is still written),
    // writable by all (more than a usual umask lets a new file have), and a large file
    // of several chunks that is read-only.
    write(&src.join("read-only.txt"), b"do not touch\n");
    chmod(&src.join("read-only.txt"), 0o444);
    write(&src.join("shared.txt"), b"everyone writes here\n");
    chmod(&src.join("shared.txt"), 0o666);
    write(&src.join("big-read-only.bin"), &random_bytes("ro", 9 << 20));
    chmod(&src.join("big-read-only.bin"), 0o440);

    lb.add_folder_task("odd", &src);
    let snap = lb.backup_json("odd", 0);
    assert_eq!(snap["error_count"], 0, "{snap}");
    // The folders below the root: d\xffir, folder, void, deep, deep/er, deep/er/still-empty.
    assert_eq!(snap["stats"]["folders"], 6, "{snap}");
    assert_eq!(snap["folders"], 6, "{snap}");

    // ls shows the names unambiguously.
    let ls = lb.ok(["ls", "odd", "latest"]);
    let lines = ls.lines();
    let has = |suffix: &str| lines.iter().any(|l| l.ends_with(suffix));
    assert!(has("  caf\\xe9.txt"), "{}", ls.show());
    assert!(has("  d\\xffir/"), "{}", ls.show());
    assert!(has("  caf\u{e9}-utf8.txt"), "{}", ls.show());
    assert!(has("  tab\\there.txt"), "{}", ls.show());
    assert!(has("  link -> caf\\xe9.txt"), "{}", ls.show());
    assert!(has("  dangling -> does/not/exist"), "{}", ls.show());
    assert!(has("  void/"), "{}", ls.show());
    let json = lb.ok(["ls", "odd", "latest", "--json"]).json();
    let entry = |name: &str| {
        json.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {json}"))
            .clone()
    };
    assert_eq!(entry("caf\\xe9.txt")["kind"], "item");
    assert_eq!(entry("caf\\xe9.txt")["path"], "caf\\xe9.txt");
    assert_eq!(entry("caf\\xe9.txt")["size"], 13);
    assert_eq!(entry("link")["kind"], "link");
    assert_eq!(entry("link")["link"], "caf\\xe9.txt");
    assert_eq!(entry("dangling")["link"], "does/not/exist");
    assert_eq!(entry("empty.bin")["size"], 0);
    assert_eq!(entry("void")["kind"], "folder");

    // A restore gives back the very bytes: names, contents, modes, links, empties.
    let out = dir.path().join("out");
    lb.ok(["restore", "odd", "--snapshot", "latest", "--to", ps(&out)]);
    let got = only_restore_folder(&out);
    assert_same_tree(&src, &got);
    assert_eq!(fs::read(got.join(cafe)).unwrap(), b"latin-1 name\n");
    assert_eq!(fs::read_link(got.join("link")).unwrap().as_os_str(), cafe);
    assert_eq!(
        fs::read(got.join("link")).unwrap(),
        b"latin-1 name\n",
        "the link works"
    );
    // File modification times come back too.
    for (rel, item) in tree(&src) {
        if let Item::File { .. } = item {
            let rel = OsStr::from_bytes(&rel);
            let (a, b) = (
                fs::metadata(src.join(rel)).unwrap(),
                fs::metadata(got.join(rel)).unwrap(),
            );
            assert_eq!(
                (a.mtime(), a.mtime_nsec()),
                (b.mtime(), b.mtime_nsec()),
                "mtime of {rel:?}"
            );
        }
    }
    assert_eq!(
        fs::metadata(got.join("script.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o750
    );
    for (name, mode) in [
        ("read-only.txt", 0o444),
        ("shared.txt", 0o666),
        ("big-read-only.bin", 0o440),
    ] {
        let got = fs::metadata(got.join(name)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(got, mode, "mode of {name}");
    }

    // A second backup of the unchanged tree reads and stores nothing.
    let again = lb.backup_json("odd", 0);
    assert_eq!(again["stats"]["items_read"], 0, "{again}");
    assert_eq!(again["stats"]["stored_bytes"], 0, "{again}");
    let d = lb.ok(["diff", "odd", snap["id"].as_str().unwrap(), "latest"]);
    assert_eq!(d.lines(), ["0 added, 0 changed, 0 removed"]);
}

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

#[test]
fn a_file_of_several_gib_streams_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let big = src.join("huge.img");
    // 4 GiB, sparse but for a few MiB of random data here and there (cheap on disk).
    let len = 4 * GIB + 12_345;
    {
        let mut f = File::create(&big).unwrap();
        f.set_len(len).unwrap();
        for (i, off) in [0, 777 * MIB + 3, 2 * GIB, 3 * GIB + 5 * MIB, len - 3 * MIB]
            .into_iter()
            .enumerate()
        {
            f.seek(SeekFrom::Start(off)).unwrap();
            f.write_all(&random_bytes(&format!("region {i}"), 3 * MIB as usize))
                .unwrap();
        }
    }
    write(&src.join("small.txt"), b"beside the big one\n");
    let lb = Lifeboat::new(dir.path().join("home"));
    lb.add_folder_task("big", &src);

    let t = Instant::now();
    let snap = lb.backup_json("big", 0);
    let backup_time = t.elapsed();
    let rss = snap["peak_rss_bytes"].as_u64().expect("peak_rss_bytes");
    println!(
        "4 GiB backup: {backup_time:.1?}, peak RSS {} MiB, stored {} bytes",
        rss / MIB,
        snap["stats"]["stored_bytes"]
    );
    assert!(rss < 256 * MIB, "peak RSS {} MiB", rss / MIB);
    assert_eq!(snap["stats"]["bytes"], len + 19);
    // The zeros deduplicate: far less than the file is stored.
    assert!(snap["stats"]["stored_bytes"].as_u64().unwrap() < 256 * MIB);

    let out = dir.path().join("out");
    let t = Instant::now();
    lb.ok(["restore", "big", "--snapshot", "latest", "--to", ps(&out)]);
    let restore_time = t.elapsed();
    let got = only_restore_folder(&out).join("huge.img");
    let t = Instant::now();
    assert_same_file(&big, &got);
    println!(
        "4 GiB restore: {restore_time:.1?}, compare: {:.1?}",
        t.elapsed()
    );
    fs::remove_dir_all(&out).unwrap();
}

/// Compares two files block by block (8 MiB), naming the first difference.
fn assert_same_file(a: &Path, b: &Path) {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (la, lb) = (fa.metadata().unwrap().len(), fb.metadata().unwrap().len());
    assert_eq!(la, lb, "lengths of {} and {}", a.display(), b.display());
    let mut ba = vec![0u8; 8 << 20];
    let mut bb = vec![0u8; 8 << 20];
    let mut off = 0u64;
    while off < la {
        let n = (la - off).min(ba.len() as u64) as usize;
        fa.read_exact(&mut ba[..n]).unwrap();
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            let i = (0..n).find(|&i| ba[i] != bb[i]).unwrap();
            panic!(
                "{} and {} differ at byte {}",
                a.display(),
                b.display(),
                off + i as u64
            );
        }
        off += n as u64;
    }
}
