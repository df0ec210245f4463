//! Canonical item paths: where an item sits inside one account's snapshot
//! (`Inbox/Projects/msg-123.eml`, `Documents/report.docx`). Segments are bytes, not strings,
//! because a local file name need not be UTF-8 and must come back exactly as it was.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid item path {shown:?}: {why}")]
pub struct PathError {
    pub shown: String,
    pub why: &'static str,
}

/// A path of one or more segments, or the root (no segment). Only [`ItemPath::push`] and
/// [`ItemPath::parse`] build one, so a segment is never empty, `.` or `..`, and never holds
/// `/` or NUL.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ItemPath(Vec<Vec<u8>>);

impl ItemPath {
    pub fn root() -> Self {
        ItemPath(Vec::new())
    }

    /// Parses `a/b/c` (leading, trailing and doubled slashes are ignored, so `/a//b/` is
    /// `a/b`).
    ///
    /// # Errors
    /// A `.` or `..` segment or a NUL byte.
    pub fn parse(s: &[u8]) -> Result<Self, PathError> {
        let mut p = ItemPath::root();
        for seg in s.split(|b| *b == b'/').filter(|s| !s.is_empty()) {
            p = p.join(seg)?;
        }
        Ok(p)
    }

    /// This path with one more segment.
    ///
    /// # Errors
    /// An empty, `.` or `..` segment, or one holding `/` or NUL.
    pub fn join(&self, seg: &[u8]) -> Result<Self, PathError> {
        Self::check_segment(seg)?;
        let mut v = self.0.clone();
        v.push(seg.to_vec());
        Ok(ItemPath(v))
    }

    pub fn check_segment(seg: &[u8]) -> Result<(), PathError> {
        let why = if seg.is_empty() {
            "empty segment"
        } else if seg == b"." || seg == b".." {
            "'.' and '..' are not names"
        } else if seg.contains(&b'/') {
            "a name holds '/'"
        } else if seg.contains(&0) {
            "a name holds a NUL byte"
        } else {
            return Ok(());
        };
        Err(PathError {
            shown: escape(seg),
            why,
        })
    }

    pub fn segments(&self) -> &[Vec<u8>] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn file_name(&self) -> Option<&[u8]> {
        self.0.last().map(|v| v.as_slice())
    }

    pub fn parent(&self) -> Option<ItemPath> {
        if self.0.is_empty() {
            None
        } else {
            Some(ItemPath(self.0[..self.0.len() - 1].to_vec()))
        }
    }

    /// True when `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &ItemPath) -> bool {
        self.0.starts_with(&other.0)
    }

    /// The path as raw bytes joined by `/` (the exact original for a local file).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.join(&b'/')
    }
}

/// Shows bytes as text, escaping what is not printable UTF-8 as `\xNN`, so a non-UTF-8 name
/// is shown unambiguously rather than replaced.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() || c == '\\' {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Reverses [`escape`]: `\\xNN` gives the byte NN, `\\\\` a backslash, and `\\t`, `\\n`,
/// `\\r`, `\\'`, `\\"`, `\\u{…}` what `char::escape_default` made of them. Lets a user
/// type a name exactly as Lifeboat showed it, even one that is not UTF-8.
///
/// # Errors
/// A backslash followed by anything else, or a malformed `\\x` or `\\u` escape.
pub fn unescape(s: &str) -> Result<Vec<u8>, PathError> {
    let bad = |why| PathError {
        shown: s.chars().take(80).collect(),
        why,
    };
    let mut out = Vec::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut b = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            continue;
        }
        match chars.next() {
            Some('\\') => out.push(b'\\'),
            Some('t') => out.push(b'\t'),
            Some('n') => out.push(b'\n'),
            Some('r') => out.push(b'\r'),
            Some('\'') => out.push(b'\''),
            Some('"') => out.push(b'"'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                let b = u8::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == 2)
                    .ok_or_else(|| bad("\\x needs two hex digits"))?;
                out.push(b);
            }
            Some('u') => {
                if chars.next() != Some('{') {
                    return Err(bad("\\u needs {hex}"));
                }
                let hex: String = chars.by_ref().take_while(|c| *c != '}').collect();
                let c = u32::from_str_radix(&hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| bad("\\u{…} is not a character"))?;
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
            _ => {
                return Err(bad(
                    "a backslash starts an escape: \\\\, \\xNN, \\t, \\n, \\r, \\u{…}",
                ))
            }
        }
    }
    Ok(out)
}

impl fmt::Display for ItemPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("/");
        }
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            f.write_str(&escape(s))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_normalises_slashes_and_rejects_dots() {
        let p = ItemPath::parse(b"/a//b/").unwrap();
        assert_eq!(p.segments(), &[b"a".to_vec(), b"b".to_vec()]);
        assert!(ItemPath::parse(b"a/../b").is_err());
        assert!(ItemPath::parse(b"a/\0").is_err());
        assert!(ItemPath::parse(b"").unwrap().is_root());
    }

    #[test]
    fn escape_and_unescape_round_trip() {
        for raw in [
            &b"caf\xe9"[..],
            b"tab\there",
            b"back\\slash",
            b"plain",
            b"\x01\x7f\xff",
        ] {
            assert_eq!(unescape(&escape(raw)).unwrap(), raw, "{}", escape(raw));
        }
        assert!(unescape("a\\q").is_err());
        assert!(unescape("a\\x4").is_err());
    }

    #[test]
    fn non_utf8_is_shown_escaped_and_kept_exact() {
        let p = ItemPath::root().join(b"caf\xe9").unwrap();
        assert_eq!(p.to_string(), "caf\\xe9");
        assert_eq!(p.to_bytes(), b"caf\xe9");
        let a = ItemPath::parse(b"a").unwrap();
        assert!(p.join(b"x").unwrap().starts_with(&p));
        assert!(!p.starts_with(&a));
    }
}
