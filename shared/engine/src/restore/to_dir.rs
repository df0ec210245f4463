//! Restoring a snapshot (or part of it) into a local folder, whatever its source (mail as
//! `.eml` files, contacts as `.vcf`, files as they were). Non-destructive by default:
//! everything goes into a new `Lifeboat Restore <UTC timestamp>` folder inside the target,
//! keeping the original structure. In place, existing files are skipped, copied beside, or
//! replaced, as the caller says.
//!
//! Data is read pack by pack (nearby records in one read, opened in parallel) and written
//! at its offset in its file, so a full restore reads each pack once whatever the order of
//! files; a blob shared by many files is read once. Each file is written under a partial
//! name (see `partial.rs`) and renamed to its own once its last chunk is written and the
//! file is durable: whatever stops a restore (a crash, a damaged chunk), no file under its
//! final name lacks part of its content. Whole files are made durable and renamed in
//! batches, one sync of the file system per batch: a sync per file would cost more than
//! writing a mailbox's small files.
//!
//! A folder whose stored listing is damaged is reported and skipped, as a damaged file is;
//! everything else is restored.
//!
//! Memory is bounded whatever the snapshot's size: files are planned (walking the tree
//! folder by folder) and written in batches of at most [`PLAN_FILES`], so a restore of a
//! million files holds a batch's plan, not the whole snapshot's.

use super::{folder_damaged, stored_damage};
use crate::partial;
use crate::snapshots::{not_found, selection};
use crate::{Engine, Error, OnConflict, Progress, RestoreOptions, Result, TaskRecord};
use domain::{restore_label, ItemPath, RESTORE_PREFIX};
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use vault::{AccountVault, BlobId, BlobKind, BlobRef, Entry, EntryKind, SnapshotRecord};

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

/// Why a file was not restored when its data could not be read.
const DATA_DAMAGED: &str =
    "not restored: its stored data is damaged or missing (run `lifeboat verify`)";

/// Whole files are published (made durable, renamed) while the restore goes on once this
/// many bytes or files wait: few syncs (a sync per file would cost more than writing a
/// mailbox's small files), the disk kept writing while the read goes on (so that little is
/// left to wait for at the end), and a crash loses at most the files of the last batches
/// (under partial names, never with missing parts under their own).
const BATCH_BYTES: u64 = 64 << 20;
const BATCH_FILES: usize = 1024;

/// Files planned before they are written: a batch's plan (a few hundred bytes a file) and
/// its read stay some tens of MB however many files the snapshot holds. A blob shared by
/// files of two batches is read twice.
const PLAN_FILES: usize = 32 * 1024;

/// One file to write. Chunks land from the read's worker threads in any order and in
/// parallel, so everything here is shared.
struct FileJob {
    item: String,
    final_path: PathBuf,
    entry: Entry,
    /// The partial file, created by the first chunk that lands (so that a file whose data
    /// cannot be read costs nothing on disk): its name, or why it could not be created.
    partial: OnceLock<std::result::Result<PathBuf, String>>,
    /// Chunks still to be written; the writer of the last one hands the file on to be made
    /// durable and renamed. A chunk that fails never counts down, so zero means whole.
    remaining: AtomicUsize,
    /// The first reason the file cannot be restored; set, the file is never renamed.
    problem: OnceLock<String>,
    /// Renamed to its final name: restored.
    done: AtomicBool,
}

impl FileJob {
    fn new(item: &ItemPath, final_path: PathBuf, entry: &Entry) -> Self {
        FileJob {
            item: item.to_string(),
            final_path,
            remaining: AtomicUsize::new(entry.content.len()),
            entry: entry.clone(),
            partial: OnceLock::new(),
            problem: OnceLock::new(),
            done: AtomicBool::new(false),
        }
    }

    /// The mode the partial file is created with: a file of one chunk (most of a
    /// mailbox's files) or none gets its own mode, which saves a chmod; a file written in
    /// several parts keeps the default until its last part, so that every part can open it.
    fn create_mode(&self) -> (u32, bool) {
        if self.entry.content.len() <= 1 && self.entry.mode != 0 {
            let mode = self.entry.mode & 0o777;
            (mode, mode_survives_umask(mode))
        } else {
            (0o666, false)
        }
    }

