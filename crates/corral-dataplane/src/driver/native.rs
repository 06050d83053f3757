//! The native driver: every sandbox is a `corral-runtime` sandbox — its own
//! user, pid, mount, net, uts, ipc and cgroup namespaces, cgroup limits, an
//! overlay of the template over a size-limited private layer, seccomp,
//! `no_new_privs`, and an init as PID 1 that serves exec and files.
//!
//! Inits outlive the dataplane on purpose: a restarted dataplane's runtime
//! re-attaches to them, and [`Driver::discover`] reports them for adoption.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use corral_core::SandboxSpec;
use corral_runtime::{ExecEvent, ExitInfo, Runtime, RuntimeConfig, RuntimeError, SandboxConfig, Template};

use super::{BoxFuture, Discovered, Driver, DriverError, ExecChunk, ExecChunks, ExecOutput, ExecSpec, Exit, Started};

/// How the native driver is set up.
#[derive(Debug, Clone)]
pub struct NativeConfig {
    /// Runtime state (init sockets, private layers) and the `base` template
    /// cache. Sandbox users must be able to traverse it, so it lives outside
    /// home directories by default.
    pub runtime_dir: PathBuf,
    /// Where built and imported templates live (see `corral-template`);
    /// default `<runtime_dir>/templates`.
    pub templates_dir: Option<PathBuf>,
    /// The parent cgroup of every sandbox cgroup.
    pub cgroup_parent: String,
    /// Task limit of each sandbox (fork bombs stop here).
    pub pids_max: u32,
    /// Size of each sandbox's writable layer, in MiB.
    pub disk_mb: u32,
    /// The executable run as the spawner (`None`: this binary, which must
    /// call `corral_runtime::maybe_run_spawner` first thing in `main`).
    pub spawner_exe: Option<PathBuf>,
}

impl NativeConfig {
    pub fn new(runtime_dir: impl Into<PathBuf>) -> Self {
        NativeConfig {
            runtime_dir: runtime_dir.into(),
            templates_dir: None,
            cgroup_parent: "corral".into(),
            pids_max: 1024,
            disk_mb: 1024,
            spawner_exe: None,
        }
    }
}

pub struct NativeDriver {
    rt: Runtime,
    base: Template,
    config: NativeConfig,
}

fn driver_error(e: RuntimeError) -> DriverError {
    match e {
        RuntimeError::NotFound(id) => DriverError::NotFound(id),
        RuntimeError::Missing(m) => DriverError::Missing(m),
        RuntimeError::InvalidArgument(m) => DriverError::InvalidArgument(m),
        other => DriverError::io("sandbox runtime", std::io::Error::other(other.to_string())),
    }
}

/// Every ancestor of `dir` must be searchable by others: sandbox users (an
/// unprivileged host uid) open the template layers through this path.
fn check_traversable(dir: &Path) -> Result<(), DriverError> {
    for d in dir.ancestors().filter(|d| !d.as_os_str().is_empty()) {
        let Ok(meta) = std::fs::metadata(d) else { continue };
        if meta.permissions().mode() & 0o001 == 0 {
            return Err(DriverError::InvalidArgument(format!(
                "{} is not searchable by other users (mode {:o}), so sandboxes cannot reach {}; \
                 pick a --runtime-dir outside it (default /var/lib/corral)",
                d.display(),
                meta.permissions().mode() & 0o777,
                dir.display()
            )));
        }
    }
    Ok(())
}

