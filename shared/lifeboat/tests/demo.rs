//! `lifeboat demo`, the README's first command: both demos run to the end on a fresh
//! machine (no home, no network beyond 127.0.0.1), check their own results, and refuse a
//! folder that is not empty.

mod common;

use common::*;

#[test]
fn the_microsoft_365_demo_runs_and_checks_itself() {
    let dir = tempfile::tempdir().unwrap();
    let lb = Lifeboat::new(dir.path().join("unused-home"));
    let at = dir.path().join("demo");
    let r = lb.ok(["demo", "--dir", ps(&at)]);
    for step in [
        "task contoso added",
        "day 1:",
        "day 2:",
        "diff of",
        "restored a message deleted on day 2",
        "each read back through Graph byte-equal",
        "exported",
        "no damage",
        "demo passed",
    ] {
        assert!(r.stdout.contains(step), "{step:?} missing:\n{}", r.show());
    }
    // The snapshots stay, and the CLI reads them.
    let home = Lifeboat::new(at.join("home"));
    let snaps = home.ok(["snapshots", "contoso", "--json"]).json();
    assert_eq!(snaps.as_array().unwrap().len(), 16, "8 accounts, 2 days");
    assert!(at.join("export.zip").is_file());
}

#[test]
fn the_folder_demo_runs_and_a_used_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lb = Lifeboat::new(dir.path().join("unused-home"));
    let at = dir.path().join("demo");
    let r = lb.ok(["demo", "--files", "--dir", ps(&at)]);
    assert!(r.stdout.contains("demo passed"), "{}", r.show());
    let err = lb.fail(["demo", "--dir", ps(&at)]);
    assert!(err.contains("is not empty"), "{err}");
}
