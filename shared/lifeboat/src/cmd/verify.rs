//! `lifeboat verify`: every stored object of every task read and checked; exit status 2 on
//! any damage, with the items each damaged object affects.

use super::EXIT_DAMAGE;
use crate::home::print_json;
use crate::progress::Bar;
use anyhow::Result;
use domain::TaskId;
use engine::{Engine, VerifyReport};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Shown {
    task: TaskId,
    #[serde(flatten)]
    report: VerifyReport,
}

pub async fn run(eng: &Engine, args: Args) -> Result<u8> {
    let mut all_ok = true;
    let mut out = Vec::new();
    for task in eng.tasks().await? {
        let bar = Bar::bytes(&format!("verify {}", task.name));
        let report = eng.verify(&task, &bar).await?;
        bar.finish();
        all_ok &= report.is_ok();
        if !args.json {
            println!(
                "task {}: {} packs, {} blobs, {} bytes, {} snapshots checked: {}",
                task.name,
                report.packs,
                report.blobs,
                report.bytes,
                report.snapshots,
                if report.is_ok() {
                    "no damage".to_string()
                } else {
                    format!("{} damaged objects", report.damage.len())
                }
            );
            for d in &report.damage {
                println!("  DAMAGED {}: {}", d.object, d.problem);
                for a in &d.affects {
                    println!("    affects {a}");
                }
                if d.affects.is_empty() {
                    println!("    affects no snapshot");
                }
            }
            if !report.affected_snapshots.is_empty() {
                println!("  snapshots that cannot be restored whole:");
                for s in &report.affected_snapshots {
                    println!("    {s}");
                }
            }
            if report.marked > 0 {
                println!(
                    "  {} damaged items recorded: the next backup stores them again where the source still has them",
                    report.marked
                );
            }
        }
        out.push(Shown {
            task: task.name,
            report,
        });
    }
    if args.json {
        print_json(&out)?;
    }
    Ok(if all_ok { 0 } else { EXIT_DAMAGE })
}
