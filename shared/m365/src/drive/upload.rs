//! Writing into a drive through Graph: a child looked up by name, a folder made unless it
//! is there, a file uploaded whole when small and through an upload session, fragment by
//! fragment, when large (memory holds one stored chunk and one fragment).

use super::s;
use crate::client::{Body, Fail, Graph};
use bytes::Bytes;
use reqwest::Method;
use serde_json::{json, Value};

/// Simple uploads are used up to this size; larger files go through an upload session.
/// Graph documents 250 MB for simple uploads today; the older 4 MiB line works everywhere.
pub const SIMPLE_UPLOAD: u64 = 4 << 20;
/// Upload session fragments must be multiples of 320 KiB; ten of them per request.
pub const FRAGMENT: usize = 10 * 320 * 1024;

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A drive item's URL: the root has its own (`/root`), others are addressed by id.
fn item(drive: &str, id: &str) -> String {
    if id == "root" {
        format!("/drives/{drive}/root")
    } else {
        format!("/drives/{drive}/items/{id}")
    }
}

/// A child of `parent` by name, if there is one.
pub async fn child(
    g: &Graph,
    drive: &str,
    parent: &str,
    name: &str,
) -> Result<Option<Value>, Fail> {
    match g
        .get_json(&format!("{}:/{}:", item(drive, parent), enc(name)), None)
        .await
    {
        Ok(v) => Ok(Some(v)),
        Err(f) if f.is_not_found() => Ok(None),
        Err(f) => Err(f),
    }
}

/// The id of folder `name` in `parent`, created unless it exists.
pub async fn ensure_folder(
    g: &Graph,
    drive: &str,
    parent: &str,
    name: &str,
) -> Result<String, Fail> {
    let body = json!({ "name": name, "folder": {}, "@microsoft.graph.conflictBehavior": "fail" });
    match g
        .json(
            Method::POST,
            &format!("{}/children", item(drive, parent)),
            Some(Body::Json(body)),
            &[],
            None,
        )
        .await
    {
        Ok(v) => Ok(s(&v, "/id").to_string()),
        Err(f) if f.status() == Some(409) => match child(g, drive, parent, name).await? {
            Some(v) if v.get("folder").is_some() => Ok(s(&v, "/id").to_string()),
            _ => Err(Fail::Protocol(format!(
                "a file named {name} is in the way of a folder"
            ))),
        },
        Err(f) => Err(f),
    }
}

/// Uploads `content` (read chunk by chunk from the snapshot) as `name` in `parent`.
pub async fn upload(
    g: &Graph,
    drive: &str,
    parent: &str,
    name: &str,
    entry: &engine::Entry,
    content: &engine::RestoreContent,
) -> engine::Result<()> {
    let target = format!("{}:/{}:", item(drive, parent), enc(name));
    if entry.size <= SIMPLE_UPLOAD {
        let bytes = content.read(entry).await?;
        g.json(
            Method::PUT,
            &format!("{target}/content"),
            Some(Body::Bytes(Bytes::from(bytes), "application/octet-stream")),
            &[],
            None,
        )
        .await?;
        return Ok(());
    }
    let session = g
        .json(
            Method::POST,
            &format!("{target}/createUploadSession"),
            Some(Body::Json(
                json!({ "item": { "@microsoft.graph.conflictBehavior": "replace" } }),
            )),
            &[],
            None,
        )
        .await?;
    let url = session
        .get("uploadUrl")
        .and_then(Value::as_str)
        .ok_or_else(|| Fail::Protocol("an upload session without an upload URL".into()))?
        .to_string();
    let total = entry.size;
    let mut sent = 0u64;
    let mut buf: Vec<u8> = Vec::with_capacity(FRAGMENT * 2);
    // Each stored chunk is read alone, so memory holds one chunk and one fragment.
    for c in &entry.content {
        let mut one = entry.clone();
        one.content = vec![*c];
        buf.extend_from_slice(&content.read(&one).await?);
        while buf.len() >= FRAGMENT {
            let rest = buf.split_off(FRAGMENT);
            let frag = std::mem::replace(&mut buf, rest);
            put_fragment(g, &url, frag, sent, total).await?;
            sent += FRAGMENT as u64;
        }
    }
    if !buf.is_empty() || sent < total {
        let n = buf.len() as u64;
        put_fragment(g, &url, buf, sent, total).await?;
        sent += n;
    }
    if sent != total {
        return Err(engine::Error::source(
            engine::SourceErrorKind::Protocol,
            format!("{name}: the snapshot holds {sent} bytes of a file of {total}"),
        ));
    }
    Ok(())
}

async fn put_fragment(
    g: &Graph,
    url: &str,
    frag: Vec<u8>,
    at: u64,
    total: u64,
) -> Result<(), Fail> {
    let end = at + frag.len() as u64 - 1;
    g.send(
        Method::PUT,
        url,
        Some(Body::Bytes(Bytes::from(frag), "application/octet-stream")),
        &[("Content-Range", format!("bytes {at}-{end}/{total}"))],
        None,
        false,
    )
    .await?;
    Ok(())
}
