//! bubblewrap, the sandbox tool a self-hosting user would reach for first.
//!
//! A "sandbox" is one `bwrap` process, alive from create to destroy, that runs
//! a keeper shell inside (see [`super::stdio`]): `--unshare-all` (user, pid,
//! mount, net, uts, ipc, cgroup namespaces), `--new-session`,
//! `--die-with-parent`, and a root filesystem made of read-only binds of the
//! host's `/usr` (with `/bin`, `/lib*`, `/sbin` as on the host), a few `/etc`
//! files, a fresh `/proc`, `/dev` and `/tmp` — the content of Corral's `base`
//! template. The readiness command is then exec'd by that shell inside the
//! sandbox, like `corral sandbox exec`.

use std::path::Path;
use std::time::Duration;

use super::stdio::{keeper_argv, StdioSandbox};
use super::{tool_version, BoxFuture, Provider, ProviderError, Sandbox};
use crate::BenchError;

/// The `/etc` files of the base content: what dynamic linking, name lookup
/// and user lookup need, nothing secret.
pub const BASE_ETC: &[&str] = &[
    "/etc/passwd", "/etc/group", "/etc/hosts", "/etc/hostname", "/etc/nsswitch.conf", "/etc/ld.so.cache",
    "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/ssl", "/etc/ca-certificates",
    "/etc/alternatives",
];

/// The top-level entries bound from the host besides `/usr`.
pub const BASE_TOP: &[&str] = &["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

pub struct BwrapProvider;

impl BwrapProvider {
    pub fn new() -> Self {
        BwrapProvider
    }
}

impl Default for BwrapProvider {
    fn default() -> Self {
        Self::new()
    }
}

/// bwrap arguments for the base root filesystem.
pub fn base_args() -> Vec<String> {
    let mut a: Vec<String> = ["--ro-bind", "/usr", "/usr"].map(String::from).to_vec();
    for top in BASE_TOP {
        let p = Path::new(top);
        match std::fs::read_link(p) {
            Ok(target) => a.extend(["--symlink".into(), target.display().to_string(), top.to_string()]),
            Err(_) if p.is_dir() => a.extend(["--ro-bind".into(), top.to_string(), top.to_string()]),
            Err(_) => {}
        }
    }
    for etc in BASE_ETC {
        if Path::new(etc).exists() {
            a.extend(["--ro-bind".into(), etc.to_string(), etc.to_string()]);
        }
    }
    a.extend(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--chdir", "/"].map(String::from));
    a.extend(["--unshare-all", "--new-session", "--die-with-parent"].map(String::from));
    a
}

impl Provider for BwrapProvider {
    fn name(&self) -> &'static str {
        "bwrap"
    }

    /// Checks that bwrap exists and can create a sandbox here.
    fn prepare<'a>(&'a self) -> BoxFuture<'a, Result<(), BenchError>> {
        Box::pin(async move {
            let unavailable = |m: String| BenchError::Unavailable { provider: "bwrap".into(), message: m };
            tool_version("bwrap").await.map_err(unavailable)?;
            let out = tokio::process::Command::new("bwrap")
                .args(base_args())
                .arg("/bin/true")
                .kill_on_drop(true)
                .output()
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            if !out.status.success() {
                return Err(unavailable(format!("bwrap cannot run here: {}", String::from_utf8_lossy(&out.stderr).trim())));
            }
            Ok(())
        })
    }

    fn create<'a>(&'a self, index: usize, timeout: Duration) -> BoxFuture<'a, Result<Box<dyn Sandbox>, ProviderError>> {
        Box::pin(async move {
            let mut cmd = tokio::process::Command::new("bwrap");
            cmd.args(base_args()).args(keeper_argv());
            let sb = StdioSandbox::spawn(format!("bwrap-{index}"), cmd, timeout).await?;
            Ok(Box::new(sb) as Box<dyn Sandbox>)
        })
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "args": base_args().join(" ") })
    }
}
