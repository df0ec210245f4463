//! Helpers shared by the integration tests of the `lifeboat` command: run the real binary
//! against a home folder in a temp dir, check its output, generate deterministic data, and
//! compare folder trees byte for byte.
//!
//! Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

pub mod kill;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The binary under test (the dev-profile build of this package).
pub const BIN: &str = env!("CARGO_BIN_EXE_lifeboat");

/// The prefix of every non-in-place restore folder.
pub const RESTORE_PREFIX: &str = "Lifeboat Restore ";

/// One finished run of the binary.
#[derive(Debug)]
pub struct Run {
    pub what: String,
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// A description for assertion messages.
    pub fn show(&self) -> String {
        format!(
            "`{}` exited with {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.what, self.code, self.stdout, self.stderr
        )
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.show()))
    }

    /// The stdout lines.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// A `lifeboat` installation: the binary with `--home` set, optionally run as another user.
#[derive(Clone, Debug)]
pub struct Lifeboat {
    pub home: PathBuf,
    /// A command prefix (`setpriv …`) that runs the binary as another user; empty for none.
    pub wrap: Vec<OsString>,
}

impl Lifeboat {
    pub fn new(home: impl Into<PathBuf>) -> Self {
        Lifeboat {
            home: home.into(),
            wrap: Vec::new(),
        }
    }

    /// The same installation, every command run through `wrap` (e.g. `setpriv …`).
    pub fn wrapped(mut self, wrap: Vec<OsString>) -> Self {
        self.wrap = wrap;
        self
    }

    /// The command for `lifeboat --home HOME ARGS…`, with a clean environment for it.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = match self.wrap.split_first() {
            Some((prog, rest)) => {
                let mut c = Command::new(prog);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        c.arg("--home")
            .arg(&self.home)
            .args(args)
            .env_remove("LIFEBOAT_HOME")
            .env_remove("LIFEBOAT_LOG")
            // A panic would print its backtrace: the error checks look for it.
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null());
        c
    }

    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let what = format!(
            "lifeboat {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let out = self
            .command(&args)
            .output()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        Run {
            what,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs and expects exit status `code`.
    pub fn expect<I, S>(&self, code: i32, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let r = self.run(args);
        assert_eq!(r.code, Some(code), "unexpected exit status:\n{}", r.show());
        assert_no_panic(&r);
        r
    }

    /// Runs and expects success.
    pub fn ok<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.expect(0, args)
    }

    /// Runs and expects a clean failure: a non-zero exit and exactly one stderr line starting
    /// with `lifeboat: error:`. Returns that line.
    pub fn fail<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let r = self.run(args);
        assert_error_line(&r).to_string()
    }

    /// `task add folder NAME PATH`.
    pub fn add_folder_task(&self, name: &str, path: &Path) -> Run {
        self.add_task_as("folder", name, path)
    }

    /// `task add SUBCOMMAND NAME PATH`, with `folder` or its alias `files`.
    pub fn add_task_as(&self, subcommand: &str, name: &str, path: &Path) -> Run {
        self.ok([
            OsStr::new("task"),
            "add".as_ref(),
            subcommand.as_ref(),
            name.as_ref(),
            path.as_os_str(),
        ])
    }

    /// `backup TASK --json`, expecting `code`; returns the one snapshot it made.
    pub fn backup_json(&self, task: &str, code: i32) -> serde_json::Value {
        let r = self.expect(code, ["backup", task, "--json"]);
        let v = r.json();
        let list = v
            .as_array()
            .unwrap_or_else(|| panic!("not a list:\n{}", r.show()));
        assert_eq!(list.len(), 1, "one account, one snapshot:\n{}", r.show());
        list[0].clone()
    }

    /// The ids of a task's snapshots, oldest first (`snapshots --json`).
    pub fn snapshot_ids(&self, task: &str) -> Vec<String> {
        let r = self.ok(["snapshots", task, "--json"]);
        r.json()
            .as_array()
            .unwrap_or_else(|| panic!("not a list:\n{}", r.show()))
            .iter()
            .map(|s| {
                s["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("snapshot without id:\n{}", r.show()))
                    .to_string()
            })
            .collect()
    }
}

/// Fails if the run panicked (a panic message or a backtrace on stderr, or exit 101).
pub fn assert_no_panic(r: &Run) {
    let lower = r.stderr.to_lowercase();
    assert!(
        !lower.contains("panicked") && !lower.contains("backtrace") && r.code != Some(101),
        "the command panicked:\n{}",
        r.show()
    );
}

/// Checks a failed run: non-zero exit (not a signal), no panic, and exactly one stderr line
/// that starts with `lifeboat: error:`. Returns that line.
pub fn assert_error_line(r: &Run) -> &str {
    assert!(
        matches!(r.code, Some(c) if c != 0),
        "expected a failure exit status:\n{}",
        r.show()
    );
    assert_no_panic(r);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line:\n{}", r.show());
    assert!(
        lines[0].starts_with("lifeboat: error: ") && lines[0].len() > "lifeboat: error: ".len(),
        "the error line does not start with `lifeboat: error:`:\n{}",
        r.show()
    );
    lines[0]
}

