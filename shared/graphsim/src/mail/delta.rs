//! Delta queries over a mailbox: the folder tree, and the messages of one folder with the
//! one `$filter` Graph allows there.

use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};

use super::messages::parse_time;
use super::{folder_key, render_folder, render_message, View, FOLDER_LIMITS, MESSAGE_LIMITS};
use crate::error::{GraphError, Result};
use crate::model::Sim;
use crate::outlook::{delta_page, delta_state, folder_delta_page};
use crate::server::Ctx;

/// `mailFolders/delta`.
pub(super) fn folders(ctx: &Ctx<'_>, sim: &Sim, u: usize, user: &str) -> Result<Response> {
    let tok = delta_state(ctx, sim, "mailFolder", u, 0, FOLDER_LIMITS)?;
    let store = &sim.mailboxes[u].mail;
    let base = format!("{}/users/{}/mailFolders/delta", ctx.root, user);
    folder_delta_page(tok, store, &base, "#microsoft.graph.mailFolder", |f| {
        render_folder(store, f)
    })
}

/// `mailFolders/{id}/messages/delta`.
pub(super) fn messages(
    ctx: &Ctx<'_>,
    sim: &Sim,
    u: usize,
    user: &str,
    folder_id: &str,
) -> Result<Response> {
    // A folder deleted since it was listed: Exchange has no sync state for it.
    let f = folder_key(&sim.mailboxes[u].mail, folder_id)
        .map_err(|_| crate::hostile::sync_folder_not_found())?;
    // A search folder holds no messages of its own: its delta shows its source folder's.
    let f = sim.mailboxes[u].mail.folders[&f].search.unwrap_or(f);
    let tok = delta_state(ctx, sim, "message", u, f, MESSAGE_LIMITS)?;
    let received_filter = match tok
        .extra
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("$filter"))
    {
        Some((_, expr)) => Some(received_filter(expr)?),
        None => None,
    };
    let store = &sim.mailboxes[u].mail;
    let base = format!(
        "{}/users/{}/mailFolders/{}/messages/delta",
        ctx.root, user, folder_id
    );
    delta_page(
        ctx,
        tok,
        store,
        &base,
        "#microsoft.graph.message",
        "https://graph.microsoft.com/v1.0/$metadata#Collection(message)",
        &|e| {
            received_filter.is_none_or(|(gt, t)| {
                if gt {
                    e.data.received > t
                } else {
                    e.data.received >= t
                }
            })
        },
        |e| render_message(store, e, View::of(ctx)),
    )
}

/// The one `$filter` message delta supports: `receivedDateTime ge|gt {instant}`.
fn received_filter(expr: &str) -> Result<(bool, DateTime<Utc>)> {
    let unsupported = || {
        GraphError::new(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidUrlQueryFilter",
            "The only supported $filter for message delta is receivedDateTime ge|gt {value}.",
        )
    };
    let parts: Vec<&str> = expr.split_whitespace().collect();
    match parts.as_slice() {
        [prop, op, value]
            if prop.eq_ignore_ascii_case("receivedDateTime")
                && (op.eq_ignore_ascii_case("ge") || op.eq_ignore_ascii_case("gt")) =>
        {
            let t = parse_time(value.trim_matches('\'')).ok_or_else(unsupported)?;
            Ok((op.eq_ignore_ascii_case("gt"), t))
        }
        _ => Err(unsupported()),
    }
}
