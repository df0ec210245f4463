//! Lifeboat's HTTP API: one axum router, served on Lambda behind API Gateway (through
//! `lambda_http`) and, unchanged, by `lifeboat serve`. Its OpenAPI document is
//! `openapi.json` beside this file, served at `/v1/openapi.json`.
//!
//! Every route but `/health` and the OpenAPI document needs a bearer token; the tenant is
//! taken from it and from nowhere else. Errors are JSON, `{"error": {"code", "message"}}`,
//! one line each, never holding a secret or another tenant's data.

pub mod auth;
mod routes;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use engine::Ports;
use ports::Queue;
use std::sync::Arc;

pub use auth::{AuthError, Authenticator, Hs256};

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// What the handlers run on.
#[derive(Clone)]
pub struct AppState {
    pub ports: Ports,
    /// Backup jobs (on-demand backups go through the same queue as scheduled ones).
    pub backups: Arc<dyn Queue>,
    /// Restore and export jobs.
    pub transfers: Arc<dyn Queue>,
    pub auth: Arc<dyn Authenticator>,
    /// How long an export's download link stays valid.
    pub link_ttl: std::time::Duration,
    /// The sources this build has: a new task's settings are checked by opening its
    /// connector (which makes no request) before anything is stored.
    pub connectors: Arc<dyn engine::Connectors>,
}

/// The router of the whole API.
pub fn router(state: AppState) -> Router {
    routes::router().with_state(state)
}

/// Serves the API on `listener` until the process ends.
///
/// # Errors
/// When the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}

/// An error as the API shows it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds after which a retry may succeed (503s).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.0)
    }
}

impl From<engine::Error> for ApiError {
    fn from(e: engine::Error) -> Self {
        use engine::ErrorKind as K;
        match e.kind() {
            K::NotFound => ApiError::not_found(e.to_string()),
            K::Invalid => ApiError::bad_request(e.to_string()),
            K::Source(engine::SourceErrorKind::Auth) => {
                ApiError::new(StatusCode::BAD_REQUEST, "source_auth", e.to_string())
            }
            K::StorageUnavailable
            | K::Source(
                engine::SourceErrorKind::Throttled | engine::SourceErrorKind::Unavailable,
            ) => ApiError {
                retry_after: Some(5),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "storage or the source is busy; try again in a few seconds",
                )
            },
            K::Damaged => {
                tracing::error!(error = %e, "damaged data met by the API");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "damaged",
                    "stored data failed its integrity check; run a verify and contact support",
                )
            }
            K::Source(_) => ApiError::new(StatusCode::BAD_GATEWAY, "source", e.to_string()),
            K::Io | K::Storage => {
                tracing::error!(error = %e, "request failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the request failed on our side; try again later",
                )
            }
        }
    }
}

impl From<domain::IdError> for ApiError {
    fn from(e: domain::IdError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl From<domain::PathError> for ApiError {
    fn from(e: domain::PathError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}
