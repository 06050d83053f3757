//! Health, readiness, metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use corral_core::api::ErrorBody;
use serde_json::json;
use utoipa::OpenApi;

use super::AppState;

/// The process is up.
#[utoipa::path(get, path = "/healthz", responses((status = 200)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready to place sandboxes: the store is loaded and at least one host is alive.
#[utoipa::path(get, path = "/readyz", responses((status = 200), (status = 503, body = ErrorBody)))]
pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let hosts = app.shared.liveness.read().len();
    let status = if hosts > 0 { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = if hosts > 0 {
        json!({"status": "ready", "hosts": hosts})
    } else {
        json!({"error": {"code": "no_hosts", "message": "no dataplane has registered yet"}})
    };
    (status, Json(body))
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "text/plain")))]
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    crate::metrics::set_heartbeat_ages(&app.shared);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.prometheus.render())
}

/// This API's OpenAPI 3 document.
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(super::ApiDoc::openapi())
}
