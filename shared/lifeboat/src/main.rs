//! The `lifeboat` command: Lifeboat on one machine, with embedded storage under a home
//! folder (objects in a directory, the catalog in SQLite, a local master key). The same
//! engine runs on AWS; only the adapters differ.

mod cmd;
mod demo;
mod demo_m365;
mod home;
mod progress;
mod serve;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use home::{default_home, open_home, LOCAL_TENANT};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "lifeboat",
    version,
    about = "Back up and restore SaaS and local data, with every daily snapshot kept."
)]
struct Cli {
    /// Where Lifeboat keeps its data [default: $LIFEBOAT_HOME, else the platform data dir].
    #[arg(long, global = true, env = "LIFEBOAT_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Manage backup tasks (connected sources).
    Task {
        #[command(subcommand)]
        cmd: cmd::task::TaskCmd,
    },
    /// Back up every account of a task, or one.
    Backup(cmd::backup::Args),
    /// List a task's snapshots, oldest first.
    Snapshots(cmd::snapshots::SnapshotsArgs),
    /// List a folder of a snapshot.
    Ls(cmd::snapshots::LsArgs),
    /// Restore a snapshot into its source, in a new "Lifeboat Restore <time>" folder (or
    /// in place), of the same account or another; or into a local folder with --to.
    Restore(cmd::restore::Args),
    /// Export a snapshot (or some paths of it) as a zip, or its mail as an mbox file.
    Export(cmd::export::Args),
    /// Show what was added, changed and removed between two snapshots.
    Diff(cmd::diff::Args),
    /// Read every stored object and check it; exit status 2 on any damage.
    Verify(cmd::verify::Args),
    /// Delete packs nothing needs any more (left by crashed runs, emptied by a repack),
    /// once they have been dead for the grace period. Safe beside running backups.
    Prune(cmd::prune::Args),
    /// Move what snapshots need out of small and mostly dead packs into full ones, then
    /// prune. Safe beside running backups.
    Repack(cmd::prune::Args),
    /// Delete this installation's tenant: its keys first, then all its data.
    DeleteTenant {
        /// Confirms that every backup is to be destroyed.
        #[arg(long)]
        yes: bool,
    },
    /// Serve the HTTP API (the same one Lifeboat runs on AWS), run queued jobs and the
    /// daily schedule, until stopped.
    Serve {
        /// Address to listen on (port 0 picks a free one; the address is printed).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Print a bearer token for the local API.
    Token {
        /// The tenant the token acts for.
        #[arg(long, default_value = LOCAL_TENANT)]
        tenant: String,
        /// How long the token stays valid.
        #[arg(long, default_value_t = 12)]
        hours: i64,
    },
    /// Run the local demo: a simulated Microsoft 365 organisation (or, with --files, a
    /// sample folder) backed up, changed, backed up again, browsed, restored and exported,
    /// every restore checked byte for byte.
    Demo {
        /// Where to put the demo's home, sample and restores [default: a new temp folder].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Demonstrate a local-folder task instead of Microsoft 365.
        #[arg(long)]
        files: bool,
    },
}

fn main() -> ExitCode {
    // Like any Unix tool, end quietly when the reader of our output goes away
    // (`lifeboat snapshots x | head`) instead of panicking on a broken pipe.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    limit_heap_growth();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LIFEBOAT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lifeboat: error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line: what failed and why, outermost context first.
            eprintln!("lifeboat: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Buffers of MiBs (packs being built and uploaded, batches of content, index segments)
/// come and go on many threads. By default glibc gives each thread a heap of its own and
/// raises its mmap threshold to the largest block freed (up to 32 MiB), so these buffers
/// end up spread over heaps that keep what they grew to: a first backup of a million
/// items peaked at 172 MiB, and spent twice the system time. Two heaps and a fixed
/// threshold of 16 MiB keep it at 109 MiB; a lower threshold saves a little more memory
/// but maps and faults in every pack afresh (a fifth more CPU on the vault benchmark's
/// first backup), while this costs none.
fn limit_heap_growth() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called before any other thread starts; mallopt only sets parameters.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 16 << 20);
    }
}

async fn run(cli: Cli) -> Result<u8> {
    if let Cmd::Demo { dir, files } = &cli.cmd {
        return demo::run(dir.clone(), *files).await;
    }
    let home = match cli.home {
        Some(h) => h,
        None => default_home()?,
    };
    let eng = open_home(&home)?;
    match cli.cmd {
        Cmd::Demo { .. } => unreachable!("handled above"),
        Cmd::Serve { listen } => {
            serve::serve(eng.ports().clone(), &home, &listen).await?;
            Ok(0)
        }
        Cmd::Token { tenant, hours } => {
            if hours <= 0 {
                bail!("--hours must be at least 1");
            }
            println!("{}", serve::token(&home, &tenant, hours)?);
            Ok(0)
        }
        Cmd::Task { cmd } => cmd::task::run(&eng, cmd).await,
        Cmd::Backup(args) => cmd::backup::run(&eng, args).await,
        Cmd::Snapshots(args) => cmd::snapshots::snapshots(&eng, args).await,
        Cmd::Ls(args) => cmd::snapshots::ls(&eng, args).await,
        Cmd::Restore(args) => cmd::restore::run(&eng, args).await,
        Cmd::Export(args) => cmd::export::run(&eng, args).await,
        Cmd::Diff(args) => cmd::diff::run(&eng, args).await,
        Cmd::Verify(args) => cmd::verify::run(&eng, args).await,
        Cmd::Prune(args) => cmd::prune::run(&eng, args, false).await,
        Cmd::Repack(args) => cmd::prune::run(&eng, args, true).await,
        Cmd::DeleteTenant { yes } => {
            if !yes {
                bail!(
                    "this destroys every backup in {}; run again with --yes to confirm",
                    home.display()
                );
            }
            eng.delete_tenant().await?;
            println!("tenant deleted: its keys are destroyed and its data removed");
            Ok(0)
        }
    }
}
