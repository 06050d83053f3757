//! `/v1/sandboxes…`: create, batch create, list, get, delete, exec, files.

use std::time::{Duration, Instant};

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use corral_core::api::{
    BatchCreateRequest, BatchCreateResponse, CreateSandboxRequest, ErrorBody, ErrorDetail, ExecExit, ExecRequest,
    ExecResponse, ExecStreamEvent, SandboxList,
};
use corral_core::text::Utf8Decoder;
use corral_core::id::new_sandbox_id;
use corral_core::validate;
use corral_core::{EndReason, Sandbox, SandboxSpec, SandboxState};
use corral_proto::v1 as pb;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiError;
use super::gate::Caller;
use super::json::{body_bytes, parse, ApiJson, ApiQuery};
use super::AppState;
use crate::metrics as m;
use crate::state::decide::{self, CreateOutcome};
use crate::state::quota::Quota;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateParams {
    /// `running`: answer once the sandbox runs or has ended.
    #[param(pattern = "^running$")]
    wait: Option<String>,
    /// How long `wait` may take, in seconds (default 60, at most 600).
    #[param(minimum = 1, maximum = 600)]
    wait_timeout_s: Option<u64>,
}

fn wait_timeout(p: &CreateParams) -> Result<Option<Duration>, ApiError> {
    let secs = p.wait_timeout_s.unwrap_or(60);
    if !(1..=600).contains(&secs) {
        return Err(ApiError::bad_request(format!("wait_timeout_s must be between 1 and 600, got {secs}")));
    }
    match p.wait.as_deref() {
        None => Ok(None),
        Some("running") => Ok(Some(Duration::from_secs(secs))),
        Some(other) => Err(ApiError::bad_request(format!("wait must be \"running\", got {other:?}"))),
    }
}

/// Create a sandbox.
#[utoipa::path(post, path = "/v1/sandboxes", request_body(content = Option<CreateSandboxRequest>, description = "optional: an empty body is `{}`"), params(CreateParams),
    responses((status = 201, body = Sandbox, description = "created"),
              (status = 200, body = Sandbox, description = "idempotent replay"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody, description = "unknown template"),
              (status = 409, body = ErrorBody),
              (status = 429, body = ErrorBody, description = "over the token's live-sandbox limit"),
              (status = 503, body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    caller: Option<Extension<Caller>>,
    ApiQuery(params): ApiQuery<CreateParams>,
    ApiJson(req): ApiJson<CreateSandboxRequest>,
) -> Result<Response, ApiError> {
    let wait = wait_timeout(&params)?;
    let spec = validate::create_spec(&req, |t| app.template_known(t), &app.limits)?;
    let key = req.idempotency_key.clone();
    let id = new_sandbox_id();
    let (owner, max_live) = quota_of(&app, caller);
    let outcome = app
        .controller
        .run(move |tx, f| {
            let t = Instant::now();
            let quota = Quota { owner: &owner, max_live };
            let r = decide::create_owned(tx, f, quota, vec![(id, spec, key)]);
            m::record_schedule(t.elapsed());
            r
        })
        .await??
        .pop()
        .ok_or_else(|| ApiError::unavailable("the create was not decided"))??;
    let (status, mut sb) = match outcome {
        CreateOutcome::Created(sb) => (StatusCode::CREATED, sb),
        CreateOutcome::Replayed(sb) => (StatusCode::OK, sb),
    };
    if let Some(limit) = wait {
        sb = wait_settled(&app, &sb.id, limit).await.unwrap_or(sb);
    }
    m::record_http(status.as_u16());
    Ok((status, Json(sb)).into_response())
}

/// The owner a create is recorded and counted under, and its limit.
fn quota_of(app: &AppState, caller: Option<Extension<Caller>>) -> (String, Option<usize>) {
    let owner = caller.map(|Extension(Caller(o))| o).unwrap_or_else(|| corral_core::auth::ANONYMOUS.to_string());
    (owner, app.gate.max_live_per_token)
}

async fn wait_settled(app: &AppState, id: &str, limit: Duration) -> Option<Sandbox> {
    let rx = app.shared.wait_settled(id);
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(sb)) => Some(sb),
        _ => {
            app.shared.prune_waiters();
            app.shared.committed.read().sandboxes.get(id).cloned()
        }
    }
}

