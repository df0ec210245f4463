//! Reading a file's bytes: the pre-authenticated download URL that Graph hands out, with the
//! one `Range` it honours, and the media type the bytes are served as.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::{plain_error, Drive, DriveItem};
use crate::server::{lock, Shared};
use crate::util::{decode_token, encode_token};

pub fn mime_type(name: &str) -> &'static str {
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "txt" | "md" => "text/plain",
        "csv" => "text/csv",
        "pdf" => "application/pdf",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "mp4" => "video/mp4",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

#[derive(Serialize, Deserialize)]
struct DownloadTok {
    d: String,
    i: String,
    x: i64,
}

pub(super) fn download_url(base: &str, drive: &Drive, item: &DriveItem) -> String {
    let tok = DownloadTok {
        d: drive.id.clone(),
        i: item.id.clone(),
        x: Utc::now().timestamp() + 3600,
    };
    format!("{base}/_dl/{}", encode_token(&tok))
}

/// Serves a pre-authenticated download URL (no bearer token), honouring one `Range`.
pub async fn download(
    State(shared): State<Arc<Shared>>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(tok) = decode_token::<DownloadTok>(&token) else {
        return plain_error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "The download URL is not valid.",
        );
    };
    if tok.x < Utc::now().timestamp() {
        return plain_error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "The download URL has expired.",
        );
    }
    // Downloads fail as Graph's requests do: scripted faults match `_dl/{drive}/{item}`,
    // and the rates apply.
    let n = shared
        .counter
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let segs = ["_dl".to_string(), tok.d.clone(), tok.i.clone()];
    if let Some(e) = crate::server::injected(&shared, &segs, n) {
        return crate::server::error_response(e);
    }
    if let Some(e) = crate::hostile::forbidden_item(&shared, &tok.i) {
        return crate::server::error_response(e);
    }
    let extra = crate::hostile::extra_bytes(&shared, &tok.i);
    let (content, name) = {
        let sim = shared.sim();
        let Some(item) = sim
            .drives
            .get(&tok.d)
            .and_then(|d| d.by_id.get(&tok.i).map(|k| &d.items[k]))
        else {
            return plain_error(
                StatusCode::NOT_FOUND,
                "itemNotFound",
                "The resource could not be found.",
            );
        };
        let Some(c) = item.content.clone() else {
            return plain_error(
                StatusCode::NOT_FOUND,
                "itemNotFound",
                "The item has no content.",
            );
        };
        (c, item.name.clone())
    };
    let listed = content.len();
    let len = listed + extra;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (status, start, end) = match range {
        None => (StatusCode::OK, 0, len),
        Some(r) => match parse_range(&r, len) {
            Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b + 1),
            None => {
                let mut resp = plain_error(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "invalidRange",
                    "The requested range is not satisfiable.",
                );
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return resp;
            }
        },
    };
    // Generated content is produced outside the lock; large ranges cost time, not memory held.
    let id = tok.i.clone();
    let bytes = tokio::task::spawn_blocking(move || {
        let mut b = content.range(start.min(listed), end.min(listed));
        if end > listed {
            let more = crate::hostile::enrichment(&id, extra);
            b.extend_from_slice(
                &more[(start.max(listed) - listed) as usize..(end - listed) as usize],
            );
        }
        b
    })
    .await
    .unwrap_or_default();
    let stall = crate::hostile::stall_download(&shared, &tok.i) && bytes.len() > 1;
    let cut = stall || (crate::hostile::cut_download(&shared, &tok.i) && bytes.len() > 1);
    {
        // What was sent: half the bytes of a download that breaks off.
        let sent = if cut { bytes.len() / 2 } else { bytes.len() };
        let mut stats = lock(&shared.stats);
        stats.downloads += 1;
        stats.downloaded_bytes += sent as u64;
    }
    let mut resp = if cut {
        // Half the bytes, then the connection drops: the client sees a body that ends in
        // an error, not a short success, as the full length was announced.
        let served = bytes.len();
        let half = bytes::Bytes::from(bytes).slice(..served / 2);
        use futures::StreamExt;
        let head = futures::stream::iter([Ok::<_, std::io::Error>(half)]);
        // The drop comes a moment later, once what was sent has left: a connection that
        // fails with the headers unsent is a failed request, not a broken download.
        let wait = if stall { 3_600_000 } else { 50 };
        let drop = futures::stream::once(async move {
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            Err(std::io::Error::other("the connection was dropped"))
        });
        let mut r = (status, axum::body::Body::from_stream(head.chain(drop))).into_response();
        if let Ok(v) = HeaderValue::from_str(&served.to_string()) {
            r.headers_mut().insert(header::CONTENT_LENGTH, v);
        }
        r
    } else {
        (status, bytes).into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(mime_type(&name)),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` against a length; `None` when unsatisfiable.
pub fn parse_range(header: &str, len: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return None;
        }
        (len.saturating_sub(n), len.checked_sub(1)?)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            len.checked_sub(1)?
        } else {
            b.parse::<u64>().ok()?.min(len.checked_sub(1)?)
        };
        (start, end)
    };
    (start <= end && start < len).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=95-200", 100), Some((95, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-2", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
