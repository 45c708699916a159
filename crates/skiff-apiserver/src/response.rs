//! Response encoding: JSON bodies, Status errors, and warning headers.

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use serde_json::Value;
use skiff_api::ApiError;

/// An error on its way to becoming a `Status` response.
#[derive(Debug)]
pub struct Failure(pub ApiError);

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure(e)
    }
}

pub type HandlerResult = Result<Response, Failure>;

/// A JSON response with the given code.
pub fn json(code: StatusCode, body: &Value) -> Response {
    bytes(
        code,
        "application/json",
        serde_json::to_vec(body).unwrap_or_default(),
    )
}

pub fn bytes(code: StatusCode, content_type: &str, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = code;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// The `Status` response for an error.
pub fn error(e: ApiError) -> Response {
    let code = StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if code.is_server_error() {
        tracing::warn!(error = %e, "request failed");
    }
    json(code, &e.status())
}

/// Adds `Warning: 299 - "..."` headers, as kube-apiserver does for `fieldValidation=Warn`.
pub fn with_warnings(mut r: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    r
}