/// Create `count` sandboxes of one spec in one call.
#[utoipa::path(post, path = "/v1/sandboxes/batch", request_body = BatchCreateRequest,
    responses((status = 201, body = BatchCreateResponse), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody, description = "unknown template"), (status = 409, body = ErrorBody),
              (status = 429, body = ErrorBody, description = "over the token's live-sandbox limit"),
              (status = 503, body = ErrorBody)))]
pub async fn create_batch(State(app): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let (owner, max_live) = quota_of(&app, req.extensions().get::<Caller>().cloned().map(Extension));
    let bytes = body_bytes(req, &()).await?;
    let mut obj: serde_json::Map<String, serde_json::Value> = parse(&bytes)?;
    let count = obj
        .remove("count")
        .and_then(|v| v.as_i64())
        .ok_or_else(|| ApiError::bad_request("count (an integer) is required"))?;
    let count = validate::batch_count(count, &app.limits)?;
    let req: CreateSandboxRequest = serde_json::from_value(serde_json::Value::Object(obj))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("request body: {e}")))?;
    let spec = validate::create_spec(&req, |t| app.template_known(t), &app.limits)?;
    let base_key = req.idempotency_key.clone();
    let items: Vec<(String, SandboxSpec, Option<String>)> = (0..count)
        .map(|i| (new_sandbox_id(), spec.clone(), base_key.as_ref().map(|k| format!("{k}#{i}"))))
        .collect();
    let results = app
        .controller
        .run(move |tx, f| {
            let t = Instant::now();
            let r = decide::create_owned(tx, f, Quota { owner: &owner, max_live }, items);
            m::record_schedule(t.elapsed());
            r
        })
        .await??;
    let mut ids = Vec::with_capacity(results.len());
    for r in results {
        ids.push(match r? {
            CreateOutcome::Created(sb) | CreateOutcome::Replayed(sb) => sb.id,
        });
    }
    m::record_http(201);
    Ok((StatusCode::CREATED, Json(BatchCreateResponse { ids })).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only sandboxes in this state.
    state: Option<String>,
    /// Only sandboxes with this label, as `key=value`.
    #[param(pattern = "=")]
    label: Option<String>,
    /// Only sandboxes placed on this host.
    host: Option<String>,
    /// At most this many, newest first (default 1000, at most 100000).
    limit: Option<usize>,
}

/// List sandboxes, newest first.
#[utoipa::path(get, path = "/v1/sandboxes", params(ListParams),
    responses((status = 200, body = SandboxList), (status = 400, body = ErrorBody)))]
pub async fn list(State(app): State<AppState>, ApiQuery(p): ApiQuery<ListParams>) -> Result<Json<SandboxList>, ApiError> {
    let state = match p.state.as_deref() {
        None => None,
        Some(s) => Some(SandboxState::parse(s).ok_or_else(|| ApiError::bad_request(format!("unknown state {s:?}")))?),
    };
    let label = match p.label.as_deref() {
        None => None,
        Some(l) => Some(l.split_once('=').ok_or_else(|| ApiError::bad_request("label filter must be key=value"))?),
    };
    let limit = p.limit.unwrap_or(1000).clamp(1, 100_000);
    let st = app.shared.committed.read();
    let mut matched: Vec<&Sandbox> = st
        .sandboxes
        .values()
        .filter(|sb| state.is_none_or(|s| sb.state == s))
        .filter(|sb| p.host.as_deref().is_none_or(|h| sb.host.as_deref() == Some(h)))
        .filter(|sb| label.is_none_or(|(k, v)| sb.spec.labels.get(k).map(String::as_str) == Some(v)))
        .collect();
    matched.sort_unstable_by(|a, b| b.id.cmp(&a.id));
    matched.truncate(limit);
    Ok(Json(SandboxList { sandboxes: matched.into_iter().cloned().collect() }))
}

fn lookup(app: &AppState, id: &str) -> Result<Sandbox, ApiError> {
    app.shared
        .committed
        .read()
        .sandboxes
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("sandbox {id} does not exist")))
}

/// One sandbox.
#[utoipa::path(get, path = "/v1/sandboxes/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Sandbox), (status = 404, body = ErrorBody)))]
pub async fn get(State(app): State<AppState>, Path(id): Path<String>) -> Result<Json<Sandbox>, ApiError> {
    lookup(&app, &id).map(Json)
}

