//! `FileKeyService`: the key service port with a local master key file, wrapping data keys
//! with AES-256-GCM as KMS does, the encryption context as associated data.

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

/// The first byte of every wrapped key; a later format gets another.
const WRAP_VERSION: u8 = 1;

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
        let mut plaintext = Zeroizing::new([0u8; 32]);
        self.rng
            .fill(&mut plaintext[..])
            .map_err(|_| Error::new(ErrorKind::Unavailable, "system random source failed"))?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| Error::new(ErrorKind::Unavailable, "system random source failed"))?;

        let mut sealed = Zeroizing::new(plaintext.to_vec());
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(ctx.canonical_bytes()),
                &mut *sealed,
            )
            .map_err(|_| Error::new(ErrorKind::Other, "data key wrapping failed"))?;
        let mut wrapped = Vec::with_capacity(WRAPPED_LEN);
        wrapped.push(WRAP_VERSION);
        wrapped.extend_from_slice(&nonce);
        wrapped.extend_from_slice(&sealed);
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
        if wrapped.len() != WRAPPED_LEN || wrapped[0] != WRAP_VERSION {
            return Err(refused());
        }
        let nonce =
            Nonce::try_assume_unique_for_key(&wrapped[1..1 + NONCE_LEN]).map_err(|_| refused())?;
        let mut buf = Zeroizing::new(wrapped[1 + NONCE_LEN..].to_vec());
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(ctx.canonical_bytes()), &mut buf[..])
            .map_err(|_| refused())?;
        let mut out = Zeroizing::new([0u8; 32]);
        if plain.len() != out.len() {
            return Err(refused());
        }
        out.copy_from_slice(plain);
        Ok(out)
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
    let tmp = dir.join(temp_name(".tmp-master-key-"));
    let written = write_private(&tmp, &key);
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(e, what));
    }
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(&dir).map_err(|e| io_error(e, what))?;
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_master_key(path),
        Err(e) => Err(io_error(e, what)),
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
