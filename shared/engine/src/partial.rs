//! The temporary names of files being restored to disk. A file is written as
//! `.<name>.lifeboat-partial-<16 hex>` beside its final name and renamed to its name only
//! once all of it is there: a crash, a damaged chunk or a full disk never
//! leaves a file with missing (zero-filled) parts under its real name, and a replaced file
//! is never half overwritten.
//!
//! The random part keeps a partial name clear of real files and of what a crashed run left
//! behind (files are created with `O_EXCL`, and a taken name is simply drawn again), so a
//! rerun is never confused by leftovers; an in-place restore removes those it finds for
//! the names it covers (written or skipped), and a backup of a folder leaves them out
//! ([`is_partial_name`]): a restore into a folder that is itself backed up, killed midway,
//! must not turn its half-written files into the user's.
//!
//! When a restore is asked to wait for the disk (`RestoreOptions::sync`), a partial file is
//! made durable before its rename (`make_durable`), or a power cut could leave the new
//! name on a file whose data never reached the disk. The helpers here are shared by the
//! engine's restore to a folder and the folder connector's restore.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::hash::BuildHasher;
use std::io;
use std::os::unix::ffi::OsStrExt;
#[cfg(target_os = "linux")]
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What sits between a file's name and the random part.
const MARK: &[u8] = b".lifeboat-partial-";

/// Hex digits of the random part.
const RANDOM_HEX: usize = 16;

/// How much of a file's name its partial name keeps: names are at most 255 bytes on the
/// file systems we write to, and a partial name adds 35.
const STEM_MAX: usize = 200;

/// Names drawn before giving up on creating a partial file: a taken name is a leftover
/// or a coincidence, and eight in a row means something else is wrong.
const ATTEMPTS: usize = 8;

/// The part of `name` its partial names keep.
fn stem(name: &[u8]) -> &[u8] {
    &name[..name.len().min(STEM_MAX)]
}

/// 64 random bits: `RandomState` is seeded from the system's randomness once per thread
/// and moves on at every use; the counter makes two draws of one thread differ for sure.
fn random() -> u64 {
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    std::collections::hash_map::RandomState::new().hash_one(DRAWS.fetch_add(1, Ordering::Relaxed))
}

/// A fresh partial name for `final_path`, in the same folder (so that the rename that
/// publishes it is atomic).
fn partial_path(final_path: &Path) -> PathBuf {
    let name = final_path
        .file_name()
        .map(|n| n.as_bytes())
        .unwrap_or_default();
    let mut n = b".".to_vec();
    n.extend_from_slice(stem(name));
    n.extend_from_slice(MARK);
    n.extend_from_slice(format!("{:016x}", random()).as_bytes());
    final_path.with_file_name(OsStr::from_bytes(&n))
}

/// The (shortened) name a partial file was written for, or `None` when `name` is not a
/// partial name.
pub fn partial_of(name: &[u8]) -> Option<&[u8]> {
    let rest = name.strip_prefix(b".")?;
    let hex_at = rest.len().checked_sub(RANDOM_HEX)?;
    let (head, hex) = rest.split_at(hex_at);
    if !hex
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return None;
    }
    let stem = head.strip_suffix(MARK)?;
    (!stem.is_empty()).then_some(stem)
}

/// Whether `name` is a partial name: exactly `.<name>.lifeboat-partial-<16 lowercase hex>`,
/// as [`create`] makes them. What such a file holds is garbage whoever finds it (a crashed
/// restore's leftover), so a backup of a folder leaves it out rather than store it as a
/// user's file.
pub fn is_partial_name(name: &[u8]) -> bool {
    partial_of(name).is_some()
}

/// Creates a new, empty partial file for `final_path` with `mode`, under a name no file
/// has; returns its name and the open file.
///
/// # Errors
/// The file cannot be created (a folder that is not writable, a full disk).
pub fn create(final_path: &Path, mode: u32) -> io::Result<(PathBuf, File)> {
    for _ in 0..ATTEMPTS {
        let path = partial_path(final_path);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free temporary name beside it",
    ))
}

/// Makes `dest` a symbolic link to `target`: created under a partial name, then renamed
/// over whatever `dest` is (a link or file replaced in place is never missing meanwhile).
///
/// # Errors
/// The link cannot be created or renamed (a folder is in the way).
pub fn symlink(target: &OsStr, dest: &Path) -> io::Result<()> {
    for _ in 0..ATTEMPTS {
        let path = partial_path(dest);
        match std::os::unix::fs::symlink(target, &path) {
            Ok(()) => {
                return fs::rename(&path, dest).inspect_err(|_| {
                    let _ = fs::remove_file(&path);
                })
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free temporary name beside it",
    ))
}

/// Makes the files at `paths` durable, content and metadata. On Linux with one `syncfs` per
/// file system their folders are on, whatever their number: a restore of a mailbox's
/// small files would spend longer in one `fsync` per file than in writing them. Elsewhere
/// each file is synced.
///
/// # Errors
/// A sync that fails (the disk reports an error). A path that is gone is skipped: what
/// comes next with it (its rename) fails and says so.
pub(crate) fn make_durable(paths: &[&Path]) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // Each folder is opened rather than its files: a restored file may be unreadable
        // (mode 0200), its folder is not while the restore fills it.
        let mut devices = HashSet::new();
        let mut dirs = HashSet::new();
        for path in paths {
            let Some(dir) = path.parent() else { continue };
            if !dirs.insert(dir) {
                continue;
            }
            let Ok(meta) = fs::metadata(dir) else {
                continue;
            };
            if devices.insert(meta.dev()) {
                syncfs(&File::open(dir)?)?;
            }
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        for path in paths {
            if let Ok(f) = File::open(path) {
                f.sync_all()?;
            }
        }
        Ok(())
    }
}

