//! REST request and response bodies, shared by the server, the client and the
//! benchmark so the three can never disagree on a field name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::host::Host;
use crate::sandbox::Sandbox;

/// `POST /v1/sandboxes`. Every field is optional; numbers are signed so a
/// negative value gets a clear validation message instead of a parse error.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSandboxRequest {
    /// Template name (default `base`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]
    pub template: Option<String>,
    /// CPU in thousandths of a core (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 10, maximum = 64000)]
    pub cpu_millis: Option<i64>,
    /// Memory limit in MiB (default 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 16, maximum = 262144)]
    pub memory_mb: Option<i64>,
    /// Seconds until the sandbox is ended with `ttl_expired` (default 900).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 604800)]
    pub ttl_s: Option<i64>,
    /// Environment variables: names of letters, digits and `_` not starting
    /// with a digit, values under 32 KiB; at most 256.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Labels: names of 1-63 letters, digits, `_-./`, values up to 255 bytes; at most 64.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// A retried create with the same key returns the first sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub idempotency_key: Option<String>,
    /// `isolated` (default: loopback only) or `nat` (an `eth0` behind the
    /// host's NAT; placed only on hosts with a free network slot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// `POST /v1/sandboxes/batch`: `count` plus the fields of a single create,
/// flat. Only documents the body (the server reads `count`, then the rest as
/// a [`CreateSandboxRequest`]); written out rather than flattened because an
/// `allOf` with a closed object admits no `count` at all.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchCreateRequest {
    /// How many sandboxes to create.
    #[schema(minimum = 1, maximum = 10000)]
    pub count: i64,
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]
    pub template: Option<String>,
    #[schema(minimum = 10, maximum = 64000)]
    pub cpu_millis: Option<i64>,
    #[schema(minimum = 16, maximum = 262144)]
    pub memory_mb: Option<i64>,
    #[schema(minimum = 1, maximum = 604800)]
    pub ttl_s: Option<i64>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Each sandbox gets this key with `#N` appended.
    #[schema(min_length = 1, max_length = 256)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchCreateResponse {
    pub ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SandboxList {
    pub sandboxes: Vec<Sandbox>,
}

/// `POST /v1/sandboxes/{id}/exec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// The program and its arguments; the program must not be empty.
    #[schema(min_items = 1, max_items = 4096)]
    pub cmd: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Kill the command after this long (default 60 000, at most 3 600 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 3600000)]
    pub timeout_ms: Option<u64>,
    /// Text fed to the command's standard input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExecResponse {
    /// The command's exit code; 128+N when killed by signal N, -1 when it could not run.
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: u64,
    #[serde(default)]
    pub timed_out: bool,
}

/// A host as `GET /v1/hosts` shows it: the durable record plus live facts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HostView {
    #[serde(flatten)]
    pub host: Host,
    /// Commands committed but not yet acknowledged.
    pub outbox_backlog: u64,
    pub sandboxes: u64,
    pub heartbeat_age_ms: Option<u64>,
    pub alive: bool,
    /// `nat` sandboxes the host can still take, as the scheduler counts them
    /// (its last report minus placements since; 0 when the mode is off).
    #[serde(default)]
    pub free_net_slots: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HostList {
    pub hosts: Vec<HostView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TemplateView {
    pub name: String,
    /// Hosts that can run it.
    pub hosts: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TemplateList {
    pub templates: Vec<TemplateView>,
}

/// Every 4xx/5xx body: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `invalid_request`, `not_found`, `unavailable`, …
    pub code: String,
    pub message: String,
}

/// One server-sent event on `GET /v1/events`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StateEvent {
    pub id: String,
    pub state: crate::sandbox::SandboxState,
    pub host: Option<String>,
    pub end_reason: Option<crate::sandbox::EndReason>,
    pub at_ms: u64,
}

/// One line of `POST /v1/sandboxes/{id}/exec/stream` (newline-delimited
/// JSON): `{"stdout": "…"}`, `{"stderr": "…"}`, then `{"exit": {…}}`, or
/// `{"error": {…}}` if the stream broke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecStreamEvent {
    Stdout(String),
    Stderr(String),
    Exit(ExecExit),
    Error(ErrorDetail),
}

/// How a streamed command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExecExit {
    pub exit_code: i32,
    pub duration_ms: u64,
    #[serde(default)]
    pub timed_out: bool,
}

/// `PUT /v1/pools/{template}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPoolRequest {
    #[serde(default)]
    pub min: u32,
    pub max: u32,
    #[serde(default)]
    pub buffer: u32,
    /// Times when the pool must hold at least a given size (ms since the epoch).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prewarm: Vec<crate::pool::PrewarmWindow>,
}

/// One template's pool on one host, as last reported.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PoolHostView {
    pub host: String,
    pub ready: u32,
    pub warming: u32,
    pub allocated: u32,
    pub target: u32,
    pub forecast: f64,
}

/// `GET /v1/pools`: each template's settings and its pools across the fleet.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PoolView {
    pub template: String,
    /// The settings, when the server has any for this template.
    pub spec: Option<crate::pool::PoolSpec>,
    /// Ready plus warming plus allocated, over all hosts.
    pub size: u32,
    pub ready: u32,
    pub allocated: u32,
    pub target: u32,
    /// allocated / (allocated + ready).
    pub utilization: f64,
    /// Claims per second expected next, summed over hosts.
    pub forecast: f64,
    pub hosts: Vec<PoolHostView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PoolList {
    pub pools: Vec<PoolView>,
}
