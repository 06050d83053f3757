//! The Agent gRPC service: exec and files on this host's sandboxes, for the
//! server to proxy interactive requests to.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use corral_core::validate::{DEFAULT_EXEC_TIMEOUT_MS, MAX_EXEC_TIMEOUT_MS};
use corral_proto::v1::agent_server::{Agent, AgentServer};
use corral_proto::v1::{
    exec_chunk, ExecChunk as PbChunk, ExecRequest, ExecResponse, ReadFileRequest,
    ReadFileResponse, WriteFileRequest, WriteFileResponse,
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::driver::{DriverError, ExecChunk, ExecOutput, ExecSpec};
use crate::runtime::{AccessError, Runtime};
use crate::DataplaneError;

/// Requests (file writes) up to this size are accepted.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

pub struct AgentService {
    rt: Arc<Runtime>,
}

/// Binds the listener; kept separate from serving so the bound address is
/// known (and registered) before the first request can arrive.
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), DataplaneError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| DataplaneError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| DataplaneError::Bind { addr, source })?;
    Ok((listener, local))
}

/// Serves the Agent service until `shutdown` resolves.
pub async fn serve(
    rt: Arc<Runtime>,
    listener: TcpListener,
    join_token: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), DataplaneError> {
    let svc = AgentServer::new(AgentService { rt })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let svc = tonic::service::interceptor::InterceptedService::new(
        svc,
        corral_proto::auth::RequireToken::new(join_token),
    );
    // The builder's tcp_nodelay does not apply to an incoming stream we bring.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

fn status(e: AccessError) -> Status {
    match e {
        AccessError::Unknown(_) => Status::not_found(e.to_string()),
        AccessError::NotRunning(_) => Status::failed_precondition(e.to_string()),
        AccessError::Driver(d) => match d {
            DriverError::NotFound(_) | DriverError::Missing(_) => Status::not_found(d.to_string()),
            DriverError::InvalidArgument(_) => Status::invalid_argument(d.to_string()),
            DriverError::Unsupported(_) => Status::unimplemented(d.to_string()),
            DriverError::Io { ref source, .. } if bad_path(source) => Status::invalid_argument(d.to_string()),
            DriverError::Io { ref source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => Status::not_found(d.to_string()),
                std::io::ErrorKind::PermissionDenied => Status::permission_denied(d.to_string()),
                _ => Status::internal(d.to_string()),
            },
        },
    }
}

/// Errors that say the path asked for cannot exist (a name too long, a file
/// where a directory should be, a directory where a file should be, a
/// symlink loop): the caller's mistake, not the host's.
fn bad_path(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENAMETOOLONG | libc::ENOTDIR | libc::EISDIR | libc::ELOOP | libc::EINVAL))
}

/// Like [`status`], but a missing program or working directory is the
/// request's fault (invalid argument), not a missing sandbox: callers map
/// not-found to "no such sandbox", which the sandbox is not.
fn exec_status(e: AccessError) -> Status {
    match e {
        AccessError::Driver(DriverError::Missing(m)) => Status::invalid_argument(m),
        e => status(e),
    }
}

fn exec_spec(req: ExecRequest) -> Result<ExecSpec, Status> {
    if req.cmd.first().is_none_or(|p| p.is_empty()) {
        return Err(Status::invalid_argument(
            "cmd must name a program: [\"prog\", \"arg\", …]",
        ));
    }
    if req.cmd.iter().any(|a| a.contains('\0'))
        || req
            .env
            .iter()
            .any(|(k, v)| k.contains(['\0', '=']) || v.contains('\0'))
    {
        return Err(Status::invalid_argument(
            "cmd and env must not contain NUL bytes (or '=' in names)",
        ));
    }
    let timeout_ms = if req.timeout_ms == 0 {
        DEFAULT_EXEC_TIMEOUT_MS
    } else {
        req.timeout_ms
    };
    if timeout_ms > MAX_EXEC_TIMEOUT_MS {
        return Err(Status::invalid_argument(format!(
            "timeout_ms must be at most {MAX_EXEC_TIMEOUT_MS}"
        )));
    }
    Ok(ExecSpec {
        argv: req.cmd,
        env: req.env.into_iter().collect(),
        cwd: req.cwd,
        timeout: Duration::from_millis(timeout_ms),
        stdin: req.stdin,
    })
}

fn exec_response(out: ExecOutput) -> ExecResponse {
    ExecResponse {
        exit_code: out.exit_code,
        stdout: out.stdout,
        stderr: out.stderr,
        duration_ms: out.duration.as_millis() as u64,
        timed_out: out.timed_out,
    }
}

fn pb_chunk(chunk: ExecChunk) -> PbChunk {
    let chunk = match chunk {
        ExecChunk::Stdout(b) => exec_chunk::Chunk::Stdout(b),
        ExecChunk::Stderr(b) => exec_chunk::Chunk::Stderr(b),
        ExecChunk::Exit(out) => exec_chunk::Chunk::Exit(exec_response(out)),
    };
    PbChunk { chunk: Some(chunk) }
}

type ChunkStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<PbChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for AgentService {
    type ExecStreamStream = ChunkStream;

    async fn exec_stream(&self, request: Request<ExecRequest>) -> Result<Response<ChunkStream>, Status> {
        let req = request.into_inner();
        let id = req.sandbox_id.clone();
        let spec = exec_spec(req)?;
        let chunks = self.rt.exec_stream(&id, spec).await.map_err(exec_status)?;
        let stream = tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(chunks), |c| {
            c.map(pb_chunk).map_err(|e| exec_status(AccessError::Driver(e)))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let req = request.into_inner();
        let id = req.sandbox_id.clone();
        let spec = exec_spec(req)?;
        let out = self.rt.exec(&id, spec).await.map_err(exec_status)?;
        Ok(Response::new(exec_response(out)))
    }

    async fn read_file(
        &self,
        request: Request<ReadFileRequest>,
    ) -> Result<Response<ReadFileResponse>, Status> {
        let req = request.into_inner();
        let content = self
            .rt
            .read_file(&req.sandbox_id, &req.path)
            .await
            .map_err(status)?;
        Ok(Response::new(ReadFileResponse { content }))
    }

    async fn write_file(
        &self,
        request: Request<WriteFileRequest>,
    ) -> Result<Response<WriteFileResponse>, Status> {
        let req = request.into_inner();
        self.rt
            .write_file(&req.sandbox_id, &req.path, req.content, req.mode)
            .await
            .map_err(status)?;
        Ok(Response::new(WriteFileResponse {}))
    }
}
