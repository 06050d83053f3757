//! One module per command family.

pub mod bench;
mod check;
mod fleet;
pub mod nat_args;
mod pool;
mod sandbox;
mod serve;
mod template;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Up(args) => serve::up(args).await,
        Command::Server(args) => match args.command {
            Some(crate::cli::ServerSubcommand::Check(a)) => check::run(a),
            None => serve::server(args.run).await,
        },
        Command::Dataplane(args) => serve::dataplane(args).await,
        Command::Sandbox(cmd) => sandbox::run(cmd).await,
        Command::Pool(cmd) => pool::run(cmd).await,
        Command::Host(crate::cli::ListOnly::Ls(a)) => fleet::hosts(a.client).await,
        Command::Template(cmd) => template::run(cmd).await,
        Command::Bench(cmd) => bench::run(cmd).await,
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Splits `KEY=VALUE` arguments.
pub fn parse_pairs(items: &[String], what: &str) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow::anyhow!("{what} {kv:?} must be KEY=VALUE"))
        })
        .collect()
}
