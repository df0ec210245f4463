//! SharePoint sites: finding them (every site collection and all their sub-sites, or only
//! the URLs a task names), and backing one up: its document libraries through their drives'
//! delta feeds ([`crate::drive`]), its lists' items as JSON; list items are restored into
//! the list of the same name.

pub mod backup;
pub mod restore;

pub use backup::backup;

use crate::client::pages;
use domain::{AccountId, Service};
use engine::AccountInfo;
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
            // A site closed to the app (locked, or its permissions changed) costs that
            // site: it stays an account, whose backups say why they fail, and the others
            // are found as before.
            Err(f @ crate::client::Fail::Denied { .. }) => {
                tracing::warn!(error = %f, "a site refused the app; its sub-sites are not listed");
            }
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
