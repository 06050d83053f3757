//! Clients for the dataplanes' `Agent` services, one lazily connected channel
//! per host, reused across requests (HTTP/2 multiplexes them).

use std::collections::HashMap;

use corral_proto::v1::agent_client::AgentClient;
use parking_lot::Mutex;
use corral_proto::auth::BearerToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// An agent client that presents the join token.
pub type Agent = AgentClient<InterceptedService<Channel, BearerToken>>;

pub struct AgentPool {
    token: BearerToken,
    clients: Mutex<HashMap<String, (String, Agent)>>,
}

/// The largest exec output or file the server relays.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

impl AgentPool {
    pub fn new(join_token: Option<&str>) -> Result<Self, String> {
        Ok(AgentPool { token: BearerToken::new(join_token)?, clients: Mutex::new(HashMap::new()) })
    }

    /// A client for `host` at `addr`; a changed address replaces the channel.
    pub fn client(&self, host: &str, addr: &str) -> Result<Agent, String> {
        let mut clients = self.clients.lock();
        if let Some((known, c)) = clients.get(host) {
            if known == addr {
                return Ok(c.clone());
            }
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad agent address {addr:?}: {e}"))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .tcp_nodelay(true);
        let client = AgentClient::with_interceptor(endpoint.connect_lazy(), self.token.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        clients.insert(host.to_string(), (addr.to_string(), client.clone()));
        Ok(client)
    }
}
