//! `lifeboat demo --files`: the whole cycle on a generated sample folder, checked byte for
//! byte. Like the Microsoft 365 demo (the default, in `demo_m365`), it works on a fresh
//! machine with nothing but this binary: no AWS account, no network.

use crate::home::open_home;
use anyhow::{bail, Context, Result};
use connectors::BuiltIn;
use domain::{ItemPath, TaskId};
use engine::{BackupOptions, ExportOptions, NewTask, NoProgress, RestoreOptions};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: &[&str] = &[
    "meeting", "invoice", "project", "deadline", "budget", "review", "client", "report", "thanks",
    "please", "attached", "update", "team", "call", "next", "week", "the", "and",
];

fn mail(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut body = String::new();
    for _ in 0..(40 + rng.below(400)) {
        body.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
        body.push(if rng.below(12) == 0 { '\n' } else { ' ' });
    }
    format!(
        "From: anna.smith@example.com\r\nTo: bob@example.org\r\nSubject: Message {n}\r\nDate: Tue, 24 Nov 2026 09:{:02}:00 +0000\r\nMessage-ID: <{n}@example.com>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n",
        n % 60
    )
    .into_bytes()
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p)?;
    }
    fs::write(path, data).with_context(|| format!("cannot write {}", path.display()))
}

fn make_sample(root: &Path) -> Result<()> {
    let mut rng = Rng(0x5eed_2026);
    for (i, folder) in ["Inbox", "Sent", "Projects/Alpha", "Projects/Beta"]
        .iter()
        .enumerate()
    {
        for n in 0..60 {
            let id = i * 100 + n;
            write(
                &root.join(folder).join(format!("{id:04}.eml")),
                &mail(&mut rng, id),
            )?;
        }
    }
    // Larger than one blob (4 MiB), so it is chunked and growing it stores only its end.
    let mut blob = vec![0u8; 6 * 1024 * 1024 + 123];
    for b in blob.iter_mut() {
        *b = rng.next() as u8;
    }
    write(&root.join("Attachments/scan.pdf"), &blob)?;
    write(&root.join("Attachments/copy-of-scan.pdf"), &blob)?;
    write(&root.join("empty.txt"), b"")?;
    fs::create_dir_all(root.join("Empty folder"))?;
    write(
        &root.join(std::ffi::OsStr::from_bytes(b"caf\xe9 (latin-1 name).txt")),
        b"a name that is not UTF-8\n",
    )?;
    std::os::unix::fs::symlink("Inbox/0000.eml", root.join("first-mail"))?;
    Ok(())
}

fn mutate(root: &Path) -> Result<()> {
    let mut rng = Rng(0xda72);
    for n in 0..10 {
        let p = root.join(format!("Inbox/{:04}.eml", n * 3));
        let mut d = fs::read(&p)?;
        d.extend_from_slice(b"\r\n-- \r\nedited on day 2\r\n");
        write(&p, &d)?;
    }
    for n in 0..5 {
        write(
            &root.join(format!("Inbox/new-{n}.eml")),
            &mail(&mut rng, 900 + n),
        )?;
    }
    for n in 0..3 {
        fs::remove_file(root.join(format!("Sent/{:04}.eml", 100 + n)))?;
    }
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(root.join("Attachments/scan.pdf"))?;
    std::io::Write::write_all(&mut f, &[7u8; 200_000])?;
    Ok(())
}

/// Every file under `root` (relative path -> content; links as their target).
fn read_tree(root: &Path) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir)? {
            let e = e?;
            let p = e.path();
            let rel = p.strip_prefix(root)?.as_os_str().as_bytes().to_vec();
            let ft = e.file_type()?;
            if ft.is_dir() {
                out.insert([rel, b"/".to_vec()].concat(), Vec::new());
                stack.push(p);
            } else if ft.is_symlink() {
                out.insert(rel, fs::read_link(&p)?.as_os_str().as_bytes().to_vec());
            } else {
                out.insert(rel, fs::read(&p)?);
            }
        }
    }
    Ok(out)
}

