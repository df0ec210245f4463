//! Per-task keys, content ids and sealing.
//!
//! From a task's 256-bit data key (from the key service) we derive two keys with BLAKE3's
//! key derivation: one for content ids (keyed BLAKE3, so equal content in two tenants gets
//! unrelated ids) and one sealing key. Nothing is sealed under the sealing key itself:
//! every record is sealed with AES-256-GCM (ring's assembly implementation) under a subkey
//! derived from the sealing key, the record's kind and its id, with a random 96-bit nonce.
//!
//! **Nonce bound.** GCM's guideline is at most 2^32 random nonces per key. A subkey is
//! used only for the records of one (kind, id): one blob's content (sealed again only when
//! it is stored again after damage), one pack's index, one catalog record (rewritten once
//! per pause of a backup), one index segment, one dictionary copy. No realistic task comes
//! near 2^32 seals of one id, however many items it holds, so the bound holds per record
//! rather than per task. Every sealed record is also bound by associated data to tenant,
//! task, kind and id, so a record copied to another place, task or tenant fails to open.

use crate::error::{Error, Result};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;
use zeroize::Zeroizing;

/// Bytes added by sealing: the nonce in front, the tag behind.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + 16;

/// A keyed BLAKE3 hash of an item's plaintext: its identity within a task.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(pub [u8; 32]);

impl BlobId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).ok()?;
        Some(BlobId(b))
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..16])
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// What a sealed record is; part of the associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SealKind {
    Data = 1,
    Tree = 2,
    PackIndex = 3,
    Dictionary = 4,
    Record = 5,
    /// A task's credential for its source (a password, a token, an app secret).
    Secret = 6,
    /// A snapshot's or checkpoint's side data (cursor, item errors), stored as a blob.
    Meta = 7,
    /// A segment of an account's location index.
    IndexSegment = 8,
}

/// The keys of one task. Cheap to share; the key material is wiped on drop.
pub struct TaskKeys {
    id_key: Zeroizing<[u8; 32]>,
    seal_key: Zeroizing<[u8; 32]>,
    scope: Vec<u8>,
    rng: SystemRandom,
}

impl fmt::Debug for TaskKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TaskKeys(<redacted>)")
    }
}

impl TaskKeys {
    /// Derives the task's keys from its data key; `tenant` and `task` become part of every
    /// seal's associated data.
    pub fn derive(data_key: &[u8; 32], tenant: &str, task: &str) -> Self {
        let id_key = Zeroizing::new(blake3::derive_key("lifeboat 2026-12 item id", data_key));
        let seal_key = Zeroizing::new(blake3::derive_key("lifeboat 2026-12 seal", data_key));
        let mut scope = Vec::with_capacity(tenant.len() + task.len() + 16);
        scope.extend_from_slice(b"lifeboat/2");
        for s in [tenant, task] {
            scope.extend_from_slice(&(s.len() as u16).to_be_bytes());
            scope.extend_from_slice(s.as_bytes());
        }
        TaskKeys {
            id_key,
            seal_key,
            scope,
            rng: SystemRandom::new(),
        }
    }

    /// The AEAD key for records of one kind and id (see the module doc on the nonce bound).
    fn subkey(&self, kind: SealKind, id: &[u8; 32]) -> LessSafeKey {
        let mut h = blake3::Hasher::new_keyed(&self.seal_key);
        h.update(&[kind as u8]);
        h.update(id);
        let k = Zeroizing::new(*h.finalize().as_bytes());
        let unbound =
            UnboundKey::new(&AES_256_GCM, k.as_ref()).expect("32 bytes is an AES-256 key");
        LessSafeKey::new(unbound)
    }

    /// A short, stable name for an account inside this task's object keys: keyed, so the
    /// store's listing does not reveal who the accounts are, and free of the characters an
    /// account id may hold.
    pub fn account_tag(&self, account: &str) -> String {
        let mut h = blake3::Hasher::new_keyed(&self.id_key);
        h.update(b"account tag\0");
        h.update(account.as_bytes());
        hex::encode(&h.finalize().as_bytes()[..8])
    }

