//! The native driver: every sandbox is a `corral-runtime` sandbox — its own
//! user, pid, mount, net, uts, ipc and cgroup namespaces, cgroup limits, an
//! overlay of the template over a size-limited private layer, seccomp,
//! `no_new_privs`, and an init as PID 1 that serves exec and files.
//!
//! Inits outlive the dataplane on purpose: a restarted dataplane's runtime
//! re-attaches to them, and [`Driver::discover`] reports them for adoption.
//!
//! Warm pools: [`Driver::prewarm`] creates a runtime sandbox under a member
//! id (`wp-…`), marked by `<runtime_dir>/pool/<member>` (holding the
//! template), and health-checks it (`/bin/true` runs). [`Driver::claim`]
//! writes the request's cpu/memory limits into its cgroup, sets the sandbox
//! id as hostname, and appends `sandbox id → member id` to
//! `<runtime_dir>/claims.log` (the runtime id never changes; the marker stays
//! until the sandbox stops, and "unclaimed" means marked and not in the log).
//! Every call naming a sandbox id translates through that mapping, which is
//! reloaded at start, so adoption after a restart works the same.
//! The spec's env is layered under each exec's own env (the init's env is
//! the image's, fixed at pre-create).

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use corral_core::SandboxSpec;
use super::claims::ClaimLog;
use corral_runtime::{
    ExecEvent, ExitInfo, NatConfig, NetworkMode, Runtime, RuntimeConfig, RuntimeError, SandboxConfig, Template,
};

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
    /// The `nat` network mode (`None`: off; `nat` sandboxes fail to start
    /// and the host reports no network slot, so the server sends none).
    pub nat: Option<NatConfig>,
}

impl NativeConfig {
    /// Where templates are found: the setting, else `<runtime_dir>/templates`.
    pub fn templates_dir(&self) -> PathBuf {
        self.templates_dir.clone().unwrap_or_else(|| self.runtime_dir.join("templates"))
    }

    pub fn new(runtime_dir: impl Into<PathBuf>) -> Self {
        NativeConfig {
            runtime_dir: runtime_dir.into(),
            templates_dir: None,
            cgroup_parent: "corral".into(),
            pids_max: 1024,
            disk_mb: 1024,
            spawner_exe: None,
            nat: None,
        }
    }
}

pub struct NativeDriver {
    rt: Runtime,
    base: Template,
    config: NativeConfig,
    /// Claimed pool members: sandbox id → runtime id.
    claims: parking_lot::Mutex<HashMap<String, String>>,
    claim_log: ClaimLog,
    member_seq: AtomicU64,
}

