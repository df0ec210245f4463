//! `lifeboat snapshots` and `lifeboat ls`: the snapshots of a task, and a folder of one.

use crate::home::{parse_account, parse_path, print_json, task_and_snapshot};
use anyhow::Result;
use engine::view::EntryKindView;
use engine::{Engine, SnapshotView};

#[derive(clap::Args)]
pub struct SnapshotsArgs {
    task: String,
    #[arg(long)]
    account: Option<String>,
    #[arg(long)]
    json: bool,
}

pub async fn snapshots(eng: &Engine, args: SnapshotsArgs) -> Result<u8> {
    let task = eng.task(&args.task).await?;
    let mut snaps = eng.snapshots(&task).await?;
    if let Some(a) = parse_account(&args.account)? {
        snaps.retain(|s| s.account == a);
    }
    if args.json {
        let v: Vec<SnapshotView> = snaps.iter().map(SnapshotView::from).collect();
        print_json(&v)?;
    } else {
        println!(
            "{:<27} {:<20} {:<10} {:>8} {:>12}",
            "ID", "TAKEN (UTC)", "ACCOUNT", "ITEMS", "BYTES"
        );
        for s in snaps {
            println!(
                "{:<27} {:<20} {:<10} {:>8} {:>12}",
                s.id,
                s.taken_at.format("%Y-%m-%d %H:%M:%S"),
                s.account,
                s.stats.items,
                s.stats.bytes
            );
        }
    }
    Ok(0)
}

#[derive(clap::Args)]
pub struct LsArgs {
    task: String,
    /// A snapshot id (or unique prefix), or `latest`.
    snapshot: String,
    path: Option<String>,
    #[arg(long)]
    account: Option<String>,
    #[arg(long)]
    json: bool,
}

pub async fn ls(eng: &Engine, args: LsArgs) -> Result<u8> {
    let (task, snap) = task_and_snapshot(eng, &args.task, &args.snapshot, &args.account).await?;
    let path = parse_path(args.path.as_deref().unwrap_or(""))?;
    let entries = eng.browse(&task, &snap, &path).await?;
    if args.json {
        print_json(&entries)?;
    } else {
        for e in entries {
            let name = match e.kind {
                EntryKindView::Folder => format!("{}/", e.name),
                EntryKindView::Link => {
                    format!("{} -> {}", e.name, e.link.as_deref().unwrap_or_default())
                }
                EntryKindView::Item => e.name,
            };
            println!(
                "{:>12}  {}  {name}",
                e.size,
                e.modified.format("%Y-%m-%d %H:%M")
            );
        }
    }
    Ok(0)
}
