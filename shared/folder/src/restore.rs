//! Restoring into the folder itself: by default into a new `Lifeboat Restore <timestamp>`
//! folder inside it, so nothing there is touched; in place when asked, where an existing
//! file is skipped, restored beside it, or replaced (written under a temporary name, then
//! renamed over), as the restore says. Permissions and times come back with the content.
//!
//! Items that cannot be written are listed in the report and the rest goes on. (A restore
//! into any other local folder, `lifeboat restore --to DIR`, is the engine's own and works
//! for every source.)

use domain::{ItemPath, OnConflict, RESTORE_PREFIX};
use engine::{Entry, EntryKind, Error, RestoreContent, Result, SourceRestore, SourceRestoreReport};
use std::ffi::OsStr;
use std::fs::{self, File, FileTimes};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn local(base: &Path, item: &ItemPath) -> PathBuf {
    let mut p = base.to_path_buf();
    for seg in item.segments() {
        p.push(OsStr::from_bytes(seg));
    }
    p
}

fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// `report.pdf` -> `report (Lifeboat Restore).pdf`, then `… 2).pdf` and so on while that
/// name is taken.
fn beside(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.as_bytes()).unwrap_or_default();
    let (stem, ext) = match name.iter().rposition(|b| *b == b'.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, &b""[..]),
    };
    for n in 1u32.. {
        let mut candidate = stem.to_vec();
        if n == 1 {
            candidate.extend_from_slice(format!(" ({RESTORE_PREFIX})").as_bytes());
        } else {
            candidate.extend_from_slice(format!(" ({RESTORE_PREFIX} {n})").as_bytes());
        }
        candidate.extend_from_slice(ext);
        let p = path.with_file_name(OsStr::from_bytes(&candidate));
        if fs::symlink_metadata(&p).is_err() {
            return p;
        }
    }
    unreachable!("some name is free")
}

pub(crate) async fn restore(
    root: &Path,
    job: &SourceRestore,
    content: &RestoreContent,
) -> Result<SourceRestoreReport> {
    let base = match &job.label {
        Some(label) => root.join(label),
        None => root.to_path_buf(),
    };
    fs::create_dir_all(&base)
        .map_err(|e| Error::io(format!("cannot create {}", base.display()), e))?;
    let mut report = SourceRestoreReport {
        target: base.display().to_string(),
        ..Default::default()
    };
    let mut dirs = Vec::new();
    for (item, entry) in &job.items {
        let path = local(&base, item);
        let done = match entry.kind {
            EntryKind::Dir => fs::create_dir_all(&path)
                .map(|()| {
                    report.folders += 1;
                    dirs.push((path.clone(), entry));
                })
                .map_err(|e| e.to_string()),
            EntryKind::Symlink => link(&path, entry, job.on_conflict, &mut report),
            EntryKind::File => file(&path, entry, job.on_conflict, content, &mut report).await,
        };
        if let Err(why) = done {
            report.errors.push(format!("{item}: {why}"));
        }
    }
    // Folders last, deepest first: writing into a folder changes its time, and a
    // read-only folder must be filled before it is made read-only.
    for (path, entry) in dirs.into_iter().rev() {
        if entry.mode != 0 {
            let _ = fs::set_permissions(&path, fs::Permissions::from_mode(entry.mode));
        }
        if let Ok(f) = File::open(&path) {
            let _ = f.set_times(FileTimes::new().set_modified(system_time(entry.mtime_ns)));
        }
    }
    Ok(report)
}

/// Where an item goes, given what is there: `None` to skip it.
fn target(
    path: &Path,
    on_conflict: OnConflict,
    report: &mut SourceRestoreReport,
) -> Option<PathBuf> {
    if fs::symlink_metadata(path).is_err() {
        return Some(path.to_path_buf());
    }
    match on_conflict {
        OnConflict::Skip => {
            report.skipped += 1;
            None
        }
        OnConflict::Copy => Some(beside(path)),
        OnConflict::Replace => Some(path.to_path_buf()),
    }
}

fn link(
    path: &Path,
    entry: &Entry,
    on_conflict: OnConflict,
    report: &mut SourceRestoreReport,
) -> std::result::Result<(), String> {
    let Some(to) = target(path, on_conflict, report) else {
        return Ok(());
    };
    let link_target = OsStr::from_bytes(entry.link.as_deref().unwrap_or_default());
    let tmp = to.with_file_name(format!(".lifeboat-restore-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(link_target, &tmp).map_err(|e| e.to_string())?;
    fs::rename(&tmp, &to).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        e.to_string()
    })?;
    report.items += 1;
    Ok(())
}

async fn file(
    path: &Path,
    entry: &Entry,
    on_conflict: OnConflict,
    content: &RestoreContent,
    report: &mut SourceRestoreReport,
) -> std::result::Result<(), String> {
    let Some(to) = target(path, on_conflict, report) else {
        return Ok(());
    };
    // Written under a temporary name and renamed: a replaced file is never half written,
    // and a damaged item leaves nothing behind.
    let mut name = b".lifeboat-restore-".to_vec();
    name.extend_from_slice(to.file_name().map(|n| n.as_bytes()).unwrap_or_default());
    let tmp = to.with_file_name(OsStr::from_bytes(&name));
    let written = async {
        let mut f = File::create(&tmp).map_err(|e| e.to_string())?;
        content
            .read_chunks(entry, |chunk| {
                f.write_all(&chunk)
                    .map_err(|e| Error::io("cannot write a restored file", e))
            })
            .await
            .map_err(|e| e.to_string())?;
        if entry.mode != 0 {
            f.set_permissions(fs::Permissions::from_mode(entry.mode))
                .map_err(|e| e.to_string())?;
        }
        f.set_times(FileTimes::new().set_modified(system_time(entry.mtime_ns)))
            .map_err(|e| e.to_string())?;
        f.sync_all().map_err(|e| e.to_string())?;
        fs::rename(&tmp, &to).map_err(|e| e.to_string())
    }
    .await;
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    report.items += 1;
    report.bytes += entry.size;
    Ok(())
}
