//! MIME for messages: what `GET messages/{id}/$value` returns (built the same way every time
//! for the same message, attachments included) and what a MIME import is read into.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use mail_builder::headers::content_type::ContentType;
use mail_builder::mime::{BodyPart, MimePart};
use mail_builder::MessageBuilder;
use mail_parser::{MessageParser, MimeHeaders};

use crate::mail::{Addr, Attachment, Message};
use crate::store::Entry;
use crate::util::{splitmix, Content};

fn addr_list(list: &[Addr]) -> Vec<(String, String)> {
    list.iter()
        .map(|a| (a.name.clone(), a.address.clone()))
        .collect()
}

/// The message as RFC 5322 bytes: the imported MIME when there is one, otherwise built from
/// the message's properties with boundaries derived from its key, so repeated reads agree.
pub fn render(e: &Entry<Message>) -> Vec<u8> {
    let m = &e.data;
    if let Some(raw) = &m.mime {
        return raw.as_ref().clone();
    }
    // A sent or received message's content never changes (reading, flagging or moving it
    // is not an edit), so neither does its MIME; a draft's changes with each edit.
    let edits = if m.is_draft { e.version } else { 0 };
    let boundary = |n: u64| format!("_{:016x}_{n}_graphsim", splitmix(e.key ^ (edits << 20)));
    let body_part = if m.html {
        MimePart::new(
            ContentType::new("multipart/alternative").attribute("boundary", boundary(1)),
            BodyPart::Multipart(vec![
                MimePart::new("text/plain", crate::mail::preview(&m.body, true)),
                MimePart::new("text/html", m.body.clone()),
            ]),
        )
    } else {
        MimePart::new("text/plain", m.body.clone())
    };
    let root = if m.attachments.is_empty() {
        body_part
    } else {
        let mut parts = vec![body_part];
        for a in &m.attachments {
            let part = MimePart::new(
                ContentType::new(a.content_type.clone()),
                BodyPart::Binary(a.content.all().into()),
            );
            parts.push(if a.inline {
                part.inline()
            } else {
                part.attachment(a.name.clone())
            });
        }
        MimePart::new(
            ContentType::new("multipart/mixed").attribute("boundary", boundary(0)),
            BodyPart::Multipart(parts),
        )
    };
    let mut b = MessageBuilder::new()
        .from((m.from.name.clone(), m.from.address.clone()))
        .subject(m.subject.clone())
        .date(m.sent.timestamp())
        .message_id(m.internet_message_id.trim_matches(['<', '>']).to_string())
        .body(root);
    if !m.to.is_empty() {
        b = b.to(addr_list(&m.to));
    }
    if !m.cc.is_empty() {
        b = b.cc(addr_list(&m.cc));
    }
    b.write_to_vec().unwrap_or_default()
}

fn addrs(a: Option<&mail_parser::Address<'_>>) -> Vec<Addr> {
    a.map(|a| {
        a.iter()
            .filter_map(|x| {
                Some(Addr {
                    name: x.name().unwrap_or("").to_string(),
                    address: x.address()?.to_string(),
                })
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Reads an imported MIME message. The result is a draft, as Graph makes every MIME import.
pub fn parse(raw: &[u8], now: DateTime<Utc>) -> Option<Message> {
    let msg = MessageParser::default().parse(raw)?;
    // Something that parses to no header at all is not a message.
    msg.headers().first()?;
    let from = addrs(msg.from()).into_iter().next().unwrap_or(Addr {
        name: String::new(),
        address: String::new(),
    });
    let sent = msg
        .date()
        .and_then(|d| Utc.timestamp_opt(d.to_timestamp(), 0).single())
        .unwrap_or(now);
    let (body, html) = match msg.body_html(0) {
        Some(h)
            if msg.html_body_count() > 0 && msg.text_body_count() == 0
                || msg.body_text(0).is_none() =>
        {
            (h.into_owned(), true)
        }
        _ => (
            msg.body_text(0).map(|t| t.into_owned()).unwrap_or_default(),
            false,
        ),
    };
    let attachments = msg
        .attachments()
        .enumerate()
        .map(|(i, p)| Attachment {
            id: crate::util::outlook_id("AAMkAGI2att", &[splitmix(raw.len() as u64), i as u64 + 1]),
            name: p.attachment_name().unwrap_or("attachment").to_string(),
            content_type: p
                .content_type()
                .map(|c| match c.subtype() {
                    Some(s) => format!("{}/{}", c.ctype(), s),
                    None => c.ctype().to_string(),
                })
                .unwrap_or_else(|| "application/octet-stream".into()),
            content: Content::Bytes(Arc::new(p.contents().to_vec())),
            inline: false,
        })
        .collect();
    Some(Message {
        subject: msg.subject().unwrap_or("").to_string(),
        from,
        to: addrs(msg.to()),
        cc: addrs(msg.cc()),
        body,
        html,
        received: now,
        sent,
        is_read: true,
        is_draft: true,
        importance: "normal".into(),
        flag: "notFlagged".into(),
        categories: Vec::new(),
        internet_message_id: msg
            .message_id()
            .map(|m| format!("<{m}>"))
            .unwrap_or_else(|| {
                format!("<{:016x}@graphsim.local>", splitmix(now.timestamp() as u64))
            }),
        conversation_id: crate::util::outlook_id("AAQkAGI2", &[splitmix(raw.len() as u64)]),
        attachments,
        ext: Default::default(),
        mime: Some(Arc::new(raw.to_vec())),
    })
}