/// Runs the demo of `files` (a local folder) or, by default, of a Microsoft 365
/// organisation served by the Graph simulator.
pub async fn run(dir: Option<PathBuf>, files: bool) -> Result<u8> {
    let dir = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!(
            "lifeboat-demo-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
        )),
    };
    if dir.exists() && fs::read_dir(&dir)?.next().is_some() {
        bail!(
            "{} is not empty; give the demo a new folder with --dir",
            dir.display()
        );
    }
    if files {
        run_files(dir).await
    } else {
        crate::demo_m365::run(dir).await
    }
}

async fn run_files(dir: PathBuf) -> Result<u8> {
    let sample = dir.join("sample");
    let home = dir.join("home");
    let restore_to = dir.join("restore");
    println!("Lifeboat demo (a local folder) in {}", dir.display());
    make_sample(&sample)?;
    let day1 = read_tree(&sample)?;
    println!("1. sample folder: {} files and folders", day1.len());

    let eng = open_home(&home)?;
    let task = eng
        .add_task(
            NewTask {
                name: TaskId::new("demo")?,
                source: folder::FolderSettings::new(&sample)?.to_source(),
                secret: None,
                backup_hour: None,
            },
            &BuiltIn,
        )
        .await?;
    let connector = eng.connector(&task, &BuiltIn).await?;
    let account = eng
        .refresh_accounts(&task, connector.as_ref())
        .await?
        .remove(0)
        .id;
    let backup = || async {
        eng.backup(
            &task,
            &account,
            connector.as_ref(),
            &BackupOptions::default(),
        )
        .await?
        .into_snapshot()
    };
    let s1 = backup().await?;
    println!(
        "2. backup 1: snapshot {}: {} items, {} bytes, {} stored ({} blobs, the duplicate attachment stored once)",
        s1.id, s1.stats.items, s1.stats.bytes, s1.stats.stored_bytes, s1.stats.new_blobs
    );

    mutate(&sample)?;
    let day2 = read_tree(&sample)?;
    let s2 = backup().await?;
    println!(
        "3. changed 10 messages, added 5, deleted 3, grew an attachment; backup 2: snapshot {}: read {} of {} items, stored {} new bytes",
        s2.id, s2.stats.items_read, s2.stats.items, s2.stats.stored_bytes
    );
    let changes = eng.diff(&task, &s1, &s2).await?;
    println!(
        "4. diff: {} changes between the two snapshots",
        changes.len()
    );

    let report = eng
        .restore_to_dir(
            &task,
            &s2,
            &restore_to,
            &RestoreOptions::default(),
            &NoProgress,
        )
        .await?;
    let restored = read_tree(&report.target)?;
    if restored != day2 {
        bail!("restore of snapshot 2 differs from the sample folder");
    }
    println!(
        "5. restored snapshot 2 into {}: {} files, byte-equal to the folder",
        report.target.display(),
        report.files
    );

    let one = ItemPath::parse(b"Sent/0100.eml")?;
    let opts = RestoreOptions {
        include: vec![one],
        ..Default::default()
    };
    // A second restore in the same second would reuse the label; labels are per second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r1 = eng
        .restore_to_dir(&task, &s1, &restore_to, &opts, &NoProgress)
        .await?;
    let got = fs::read(r1.target.join("Sent/0100.eml"))?;
    if Some(&got) != day1.get(b"Sent/0100.eml".as_slice()) {
        bail!("the deleted message restored from snapshot 1 differs from the original");
    }
    println!("6. restored a message deleted on day 2 from snapshot 1: byte-equal");

    let zip = dir.join("export.zip");
    let ex = eng
        .export(&task, &s2, &zip, &ExportOptions::default(), &NoProgress)
        .await?;
    println!(
        "7. exported snapshot 2 to {}: {} files",
        zip.display(),
        ex.items
    );

    let v = eng.verify(&task, &NoProgress).await?;
    if !v.is_ok() {
        bail!("verify found damage: {:?}", v.damage);
    }
    println!(
        "8. verify: {} packs, {} blobs, {} snapshots: no damage",
        v.packs, v.blobs, v.snapshots
    );
    println!(
        "demo passed. Explore it: lifeboat --home {} snapshots demo",
        home.display()
    );
    Ok(0)
}