    /// The partial file, open for writing: created by the first caller, opened by the
    /// others (never created again: if it vanished meanwhile, the file fails rather than
    /// being renamed with holes).
    fn open(&self) -> io::Result<File> {
        let mut fresh = None;
        let made = self.partial.get_or_init(|| {
            partial::create(&self.final_path, self.create_mode().0)
                .map(|(path, f)| {
                    fresh = Some(f);
                    path
                })
                .map_err(|e| e.to_string())
        });
        if let Some(f) = fresh {
            return Ok(f);
        }
        match made {
            Ok(path) => OpenOptions::new().write(true).open(path),
            Err(why) => Err(io::Error::other(why.clone())),
        }
    }

    /// Writes one chunk at `off`. The writer of the last one sets the file's mode and time
    /// and answers true: the file is whole, to be made durable and renamed.
    fn write(&self, data: &[u8], off: u64) -> io::Result<bool> {
        let f = self.open()?;
        f.write_all_at(data, off)?;
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            set_meta_of(&f, &self.entry, self.create_mode().1);
            return Ok(true);
        }
        Ok(false)
    }

    fn partial_path(&self) -> Option<&Path> {
        match self.partial.get() {
            Some(Ok(path)) => Some(path),
            _ => None,
        }
    }

    /// Renames the whole, durable file to its name: only now does it appear.
    fn rename_into_place(&self) {
        if self.problem.get().is_some() {
            return;
        }
        let renamed = match self.partial_path() {
            Some(path) => fs::rename(path, &self.final_path),
            None => Err(io::Error::other("its partial file is gone")),
        };
        match renamed {
            Ok(()) => self.done.store(true, Ordering::Release),
            Err(e) => self.fail(format!("cannot be written: {e}")),
        }
    }

    /// Records why the file is not restored (the first reason wins).
    fn fail(&self, why: String) {
        let _ = self.problem.set(why);
    }

    /// Removes what is left of a file that was not restored.
    fn discard(&self) {
        if let Some(path) = self.partial_path() {
            let _ = fs::remove_file(path);
        }
    }
}

/// Whole files waiting to be published (indexes into the plan's files), with their bytes.
#[derive(Default)]
struct Ready {
    files: Vec<usize>,
    bytes: u64,
}

impl Ready {
    /// The files waiting, when they make a batch (or whatever waits, at the end).
    fn take_batch(ready: &Mutex<Ready>, at_end: bool) -> Option<Vec<usize>> {
        let mut r = ready.lock().unwrap_or_else(|e| e.into_inner());
        let full = r.bytes >= BATCH_BYTES || r.files.len() >= BATCH_FILES;
        if r.files.is_empty() || !(full || at_end) {
            return None;
        }
        r.bytes = 0;
        Some(std::mem::take(&mut r.files))
    }
}

/// Renames each whole file of `batch` to its name. With `sync`, the files are made
/// durable first (one sync per file system), and the last batch is synced once more after
/// its renames, so that a restore that answers has its files in place for good.
fn publish(files: &[FileJob], batch: &[usize], last: bool, sync: bool) {
    if sync {
        let partials: Vec<&Path> = batch
            .iter()
            .filter_map(|&i| files[i].partial_path())
            .collect();
        if let Err(e) = partial::make_durable(&partials) {
            for &i in batch {
                files[i].fail(format!("cannot be made durable: {e}"));
            }
            return;
        }
    }
    for &i in batch {
        files[i].rename_into_place();
    }
    if last && sync {
        let placed: Vec<&Path> = files
            .iter()
            .filter(|f| f.done.load(Ordering::Acquire))
            .map(|f| f.final_path.as_path())
            .collect();
        if let Err(e) = partial::make_durable(&placed) {
            tracing::warn!(error = %e, "restored files could not be synced");
        }
    }
}

struct Plan {
    label: String,
    files: Vec<FileJob>,
    /// Files already whole (empty ones, written while planning), to be published.
    whole: Vec<usize>,
    /// Every folder created, with its time and permissions (set at the very end).
    dirs: Vec<(PathBuf, i64, u32)>,
    /// In place: the names of the files and links this batch covers (written, skipped
    /// because they exist, or restored beside as a copy), whose stale partial files it
    /// removes once written. A new restore folder holds nothing stale: `None`.
    names: Option<Vec<PathBuf>>,
    /// Restored paths whose names look like partial names (a snapshot taken before
    /// backups left partial files out): the clean-up of stale partial files leaves them.
    partial_like: HashSet<PathBuf>,
}

impl Plan {
    /// Notes a path this restore writes or finds in place, so that a partial-looking
    /// one is kept by the clean-up of stale partial files.
    fn writes(&mut self, path: &Path) {
        if path
            .file_name()
            .is_some_and(|n| partial::is_partial_name(n.as_bytes()))
        {
            self.partial_like.insert(path.to_path_buf());
        }
    }

