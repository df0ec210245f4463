//! Restoring a snapshot (or part of it) into a local folder, whatever its source (mail as
//! `.eml` files, contacts as `.vcf`, files as they were). Non-destructive by default:
//! everything goes into a new `Lifeboat Restore <UTC timestamp>` folder inside the target,
//! keeping the original structure. In place, existing files are skipped, copied beside, or
//! replaced, as the caller says.
//!
//! Data is read pack by pack (nearby records in one read, opened in parallel) and written
//! at its offset in its file, so a full restore reads each pack once whatever the order of
//! files; a blob shared by many files is read once.

use crate::snapshots::{not_found, selection};
use crate::{Engine, Error, OnConflict, Progress, RestoreOptions, Result, TaskRecord};
use domain::{restore_label, ItemPath, RESTORE_PREFIX};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, FileTimes, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vault::{BlobRef, Entry, EntryKind, PackId, SnapshotRecord, Vault};

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RestoreReport {
    /// Where the items went.
    pub target: PathBuf,
    pub files: u64,
    pub folders: u64,
    pub bytes: u64,
    pub skipped: u64,
    pub copies: u64,
    /// Items that could not be restored, with why (damage, a path that cannot be written).
    pub errors: Vec<String>,
}

struct FileJob {
    item: String,
    final_path: PathBuf,
    write_path: PathBuf,
    entry: Entry,
    /// Chunks still to be written; the writer of the last one sets the file's times.
    remaining: AtomicUsize,
    failed: AtomicBool,
}

struct Plan {
    label: String,
    files: Vec<FileJob>,
    dirs: Vec<(PathBuf, Entry)>,
}

fn os(seg: &[u8]) -> &OsStr {
    OsStr::from_bytes(seg)
}

fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// `report.pdf` -> `report (Lifeboat Restore 2026-…).pdf`, then `… 2).pdf` and so on when
/// that name is taken too.
fn copy_name(path: &Path, label: &str, n: u32) -> PathBuf {
    let name = path.file_name().map(|n| n.as_bytes()).unwrap_or_default();
    let (stem, ext) = match name.iter().rposition(|b| *b == b'.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, &b""[..]),
    };
    let mut name = stem.to_vec();
    if n == 1 {
        name.extend_from_slice(format!(" ({label})").as_bytes());
    } else {
        name.extend_from_slice(format!(" ({label} {n})").as_bytes());
    }
    name.extend_from_slice(ext);
    path.with_file_name(os(&name))
}

impl Engine {
    /// Restores `snap` (or the items `opts.include` names) under `to`.
    ///
    /// # Errors
    /// A path not in the snapshot, a target that cannot be created, or storage failure.
    /// Single items that cannot be restored are listed in the report.
    pub async fn restore_to_dir(
        &self,
        task: &TaskRecord,
        snap: &SnapshotRecord,
        to: &Path,
        opts: &RestoreOptions,
        progress: &dyn Progress,
    ) -> Result<RestoreReport> {
        if !opts.filter.is_empty() {
            return Err(Error::Invalid(
                "a selection by sender, subject or days applies to restores into the source and to zip exports; restore a folder's items with --include".into(),
            ));
        }
        let vault = self.vault(task).await?;
        let prefix = if opts.label.is_empty() {
            RESTORE_PREFIX
        } else {
            &opts.label
        };
        let label = restore_label(prefix, opts.at.unwrap_or_else(|| self.ports.clock.now()));
        let includes = selection(&opts.include);
        // Resolve every selection before creating anything, so a typo fails cleanly and
        // leaves no empty restore folder behind.
        let mut selected = Vec::new();
        for inc in &includes {
            let entry = vault.lookup(&snap.root(), inc).await.map_err(not_found)?;
            selected.push((inc.clone(), entry));
        }
        let base = if opts.in_place {
            to.to_path_buf()
        } else {
            to.join(&label)
        };
        fs::create_dir_all(to)
            .map_err(|e| Error::io(format!("cannot create {}", to.display()), e))?;
        if !opts.in_place {
            fs::create_dir(&base).map_err(|e| {
                Error::io(
                    format!(
                        "cannot create the restore folder {} (nothing was written)",
                        base.display()
                    ),
                    e,
                )
            })?;
        }
        let mut report = RestoreReport {
            target: base.clone(),
            ..Default::default()
        };
        let mut plan = Plan {
            label,
            files: Vec::new(),
            dirs: Vec::new(),
        };
        for (inc, entry) in selected {
            let mut dest = base.clone();
            if let Some(parent) = inc.parent() {
                for seg in parent.segments() {
                    dest.push(os(seg));
                }
                fs::create_dir_all(&dest)
                    .map_err(|e| Error::io(format!("cannot create {}", dest.display()), e))?;
            }
            if let Some(name) = inc.file_name() {
                dest.push(os(name));
            }
            plan_entry(&vault, &entry, dest, &inc, opts, &mut plan, &mut report).await?;
        }
        let total: u64 = plan.files.iter().map(|f| f.entry.size).sum();
        progress.set_total(total);
        write_data(&vault, &mut plan, progress).await?;
        finish(plan, &mut report);
        Ok(report)
    }
}

