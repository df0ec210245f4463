//! Export of a mailbox snapshot (or some folders of it) as one mbox file, the format every
//! mail client imports. The variant is mboxrd: a body line that starts with `From ` after
//! any number of `>` gets one more `>`, so a reader that removes one `>` gets the message
//! back exactly. Messages are streamed chunk by chunk; the file is written under a
//! temporary name and renamed when complete, and an existing file is never overwritten.

use crate::connector::META_INTERNAL_DATE;
use domain::ItemPath;
use engine::{Engine, Error, Result, TaskRecord};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use vault::{Entry, EntryKind, SnapshotRecord, Vault};

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MboxReport {
    pub messages: u64,
    pub bytes: u64,
}

/// Adds mboxrd's `>` to body lines that need it, across chunk boundaries.
#[derive(Default)]
pub struct Quoter {
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
    pub fn feed(&mut self, mut data: &[u8], out: &mut impl Write) -> std::io::Result<()> {
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
    pub fn finish(&mut self, last_byte: Option<u8>, out: &mut impl Write) -> std::io::Result<()> {
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
        .find(|(k, _)| k == META_INTERNAL_DATE)
        .and_then(|(_, v)| chrono::DateTime::parse_from_rfc3339(v).ok())
        .map(|d| d.with_timezone(&chrono::Utc))
        .unwrap_or_else(|| chrono::DateTime::from_timestamp_nanos(entry.mtime_ns));
    format!(
        "From MAILER-DAEMON {}\n",
        when.format("%a %b %e %H:%M:%S %Y")
    )
}

type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

fn walk<'a>(
    vault: &'a Vault,
    entry: Entry,
    out: &'a mut BufWriter<File>,
    report: &'a mut MboxReport,
) -> Boxed<'a, Result<()>> {
    Box::pin(async move {
        match entry.kind {
            EntryKind::Dir => {
                if let Some(sub) = entry.subtree {
                    let node = vault.read_tree(&sub).await?;
                    for child in node.entries {
                        walk(vault, child, out, report).await?;
                    }
                }
            }
            EntryKind::File if entry.name.ends_with(b".eml") => {
                let io = |e| Error::io("cannot write the mbox", e);
                out.write_all(from_line(&entry).as_bytes()).map_err(io)?;
                let mut q = Quoter::default();
                let mut last = None;
                for c in &entry.content {
                    let chunk = vault.read_blob(c, false).await?;
                    if let Some(b) = chunk.last() {
                        last = Some(*b);
                    }
                    q.feed(&chunk, out).map_err(io)?;
                }
                q.finish(last, out).map_err(io)?;
                report.messages += 1;
                report.bytes += entry.size;
            }
            _ => {}
        }
        Ok(())
    })
}

/// Writes the messages of `snap` under `include` (everything when empty) into a new mbox
/// file at `path`.
///
/// # Errors
/// An existing `path`, a path not in the snapshot, damage in a message (the export is
/// abandoned and no file is left), or I/O.
pub async fn export_mbox(
    eng: &Engine,
    task: &TaskRecord,
    snap: &SnapshotRecord,
    path: &Path,
    include: &[ItemPath],
) -> Result<MboxReport> {
    if path.exists() {
        return Err(Error::Invalid(format!(
            "{} already exists; choose a new file name",
            path.display()
        )));
    }
    let vault = eng.vault(task).await?;
    let mut roots = Vec::new();
    if include.is_empty() {
        let mut e = Entry::new(Vec::new(), EntryKind::Dir);
        e.subtree = Some(snap.root());
        roots.push(e);
    } else {
        for inc in include {
            roots.push(vault.lookup(&snap.root(), inc).await.map_err(|e| {
                Error::NotFound(format!("{inc} is not in snapshot {}: {e}", snap.id))
            })?);
        }
    }
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let file = File::create(&partial)
        .map_err(|e| Error::io(format!("cannot create {}", partial.display()), e))?;
    let mut out = BufWriter::new(file);
    let mut report = MboxReport::default();
    let res = async {
        for e in roots {
            walk(&vault, e, &mut out, &mut report).await?;
        }
        let f = out
            .into_inner()
            .map_err(|e| Error::io("cannot write the mbox", e.into_error()))?;
        f.sync_all()
            .map_err(|e| Error::io("cannot write the mbox", e))?;
        std::fs::rename(&partial, path)
            .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))
    }
    .await;
    if res.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    res.map(|()| report)
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
