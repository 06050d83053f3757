//! `corral up`, `corral server`, `corral dataplane`: the long-running processes.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use corral_dataplane::DataplaneConfig;
use corral_server::state::decide::Policy;
use corral_server::tls::TlsFiles;
use corral_server::{Server, ServerConfig};

use std::sync::Arc;

use corral_dataplane::{Driver, NativeConfig, NativeDriver, ProcessDriver};

use crate::cli::{DataplaneArgs, DriverKind, HostArgs, ServerArgs, UpArgs};

fn server_config(a: &ServerArgs) -> ServerConfig {
    ServerConfig {
        data_dir: a.data_dir.clone(),
        listen: a.listen,
        grpc_listen: a.grpc_listen,
        policy: Policy {
            cpu_overcommit: a.cpu_overcommit,
            memory_overcommit: a.memory_overcommit,
            lease_ms: a.lease_ms,
            host_lost_grace_ms: a.host_lost_grace_ms,
            pending_timeout_ms: a.pending_timeout_ms,
            max_pending: a.max_pending,
            ..Policy::default()
        },
        api_tokens: a.tokens.clone(),
        join_token: a.join_token.clone(),
        rate_limit_per_s: a.rate_limit,
        max_live_per_token: a.max_live_per_token.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        tls: match (&a.tls_cert, &a.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert: cert.clone(), key: key.clone() }),
            _ => None,
        },
        ..ServerConfig::default()
    }
}

fn dataplane_config(server_url: String, data_dir: &Path, h: &HostArgs) -> anyhow::Result<DataplaneConfig> {
    let host_id = h.host_id.clone().unwrap_or_else(corral_dataplane::default_host_id);
    let mut c = DataplaneConfig::new(server_url, host_id, data_dir);
    c.agent_listen = h.agent_listen;
    if let Some(n) = h.start_concurrency {
        c.start_concurrency = n;
    }
    c.stop_sandboxes_on_shutdown = h.stop_sandboxes_on_exit;
    c.pools = h.pools.clone();
    c.pool_wait_ms = h.pool_wait_ms;
    c.max_sandboxes = h.max_sandboxes;
    c.debug_ack_delay_ms = h.debug_ack_delay_ms;
    match (h.driver, h.templates.is_empty()) {
        (DriverKind::Native, true) => c.templates = corral_dataplane::local_templates(&native_config(h).templates_dir()),
        (DriverKind::Native, false) => anyhow::bail!(
            "--templates is for the process and sim drivers; a native host offers the templates in --templates-dir"
        ),
        (_, false) => c.templates = h.templates.clone(),
        (_, true) => {}
    }
    Ok(c)
}

fn native_config(h: &HostArgs) -> NativeConfig {
    NativeConfig {
        templates_dir: h.templates_dir.clone(),
        cgroup_parent: h.cgroup_parent.clone(),
        disk_mb: h.disk_mb,
        pids_max: h.pids_max,
        ..NativeConfig::new(&h.runtime_dir)
    }
}

/// Builds the driver the flags ask for.
async fn driver(h: &HostArgs, data_dir: &Path) -> anyhow::Result<Arc<dyn Driver>> {
    let nat = h.nat.config()?;
    anyhow::ensure!(
        nat.is_none() || h.driver == DriverKind::Native,
        "the nat network mode (--nat, --nat-subnet) needs the native driver"
    );
    Ok(match h.driver {
        DriverKind::Process => Arc::new(ProcessDriver::new(&corral_dataplane::prepare_data_dir(data_dir)?)),
        DriverKind::Sim => Arc::new(corral_dataplane::driver::sim::SimDriver::new(std::time::Duration::ZERO)),
        DriverKind::Native => {
            let d = NativeDriver::new(NativeConfig { nat, ..native_config(h) }).await.context(
                "starting the native sandbox runtime (it needs root; `--driver process` runs without isolation)",
            )?;
            Arc::new(d)
        }
    })
}

/// Runs a dataplane with the driver the flags ask for.
async fn run_dataplane(
    config: DataplaneConfig,
    h: HostArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let driver = driver(&h, &config.data_dir).await?;
    corral_dataplane::run_with_driver(config, driver, shutdown).await.context("dataplane")
}

async fn bind_server(a: &ServerArgs) -> anyhow::Result<Server> {
    let server = Server::bind(server_config(a)).await.context("starting the server")?;
    let (sandboxes, hosts) = server.loaded;
    tracing::info!(
        api = %server.http_addr(), grpc = %server.grpc_addr(), data_dir = %a.data_dir.display(),
        sandboxes, hosts, "server ready"
    );
    Ok(server)
}