impl NativeDriver {
    /// Starts the runtime (and its spawner) and prepares the `base` template.
    pub async fn new(config: NativeConfig) -> Result<Self, DriverError> {
        std::fs::create_dir_all(&config.runtime_dir)
            .map_err(|e| DriverError::io(format!("create {}", config.runtime_dir.display()), e))?;
        std::fs::set_permissions(&config.runtime_dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| DriverError::io(format!("chmod {}", config.runtime_dir.display()), e))?;
        check_traversable(&config.runtime_dir)?;
        let cache = config.runtime_dir.join("cache");
        let base = tokio::task::spawn_blocking(move || corral_runtime::base_template(&cache))
            .await
            .map_err(|e| DriverError::io("build base template", std::io::Error::other(e)))?
            .map_err(driver_error)?;
        let mut rc = RuntimeConfig::new(config.runtime_dir.join("state"));
        rc.cgroup_parent = config.cgroup_parent.clone();
        rc.spawner_exe = config.spawner_exe.clone();
        let rt = Runtime::new(rc).await.map_err(driver_error)?;
        Ok(NativeDriver { rt, base, config })
    }

    fn templates_dir(&self) -> PathBuf {
        self.config.templates_dir.clone().unwrap_or_else(|| self.config.runtime_dir.join("templates"))
    }

    /// The sandbox config for a spec's template: `base`, or a ready built or
    /// imported one on this host, with the image's env and working directory.
    fn sandbox_config(&self, id: &str, name: &str) -> Result<SandboxConfig, DriverError> {
        if name == self.base.name {
            return Ok(self.base.sandbox_config(id));
        }
        let missing = || DriverError::InvalidArgument(format!("template {name:?} is not ready on this host"));
        let store = corral_template::TemplateStore::open(self.templates_dir()).map_err(|_| missing())?;
        let t = store.get(name).ok().filter(|t| t.is_ready()).ok_or_else(missing)?;
        let image = Template { name: name.to_string(), layers: vec![t.rootfs()], binds: Vec::new() };
        let mut cfg = image.sandbox_config(id);
        cfg.env = t.meta.config.env.iter().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect();
        if let Some(cwd) = t.meta.config.cwd.filter(|c| c.starts_with('/')) {
            cfg.workdir = cwd;
        }
        Ok(cfg)
    }

    fn exit_watch(&self, id: &str) -> Started {
        let (rt, id) = (self.rt.clone(), id.to_string());
        Started {
            exited: Box::pin(async move {
                match rt.wait(&id).await {
                    Ok(info) => describe(info),
                    Err(e) => Exit::plain(format!("lost track of the sandbox init: {e}")),
                }
            }),
        }
    }
}

fn runtime_exec(req: ExecSpec) -> corral_runtime::ExecSpec {
    corral_runtime::ExecSpec {
        argv: req.argv,
        env: req.env,
        cwd: req.cwd,
        stdin: req.stdin,
        timeout: Some(req.timeout),
        ..Default::default()
    }
}

fn describe(info: ExitInfo) -> Exit {
    let message = match (info.oom_killed, info.code, info.signal) {
        (true, _, _) => "killed by the out-of-memory killer".to_string(),
        (_, Some(code), _) => format!("init exited with status {code}"),
        (_, _, Some(sig)) => format!("init killed by signal {sig}"),
        _ => "init ended".to_string(),
    };
    Exit { message, oom_killed: info.oom_killed }
}

