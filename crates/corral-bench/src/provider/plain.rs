//! No sandbox at all: the floor every provider is measured against.
//!
//! A "sandbox" is one plain keeper shell (see [`super::stdio`]) started with
//! fork/exec on this host: no namespaces, no cgroup, no root filesystem of its
//! own. The readiness command is exec'd by that shell exactly as in the
//! bubblewrap baseline, so a burst against `plain` is the CPU cost of the
//! work itself, measured on the same host at the same moment as the others.

use std::time::Duration;

use super::stdio::{keeper_argv, StdioSandbox};
use super::{BoxFuture, Provider, ProviderError, Sandbox};
use crate::BenchError;

#[derive(Default)]
pub struct PlainProvider;

impl Provider for PlainProvider {
    fn name(&self) -> &'static str {
        "plain"
    }

    fn prepare<'a>(&'a self) -> BoxFuture<'a, Result<(), BenchError>> {
        Box::pin(async { Ok(()) })
    }

    fn create<'a>(&'a self, index: usize, timeout: Duration) -> BoxFuture<'a, Result<Box<dyn Sandbox>, ProviderError>> {
        Box::pin(async move {
            let argv = keeper_argv();
            let mut cmd = tokio::process::Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            let sb = StdioSandbox::spawn(format!("plain-{index}"), cmd, timeout).await?;
            Ok(Box::new(sb) as Box<dyn Sandbox>)
        })
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "isolation": "none (fork/exec of a keeper shell)" })
    }
}
