//! One site's backup: its libraries, each a drive backed up from its delta feed, then its
//! lists, each listed whole and its items stored as JSON, written again only when their
//! etag changed.

use super::s;
use crate::client::pages;
use crate::drive::{self, DriveRef};
use crate::names::{self, fingerprint, seg, time_ns};
use crate::run::{Flow, Live, Run};
use bytes::Bytes;
use engine::ItemInfo;
use serde_json::Value;
use std::collections::HashSet;

/// Backs up one site: its libraries, then its lists.
pub async fn backup(run: &mut Run<'_>) -> engine::Result<Flow> {
    let site = run.key.clone();
    let drives = pages(run.g, &format!("/sites/{site}/drives?$top=200")).await?;
    let libraries = names::path(&[b"Libraries"]);
    run.tree.ensure_folder(&libraries).await?;
    let live: Vec<String> = drives
        .iter()
        .map(|d| format!("drive:{}", s(d, "id")))
        .collect();
    // Libraries no longer there.
    let gone: Vec<(String, Vec<String>)> = run
        .cur
        .tracks
        .iter()
        .filter(|(k, _)| k.starts_with("drive:") && !live.contains(k))
        .map(|(k, t)| (k.clone(), t.p.clone()))
        .collect();
    for (k, p) in gone {
        let p = names::path(&p);
        if !p.is_root() && run.tree.has_folder(&p).await? {
            run.tree.remove(&p).await?;
        }
        run.cur.tracks.remove(&k);
    }
    for d in &drives {
        let r = DriveRef {
            id: s(d, "id").to_string(),
            path: libraries.join(&seg(s(d, "name")))?,
            name: s(d, "name").to_string(),
        };
        if drive::backup(run, &r).await? == Flow::Paused {
            return Ok(Flow::Paused);
        }
    }
    lists(run).await
}

async fn lists(run: &mut Run<'_>) -> engine::Result<Flow> {
    let site = run.key.clone();
    let lists = pages(run.g, &format!("/sites/{site}/lists?$top=200")).await?;
    let top = names::path(&[b"Lists"]);
    run.tree.ensure_folder(&top).await?;
    let live: Vec<Live> = lists
        .iter()
        .filter(|l| {
            l.pointer("/list/template").and_then(Value::as_str) != Some("documentLibrary")
                && l.pointer("/list/hidden").and_then(Value::as_bool) != Some(true)
                && !s(l, "id").is_empty()
        })
        .map(|l| {
            (
                format!("list:{}", s(l, "id")),
                top.join(&seg(s(l, "displayName"))).expect("valid segment"),
                vec![
                    ("id".to_string(), s(l, "id").to_string()),
                    ("name".to_string(), s(l, "displayName").to_string()),
                ],
            )
        })
        .collect();
    let known = run.known_folders("list:");
    run.reconcile(&live, known).await?;
    for (key, path, meta) in &live {
        run.cur.folders.insert(key.clone(), names::parts(path));
        if run.cur.done.contains(key) {
            continue;
        }
        if run.out_of_time() {
            run.tree.pause();
            return Ok(Flow::Paused);
        }
        let items = pages(
            run.g,
            &format!(
                "/sites/{site}/lists/{}/items?expand=fields&$top=200",
                meta[0].1
            ),
        )
        .await?;
        let mut seen = HashSet::new();
        for i in &items {
            let id = s(i, "id");
            if id.is_empty() {
                continue;
            }
            let mut name = seg(id);
            name.extend_from_slice(b".json");
            seen.insert(name.clone());
            let p = path.join(&name)?;
            let etag = s(i, "eTag");
            let info = ItemInfo {
                mtime_ns: time_ns(s(i, "lastModifiedDateTime")),
                fingerprint: fingerprint(if etag.is_empty() {
                    s(i, "lastModifiedDateTime")
                } else {
                    etag
                }),
                meta: vec![
                    ("id".into(), id.into()),
                    (
                        "title".into(),
                        i.pointer("/fields/Title")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .into(),
                    ),
                ],
            };
            if run.tree.item(&p).await?.map(|e| e.fingerprint) == Some(info.fingerprint) {
                continue;
            }
            let body = serde_json::to_vec_pretty(i.get("fields").unwrap_or(&Value::Null))
                .unwrap_or_default();
            run.tree.put_item(&p, info, Bytes::from(body)).await?;
        }
        let gone: Vec<Vec<u8>> = run
            .tree
            .items(path)
            .await?
            .filter(|x| !seen.contains(&x.name))
            .map(|x| x.name)
            .collect();
        for n in gone {
            run.tree.remove(&path.join(&n)?).await?;
        }
        run.worked = true;
        run.cur.done.insert(key.clone());
    }
    Ok(Flow::Done)
}