fn plan_entry<'a>(
    vault: &'a Vault,
    entry: &'a Entry,
    dest: PathBuf,
    item: &'a ItemPath,
    opts: &'a RestoreOptions,
    plan: &'a mut Plan,
    report: &'a mut RestoreReport,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
    Box::pin(async move {
        match entry.kind {
            EntryKind::Dir => {
                match fs::create_dir(&dest) {
                    Ok(()) => {}
                    // An existing folder is used, but never a link to one: following it
                    // could write outside the restore's target.
                    Err(e)
                        if e.kind() == std::io::ErrorKind::AlreadyExists
                            && dest.symlink_metadata().is_ok_and(|m| m.is_dir()) => {}
                    Err(e) => {
                        report
                            .errors
                            .push(format!("{item}: folder cannot be created: {e}"));
                        return Ok(());
                    }
                }
                report.folders += 1;
                if let Some(sub) = entry.subtree {
                    let node = vault.read_tree(&sub).await?;
                    for child in &node.entries {
                        let child_item = item.join(&child.name)?;
                        let child_dest = dest.join(os(&child.name));
                        plan_entry(vault, child, child_dest, &child_item, opts, plan, report)
                            .await?;
                    }
                }
                // The snapshot's root has no metadata of its own: leave the target's alone.
                if !item.is_root() {
                    plan.dirs.push((dest, entry.clone()));
                }
            }
            EntryKind::Symlink => {
                let target = entry.link.clone().unwrap_or_default();
                let dest = match resolve_conflict(&dest, opts, plan, report) {
                    Some(d) => d,
                    None => return Ok(()),
                };
                if dest.symlink_metadata().is_ok() {
                    let _ = fs::remove_file(&dest);
                }
                if let Err(e) = std::os::unix::fs::symlink(os(&target), &dest) {
                    report
                        .errors
                        .push(format!("{item}: link cannot be created: {e}"));
                }
            }
            EntryKind::File => {
                let Some(final_path) = resolve_conflict(&dest, opts, plan, report) else {
                    return Ok(());
                };
                let write_path = if opts.in_place && final_path.symlink_metadata().is_ok() {
                    // Replace: write beside, then rename over, so a failed restore never
                    // leaves the original half-overwritten.
                    let mut n = b".".to_vec();
                    n.extend_from_slice(
                        final_path
                            .file_name()
                            .map(|n| n.as_bytes())
                            .unwrap_or_default(),
                    );
                    n.extend_from_slice(b".lifeboat-partial");
                    let p = final_path.with_file_name(os(&n));
                    let _ = fs::remove_file(&p);
                    p
                } else {
                    final_path.clone()
                };
                if entry.content.is_empty() {
                    // Nothing to read: create it now (data-bearing files are created by
                    // their first chunk's write).
                    if let Err(e) = File::create(&write_path) {
                        report
                            .errors
                            .push(format!("{item}: cannot be written: {e}"));
                        return Ok(());
                    }
                }
                plan.files.push(FileJob {
                    item: item.to_string(),
                    final_path,
                    write_path,
                    remaining: AtomicUsize::new(entry.content.len()),
                    failed: AtomicBool::new(false),
                    entry: entry.clone(),
                });
            }
        }
        Ok(())
    })
}

/// Applies the conflict policy; `None` means skip the item.
fn resolve_conflict(
    dest: &Path,
    opts: &RestoreOptions,
    plan: &Plan,
    report: &mut RestoreReport,
) -> Option<PathBuf> {
    // A restore into its own new folder meets nothing: no need to look.
    if !opts.in_place || dest.symlink_metadata().is_err() {
        return Some(dest.to_path_buf());
    }
    match opts.on_conflict {
        OnConflict::Skip => {
            report.skipped += 1;
            None
        }
        OnConflict::Copy => {
            report.copies += 1;
            let mut candidate = copy_name(dest, &plan.label, 1);
            let mut n = 1;
            while candidate.symlink_metadata().is_ok() {
                n += 1;
                candidate = copy_name(dest, &plan.label, n);
            }
            Some(candidate)
        }
        OnConflict::Replace => Some(dest.to_path_buf()),
    }
}

