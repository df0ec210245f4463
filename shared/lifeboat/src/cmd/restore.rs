//! `lifeboat restore`: a snapshot (or some of it) back into its source, by default into a
//! new "Lifeboat Restore <time>" folder of the same account (or another account, of this
//! task or another's); or, with `--to DIR`, into a local folder whatever the source.

use super::EXIT_PARTIAL;
use crate::home::{parse_paths, print_json, task_and_snapshot, Select};
use crate::progress::Bar;
use anyhow::Result;
use connectors::BuiltIn;
use domain::{AccountId, OnConflict, TaskId};
use engine::{Destination, Engine, RestoreOptions};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    task: String,
    #[arg(long)]
    snapshot: String,
    /// Restore into this local folder instead of the source (mail as .eml files,
    /// contacts as .vcf, files as they were).
    #[arg(long, value_name = "DIR")]
    to: Option<PathBuf>,
    /// Restore into the source of this other task (another mailbox, another domain) of
    /// the same connector.
    #[arg(long, value_name = "TASK", conflicts_with = "to")]
    to_task: Option<String>,
    /// Restore into this account (another user, of this task or of --to-task's).
    #[arg(long, value_name = "ACCOUNT", conflicts_with = "to")]
    to_account: Option<String>,
    /// Restore only these paths (repeatable).
    #[arg(long, value_name = "PATH")]
    include: Vec<String>,
    /// Restore in place instead of into a new labelled folder.
    #[arg(long)]
    in_place: bool,
    /// What an in-place restore does with items that exist: skip, copy or replace.
    #[arg(long, default_value = "skip", requires = "in_place")]
    on_conflict: OnConflict,
    /// With --to: wait until every restored file is on the disk before finishing.
    #[arg(long, requires = "to")]
    sync: bool,
    #[command(flatten)]
    select: Select,
    #[arg(long)]
    account: Option<String>,
    #[arg(long)]
    json: bool,
}

pub async fn run(eng: &Engine, args: Args) -> Result<u8> {
    let (task, snap) = task_and_snapshot(eng, &args.task, &args.snapshot, &args.account).await?;
    let opts = RestoreOptions {
        include: parse_paths(&args.include)?,
        in_place: args.in_place,
        on_conflict: args.on_conflict,
        label: String::new(),
        at: None,
        filter: args.select.filter(),
        sync: args.sync,
    };
    let Some(to) = args.to else {
        let dest = Destination {
            task: args.to_task.as_deref().map(TaskId::new).transpose()?,
            account: args.to_account.as_deref().map(AccountId::new).transpose()?,
        };
        let report = eng.restore(&task, &snap, &dest, &opts, &BuiltIn).await?;
        if args.json {
            print_json(&report)?;
        } else {
            println!(
                "restored snapshot {} into {} of task {}: {} items, {} folders, {} bytes{}",
                snap.id,
                report.target,
                dest.task.as_ref().unwrap_or(&task.name),
                report.items,
                report.folders,
                report.bytes,
                skipped(report.skipped),
            );
            for e in &report.errors {
                eprintln!("lifeboat: {e}");
            }
        }
        return Ok(if report.errors.is_empty() {
            0
        } else {
            EXIT_PARTIAL
        });
    };
    let bar = Bar::bytes("restore");
    let report = eng.restore_to_dir(&task, &snap, &to, &opts, &bar).await?;
    bar.finish();
    if args.json {
        print_json(&report)?;
    } else {
        println!(
            "restored snapshot {} into {}: {} files, {} folders, {} bytes{}{}",
            snap.id,
            report.target.display(),
            report.files,
            report.folders,
            report.bytes,
            skipped(report.skipped),
            if report.copies > 0 {
                format!(
                    ", {} restored as copies beside existing items",
                    report.copies
                )
            } else {
                String::new()
            },
        );
        for e in &report.errors {
            eprintln!("lifeboat: {e}");
        }
    }
    Ok(if report.errors.is_empty() {
        0
    } else {
        EXIT_PARTIAL
    })
}

fn skipped(n: u64) -> String {
    if n > 0 {
        format!(", {n} skipped (exist)")
    } else {
        String::new()
    }
}
