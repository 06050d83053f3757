//! `/v1/hosts` and `/v1/templates`: the fleet as the server sees it.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use corral_core::api::{HostList, HostView, TemplateList, TemplateView};
use corral_core::time::now_us;

use super::AppState;
use crate::state::decide::Fleet;

/// Every registered host with its backlog, sandbox count and heartbeat age.
#[utoipa::path(get, path = "/v1/hosts", responses((status = 200, body = HostList)))]
pub async fn hosts(State(app): State<AppState>) -> Json<HostList> {
    let now_us = now_us();
    let now = now_us / 1000;
    let st = app.shared.committed.read();
    let live = app.shared.liveness.read();
    let fleet = Fleet { pools: &app.shared.pools, net: &app.shared.net, now_us, liveness: &live, policy: &app.policy };
    let net = app.shared.net.lock();
    let hosts = st
        .hosts
        .values()
        .map(|hs| HostView {
            host: hs.host.clone(),
            outbox_backlog: hs.outbox.len() as u64,
            sandboxes: hs.live.len() as u64,
            heartbeat_age_ms: live.get(&hs.host.id).map(|l| now.saturating_sub(l.last_seen_ms)),
            alive: !fleet.expired(&hs.host.id),
            free_net_slots: net.get(&hs.host.id).copied().unwrap_or(0).max(0) as u64,
        })
        .collect();
    Json(HostList { hosts })
}

/// Templates offered by at least one host, with how many hosts offer each.
#[utoipa::path(get, path = "/v1/templates", responses((status = 200, body = TemplateList)))]
pub async fn templates(State(app): State<AppState>) -> Json<TemplateList> {
    let st = app.shared.committed.read();
    let mut by_name: BTreeMap<&str, u64> = BTreeMap::new();
    for hs in st.hosts.values() {
        for t in &hs.host.templates {
            *by_name.entry(t).or_default() += 1;
        }
    }
    let templates = by_name.into_iter().map(|(name, hosts)| TemplateView { name: name.to_string(), hosts }).collect();
    Json(TemplateList { templates })
}
