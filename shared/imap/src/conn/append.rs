//! APPEND, streamed: a restored message goes to the server from a reader in pieces, so a
//! large one is never held in memory, and the flags that cannot be restored are left out.

use super::{completion, quote, within, ImapSession};
use crate::error::{Error, Result};
use async_imap::imap_proto::Response;
use chrono::{DateTime, FixedOffset};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

impl ImapSession {
    /// Puts a message into a folder with its flags and internal date, streaming `body`
    /// (exactly `len` bytes) instead of holding it in memory.
    ///
    /// # Errors
    /// `Server` when the folder does not exist or the server refuses the message; `Invalid`
    /// when `body` holds fewer than `len` bytes.
    pub async fn append<R: AsyncRead + Unpin>(
        &mut self,
        wire: &str,
        flags: &[String],
        internal_date: Option<DateTime<FixedOffset>>,
        len: u64,
        mut body: R,
    ) -> Result<()> {
        let flags: Vec<&str> = flags
            .iter()
            .map(String::as_str)
            .filter(|f| is_appendable_flag(f))
            .collect();
        let mut cmd = format!("APPEND {} ({})", quote(wire)?, flags.join(" "));
        if let Some(d) = internal_date {
            cmd.push_str(&format!(" \"{}\"", d.format("%e-%b-%Y %H:%M:%S %z")));
        }
        cmd.push_str(&format!(" {{{len}}}"));
        let timeout = self.timeout;
        let id = self.start("APPEND", &cmd).await?;
        // The server either asks for the literal or refuses at once (folder missing, too big).
        loop {
            let step = self
                .next_response("APPEND", |r| match r {
                    Response::Continue(_) => Some(Ok(())),
                    r => completion("APPEND", &id, r).map(|done| {
                        done.and(Err(Error::Protocol(
                            "APPEND completed without the message".into(),
                        )))
                    }),
                })
                .await?;
            match step {
                Some(Ok(())) => break,
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
        // From here until the server's answer the session is mid-command: any failure
        // leaves it unusable.
        self.broken = true;
        let mut buf = vec![0u8; 256 * 1024];
        let mut sent = 0u64;
        {
            let stream = self.inner.get_mut();
            while sent < len {
                let want = buf.len().min((len - sent) as usize);
                let n = body
                    .read(&mut buf[..want])
                    .await
                    .map_err(|e| Error::Sink(format!("reading the message to append: {e}")))?;
                if n == 0 {
                    return Err(Error::Invalid(format!(
                        "the message to append ended after {sent} of {len} bytes"
                    )));
                }
                within(timeout, stream.write_all(&buf[..n]))
                    .await?
                    .map_err(|e| Error::ConnectionLost(format!("APPEND: {e}")))?;
                sent += n as u64;
            }
            within(timeout, stream.write_all(b"\r\n"))
                .await?
                .map_err(|e| Error::ConnectionLost(format!("APPEND: {e}")))?;
            within(timeout, stream.flush())
                .await?
                .map_err(|e| Error::ConnectionLost(format!("APPEND: {e}")))?;
        }
        self.broken = false;
        self.finish("APPEND", &id, |_| {}).await
    }
}

/// `\Recent` is the server's to set; anything else that is an atom can be restored.
fn is_appendable_flag(f: &str) -> bool {
    !f.eq_ignore_ascii_case("\\Recent")
        && !f.is_empty()
        && !f.bytes().any(|b| {
            b <= b' ' || b >= 0x7f || matches!(b, b'(' | b')' | b'{' | b'"' | b'%' | b'*' | b']')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appendable_flags() {
        assert!(is_appendable_flag("\\Seen"));
        assert!(is_appendable_flag("$Label1"));
        assert!(!is_appendable_flag("\\Recent"));
        assert!(!is_appendable_flag("bad flag"));
        assert!(!is_appendable_flag("x)"));
    }
}
