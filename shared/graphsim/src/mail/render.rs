//! The JSON shape of a message, shared by listings, single reads, delta and the answers to
//! writes, and the plain-text forms Outlook derives from an HTML body.

use serde_json::{json, Value};

use super::{Addr, Message};
use crate::gen::iso;
use crate::server::Ctx;
use crate::store::{Entry, Store};

pub fn addr_json(a: &Addr) -> Value {
    json!({ "emailAddress": { "name": a.name, "address": a.address } })
}

/// The whole text of an HTML body, as Outlook converts it for `outlook.body-content-type="text"`.
fn preview_full(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                if !out.ends_with('\n') && !out.is_empty() {
                    out.push('\n');
                }
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.trim().to_string()
}

pub fn preview(body: &str, html: bool) -> String {
    let text = if html {
        let mut out = String::new();
        let mut in_tag = false;
        for c in body.chars() {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                c if !in_tag => out.push(c),
                _ => {}
            }
        }
        out
    } else {
        body.to_string()
    };
    let collapsed: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.chars().take(255).collect()
}

/// How a request wants messages shown: which id form, and whether bodies come as text.
#[derive(Clone, Copy, Debug)]
pub struct View {
    pub imm: bool,
    pub text: bool,
}

impl View {
    pub fn of(ctx: &Ctx<'_>) -> Self {
        View {
            imm: ctx.prefer.immutable_id,
            text: ctx.prefer.text_body,
        }
    }
}

pub fn render_message(store: &Store<Message>, e: &Entry<Message>, view: View) -> Value {
    let imm = view.imm;
    let m = &e.data;
    let (body_type, body) = if view.text && m.html {
        ("text", preview_full(&m.body))
    } else if m.html {
        ("html", m.body.clone())
    } else {
        ("text", m.body.clone())
    };
    let folder_id = store
        .folders
        .get(&e.folder)
        .map(|f| f.id.clone())
        .unwrap_or_default();
    json!({
        "@odata.etag": format!("W/\"{}\"", e.change_key()),
        "id": e.id(imm),
        "createdDateTime": iso(e.created),
        "lastModifiedDateTime": iso(e.modified),
        "changeKey": e.change_key(),
        "categories": m.categories,
        "receivedDateTime": iso(m.received),
        "sentDateTime": iso(m.sent),
        "hasAttachments": m.attachments.iter().any(|a| !a.inline),
        "internetMessageId": m.internet_message_id,
        "subject": m.subject,
        "bodyPreview": preview(&m.body, m.html),
        "importance": m.importance,
        "parentFolderId": folder_id,
        "conversationId": m.conversation_id,
        "isDeliveryReceiptRequested": false,
        "isReadReceiptRequested": false,
        "isRead": m.is_read,
        "isDraft": m.is_draft,
        "webLink": format!("https://outlook.office365.com/owa/?ItemID={}&exvsurl=1&viewmodel=ReadMessageItem", e.imm_id),
        "inferenceClassification": "focused",
        "body": { "contentType": body_type, "content": body },
        "sender": addr_json(&m.from),
        "from": addr_json(&m.from),
        "toRecipients": m.to.iter().map(addr_json).collect::<Vec<_>>(),
        "ccRecipients": m.cc.iter().map(addr_json).collect::<Vec<_>>(),
        "bccRecipients": [],
        "replyTo": [],
        "flag": { "flagStatus": m.flag },
    })
}
