//! The runtime's handle on its spawner process.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;

use crate::config::RuntimeConfig;
use crate::error::{Result, RuntimeError};
use crate::protocol::{SpawnRequest, SpawnerMessage, SpawnerRequest};
use crate::spawner::SPAWNER_ARG;

/// How an init ended, as its parent (the spawner) saw it.
pub(crate) type InitStatus = (Option<i32>, Option<i32>);

/// A started init: its host pid and the spawner's report of its death.
pub(crate) struct Spawned {
    pub pid: i32,
    pub exit: oneshot::Receiver<InitStatus>,
}

type Pending = HashMap<u64, oneshot::Sender<std::result::Result<Spawned, String>>>;

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    exits: Mutex<HashMap<i32, oneshot::Sender<InitStatus>>>,
    /// Set once the spawner's socket has closed.
    dead: std::sync::atomic::AtomicBool,
}

pub(crate) struct SpawnerClient {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    shared: Arc<Shared>,
    seq: AtomicU64,
    pid: Option<u32>,
}

impl SpawnerClient {
    /// Re-executes the spawner binary (exec right after fork: safe from a
    /// multi-threaded process) with a socketpair end as its stdin and an
    /// empty environment (inits are forked from it, and sandboxes must not
    /// inherit the dataplane's secrets through /proc/1/environ).
    ///
    /// A non-zero `nice` is set on the spawner at once, before any request:
    /// what it clones (namespaces, id maps, cgroup joins) then runs at that
    /// niceness, and so do its inits until reniced.
    pub async fn start(cfg: &RuntimeConfig, nice: i32) -> Result<Self> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| RuntimeError::io("socketpair", e))?;
        let exe = cfg
            .spawner_exe
            .clone()
            .unwrap_or_else(|| "/proc/self/exe".into());
        let child = tokio::process::Command::new(&exe)
            .arg(SPAWNER_ARG)
            .env_clear()
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| RuntimeError::io(format!("start spawner {}", exe.display()), e))?;
        ours.set_nonblocking(true)
            .map_err(|e| RuntimeError::io("spawner socket", e))?;
        let stream = tokio::net::UnixStream::from_std(ours)
            .map_err(|e| RuntimeError::io("spawner socket", e))?;
        let (rd, wr) = stream.into_split();
        let shared = Arc::new(Shared::default());
        tokio::spawn(read_loop(rd, shared.clone()));
        tracing::debug!(pid = ?child.id(), exe = %exe.display(), "spawner started");
        let pid = child.id();
        if let (Some(pid), true) = (pid, nice != 0) {
            set_nice(pid as i32, nice);
        }
        // The tokio child handle reaps the spawner in the background once it exits.
        drop(child);
        Ok(SpawnerClient {
            writer: tokio::sync::Mutex::new(wr),
            shared,
            seq: AtomicU64::new(1),
            pid,
        })
    }

    /// The spawner's host pid.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// False once the spawner has gone away (crashed or killed).
    pub fn is_alive(&self) -> bool {
        !self.shared.dead.load(Ordering::Acquire)
    }

    /// Asks the spawner to start one init; resolves once it is cloned,
    /// mapped and in its cgroups (not once it is ready).
    pub async fn spawn(&self, req: SpawnRequest) -> Result<Spawned> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.pending).insert(seq, tx);
        let mut line = serde_json::to_vec(&SpawnerRequest { seq, spawn: req })
            .map_err(|e| RuntimeError::Spawner(e.to_string()))?;
        line.push(b'\n');
        let write = self.writer.lock().await.write_all(&line).await;
        if let Err(e) = write {
            lock(&self.shared.pending).remove(&seq);
            return Err(RuntimeError::Spawner(format!("spawner gone: {e}")));
        }
        match rx.await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(msg)) => Err(RuntimeError::Setup(msg)),
            Err(_) => Err(RuntimeError::Spawner("spawner exited".into())),
        }
    }
}