    /// Notes the name of a file or link of the snapshot (and, apart, the name it is
    /// written under when that differs), whatever the conflict rule makes of it: a
    /// partial file of that name is an earlier, interrupted run's leftover, whether this
    /// run writes the name or skips it.
    fn covers(&mut self, path: &Path) {
        self.writes(path);
        if let Some(names) = &mut self.names {
            names.push(path.to_path_buf());
        }
    }
}

fn os(seg: &[u8]) -> &OsStr {
    OsStr::from_bytes(seg)
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
        self.check_owned(task, snap).await?;
        let vault = self.vault(task).await?.account(&snap.account);
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
        let mut run = Restore {
            vault: &vault,
            opts,
            progress,
            plan: Plan {
                label,
                files: Vec::new(),
                whole: Vec::new(),
                dirs: Vec::new(),
                names: opts.in_place.then(Vec::new),
                partial_like: HashSet::new(),
            },
            report: RestoreReport {
                target: base.clone(),
                ..Default::default()
            },
            planned: 0,
            whole_snapshot: opts.include.is_empty() || includes.iter().any(|i| i.is_root()),
        };
        if run.whole_snapshot {
            progress.set_total(snap.stats.bytes);
        }
        'selected: for (inc, entry) in selected {
            // The folders above a selected item, made one by one: in place, one of them
            // may be a link now, not to be followed.
            let mut dest = base.clone();
            for seg in inc.parent().iter().flat_map(|p| p.segments()) {
                dest.push(os(seg));
                if let Err(e) = make_folder(&dest) {
                    run.report.errors.push(format!(
                        "{inc}: not restored: {} cannot be its folder: {e}",
                        dest.display()
                    ));
                    continue 'selected;
                }
            }
            if let Some(name) = inc.file_name() {
                dest.push(os(name));
            }
            plan_entry(&mut run, &entry, dest, &inc).await?;
        }
        run.write_batch().await?;
        // Folders last, deepest first, so writing their content does not bump their times.
        for (path, mtime_ns, mode) in &run.plan.dirs {
            set_meta(path, *mtime_ns, *mode);
        }
        Ok(run.report)
    }
}

/// A restore under way: what it writes with, the batch being planned, what it did.
struct Restore<'a> {
    vault: &'a AccountVault,
    opts: &'a RestoreOptions,
    progress: &'a dyn Progress,
    plan: Plan,
    report: RestoreReport,
    /// Bytes of the files planned so far.
    planned: u64,
    /// Whether the whole snapshot is restored (its size is then known up front).
    whole_snapshot: bool,
}

impl Restore<'_> {
    /// Writes the files planned so far (see [`write_data`]) and reports them.
    ///
    /// # Errors
    /// As [`write_data`].
    async fn write_batch(&mut self) -> Result<()> {
        if !self.whole_snapshot {
            self.progress.set_total(self.planned);
        }
        write_data(self.vault, &mut self.plan, self.progress, self.opts.sync).await?;
        if let Some(names) = &mut self.plan.names {
            // Only in place can an earlier, interrupted restore have left partial files
            // beside the names covered now.
            partial::remove_stale(names.iter().map(PathBuf::as_path), &self.plan.partial_like);
            names.clear();
        }
        for job in std::mem::take(&mut self.plan.files) {
            if job.done.load(Ordering::Acquire) {
                self.report.files += 1;
                self.report.bytes += job.entry.size;
                continue;
            }
            job.discard();
            let why = job
                .problem
                .get()
                .map_or(DATA_DAMAGED, String::as_str)
                .to_string();
            self.report.errors.push(format!("{}: {why}", job.item));
        }
        Ok(())
    }
}

