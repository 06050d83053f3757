//! The seccomp filter every sandboxed process runs under, modelled on
//! Docker's default profile but written as a deny list: syscalls that reach
//! kernel surface no sandbox needs (keys, BPF, perf, modules, kexec, mounts,
//! ptrace, namespaces, raw sockets, …) fail with `EPERM`.
//!
//! Two filters are stacked (the kernel applies the strictest answer):
//! 1. a hand-written prelude: kill on a foreign architecture, `EPERM` for the
//!    x32 syscall range (which would alias the numbers below), and `ENOSYS`
//!    for `clone3` (its flags live in memory a filter cannot inspect; libc
//!    then falls back to `clone`, whose flags we can check);
//! 2. the deny list, compiled with `seccompiler`.
//!
//! The init installs both on itself once its own mounts are done; everything
//! it starts inherits them. Both programs are compiled once in the spawner
//! ([`precompile`]) and reach each init through fork's copy of memory.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op,
    SeccompCondition as Cond, SeccompFilter, SeccompRule,
};

static PROGRAMS: OnceLock<Result<(BpfProgram, BpfProgram), String>> = OnceLock::new();

/// Syscalls denied whatever their arguments.
const DENIED: &[libc::c_long] = &[
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_userfaultfd,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pidfd_getfd,
    libc::SYS_kcmp,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_quotactl_fd,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_setns,
    libc::SYS_syslog,
    libc::SYS_lookup_dcookie,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_vhangup,
    libc::SYS_fanotify_init,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_mbind,
    libc::SYS_set_mempolicy,
    libc::SYS_migrate_pages,
    libc::SYS_move_pages,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ustat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_sysfs,
];

/// Namespace bits refused in `clone` and `unshare` flags.
const NS_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    0x80, // CLONE_NEWTIME
];

/// `personality` values that are harmless (Docker's list).
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;

fn cond(arg: u8, op: Op, v: u64) -> Result<Cond, String> {
    Cond::new(arg, Len::Dword, op, v).map_err(|e| e.to_string())
}

fn rule(conds: Vec<Cond>) -> Result<SeccompRule, String> {
    SeccompRule::new(conds).map_err(|e| e.to_string())
}

/// The deny list as seccompiler rules (empty chain = deny unconditionally).
#[allow(clippy::unnecessary_cast)] // `c_long` is not `i64` on every target
fn deny_rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|&nr| (nr as i64, vec![])).collect();
    let ns_bit = |arg: u8| -> Result<Vec<SeccompRule>, String> {
        NS_FLAGS
            .iter()
            .map(|&b| rule(vec![cond(arg, Op::MaskedEq(b), b)?]))
            .collect()
    };
    rules.insert(libc::SYS_unshare as i64, ns_bit(0)?);
    rules.insert(libc::SYS_clone as i64, ns_bit(0)?);
    rules.insert(
        libc::SYS_socket as i64,
        vec![
            rule(vec![cond(0, Op::Eq, libc::AF_PACKET as u64)?])?,
            // vsock is not network-namespaced: in a VM it reaches the hypervisor's services.
            rule(vec![cond(0, Op::Eq, libc::AF_VSOCK as u64)?])?,
            rule(vec![cond(0, Op::Eq, libc::AF_KEY as u64)?])?,
            rule(vec![
                cond(0, Op::Eq, libc::AF_INET as u64)?,
                cond(1, Op::MaskedEq(0xf), libc::SOCK_RAW as u64)?,
            ])?,
            rule(vec![
                cond(0, Op::Eq, libc::AF_INET6 as u64)?,
                cond(1, Op::MaskedEq(0xf), libc::SOCK_RAW as u64)?,
            ])?,
        ],
    );
    rules.insert(
        libc::SYS_ioctl as i64,
        vec![
            rule(vec![cond(1, Op::Eq, TIOCSTI)?])?,
            rule(vec![cond(1, Op::Eq, TIOCLINUX)?])?,
        ],
    );
    let not_allowed: Result<Vec<Cond>, String> =
        PERSONALITIES.iter().map(|&p| cond(0, Op::Ne, p)).collect();
    rules.insert(libc::SYS_personality as i64, vec![rule(not_allowed?)?]);
    Ok(rules)
}

fn target_arch() -> Result<seccompiler::TargetArch, String> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// The prelude: architecture check, x32 range, `clone3` → ENOSYS.
fn prelude() -> BpfProgram {
    const BPF_LD: u16 = 0x00;
    const BPF_W: u16 = 0x00;
    const BPF_ABS: u16 = 0x20;
    const BPF_JMP: u16 = 0x05;
    const BPF_JEQ: u16 = 0x10;
    const BPF_JGE: u16 = 0x30;
    const BPF_K: u16 = 0x00;
    const BPF_RET: u16 = 0x06;
    #[allow(clippy::identity_op)]
    const LD_W_ABS: u16 = BPF_LD | BPF_W | BPF_ABS;
    #[allow(clippy::identity_op)]
    const JEQ_K: u16 = BPF_JMP | BPF_JEQ | BPF_K;
    #[allow(clippy::identity_op)]
    const JGE_K: u16 = BPF_JMP | BPF_JGE | BPF_K;
    #[allow(clippy::identity_op)]
    const RET_K: u16 = BPF_RET | BPF_K;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_KILL: u32 = 0x8000_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 62 | 0x8000_0000 | 0x4000_0000;
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 183 | 0x8000_0000 | 0x4000_0000;
    let x32_floor: u32 = if cfg!(target_arch = "x86_64") {
        0x4000_0000
    } else {
        u32::MAX
    };
    vec![
        stmt(LD_W_ABS, 4), // seccomp_data.arch
        jump(JEQ_K, ARCH, 1, 0),
        stmt(RET_K, RET_KILL),
        stmt(LD_W_ABS, 0), // seccomp_data.nr
        jump(JGE_K, x32_floor, 0, 1),
        stmt(RET_K, RET_ERRNO | libc::EPERM as u32),
        jump(JEQ_K, libc::SYS_clone3 as u32, 0, 1),
        stmt(RET_K, RET_ERRNO | libc::ENOSYS as u32),
        stmt(RET_K, RET_ALLOW),
    ]
}

fn compile() -> Result<(BpfProgram, BpfProgram), String> {
    let filter = SeccompFilter::new(
        deny_rules()?,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        target_arch()?,
    )
    .map_err(|e| e.to_string())?;
    let deny: BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())?;
    Ok((prelude(), deny))
}

/// Compiles the filters once (call in the spawner before forking inits).
pub(crate) fn precompile() {
    let _ = PROGRAMS.get_or_init(compile);
}

/// Sets `no_new_privs` and installs both filters on the calling thread.
pub(crate) fn install() -> Result<(), String> {
    let (prelude, deny) = PROGRAMS
        .get_or_init(compile)
        .as_ref()
        .map_err(|e| format!("compile seccomp filter: {e}"))?;
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!("no_new_privs: {}", std::io::Error::last_os_error()));
    }
    seccompiler::apply_filter(prelude).map_err(|e| format!("install seccomp prelude: {e}"))?;
    seccompiler::apply_filter(deny).map_err(|e| format!("install seccomp filter: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn filter_compiles_within_bpf_limits() {
        let (prelude, deny) = super::compile().unwrap();
        assert!(prelude.len() < 16);
        assert!(deny.len() < 4096);
    }
}
