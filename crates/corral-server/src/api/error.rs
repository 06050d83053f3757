//! Every failure as `{"error": {"code", "message"}}` with the right status;
//! `429`/`503` carry `Retry-After`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_core::api::{ErrorBody, ErrorDetail};
use corral_core::validate::Invalid;

use crate::controller::Unavailable;
use crate::state::decide::DecideError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        let status = if e.code == "unknown_template" { StatusCode::NOT_FOUND } else { StatusCode::BAD_REQUEST };
        ApiError::new(status, e.code, e.message)
    }
}

impl From<Unavailable> for ApiError {
    fn from(e: Unavailable) -> Self {
        match e {
            // Nothing of the request was kept; the same request can be retried.
            Unavailable::Store(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e.to_string()),
            _ => ApiError::unavailable(e.to_string()),
        }
    }
}

impl From<DecideError> for ApiError {
    fn from(e: DecideError) -> Self {
        match e {
            DecideError::KeyConflict(_) => ApiError::new(StatusCode::CONFLICT, "idempotency_conflict", e.to_string()),
            DecideError::NotFound(_) => ApiError::not_found(e.to_string()),
            DecideError::QueueFull(_) => ApiError::unavailable(e.to_string()),
            DecideError::OverQuota(_) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        crate::metrics::record_http(self.status.as_u16());
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message } };
        let mut resp = (self.status, Json(body)).into_response();
        if matches!(self.status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