fn plan_entry<'a, 'r: 'a>(
    run: &'a mut Restore<'r>,
    entry: &'a Entry,
    dest: PathBuf,
    item: &'a ItemPath,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
    Box::pin(async move {
        match entry.kind {
            EntryKind::Dir => {
                // The listing first: a folder whose listing is damaged is reported and
                // not created, and the restore goes on with everything else. Storage that
                // is unreachable fails the restore (a retry can help).
                let node = match entry.subtree {
                    Some(sub) => match run.vault.read_tree(&sub).await {
                        Ok(node) => Some(node),
                        Err(e) if stored_damage(&e) => {
                            run.report.errors.push(folder_damaged(item, &e));
                            return Ok(());
                        }
                        Err(e) => return Err(e.into()),
                    },
                    None => None,
                };
                if let Err(e) = make_folder(&dest) {
                    run.report
                        .errors
                        .push(format!("{item}: folder cannot be created: {e}"));
                    return Ok(());
                }
                run.report.folders += 1;
                run.plan.writes(&dest);
                for child in node.iter().flat_map(|n| &n.entries) {
                    let child_item = item.join(&child.name)?;
                    let child_dest = dest.join(os(&child.name));
                    plan_entry(run, child, child_dest, &child_item).await?;
                }
                // The snapshot's root has no metadata of its own: leave the target's alone.
                if !item.is_root() {
                    run.plan.dirs.push((dest, entry.mtime_ns, entry.mode));
                }
            }
            EntryKind::Symlink => {
                let target = entry.link.clone().unwrap_or_default();
                run.plan.covers(&dest);
                let dest = match resolve_conflict(&dest, run.opts, &run.plan, &mut run.report) {
                    Some(d) if d != dest => {
                        run.plan.covers(&d);
                        d
                    }
                    Some(d) => d,
                    None => return Ok(()),
                };
                if let Err(e) = partial::symlink(os(&target), &dest) {
                    run.report
                        .errors
                        .push(format!("{item}: link cannot be created: {e}"));
                }
            }
            EntryKind::File => {
                run.plan.covers(&dest);
                let Some(final_path) =
                    resolve_conflict(&dest, run.opts, &run.plan, &mut run.report)
                else {
                    return Ok(());
                };
                if final_path != dest {
                    run.plan.covers(&final_path);
                }
                let job = FileJob::new(item, final_path, entry);
                if entry.content.is_empty() {
                    // Nothing to read: written now, and published with the first batch
                    // (data-bearing files are created by their first chunk's write).
                    match job.open() {
                        Ok(f) => {
                            set_meta_of(&f, entry, job.create_mode().1);
                            run.plan.whole.push(run.plan.files.len());
                        }
                        Err(e) => job.fail(format!("cannot be written: {e}")),
                    }
                }
                run.plan.files.push(job);
                run.planned += entry.size;
                if run.plan.files.len() >= PLAN_FILES {
                    run.write_batch().await?;
                }
            }
        }
        Ok(())
    })
}

/// Makes the folder `dest`, or uses the folder there, but never a link to one: following
/// it could write outside the restore's target.
///
/// # Errors
/// A file or link in its place, or a folder that cannot be made.
fn make_folder(dest: &Path) -> io::Result<()> {
    match fs::create_dir(dest) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if dest.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                Ok(())
            } else {
                Err(io::Error::new(e.kind(), "a file or link is in its place"))
            }
        }
        made => made,
    }
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
        // Written under a partial name and renamed over the original, which stays whole
        // until then.
        OnConflict::Replace => Some(dest.to_path_buf()),
    }
}

