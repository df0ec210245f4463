//! The mbox export: the messages of a mailbox snapshot (or some folders of it) as one
//! mbox file, the format every mail client imports, for any source whose mail is stored
//! as `.eml` (IMAP, Microsoft 365, Gmail). The variant is mboxrd: a body line that starts
//! with `From ` after any number of `>` gets one more `>`, so a reader that removes one
//! `>` gets the message back exactly. Messages are streamed chunk by chunk.

use super::ExportReport;
use crate::account_tree::Boxed;
use crate::connector::META_RECEIVED;
use crate::{Error, Progress, Result};
use domain::{ItemFilter, ItemPath};
use std::fs::File;
use std::io::{BufWriter, Write};
use vault::{AccountVault, BlobKind, Entry, EntryKind};

/// Adds mboxrd's `>` to body lines that need it, across chunk boundaries.
#[derive(Default)]
pub(crate) struct Quoter {
    /// The start of the current line while it may still turn out to be `>*From `.
    head: Vec<u8>,
    /// The current line is known not to need quoting (or has been quoted).
    decided: bool,
}

const FROM: &[u8] = b"From ";

fn could_be_from(head: &[u8]) -> bool {
    let rest = &head[head.iter().take_while(|b| **b == b'>').count()..];
    FROM.starts_with(rest) || rest.starts_with(FROM)
}

fn is_from(head: &[u8]) -> bool {
    head[head.iter().take_while(|b| **b == b'>').count()..].starts_with(FROM)
}

impl Quoter {
    pub(crate) fn feed(&mut self, mut data: &[u8], out: &mut impl Write) -> std::io::Result<()> {
        while !data.is_empty() {
            if self.decided {
                match data.iter().position(|b| *b == b'\n') {
                    Some(i) => {
                        out.write_all(&data[..=i])?;
                        data = &data[i + 1..];
                        self.decided = false;
                    }
                    None => {
                        return out.write_all(data);
                    }
                }
            } else {
                let b = data[0];
                data = &data[1..];
                self.head.push(b);
                let from = is_from(&self.head);
                if b == b'\n' || from || !could_be_from(&self.head) {
                    if from {
                        out.write_all(b">")?;
                    }
                    out.write_all(&self.head)?;
                    self.head.clear();
                    self.decided = b != b'\n';
                }
            }
        }
        Ok(())
    }

    /// Ends a message: what is left, a final line break if it had none, and the blank
    /// line that separates messages.
    pub(crate) fn finish(
        &mut self,
        last_byte: Option<u8>,
        out: &mut impl Write,
    ) -> std::io::Result<()> {
        let ended_with_newline = if self.head.is_empty() {
            last_byte == Some(b'\n')
        } else {
            out.write_all(&self.head)?;
            self.head.clear();
            false
        };
        if !ended_with_newline {
            out.write_all(b"\n")?;
        }
        out.write_all(b"\n")?;
        self.decided = false;
        Ok(())
    }
}

/// The separator line, dated with the message's received time.
fn from_line(entry: &Entry) -> String {
    let when = entry
        .meta
        .iter()
        .find(|(k, _)| k == META_RECEIVED)
        .and_then(|(_, v)| chrono::DateTime::parse_from_rfc3339(v).ok())
        .map(|d| d.with_timezone(&chrono::Utc))
        .unwrap_or_else(|| chrono::DateTime::from_timestamp_nanos(entry.mtime_ns));
    format!(
        "From MAILER-DAEMON {}\n",
        when.format("%a %b %e %H:%M:%S %Y")
    )
}

struct Walk<'a> {
    vault: &'a AccountVault,
    out: &'a mut BufWriter<File>,
    report: &'a mut ExportReport,
    filter: &'a ItemFilter,
    progress: &'a dyn Progress,
}

