//! `FileKeyService`: the key service port on one machine. The tenant-key envelope
//! ([`ports::KeyEnvelope`]) over a master key file as the root key (in place of the
//! region's KMS key) and a file per tenant key (in place of the catalog record):
//!
//! ```text
//! <dir>/master.key              32 raw bytes, mode 0600: the root key
//! <dir>/tenant-keys/<tenant>.key  the tenant's key, wrapped by the master key
//! ```
//!
//! Deleting a tenant's one file shreds every data key of the tenant.

use crate::{blocking, io_error, sync_dir, temp_name};
use async_trait::async_trait;
use domain::TenantId;
use ports::{
    DataKey, EncryptionContext, Error, ErrorKind, KeyEnvelope, KeyService, LocalRootKey, Result,
    TenantKeyStore,
};
use ring::rand::{SecureRandom, SystemRandom};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The master key file holds exactly this many raw bytes.
const MASTER_KEY_LEN: usize = 32;

/// Folder (beside the master key) of the per-tenant key files.
const TENANT_KEYS_DIR: &str = "tenant-keys";

/// Data keys wrapped under per-tenant keys, themselves wrapped by a 256-bit master key kept
/// in a file of mode 0600 (see [`ports::key_envelope`] for the formats).
///
/// The key bytes appear in no error and no `Debug` output.
pub struct FileKeyService {
    path: PathBuf,
    envelope: KeyEnvelope<LocalRootKey, FileTenantKeys>,
}

impl std::fmt::Debug for FileKeyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKeyService")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FileKeyService {
    /// Loads the master key at `path`, or creates it (with its directory) if there is none.
    /// Tenant keys are kept in `tenant-keys/` beside it.
    ///
    /// Creation writes a fresh random key to a 0600 temp file, fsyncs it and hard-links it
    /// into place, which fails if the name exists: two processes racing here end up with
    /// the one key that won, and nobody ever reads a half-written file.
    ///
    /// # Errors
    /// `Other` when the file is not exactly 32 bytes or group or others may read it (the
    /// message says how to fix it); `Unavailable` when it cannot be read or created.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let bytes = match read_master_key(&path) {
            Ok(k) => k,
            Err(e) if e.kind() == ErrorKind::NotFound => create_master_key(&path)?,
            Err(e) => return Err(e),
        };
        let mut key = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        key.copy_from_slice(&bytes);
        let tenant_keys = FileTenantKeys {
            dir: dir_of(&path).join(TENANT_KEYS_DIR),
        };
        Ok(FileKeyService {
            envelope: KeyEnvelope::new(LocalRootKey::new(key), tenant_keys),
            path,
        })
    }

    /// The master key file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl KeyService for FileKeyService {
    async fn generate_data_key(&self, ctx: &EncryptionContext) -> Result<DataKey> {
        self.envelope.generate_data_key(ctx).await
    }

    async fn decrypt_data_key(
        &self,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; 32]>> {
        self.envelope.decrypt_data_key(wrapped, ctx).await
    }

    async fn destroy_tenant_keys(&self, tenant: &TenantId) -> Result<()> {
        self.envelope.destroy_tenant_keys(tenant).await
    }
}

/// Wrapped tenant keys in files, `<dir>/<tenant>.key` (tenant ids are validated: no
/// separator, no traversal). Store-if-absent links a complete file into place, which fails
/// if the name exists; deleting overwrites the file before unlinking it.
#[derive(Debug)]
struct FileTenantKeys {
    dir: PathBuf,
}

impl FileTenantKeys {
    fn path(&self, tenant: &TenantId) -> PathBuf {
        self.dir.join(format!("{tenant}.key"))
    }
}

