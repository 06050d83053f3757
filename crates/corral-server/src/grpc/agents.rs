//! Clients for the dataplanes' `Agent` services, one lazily connected channel
//! per host, reused across requests (HTTP/2 multiplexes them).

use std::collections::HashMap;

use corral_proto::v1::agent_client::AgentClient;
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};

#[derive(Default)]
pub struct AgentPool {
    clients: Mutex<HashMap<String, (String, AgentClient<Channel>)>>,
}

/// The largest exec output or file the server relays.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

impl AgentPool {
    /// A client for `host` at `addr`; a changed address replaces the channel.
    pub fn client(&self, host: &str, addr: &str) -> Result<AgentClient<Channel>, String> {
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
        let client = AgentClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        clients.insert(host.to_string(), (addr.to_string(), client.clone()));
        Ok(client)
    }
}
