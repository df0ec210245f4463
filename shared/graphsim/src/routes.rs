//! The route table below `/v1.0`: the first segment picks the resource module.

use axum::response::Response;

use crate::error::{GraphError, Result};
use crate::server::{lock, Ctx};
use crate::util::unit;

pub fn route(ctx: &Ctx<'_>) -> Result<Response> {
    let segs = &ctx.req.segs;
    let first = segs
        .first()
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    let mut sim = ctx.shared.sim();
    match first.as_str() {
        "users" => crate::users::route(ctx, &mut sim, segs),
        "me" => Err(GraphError::bad_request(
            "/me request is only valid with delegated authentication flow.",
        )),
        "drives" if segs.len() >= 2 => {
            let id = segs[1].clone();
            crate::drive::route(ctx, &mut sim, &id, &segs[2..])
        }
        "sites" => crate::sites::route(ctx, &mut sim, segs),
        "organization" => Ok(crate::server::ok(serde_json::json!({
            "value": [{ "id": sim.tenant_id, "displayName": "Contoso (simulated)",
                "verifiedDomains": sim.domains.iter().enumerate().map(|(i, d)| serde_json::json!({"name": d, "isDefault": i == 0, "isInitial": i == 0, "type": "Managed"})).collect::<Vec<_>>() }]
        }))),
        _ => Err(GraphError::no_route()),
    }
}

/// Whether this single-item read finds its item deleted a moment earlier (the
/// "404 between list and fetch" fault).
pub fn vanishes(ctx: &Ctx<'_>) -> bool {
    let rate = lock(&ctx.shared.faults).vanish_rate;
    if rate <= 0.0 {
        return false;
    }
    let n = ctx.shared.counter.load(std::sync::atomic::Ordering::SeqCst);
    unit(ctx.shared.cfg.seed, 4, n) < rate
}
