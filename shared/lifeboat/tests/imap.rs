//! `lifeboat` with IMAP tasks against a real Dovecot (started once for this test binary by
//! `infra/dovecot.sh`): add, back up, back up again, restore into another mailbox, export
//! as mbox and zip; clear one-line errors for refused credentials and missing variables.

mod common;

use common::{assert_error_line, assert_no_panic, ps, Lifeboat, Run};
use imap::testing::{dovecot, seed};
use imap::TlsMode;
use std::io::Read;

/// Runs `lifeboat ARGS` with `vars` set in its environment.
fn run_env(lb: &Lifeboat, args: &[&str], vars: &[(&str, &str)]) -> Run {
    let mut c = lb.command(args);
    for (k, v) in vars {
        c.env(k, v);
    }
    let out = c.output().expect("run lifeboat");
    Run {
        what: format!("lifeboat {}", args.join(" ")),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn imap_task_from_the_command_line() {
    let d = dovecot();
    let u = d.new_user();
    let other = d.new_user();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seeded = rt.block_on(seed(&d.config(&u, TlsMode::Starttls)));
    let dir = tempfile::tempdir().unwrap();
    let lb = Lifeboat::new(dir.path().join("home"));
    let ca = d.dir.join("ca.pem");
    let port = d.imap_port.to_string();
    let imaps = d.imaps_port.to_string();
    let add = |name: &str, user: &str, pw: &str, tls: &str, port: &str| {
        run_env(
            &lb,
            &[
                "task",
                "add",
                "imap",
                name,
                "--host",
                "127.0.0.1",
                "--port",
                port,
                "--user",
                user,
                "--password-env",
                "LB_TEST_PW",
                "--tls",
                tls,
                "--ca-file",
                ps(&ca),
            ],
            &[("LB_TEST_PW", pw)],
        )
    };

    // A wrong password: one clear line, no secret, no task left behind.
    let wrong = "Wr0ng-secret-value";
    let r = add("mail", &u.name, wrong, "starttls", &port);
    let line = assert_error_line(&r);
    assert!(
        line.contains("refused the login") && !line.contains(wrong),
        "{line}"
    );
    assert!(lb.ok(["task", "list"]).stdout.trim().is_empty());
    // A variable that is not set.
    let r = run_env(
        &lb,
        &[
            "task",
            "add",
            "imap",
            "mail",
            "--host",
            "127.0.0.1",
            "--user",
            "x",
            "--password-env",
            "LB_TEST_UNSET",
        ],
        &[],
    );
    assert!(assert_error_line(&r).contains("LB_TEST_UNSET"));

    let r = add("mail", &u.name, &u.password, "starttls", &port);
    assert_eq!(r.code, Some(0), "{}", r.show());
    assert_no_panic(&r);
    let r = add("other", &other.name, &other.password, "implicit", &imaps);
    assert_eq!(r.code, Some(0), "{}", r.show());
    let listed = lb.ok(["task", "list", "--json"]).stdout;
    assert!(
        !listed.contains(&u.password),
        "a listing shows the password"
    );

    let s1 = lb.backup_json("mail", 0);
    assert_eq!(s1["stats"]["items"], seeded.messages.len() as u64);
    let s2 = lb.backup_json("mail", 0);
    assert_eq!(
        s2["stats"]["items_read"], 0,
        "nothing changed, nothing read"
    );
    let ls = lb
        .ok(["ls", "mail", "latest", "Projekte/Größe/Ünïcødé 📬"])
        .stdout;
    assert!(ls.contains(".eml"), "{ls}");

    // Restore into the other mailbox, and see it there. Its account is recorded by its
    // first backup: before that, the restore is refused and says so.
    let e = lb.fail([
        "restore",
        "mail",
        "--snapshot",
        "latest",
        "--to-task",
        "other",
    ]);
    assert!(e.contains("other") && e.contains("back it up"), "{e}");
    let before = lb.backup_json("other", 0);
    assert_eq!(before["stats"]["items"], 0, "{before}");
    let r = lb.ok([
        "restore",
        "mail",
        "--snapshot",
        "latest",
        "--to-task",
        "other",
    ]);
    assert!(r.stdout.contains("Lifeboat Restore"), "{}", r.show());
    let after = lb.backup_json("other", 0);
    let top = lb.ok(["ls", "other", "latest"]).stdout;
    assert!(
        top.lines()
            .any(|l| l.ends_with("/") && l.contains("Lifeboat Restore ")),
        "no restore folder in the other mailbox:\n{top}"
    );
    // Every message is there: the other mailbox, empty before, now holds as many.
    assert!(!seeded.messages.is_empty());
    assert_eq!(
        after["stats"]["items"],
        seeded.messages.len() as u64,
        "{after}"
    );
    // A destination task that does not exist is refused clearly.
    let e = lb.fail([
        "restore",
        "mail",
        "--snapshot",
        "latest",
        "--to-task",
        "nope",
    ]);
    assert!(e.contains("nope"), "{e}");

    // Export: mbox and zip.
    let mbox = dir.path().join("mail.mbox");
    lb.ok([
        "export",
        "mail",
        "--snapshot",
        "latest",
        "--mbox",
        ps(&mbox),
    ]);
    let text = std::fs::read(&mbox).unwrap();
    assert!(text.starts_with(b"From MAILER-DAEMON "));
    // One `From ` line a message (a body's own `From ` lines are quoted as `>From `).
    let from_lines = text
        .split(|b| *b == b'\n')
        .filter(|l| l.starts_with(b"From "))
        .count();
    assert_eq!(from_lines, seeded.messages.len(), "one From line a message");
    let zip_path = dir.path().join("mail.zip");
    lb.ok([
        "export",
        "mail",
        "--snapshot",
        "latest",
        "--zip",
        ps(&zip_path),
    ]);
    let mut z = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    let mut bodies = Vec::new();
    for i in 0..z.len() {
        let mut f = z.by_index(i).unwrap();
        if f.name().ends_with(".eml") {
            let mut b = Vec::new();
            f.read_to_end(&mut b).unwrap();
            bodies.push(b);
        }
    }
    for m in &seeded.messages {
        assert!(
            bodies.contains(&m.body),
            "a message of {} is not in the zip",
            m.folder
        );
    }
    let e = lb.fail([
        "export",
        "mail",
        "--snapshot",
        "latest",
        "--mbox",
        ps(&mbox),
    ]);
    assert!(e.contains("already exists"), "{e}");
}