/// A spawner that is (re)started when needed: a dead one is replaced at the
/// next spawn (running inits do not depend on it).
pub(crate) struct SpawnerSlot {
    nice: i32,
    client: tokio::sync::RwLock<Option<Arc<SpawnerClient>>>,
}

impl SpawnerSlot {
    /// A slot whose spawner starts with the first spawn.
    pub fn lazy(nice: i32) -> SpawnerSlot {
        SpawnerSlot {
            nice,
            client: tokio::sync::RwLock::new(None),
        }
    }

    /// A slot with its spawner started now (so a broken host fails early).
    pub async fn started(cfg: &RuntimeConfig, nice: i32) -> Result<SpawnerSlot> {
        let client = Arc::new(SpawnerClient::start(cfg, nice).await?);
        Ok(SpawnerSlot {
            nice,
            client: tokio::sync::RwLock::new(Some(client)),
        })
    }

    /// The live spawner, starting one if there is none or it died.
    pub async fn get(&self, cfg: &RuntimeConfig) -> Result<Arc<SpawnerClient>> {
        if let Some(c) = self.client.read().await.as_ref().filter(|c| c.is_alive()) {
            return Ok(c.clone());
        }
        let mut w = self.client.write().await;
        match w.as_ref() {
            Some(c) if c.is_alive() => return Ok(c.clone()),
            Some(_) => tracing::warn!(nice = self.nice, "spawner died; starting a new one"),
            None => {}
        }
        let c = Arc::new(SpawnerClient::start(cfg, self.nice).await?);
        *w = Some(c.clone());
        Ok(c)
    }

    /// The current spawner's host pid, if one runs.
    pub fn pid(&self) -> Option<u32> {
        self.client.try_read().ok()?.as_ref()?.pid()
    }
}

/// Sets the niceness of every thread of process `pid` (best effort: a failure
/// only costs priority, never correctness).
pub(crate) fn set_nice(pid: i32, nice: i32) {
    let tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_else(|_| vec![pid]);
    for tid in tids {
        if let Err(e) = renice(tid, nice) {
            tracing::debug!(pid, tid, nice, error = %e, "setpriority");
        }
    }
}

/// Sets the niceness of one thread (`0`: the calling one).
pub(crate) fn renice(tid: i32, nice: i32) -> std::io::Result<()> {
    // SAFETY: setpriority on a thread id; no memory is involved.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn read_loop(rd: OwnedReadHalf, shared: Arc<Shared>) {
    let mut lines = BufReader::new(rd).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match serde_json::from_str::<SpawnerMessage>(&line) {
            Ok(SpawnerMessage::Spawned { seq, pid, error }) => on_spawned(&shared, seq, pid, error),
            Ok(SpawnerMessage::Exited { pid, code, signal }) => {
                if let Some(tx) = lock(&shared.exits).remove(&pid) {
                    let _ = tx.send((code, signal));
                }
            }
            Err(e) => tracing::warn!(error = %e, "bad message from spawner"),
        }
    }
    tracing::warn!("spawner connection closed");
    shared.dead.store(true, Ordering::Release);
    lock(&shared.pending).clear();
    lock(&shared.exits).clear();
}

fn on_spawned(shared: &Shared, seq: u64, pid: Option<i32>, error: Option<String>) {
    let Some(waiter) = lock(&shared.pending).remove(&seq) else {
        return;
    };
    let res = match pid {
        Some(pid) => {
            // Registered before the caller hears of the pid, so an early death is not missed.
            let (tx, rx) = oneshot::channel();
            lock(&shared.exits).insert(pid, tx);
            Ok(Spawned { pid, exit: rx })
        }
        None => Err(error.unwrap_or_else(|| "spawn failed".into())),
    };
    if let Err(Ok(orphan)) = waiter.send(res) {
        // The create was abandoned: do not leave its init running.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(orphan.pid),
            nix::sys::signal::SIGKILL,
        );
    }
}
