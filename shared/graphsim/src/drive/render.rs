//! The JSON shapes of drives and driveItems, shared by every route that answers with them.

use axum::response::Response;
use serde_json::{json, Value};

use super::content::download_url;
use super::{mime_type, Drive, DriveItem};
use crate::error::Result;
use crate::gen::iso;
use crate::model::Sim;
use crate::odata::{page, select, Limits};
use crate::server::{ok, Ctx};

pub fn render_item(base: &str, drive: &Drive, item: &DriveItem, with_download: bool) -> Value {
    let parent = item.parent.and_then(|p| drive.items.get(&p));
    let mut v = json!({
        "@odata.etag": format!("\"{{{}}},{}\"", item.id, item.version),
        "id": item.id,
        "name": item.name,
        "eTag": format!("\"{{{}}},{}\"", item.id, item.version),
        "cTag": format!("\"c:{{{}}},{}\"", item.id, item.seq),
        "createdDateTime": iso(item.created),
        "lastModifiedDateTime": iso(item.modified),
        "size": drive.size(item.key),
        "webUrl": format!("{}/{}", drive.web_url, item.name),
        "createdBy": { "user": { "id": drive.owner_id, "displayName": drive.owner_name } },
        "lastModifiedBy": { "user": { "id": drive.owner_id, "displayName": drive.owner_name } },
        "fileSystemInfo": { "createdDateTime": iso(item.created), "lastModifiedDateTime": iso(item.modified) },
    });
    match parent {
        Some(p) => {
            v["parentReference"] = json!({ "driveType": drive.drive_type, "driveId": drive.id, "id": p.id, "path": drive.path_of(item.key) });
        }
        None => {
            v["parentReference"] = json!({ "driveType": drive.drive_type, "driveId": drive.id });
            v["root"] = json!({});
        }
    }
    match &item.content {
        None => {
            v["folder"] = json!({ "childCount": drive.items.values().filter(|i| i.parent == Some(item.key)).count() })
        }
        Some(_) => {
            v["file"] = json!({ "mimeType": mime_type(&item.name), "hashes": { "quickXorHash": item.hash() } });
            if with_download {
                v["@microsoft.graph.downloadUrl"] = json!(download_url(base, drive, item));
            }
        }
    }
    v
}

pub fn render_drive(drive: &Drive, base: &str) -> Value {
    let used = drive.size(drive.root);
    let _ = base;
    json!({
        "id": drive.id,
        "name": drive.name,
        "driveType": drive.drive_type,
        "webUrl": drive.web_url,
        "createdDateTime": "2024-03-01T09:00:00Z",
        "lastModifiedDateTime": iso(drive.items[&drive.root].modified),
        "owner": { "user": { "id": drive.owner_id, "displayName": drive.owner_name } },
        "quota": { "total": 1_099_511_627_776u64, "used": used, "remaining": 1_099_511_627_776u64 - used, "deleted": 0, "state": "normal" },
    })
}

pub fn list_drives(ctx: &Ctx<'_>, sim: &Sim, ids: &[String], link_base: &str) -> Result<Response> {
    let fields = ctx.q().select();
    let items: Vec<Value> = ids
        .iter()
        .filter_map(|id| sim.drives.get(id))
        .map(|d| select(render_drive(d, &ctx.base), &fields))
        .collect();
    Ok(ok(page(
        items,
        ctx.q(),
        &ctx.prefer,
        Limits {
            default: 200,
            max: 1000,
        },
        link_base,
        "https://graph.microsoft.com/v1.0/$metadata#drives",
    )?))
}