    /// The content id of `data`.
    pub fn blob_id(&self, data: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.id_key, data).as_bytes())
    }

    fn aad(&self, kind: SealKind, id: &[u8; 32]) -> Vec<u8> {
        let mut a = Vec::with_capacity(self.scope.len() + 33);
        a.extend_from_slice(&self.scope);
        a.push(kind as u8);
        a.extend_from_slice(id);
        a
    }

    /// Seals `plain` as `nonce || ciphertext || tag`, appended to `out`.
    pub fn seal_into(
        &self,
        kind: SealKind,
        id: &[u8; 32],
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        self.seal_parts_into(kind, id, &[plain], out)
    }

    pub fn seal(&self, kind: SealKind, id: &[u8; 32], plain: &[u8]) -> Result<Vec<u8>> {
        self.seal_parts(kind, id, &[plain])
    }

    /// Seals the concatenation of `parts` (a codec byte and its payload) without first
    /// joining them: the parts are copied once, into the sealed record.
    pub fn seal_parts(&self, kind: SealKind, id: &[u8; 32], parts: &[&[u8]]) -> Result<Vec<u8>> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut out = Vec::with_capacity(len + SEAL_OVERHEAD);
        self.seal_parts_into(kind, id, parts, &mut out)?;
        Ok(out)
    }

    /// Appends `nonce || ciphertext || tag` of the concatenated `parts` to `out`. Nonces
    /// are random: a deterministic nonce would be reused if the same content were ever
    /// compressed differently (another zstd version or dictionary), which breaks GCM.
    fn seal_parts_into(
        &self,
        kind: SealKind,
        id: &[u8; 32],
        parts: &[&[u8]],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| Error::Format("the system random generator failed".into()))?;
        let start = out.len();
        out.extend_from_slice(&nonce);
        for p in parts {
            out.extend_from_slice(p);
        }
        let aad = self.aad(kind, id);
        let tag = self
            .subkey(kind, id)
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut out[start + NONCE_LEN..],
            )
            .map_err(|_| Error::Format("sealing failed".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens a record made by [`TaskKeys::seal`] with the same kind and id.
    ///
    /// # Errors
    /// `Damaged` when the record is too short or fails authentication (tampered, moved, or
    /// sealed by another task's key); the bytes are never returned then.
    pub fn open(
        &self,
        kind: SealKind,
        id: &[u8; 32],
        sealed: &[u8],
        what: &str,
    ) -> Result<Vec<u8>> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(Error::damaged(what, "sealed record is truncated"));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[..NONCE_LEN]);
        let mut buf = sealed[NONCE_LEN..].to_vec();
        let aad = self.aad(kind, id);
        let n = self
            .subkey(kind, id)
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut buf,
            )
            .map_err(|_| Error::damaged(what, "authentication tag does not match"))?
            .len();
        buf.truncate(n);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_keyed_per_task_key() {
        let a = TaskKeys::derive(&[1; 32], "t", "k");
        let b = TaskKeys::derive(&[2; 32], "t", "k");
        assert_eq!(a.blob_id(b"x"), a.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
    }

    #[test]
    fn a_sealed_record_opens_only_in_its_place() {
        let k = TaskKeys::derive(&[7; 32], "t1", "mail");
        let id = k.blob_id(b"hello").0;
        let s = k.seal(SealKind::Data, &id, b"hello").unwrap();
        assert_eq!(k.open(SealKind::Data, &id, &s, "x").unwrap(), b"hello");
        assert!(k.open(SealKind::Tree, &id, &s, "x").is_err());
        assert!(k.open(SealKind::Data, &[0; 32], &s, "x").is_err());
        let other_task = TaskKeys::derive(&[7; 32], "t1", "mail2");
        assert!(other_task.open(SealKind::Data, &id, &s, "x").is_err());
        let other_tenant = TaskKeys::derive(&[7; 32], "t2", "mail");
        assert!(other_tenant.open(SealKind::Data, &id, &s, "x").is_err());
        for i in 0..s.len() {
            let mut t = s.clone();
            t[i] ^= 0x40;
            assert!(k.open(SealKind::Data, &id, &t, "x").is_err(), "byte {i}");
        }
    }
}
