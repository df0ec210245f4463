//! SharePoint sites: finding them (every site collection and all their sub-sites, or only
//! the URLs a task names), and backing one up: its document libraries through their drives'
//! delta feeds, its lists' items as JSON.

use crate::client::Fail;
use crate::drive::{self, DriveRef};
use crate::names::{self, fingerprint, seg, time_ns};
use crate::run::{Flow, Live, Run};
use bytes::Bytes;
use domain::{AccountId, Service};
use engine::{AccountInfo, ItemInfo};
use serde_json::Value;
use std::collections::HashSet;

/// Site accounts are `site+<hostname>+<collection id>+<web id>`: Graph's site id with its
/// commas (not allowed in an account id) as `+`.
pub const SITE_PREFIX: &str = "site+";

fn s<'v>(v: &'v Value, k: &str) -> &'v str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// The Graph site id of a site account, if it is one.
pub fn site_id(account: &str) -> Option<String> {
    account
        .strip_prefix(SITE_PREFIX)
        .map(|rest| rest.replace('+', ","))
}

fn account_of(site: &Value) -> Option<AccountInfo> {
    let id = s(site, "id");
    let acc = AccountId::new(format!("{SITE_PREFIX}{}", id.replace(',', "+"))).ok()?;
    Some(AccountInfo {
        id: acc,
        name: s(site, "webUrl").to_string(),
        services: vec![Service::Site],
    })
}

async fn pages(run_g: &crate::client::Graph, url: &str) -> Result<Vec<Value>, Fail> {
    let mut out = Vec::new();
    let mut next = Some(run_g.url(url));
    while let Some(u) = next {
        let page = run_g.get_json(&u, None).await?;
        out.extend(
            page.get("value")
                .and_then(Value::as_array)
                .ok_or_else(|| Fail::Protocol("a Graph collection page without a value".into()))?
                .iter()
                .cloned(),
        );
        next = page
            .get("@odata.nextLink")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    Ok(out)
}

/// Every site: the chosen URLs, or every site collection found by search with all of its
/// sub-sites, however deep.
pub async fn accounts(
    g: &crate::client::Graph,
    chosen: &[String],
) -> engine::Result<Vec<AccountInfo>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    if !chosen.is_empty() {
        for url in chosen {
            let (host, path) = split_site_url(url).ok_or_else(|| {
                engine::Error::Invalid(format!("{url} is not a SharePoint site URL"))
            })?;
            let site = if path.is_empty() {
                g.get_json(&format!("/sites/{host}"), None).await
            } else {
                g.get_json(&format!("/sites/{host}:/{path}"), None).await
            };
            match site {
                Ok(v) => {
                    if let Some(a) = account_of(&v) {
                        if seen.insert(a.id.clone()) {
                            out.push(a);
                        }
                    }
                }
                Err(f) if f.is_not_found() => {
                    return Err(engine::Error::source(
                        engine::SourceErrorKind::NotFound,
                        format!("the site {url} does not exist or the app cannot see it"),
                    ))
                }
                Err(f) => return Err(f.into()),
            }
        }
        return Ok(out);
    }
    let mut queue = pages(g, "/sites?search=*&$top=200").await?;
    while let Some(site) = queue.pop() {
        let Some(a) = account_of(&site) else {
            tracing::warn!("a site whose id cannot be an account id; skipped");
            continue;
        };
        if !seen.insert(a.id.clone()) {
            continue;
        }
        out.push(a);
        match pages(g, &format!("/sites/{}/sites?$top=200", s(&site, "id"))).await {
            Ok(subs) => queue.extend(subs),
            Err(f) if f.is_not_found() => {}
            Err(f) => return Err(f.into()),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// `https://host/sites/x/y` as `("host", "sites/x/y")`.
pub fn split_site_url(url: &str) -> Option<(String, String)> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), path.trim_matches('/').to_string()))
}

/// Backs up one site: its libraries, then its lists.
pub async fn backup(run: &mut Run<'_>) -> engine::Result<Flow> {
    let site = run.key.clone();
    let drives = pages(run.g, &format!("/sites/{site}/drives?$top=200")).await?;
    let libraries = names::path(&[b"Libraries"]);
    run.tree.ensure_folder(&libraries)?;
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
        if !p.is_root() && run.tree.has_folder(&p) {
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
    run.tree.ensure_folder(&top)?;
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
            if run.tree.item(&p).map(|e| e.fingerprint) == Some(info.fingerprint) {
                continue;
            }
            let body = serde_json::to_vec_pretty(i.get("fields").unwrap_or(&Value::Null))
                .unwrap_or_default();
            run.tree.put_item(&p, info, Bytes::from(body)).await?;
        }
        let gone: Vec<Vec<u8>> = run
            .tree
            .items(path)
            .filter(|x| !seen.contains(&x.name))
            .map(|x| x.name.clone())
            .collect();
        for n in gone {
            run.tree.remove(&path.join(&n)?).await?;
        }
        run.worked = true;
        run.cur.done.insert(key.clone());
    }
    Ok(Flow::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_urls_and_ids() {
        assert_eq!(
            split_site_url("https://contoso.sharepoint.com/sites/Team/"),
            Some(("contoso.sharepoint.com".into(), "sites/Team".into()))
        );
        assert_eq!(
            split_site_url("https://contoso.sharepoint.com"),
            Some(("contoso.sharepoint.com".into(), String::new()))
        );
        assert_eq!(split_site_url("contoso"), None);
        assert_eq!(
            site_id("site+host.example+a-b+c-d").as_deref(),
            Some("host.example,a-b,c-d")
        );
        assert_eq!(site_id("anna@example.com"), None);
    }
}
