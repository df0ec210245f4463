//! Google's JSON error bodies, in the "v1 error format" the reference samples show
//! (`{"error": {"errors": [{"domain", "reason", "message"}], "code", "message"}}`), and the
//! OAuth token endpoint's own (`{"error", "error_description"}`). No `Retry-After` is ever
//! set: Google sends none, and a client must back off on its own.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// An API error: status, `domain`, `reason` and message, as Google names them.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: u16,
    pub domain: &'static str,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, domain: &'static str, reason: &'static str, message: &str) -> Self {
        ApiError {
            status,
            domain,
            reason,
            message: message.to_string(),
        }
    }

    pub fn not_found() -> Self {
        Self::new(404, "global", "notFound", "Requested entity was not found.")
    }

    pub fn bad_request(message: &str) -> Self {
        Self::new(400, "global", "invalidArgument", message)
    }

    /// The sample of Gmail's "Resolve errors" guide: `authError` at the `Authorization`
    /// header.
    pub fn auth() -> Self {
        Self::new(401, "global", "authError", "Invalid Credentials")
    }

    pub fn user_rate_limit() -> Self {
        Self::new(
            403,
            "usageLimits",
            "userRateLimitExceeded",
            "User Rate Limit Exceeded",
        )
    }

    pub fn rate_limit(status: u16) -> Self {
        Self::new(
            status,
            "usageLimits",
            "rateLimitExceeded",
            "Rate Limit Exceeded",
        )
    }

    pub fn backend(status: u16) -> Self {
        Self::new(
            status,
            "global",
            "backendError",
            "We encountered an internal error. Please try again using truncated exponential backoff.",
        )
    }

    pub fn insufficient_scope() -> Self {
        Self::new(
            403,
            "global",
            "insufficientPermissions",
            "Insufficient Permission",
        )
    }

    pub fn body(&self) -> Value {
        let mut item = json!({
            "domain": self.domain,
            "reason": self.reason,
            "message": self.message,
        });
        if self.reason == "authError" {
            item["locationType"] = json!("header");
            item["location"] = json!("Authorization");
        }
        let top = match self.status {
            503 => "Service Unavailable".to_string(),
            _ => self.message.clone(),
        };
        json!({"error": {"errors": [item], "code": self.status, "message": top}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(self.body())).into_response();
        if self.status == 401 {
            resp.headers_mut().insert(
                "www-authenticate",
                axum::http::HeaderValue::from_static(
                    "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"",
                ),
            );
        }
        resp
    }
}

/// The token endpoint's error (RFC 6749 section 5.2, as Google answers it).
pub fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_reference_shape() {
        let reference: Value = serde_json::from_str(
            r#"{"error":{"errors":[{"domain":"global","reason":"backendError","message":"We encountered an internal error. Please try again using truncated exponential backoff."}],"code":503,"message":"Service Unavailable"}}"#,
        )
        .unwrap();
        assert_eq!(ApiError::backend(503).body(), reference);
        let auth = ApiError::auth().body();
        assert_eq!(auth["error"]["errors"][0]["location"], "Authorization");
        assert_eq!(auth["error"]["code"], 401);
    }
}
