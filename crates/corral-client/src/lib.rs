//! A typed client for Corral's REST API.
//!
//! One [`Client`] holds one connection pool; clone it freely. Every non-2xx
//! answer becomes [`ClientError::Api`] carrying the server's stable error
//! `code`, so callers can match on it instead of parsing messages.

use std::time::Duration;

use corral_core::api::{
    BatchCreateResponse, CreateSandboxRequest, ErrorBody, ExecRequest, ExecResponse, ExecStreamEvent, HostList,
    PoolList, SandboxList, SetPoolRequest,
    TemplateList,
};
use corral_core::pool::PoolSpec;
use corral_core::Sandbox;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

/// The server a client talks to when nothing else is said.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7700";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{status}: {message} ({code})")]
    Api { status: u16, code: String, message: String },
    /// The server could not be reached or the connection broke.
    #[error("cannot reach {url}: {message}")]
    Transport { url: String, message: String },
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
    /// The client was set up wrongly (a bad CA file, a CA with a plain URL).
    #[error("{0}")]
    Config(String),
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Filters for [`Client::list`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<String>,
    pub label: Option<String>,
    pub host: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        Client::with_ca(base, token, None)
    }

    /// A client for an `https://` server whose certificate is signed by the
    /// CA in `ca_pem` (PEM, one or more certificates); only that CA is
    /// trusted then. With `None`, `https://` trusts the public web roots.
    /// A CA with a plain `http://` URL is refused rather than ignored.
    pub fn with_ca(base: &str, token: Option<String>, ca_pem: Option<&[u8]>) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1024)
            .connect_timeout(Duration::from_secs(10));
        if let Some(pem) = ca_pem {
            if !base.starts_with("https://") {
                return Err(ClientError::Config(format!("a CA was given but {base} is not an https:// URL")));
            }
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ClientError::Config(format!("CA certificate: {e}")))?;
            if certs.is_empty() {
                return Err(ClientError::Config("CA certificate: no PEM certificate in it".into()));
            }
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| ClientError::Transport { url: base.to_string(), message: e.to_string() })?;
        Ok(Client { base: base.trim_end_matches('/').to_string(), token, http })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.http.request(method, format!("{}{}", self.base, path));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    async fn send(&self, rb: RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp = rb.send().await.map_err(|e| ClientError::Transport { url: self.base.clone(), message: with_causes(&e) })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => ClientError::Api { status: status.as_u16(), code: b.error.code, message: b.error.message },
            Err(_) => ClientError::Api { status: status.as_u16(), code: "http_error".into(), message: text },
        })
    }

    async fn json<T: DeserializeOwned>(&self, rb: RequestBuilder) -> Result<T, ClientError> {
        let resp = self.send(rb).await?;
        let bytes = resp.bytes().await.map_err(|e| ClientError::Decode(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Creates a sandbox; with `wait`, answers once it runs or has ended.
    pub async fn create(&self, req: &CreateSandboxRequest, wait: bool) -> Result<Sandbox, ClientError> {
        let path = if wait { "/v1/sandboxes?wait=running" } else { "/v1/sandboxes" };
        self.json(self.request(Method::POST, path).json(req)).await
    }

    /// Creates `count` sandboxes of one spec in one call.
    pub async fn create_batch(&self, count: usize, req: &CreateSandboxRequest) -> Result<Vec<String>, ClientError> {
        let mut body = serde_json::to_value(req).map_err(|e| ClientError::Decode(e.to_string()))?;
        body["count"] = serde_json::json!(count);
        let r: BatchCreateResponse = self.json(self.request(Method::POST, "/v1/sandboxes/batch").json(&body)).await?;
        Ok(r.ids)
    }

    pub async fn get(&self, id: &str) -> Result<Sandbox, ClientError> {
        self.json(self.request(Method::GET, &format!("/v1/sandboxes/{id}"))).await
    }

    pub async fn list(&self, f: &ListFilter) -> Result<Vec<Sandbox>, ClientError> {
        let mut q: Vec<(&str, String)> = Vec::new();
        for (k, v) in [("state", &f.state), ("label", &f.label), ("host", &f.host)] {
            if let Some(v) = v {
                q.push((k, v.clone()));
            }
        }
        if let Some(l) = f.limit {
            q.push(("limit", l.to_string()));
        }
        let r: SandboxList = self.json(self.request(Method::GET, "/v1/sandboxes").query(&q)).await?;
        Ok(r.sandboxes)
    }

    pub async fn delete(&self, id: &str) -> Result<Sandbox, ClientError> {
        self.json(self.request(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await
    }

    pub async fn exec(&self, id: &str, req: &ExecRequest) -> Result<ExecResponse, ClientError> {
        self.json(self.request(Method::POST, &format!("/v1/sandboxes/{id}/exec")).json(req)).await
    }

    /// Runs a command and streams its output: see [`ExecEvents`].
    pub async fn exec_stream(&self, id: &str, req: &ExecRequest) -> Result<ExecEvents, ClientError> {
        let resp = self.send(self.request(Method::POST, &format!("/v1/sandboxes/{id}/exec/stream")).json(req)).await?;
        Ok(ExecEvents { resp, buf: Vec::new(), done: false })
    }

    pub async fn read_file(&self, id: &str, path: &str) -> Result<Vec<u8>, ClientError> {
        let rb = self.request(Method::GET, &format!("/v1/sandboxes/{id}/files")).query(&[("path", path)]);
        let resp = self.send(rb).await?;
        Ok(resp.bytes().await.map_err(|e| ClientError::Decode(e.to_string()))?.to_vec())
    }

    pub async fn write_file(&self, id: &str, path: &str, content: Vec<u8>) -> Result<(), ClientError> {
        let rb = self.request(Method::PUT, &format!("/v1/sandboxes/{id}/files")).query(&[("path", path)]).body(content);
        self.send(rb).await.map(|_| ())
    }

    pub async fn hosts(&self) -> Result<HostList, ClientError> {
        self.json(self.request(Method::GET, "/v1/hosts")).await
    }

    pub async fn pools(&self) -> Result<PoolList, ClientError> {
        self.json(self.request(Method::GET, "/v1/pools")).await
    }

    pub async fn set_pool(&self, template: &str, req: &SetPoolRequest) -> Result<PoolSpec, ClientError> {
        self.json(self.request(Method::PUT, &format!("/v1/pools/{template}")).json(req)).await
    }

    pub async fn templates(&self) -> Result<TemplateList, ClientError> {
        self.json(self.request(Method::GET, "/v1/templates")).await
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let resp = self.send(self.request(Method::GET, "/metrics")).await?;
        resp.text().await.map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Whether `/healthz` answers 200.
    pub async fn healthy(&self) -> bool {
        matches!(self.request(Method::GET, "/healthz").send().await, Ok(r) if r.status() == StatusCode::OK)
    }
}

/// The events of a streamed exec, in order; the last is `Exit` (or `Error`).
pub struct ExecEvents {
    resp: reqwest::Response,
    buf: Vec<u8>,
    done: bool,
}

impl ExecEvents {
    /// The next event, `None` once the stream is over.
    pub async fn next(&mut self) -> Option<Result<ExecStreamEvent, ClientError>> {
        loop {
            if let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                if line.len() <= 1 {
                    continue;
                }
                return Some(serde_json::from_slice(&line).map_err(|e| ClientError::Decode(e.to_string())));
            }
            if self.done {
                return None;
            }
            match self.resp.chunk().await {
                Ok(Some(bytes)) => self.buf.extend_from_slice(&bytes),
                Ok(None) => {
                    self.done = true;
                    if !self.buf.is_empty() {
                        self.buf.push(b'\n');
                    }
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(ClientError::Decode(e.to_string())));
                }
            }
        }
    }
}

/// Sums a metric's samples in Prometheus text (all label sets).
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// An error and its causes, `outer: inner: …`, so a TLS or connection
/// failure says why (reqwest's own message stops at "error sending request").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let s = cause.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::metric_sum;

    #[test]
    fn sums_a_metric_over_its_labels() {
        let text = "# TYPE corral_outbox_backlog gauge\n\
                    corral_outbox_backlog{host=\"a\"} 3\n\
                    corral_outbox_backlog{host=\"b\"} 4\n\
                    corral_outbox_backlog_other 9\n";
        assert_eq!(metric_sum(text, "corral_outbox_backlog"), Some(7.0));
        assert_eq!(metric_sum(text, "missing"), None);
    }
}
