//! The dataplane's side of the Control connection: the shared client, the
//! cursor both loops read, and registration.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use corral_proto::v1::control_client::ControlClient;
use corral_proto::v1::{RegisterRequest, Resources};
use parking_lot::Mutex;
use corral_proto::auth::BearerToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::backoff::Backoff;
use crate::cursor::Cursor;
use crate::{DataplaneConfig, DataplaneError};

pub const DEFAULT_HEARTBEAT_MS: u64 = 1000;

pub struct Link {
    pub config: DataplaneConfig,
    pub client: ControlClient<InterceptedService<Channel, BearerToken>>,
    pub agent_addr: SocketAddr,
    /// The applied cursor; written by the poll loop after each durable commit.
    cursor: Mutex<Cursor>,
    heartbeat_ms: AtomicU64,
    /// Turns true at the first successful registration.
    registered: tokio::sync::watch::Sender<bool>,
}

impl Link {
    /// A lazily connecting client: the first RPC dials, and a broken
    /// connection is re-dialled by the next one.
    pub fn new(
        config: DataplaneConfig,
        agent_addr: SocketAddr,
        cursor: Cursor,
    ) -> Result<Self, DataplaneError> {
        let bad = |message: String| DataplaneError::ServerUrl {
            url: config.server_url.clone(),
            message,
        };
        let endpoint = Endpoint::from_shared(config.server_url.clone())
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            // Command batches are often larger than HTTP/2's default 64 KiB
            // window; a small window would stall each one for a round trip.
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(8 << 20);
        let endpoint = secure(endpoint, &config).map_err(bad)?;
        let token = BearerToken::new(config.join_token.as_deref()).map_err(|e| bad(format!("join token: {e}")))?;
        let client = ControlClient::with_interceptor(endpoint.connect_lazy(), token)
            .max_decoding_message_size(256 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024);
        Ok(Link {
            config,
            client,
            agent_addr,
            cursor: Mutex::new(cursor),
            heartbeat_ms: AtomicU64::new(DEFAULT_HEARTBEAT_MS),
            registered: tokio::sync::watch::Sender::new(false),
        })
    }

    pub fn cursor(&self) -> Cursor {
        *self.cursor.lock()
    }

    pub fn set_cursor(&self, c: Cursor) {
        *self.cursor.lock() = c;
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed))
    }

    /// Resolves once the dataplane has registered at least once.
    pub async fn wait_registered(&self) {
        let mut rx = self.registered.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Registers, retrying with backoff until the server answers. The epoch
    /// it returns is only logged: polls keep the persisted epoch, so the server
    /// sees any mismatch and answers with a full sync.
    pub async fn register(&self) {
        let mut backoff = Backoff::default();
        loop {
            let c = &self.config;
            let req = RegisterRequest {
                host_id: c.host_id.clone(),
                epoch: self.cursor().epoch,
                capacity: Some(Resources {
                    cpu_millis: c.capacity_cpu_millis,
                    memory_mb: c.capacity_memory_mb,
                }),
                templates: c.templates.clone(),
                agent_addr: self.agent_addr.to_string(),
                max_sandboxes: c.max_sandboxes as u64,
            };
            match self.client.clone().register(req).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    let ms = if resp.heartbeat_interval_ms == 0 {
                        DEFAULT_HEARTBEAT_MS
                    } else {
                        resp.heartbeat_interval_ms
                    };
                    self.heartbeat_ms.store(ms, Ordering::Relaxed);
                    self.registered.send_replace(true);
                    tracing::info!(
                        server_epoch = resp.epoch,
                        local_epoch = self.cursor().epoch,
                        "registered"
                    );
                    return;
                }
                Err(status) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(code = ?status.code(), "register failed: {}; retrying in {delay:?}", status.message());
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// Turns on TLS for an `https://` server URL, trusting `server_ca` when one
/// is given (else the public web roots). A CA with a plain `http://` URL is
/// refused: it says TLS was wanted, and the URL would silently skip it.
fn secure(endpoint: Endpoint, config: &DataplaneConfig) -> Result<Endpoint, String> {
    let https = endpoint.uri().scheme_str() == Some("https");
    let ca = match &config.server_ca {
        Some(path) => Some(std::fs::read(path).map_err(|e| format!("CA file {}: {e}", path.display()))?),
        None => None,
    };
    if !https {
        return match ca {
            Some(_) => Err("a CA file was given but the server URL is not https://".into()),
            None => Ok(endpoint),
        };
    }
    let tls = match ca {
        Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
        None => ClientTlsConfig::new().with_webpki_roots(),
    };
    endpoint.tls_config(tls).map_err(|e| format!("TLS: {e}"))
}
