//! The task's compression dictionary: one per task, trained on the first backup's small
//! items and then used for every small item of every account.
//!
//! It is created once: whichever first backup finishes training first stores it with a
//! conditional put, and every other writer — a concurrent first backup included — takes
//! that one instead of its own. It is kept in [`DICT_COPIES`] objects, since every small
//! item compressed with it depends on it; a reader fetches it only when it meets an item
//! that needs it, and reads at most the two copies. zstd's 32-bit dictionary id is only
//! checked against the task's one dictionary, so ids of different tasks may be equal
//! without harm.

use crate::codec::Dict;
use crate::crypto::SealKind;
use crate::error::{Error, Result};
use crate::Vault;
use ports::{ErrorKind, ObjectKey};

/// Object kind of the compression dictionary (`t/<tenant>/<task>/dict/main[-2]`).
pub const DICT_KIND: &str = "dict";

/// Copies kept of the dictionary: it is small (~110 KB) and every small item of the task
/// depends on it, so one damaged object must not make them unreadable.
pub const DICT_COPIES: u32 = 2;

/// What a vault handle knows of the dictionary: not looked yet, or the answer.
#[derive(Default)]
pub(crate) struct DictCell {
    /// `None` until looked up; then whether the task has one. A dictionary offered by
    /// this handle's writer replaces a "none".
    known: std::sync::RwLock<Option<Option<Dict>>>,
    loading: tokio::sync::Mutex<()>,
}

fn seal_id(copy: u32) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(b"dict");
    b[4..8].copy_from_slice(&copy.to_le_bytes());
    b
}

impl Vault {
    fn dict_key(&self, copy: u32) -> ObjectKey {
        let name = if copy == 1 {
            "main".to_string()
        } else {
            format!("main-{copy}")
        };
        ObjectKey::new(self.tenant(), self.task(), DICT_KIND, &name)
    }

    /// The task's dictionary, if it has one: read at most once per handle, from the first
    /// copy that opens. A damaged copy is named by `verify`; were every
    /// copy damaged, the items that need the dictionary fail to read, as damage, never as
    /// wrong bytes.
    ///
    /// # Errors
    /// A store failure.
    pub async fn dict(&self) -> Result<Option<Dict>> {
        let cell = &self.inner.dict;
        if let Some(known) = cell.known.read().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(known);
        }
        let _one_at_a_time = cell.loading.lock().await;
        if let Some(known) = cell.known.read().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(known);
        }
        let d = async {
            for copy in 1..=DICT_COPIES {
                let key = self.dict_key(copy);
                let sealed = match self.store().get(&key).await {
                    Ok(b) => b,
                    Err(e) if e.is_not_found() && copy == 1 => {
                        // The first copy is written first: without it there is none
                        // (a damaged first copy is different: it exists).
                        return Ok(None);
                    }
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(Error::from(e)),
                };
                match self.open_dict(&key, copy, &sealed) {
                    Ok(d) => return Ok(Some(d)),
                    // `verify` reads every copy and names this one.
                    Err(e) => {
                        tracing::warn!(object = %key, error = %e, "damaged dictionary copy")
                    }
                }
            }
            Ok::<_, Error>(None)
        }
        .await?;
        *cell.known.write().unwrap_or_else(|e| e.into_inner()) = Some(d.clone());
        Ok(d)
    }

    /// The dictionary if already read (for decoding on worker threads).
    pub(crate) fn dict_now(&self) -> Option<Dict> {
        self.inner
            .dict
            .known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .flatten()
    }

    fn open_dict(&self, key: &ObjectKey, copy: u32, sealed: &[u8]) -> Result<Dict> {
        let bytes = self.keys().open(
            SealKind::Dictionary,
            &seal_id(copy),
            sealed,
            &format!("dictionary {key}"),
        )?;
        Dict::from_bytes(bytes).ok_or_else(|| Error::damaged(key.to_string(), "not a dictionary"))
    }

    /// Reads every copy of the dictionary (`verify`): (object, problem) of each that is
    /// damaged, or missing while another copy exists.
    ///
    /// # Errors
    /// A store failure.
    pub async fn check_dict_copies(&self) -> Result<Vec<(String, String)>> {
        let mut found = Vec::new();
        let mut any = false;
        for copy in 1..=DICT_COPIES {
            let key = self.dict_key(copy);
            match self.store().get(&key).await {
                Ok(sealed) => {
                    any = true;
                    if let Err(e) = self.open_dict(&key, copy, &sealed) {
                        found.push((key.to_string(), e.to_string()));
                    }
                }
                Err(e) if e.is_not_found() => {
                    found.push((key.to_string(), "missing".to_string()));
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !any {
            // A task without a dictionary.
            found.clear();
        }
        Ok(found)
    }

    /// Offers a freshly trained dictionary as the task's. Returns the task's dictionary:
    /// this one if it was the first, else the one another writer stored first (which the
    /// caller must use instead). Every copy is durable before it returns, so no item
    /// compressed with it is committed before it.
    ///
    /// # Errors
    /// A store failure.
    pub async fn offer_dict(&self, dict: Dict) -> Result<Dict> {
        let first = self
            .keys()
            .seal(SealKind::Dictionary, &seal_id(1), &dict.bytes)?;
        let chosen = match self
            .store()
            .put_if_absent(&self.dict_key(1), first.into())
            .await
        {
            Ok(()) => dict,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let key = self.dict_key(1);
                let sealed = self.store().get(&key).await?;
                match self.open_dict(&key, 1, &sealed) {
                    Ok(d) => d,
                    // The stored first copy is damaged: the second decides.
                    Err(_) => self.dict_copy_or(2, dict).await?,
                }
            }
            Err(e) => return Err(e.into()),
        };
        for copy in 2..=DICT_COPIES {
            let sealed = self
                .keys()
                .seal(SealKind::Dictionary, &seal_id(copy), &chosen.bytes)?;
            match self
                .store()
                .put_if_absent(&self.dict_key(copy), sealed.into())
                .await
            {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
        }
        *self
            .inner
            .dict
            .known
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Some(chosen.clone()));
        Ok(chosen)
    }

    /// Copy `copy` if it opens, else `fallback` stored there.
    async fn dict_copy_or(&self, copy: u32, fallback: Dict) -> Result<Dict> {
        let key = self.dict_key(copy);
        match self.store().get(&key).await {
            Ok(sealed) => self
                .open_dict(&key, copy, &sealed)
                .or_else(|_| Ok(fallback)),
            Err(e) if e.is_not_found() => Ok(fallback),
            Err(e) => Err(e.into()),
        }
    }
}