impl Walk<'_> {
    fn walk(&mut self, entry: Entry) -> Boxed<'_, Result<()>> {
        Box::pin(async move {
            match entry.kind {
                EntryKind::Dir => {
                    if let Some(sub) = entry.subtree {
                        let node = self.vault.read_tree(&sub).await?;
                        for child in node.entries {
                            self.walk(child).await?;
                        }
                    }
                }
                EntryKind::File
                    if entry.name.ends_with(b".eml")
                        && self.filter.matches(&entry.meta, entry.mtime_ns) =>
                {
                    let io = |e| Error::io("cannot write the mbox", e);
                    let out = &mut *self.out;
                    out.write_all(from_line(&entry).as_bytes()).map_err(io)?;
                    let mut q = Quoter::default();
                    let mut last = None;
                    for c in &entry.content {
                        let chunk = self.vault.read_blob(c, BlobKind::Data).await?;
                        if let Some(b) = chunk.last() {
                            last = Some(*b);
                        }
                        q.feed(&chunk, out).map_err(io)?;
                        self.progress.advance(chunk.len() as u64);
                    }
                    q.finish(last, out).map_err(io)?;
                    self.report.items += 1;
                    self.report.bytes += entry.size;
                }
                _ => {}
            }
            Ok(())
        })
    }
}

/// Writes the messages (`.eml` items) among the selected entries into an mbox at `out`
/// (a new file), in the order of the snapshot.
pub(super) async fn write(
    vault: &AccountVault,
    selected: &[(ItemPath, Entry)],
    out: File,
    filter: &ItemFilter,
    progress: &dyn Progress,
) -> Result<ExportReport> {
    let mut out = BufWriter::new(out);
    let mut report = ExportReport::default();
    let mut w = Walk {
        vault,
        out: &mut out,
        report: &mut report,
        filter,
        progress,
    };
    for (_, e) in selected {
        w.walk(e.clone()).await?;
    }
    let f = out
        .into_inner()
        .map_err(|e| Error::io("cannot write the mbox", e.into_error()))?;
    f.sync_all()
        .map_err(|e| Error::io("cannot write the mbox", e))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn quote(chunks: &[&[u8]]) -> Vec<u8> {
        let mut q = Quoter::default();
        let mut out = Vec::new();
        let mut last = None;
        for c in chunks {
            if let Some(b) = c.last() {
                last = Some(*b);
            }
            q.feed(c, &mut out).unwrap();
        }
        q.finish(last, &mut out).unwrap();
        out
    }

    /// What a reader does: drop one `>` from lines that are `>+From `.
    fn unquote(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in b.split_inclusive(|c| *c == b'\n') {
            let n = line.iter().take_while(|c| **c == b'>').count();
            if n > 0 && line[n..].starts_with(FROM) {
                out.extend_from_slice(&line[1..]);
            } else {
                out.extend_from_slice(line);
            }
        }
        out
    }

    #[test]
    fn quotes_from_lines_only() {
        let m = b"Subject: x\r\n\r\nFrom here\r\n>From there\r\nFromage\r\n From\r\n";
        assert_eq!(
            quote(&[m]),
            b"Subject: x\r\n\r\n>From here\r\n>>From there\r\nFromage\r\n From\r\n\n".to_vec()
        );
        // Split anywhere, same result.
        for i in 0..m.len() {
            assert_eq!(quote(&[&m[..i], &m[i..]]), quote(&[m]));
        }
        // No final line break: one is added before the separator.
        assert_eq!(quote(&[b"a\nFrom"]), b"a\nFrom\n\n".to_vec());
    }

    proptest! {
        #[test]
        fn readers_get_the_message_back(body in proptest::collection::vec(
            prop_oneof![Just(b'>'), Just(b'F'), Just(b'r'), Just(b'o'), Just(b'm'), Just(b' '), Just(b'\n'), any::<u8>()], 0..200),
            split in 0usize..200)
        {
            let mut body = body;
            body.push(b'\n');
            let s = split.min(body.len());
            let q = quote(&[&body[..s], &body[s..]]);
            prop_assert!(q.ends_with(b"\n\n"));
            let back = unquote(&q[..q.len() - 1]);
            prop_assert_eq!(back, body);
        }
    }
}
