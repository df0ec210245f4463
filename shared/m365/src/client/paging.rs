//! A whole collection in one call, following `@odata.nextLink` to its end: for the
//! collections that are read whole (sites, their libraries, lists and list items) rather
//! than page by page against a cursor.

use super::{Fail, Graph};
use serde_json::Value;

/// Every row of the collection at `url`, page after page.
pub(crate) async fn pages(run_g: &Graph, url: &str) -> Result<Vec<Value>, Fail> {
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
