//! A contact as vCard 3.0 (`.vcf`), so that an export opens in any client; the card also
//! carries Graph's own JSON (see [`crate::formats`]), from which a restore recreates it.

use crate::formats::{embedded, esc, line, s, GRAPH_PROP};
use serde_json::Value;

/// A contact as a vCard.
pub fn vcard(c: &Value) -> Vec<u8> {
    let mut out = String::new();
    line(&mut out, "BEGIN", "VCARD");
    line(&mut out, "VERSION", "3.0");
    let display = s(c, "/displayName");
    line(&mut out, "FN", &esc(display));
    line(
        &mut out,
        "N",
        &format!(
            "{};{};{};{};",
            esc(s(c, "/surname")),
            esc(s(c, "/givenName")),
            esc(s(c, "/middleName")),
            esc(s(c, "/title"))
        ),
    );
    for e in c["emailAddresses"].as_array().into_iter().flatten() {
        let a = s(e, "/address");
        if !a.is_empty() {
            line(&mut out, "EMAIL;TYPE=INTERNET", &esc(a));
        }
    }
    for (field, kind) in [("businessPhones", "WORK"), ("homePhones", "HOME")] {
        for p in c[field].as_array().into_iter().flatten() {
            if let Some(p) = p.as_str() {
                line(&mut out, &format!("TEL;TYPE={kind}"), &esc(p));
            }
        }
    }
    if let Some(m) = c["mobilePhone"].as_str().filter(|m| !m.is_empty()) {
        line(&mut out, "TEL;TYPE=CELL", &esc(m));
    }
    let company = s(c, "/companyName");
    if !company.is_empty() {
        line(&mut out, "ORG", &esc(company));
    }
    let title = s(c, "/jobTitle");
    if !title.is_empty() {
        line(&mut out, "TITLE", &esc(title));
    }
    let notes = s(c, "/personalNotes");
    if !notes.is_empty() {
        line(&mut out, "NOTE", &esc(notes));
    }
    if let Some(b) = c["birthday"].as_str() {
        line(&mut out, "BDAY", b.get(..10).unwrap_or(b));
    }
    line(&mut out, "UID", &esc(s(c, "/id")));
    line(&mut out, GRAPH_PROP, &embedded(c));
    line(&mut out, "END", "VCARD");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::embedded_json;
    use serde_json::json;

    #[test]
    fn vcards_fold_and_carry_the_item() {
        let c = json!({"@odata.etag": "x", "id": "AAk=", "displayName": "Zoë Ångström, Jr.",
            "givenName": "Zoë", "surname": "Ångström", "emailAddresses": [{"address": "z@x.example"}],
            "personalNotes": "a very long note ".repeat(20)});
        let v = vcard(&c);
        let text = String::from_utf8(v.clone()).unwrap();
        assert!(text.contains("FN:Zoë Ångström\\, Jr.\r\n"));
        assert!(text.lines().all(|l| l.len() <= 75), "{text}");
        let back = embedded_json(&v).unwrap();
        assert_eq!(back[0]["displayName"], c["displayName"]);
        assert!(back[0].get("@odata.etag").is_none());
    }
}
