//! Outlook mail: the mail folder tree (`mailFolders`, `childFolders`, hidden folders), messages
//! (JSON, attachments, MIME through `$value`), per-folder message delta, and the writes a
//! restore needs: folders, messages in JSON or MIME, flag changes, moves.

mod attachments;
mod delta;
mod folders;
mod messages;
mod render;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::Method;
use axum::response::Response;
use chrono::{DateTime, Utc};

use crate::error::{GraphError, Result};
use crate::model::Sim;
use crate::odata::Limits;
use crate::server::{ok, Ctx};
use crate::store::Store;
use crate::util::Content;

pub use attachments::{attachment_fragment, AttUpload, ATTACHMENT_SESSION_MAX};
pub use render::{addr_json, preview, render_message, View};

use folders::{create_folder, delete_folder, list_folders, rename_folder, render_folder};
use messages::{create_message, list_messages, message_route};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addr {
    pub name: String,
    pub address: String,
}

#[derive(Clone, Debug)]
pub struct Attachment {
    pub id: String,
    pub name: String,
    pub content_type: String,
    pub content: Content,
    pub inline: bool,
}

#[derive(Clone, Debug)]
pub struct Message {
    pub subject: String,
    pub from: Addr,
    pub to: Vec<Addr>,
    pub cc: Vec<Addr>,
    pub body: String,
    pub html: bool,
    pub received: DateTime<Utc>,
    pub sent: DateTime<Utc>,
    pub is_read: bool,
    pub is_draft: bool,
    pub importance: String,
    pub flag: String,
    pub categories: Vec<String>,
    pub internet_message_id: String,
    pub conversation_id: String,
    pub attachments: Vec<Attachment>,
    /// Single-value extended properties by id (`Integer 0x0E07`, …), as set by a client.
    pub ext: BTreeMap<String, String>,
    /// The MIME content as imported, served back verbatim by `$value`.
    pub mime: Option<Arc<Vec<u8>>>,
}

/// PidTagMessageFlags: MSGFLAG_READ and MSGFLAG_UNSENT (a draft).
pub const PR_MESSAGE_FLAGS: &str = "Integer 0x0E07";
const MSGFLAG_READ: i64 = 0x1;
const MSGFLAG_UNSENT: i64 = 0x8;
/// PidTagMessageDeliveryTime, which `receivedDateTime` shows.
pub const PR_MESSAGE_DELIVERY_TIME: &str = "SystemTime 0x0E06";
/// PidTagClientSubmitTime, which `sentDateTime` shows.
pub const PR_CLIENT_SUBMIT_TIME: &str = "SystemTime 0x0039";

pub const MESSAGE_LIMITS: Limits = Limits {
    default: 10,
    max: 1000,
};
const FOLDER_LIMITS: Limits = Limits {
    default: 10,
    max: 1000,
};

fn user_idx(sim: &Sim, id: &str) -> Result<usize> {
    sim.user(id).ok_or_else(|| GraphError::user_not_found(id))
}

fn folder_key(store: &Store<Message>, id: &str) -> Result<u64> {
    store
        .folder_key(id)
        .ok_or_else(GraphError::outlook_not_found)
}

/// Routes `users/{u}/mailFolders/…` and `users/{u}/messages/…`.
pub fn route(ctx: &Ctx<'_>, sim: &mut Sim, user: &str, rest: &[String]) -> Result<Response> {
    let u = user_idx(sim, user)?;
    let m = &ctx.req.method;
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    let lower: Vec<String> = rest.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    match (m.clone(), l.as_slice()) {
        (Method::GET, ["mailfolders"]) => list_folders(ctx, sim, u, None, user),
        (Method::POST, ["mailfolders"]) => create_folder(ctx, sim, u, None),
        (Method::GET, ["mailfolders", "delta"]) => delta::folders(ctx, sim, u, user),
        (Method::PATCH, ["mailfolders", _]) => rename_folder(ctx, sim, u, r[1]),
        (Method::DELETE, ["mailfolders", _]) => delete_folder(sim, u, r[1]),
        (Method::GET, ["mailfolders", _]) => {
            let mb = &sim.mailboxes[u].mail;
            let f = folder_key(mb, r[1])?;
            Ok(ok(render_folder(mb, &mb.folders[&f])))
        }
        (Method::GET, ["mailfolders", _, "childfolders"]) => {
            let f = folder_key(&sim.mailboxes[u].mail, r[1])?;
            list_folders(ctx, sim, u, Some(f), user)
        }
        (Method::POST, ["mailfolders", _, "childfolders"]) => {
            let f = folder_key(&sim.mailboxes[u].mail, r[1])?;
            create_folder(ctx, sim, u, Some(f))
        }
        (Method::GET, ["mailfolders", _, "messages"]) => {
            let f = folder_key(&sim.mailboxes[u].mail, r[1])?;
            list_messages(
                ctx,
                sim,
                u,
                Some(f),
                &format!("{}/users/{}/mailFolders/{}/messages", ctx.root, user, r[1]),
            )
        }
        (Method::GET, ["mailfolders", _, "messages", "delta"]) => {
            if crate::hostile::deleted_before_delta(ctx.shared, r[1]) {
                if let Some(f) = sim.mailboxes[u].mail.folder_key(r[1]) {
                    let seq = sim.next_seq();
                    sim.mailboxes[u].mail.delete_folder(f, seq);
                }
            }
            delta::messages(ctx, sim, u, user, r[1])
        }
        (Method::POST, ["mailfolders", _, "messages"]) => {
            let f = folder_key(&sim.mailboxes[u].mail, r[1])?;
            create_message(ctx, sim, u, f)
        }
        (Method::GET, ["messages"]) => list_messages(
            ctx,
            sim,
            u,
            None,
            &format!("{}/users/{}/messages", ctx.root, user),
        ),
        (Method::POST, ["messages"]) => {
            let drafts = folder_key(&sim.mailboxes[u].mail, "drafts")?;
            create_message(ctx, sim, u, drafts)
        }
        (_, ["mailfolders", _, "messages", _, ..]) => message_route(ctx, sim, u, &r[3..]),
        (_, ["messages", _, ..]) => message_route(ctx, sim, u, &r[1..]),
        _ => Err(GraphError::no_route()),
    }
}
