//! `lifeboat backup`: every account of a task (as its source lists them now), or one.

use super::EXIT_PARTIAL;
use crate::home::{parse_account, print_json};
use crate::progress::Bar;
use anyhow::Result;
use connectors::BuiltIn;
use domain::TaskId;
use engine::{BackupOptions, Engine, ItemError, SnapshotRecord, SnapshotView};
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    task: String,
    #[arg(long)]
    account: Option<String>,
    #[arg(long)]
    json: bool,
}

/// A snapshot as `--json` shows it: the engine's view, with this process's peak memory
/// (what the benchmark reads).
#[derive(serde::Serialize)]
struct Shown {
    #[serde(flatten)]
    snapshot: SnapshotView,
    peak_rss_bytes: Option<u64>,
}

pub async fn run(eng: &Engine, args: Args) -> Result<u8> {
    let task = eng.task(&args.task).await?;
    let connector = eng.connector(&task, &BuiltIn).await?;
    // The source says which accounts there are now (a task's first backup records them).
    let listed: Vec<_> = eng
        .refresh_accounts(&task, connector.as_ref())
        .await?
        .into_iter()
        .map(|a| a.id)
        .collect();
    let accounts = match parse_account(&args.account)? {
        // An account the source no longer lists keeps its record: the engine's backup finds
        // it, or names the accounts there are.
        Some(a) => vec![a],
        None => listed,
    };
    let mut code = 0;
    let mut out = Vec::new();
    for a in accounts {
        let bar = Bar::bytes(&format!("backup {}/{a}", task.name));
        let opts = BackupOptions {
            progress: Arc::new(bar.clone()),
            deadline: None,
        };
        let snap = eng
            .backup(&task, &a, connector.as_ref(), &opts)
            .await?
            .into_snapshot()?;
        bar.finish();
        let errors = if snap.error_count > 0 {
            code = EXIT_PARTIAL;
            eng.snapshot_errors(&task, &snap).await?
        } else {
            Vec::new()
        };
        if args.json {
            out.push(Shown {
                snapshot: SnapshotView::from(&snap).with_errors(errors),
                peak_rss_bytes: peak_rss_bytes(),
            });
        } else {
            print_backup(&task.name, &snap, &errors);
        }
    }
    if args.json {
        print_json(&out)?;
    }
    Ok(code)
}

fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn print_backup(task: &TaskId, s: &SnapshotRecord, errors: &[ItemError]) {
    let st = &s.stats;
    println!(
        "snapshot {} of {task}/{}: {} items ({} read), {} folders, {} bytes; stored {} new bytes in {} blobs, {} packs",
        s.id, s.account, st.items, st.items_read, st.folders, st.bytes, st.stored_bytes, st.new_blobs, st.packs_written
    );
    let (notes, failures): (Vec<&ItemError>, Vec<&ItemError>) = errors.iter().partition(|e| e.note);
    if s.error_count > 0 {
        eprintln!("lifeboat: {} items had problems:", s.error_count);
        for e in &failures {
            eprintln!("  {}: {}", e.path, e.message);
        }
        if s.error_count as usize > failures.len() {
            eprintln!("  … and {} more", s.error_count as usize - failures.len());
        }
    }
    // Not failures (an item deleted at the source while the backup ran, a file stored
    // with a size other than the listed one), but nothing changes without a word.
    for e in notes {
        eprintln!("lifeboat: note: {}: {}", e.path, e.message);
    }
}
