//! Compression of one blob before sealing. The codec byte travels inside the ciphertext, so
//! an observer of the store learns nothing about content from it.

use crate::error::{Error, Result};
use std::cell::RefCell;

/// zstd level for items. Level 3 is zstd's default: on mail text it runs at ~250 MB/s per
/// core, which keeps a first backup within its CPU budget; higher levels gain a few percent
/// for twice the CPU.
pub const LEVEL: i32 = 3;

/// Below this size compression does not pay for its frame header.
const MIN_COMPRESS: usize = 64;

/// Blobs at least this large are probed before compressing: a 32 KiB sample at level 1
/// tells incompressible data (media, archives, encrypted files) apart cheaply.
const PROBE_FROM: usize = 128 * 1024;
const PROBE_LEN: usize = 32 * 1024;

const RAW: u8 = 0;
const ZSTD: u8 = 1;

thread_local! {
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

fn with_compressor<T>(f: impl FnOnce(&mut zstd::bulk::Compressor<'static>) -> T) -> T {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        let comp = c.get_or_insert_with(|| {
            zstd::bulk::Compressor::new(LEVEL).expect("zstd accepts its default level")
        });
        f(comp)
    })
}

/// `codec byte || payload`: zstd when it saves space, raw otherwise.
pub fn encode(data: &[u8]) -> Vec<u8> {
    if data.len() >= MIN_COMPRESS && worth_compressing(data) {
        let bound = zstd::zstd_safe::compress_bound(data.len());
        let mut out = vec![0u8; bound + 1];
        out[0] = ZSTD;
        let n = with_compressor(|c| c.compress_to_buffer(data, &mut out[1..]));
        if let Ok(n) = n {
            if n + 1 < data.len() {
                out.truncate(n + 1);
                return out;
            }
        }
    }
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(RAW);
    out.extend_from_slice(data);
    out
}

fn worth_compressing(data: &[u8]) -> bool {
    if data.len() < PROBE_FROM {
        return true;
    }
    let sample = &data[..PROBE_LEN];
    match zstd::bulk::compress(sample, 1) {
        Ok(c) => c.len() * 10 < sample.len() * 9,
        Err(_) => false,
    }
}

/// Reverses [`encode`]. `raw_len` (from the index) bounds the output, so a damaged length
/// can never make us allocate more than the item's recorded size.
///
/// # Errors
/// `Damaged` for an unknown codec or a payload that does not decompress to `raw_len` bytes.
pub fn decode(encoded: &[u8], raw_len: usize, what: &str) -> Result<Vec<u8>> {
    let (&codec, payload) = encoded
        .split_first()
        .ok_or_else(|| Error::damaged(what, "empty payload"))?;
    let out = match codec {
        RAW => payload.to_vec(),
        ZSTD => DECOMPRESSOR.with(|d| {
            let mut d = d.borrow_mut();
            let dec = match d.as_mut() {
                Some(dec) => dec,
                None => d.insert(
                    zstd::bulk::Decompressor::new()
                        .map_err(|e| Error::damaged(what, format!("zstd: {e}")))?,
                ),
            };
            dec.decompress(payload, raw_len)
                .map_err(|e| Error::damaged(what, format!("does not decompress: {e}")))
        })?,
        other => return Err(Error::damaged(what, format!("unknown codec {other}"))),
    };
    if out.len() != raw_len {
        return Err(Error::damaged(
            what,
            format!("decodes to {} bytes, index says {raw_len}", out.len()),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_text_random_and_tiny() {
        let text = b"the quick brown fox ".repeat(5000);
        let e = encode(&text);
        assert!(e.len() < text.len() / 10);
        assert_eq!(decode(&e, text.len(), "t").unwrap(), text);

        let mut random = vec![0u8; 300_000];
        let mut x = 0x1234_5678_u64;
        for b in random.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let e = encode(&random);
        assert_eq!(e[0], RAW);
        assert_eq!(decode(&e, random.len(), "r").unwrap(), random);

        for tiny in [&b""[..], b"a"] {
            assert_eq!(decode(&encode(tiny), tiny.len(), "x").unwrap(), tiny);
        }
        assert!(decode(&encode(&text), text.len() - 1, "t").is_err());
        assert!(decode(&[9, 1, 2], 2, "t").is_err());
    }
}
