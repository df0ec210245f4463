//! Modified UTF-7 (RFC 3501 §5.1.3), how IMAP spells folder names that are not ASCII:
//! `Entwürfe` travels as `Entw&APw-rfe`. Decoding is strict and never panics: a server's
//! folder list is input from outside, and a name that does not decode is kept as sent.

use base64::alphabet::IMAP_MUTF7;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

const B64: GeneralPurpose = GeneralPurpose::new(
    &IMAP_MUTF7,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// Encodes a folder name for the wire.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        out.push_str(&B64.encode(bytes));
        out.push('-');
        pending.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// Decodes a wire name.
///
/// # Errors
/// A one-line description when `wire` is not valid modified UTF-7 (a raw 8-bit byte, an
/// unterminated or malformed `&…-` run, a lone surrogate).
pub fn decode(wire: &str) -> Result<String, String> {
    let mut out = String::with_capacity(wire.len());
    let mut rest = wire;
    while let Some(c) = rest.chars().next() {
        if c == '&' {
            let end = rest
                .find('-')
                .ok_or_else(|| format!("unterminated &… run in folder name {wire:?}"))?;
            let run = &rest[1..end];
            if run.is_empty() {
                out.push('&');
            } else {
                let bytes = B64
                    .decode(run)
                    .map_err(|e| format!("bad base64 in folder name {wire:?}: {e}"))?;
                if bytes.len() % 2 != 0 {
                    return Err(format!("odd UTF-16 length in folder name {wire:?}"));
                }
                let units: Vec<u16> = bytes
                    .chunks_exact(2)
                    .map(|p| u16::from_be_bytes([p[0], p[1]]))
                    .collect();
                let s = String::from_utf16(&units)
                    .map_err(|_| format!("bad UTF-16 in folder name {wire:?}"))?;
                if s.chars().any(|c| (' '..='~').contains(&c)) {
                    return Err(format!("printable ASCII encoded in folder name {wire:?}"));
                }
                out.push_str(&s);
            }
            rest = &rest[end + 1..];
        } else if (' '..='~').contains(&c) {
            out.push(c);
            rest = &rest[1..];
        } else {
            return Err(format!("raw non-ASCII character in folder name {wire:?}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_names() {
        // RFC 3501's own example, and names the seeded test mailbox uses.
        assert_eq!(
            encode("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(encode("Entwürfe"), "Entw&APw-rfe");
        assert_eq!(encode("A&B"), "A&-B");
        assert_eq!(encode("Ünïcødé 📬"), "&ANw-n&AO8-c&APg-d&AOk- &2D3c7A-");
        assert_eq!(decode("Entw&APw-rfe").unwrap(), "Entwürfe");
        assert_eq!(decode("A&-B").unwrap(), "A&B");
        assert_eq!(decode("&2D3c7A-").unwrap(), "📬");
    }

    #[test]
    fn malformed_names_are_errors_not_panics() {
        for bad in ["&APw", "&A-", "&2D0-", "caf\u{e9}", "&AGE-", "&!!-"] {
            assert!(decode(bad).is_err(), "{bad:?} should not decode");
        }
    }

    proptest! {
        #[test]
        fn round_trips(s in "\\PC{0,40}") {
            let wire = encode(&s);
            prop_assert!(wire.bytes().all(|b| (0x20..=0x7e).contains(&b)));
            prop_assert_eq!(decode(&wire).unwrap(), s);
        }

        #[test]
        fn decode_never_panics(s in "[ -~]{0,30}") {
            let _ = decode(&s);
        }
    }
}