/// Stop and remove a sandbox. Answers with its state (`stopping` until the host confirms).
#[utoipa::path(delete, path = "/v1/sandboxes/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Sandbox), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn delete(State(app): State<AppState>, Path(id): Path<String>) -> Result<Json<Sandbox>, ApiError> {
    let sb = app.controller.run(move |tx, f| decide::stop(tx, f, &id, EndReason::Deleted)).await??;
    Ok(Json(sb))
}

/// The sandbox's host agent address, if it is running.
fn running_on(app: &AppState, id: &str) -> Result<(String, String), ApiError> {
    let sb = lookup(app, id)?;
    if sb.state != SandboxState::Running {
        return Err(ApiError::conflict(format!("sandbox {id} is {}, not running", sb.state)));
    }
    let host = sb.host.ok_or_else(|| ApiError::conflict("sandbox has no host"))?;
    let addr = app
        .shared
        .committed
        .read()
        .hosts
        .get(&host)
        .map(|h| h.host.agent_addr.clone())
        .ok_or_else(|| ApiError::unavailable(format!("host {host} is unknown")))?;
    Ok((host, addr))
}

fn agent_error(s: tonic::Status) -> ApiError {
    use tonic::Code;
    match s.code() {
        Code::NotFound => ApiError::not_found(s.message().to_string()),
        Code::InvalidArgument | Code::FailedPrecondition => ApiError::bad_request(s.message().to_string()),
        Code::DeadlineExceeded => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", s.message().to_string()),
        _ => ApiError::unavailable(format!("host agent: {}", s.message())),
    }
}

/// Run a command in a sandbox and return its output once it exits.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec", params(("id" = String, Path)), request_body = ExecRequest,
    responses((status = 200, body = ExecResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "not running")))]
pub async fn exec(
    State(app): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ExecRequest>,
) -> Result<Json<ExecResponse>, ApiError> {
    let timeout_ms = validate::exec_request(&req, &app.limits)?;
    let (host, addr) = running_on(&app, &id)?;
    let mut client = app.agents.client(&host, &addr).map_err(ApiError::unavailable)?;
    let out = client.exec(agent_exec(id, req, timeout_ms)).await.map_err(agent_error)?.into_inner();
    Ok(Json(ExecResponse {
        exit_code: out.exit_code,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        duration_ms: out.duration_ms,
        timed_out: out.timed_out,
    }))
}

/// The agent call for an exec, with a deadline a little past its timeout.
fn agent_exec(id: String, req: ExecRequest, timeout_ms: u64) -> tonic::Request<pb::ExecRequest> {
    let mut call = tonic::Request::new(pb::ExecRequest {
        sandbox_id: id,
        cmd: req.cmd,
        env: req.env.into_iter().collect(),
        cwd: req.cwd.unwrap_or_default(),
        timeout_ms,
        stdin: req.stdin.unwrap_or_default().into_bytes(),
    });
    call.set_timeout(Duration::from_millis(timeout_ms) + Duration::from_secs(10));
    call
}

