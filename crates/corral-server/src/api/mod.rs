//! The REST API (contract: DESIGN.md, "REST contract").

mod error;
mod events;
pub mod gate;
mod fleet;
mod json;
mod ops;
mod pools;
mod sandboxes;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use corral_core::validate::Limits;
use metrics_exporter_prometheus::PrometheusHandle;
use utoipa::OpenApi;

pub use error::ApiError;

use crate::controller::Controller;
use crate::grpc::AgentPool;
use crate::shared::Shared;
use crate::state::decide::Policy;

/// Largest JSON body accepted.
pub const MAX_JSON_BODY: usize = 1024 * 1024;
/// Largest file upload accepted.
pub const MAX_FILE_BODY: usize = 64 * 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub controller: Controller,
    pub shared: Arc<Shared>,
    pub agents: Arc<AgentPool>,
    pub limits: Arc<Limits>,
    pub policy: Arc<Policy>,
    pub prometheus: PrometheusHandle,
    /// Tokens and rate limits, checked before any handler.
    pub gate: Arc<gate::Gate>,
}

impl AppState {
    /// Whether a create (or a pool) may name `template`: the built-in `base`,
    /// or one that some registered host offers.
    pub fn template_known(&self, template: &str) -> bool {
        template == corral_core::validate::DEFAULT_TEMPLATE || self.shared.committed.read().template_offered(template)
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Corral", description = "Isolated sandboxes for AI agents and evaluation harnesses."),
    paths(
        sandboxes::create, sandboxes::create_batch, sandboxes::list, sandboxes::get, sandboxes::delete,
        sandboxes::exec, sandboxes::exec_stream, sandboxes::read_file, sandboxes::write_file,
        fleet::hosts, fleet::templates, pools::list, pools::set, events::events, ops::healthz, ops::readyz, ops::metrics,
    ),
    components(schemas(
        corral_core::api::CreateSandboxRequest, corral_core::api::BatchCreateRequest,
        corral_core::api::BatchCreateResponse, corral_core::api::SandboxList, corral_core::api::ExecRequest,
        corral_core::api::ExecResponse, corral_core::api::HostList, corral_core::api::HostView,
        corral_core::api::TemplateList, corral_core::api::TemplateView, corral_core::api::ErrorBody,
        corral_core::api::ErrorDetail, corral_core::api::StateEvent, corral_core::api::ExecStreamEvent,
        corral_core::api::ExecExit, corral_core::api::SetPoolRequest, corral_core::api::PoolView,
        corral_core::api::PoolHostView, corral_core::api::PoolList, corral_core::pool::PoolSpec, corral_core::Sandbox,
        corral_core::SandboxState, corral_core::EndReason, corral_core::Host,
    ))
)]
pub struct ApiDoc;

pub fn router(app: AppState) -> Router {
    let gate = app.gate.clone();
    let files = Router::new()
        .route("/v1/sandboxes/{id}/files", get(sandboxes::read_file).put(sandboxes::write_file))
        .layer(DefaultBodyLimit::max(MAX_FILE_BODY));
    Router::new()
        .route("/v1/sandboxes", post(sandboxes::create).get(sandboxes::list))
        .route("/v1/sandboxes/batch", post(sandboxes::create_batch))
        .route("/v1/sandboxes/{id}", get(sandboxes::get).delete(sandboxes::delete))
        .route("/v1/sandboxes/{id}/exec", post(sandboxes::exec))
        .route("/v1/sandboxes/{id}/exec/stream", post(sandboxes::exec_stream))
        .route("/v1/hosts", get(fleet::hosts))
        .route("/v1/templates", get(fleet::templates))
        .route("/v1/pools", get(pools::list))
        .route("/v1/pools/{template}", axum::routing::put(pools::set))
        .route("/v1/events", get(events::events))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .merge(files)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this endpoint")
        })
        .with_state(app)
        .layer(axum::middleware::from_fn_with_state(gate, gate::check))
}