/// A path as `&str` (temp dirs have UTF-8 names).
pub fn ps(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

/// Creates the parent folders and writes `data`.
pub fn write(path: &Path, data: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, data).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// `len` deterministic pseudo-random bytes for `seed` (BLAKE3 in XOF mode: fast).
pub fn random_bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut h = blake3::Hasher::new();
    h.update(seed.as_bytes());
    h.finalize_xof().fill(&mut out);
    out
}

/// `len` bytes of deterministic text-like data (lowercase words, spaces and newlines):
/// compressible, like real documents.
pub fn text_bytes(seed: &str, len: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"etaoinshrdlucmfwypvbgkjqxz  \n";
    random_bytes(seed, len)
        .into_iter()
        .map(|b| ALPHABET[b as usize % ALPHABET.len()])
        .collect()
}

/// Streaming BLAKE3 of a file, with its length.
pub fn hash_file(path: &Path) -> (u64, [u8; 32]) {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    (len, *h.finalize().as_bytes())
}

/// One item of a folder tree, as compared between a source and its restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Dir { mode: u32 },
    File { len: u64, hash: [u8; 32], mode: u32 },
    Link { target: Vec<u8> },
    Other,
}

/// Every item below `root` (not `root` itself), keyed by its relative path as raw bytes.
pub fn tree(root: &Path) -> BTreeMap<Vec<u8>, Item> {
    let mut out = BTreeMap::new();
    walk(root, &mut Vec::new(), &mut out);
    out
}

fn walk(dir: &Path, rel: &mut Vec<u8>, out: &mut BTreeMap<Vec<u8>, Item>) {
    let rd = fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for ent in rd {
        let ent = ent.unwrap();
        let path = ent.path();
        let name = ent.file_name();
        let len = rel.len();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name.as_bytes());
        let meta = fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        let ft = meta.file_type();
        if ft.is_dir() {
            out.insert(rel.clone(), Item::Dir { mode });
            walk(&path, rel, out);
        } else if ft.is_file() {
            let (len, hash) = hash_file(&path);
            out.insert(rel.clone(), Item::File { len, hash, mode });
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).unwrap().into_os_string().into_vec();
            out.insert(rel.clone(), Item::Link { target });
        } else {
            out.insert(rel.clone(), Item::Other);
        }
        rel.truncate(len);
    }
}

/// Asserts two trees hold the same names, kinds, modes, contents and link targets, and
/// names the first differences if not.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    assert_tree_is(&tree(expected), &expected.display().to_string(), actual);
}

/// Asserts the tree at `actual` is `expected` (as [`tree`] made it from `what`).
pub fn assert_tree_is(expected: &BTreeMap<Vec<u8>, Item>, what: &str, actual: &Path) {
    let a = expected;
    let b = tree(actual);
    let mut problems = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => problems.push(format!("missing: {}", String::from_utf8_lossy(k))),
            Some(w) if w != v => problems.push(format!(
                "differs: {}: expected {v:?}, found {w:?}",
                String::from_utf8_lossy(k)
            )),
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        problems.push(format!("unexpected: {}", String::from_utf8_lossy(k)));
    }
    assert!(
        problems.is_empty(),
        "{} differs from {what} in {} items; first ones:\n{}",
        actual.display(),
        problems.len(),
        problems
            .iter()
            .take(15)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The `Lifeboat Restore …` folders in `dir`, sorted by name.
pub fn restore_folders(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.as_bytes().starts_with(RESTORE_PREFIX.as_bytes()))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// The one restore folder in `dir`.
pub fn only_restore_folder(dir: &Path) -> PathBuf {
    let v = restore_folders(dir);
    assert_eq!(
        v.len(),
        1,
        "expected one restore folder in {}: {v:?}",
        dir.display()
    );
    v.into_iter().next().unwrap()
}

/// Every regular file below `dir` (following no links).
pub fn count_files(dir: &Path) -> usize {
    if !dir.exists() {
        return 0;
    }
    tree(dir)
        .values()
        .filter(|i| !matches!(i, Item::Dir { .. }))
        .count()
}

/// Whether this process runs as root (which ignores permission bits).
pub fn running_as_root() -> bool {
    match Command::new("id").arg("-u").output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim() == "0",
        // /proc/self belongs to the process's effective user.
        _ => fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0),
    }
}

/// Whether util-linux's `setpriv` can be run.
pub fn have_setpriv() -> bool {
    Command::new("setpriv")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The prefix that runs a command as `nobody` (uid and gid 65534, no groups).
pub fn as_nobody() -> Vec<OsString> {
    [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ]
    .iter()
    .map(OsString::from)
    .collect()
}

/// Sets mode `mode` on `path`.
pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Appends `data` to an existing file.
pub fn append(path: &Path, data: &[u8]) {
    let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(data).unwrap();
}