/// Writes back everything of the file system `f` is on, and waits for it.
#[cfg(target_os = "linux")]
fn syncfs(f: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs(2) only reads the descriptor, which `f` keeps open for the call.
    if unsafe { libc::syncfs(f.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Removes the partial files an earlier, interrupted restore left beside the files at
/// `written` (those this run restored, and those it found there and skipped), reading each
/// of their folders once. Paths in `keep` stay, whatever their name: they were restored by
/// this run (a snapshot taken before backups left partial files out may hold one).
///
/// Leftovers are garbage by construction: nothing ever reads a partial file but the run
/// that writes it. What cannot be read or removed stays, and is harmless.
pub fn remove_stale<'a>(written: impl IntoIterator<Item = &'a Path>, keep: &HashSet<PathBuf>) {
    let mut by_dir: HashMap<&Path, HashSet<&[u8]>> = HashMap::new();
    for path in written {
        if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
            by_dir.entry(dir).or_default().insert(stem(name.as_bytes()));
        }
    }
    for (dir, stems) in by_dir {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let stale = partial_of(name.as_bytes()).is_some_and(|s| stems.contains(s));
            let path = entry.path();
            if stale && !keep.contains(&path) {
                let _ = fs::remove_file(&path);
            }
        }
    }
}

/// A stored modification time (nanoseconds since the epoch, before it too) as the
/// system's, for setting a restored file's time.
pub fn system_time(ns: i64) -> std::time::SystemTime {
    use std::time::{Duration, UNIX_EPOCH};
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names_parse_back_to_what_they_stand_for() {
        let p = partial_path(Path::new("/x/report.pdf"));
        assert_eq!(p.parent(), Some(Path::new("/x")));
        let name = p.file_name().unwrap().as_bytes();
        assert_eq!(partial_of(name), Some(&b"report.pdf"[..]));
        assert_ne!(
            p,
            partial_path(Path::new("/x/report.pdf")),
            "names are drawn anew"
        );
        for other in [
            &b"report.pdf"[..],
            b".report.pdf",
            b".lifeboat-partial-0123456789abcdef",
            b".a.lifeboat-partial-0123456789ABCDEF",
            b".a.lifeboat-partial-0123456789abcde",
            b"a.lifeboat-partial-0123456789abcdef",
            b".a.lifeboat-partial",
        ] {
            assert_eq!(
                partial_of(other),
                None,
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn only_names_made_here_are_partial_names() {
        for _ in 0..4 {
            let p = partial_path(Path::new("/x/report.pdf"));
            assert!(is_partial_name(p.file_name().unwrap().as_bytes()));
        }
        assert!(is_partial_name(b".a b.lifeboat-partial-0123456789abcdef"));
        for other in [
            &b"report.pdf"[..],
            b".lifeboat-partial-0123456789abcdef",
            b".a.lifeboat-partial-0123456789abcdef.txt",
            b".a.lifeboat-partial-0123456789abcdeg",
            b".a.lifeboat-partial-0123456789abcdef0",
            b"a.lifeboat-partial-0123456789abcdef",
            b".a.lifeboat-partial-",
        ] {
            assert!(
                !is_partial_name(other),
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn long_names_keep_a_partial_name_the_file_system_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let long = "n".repeat(255);
        let (p, _) = create(&dir.path().join(&long), 0o600).unwrap();
        let name = p.file_name().unwrap().as_bytes();
        assert!(name.len() <= 255);
        assert_eq!(partial_of(name), Some(stem(long.as_bytes())));
    }

    #[test]
    fn files_are_made_durable_whatever_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let (p, f) = create(&dir.path().join("secret"), 0o200).unwrap();
        drop(f);
        let gone = dir.path().join("gone/x");
        make_durable(&[p.as_path(), gone.as_path()]).unwrap();
        make_durable(&[]).unwrap();
    }

    #[test]
    fn stale_partials_of_written_names_go_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let stale = d.join(".a.lifeboat-partial-0123456789abcdef");
        let restored = d.join(".a.lifeboat-partial-fedcba9876543210");
        let other = d.join(".b.lifeboat-partial-0123456789abcdef");
        let plain = d.join(".a.lifeboat-partial");
        for p in [&stale, &restored, &other, &plain] {
            fs::write(p, b"x").unwrap();
        }
        let keep = HashSet::from([restored.clone()]);
        remove_stale([d.join("a").as_path()], &keep);
        assert!(!stale.exists());
        assert!(restored.exists() && other.exists() && plain.exists());
    }
}
