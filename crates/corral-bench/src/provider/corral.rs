//! Corral through its REST API: create with `?wait=running`, then exec the
//! readiness command, exactly as a user's client would.

use std::time::Duration;

use corral_client::{Client, ClientError};
use corral_core::api::{CreateSandboxRequest, ExecRequest};
use corral_core::SandboxState;

use super::{BoxFuture, ExecResult, Provider, ProviderConfig, ProviderError, Sandbox};
use crate::record::FailureClass;
use crate::BenchError;

/// Sandboxes outlive any run by at most this (they are deleted at the end;
/// the TTL only matters when the benchmark is killed).
const TTL_S: i64 = 3600;

pub struct CorralProvider {
    client: Client,
    template: String,
}

impl CorralProvider {
    pub fn new(c: &ProviderConfig) -> Result<Self, BenchError> {
        let client = Client::new(&c.url, c.token.clone()).map_err(|e| BenchError::Config(e.to_string()))?;
        Ok(CorralProvider { client, template: c.template.clone() })
    }
}

fn classify(e: ClientError) -> ProviderError {
    match &e {
        ClientError::Api { .. } => ProviderError::new(FailureClass::HttpError, e.to_string()),
        ClientError::Transport { message, .. } if message.contains("timed out") => {
            ProviderError::new(FailureClass::Timeout, e.to_string())
        }
        ClientError::Transport { .. } => ProviderError::new(FailureClass::NetworkError, e.to_string()),
        ClientError::Decode(_) | ClientError::Config(_) => ProviderError::new(FailureClass::Other, e.to_string()),
    }
}

async fn timed<T>(timeout: Duration, f: impl std::future::Future<Output = Result<T, ClientError>>) -> Result<T, ProviderError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r.map_err(classify),
        Err(_) => Err(ProviderError::new(FailureClass::Timeout, format!("no answer within {timeout:?}"))),
    }
}

impl Provider for CorralProvider {
    fn name(&self) -> &'static str {
        "corral"
    }

    fn prepare<'a>(&'a self) -> BoxFuture<'a, Result<(), BenchError>> {
        Box::pin(async move {
            if self.client.healthy().await {
                Ok(())
            } else {
                Err(BenchError::Unavailable {
                    provider: "corral".into(),
                    message: format!("no healthy server at {} (start one with `corral up`)", self.client.base_url()),
                })
            }
        })
    }

    fn create<'a>(&'a self, index: usize, timeout: Duration) -> BoxFuture<'a, Result<Box<dyn Sandbox>, ProviderError>> {
        Box::pin(async move {
            let mut req = CreateSandboxRequest { template: Some(self.template.clone()), ttl_s: Some(TTL_S), ..Default::default() };
            req.labels.insert("corral-bench".into(), index.to_string());
            let sb = timed(timeout, self.client.create(&req, true)).await?;
            let handle = CorralSandbox { client: self.client.clone(), id: sb.id.clone(), host: sb.host.clone() };
            if sb.state != SandboxState::Running {
                let why = sb.message.clone().unwrap_or_default();
                let _ = handle.client.delete(&sb.id).await;
                return Err(ProviderError::new(
                    FailureClass::StartFailed,
                    format!("{} is {:?} ({:?}): {why}", sb.id, sb.state, sb.end_reason),
                ));
            }
            Ok(Box::new(handle) as Box<dyn Sandbox>)
        })
    }

    fn processes(&self) -> Vec<(String, i32)> {
        crate::sample::listeners_of_url(self.client.base_url())
            .into_iter()
            .map(|pid| ("server".to_string(), pid))
            .collect()
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "url": self.client.base_url(), "template": self.template })
    }
}

struct CorralSandbox {
    client: Client,
    id: String,
    host: Option<String>,
}

impl Sandbox for CorralSandbox {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn host(&self) -> Option<String> {
        self.host.clone()
    }

    fn exec<'a>(&'a self, argv: &'a [String], timeout: Duration) -> BoxFuture<'a, Result<ExecResult, ProviderError>> {
        Box::pin(async move {
            let req = ExecRequest { cmd: argv.to_vec(), timeout_ms: Some(timeout.as_millis() as u64), ..Default::default() };
            let r = timed(timeout + Duration::from_secs(5), self.client.exec(&self.id, &req)).await?;
            if r.timed_out {
                return Err(ProviderError::new(FailureClass::Timeout, "command timed out"));
            }
            Ok(ExecResult { exit_code: r.exit_code, stdout: r.stdout })
        })
    }

    fn destroy<'a>(&'a self, timeout: Duration) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move { timed(timeout, self.client.delete(&self.id)).await.map(|_| ()) })
    }
}
