//! Graph's error body: `{"error": {"code", "message", "innerError": {"date", "request-id",
//! "client-request-id"}}}`, with the status codes and error codes the documentation names.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// One failed request, before the per-request details (`request-id`, date) are added.
#[derive(Debug, Clone)]
pub struct GraphError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub headers: Vec<(HeaderName, String)>,
}

pub type Result<T, E = GraphError> = std::result::Result<T, E>;

impl GraphError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_string(),
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalidRequest", message)
    }

    /// Outlook resources (mail, contacts, calendars, tasks) answer `ErrorItemNotFound`.
    pub fn outlook_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        )
    }

    /// OneDrive and SharePoint answer `itemNotFound`.
    pub fn drive_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            "The resource could not be found.",
        )
    }

    pub fn user_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            format!("Resource '{id}' does not exist or one of its queried reference-property objects are not present."),
        )
    }

    pub fn no_route() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Resource not found for the segment.",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Request_BadRequest",
            "The HTTP method is not allowed on this resource.",
        )
    }

    /// The body as sent, with the request's ids and the time in `innerError`.
    pub fn into_response_with(
        self,
        request_id: &str,
        client_request_id: Option<&str>,
        date: &str,
    ) -> Response {
        let mut inner = json!({ "date": date, "request-id": request_id });
        inner["client-request-id"] = json!(client_request_id.unwrap_or(request_id));
        let body =
            json!({ "error": { "code": self.code, "message": self.message, "innerError": inner } });
        let mut resp = (self.status, axum::Json(body)).into_response();
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        resp
    }
}
