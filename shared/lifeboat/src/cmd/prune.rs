//! `lifeboat prune` and `lifeboat repack`: a task's space reclaimed. Dead packs are
//! condemned first and deleted by a later prune once the grace period has passed, so both
//! are safe beside a running backup (see ARCHITECTURE.md, "Prune and repack").

use crate::home::print_json;
use anyhow::{bail, Result};
use engine::{Engine, NoProgress, PruneOptions, PruneReport, TaskPruneReport, DEFAULT_GRACE};

#[derive(clap::Args)]
pub struct Args {
    /// The task (every task when omitted).
    task: Option<String>,
    /// How long a condemned pack waits before a prune deletes it, as `30s`, `15m`, `24h`
    /// or `7d`. `0s` deletes dead packs at once: only when no backup is running.
    #[arg(long, value_parser = parse_grace, default_value = "24h")]
    grace: chrono::Duration,
    #[arg(long)]
    json: bool,
}

/// A duration such as `90s`, `15m`, `24h` or `7d`.
pub fn parse_grace(s: &str) -> std::result::Result<chrono::Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration such as 30s, 15m, 24h or 7d"))?;
    let d = match unit {
        "s" => chrono::Duration::try_seconds(n),
        "m" => chrono::Duration::try_minutes(n),
        "h" => chrono::Duration::try_hours(n),
        "d" => chrono::Duration::try_days(n),
        _ => None,
    };
    d.ok_or_else(|| format!("`{s}` is not a duration such as 30s, 15m, 24h or 7d"))
}

#[derive(serde::Serialize)]
struct Shown {
    task: domain::TaskId,
    #[serde(flatten)]
    report: TaskPruneReport,
}

pub async fn run(eng: &Engine, args: Args, repack: bool) -> Result<u8> {
    let tasks = match &args.task {
        Some(t) => vec![eng.task(t).await?],
        None => eng.tasks().await?,
    };
    if tasks.is_empty() {
        bail!("there are no tasks");
    }
    let opts = PruneOptions {
        now: chrono::Utc::now(),
        grace: args.grace,
        repack,
    };
    let mut out = Vec::new();
    let mut held = false;
    for task in tasks {
        let report = eng.prune(&task, &opts, &NoProgress).await?;
        if !args.json {
            print_report(&task.name, &report.total, repack, args.grace);
            for a in &report.accounts {
                if let Some(why) = &a.report.held_back {
                    println!("  account {}: nothing deleted: {why}", a.account);
                }
            }
        }
        held |= report.accounts.iter().any(|a| a.report.held_back.is_some());
        out.push(Shown {
            task: task.name,
            report,
        });
    }
    if args.json {
        print_json(&out)?;
    }
    Ok(if held { super::EXIT_PARTIAL } else { 0 })
}

fn print_report(task: &domain::TaskId, t: &PruneReport, repack: bool, grace: chrono::Duration) {
    println!(
        "task {task}: {} packs ({} bytes), {} in use",
        t.packs, t.bytes, t.live_packs
    );
    if repack {
        println!(
            "  repacked {} packs ({} bytes): {} records moved into {} new packs",
            t.repacked, t.repacked_bytes, t.moved_blobs, t.new_packs
        );
    }
    println!(
        "  deleted {} packs ({} bytes); condemned {} ({} bytes); {} waiting for their grace of {}; {} revived",
        t.deleted,
        t.deleted_bytes,
        t.condemned,
        t.condemned_bytes,
        t.waiting,
        show_grace(grace),
        t.revived
    );
    if !repack && t.dead_bytes_in_live_packs > 0 {
        println!(
            "  {} bytes no snapshot needs are in packs still in use: `lifeboat repack` frees them",
            t.dead_bytes_in_live_packs
        );
    }
}

fn show_grace(g: chrono::Duration) -> String {
    if g == DEFAULT_GRACE {
        "24h".into()
    } else {
        format!("{}s", g.num_seconds())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graces_parse_and_nonsense_is_refused() {
        assert_eq!(parse_grace("24h"), Ok(chrono::Duration::hours(24)));
        assert_eq!(parse_grace("0s"), Ok(chrono::Duration::zero()));
        assert_eq!(parse_grace("7d"), Ok(chrono::Duration::days(7)));
        assert!(parse_grace("12").is_err());
        assert!(parse_grace("h").is_err());
        assert!(parse_grace("3w").is_err());
    }
}
