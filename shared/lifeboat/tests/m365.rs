//! `lifeboat task add m365` and a backup of a simulated Microsoft 365 organisation, through
//! the command line (the simulator follows Microsoft's Graph documentation).

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_m365_task_is_added_backed_up_and_browsed() {
    let cfg = graphsim::Config {
        users: 2,
        ..Default::default()
    };
    let secret = cfg.client_secret.clone();
    let sim = graphsim::spawn(cfg.clone()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lb = Lifeboat::new(dir.path().join("home"));
    let add = |secret: &str, name: &str| {
        let mut c = lb.command([
            "task",
            "add",
            "m365",
            name,
            "--tenant-id",
            &cfg.tenant_id,
            "--client-id",
            &cfg.client_id,
            "--client-secret-env",
            "LB_M365_SECRET",
            "--graph-url",
            &sim.base_url,
            "--login-url",
            &sim.base_url,
        ]);
        c.env("LB_M365_SECRET", secret);
        c
    };

    // A wrong secret is refused at once, in one line, without the secret.
    let out = tokio::task::spawn_blocking({
        let mut c = add("not-the-secret-x1", "wrong");
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("not-the-secret-x1"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let list = lb.ok(["task", "list"]);
    assert!(
        !list.stdout.contains("wrong"),
        "no task is added: {}",
        list.stdout
    );

    let out = tokio::task::spawn_blocking({
        let mut c = add(&secret, "org");
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("task org added"), "{said}");

    let lb2 = Lifeboat::new(lb.home.clone());
    let backup = tokio::task::spawn_blocking(move || lb2.run(["backup", "org", "--json"]))
        .await
        .unwrap();
    assert_eq!(backup.code, Some(0), "{}", backup.show());
    let snaps = lb.ok(["snapshots", "org", "--json"]).json();
    let snaps = snaps.as_array().unwrap();
    assert!(
        snaps.len() >= 2,
        "one snapshot per user at least: {snaps:?}"
    );
    let user = snaps
        .iter()
        .map(|s| s["account"].as_str().unwrap().to_string())
        .find(|a| a.contains('@'))
        .expect("a user account");
    let root = lb.ok(["ls", "org", "latest", "--account", &user]);
    assert!(root.stdout.contains("Mail"), "{}", root.stdout);

    // A restore narrowed by days: none of the mail is from the next century, all of it
    // from before.
    let restore = |range: &str, day: &str| {
        lb.ok([
            "restore",
            "org",
            "--snapshot",
            "latest",
            "--account",
            &user,
            "--include",
            "Mail",
            range,
            day,
            "--json",
        ])
        .json()["items"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(restore("--since", "2100-01-01"), 0);
    assert!(restore("--until", "2100-01-01") > 0);
    // To another user of the organisation: the restore lands in that user's mailbox.
    let other = snaps
        .iter()
        .map(|s| s["account"].as_str().unwrap().to_string())
        .find(|a| a.contains('@') && *a != user)
        .expect("a second user");
    let to_other = lb
        .ok([
            "restore",
            "org",
            "--snapshot",
            "latest",
            "--account",
            &user,
            "--include",
            "Mail/Inbox",
            "--to-account",
            &other,
            "--json",
        ])
        .json();
    assert!(to_other["items"].as_u64().unwrap() > 0, "{to_other}");
    let label = to_other["target"]
        .as_str()
        .unwrap()
        .trim_start_matches("Mail/")
        .to_string();
    let has_label = |upn: &str| {
        let s = sim.shared.sim();
        let u = s.user(upn).unwrap();
        s.mailboxes[u]
            .mail
            .folders
            .values()
            .any(|f| f.name == label)
    };
    assert!(has_label(&other), "{label} in {other}'s mailbox");
    let err = lb.fail([
        "restore",
        "org",
        "--snapshot",
        "latest",
        "--account",
        &user,
        "--to-account",
        "nobody@contoso.example",
    ]);
    assert!(err.contains("no account nobody@contoso.example"), "{err}");

    // An export narrowed the same way holds only the selected messages, and no empty
    // folders.
    let export = |range: &str, name: &str| {
        let zip = dir.path().join(name);
        let out = lb.ok([
            "export",
            "org",
            "--snapshot",
            "latest",
            "--account",
            &user,
            "--include",
            "Mail",
            range,
            "2100-01-01",
            "--zip",
            zip.to_str().unwrap(),
        ]);
        out.stdout
    };
    let none = export("--since", "none.zip");
    assert!(none.contains(": 0 files, 0 folders"), "{none}");
    let all = export("--until", "all.zip");
    assert!(
        all.contains(" folders") && !all.contains(": 0 files"),
        "{all}"
    );
    assert!(all.contains(" files, 0 folders"), "{all}");
    let messages = {
        let f = std::fs::File::open(dir.path().join("all.zip")).unwrap();
        let mut z = zip::ZipArchive::new(f).expect("a valid zip");
        (0..z.len())
            .filter(|&i| z.by_index(i).unwrap().name().ends_with(".eml"))
            .count()
    };
    assert!(messages > 0);

    // The mbox export is the engine's, for every mail source: Microsoft 365 mail too,
    // narrowed the same way, one `From ` line a message.
    let mbox = |range: &str, name: &str| {
        let path = dir.path().join(name);
        let out = lb.ok([
            "export",
            "org",
            "--snapshot",
            "latest",
            "--account",
            &user,
            "--include",
            "Mail",
            range,
            "2100-01-01",
            "--mbox",
            path.to_str().unwrap(),
        ]);
        (out.stdout, std::fs::read(&path).unwrap())
    };
    let (none, text) = mbox("--since", "none.mbox");
    assert!(none.contains(": 0 messages, 0 bytes"), "{none}");
    assert!(text.is_empty(), "an empty mbox: {} bytes", text.len());
    let (all, text) = mbox("--until", "all.mbox");
    assert!(all.contains(&format!(": {messages} messages, ")), "{all}");
    assert!(text.starts_with(b"From "), "{all}");
    let from_lines = text
        .split(|b| *b == b'\n')
        .filter(|l| l.starts_with(b"From "))
        .count();
    assert_eq!(from_lines, messages, "one From line a message");
    let e = lb.fail([
        "export",
        "org",
        "--snapshot",
        "latest",
        "--account",
        &user,
        "--mbox",
        dir.path().join("all.mbox").to_str().unwrap(),
    ]);
    assert!(e.contains("already exists"), "{e}");

    // A day that is not a date is a usage error naming the flag, and nothing is restored.
    let bad = lb.run([
        "restore",
        "org",
        "--snapshot",
        "latest",
        "--account",
        &user,
        "--since",
        "yesterday",
    ]);
    assert_eq!(bad.code, Some(2), "{}", bad.show());
    assert!(
        bad.stderr.contains("'--since <YYYY-MM-DD>'"),
        "{}",
        bad.show()
    );
    // The catalog's bytes on disk: the database and any write-ahead log SQLite has not
    // folded into it yet. The task's settings are there in clear (its client id): the scan
    // sees the task record, and the secret beside them is sealed.
    let mut raw = Vec::new();
    for file in ["catalog.db", "catalog.db-wal"] {
        match std::fs::read(lb.home.join(file)) {
            Ok(bytes) => raw.extend(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("{file}: {e}"),
        }
    }
    let has = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
    assert!(
        has(cfg.client_id.as_bytes()),
        "the task record is not in the catalog's files"
    );
    assert!(!has(secret.as_bytes()), "the secret is sealed");

    // A renewed secret replaces the old one only once it signs in.
    let set = |value: &str| {
        let mut c = lb.command(["task", "set-secret", "org", "--secret-env", "LB_NEW"]);
        c.env("LB_NEW", value);
        c
    };
    let out = tokio::task::spawn_blocking({
        let mut c = set("renewed-but-wrong-x2");
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("renewed-but-wrong-x2"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let out = tokio::task::spawn_blocking({
        let mut c = set(&secret);
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The task still backs up with the secret it holds now.
    let lb3 = Lifeboat::new(lb.home.clone());
    let again = tokio::task::spawn_blocking(move || lb3.run(["backup", "org", "--account", &user]))
        .await
        .unwrap();
    assert_eq!(again.code, Some(0), "{}", again.show());
    let err = lb.fail(["task", "set-secret", "nosuch", "--secret-env", "LB_NEW"]);
    assert!(err.contains("nosuch") || err.contains("LB_NEW"), "{err}");
}
