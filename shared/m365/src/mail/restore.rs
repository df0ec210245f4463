//! Mail restored from its MIME as a message that is not a draft and keeps its received
//! time and read state: Graph's MIME import always makes a draft, so the message is created
//! from the parsed MIME with the MAPI properties that Exchange honours only at creation
//! (PidTagMessageFlags without the unsent bit, PidTagMessageDeliveryTime,
//! PidTagClientSubmitTime) as single-value extended properties.

use crate::client::{Body, Fail, Graph};
use crate::drive;
use crate::names::unseg;
use crate::restore::{create_or_find, engine_fail, name_of, s, Ctx, R};
use crate::run::meta_of;
use base64::Engine as _;
use domain::ItemPath;
use engine::{Entry, EntryKind};
use mail_parser::{MessageParser, MimeHeaders};
use reqwest::Method;
use serde_json::{json, Value};

/// Attachments up to this size go in the message's create request; larger ones through an
/// upload session (Graph takes 3 MB inline, 150 MB by session).
const INLINE_ATTACHMENTS: usize = 3 << 20;

/// The folder `path` (a folder of the snapshot) stands for in the target mailbox.
async fn mail_folder(
    cx: &mut Ctx<'_>,
    path: &ItemPath,
    entry: Option<&Entry>,
) -> Result<String, Fail> {
    if let Some(id) = cx.folders.get(path) {
        return Ok(id.clone());
    }
    let u = cx.user.clone();
    let (parent_url, name) = if path.segments().len() == 1 {
        // `Mail` itself: the label folder at the top of the mailbox, or its root.
        match &cx.job.label {
            Some(l) => {
                cx.target(format!("Mail/{l}"));
                (format!("/users/{u}/mailFolders"), l.clone())
            }
            None => {
                cx.folders.insert(path.clone(), "msgfolderroot".into());
                return Ok("msgfolderroot".into());
            }
        }
    } else {
        let parent = path.parent().expect("not the root");
        let pid = Box::pin(mail_folder(cx, &parent, None)).await?;
        let name = entry
            .map(|e| name_of(path, e))
            .unwrap_or_else(|| unseg(path.file_name().unwrap_or(b"")));
        let url = if pid == "msgfolderroot" {
            format!("/users/{u}/mailFolders")
        } else {
            format!("/users/{u}/mailFolders/{pid}/childFolders")
        };
        (url, name)
    };
    let (id, found) = create_or_find(cx.g, &parent_url, "displayName", &name, Some(&u)).await?;
    if found {
        cx.found.insert(id.clone());
    }
    cx.folders.insert(path.clone(), id.clone());
    Ok(id)
}

fn addr(a: &mail_parser::Addr<'_>) -> Value {
    json!({ "emailAddress": { "name": a.name().unwrap_or(""), "address": a.address().unwrap_or("") } })
}

fn addrs(a: Option<&mail_parser::Address<'_>>) -> Vec<Value> {
    a.map(|a| {
        a.iter()
            .filter(|x| x.address().is_some())
            .map(addr)
            .collect()
    })
    .unwrap_or_default()
}