impl Driver for NativeDriver {
    fn name(&self) -> &'static str {
        "native"
    }

    fn start<'a>(&'a self, id: &'a str, spec: &'a SandboxSpec) -> BoxFuture<'a, Result<Started, DriverError>> {
        Box::pin(async move {
            let mut cfg = self.sandbox_config(id, &spec.template)?;
            cfg.cpu_millis = spec.cpu_millis;
            cfg.memory_mb = spec.memory_mb;
            cfg.pids_max = self.config.pids_max;
            cfg.disk_mb = self.config.disk_mb;
            // The request's env wins over the image's.
            cfg.env.extend(spec.env.clone());
            self.rt.create(cfg).await.map_err(driver_error)?;
            Ok(self.exit_watch(id))
        })
    }

    fn discover(&self) -> BoxFuture<'_, Result<Vec<Discovered>, DriverError>> {
        Box::pin(async move {
            let ids = self.rt.list().await.map_err(driver_error)?;
            Ok(ids
                .into_iter()
                .filter_map(|id| {
                    let pid = self.rt.init_pid(&id).ok()?;
                    Some(Discovered { sandbox_id: id, pid, keeper: true })
                })
                .collect())
        })
    }

    fn adopt(&self, id: &str, _found: &Discovered) -> Result<Started, DriverError> {
        // The runtime re-attached to the init when it started; watch its end.
        self.rt.init_pid(id).map_err(driver_error)?;
        Ok(self.exit_watch(id))
    }

    fn kill_stray(&self, found: &Discovered) {
        tracing::warn!(sandbox_id = %found.sandbox_id, "destroying a sandbox nothing knows about");
        let (rt, id) = (self.rt.clone(), found.sandbox_id.clone());
        tokio::spawn(async move {
            if let Err(e) = rt.destroy(&id).await {
                tracing::warn!(sandbox_id = %id, "destroy: {e}");
            }
        });
    }

    fn stop<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move { self.rt.destroy(id).await.map_err(driver_error) })
    }

    fn remove(&self, _id: &str) -> Result<(), DriverError> {
        // `stop` (destroy) already removed everything the sandbox had.
        Ok(())
    }

    fn exec<'a>(
        &'a self,
        id: &'a str,
        _spec: &'a SandboxSpec,
        req: ExecSpec,
    ) -> BoxFuture<'a, Result<ExecOutput, DriverError>> {
        Box::pin(async move {
            let out = self.rt.exec_buffered(id, runtime_exec(req)).await.map_err(driver_error)?;
            Ok(ExecOutput {
                exit_code: out.exit_code,
                stdout: out.stdout,
                stderr: out.stderr,
                duration: out.duration,
                timed_out: out.timed_out,
            })
        })
    }

    fn exec_stream<'a>(
        &'a self,
        id: &'a str,
        _spec: &'a SandboxSpec,
        req: ExecSpec,
    ) -> BoxFuture<'a, Result<ExecChunks, DriverError>> {
        Box::pin(async move {
            let mut stream = self.rt.exec(id, runtime_exec(req)).await.map_err(driver_error)?;
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            tokio::spawn(async move {
                loop {
                    let chunk = match stream.next().await {
                        Ok(Some(ExecEvent::Stdout(b))) => ExecChunk::Stdout(b),
                        Ok(Some(ExecEvent::Stderr(b))) => ExecChunk::Stderr(b),
                        Ok(Some(ExecEvent::Exit(x))) => ExecChunk::Exit(ExecOutput {
                            exit_code: x.exit_code,
                            timed_out: x.timed_out,
                            duration: std::time::Duration::from_millis(x.duration_ms),
                            ..Default::default()
                        }),
                        Ok(None) => return,
                        Err(e) => {
                            let _ = tx.send(Err(driver_error(e))).await;
                            return;
                        }
                    };
                    // The receiver is gone: dropping `stream` kills the command.
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
            });
            Ok(rx)
        })
    }

    fn read_file<'a>(&'a self, id: &'a str, path: &'a str) -> BoxFuture<'a, Result<Vec<u8>, DriverError>> {
        Box::pin(async move { self.rt.read_file(id, path).await.map_err(driver_error) })
    }

    fn write_file<'a>(
        &'a self,
        id: &'a str,
        path: &'a str,
        content: Vec<u8>,
        mode: u32,
    ) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move {
            let mode = if mode == 0 { 0o644 } else { mode };
            self.rt.write_file(id, path, &content, mode).await.map_err(driver_error)
        })
    }
}

/// Templates this host can run: `base` plus every ready one in `templates_dir`.
pub fn local_templates(templates_dir: &Path) -> Vec<String> {
    let mut names = vec!["base".to_string()];
    let ready = corral_template::TemplateStore::open(templates_dir).and_then(|s| s.list()).unwrap_or_default();
    names.extend(ready.into_iter().filter(|t| t.is_ready() && t.meta.name != "base").map(|t| t.meta.name));
    names
}