/// Limits of an unclaimed pool member (the claim applies the request's).
const MEMBER_CPU_MILLIS: u32 = 1000;
const MEMBER_MEMORY_MB: u32 = 256;
/// Runtime ids of pool members start with this.
const MEMBER_PREFIX: &str = "wp-";

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
        rc.nat = config.nat.clone();
        let rt = Runtime::new(rc).await.map_err(driver_error)?;
        let pool_dir = config.runtime_dir.join("pool");
        std::fs::create_dir_all(&pool_dir).map_err(|e| DriverError::io(format!("create {}", pool_dir.display()), e))?;
        let log_path = config.runtime_dir.join("claims.log");
        let (claim_log, claims) =
            ClaimLog::open(&log_path).map_err(|e| DriverError::io(format!("open {}", log_path.display()), e))?;
        Ok(NativeDriver {
            rt,
            base,
            config,
            claims: parking_lot::Mutex::new(claims),
            claim_log,
            member_seq: AtomicU64::new(0),
        })
    }

    /// The underlying runtime (stats, limits; for tests and benchmarks).
    pub fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// The runtime id behind a sandbox id (itself unless it was a claim).
    fn rt_id(&self, id: &str) -> String {
        self.claims.lock().get(id).cloned().unwrap_or_else(|| id.to_string())
    }

    fn pool_marker(&self, member: &str) -> PathBuf {
        self.config.runtime_dir.join("pool").join(member)
    }

    /// Forgets a claim mapping (the sandbox is gone).
    fn drop_claim(&self, sandbox_id: &str) {
        if self.claims.lock().remove(sandbox_id).is_some() {
            if let Err(e) = self.claim_log.released(sandbox_id) {
                tracing::warn!(%sandbox_id, "cannot record the release in {}: {e}", self.claim_log.path().display());
            }
        }
    }

    async fn health_check(&self, member: &str) -> Result<(), DriverError> {
        let spec = corral_runtime::ExecSpec {
            argv: vec!["/bin/true".into()],
            timeout: Some(std::time::Duration::from_secs(10)),
            ..Default::default()
        };
        match self.rt.exec_buffered(member, spec).await {
            Ok(out) if out.exit_code == 0 => Ok(()),
            Ok(out) => Err(DriverError::InvalidArgument(format!(
                "pool health check: /bin/true exited {} ({})",
                out.exit_code,
                String::from_utf8_lossy(&out.stderr).trim()
            ))),
            // No /bin/true in the image: the init answering is the check.
            Err(RuntimeError::Missing(_)) => Ok(()),
            Err(e) => Err(driver_error(e)),
        }
    }

    /// The sandbox config for a spec's template: `base`, or a ready built or
    /// imported one on this host, with the image's env and working directory.
    fn sandbox_config(&self, id: &str, name: &str) -> Result<SandboxConfig, DriverError> {
        if name == self.base.name {
            return Ok(self.base.sandbox_config(id));
        }
        let missing = || DriverError::InvalidArgument(format!("template {name:?} is not ready on this host"));
        let store = corral_template::TemplateStore::open(self.config.templates_dir()).map_err(|_| missing())?;
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

/// The exec as the runtime takes it: the spec's env under the request's
/// (a claimed pool member's init only has the image env).
fn runtime_exec(spec: &SandboxSpec, req: ExecSpec) -> corral_runtime::ExecSpec {
    let mut env = spec.env.clone();
    env.extend(req.env);
    corral_runtime::ExecSpec {
        argv: req.argv,
        env,
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
            cfg.network = match spec.network {
                corral_core::NetworkMode::Isolated => NetworkMode::Isolated,
                corral_core::NetworkMode::Nat => NetworkMode::Nat,
            };
            self.rt.create(cfg).await.map_err(driver_error)?;
            Ok(self.exit_watch(id))
        })
    }

    fn discover(&self) -> BoxFuture<'_, Result<Vec<Discovered>, DriverError>> {
        Box::pin(async move {
            let ids = self.rt.list().await.map_err(driver_error)?;
            let by_rt: HashMap<String, String> =
                self.claims.lock().iter().map(|(sb, rt)| (rt.clone(), sb.clone())).collect();
            Ok(ids
                .into_iter()
                .filter_map(|id| {
                    let pid = self.rt.init_pid(&id).ok()?;
                    let sandbox_id = match by_rt.get(&id) {
                        Some(sb) => sb.clone(),
                        // Unclaimed members are reported by discover_members.
                        None if self.pool_marker(&id).exists() => return None,
                        None => id,
                    };
                    Some(Discovered { sandbox_id, pid, keeper: true })
                })
                .collect())
        })
    }

    fn was_claimed(&self, id: &str) -> bool {
        self.claims.lock().contains_key(id)
    }

    fn adopt(&self, id: &str, _found: &Discovered) -> Result<Started, DriverError> {
        // The runtime re-attached to the init when it started; watch its end.
        let rt_id = self.rt_id(id);
        self.rt.init_pid(&rt_id).map_err(driver_error)?;
        Ok(self.exit_watch(&rt_id))
    }

    fn kill_stray(&self, found: &Discovered) {
        tracing::warn!(sandbox_id = %found.sandbox_id, "destroying a sandbox nothing knows about");
        let (rt, id) = (self.rt.clone(), self.rt_id(&found.sandbox_id));
        self.drop_claim(&found.sandbox_id);
        tokio::spawn(async move {
            if let Err(e) = rt.destroy(&id).await {
                tracing::warn!(sandbox_id = %id, "destroy: {e}");
            }
        });
    }

    fn stop<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move {
            let rt_id = self.rt_id(id);
            self.rt.destroy(&rt_id).await.map_err(driver_error)?;
            let _ = std::fs::remove_file(self.pool_marker(&rt_id));
            self.drop_claim(id);
            Ok(())
        })
    }

    fn remove(&self, id: &str) -> Result<(), DriverError> {
        // `stop` (destroy) already removed everything the sandbox had; a
        // claim mapping may remain if the stop failed.
        self.drop_claim(id);
        Ok(())
    }

    fn exec<'a>(
        &'a self,
        id: &'a str,
        spec: &'a SandboxSpec,
        req: ExecSpec,
    ) -> BoxFuture<'a, Result<ExecOutput, DriverError>> {
        Box::pin(async move {
            let out = self.rt.exec_buffered(&self.rt_id(id), runtime_exec(spec, req)).await.map_err(driver_error)?;
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
        spec: &'a SandboxSpec,
        req: ExecSpec,
    ) -> BoxFuture<'a, Result<ExecChunks, DriverError>> {
        Box::pin(async move {
            let mut stream = self.rt.exec(&self.rt_id(id), runtime_exec(spec, req)).await.map_err(driver_error)?;
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
        Box::pin(async move { self.rt.read_file(&self.rt_id(id), path).await.map_err(driver_error) })
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
            self.rt.write_file(&self.rt_id(id), path, &content, mode).await.map_err(driver_error)
        })
    }

    fn supports_pools(&self) -> bool {
        true
    }

    fn prewarm<'a>(&'a self, template: &'a str) -> BoxFuture<'a, Result<String, DriverError>> {
        Box::pin(async move {
            let seq = self.member_seq.fetch_add(1, Ordering::Relaxed);
            let member = format!("{MEMBER_PREFIX}{:x}-{seq}", corral_core::time::now_us());
            let mut cfg = self.sandbox_config(&member, template)?;
            cfg.cpu_millis = MEMBER_CPU_MILLIS;
            cfg.memory_mb = MEMBER_MEMORY_MB;
            cfg.pids_max = self.config.pids_max;
            cfg.disk_mb = self.config.disk_mb;
            // Made from CPU that running sandboxes leave idle; the claim
            // (`update_limits`) lifts it to normal priority.
            cfg.priority = corral_runtime::Priority::Background;
            // Marked before it exists, so a crash never leaves an unmarked
            // member that a restart would mistake for a sandbox.
            let marker = self.pool_marker(&member);
            std::fs::write(&marker, template).map_err(|e| DriverError::io(format!("write {}", marker.display()), e))?;
            let made = async {
                self.rt.create(cfg).await.map_err(driver_error)?;
                self.health_check(&member).await
            };
            if let Err(e) = made.await {
                let _ = self.rt.destroy(&member).await;
                let _ = std::fs::remove_file(&marker);
                return Err(e);
            }
            Ok(member)
        })
    }

    fn claim<'a>(
        &'a self,
        member: &'a str,
        sandbox_id: &'a str,
        spec: &'a SandboxSpec,
    ) -> BoxFuture<'a, Result<Started, DriverError>> {
        Box::pin(async move {
            self.rt.update_limits(member, spec.cpu_millis, spec.memory_mb).map_err(driver_error)?;
            self.rt.set_hostname(member, sandbox_id).map_err(driver_error)?;
            // The member's pool marker stays until the sandbox is stopped: a
            // member is unclaimed when it is marked and not in the claim map.
            self.claim_log
                .claimed(sandbox_id, member)
                .map_err(|e| DriverError::io(format!("append to {}", self.claim_log.path().display()), e))?;
            self.claims.lock().insert(sandbox_id.to_string(), member.to_string());
            Ok(self.exit_watch(member))
        })
    }

    fn discard<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move {
            self.rt.destroy(member).await.map_err(driver_error)?;
            let _ = std::fs::remove_file(self.pool_marker(member));
            Ok(())
        })
    }

    fn free_net_slots(&self) -> u32 {
        self.rt.free_net_slots().unwrap_or(0)
    }

    fn on_shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Live nat sandboxes (left for the next dataplane to adopt) keep
            // their way out; with none left the table goes.
            match self.rt.remove_nat_if_unused().await {
                Ok(true) => tracing::info!("removed the nat firewall table"),
                Ok(false) => {}
                Err(e) => tracing::warn!("cannot remove the nat firewall table: {e}"),
            }
        })
    }

    fn discover_members(&self) -> BoxFuture<'_, Result<Vec<String>, DriverError>> {
        Box::pin(async move {
            let ids = self.rt.list().await.map_err(driver_error)?;
            let claimed: std::collections::HashSet<String> = self.claims.lock().values().cloned().collect();
            let mut out: Vec<String> =
                ids.into_iter().filter(|id| !claimed.contains(id) && self.pool_marker(id).exists()).collect();
            // Markers whose create never finished (no runtime sandbox).
            for entry in std::fs::read_dir(self.config.runtime_dir.join("pool")).into_iter().flatten().flatten() {
                if let Some(name) = entry.file_name().to_str() {
                    if !out.iter().any(|o| o == name) && !claimed.contains(name) {
                        out.push(name.to_string());
                    }
                }
            }
            Ok(out)
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