pub async fn server(a: ServerArgs) -> anyhow::Result<ExitCode> {
    if (a.tokens.is_empty() || a.join_token.is_none()) && !a.insecure_no_auth {
        anyhow::bail!(
            "corral server needs --token (for API clients) and --join-token (for dataplanes), \
             or --insecure-no-auth to run without authentication"
        );
    }
    if a.insecure_no_auth {
        tracing::warn!("running WITHOUT authentication (--insecure-no-auth)");
    }
    let server = bind_server(&a).await?;
    server.serve(super::shutdown_signal()).await?;
    tracing::info!("server stopped");
    Ok(ExitCode::SUCCESS)
}

pub async fn dataplane(a: DataplaneArgs) -> anyhow::Result<ExitCode> {
    a.host.nat.config()?; // bad --nat-* flags fail before anything starts
    let mut config = dataplane_config(a.server.clone(), &a.data_dir, &a.host)?;
    config.join_token = a.join_token.clone();
    config.server_ca = a.ca.clone();
    // One simulated host given its own id runs like any dataplane.
    let one_named = a.hosts == 1 && a.host.host_id.is_some();
    if a.host.driver == DriverKind::Sim && !one_named {
        let delay = std::time::Duration::from_millis(a.sim_start_ms);
        corral_dataplane::driver::sim::run_hosts(config, a.hosts, delay, super::shutdown_signal())
            .await
            .context("simulated hosts")?;
        return Ok(ExitCode::SUCCESS);
    }
    run_dataplane(config, a.host.clone(), super::shutdown_signal()).await?;
    tracing::info!("dataplane stopped");
    Ok(ExitCode::SUCCESS)
}

/// Where a local client reaches a listener: loopback for a wildcard address
/// (so a TLS certificate for 127.0.0.1 matches what is dialled).
fn dialable(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => (std::net::Ipv4Addr::LOCALHOST, addr.port()).into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => (std::net::Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// `corral up` on loopback is open, like a development agent; with `--auth`
/// or on any other address it requires tokens, generating what is missing.
/// Returns the mode for the banner.
fn up_auth(a: &mut UpArgs) -> anyhow::Result<String> {
    let loopback = a.server.listen.ip().is_loopback() && a.server.grpc_listen.ip().is_loopback();
    if !a.auth && loopback && a.server.tokens.is_empty() {
        return Ok("open: no authentication, loopback only; --auth turns tokens on".into());
    }
    if a.server.tokens.is_empty() {
        let token = corral_core::auth::new_token();
        std::fs::create_dir_all(&a.server.data_dir)?;
        let path = a.server.data_dir.join("api-token");
        std::fs::write(&path, format!("{token}\n"))?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        a.server.tokens.push(token.clone());
        eprintln!("API token (also in {}): export CORRAL_TOKEN={token}", path.display());
    }
    a.server.join_token.get_or_insert_with(corral_core::auth::new_token);
    Ok("API tokens required".into())
}

pub async fn up(mut a: UpArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    a.host.nat.config()?; // bad --nat-* flags fail before anything starts
    let auth_mode = up_auth(&mut a)?;
    let server = bind_server(&a.server).await?;
    let scheme = server.scheme();
    let grpc_url = format!("{scheme}://{}", dialable(server.grpc_addr()));
    let api_url = format!("{scheme}://{}", dialable(server.http_addr()));
    let mut dp_config = dataplane_config(grpc_url, &a.server.data_dir.join("dataplane"), &a.host)?;
    dp_config.join_token = a.server.join_token.clone();
    dp_config.server_ca = a.ca.clone().or_else(|| a.server.tls_cert.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let until_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let serving = tokio::spawn(server.serve(until_stop(stop_rx.clone())));
    let dataplane = tokio::spawn(run_dataplane(dp_config, a.host.clone(), until_stop(stop_rx)));
    let isolation = match a.host.driver {
        DriverKind::Native => "native isolation",
        DriverKind::Process => "process driver: NO isolation, for development",
        DriverKind::Sim => "simulated: starts no process",
    };
    let trust = match a.server.tls_cert.as_ref().map(|cert| a.ca.as_ref().unwrap_or(cert)) {
        Some(ca) => format!(" CORRAL_CA={}", ca.display()),
        None => String::new(),
    };
    eprintln!(
        "corral is up in {:.0?}: API {api_url} ({auth_mode}), a dataplane on this host ({isolation})\n\
         try: CORRAL_URL={api_url}{trust} corral sandbox create --wait",
        started.elapsed()
    );
    super::shutdown_signal().await;
    eprintln!("shutting down…");
    let _ = stop_tx.send(true);
    let dp = dataplane.await.context("dataplane task")?;
    let sv = serving.await.context("server task")?;
    dp?;
    sv.context("server")?;
    Ok(ExitCode::SUCCESS)
}
