//! The init's event loop: a single-threaded tokio runtime (no worker or
//! blocking threads, so forking for exec stays safe) serving one request per
//! connection on the init socket, reaping children and handling SIGTERM.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::LocalSet;

use super::reaper::Reaper;
use crate::protocol::{self, InitConfig, InitReply, InitRequest, Kind};

/// How long the init waits for its children after forwarding SIGTERM.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// What request handlers share.
pub(crate) struct Init {
    /// The sandbox env (under each exec's own env).
    pub env: BTreeMap<String, String>,
    pub workdir: String,
    /// See [`crate::landlock`].
    pub landlock_writable: Option<Vec<String>>,
    pub reaper: Reaper,
    /// Setup phases and their durations in µs.
    pub phases: Vec<(String, u64)>,
}

/// Runs the loop until SIGTERM/SIGINT (or, after a failed setup, until the
/// first request has been told why). Returns the exit code.
pub(crate) fn run(
    listen: OwnedFd,
    cfg: &InitConfig,
    setup: Result<(), String>,
    mut phases: super::Phases,
) -> i32 {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return 3;
    };
    let std_listener = std::os::unix::net::UnixListener::from(listen);
    if std_listener.set_nonblocking(true).is_err() {
        return 3;
    }
    phases.mark("event loop");
    let init = Rc::new(Init {
        env: cfg.env.clone(),
        workdir: cfg.workdir.clone(),
        landlock_writable: cfg.landlock_writable.clone(),
        reaper: Reaper::default(),
        phases: phases.done,
    });
    LocalSet::new().block_on(&rt, async move {
        let Ok(listener) = UnixListener::from_std(std_listener) else {
            return 3;
        };
        match setup {
            Ok(()) => serve(listener, init).await,
            Err(e) => report_failure(listener, e).await,
        }
    })
}

async fn serve(listener: UnixListener, init: Rc<Init>) -> i32 {
    let (Ok(mut chld), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::child()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return 3;
    };
    loop {
        tokio::select! {
            conn = listener.accept() => {
                if let Ok((conn, _)) = conn {
                    tokio::task::spawn_local(handle(conn, init.clone()));
                }
            }
            _ = chld.recv() => { init.reaper.reap(); }
            _ = term.recv() => return shutdown(&init, libc::SIGTERM, &mut chld).await,
            _ = int.recv() => return shutdown(&init, libc::SIGINT, &mut chld).await,
        }
    }
}

/// Forwards `sig` to every other process of the sandbox, waits for them
/// (bounded), then returns; PID 1 exiting kills whatever is left.
async fn shutdown(init: &Init, sig: i32, chld: &mut tokio::signal::unix::Signal) -> i32 {
    // SAFETY: kill(-1) from PID 1 of a pid namespace reaches only that namespace.
    unsafe { libc::kill(-1, sig) };
    let wait_all = async {
        while init.reaper.reap() {
            chld.recv().await;
        }
    };
    let _ = tokio::time::timeout(TERM_GRACE, wait_all).await;
    0
}

/// Setup failed: tell the first client why, then exit non-zero.
async fn report_failure(listener: UnixListener, error: String) -> i32 {
    if let Ok(Ok((mut conn, _))) =
        tokio::time::timeout(Duration::from_secs(30), listener.accept()).await
    {
        let _ = protocol::read_frame(&mut conn).await;
        let reply = InitReply::Error {
            message: error,
            missing: false,
        };
        let _ = protocol::write_json(&mut conn, Kind::Reply, &reply).await;
    }
    1
}

async fn handle(mut conn: UnixStream, init: Rc<Init>) {
    let req = match protocol::read_frame(&mut conn).await {
        Ok(Some((Kind::Request, body))) => protocol::parse::<InitRequest>(&body),
        _ => return,
    };
    let res = match req {
        Ok(InitRequest::Ping) => {
            let pong = InitReply::Pong {
                pid: std::process::id(),
                setup_us: init.phases.clone(),
            };
            protocol::write_json(&mut conn, Kind::Reply, &pong).await
        }
        Ok(InitRequest::Exec(r)) => super::exec::handle(&mut conn, r, &init).await,
        Ok(InitRequest::ReadFile { path }) => super::files::read(&mut conn, &path, &init).await,
        Ok(InitRequest::WriteFile { path, mode }) => {
            super::files::write(&mut conn, &path, mode, &init).await
        }
        Err(e) => {
            let reply = InitReply::Error {
                message: e.to_string(),
                missing: false,
            };
            protocol::write_json(&mut conn, Kind::Reply, &reply).await
        }
    };
    if let Err(e) = res {
        tracing::debug!(error = %e, "init request failed");
    }
}
