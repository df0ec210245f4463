//! `lifeboat export`: a snapshot (or some of it) as a zip, or its mail as one mbox file.

use crate::home::{parse_paths, task_and_snapshot, Select};
use crate::progress::Bar;
use anyhow::Result;
use engine::{Engine, ExportFormat, ExportOptions};
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("format").required(true).args(["zip", "mbox"])))]
pub struct Args {
    task: String,
    #[arg(long)]
    snapshot: String,
    /// Every item as it was (mail as .eml, contacts as .vcf, files as they are).
    #[arg(long, value_name = "FILE")]
    zip: Option<PathBuf>,
    /// Every message (`.eml` item) as one mboxrd file.
    #[arg(long, value_name = "FILE")]
    mbox: Option<PathBuf>,
    #[arg(long, value_name = "PATH")]
    include: Vec<String>,
    #[command(flatten)]
    select: Select,
    #[arg(long)]
    account: Option<String>,
}

pub async fn run(eng: &Engine, args: Args) -> Result<u8> {
    let (task, snap) = task_and_snapshot(eng, &args.task, &args.snapshot, &args.account).await?;
    let (format, path) = match (args.zip, args.mbox) {
        (Some(zip), _) => (ExportFormat::Zip, zip),
        (None, Some(mbox)) => (ExportFormat::Mbox, mbox),
        (None, None) => anyhow::bail!("give --zip FILE or --mbox FILE"),
    };
    let opts = ExportOptions {
        format,
        include: parse_paths(&args.include)?,
        filter: args.select.filter(),
    };
    let bar = Bar::bytes("export");
    let r = eng.export(&task, &snap, &path, &opts, &bar).await?;
    bar.finish();
    match format {
        ExportFormat::Zip => println!(
            "exported snapshot {} to {}: {} files, {} folders, {} bytes",
            snap.id,
            path.display(),
            r.items,
            r.folders,
            r.bytes
        ),
        ExportFormat::Mbox => println!(
            "exported snapshot {} to {}: {} messages, {} bytes",
            snap.id,
            path.display(),
            r.items,
            r.bytes
        ),
    }
    Ok(0)
}