/// Writes every chunk at its offset in its file. Chunks are written by the worker threads
/// that open them, in parallel; a chunk shared by several files is read once.
async fn write_data(vault: &Vault, plan: &mut Plan, progress: &dyn Progress) -> Result<()> {
    // Every place each blob goes: (file, offset in file).
    let mut targets: HashMap<(PackId, u32), Vec<(usize, u64)>> = HashMap::new();
    let mut refs: Vec<BlobRef> = Vec::new();
    for (i, job) in plan.files.iter().enumerate() {
        let mut off = 0u64;
        for c in &job.entry.content {
            let t = targets.entry((c.pack, c.offset)).or_default();
            if t.is_empty() {
                refs.push(*c);
            }
            t.push((i, off));
            off += c.raw_len as u64;
        }
    }
    let files = Arc::new(std::mem::take(&mut plan.files));
    let written = Arc::new(AtomicU64::new(0));
    let sink = {
        let files = files.clone();
        let written = written.clone();
        Arc::new(move |r: &BlobRef, data: vault::Result<Vec<u8>>| {
            let Some(places) = targets.get(&(r.pack, r.offset)) else {
                return Ok(());
            };
            let data = match data {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "blob could not be restored");
                    for &(i, _) in places {
                        files[i].failed.store(true, Ordering::Relaxed);
                    }
                    return Ok(());
                }
            };
            for &(i, off) in places {
                let job = &files[i];
                if job.failed.load(Ordering::Relaxed) {
                    continue;
                }
                // A file of one chunk is created with its mode, which saves a chmod per
                // file (most of a mailbox's files); a file written in several parts keeps
                // the default until its last part, so that every part can open it.
                let whole = job.entry.content.len() == 1 && job.entry.mode != 0;
                let mode = if whole { job.entry.mode & 0o777 } else { 0o666 };
                let res = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(mode)
                    .open(&job.write_path)
                    .and_then(|f| {
                        f.write_all_at(&data, off)?;
                        if job.remaining.fetch_sub(1, Ordering::AcqRel) == 1
                            && job.write_path == job.final_path
                        {
                            set_meta_of(&f, &job.entry, whole && mode_survives_umask(mode));
                        }
                        Ok(())
                    });
                if let Err(e) = res {
                    job.failed.store(true, Ordering::Relaxed);
                    tracing::warn!(error = %e, "restore write failed");
                }
                written.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            Ok(())
        })
    };
    // Progress is reported every 100 ms while the read runs; the read's end is not
    // waited for beyond its own completion.
    let mut read = std::pin::pin!(vault.read_many_parallel(refs, false, sink));
    let mut shown = 0;
    let res = loop {
        tokio::select! {
            r = &mut read => break r,
            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {
                let now = written.load(Ordering::Relaxed);
                progress.advance(now - shown);
                shown = now;
            }
        }
    };
    progress.advance(written.load(Ordering::Relaxed) - shown);
    res?;
    plan.files = Arc::try_unwrap(files).unwrap_or_else(|_| unreachable!("the sink is gone"));
    Ok(())
}

fn finish(plan: Plan, report: &mut RestoreReport) {
    for job in plan.files {
        if job.failed.load(Ordering::Relaxed) {
            let _ = fs::remove_file(&job.write_path);
            report.errors.push(format!(
                "{}: not restored: its stored data is damaged or missing (run `lifeboat verify`)",
                job.item
            ));
            continue;
        }
        if job.write_path != job.final_path {
            if let Err(e) = fs::rename(&job.write_path, &job.final_path) {
                let _ = fs::remove_file(&job.write_path);
                report
                    .errors
                    .push(format!("{}: cannot be replaced: {e}", job.item));
                continue;
            }
            set_meta(&job.final_path, &job.entry);
        } else if job.entry.content.is_empty() {
            set_meta(&job.final_path, &job.entry);
        }
        report.files += 1;
        report.bytes += job.entry.size;
    }
    // Folders last, deepest first, so writing their content does not bump their times.
    for (path, entry) in plan.dirs.iter() {
        set_meta(path, entry);
    }
}

/// Whether a file created with `mode` got exactly `mode`: the process's umask (read once,
/// from the kernel's own report) clears none of its bits.
fn mode_survives_umask(mode: u32) -> bool {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let umask = *UMASK.get_or_init(|| {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            // Unknown: assume the worst, and always set the mode afterwards.
            .unwrap_or(0o777)
    });
    mode & umask == 0
}

fn set_meta_of(f: &File, entry: &Entry, mode_is_set: bool) {
    if entry.mode != 0 && (!mode_is_set || entry.mode & 0o7000 != 0) {
        let _ = f.set_permissions(fs::Permissions::from_mode(entry.mode));
    }
    let _ = f.set_times(FileTimes::new().set_modified(system_time(entry.mtime_ns)));
}

fn set_meta(path: &Path, entry: &Entry) {
    if entry.mode != 0 {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(entry.mode));
    }
    if let Ok(f) = File::open(path) {
        let _ = f.set_times(FileTimes::new().set_modified(system_time(entry.mtime_ns)));
    }
}
