//! Cutting a large item into content-defined chunks as it is read, in windows, so memory
//! stays bounded whatever its size.

use crate::writer::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN};
use bytes::Bytes;
use std::io::Read;

/// A large item is read in windows of this size and cut into chunks inside the window, so
/// chunks are slices of the window rather than copies. At least twice [`CHUNK_MAX`], so
/// every window yields chunks.
pub(crate) const STREAM_WINDOW: usize = 8 * 1024 * 1024;
/// Windows buffered between the reading thread and the writer (memory bound).
pub(crate) const STREAM_QUEUE: usize = 2;

/// Reads `reader` in windows and cuts each window into content-defined chunks that are
/// slices of it (no copy per chunk). The last chunk of a window is only a candidate — the
/// data after the window may move its cut point — so it is carried into the next window;
/// the result is exactly what a streaming chunker would produce.
pub(crate) fn chunk_windows<R: Read>(
    mut reader: R,
    tx: &tokio::sync::mpsc::Sender<std::io::Result<Vec<Bytes>>>,
) {
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let mut buf = Vec::with_capacity(STREAM_WINDOW);
        buf.extend_from_slice(&carry);
        let want = (STREAM_WINDOW - buf.len()) as u64;
        if let Err(e) = reader.by_ref().take(want).read_to_end(&mut buf) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let eof = buf.len() < STREAM_WINDOW;
        if buf.is_empty() {
            return;
        }
        let window = Bytes::from(buf);
        let mut cuts: Vec<(usize, usize)> =
            fastcdc::v2020::FastCDC::new(&window, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX)
                .map(|c| (c.offset, c.length))
                .collect();
        carry = Vec::new();
        if !eof {
            if let Some((o, l)) = cuts.pop() {
                carry = window[o..o + l].to_vec();
            }
        }
        let chunks = cuts
            .into_iter()
            .map(|(o, l)| window.slice(o..o + l))
            .collect();
        if tx.blocking_send(Ok(chunks)).is_err() || eof {
            return;
        }
    }
}