/// Run a command in a sandbox and stream its output as it is written:
/// newline-delimited JSON, `{"stdout": "…"}` / `{"stderr": "…"}` lines, then
/// `{"exit": {"exit_code", "duration_ms", "timed_out"}}`. Closing the
/// connection kills the command.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec/stream", params(("id" = String, Path)), request_body = ExecRequest,
    responses((status = 200, body = ExecStreamEvent, content_type = "application/x-ndjson"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn exec_stream(
    State(app): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ExecRequest>,
) -> Result<Response, ApiError> {
    let timeout_ms = validate::exec_request(&req, &app.limits)?;
    let (host, addr) = running_on(&app, &id)?;
    let mut client = app.agents.client(&host, &addr).map_err(ApiError::unavailable)?;
    let chunks = client.exec_stream(agent_exec(id, req, timeout_ms)).await.map_err(agent_error)?.into_inner();
    let lines = futures::stream::unfold(Some(NdjsonExec::new(chunks)), |state| async move {
        let mut s = state?;
        let line = s.next_line().await;
        Some((Ok::<_, std::convert::Infallible>(line), (!s.done).then_some(s)))
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], axum::body::Body::from_stream(lines)).into_response())
}

/// Turns agent chunks into NDJSON lines, decoding UTF-8 across chunk edges.
struct NdjsonExec {
    chunks: tonic::Streaming<pb::ExecChunk>,
    stdout: Utf8Decoder,
    stderr: Utf8Decoder,
    done: bool,
}

impl NdjsonExec {
    fn new(chunks: tonic::Streaming<pb::ExecChunk>) -> Self {
        NdjsonExec { chunks, stdout: Utf8Decoder::new(), stderr: Utf8Decoder::new(), done: false }
    }

    async fn next_line(&mut self) -> String {
        use pb::exec_chunk::Chunk;
        let event = match self.chunks.message().await {
            Ok(Some(pb::ExecChunk { chunk: Some(Chunk::Stdout(b)) })) => ExecStreamEvent::Stdout(self.stdout.push(&b)),
            Ok(Some(pb::ExecChunk { chunk: Some(Chunk::Stderr(b)) })) => ExecStreamEvent::Stderr(self.stderr.push(&b)),
            Ok(Some(pb::ExecChunk { chunk: Some(Chunk::Exit(x)) })) => {
                self.done = true;
                let (out, err) = (self.stdout.finish(), self.stderr.finish());
                let exit = ExecStreamEvent::Exit(ExecExit {
                    exit_code: x.exit_code,
                    duration_ms: x.duration_ms,
                    timed_out: x.timed_out,
                });
                // Whatever a split character held back, then the exit.
                let tail = [
                    (!out.is_empty()).then_some(ExecStreamEvent::Stdout(out)),
                    (!err.is_empty()).then_some(ExecStreamEvent::Stderr(err)),
                    Some(exit),
                ];
                return tail.into_iter().flatten().map(|e| ndjson(&e)).collect();
            }
            Ok(Some(pb::ExecChunk { chunk: None })) => return String::new(),
            Ok(None) => self.broken("the host agent ended the stream without an exit".into()),
            Err(s) => self.broken(format!("host agent: {}", s.message())),
        };
        ndjson(&event)
    }

    fn broken(&mut self, message: String) -> ExecStreamEvent {
        self.done = true;
        ExecStreamEvent::Error(ErrorDetail { code: "stream_broken".into(), message })
    }
}

fn ndjson(event: &ExecStreamEvent) -> String {
    let mut line = serde_json::to_string(event).unwrap_or_default();
    line.push('\n');
    line
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FileParams {
    /// Path inside the sandbox (1-4096 bytes, no NUL).
    #[param(min_length = 1, max_length = 4096, pattern = "^[^\\x00]+$")]
    path: String,
}

fn check_path(p: &str) -> Result<(), ApiError> {
    if p.is_empty() || p.len() > 4096 || p.contains('\0') {
        return Err(ApiError::bad_request("path must be 1-4096 bytes with no NUL byte"));
    }
    Ok(())
}

/// Read a file from a sandbox.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files", params(("id" = String, Path), FileParams),
    responses((status = 200, description = "file content", content_type = "application/octet-stream"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "not running")))]
pub async fn read_file(
    State(app): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(p): ApiQuery<FileParams>,
) -> Result<Response, ApiError> {
    check_path(&p.path)?;
    let (host, addr) = running_on(&app, &id)?;
    let mut client = app.agents.client(&host, &addr).map_err(ApiError::unavailable)?;
    let out = client
        .read_file(pb::ReadFileRequest { sandbox_id: id, path: p.path })
        .await
        .map_err(agent_error)?
        .into_inner();
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], out.content).into_response())
}

/// Write a file into a sandbox (the body is the content).
#[utoipa::path(put, path = "/v1/sandboxes/{id}/files", params(("id" = String, Path), FileParams),
    request_body(content = Option<Vec<u8>>, content_type = "application/octet-stream", description = "the file content; empty writes an empty file"),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "not running"), (status = 413, body = ErrorBody)))]
pub async fn write_file(
    State(app): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(p): ApiQuery<FileParams>,
    req: Request,
) -> Result<StatusCode, ApiError> {
    check_path(&p.path)?;
    let body = body_bytes(req, &()).await?;
    let (host, addr) = running_on(&app, &id)?;
    let mut client = app.agents.client(&host, &addr).map_err(ApiError::unavailable)?;
    client
        .write_file(pb::WriteFileRequest { sandbox_id: id, path: p.path, content: body.to_vec(), mode: 0o644 })
        .await
        .map_err(agent_error)?;
    Ok(StatusCode::NO_CONTENT)
}
