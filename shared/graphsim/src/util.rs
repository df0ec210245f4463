//! Small building blocks shared by every resource: opaque tokens, ids, deterministic content.

use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use rand::Rng;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encodes a server-side cursor as an opaque string. Clients must treat skip and delta tokens
/// as opaque (Graph says so), so the encoding only has to be URL-safe and reversible here.
pub fn encode_token<T: Serialize>(value: &T) -> String {
    let json = serde_json::to_vec(value).unwrap_or_default();
    // A light scramble so that a token does not read as JSON: nobody should parse it.
    let scrambled: Vec<u8> = json
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ (0x5a ^ (i as u8 & 0x1f)))
        .collect();
    URL_SAFE_NO_PAD.encode(scrambled)
}

/// The reverse of [`encode_token`]; `None` for anything that was not made by it.
pub fn decode_token<T: DeserializeOwned>(token: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(token.trim_matches('\'')).ok()?;
    let json: Vec<u8> = bytes
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ (0x5a ^ (i as u8 & 0x1f)))
        .collect();
    serde_json::from_slice(&json).ok()
}

/// An Exchange-looking identifier: base64 (URL-safe, padded) of what makes the item unique.
pub fn outlook_id(prefix: &str, parts: &[u64]) -> String {
    let mut raw = Vec::with_capacity(parts.len() * 8 + 8);
    raw.extend_from_slice(b"\x00\x00\x2e\x00");
    // Each part is masked by a constant of its position: still one-to-one, but the ids no
    // longer look like runs of zeros.
    for (i, p) in parts.iter().enumerate() {
        raw.extend_from_slice(&(p ^ splitmix(i as u64 + 0x0e7c)).to_be_bytes());
    }
    format!("{prefix}{}", URL_SAFE.encode(raw))
}

/// A GUID in the usual 8-4-4-4-12 form, drawn from the simulator's seeded generator.
pub fn guid(rng: &mut impl Rng) -> String {
    let b: [u8; 16] = rng.gen();
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-4{:01x}{:02x}-a{:01x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5], b[6] & 0xf, b[7], b[8] & 0xf, b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

/// A drive item id as OneDrive for Business shows them: 34 upper-case base32-ish characters.
pub fn drive_item_id(rng: &mut impl Rng) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut s = String::from("01");
    for _ in 0..32 {
        s.push(ALPHABET[rng.gen_range(0..32)] as char);
    }
    s
}

pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub fn unb64(text: &str) -> Option<Vec<u8>> {
    let cleaned: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD.decode(cleaned).ok()
}

/// The body of a file or attachment. Generated content costs no memory whatever its size, so
/// a benchmark can ask for a large organisation; uploaded content is kept as sent.
#[derive(Clone, Debug)]
pub enum Content {
    Generated { seed: u64, len: u64 },
    Bytes(Arc<Vec<u8>>),
}

impl Content {
    pub fn len(&self) -> u64 {
        match self {
            Content::Generated { len, .. } => *len,
            Content::Bytes(b) => b.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes `[start, end)`; each 8-byte word depends only on the seed and its position, so
    /// any range is produced without producing what comes before it.
    pub fn range(&self, start: u64, end: u64) -> Vec<u8> {
        let end = end.min(self.len());
        if start >= end {
            return Vec::new();
        }
        match self {
            Content::Bytes(b) => b[start as usize..end as usize].to_vec(),
            Content::Generated { seed, .. } => {
                let mut out = Vec::with_capacity((end - start) as usize);
                let mut pos = start;
                while pos < end {
                    let word = splitmix(seed ^ (pos / 8).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                    let bytes = word.to_le_bytes();
                    // Keep generated files text-like half of the time so they compress as
                    // documents do; the other half stays incompressible like media.
                    let textual = seed & 1 == 0;
                    let mut i = (pos % 8) as usize;
                    while i < 8 && pos < end {
                        let b = bytes[i];
                        out.push(if textual {
                            b"etaoin shrdlu\n.,ETAOINcmfwyp"[(b % 28) as usize]
                        } else {
                            b
                        });
                        i += 1;
                        pos += 1;
                    }
                }
                out
            }
        }
    }

    pub fn all(&self) -> Vec<u8> {
        self.range(0, self.len())
    }
}

pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Deterministic value in `[0, 1)` for the `n`th draw of a named stream, so a fault decision
/// depends on the seed and the request's rank, not on a shared generator's state.
pub fn unit(seed: u64, stream: u64, n: u64) -> f64 {
    (splitmix(seed ^ splitmix(stream ^ splitmix(n))) >> 11) as f64 / (1u64 << 53) as f64
}

/// The XOR-based hash OneDrive for Business reports as `quickXorHash` (base64 of 20 bytes).
pub fn quick_xor_hash(content: &Content) -> String {
    const WIDTH: usize = 160;
    const SHIFT: usize = 11;
    let mut cells = [0u64; 3];
    let total = content.len();
    let mut pos = 0u64;
    while pos < total {
        let chunk = content.range(pos, (pos + (1 << 20)).min(total));
        if chunk.is_empty() {
            break;
        }
        for (i, &b) in chunk.iter().enumerate() {
            let shift = ((pos + i as u64) * SHIFT as u64 % WIDTH as u64) as usize;
            let cell = shift / 64;
            let offset = shift % 64;
            let bits_in_cell = if cell == 2 { 32 } else { 64 };
            cells[cell] ^= (b as u64) << offset;
            if offset > bits_in_cell - 8 {
                let next = if cell == 2 { 0 } else { cell + 1 };
                cells[next] ^= (b as u64) >> (bits_in_cell - offset);
            }
        }
        pos += chunk.len() as u64;
    }
    let mut out = [0u8; 20];
    for (i, cell) in cells.iter().enumerate() {
        let bytes = cell.to_le_bytes();
        let n = if i == 2 { 4 } else { 8 };
        out[i * 8..i * 8 + n].copy_from_slice(&bytes[..n]);
    }
    let len_bytes = total.to_le_bytes();
    for i in 0..8 {
        out[20 - 8 + i] ^= len_bytes[i];
    }
    b64(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let t = encode_token(&(1u64, "x".to_string()));
        assert_eq!(decode_token::<(u64, String)>(&t), Some((1, "x".into())));
        assert!(decode_token::<(u64, String)>("not a token").is_none());
    }

    #[test]
    fn generated_ranges_agree_with_the_whole() {
        let c = Content::Generated {
            seed: 42,
            len: 1000,
        };
        let all = c.all();
        assert_eq!(all.len(), 1000);
        assert_eq!(c.range(13, 517), all[13..517].to_vec());
        assert_eq!(c.range(990, 2000), all[990..].to_vec());
    }

    #[test]
    fn quick_xor_hash_of_empty_is_zero() {
        assert_eq!(
            quick_xor_hash(&Content::Bytes(Arc::new(Vec::new()))),
            b64(&[0u8; 20])
        );
    }
}