pub(crate) async fn mail(cx: &mut Ctx<'_>, path: &ItemPath, entry: &Entry) -> R {
    if entry.kind == EntryKind::Dir {
        mail_folder(cx, path, Some(entry)).await?;
        cx.report.folders += 1;
        return Ok(());
    }
    let parent = path.parent().expect("an item has a parent");
    let folder = mail_folder(cx, &parent, None).await?;
    let raw = cx.content.read(entry).await.map_err(engine_fail)?;
    let parsed = MessageParser::default()
        .parse(&raw)
        .ok_or_else(|| Fail::Protocol("the stored message is not MIME".into()))?;
    let (ctype, body) = match parsed.body_html(0) {
        Some(h) if parsed.html_body_count() > 0 => ("html", h.into_owned()),
        _ => (
            "text",
            parsed
                .body_text(0)
                .map(|t| t.into_owned())
                .unwrap_or_default(),
        ),
    };
    let u = cx.user.clone();
    let key = parsed
        .message_id()
        .map(|id| format!("<{id}>"))
        .unwrap_or_default();
    let list =
        format!("/users/{u}/mailFolders/{folder}/messages?$select=internetMessageId&$top=250");
    if cx.already(&folder, &list, message_key, &key).await? {
        return Ok(());
    }
    let meta = |k: &str| meta_of(&entry.meta, k).unwrap_or("").to_string();
    let received = meta("received");
    let read = meta("read") == "true";
    let sent = parsed
        .date()
        .map(|d| d.to_rfc3339())
        .unwrap_or_else(|| received.clone());
    let mut props = vec![
        // PidTagMessageFlags: mfRead when read; never mfUnsent, so the message is not a draft.
        json!({ "id": "Integer 0x0E07", "value": if read { "1" } else { "0" } }),
        json!({ "id": "SystemTime 0x0039", "value": sent }),
    ];
    if !received.is_empty() {
        props.push(json!({ "id": "SystemTime 0x0E06", "value": received }));
    }
    let from = parsed.from().and_then(|a| a.first()).map(addr);
    let categories: Vec<&str> = meta_of(&entry.meta, "categories")
        .unwrap_or("")
        .split(", ")
        .filter(|c| !c.is_empty())
        .collect();
    let importance = match meta("importance").as_str() {
        "" => "normal".to_string(),
        i => i.to_string(),
    };
    let mut msg = json!({
        "subject": parsed.subject().unwrap_or(""),
        "body": { "contentType": ctype, "content": body },
        "toRecipients": addrs(parsed.to()),
        "ccRecipients": addrs(parsed.cc()),
        "bccRecipients": addrs(parsed.bcc()),
        "replyTo": addrs(parsed.reply_to()),
        "isRead": read,
        "importance": importance,
        "categories": categories,
        "singleValueExtendedProperties": props,
    });
    if let Some(f) = from {
        msg["from"] = f.clone();
        msg["sender"] = f;
    }
    if let Some(id) = parsed.message_id() {
        msg["internetMessageId"] = json!(format!("<{id}>"));
    }
    let flag = meta("flag");
    if !flag.is_empty() {
        msg["flag"] = json!({ "flagStatus": flag });
    }
    let mut inline = Vec::new();
    let mut later = Vec::new();
    let mut budget = INLINE_ATTACHMENTS;
    for a in parsed.attachments() {
        let bytes = a.contents().to_vec();
        let name = a.attachment_name().unwrap_or("attachment").to_string();
        let ct = a
            .content_type()
            .map(|c| match c.subtype() {
                Some(st) => format!("{}/{st}", c.ctype()),
                None => c.ctype().to_string(),
            })
            .unwrap_or_else(|| "application/octet-stream".into());
        let is_inline = a.content_disposition().is_some_and(|d| d.is_inline());
        if bytes.len() <= budget {
            budget -= bytes.len();
            inline.push(json!({
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": name, "contentType": ct, "isInline": is_inline,
                "contentId": a.content_id(),
                "contentBytes": base64::engine::general_purpose::STANDARD.encode(&bytes),
            }));
        } else {
            later.push((name, ct, bytes));
        }
    }
    if !inline.is_empty() {
        msg["attachments"] = json!(inline);
    }
    let created =
        cx.g.json(
            Method::POST,
            &format!("/users/{u}/mailFolders/{folder}/messages"),
            Some(Body::Json(msg)),
            &[],
            Some(&u),
        )
        .await?;
    let mid = s(&created, "id").to_string();
    for (name, ct, bytes) in later {
        attach_large(cx.g, &u, &mid, &name, &ct, bytes).await?;
    }
    cx.report.items += 1;
    cx.report.bytes += entry.size;
    Ok(())
}

/// Adds an attachment over 3 MB through an attachment upload session.
async fn attach_large(g: &Graph, u: &str, mid: &str, name: &str, ct: &str, bytes: Vec<u8>) -> R {
    let total = bytes.len() as u64;
    let session = g
        .json(
            Method::POST,
            &format!("/users/{u}/messages/{mid}/attachments/createUploadSession"),
            Some(Body::Json(json!({ "AttachmentItem": {
                "attachmentType": "file", "name": name, "size": total, "contentType": ct } }))),
            &[],
            Some(u),
        )
        .await?;
    let url = s(&session, "uploadUrl").to_string();
    if url.is_empty() {
        return Err(Fail::Protocol(
            "an upload session without an upload URL".into(),
        ));
    }
    let mut at = 0usize;
    for chunk in bytes.chunks(drive::FRAGMENT) {
        let end = at + chunk.len() - 1;
        g.send(
            Method::PUT,
            &url,
            Some(Body::Bytes(
                bytes::Bytes::copy_from_slice(chunk),
                "application/octet-stream",
            )),
            &[("Content-Range", format!("bytes {at}-{end}/{total}"))],
            None,
            false,
        )
        .await?;
        at = end + 1;
    }
    Ok(())
}

/// What tells a restored message apart from the others of its folder (see
/// [`Ctx::already`]): its Message-ID, which the restored message carries.
fn message_key(v: &Value) -> String {
    s(v, "internetMessageId").to_string()
}