#[async_trait]
impl TenantKeyStore for FileTenantKeys {
    async fn load(&self, tenant: &TenantId) -> Result<Option<Vec<u8>>> {
        let path = self.path(tenant);
        blocking(move || match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(
                e,
                format_args!("tenant key file {}", path.display()),
            )),
        })
        .await
    }

    async fn store_if_absent(&self, tenant: &TenantId, wrapped: &[u8]) -> Result<bool> {
        let (dir, path, wrapped) = (self.dir.clone(), self.path(tenant), wrapped.to_vec());
        blocking(move || {
            let what = format_args!("tenant key file {}", path.display());
            fs::create_dir_all(&dir).map_err(|e| io_error(e, what))?;
            link_new_private(&dir, &path, &wrapped, ".tmp-tenant-key-")
                .map_err(|e| io_error(e, what))
        })
        .await
    }

    async fn delete(&self, tenant: &TenantId) -> Result<()> {
        let (dir, path) = (self.dir.clone(), self.path(tenant));
        blocking(move || {
            let what = format_args!("tenant key file {}", path.display());
            // Overwrite before unlinking, so the wrapped key is not left in freed blocks.
            match OpenOptions::new().write(true).open(&path) {
                Ok(mut f) => {
                    let len = f.metadata().map_err(|e| io_error(e, what))?.len();
                    let zeros = vec![0u8; usize::try_from(len).unwrap_or(0)];
                    f.write_all(&zeros)
                        .and_then(|_| f.sync_all())
                        .map_err(|e| io_error(e, what))?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io_error(e, what)),
            }
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(e, what)),
            }
            sync_dir(&dir).map_err(|e| io_error(e, what))
        })
        .await
    }
}

/// The folder of `path` (`.` for a bare file name).
fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Reads and checks an existing master key file.
fn read_master_key(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let what = format_args!("master key file {}", path.display());
    let mut file = fs::File::open(path).map_err(|e| io_error(e, what))?;
    let meta = file.metadata().map_err(|e| io_error(e, what))?;
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::Other,
            format!("{what} is not a regular file"),
        ));
    }
    check_private(path, &meta)?;
    if meta.len() != MASTER_KEY_LEN as u64 {
        return Err(Error::new(
            ErrorKind::Other,
            format!(
                "{what} holds {} bytes, not {MASTER_KEY_LEN}: it is not a master key (a lost key cannot be rebuilt; restore it from its backup)",
                meta.len()
            ),
        ));
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(MASTER_KEY_LEN));
    (&mut file)
        .take(MASTER_KEY_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(e, what))?;
    if bytes.len() != MASTER_KEY_LEN {
        return Err(Error::new(
            ErrorKind::Other,
            format!("{what} changed length while being read"),
        ));
    }
    Ok(bytes)
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &fs::Metadata) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::new(
            ErrorKind::Other,
            format!(
                "master key file {} has mode {mode:03o}: group or others may read it; run `chmod 600` on it",
                path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &fs::Metadata) -> Result<()> {
    Ok(())
}

/// Creates a new master key at `path` without ever overwriting one; returns the key that
/// is there afterwards (ours, or the one another process linked first).
fn create_master_key(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let what = format_args!("master key file {}", path.display());
    let dir = dir_of(path);
    fs::create_dir_all(&dir).map_err(|e| io_error(e, what))?;

    let mut key = Zeroizing::new(vec![0u8; MASTER_KEY_LEN]);
    SystemRandom::new()
        .fill(&mut key[..])
        .map_err(|_| Error::new(ErrorKind::Unavailable, "system random source failed"))?;
    match link_new_private(&dir, path, &key, ".tmp-master-key-") {
        Ok(true) => Ok(key),
        Ok(false) => read_master_key(path),
        Err(e) => Err(io_error(e, what)),
    }
}

/// Puts a new owner-only file at `path` holding `bytes`, never overwriting one: written
/// to a temp file in `dir`, fsynced, hard-linked into place (which fails if the name
/// exists), the directory fsynced. `Ok(false)` when another process's file was there
/// first; readers never see a half-written file either way.
fn link_new_private(dir: &Path, path: &Path, bytes: &[u8], tmp_prefix: &str) -> io::Result<bool> {
    let tmp = dir.join(temp_name(tmp_prefix));
    if let Err(e) = write_private(&tmp, bytes) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => sync_dir(dir).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to a new file readable by its owner only, and fsyncs it.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
