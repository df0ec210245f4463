//! `lifeboat diff`: what was added, changed and removed between two snapshots.

use crate::home::{parse_account, print_json};
use anyhow::Result;
use engine::{ChangeKind, Engine};

#[derive(clap::Args)]
pub struct Args {
    task: String,
    snap_a: String,
    snap_b: String,
    #[arg(long)]
    account: Option<String>,
    #[arg(long)]
    json: bool,
}

pub async fn run(eng: &Engine, args: Args) -> Result<u8> {
    let task = eng.task(&args.task).await?;
    let acc = parse_account(&args.account)?;
    let a = eng
        .resolve_snapshot(&task, &args.snap_a, acc.as_ref())
        .await?;
    let b = eng
        .resolve_snapshot(&task, &args.snap_b, acc.as_ref())
        .await?;
    let changes = eng.diff(&task, &a, &b).await?;
    if args.json {
        print_json(&changes)?;
    } else {
        for c in &changes {
            let sign = match c.kind {
                ChangeKind::Added => '+',
                ChangeKind::Changed => 'M',
                ChangeKind::Removed => '-',
            };
            println!("{sign} {}", c.path);
        }
        let count = |k| changes.iter().filter(|c| c.kind == k).count();
        println!(
            "{} added, {} changed, {} removed",
            count(ChangeKind::Added),
            count(ChangeKind::Changed),
            count(ChangeKind::Removed)
        );
    }
    Ok(0)
}
