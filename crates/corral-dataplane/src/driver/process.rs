//! The `process` driver: **no isolation, for development.**
//!
//! A sandbox is a private working directory `<data_dir>/sandboxes/<id>/` and a
//! process group of its own, led by a keeper process (`/bin/sleep infinity`)
//! whose lifetime is the sandbox's. Exec'd commands run as the dataplane's
//! user with the sandbox directory as cwd and HOME; nothing stops them from
//! reading or changing the rest of the machine. Use it to develop and test
//! everything above the runtime, never to run untrusted code.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use corral_core::SandboxSpec;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use parking_lot::Mutex;
use tokio::process::Command;

use super::exec::{self, Prepared};
use super::paths::{ensure_inside, resolve_in, resolve_program};
use super::procfs::{self, DIR_MARKER, ID_MARKER, KEEPER_MARKER};
use super::{BoxFuture, Discovered, Driver, DriverError, ExecOutput, ExecSpec, Exit, Started};

pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
const KEEPER: &str = "/bin/sleep";

pub struct ProcessDriver {
    /// The canonical data dir: the marker every sandbox process carries.
    data_dir: String,
    sandboxes_dir: PathBuf,
    running: Mutex<HashMap<String, Keeper>>,
}

/// A live keeper. The pidfd guards against signalling a recycled pid.
#[derive(Clone)]
struct Keeper {
    pid: i32,
    pidfd: Arc<OwnedFd>,
    /// Whether anything was exec'd in it (then stopping must look for more
    /// than the keeper's group).
    had_exec: bool,
}

impl ProcessDriver {
    /// `data_dir` must already be canonical: it is compared byte for byte with
    /// the marker found in `/proc`.
    pub fn new(data_dir: &Path) -> Self {
        ProcessDriver {
            data_dir: data_dir.to_string_lossy().into_owned(),
            sandboxes_dir: data_dir.join("sandboxes"),
            running: Mutex::new(HashMap::new()),
        }
    }

    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.sandboxes_dir.join(id)
    }

    fn markers(&self, id: &str) -> [(&'static str, String); 2] {
        [
            (DIR_MARKER, self.data_dir.clone()),
            (ID_MARKER, id.to_string()),
        ]
    }

    fn spawn_keeper(&self, id: &str, dir: &Path) -> Result<tokio::process::Child, DriverError> {
        let mut cmd = Command::new(KEEPER);
        cmd.arg("infinity")
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .envs(self.markers(id))
            .env(KEEPER_MARKER, "1")
            .current_dir(dir)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.spawn()
            .map_err(|e| DriverError::io(format!("spawn {KEEPER}"), e))
    }

    async fn start_keeper(&self, id: &str) -> Result<Started, DriverError> {
        let dir = self.sandbox_dir(id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| DriverError::io(format!("create {}", dir.display()), e))?;
        let mut child = self.spawn_keeper(id, &dir)?;
        let pid = child
            .id()
            .map(|p| p as i32)
            .ok_or_else(|| DriverError::NotFound(id.to_string()))?;
        // The child is not reaped before `wait`, so this pid is still ours.
        let pidfd = procfs::pidfd_open(pid).map_err(|e| DriverError::io("pidfd_open", e))?;
        self.running.lock().insert(
            id.to_string(),
            Keeper {
                pid,
                pidfd: Arc::new(pidfd),
                had_exec: false,
            },
        );
        let exited = Box::pin(async move {
            Exit::plain(match child.wait().await {
                Ok(status) => format!("keeper {}", describe(status)),
                Err(e) => format!("lost track of the keeper: {e}"),
            })
        });
        Ok(Started { exited })
    }

    fn keeper(&self, id: &str) -> Result<Keeper, DriverError> {
        self.running
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| DriverError::NotFound(id.to_string()))
    }

    /// Resolves a path inside a running or ended (not yet removed) sandbox.
    fn file_path(&self, id: &str, path: &str) -> Result<(PathBuf, PathBuf), DriverError> {
        let root = self.sandbox_dir(id);
        if !root.is_dir() {
            return Err(DriverError::NotFound(id.to_string()));
        }
        let full = resolve_in(&root, path)?;
        Ok((root, full))
    }

    fn exec_env(
        &self,
        id: &str,
        root: &Path,
        spec: &SandboxSpec,
        req: &ExecSpec,
    ) -> BTreeMap<String, String> {
        let mut env = BTreeMap::from([("PATH".to_string(), DEFAULT_PATH.to_string())]);
        env.extend(spec.env.clone());
        env.extend(req.env.clone());
        env.insert("HOME".into(), root.to_string_lossy().into_owned());
        env.extend(self.markers(id).map(|(k, v)| (k.to_string(), v)));
        env
    }

    async fn exec_in(
        &self,
        id: &str,
        spec: &SandboxSpec,
        req: ExecSpec,
    ) -> Result<ExecOutput, DriverError> {
        self.keeper(id)?;
        let root = self.sandbox_dir(id);
        let cwd = resolve_in(&root, &req.cwd)?;
        if !cwd.is_dir() {
            return Err(DriverError::InvalidArgument(format!(
                "cwd {:?} is not a directory in the sandbox",
                req.cwd
            )));
        }
        ensure_inside(&root, &cwd)?;
        let env = self.exec_env(id, &root, spec, &req);
        let path_var = env.get("PATH").map(String::as_str).unwrap_or(DEFAULT_PATH);
        let argv0 = req.argv.first().map(String::as_str).unwrap_or("");
        let program = resolve_program(argv0, path_var, &cwd)?;
        let prepared = Prepared {
            program: &program,
            args: req.argv.get(1..).unwrap_or(&[]),
            env: &env,
            cwd: &cwd,
            stdin: req.stdin,
            timeout: req.timeout,
        };
        exec::run(prepared, |_| {
            if let Some(k) = self.running.lock().get_mut(id) {
                k.had_exec = true;
            }
        })
        .await
    }

    async fn read_in(&self, id: &str, path: &str) -> Result<Vec<u8>, DriverError> {
        let (root, full) = self.file_path(id, path)?;
        if !full.exists() {
            return Err(DriverError::Missing(format!(
                "no file {path:?} in the sandbox"
            )));
        }
        ensure_inside(&root, &full)?;
        if full.is_dir() {
            return Err(DriverError::InvalidArgument(format!(
                "{path:?} is a directory"
            )));
        }
        tokio::fs::read(&full)
            .await
            .map_err(|e| DriverError::io(format!("read {path:?}"), e))
    }

    async fn write_in(
        &self,
        id: &str,
        path: &str,
        content: Vec<u8>,
        mode: u32,
    ) -> Result<(), DriverError> {
        use std::os::unix::fs::PermissionsExt;
        let (root, full) = self.file_path(id, path)?;
        let parent = full
            .parent()
            .filter(|p| p.starts_with(&root))
            .unwrap_or(&root)
            .to_path_buf();
        if full == root {
            return Err(DriverError::InvalidArgument("path must name a file".into()));
        }
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(|e| DriverError::io(format!("create {path:?}"), e))?;
        ensure_inside(&root, &parent)?;
        if full.exists() {
            ensure_inside(&root, &full)?;
        }
        tokio::fs::write(&full, content)
            .await
            .map_err(|e| DriverError::io(format!("write {path:?}"), e))?;
        let mode = if mode == 0 { 0o644 } else { mode & 0o7777 };
        tokio::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode))
            .await
            .map_err(|e| DriverError::io(format!("chmod {path:?}"), e))
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "ended".to_string(),
    }
}

