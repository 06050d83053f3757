//! # corral-runtime — native Linux sandboxes
//!
//! Each sandbox is a process tree in fresh user (own uid/gid range), pid,
//! mount, network (loopback only, or a NAT'd veth: [`NetworkMode`]), uts, ipc and cgroup namespaces, in its own
//! cgroup (cpu, memory, pids limits; v1, v2 or hybrid hosts), on an overlay of
//! read-only template layers with a size-limited private writable layer,
//! under `no_new_privs`, a reduced capability set and a seccomp filter.
//!
//! ```text
//!  Runtime (tokio, multi-threaded) ──json lines──▶ spawner (single-threaded,
//!     │                                            re-exec of this binary)
//!     │                                               │ clone(NEWUSER|NEWPID|…)
//!     └──── frames over <state>/<id>/init.sock ──▶  init = sandbox PID 1
//!                                                     │ fork+exec
//!                                                     ▼ sandboxed commands
//! ```
//!
//! ## Starting the spawner
//! The runtime never forks its own (multi-threaded) process: it re-executes
//! its binary with a marker argument. **Every binary that creates a
//! [`Runtime`] must call [`maybe_run_spawner`] first thing in `main`**,
//! before starting tokio or any thread:
//!
//! ```no_run
//! # #[allow(clippy::needless_doctest_main)]
//! fn main() {
//!     corral_runtime::maybe_run_spawner(); // never returns in the spawner
//!     // ... build the tokio runtime, then Runtime::new(...)
//! }
//! ```
//! Binaries that cannot do that (libtest test binaries) point
//! [`RuntimeConfig::spawner_exe`] at one that does, e.g. this crate's
//! `corral-runtime-helper`.
//!
//! ## Teardown
//! All of a sandbox's mounts live in its own mount namespace and vanish with
//! it; `destroy` kills the init (hence the pid namespace), removes the
//! cgroups and the state dir. Inits outlive the runtime on purpose: a new
//! [`Runtime`] on the same state dir adopts them ([`Runtime::list`]).

mod caps;
mod cgroup;
mod cleanup;
mod client;
mod config;
mod error;
mod idmap;
mod init;
mod landlock;
mod mounts;
mod namespaces;
mod net;
mod protocol;
mod runtime;
mod seccomp;
mod spawner;
mod spawner_client;
mod state;
mod template;

pub use caps::{parse_cap_eff, SANDBOX_CAPS};
pub use cleanup::force_cleanup;
pub use client::{ExecEvent, ExecStream, MAX_BUFFERED_OUTPUT};
pub use config::{
    AppliedLimits, BindMount, ExecExit, ExecOutput, ExecSpec, ExitInfo, Priority, RuntimeConfig,
    SandboxConfig, SandboxInfo, SandboxStats,
};
pub use error::RuntimeError;
pub use idmap::IDS_PER_SANDBOX;
pub use net::{Ipv4Cidr, NatConfig, NetworkMode, SlotAddrs, SANDBOX_LINK};
pub use runtime::Runtime;
pub use spawner::{maybe_run_spawner, SPAWNER_ARG};
pub use template::{base_template, Template};