/// Writes every chunk at its offset in its file. Chunks are written by the worker threads
/// that open them, in parallel; a chunk shared by several files is read once. Files made
/// whole by their last chunk are published in batches as the read goes on (see
/// [`publish`]), the rest at its end.
///
/// # Errors
/// Storage that fails otherwise than with damage (unavailable, throttled): the files not
/// whole are then removed; the whole ones are published and stay.
async fn write_data(
    vault: &AccountVault,
    plan: &mut Plan,
    progress: &dyn Progress,
    sync: bool,
) -> Result<()> {
    // Every place each blob goes: (file, offset in file). Blobs are known by their id
    // alone: where one is stored is the vault's business.
    let mut targets: HashMap<BlobId, Vec<(usize, u64)>> = HashMap::new();
    let mut refs: Vec<BlobRef> = Vec::new();
    for (i, job) in plan.files.iter().enumerate() {
        let mut off = 0u64;
        for c in &job.entry.content {
            let t = targets.entry(c.id).or_default();
            if t.is_empty() {
                refs.push(*c);
            }
            t.push((i, off));
            off += c.raw_len as u64;
        }
    }
    let files = Arc::new(std::mem::take(&mut plan.files));
    let written = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(Mutex::new(Ready {
        files: std::mem::take(&mut plan.whole),
        bytes: 0,
    }));
    let sink = {
        let files = files.clone();
        let written = written.clone();
        let ready = ready.clone();
        Arc::new(move |r: &BlobRef, data: vault::Result<Vec<u8>>| {
            let Some(places) = targets.get(&r.id) else {
                return Ok(());
            };
            let data = match data {
                Ok(d) => d,
                Err(e) if stored_damage(&e) => {
                    tracing::warn!(error = %e, "blob could not be restored");
                    for &(i, _) in places {
                        files[i].fail(DATA_DAMAGED.to_string());
                    }
                    return Ok(());
                }
                // Storage unavailable is no damage: the restore fails, to be run again,
                // rather than report sound files as damaged.
                Err(e) => return Err(e),
            };
            for &(i, off) in places {
                let job = &files[i];
                if job.problem.get().is_some() {
                    continue;
                }
                match job.write(&data, off) {
                    // Whole: without a sync to wait for, it takes its name at once, on
                    // this worker, while the read goes on.
                    Ok(true) if !sync => job.rename_into_place(),
                    Ok(true) => {
                        let mut r = ready.lock().unwrap_or_else(|e| e.into_inner());
                        r.files.push(i);
                        r.bytes += job.entry.size;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "restore write failed");
                        job.fail(format!("cannot be written: {e}"));
                    }
                }
                written.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            Ok(())
        })
    };
    // Progress is reported every 100 ms while the read runs, and a batch of whole files is
    // published when one is ready and the previous one is done; the read's end is not
    // waited for beyond its own completion.
    let mut publishing: Option<tokio::task::JoinHandle<()>> = None;
    let res = {
        let mut read = std::pin::pin!(vault.read_many_parallel(refs, BlobKind::Data, sink));
        let mut shown = 0;
        let res = loop {
            tokio::select! {
                r = &mut read => break r,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    let now = written.load(Ordering::Relaxed);
                    progress.advance(now - shown);
                    shown = now;
                    if publishing.as_ref().is_none_or(|p| p.is_finished()) {
                        if let Some(batch) = Ready::take_batch(&ready, false) {
                            let files = files.clone();
                            publishing = Some(tokio::task::spawn_blocking(move || {
                                publish(&files, &batch, false, sync)
                            }));
                        }
                    }
                }
            }
        };
        progress.advance(written.load(Ordering::Relaxed) - shown);
        res
    };
    if let Some(p) = publishing {
        p.await.map_err(worker_failed)?;
    }
    // A read that failed may leave workers finishing the chunks they hold (blocking
    // tasks run to their end): wait until the last lets go of the sink, so that no chunk
    // lands after the clean-up below.
    while Arc::strong_count(&files) > 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // What is whole is published even when the read failed: those files are sound.
    let batch = Ready::take_batch(&ready, true).unwrap_or_default();
    let last = files.clone();
    tokio::task::spawn_blocking(move || publish(&last, &batch, true, sync))
        .await
        .map_err(worker_failed)?;
    plan.files = Arc::try_unwrap(files).unwrap_or_else(|_| unreachable!("the sink is gone"));
    if let Err(e) = res {
        for job in &plan.files {
            if !job.done.load(Ordering::Acquire) {
                job.discard();
            }
        }
        return Err(e.into());
    }
    Ok(())
}

fn worker_failed(e: tokio::task::JoinError) -> Error {
    Error::io("a restore worker failed", io::Error::other(e))
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
    let _ = f.set_times(FileTimes::new().set_modified(partial::system_time(entry.mtime_ns)));
}

fn set_meta(path: &Path, mtime_ns: i64, mode: u32) {
    if mode != 0 {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode));
    }
    if let Ok(f) = File::open(path) {
        let _ = f.set_times(FileTimes::new().set_modified(partial::system_time(mtime_ns)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_files_go_in_batches_and_all_at_the_end() {
        let ready = Mutex::new(Ready::default());
        assert_eq!(Ready::take_batch(&ready, true), None, "nothing waits");
        for i in 0..BATCH_FILES - 1 {
            let mut r = ready.lock().unwrap();
            r.files.push(i);
            r.bytes += 1;
        }
        assert_eq!(Ready::take_batch(&ready, false), None, "not a batch yet");
        ready.lock().unwrap().files.push(BATCH_FILES - 1);
        let batch = Ready::take_batch(&ready, false).expect("a batch by count");
        assert_eq!(batch.len(), BATCH_FILES);
        ready.lock().unwrap().files.push(7);
        ready.lock().unwrap().bytes = BATCH_BYTES;
        assert_eq!(
            Ready::take_batch(&ready, false),
            Some(vec![7]),
            "a batch by size"
        );
        ready.lock().unwrap().files.push(8);
        assert_eq!(Ready::take_batch(&ready, false), None);
        assert_eq!(
            Ready::take_batch(&ready, true),
            Some(vec![8]),
            "the rest at the end"
        );
    }
}
