//! `FileKeyService`: the key service port with a local master key file, wrapping data keys
//! with AES-256-GCM as KMS does, the encryption context as associated data. Each tenant has
//! a key of its own (kept wrapped by the master key in a file per tenant), so that deleting
//! that one file shreds every data key of the tenant.

use crate::{io_error, sync_dir, temp_name};
use async_trait::async_trait;
use ports::{DataKey, EncryptionContext, Error, ErrorKind, KeyService, Result};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The master key file holds exactly this many raw bytes.
const MASTER_KEY_LEN: usize = 32;

/// The first byte of a data key wrapped directly under the master key (a context without a
/// tenant).
const WRAP_VERSION: u8 = 1;
/// The first byte of a data key wrapped under its tenant's key.
const WRAP_TENANT: u8 = 2;
/// Folder (beside the master key) of the per-tenant key files.
const TENANT_KEYS_DIR: &str = "tenant-keys";

/// `version || nonce || ciphertext || tag`.
const WRAPPED_LEN: usize = 1 + NONCE_LEN + 32 + 16;

/// Data keys wrapped under a 256-bit master key kept in a file of mode 0600.
///
/// Wrapped form: `1 || 12-byte random nonce || AES-256-GCM(master, data key, aad =
/// context.canonical_bytes())`. Random nonces are safe for far more keys than a machine
/// will ever generate (2^32 under one master key).
///
/// The key bytes appear in no error and no `Debug` output.
pub struct FileKeyService {
    key: LessSafeKey,
    rng: SystemRandom,
    path: PathBuf,
    /// Tenant keys already unwrapped, by tenant.
    tenants: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<LessSafeKey>>>,
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
        let rng = SystemRandom::new();
        let bytes = match read_master_key(&path) {
            Ok(k) => k,
            Err(e) if e.kind() == ErrorKind::NotFound => create_master_key(&path, &rng)?,
            Err(e) => return Err(e),
        };
        let key = UnboundKey::new(&AES_256_GCM, &bytes[..])
            .map_err(|_| Error::new(ErrorKind::Other, "master key rejected by AES-256-GCM"))?;
        Ok(FileKeyService {
            key: LessSafeKey::new(key),
            rng,
            path,
            tenants: Default::default(),
        })
    }

    fn tenant_key_path(&self, tenant: &str) -> PathBuf {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        dir.join(TENANT_KEYS_DIR).join(format!("{tenant}.key"))
    }

    fn tenant_aad(tenant: &str) -> Vec<u8> {
        [b"lifeboat tenant key\0".as_slice(), tenant.as_bytes()].concat()
    }

    /// The tenant's key: from the cache, from its file, or (when `create`) made now.
    ///
    /// # Errors
    /// `Integrity` when it does not exist and may not be created (destroyed, or never made)
    /// or its file does not unwrap.
    fn tenant_key(&self, tenant: &str, create: bool) -> Result<std::sync::Arc<LessSafeKey>> {
        let mut cache = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = cache.get(tenant) {
            return Ok(k.clone());
        }
        // Tenant ids are validated ([A-Za-z0-9_-]); refuse anything else as a file name.
        if tenant.is_empty()
            || !tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "context has an invalid tenant",
            ));
        }
        let path = self.tenant_key_path(tenant);
        let wrapped = match fs::read(&path) {
            Ok(w) => Zeroizing::new(w),
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                self.create_tenant_key(tenant, &path)?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::new(
                    ErrorKind::Integrity,
                    "wrapped data key refused: the tenant's key is destroyed or was never made",
                ))
            }
            Err(e) => {
                return Err(io_error(
                    e,
                    format_args!("tenant key file {}", path.display()),
                ))
            }
        };
        let refused = || {
            Error::new(
                ErrorKind::Integrity,
                "tenant key file is damaged or not ours",
            )
        };
        if wrapped.len() != WRAPPED_LEN || wrapped[0] != WRAP_VERSION {
            return Err(refused());
        }
        let nonce =
            Nonce::try_assume_unique_for_key(&wrapped[1..1 + NONCE_LEN]).map_err(|_| refused())?;
        let mut buf = Zeroizing::new(wrapped[1 + NONCE_LEN..].to_vec());
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(Self::tenant_aad(tenant)), &mut buf[..])
            .map_err(|_| refused())?;
        let key = UnboundKey::new(&AES_256_GCM, plain).map_err(|_| refused())?;
        let key = std::sync::Arc::new(LessSafeKey::new(key));
        cache.insert(tenant.to_string(), key.clone());
        Ok(key)
    }

    /// Makes a tenant key and links its file into place without overwriting one another
    /// process made first; returns the file's content as it is afterwards.
    fn create_tenant_key(&self, tenant: &str, path: &Path) -> Result<Zeroizing<Vec<u8>>> {
        let what = format_args!("tenant key file {}", path.display());
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| io_error(e, what))?;
        let mut key = Zeroizing::new([0u8; 32]);
        self.rng
            .fill(&mut key[..])
            .map_err(|_| Error::new(ErrorKind::Unavailable, "system random source failed"))?;
        let wrapped = self.wrap(&self.key, &key, &Self::tenant_aad(tenant), WRAP_VERSION)?;
        match link_new_private(dir, path, &wrapped, ".tmp-tenant-key-") {
            Ok(true) => Ok(Zeroizing::new(wrapped)),
            Ok(false) => fs::read(path)
                .map(Zeroizing::new)
                .map_err(|e| io_error(e, what)),
            Err(e) => Err(io_error(e, what)),
        }
    }

    /// `version || nonce || AES-256-GCM(key, plaintext, aad)`.
    fn wrap(
        &self,
        key: &LessSafeKey,
        plaintext: &[u8; 32],
        aad: &[u8],
        version: u8,
    ) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| Error::new(ErrorKind::Unavailable, "system random source failed"))?;
        let mut sealed = Zeroizing::new(plaintext.to_vec());
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut *sealed,
        )
        .map_err(|_| Error::new(ErrorKind::Other, "key wrapping failed"))?;
        let mut wrapped = Vec::with_capacity(WRAPPED_LEN);
        wrapped.push(version);
        wrapped.extend_from_slice(&nonce);
        wrapped.extend_from_slice(&sealed);
        Ok(wrapped)
    }

    /// The master key file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl KeyService for FileKeyService {
    async fn generate_data_key(&self, ctx: &EncryptionContext) -> Result<DataKey> {
        let mut plaintext = Zeroizing::new([0u8; 32]);
        self.rng
            .fill(&mut plaintext[..])
            .map_err(|_| Error::new(ErrorKind::Unavailable, "system random source failed"))?;
        let aad = ctx.canonical_bytes();
        let wrapped = match ctx.0.get("tenant") {
            Some(t) => {
                let key = self.tenant_key(t, true)?;
                self.wrap(&key, &plaintext, &aad, WRAP_TENANT)?
            }
            None => self.wrap(&self.key, &plaintext, &aad, WRAP_VERSION)?,
        };
        Ok(DataKey { plaintext, wrapped })
    }

    async fn decrypt_data_key(
        &self,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; 32]>> {
        let refused = || {
            Error::new(
                ErrorKind::Integrity,
                "wrapped data key refused: wrong context, wrong master key or altered",
            )
        };
        if wrapped.len() != WRAPPED_LEN {
            return Err(refused());
        }
        let tenant_key;
        let key = match (wrapped[0], ctx.0.get("tenant")) {
            (WRAP_VERSION, _) => &self.key,
            (WRAP_TENANT, Some(t)) => {
                tenant_key = self.tenant_key(t, false)?;
                &*tenant_key
            }
            _ => return Err(refused()),
        };
        let nonce =
            Nonce::try_assume_unique_for_key(&wrapped[1..1 + NONCE_LEN]).map_err(|_| refused())?;
        let mut buf = Zeroizing::new(wrapped[1 + NONCE_LEN..].to_vec());
        let plain = key
            .open_in_place(nonce, Aad::from(ctx.canonical_bytes()), &mut buf[..])
            .map_err(|_| refused())?;
        let mut out = Zeroizing::new([0u8; 32]);
        if plain.len() != out.len() {
            return Err(refused());
        }
        out.copy_from_slice(plain);
        Ok(out)
    }

    async fn destroy_tenant_keys(&self, tenant: &domain::TenantId) -> Result<()> {
        let mut cache = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        cache.remove(tenant.as_str());
        let path = self.tenant_key_path(tenant.as_str());
        let what = format_args!("tenant key file {}", path.display());
        // Overwrite before unlinking, so the wrapped key is not left in freed blocks.
        match OpenOptions::new().write(true).open(&path) {
            Ok(mut f) => {
                f.write_all(&[0u8; WRAPPED_LEN])
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
        if let Some(dir) = path.parent() {
            sync_dir(dir).map_err(|e| io_error(e, what))?;
        }
        Ok(())
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
fn create_master_key(path: &Path, rng: &SystemRandom) -> Result<Zeroizing<Vec<u8>>> {
    let what = format_args!("master key file {}", path.display());
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|e| io_error(e, what))?;

    let mut key = Zeroizing::new(vec![0u8; MASTER_KEY_LEN]);
    rng.fill(&mut key[..])
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
