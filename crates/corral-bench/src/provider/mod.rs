//! The systems a run can measure, behind one trait so every provider is timed
//! by the same code with the same readiness command.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::record::FailureClass;
use crate::BenchError;

pub mod bwrap;
pub mod corral;
pub mod plain;
pub mod podman;
pub mod stdio;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A failure of one sandbox operation, classified for the error histogram.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    pub class: FailureClass,
    pub message: String,
}

impl ProviderError {
    pub fn new(class: FailureClass, message: impl Into<String>) -> Self {
        ProviderError { class, message: message.into() }
    }
}

/// What a command run in a sandbox returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecResult {
    pub exit_code: i32,
    pub stdout: String,
}

/// A created sandbox. Dropping it must not leak processes: providers kill what
/// is left of a sandbox on drop, so an interrupted run cleans up.
pub trait Sandbox: Send + Sync {
    /// The provider's id (Corral sandbox id, container name, keeper pid).
    fn id(&self) -> String;
    fn host(&self) -> Option<String> {
        None
    }
    fn exec<'a>(&'a self, argv: &'a [String], timeout: Duration) -> BoxFuture<'a, Result<ExecResult, ProviderError>>;
    fn destroy<'a>(&'a self, timeout: Duration) -> BoxFuture<'a, Result<(), ProviderError>>;
}

pub trait Provider: Send + Sync {
    fn name(&self) -> &'static str;
    /// One-time work before the clock starts (build an image, check the tool).
    fn prepare<'a>(&'a self) -> BoxFuture<'a, Result<(), BenchError>>;
    /// Creates one sandbox, returning once the provider says it exists.
    fn create<'a>(&'a self, index: usize, timeout: Duration) -> BoxFuture<'a, Result<Box<dyn Sandbox>, ProviderError>>;
    /// Processes worth sampling besides the client (role, pid).
    fn processes(&self) -> Vec<(String, i32)> {
        Vec::new()
    }
    /// Removes whatever an interrupted run may have left behind.
    fn cleanup<'a>(&'a self) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
    /// Versions and settings to put in meta.json.
    fn describe(&self) -> serde_json::Value;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Corral,
    Bwrap,
    Podman,
    /// No isolation: the readiness command's own cost (the floor).
    Plain,
}

impl Kind {
    pub fn parse(s: &str) -> Result<Kind, BenchError> {
        match s {
            "corral" => Ok(Kind::Corral),
            "bwrap" | "bubblewrap" => Ok(Kind::Bwrap),
            "podman" => Ok(Kind::Podman),
            "plain" => Ok(Kind::Plain),
            other => Err(BenchError::Config(format!("unknown provider {other:?} (corral, bwrap, podman, plain)"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Corral => "corral",
            Kind::Bwrap => "bwrap",
            Kind::Podman => "podman",
            Kind::Plain => "plain",
        }
    }
}

/// Settings every provider may use.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderConfig {
    pub kind: Kind,
    /// Corral REST URL.
    pub url: String,
    pub token: Option<String>,
    pub template: String,
    /// The program the readiness command runs, so the local baselines can put
    /// it (and its libraries) in their root filesystem.
    pub readiness_program: String,
    /// podman image name (built from the base content when missing).
    pub image: String,
}

pub fn build(c: &ProviderConfig) -> Result<std::sync::Arc<dyn Provider>, BenchError> {
    Ok(match c.kind {
        Kind::Corral => std::sync::Arc::new(corral::CorralProvider::new(c)?),
        Kind::Bwrap => std::sync::Arc::new(bwrap::BwrapProvider::new()),
        Kind::Podman => std::sync::Arc::new(podman::PodmanProvider::new(c)),
        Kind::Plain => std::sync::Arc::new(plain::PlainProvider),
    })
}

/// Output of `tool --version` (first line), or why not.
pub async fn tool_version(tool: &str) -> Result<String, String> {
    let out = tokio::process::Command::new(tool)
        .arg("--version")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("{tool}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{tool} --version: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").trim().to_string())
}
