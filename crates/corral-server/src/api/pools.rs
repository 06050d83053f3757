//! `/v1/pools`: warm-pool settings per template and what hosts report.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::Json;
use corral_core::api::{ErrorBody, PoolHostView, PoolList, PoolView, SetPoolRequest};
use corral_core::pool::PoolSpec;

use super::error::ApiError;
use super::json::ApiJson;
use super::AppState;
use crate::state::decide;

/// Every template with pool settings or a reported pool.
#[utoipa::path(get, path = "/v1/pools", responses((status = 200, body = PoolList)))]
pub async fn list(State(app): State<AppState>) -> Json<PoolList> {
    let specs = app.shared.committed.read().pools.clone();
    let mut views: BTreeMap<String, PoolView> = specs
        .into_iter()
        .map(|(t, spec)| (t.clone(), empty_view(t, Some(spec))))
        .collect();
    for (host, pools) in app.shared.pool_status.read().iter() {
        for p in pools {
            let v = views.entry(p.template.clone()).or_insert_with(|| empty_view(p.template.clone(), None));
            v.size += p.ready + p.warming + p.allocated;
            v.ready += p.ready;
            v.allocated += p.allocated;
            v.target += p.target;
            v.forecast += p.forecast;
            v.hosts.push(PoolHostView {
                host: host.clone(),
                ready: p.ready,
                warming: p.warming,
                allocated: p.allocated,
                target: p.target,
                forecast: p.forecast,
            });
        }
    }
    for v in views.values_mut() {
        let used = v.ready + v.allocated;
        v.utilization = if used == 0 { 0.0 } else { f64::from(v.allocated) / f64::from(used) };
    }
    Json(PoolList { pools: views.into_values().collect() })
}

fn empty_view(template: String, spec: Option<PoolSpec>) -> PoolView {
    PoolView {
        template,
        spec,
        size: 0,
        ready: 0,
        allocated: 0,
        target: 0,
        utilization: 0.0,
        forecast: 0.0,
        hosts: Vec::new(),
    }
}

/// Set a template's pool bounds on every host that offers it (`max: 0` turns the pool off).
#[utoipa::path(put, path = "/v1/pools/{template}", params(("template" = String, Path)), request_body = SetPoolRequest,
    responses((status = 200, body = PoolSpec), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn set(
    State(app): State<AppState>,
    Path(template): Path<String>,
    ApiJson(req): ApiJson<SetPoolRequest>,
) -> Result<Json<PoolSpec>, ApiError> {
    if !app.template_known(&template) {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "unknown_template",
            format!("template {template:?} does not exist"),
        ));
    }
    let spec = PoolSpec { template, min: req.min, max: req.max, buffer: req.buffer, prewarm: req.prewarm };
    spec.validate().map_err(ApiError::bad_request)?;
    let spec = app.controller.run(move |tx, f| decide::set_pool(tx, f, spec)).await?;
    Ok(Json(spec))
}
