//! Restoring into the folder itself: by default into a new `Lifeboat Restore <timestamp>`
//! folder inside it, so nothing there is touched; in place when asked, where an existing
//! file is skipped, restored beside it, or replaced (written under a temporary name, then
//! renamed over), as the restore says. Permissions and times come back with the content.
//!
//! Items that cannot be written are listed in the report and the rest goes on. (A restore
//! into any other local folder, `lifeboat restore --to DIR`, is the engine's own and works
//! for every source.)
//!
//! Files and links are written under a partial name beside their own,
//! `.<name>.lifeboat-partial-<16 random hex>` (the name the engine's restore to a folder
//! uses too), made durable and renamed only once whole: a crash or a damaged chunk never
//! leaves a file with missing parts under its name, and the random part keeps partial
//! names clear of real files. A rerun (a restore job delivered again writes into the same
//! folder) removes the partial files an interrupted run left for the names it writes or
//! skips, so that they do not pile up (and a backup of the folder leaves them out anyway).

use domain::{ItemPath, OnConflict, RESTORE_PREFIX};
use engine::{
    partial, Entry, EntryKind, Error, RestoreContent, Result, SourceRestore, SourceRestoreReport,
};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File, FileTimes};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn local(base: &Path, item: &ItemPath) -> PathBuf {
    let mut p = base.to_path_buf();
    for seg in item.segments() {
        p.push(OsStr::from_bytes(seg));
    }
    p
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

/// What a restore wrote, for removing stale partial files at its end.
#[derive(Default)]
struct Written {
    /// The names of the files and links of the restore: written (whether or not they
    /// could be), skipped because they exist, or the copy's name beside one; their stale
    /// partials go.
    files: Vec<PathBuf>,
    /// Restored items whose names look like partial names (a snapshot of a folder where a
    /// restore once crashed): never removed as stale.
    partial_like: HashSet<PathBuf>,
}

impl Written {
    fn item(&mut self, path: &Path) {
        if path
            .file_name()
            .is_some_and(|n| partial::partial_of(n.as_bytes()).is_some())
        {
            self.partial_like.insert(path.to_path_buf());
        }
    }

    /// Notes a name a file or link of the restore goes to (see `files`).
    fn covers(&mut self, path: &Path) {
        self.item(path);
        self.files.push(path.to_path_buf());
    }

    /// Removes the partial files an interrupted run left beside the names covered now.
    fn remove_stale(&self) {
        partial::remove_stale(self.files.iter().map(PathBuf::as_path), &self.partial_like);
    }
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
    let mut written = Written::default();
    // Folders that could not be made: nothing below them is written (items come parents
    // first), or it would go wherever a link in their place points.
    let mut refused: Vec<PathBuf> = Vec::new();
    for (item, entry) in &job.items {
        let path = local(&base, item);
        if refused.iter().any(|r| path.starts_with(r)) {
            continue;
        }
        written.item(&path);
        let done = match entry.kind {
            EntryKind::Dir => match folder(&path) {
                Ok(()) => {
                    report.folders += 1;
                    dirs.push((path.clone(), entry));
                    Ok(())
                }
                Err(why) => {
                    refused.push(path.clone());
                    Err(why)
                }
            },
            EntryKind::Symlink => link(&path, entry, job.on_conflict, &mut report, &mut written),
            EntryKind::File => {
                file(
                    &path,
                    entry,
                    job.on_conflict,
                    content,
                    &mut report,
                    &mut written,
                )
                .await
            }
        };
        if let Err(why) = done {
            report.errors.push(format!("{item}: {why}"));
        }
    }
    written.remove_stale();
    // Folders last, deepest first: writing into a folder changes its time, and a
    // read-only folder must be filled before it is made read-only.
    for (path, entry) in dirs.into_iter().rev() {
        if entry.mode != 0 {
            let _ = fs::set_permissions(&path, fs::Permissions::from_mode(entry.mode));
        }
        if let Ok(f) = File::open(&path) {
            let _ =
                f.set_times(FileTimes::new().set_modified(partial::system_time(entry.mtime_ns)));
        }
    }
    Ok(report)
}

/// Makes the folder `path`, or uses the folder there, but never a link to one: following
/// it would write outside the restore's target (and, replacing, overwrite what is there).
fn folder(path: &Path) -> std::result::Result<(), String> {
    // The folders above come first in a restore's items; made here only if some list
    // lacks them.
    let made = match path.parent() {
        Some(parent) => fs::create_dir_all(parent).and_then(|()| fs::create_dir(path)),
        None => fs::create_dir(path),
    };
    match made {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
                Ok(())
            } else {
                Err(
                    "folder not restored, nor anything in it: a file or link is in its place"
                        .into(),
                )
            }
        }
        Err(e) => Err(format!("folder not restored, nor anything in it: {e}")),
    }
}

/// Where an item goes, given what is there: `None` to skip it. Both its name and where it
/// goes are noted in `written`, for the clean-up of stale partial files.
fn target(
    path: &Path,
    on_conflict: OnConflict,
    report: &mut SourceRestoreReport,
    written: &mut Written,
) -> Option<PathBuf> {
    written.files.push(path.to_path_buf());
    if fs::symlink_metadata(path).is_err() {
        return Some(path.to_path_buf());
    }
    match on_conflict {
        OnConflict::Skip => {
            report.skipped += 1;
            None
        }
        OnConflict::Copy => {
            let to = beside(path);
            written.covers(&to);
            Some(to)
        }
        OnConflict::Replace => Some(path.to_path_buf()),
    }
}

fn link(
    path: &Path,
    entry: &Entry,
    on_conflict: OnConflict,
    report: &mut SourceRestoreReport,
    written: &mut Written,
) -> std::result::Result<(), String> {
    let Some(to) = target(path, on_conflict, report, written) else {
        return Ok(());
    };
    let link_target = OsStr::from_bytes(entry.link.as_deref().unwrap_or_default());
    partial::symlink(link_target, &to).map_err(|e| e.to_string())?;
    report.items += 1;
    Ok(())
}

async fn file(
    path: &Path,
    entry: &Entry,
    on_conflict: OnConflict,
    content: &RestoreContent,
    report: &mut SourceRestoreReport,
    written: &mut Written,
) -> std::result::Result<(), String> {
    let Some(to) = target(path, on_conflict, report, written) else {
        return Ok(());
    };
    // Written under a partial name and renamed once whole and durable: a replaced file is
    // never half written, and a damaged item or a crash leaves nothing under its name.
    let (tmp, mut f) = partial::create(&to, 0o600).map_err(|e| e.to_string())?;
    let written = async {
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
        f.set_times(FileTimes::new().set_modified(partial::system_time(entry.mtime_ns)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stale_partials_of_written_names_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let stale = d.join(".1.txt.lifeboat-partial-0123456789abcdef");
        let restored = d.join(".1.txt.lifeboat-partial-fedcba9876543210");
        let foreign = d.join(".2.txt.lifeboat-partial-0123456789abcdef");
        for p in [&stale, &restored, &foreign] {
            fs::write(p, b"x").unwrap();
        }
        let mut written = Written::default();
        written.item(&restored);
        written.files.push(d.join("1.txt"));
        written.remove_stale();
        assert!(!stale.exists());
        assert!(restored.exists() && foreign.exists());
    }
}
