//! Corral's server: the REST API users call, the gRPC `Control` service
//! dataplanes long-poll, the scheduler, and the group-committed outbox.
//!
//! ```text
//! REST ─▶ api (validate) ─▶ controller (decide on working state → one store
//!          ▲                 transaction per batch → publish to readers)
//!          │                            │ wakes
//!          └── reads committed state    ▼
//!                              grpc::Control (PollCommands long poll)
//! ```
//! Use [`Server::bind`] then [`Server::serve`].

pub mod api;
pub mod check;
pub mod controller;
pub mod grpc;
pub mod metrics;
pub mod scheduler;
pub mod shared;
pub mod state;
pub mod tls;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use corral_core::time::now_ms;
use corral_core::validate::Limits;
use corral_proto::v1::control_server::ControlServer;
use corral_store::{RedbStore, Store};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use crate::controller::Controller;
use crate::shared::Shared;
use crate::state::decide::{self, Liveness, Policy};
use crate::state::State;

/// The store's file in the data dir.
pub const STORE_FILE: &str = "corral.redb";

/// How the server is set up. Every field has a flag in `corral server`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub grpc_listen: SocketAddr,
    pub policy: Policy,
    pub limits: Limits,
    /// Decisions allowed to wait for the writer before callers get 503.
    pub queue_depth: usize,
    /// Bearer tokens accepted by the REST API; empty = no authentication.
    pub api_tokens: Vec<String>,
    /// The shared secret dataplanes present (and the server presents to
    /// their agents); `None` = no authentication.
    pub join_token: Option<String>,
    /// API requests per second allowed per token (per caller when open).
    pub rate_limit_per_s: Option<u32>,
    /// Serve both ports over TLS with this certificate and key; `None` = plain.
    pub tls: Option<tls::TlsFiles>,
    /// Live (non-terminal) sandboxes one token may hold; `None` = no limit.
    pub max_live_per_token: Option<usize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("corral-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 7701)),
            policy: Policy::default(),
            limits: Limits::default(),
            queue_depth: 65_536,
            api_tokens: Vec::new(),
            join_token: None,
            rate_limit_per_s: None,
            tls: None,
            max_live_per_token: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("data dir {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    #[error("store: {0}")]
    Store(#[from] corral_store::StoreError),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("serving failed: {0}")]
    Serve(String),
}

/// A server whose store is loaded and whose sockets are bound.
pub struct Server {
    config: ServerConfig,
    http: TcpListener,
    grpc: TcpListener,
    shared: Arc<Shared>,
    store: Arc<dyn Store>,
    tls: Option<tls::Tls>,
    /// Sandboxes and hosts found in the store at start.
    pub loaded: (usize, usize),
}

impl Server {
    /// Opens the store in `data_dir`, rebuilds the state and binds both ports.
    /// The bound addresses are also written to `api.addr` and `grpc.addr` in
    /// the data dir, so scripts and tests can use port 0.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        // Bad certificate files fail before the store is touched.
        let tls = config.tls.as_ref().map(tls::Tls::load).transpose()?;
        create_data_dir(&config)?;
        let path = config.data_dir.join(STORE_FILE);
        let store: Arc<dyn Store> =
            Arc::new(tokio::task::spawn_blocking(move || RedbStore::open(&path)).await.map_err(join_err)??);
        Server::assemble(config, store, tls).await
    }

    /// Like [`Server::bind`] over any store (tests wrap one to inject
    /// faults); `data_dir` still receives the address files.
    pub async fn bind_with_store(config: ServerConfig, store: Arc<dyn Store>) -> Result<Server, ServerError> {
        let tls = config.tls.as_ref().map(tls::Tls::load).transpose()?;
        create_data_dir(&config)?;
        Server::assemble(config, store, tls).await
    }

    /// Loads the state from `store` and binds both ports.
    async fn assemble(config: ServerConfig, store: Arc<dyn Store>, tls: Option<tls::Tls>) -> Result<Server, ServerError> {
        let snap = { let s = store.clone(); tokio::task::spawn_blocking(move || s.load()).await.map_err(join_err)?? };
        // Cheap next to the load (one pass), and the one moment a broken
        // store can be told apart from a bug that breaks it later.
        for v in state::invariants::check(&snap) {
            tracing::error!("store invariant violated at start-up: {v} (see `corral server check`)");
        }
        let state = State::from_snapshot(snap);
        let loaded = (state.sandboxes.len(), state.hosts.len());
        let shared = Arc::new(Shared::new(state));
        {
            // Every known host gets a fresh lease: we cannot know how long it
            // was silent while the server was down.
            let now = now_ms();
            let mut live = shared.liveness.write();
            for id in shared.committed.read().hosts.keys() {
                live.insert(id.clone(), Liveness { last_seen_ms: now, cpu_pct: 0.0 });
            }
        }
        metrics::set_state_gauges(&shared.committed.read());
        let http = TcpListener::bind(config.listen).await.map_err(|e| ServerError::Bind(config.listen, e))?;
        let grpc = TcpListener::bind(config.grpc_listen).await.map_err(|e| ServerError::Bind(config.grpc_listen, e))?;
        let server = Server { config, http, grpc, shared, store, tls, loaded };
        server.write_addr_files()?;
        Ok(server)
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().unwrap_or(self.config.listen)
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().unwrap_or(self.config.grpc_listen)
    }

    /// `https` when both ports serve TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    fn write_addr_files(&self) -> Result<(), ServerError> {
        let dir = &self.config.data_dir;
        for (name, addr) in [("api.addr", self.http_addr()), ("grpc.addr", self.grpc_addr())] {
            std::fs::write(dir.join(name), format!("{addr}\n")).map_err(|e| ServerError::DataDir(dir.clone(), e))?;
        }
        Ok(())
    }

    /// Serves until `shutdown` resolves, then stops accepting, ends held long
    /// polls and lets in-flight requests finish (at most 5 s); a request that
    /// got its answer was committed. Returns once the writer has committed
    /// what was queued and closed the store.
    ///
    /// The writer loop and the dataplane `Control` service run on a runtime of
    /// their own (the control lane), so that a flood of REST requests queues
    /// behind itself and never delays a commit or the delivery of commands to
    /// hosts; REST handlers reach the lane through channels.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServerError> {
        let lane = Lane(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("corral-control")
                .enable_all()
                .build()
                .map_err(|e| ServerError::Serve(format!("control runtime: {e}")))?,
        ));
        let handle = lane.0.as_ref().map(|rt| rt.handle().clone()).expect("just built");
        self.serve_on(handle, shutdown).await
    }

    async fn serve_on(
        self,
        lane: tokio::runtime::Handle,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let policy = self.config.policy.clone();
        let (writer_stop, writer_stopped) = tokio::sync::watch::channel(false);
        let (controller, writer) = Controller::start(
            &lane,
            self.store.clone(),
            self.shared.clone(),
            policy.clone(),
            self.config.queue_depth,
            writer_stopped,
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let ticks = lane.spawn(tick_loop(controller.clone(), self.shared.clone()));
        let app = api::AppState {
            controller: controller.clone(),
            shared: self.shared.clone(),
            agents: Arc::new(
                grpc::AgentPool::new(self.config.join_token.as_deref()).map_err(|e| ServerError::Serve(format!("join token: {e}")))?,
            ),
            gate: Arc::new(api::gate::Gate {
                tokens: self.config.api_tokens.clone(),
                limiter: self.config.rate_limit_per_s.map(api::gate::RateLimiter::new),
                max_live_per_token: self.config.max_live_per_token,
            }),
            limits: Arc::new(self.config.limits.clone()),
            policy: Arc::new(policy.clone()),
            prometheus: metrics::handle(),
        };
        let control = grpc::ControlService {
            controller,
            shared: self.shared.clone(),
            heartbeat_interval_ms: policy.heartbeat_interval_ms,
            stopping: stop_rx.clone(),
        };
        let router = api::router(app);
        let http_stopped = stopped(stop_rx.clone());
        let http: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> = match &self.tls {
            None => Box::pin(
                axum::serve(self.http.tap_io(|tcp| drop(tcp.set_nodelay(true))), router)
                    .with_graceful_shutdown(http_stopped)
                    .into_future(),
            ),
            Some(t) => {
                let listener = tls::TlsListener::new(self.http, t.rest.clone()).map_err(|e| ServerError::Serve(e.to_string()))?;
                Box::pin(axum::serve(listener, router).with_graceful_shutdown(http_stopped).into_future())
            }
        };
        // Re-registered inside the lane, so its connections live on the lane's reactor.
        let grpc_listener = self.grpc.into_std().map_err(|e| ServerError::Serve(e.to_string()))?;
        let grpc_stopped = stopped(stop_rx.clone());
        let join = corral_proto::auth::RequireToken::new(self.config.join_token.clone());
        let grpc_tls = self.tls.as_ref().map(tls::Tls::grpc_config);
        let grpc = lane.spawn(async move {
            let listener = TcpListener::from_std(grpc_listener).map_err(|e| e.to_string())?;
            let mut builder = tonic::transport::Server::builder();
            if let Some(config) = grpc_tls {
                builder = builder.tls_config(config).map_err(|e| format!("gRPC TLS: {e}"))?;
            }
            builder
                .initial_stream_window_size(4 << 20)
                .initial_connection_window_size(8 << 20)
                .add_service(tonic::service::interceptor::InterceptedService::new(
                    ControlServer::new(control)
                        .max_decoding_message_size(64 << 20)
                        .max_encoding_message_size(256 << 20),
                    join,
                ))
                .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), grpc_stopped)
                .await
                .map_err(|e| e.to_string())
        });
        let both = async {
            tokio::try_join!(async { http.await.map_err(|e| e.to_string()) }, async {
                grpc.await.map_err(|e| e.to_string())?
            })
        };
        let mut stop_rx2 = stop_rx.clone();
        let served = tokio::select! {
            r = both => r.map(|_| ()).map_err(ServerError::Serve),
            _ = async { let _ = stop_rx2.wait_for(|s| *s).await; tokio::time::sleep(Duration::from_secs(5)).await } => Ok(()),
        };
        // Requests are answered; let the writer commit what is queued and
        // close the store, so that serve returning means the store is free.
        ticks.abort();
        let _ = writer_stop.send(true);
        let _ = writer.await;
        served
    }
}

/// The control lane's runtime. Dropped from async code (also when `serve` is
/// cancelled), so it shuts down in the background instead of blocking.
struct Lane(Option<tokio::runtime::Runtime>);

impl Drop for Lane {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The periodic sweep (TTL, pending deadlines, lost hosts) and housekeeping.
async fn tick_loop(controller: Controller, shared: Arc<Shared>) {
    let mut every = tokio::time::interval(Duration::from_millis(500));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        every.tick().await;
        controller.submit(decide::tick);
        shared.prune_waiters();
    }
}

fn create_data_dir(config: &ServerConfig) -> Result<(), ServerError> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| ServerError::DataDir(dir.clone(), e))
}

fn join_err(e: tokio::task::JoinError) -> ServerError {
    ServerError::Serve(e.to_string())
}