impl Driver for ProcessDriver {
    fn name(&self) -> &'static str {
        "process"
    }

    fn start<'a>(
        &'a self,
        id: &'a str,
        _spec: &'a SandboxSpec,
    ) -> BoxFuture<'a, Result<Started, DriverError>> {
        Box::pin(self.start_keeper(id))
    }

    fn discover(&self) -> BoxFuture<'_, Result<Vec<Discovered>, DriverError>> {
        Box::pin(async move {
            let found = procfs::scan(&self.data_dir).map_err(|e| DriverError::io("scan /proc", e))?;
            Ok(found
                .into_iter()
                .map(|m| Discovered {
                    sandbox_id: m.sandbox_id,
                    pid: m.pid,
                    keeper: m.keeper,
                })
                .collect())
        })
    }

    fn adopt(&self, id: &str, found: &Discovered) -> Result<Started, DriverError> {
        let pidfd = procfs::pidfd_open(found.pid).map_err(|e| DriverError::io("pidfd_open", e))?;
        // The pid may have been recycled between the scan and pidfd_open.
        let still = procfs::marked(found.pid, &self.data_dir);
        if still.as_ref().map(|m| m.sandbox_id.as_str()) != Some(id) {
            return Err(DriverError::NotFound(id.to_string()));
        }
        let pidfd = Arc::new(pidfd);
        let watch = pidfd
            .try_clone()
            .map_err(|e| DriverError::io("dup pidfd", e))?;
        // It may have had exec'd commands under the previous dataplane.
        self.running.lock().insert(
            id.to_string(),
            Keeper {
                pid: found.pid,
                pidfd,
                had_exec: true,
            },
        );
        let exited = Box::pin(async move {
            Exit::plain(match procfs::wait_pidfd(watch).await {
                Ok(()) => "keeper exited (adopted after a dataplane restart; status unknown)".to_string(),
                Err(e) => format!("lost track of the adopted keeper: {e}"),
            })
        });
        Ok(Started { exited })
    }

    fn kill_stray(&self, found: &Discovered) {
        tracing::warn!(sandbox_id = %found.sandbox_id, pid = found.pid, keeper = found.keeper, "killing a stray sandbox process");
        procfs::kill_tree(found.pid);
    }

    fn stop<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move {
            let keeper = self.running.lock().remove(id);
            if let Some(k) = &keeper {
                if !procfs::pidfd_exited(&k.pidfd) {
                    let _ = killpg(Pid::from_raw(k.pid), Signal::SIGKILL);
                }
            }
            if keeper.is_none_or(|k| k.had_exec) {
                procfs::kill_marked(&self.data_dir, Some(id));
            }
            Ok(())
        })
    }

    fn remove(&self, id: &str) -> Result<(), DriverError> {
        self.running.lock().remove(id);
        let dir = self.sandbox_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(DriverError::io(format!("remove {}", dir.display()), e))
            }
            _ => Ok(()),
        }
    }

    fn exec<'a>(
        &'a self,
        id: &'a str,
        spec: &'a SandboxSpec,
        req: ExecSpec,
    ) -> BoxFuture<'a, Result<ExecOutput, DriverError>> {
        Box::pin(self.exec_in(id, spec, req))
    }

    fn read_file<'a>(
        &'a self,
        id: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u8>, DriverError>> {
        Box::pin(self.read_in(id, path))
    }

    fn write_file<'a>(
        &'a self,
        id: &'a str,
        path: &'a str,
        content: Vec<u8>,
        mode: u32,
    ) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(self.write_in(id, path, content, mode))
    }
}
