//! OData query options (`$top`, `$select`, `$skiptoken`, …), the `Prefer` header and paging
//! with `@odata.nextLink`, as Graph applies them to collections.

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::{GraphError, Result};
use crate::util::{decode_token, encode_token};

/// The query string of one request. Graph v1.0 accepts system query options with or without
/// the `$` prefix, so lookups try both.
#[derive(Clone, Debug, Default)]
pub struct Query {
    pub pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: &str) -> Self {
        Self {
            pairs: form_urlencoded::parse(raw.as_bytes())
                .into_owned()
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        let bare = name.trim_start_matches('$');
        self.pairs
            .iter()
            .find(|(k, _)| k.trim_start_matches('$').eq_ignore_ascii_case(bare))
            .map(|(_, v)| v.as_str())
    }

    pub fn top(&self) -> Result<Option<usize>> {
        match self.get("$top") {
            None => Ok(None),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(GraphError::bad_request(format!(
                    "Invalid $top value '{v}'. It must be a positive integer."
                ))),
            },
        }
    }

    pub fn select(&self) -> Option<Vec<String>> {
        self.get("$select").map(|s| {
            s.split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect()
        })
    }

    pub fn flag(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// What the `Prefer` request headers asked for.
#[derive(Clone, Debug, Default)]
pub struct Prefer {
    pub immutable_id: bool,
    pub max_page_size: Option<usize>,
}

impl Prefer {
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut p = Prefer::default();
        for value in headers.get_all("prefer") {
            let Ok(text) = value.to_str() else { continue };
            for part in text.split(',') {
                let part = part.trim();
                let lower = part.to_ascii_lowercase();
                if lower.replace(' ', "") == "idtype=\"immutableid\"" {
                    p.immutable_id = true;
                } else if let Some(v) = lower.strip_prefix("odata.maxpagesize=") {
                    p.max_page_size = v.trim().parse().ok().filter(|n: &usize| *n > 0);
                }
            }
        }
        p
    }

    /// The `Preference-Applied` value for what was honoured.
    pub fn applied(&self, paged: bool) -> Option<String> {
        let mut parts = Vec::new();
        if paged {
            if let Some(n) = self.max_page_size {
                parts.push(format!("odata.maxpagesize={n}"));
            }
        }
        if self.immutable_id {
            parts.push("IdType=\"ImmutableId\"".to_string());
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// Keeps only the `$select`ed properties (plus `id` and annotations, which Graph always
/// returns).
pub fn select(mut obj: Value, fields: &Option<Vec<String>>) -> Value {
    if let (Some(fields), Value::Object(map)) = (fields, &mut obj) {
        let kept: Map<String, Value> = std::mem::take(map)
            .into_iter()
            .filter(|(k, _)| {
                k == "id" || k.starts_with('@') || fields.iter().any(|f| f.eq_ignore_ascii_case(k))
            })
            .collect();
        *map = kept;
    }
    obj
}

/// Page limits of one collection: the default page size and the largest `$top` honoured.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub default: usize,
    pub max: usize,
}

pub fn page_size(query: &Query, prefer: &Prefer, limits: Limits) -> Result<usize> {
    let asked = query
        .top()?
        .or(prefer.max_page_size)
        .unwrap_or(limits.default);
    Ok(asked.clamp(1, limits.max))
}

#[derive(Serialize, Deserialize)]
struct Skip {
    o: usize,
    n: usize,
}

/// One page of an already-rendered collection, with `@odata.nextLink` when more remain. The
/// skip token carries the offset and page size; the next link repeats the other options.
pub fn page(
    items: Vec<Value>,
    query: &Query,
    prefer: &Prefer,
    limits: Limits,
    link_base: &str,
    context: &str,
) -> Result<Value> {
    let (offset, size) = match query.get("$skiptoken") {
        Some(t) => {
            let s: Skip = decode_token(t)
                .ok_or_else(|| GraphError::bad_request("The skip token is not valid."))?;
            (s.o, s.n)
        }
        None => (0, page_size(query, prefer, limits)?),
    };
    let total = items.len();
    let page: Vec<Value> = items.into_iter().skip(offset).take(size).collect();
    let mut body = json!({ "@odata.context": context, "value": page });
    if offset + size < total {
        let token = encode_token(&Skip {
            o: offset + size,
            n: size,
        });
        body["@odata.nextLink"] = json!(link(
            link_base,
            query,
            &[("$skiptoken", &token)],
            &["$skiptoken", "$skip"]
        ));
    }
    Ok(body)
}

/// `link_base` plus the request's query options (minus `drop`) plus `add`.
pub fn link(link_base: &str, query: &Query, add: &[(&str, &str)], drop: &[&str]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &query.pairs {
        let bare = k.trim_start_matches('$');
        if drop
            .iter()
            .any(|d| d.trim_start_matches('$').eq_ignore_ascii_case(bare))
        {
            continue;
        }
        ser.append_pair(k, v);
    }
    for (k, v) in add {
        ser.append_pair(k, v);
    }
    let qs = ser.finish();
    if qs.is_empty() {
        link_base.to_string()
    } else {
        format!("{link_base}?{qs}")
    }
}
