//! Contacts restored from the Graph JSON their vCard carries, into the label's contact
//! folder (or the default folder in place) with their folders below it.

use crate::client::{Body, Fail};
use crate::formats;
use crate::names::unseg;
use crate::restore::{creatable, create_or_find, engine_fail, name_of, s, Ctx, R};
use domain::ItemPath;
use engine::{Entry, EntryKind};
use reqwest::Method;
use serde_json::Value;

/// The contact folder `path` (a folder of the snapshot) stands for in the target mailbox.
async fn contact_folder(
    cx: &mut Ctx<'_>,
    path: &ItemPath,
    entry: Option<&Entry>,
) -> Result<String, Fail> {
    if let Some(id) = cx.folders.get(path) {
        return Ok(id.clone());
    }
    let u = cx.user.clone();
    let id = if path.segments().len() == 1 {
        match cx.job.label.clone() {
            Some(l) => {
                cx.target(format!("Contacts/{l}"));
                cx.made(
                    create_or_find(
                        cx.g,
                        &format!("/users/{u}/contactFolders"),
                        "displayName",
                        &l,
                        Some(&u),
                    )
                    .await?,
                )
            }
            None => "contacts".to_string(),
        }
    } else {
        let parent = path.parent().expect("not the root");
        let pid = Box::pin(contact_folder(cx, &parent, None)).await?;
        let name = entry
            .map(|e| name_of(path, e))
            .unwrap_or_else(|| unseg(path.file_name().unwrap_or(b"")));
        let url = if pid == "contacts" {
            format!("/users/{u}/contactFolders")
        } else {
            format!("/users/{u}/contactFolders/{pid}/childFolders")
        };
        cx.made(create_or_find(cx.g, &url, "displayName", &name, Some(&u)).await?)
    };
    cx.folders.insert(path.clone(), id.clone());
    Ok(id)
}

pub(crate) async fn contacts(cx: &mut Ctx<'_>, path: &ItemPath, entry: &Entry) -> R {
    if entry.kind == EntryKind::Dir {
        contact_folder(cx, path, Some(entry)).await?;
        cx.report.folders += 1;
        return Ok(());
    }
    let parent = path.parent().expect("an item has a parent");
    let fid = contact_folder(cx, &parent, None).await?;
    let raw = cx.content.read(entry).await.map_err(engine_fail)?;
    let item = formats::embedded_json(&raw)
        .map_err(Fail::Protocol)?
        .remove(0);
    let u = cx.user.clone();
    let list = format!("/users/{u}/contactFolders/{fid}/contacts?$top=250");
    if cx
        .already(&fid, &list, contact_key, &contact_key(&item))
        .await?
    {
        return Ok(());
    }
    let url = if fid == "contacts" {
        format!("/users/{u}/contacts")
    } else {
        format!("/users/{u}/contactFolders/{fid}/contacts")
    };
    cx.g.json(
        Method::POST,
        &url,
        Some(Body::Json(creatable(item, &[]))),
        &[],
        Some(&u),
    )
    .await?;
    cx.report.items += 1;
    cx.report.bytes += entry.size;
    Ok(())
}

/// What tells a restored contact apart from the others of its folder (see
/// [`Ctx::already`]): its name and address.
fn contact_key(v: &Value) -> String {
    let mail = v
        .pointer("/emailAddresses/0/address")
        .and_then(Value::as_str)
        .unwrap_or("");
    format!("{}\n{mail}", s(v, "displayName"))
}
