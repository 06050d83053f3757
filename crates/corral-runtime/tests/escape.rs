//! The escape suite: hostile programs run inside a sandbox and each attempt
//! must stay contained. Every test cleans up through the fixture's Drop guard.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{fixture, text};
use corral_runtime::{ExecSpec, SANDBOX_CAPS};

/// Python prelude: `sc(nr, *args)` returns 0 or the errno of a raw syscall.
const SYSCALL_PY: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sc(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return 0 if r >= 0 else ctypes.get_errno()
"#;

/// Parses `name=value` lines.
fn kv(out: &[u8]) -> BTreeMap<String, String> {
    text(out)
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

#[tokio::test]
async fn host_files_are_out_of_reach() {
    let Some(f) = fixture("esc-files").await else {
        return;
    };
    let id = f.create("sb-files").await;
    // A secret on the host, next to the sandbox's own state, and in /root.
    let secret = f.dir.path().join("host-secret");
    std::fs::write(&secret, "TOPSECRET").unwrap();
    let root_marker = format!("/root/corral-escape-{}", std::process::id());
    std::fs::write(&root_marker, "TOPSECRET").unwrap();
    let script = format!(
        r#"
import os
def readable(p):
    try:
        open(p, 'rb').read(); return 'yes'
    except OSError as e: return type(e).__name__
print('shadow=' + readable('/etc/shadow'))
print('secret=' + readable({secret:?}))
print('marker=' + readable({root_marker:?}))
print('root_listing=' + ','.join(sorted(os.listdir('/root'))))
print('via_proc_root=' + readable('/proc/1/root' + {secret:?}))
print('dotdot=' + readable('/../../../../etc/shadow'))
print('state_dir=' + str(os.path.exists({state:?})))
hits = []
for top in ['/etc', '/root', '/home', '/var', '/tmp', '/run', '/mnt', '/opt', '/srv']:
    for d, _, files in os.walk(top):
        hits += [f for f in files if 'TOPSECRET' in f or f == 'init.sock' or f.startswith('corral-escape')]
print('found=' + ','.join(hits))
"#,
        state = f.cfg.state_dir.display().to_string()
    );
    let out = f.py(&id, &script).await;
    std::fs::remove_file(&root_marker).unwrap();
    let r = kv(&out.stdout);
    assert_eq!(r["shadow"], "FileNotFoundError", "{out:?}");
    assert_eq!(r["secret"], "FileNotFoundError");
    assert_eq!(r["marker"], "FileNotFoundError");
    assert_eq!(r["root_listing"], "");
    assert_eq!(r["via_proc_root"], "PermissionError");
    assert_eq!(r["dotdot"], "FileNotFoundError");
    assert_eq!(r["state_dir"], "False");
    assert_eq!(r["found"], "");
}

/// Everything under a dir as (path, size, mode), to detect any change.
fn snapshot(dir: &std::path::Path) -> Vec<(String, u64, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            out.push((e.path().display().to_string(), m.len(), m.mode()));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn the_template_and_host_usr_stay_unchanged() {
    let Some(f) = fixture("esc-template").await else {
        return;
    };
    let layer = f.template.layers[0].clone();
    let before = snapshot(&layer);
    let passwd = std::fs::read(layer.join("etc/passwd")).unwrap();
    let id = f.create("sb-tmpl").await;
    let out = f
        .sh(
            &id,
            "echo evil >> /etc/passwd; echo evil > /etc/new; rm -f /etc/nsswitch.conf; mkdir /newdir; \
             touch /.corral-template; rm -rf /home; \
             rm -f /usr/bin/python3 2>&1; touch /usr/evil 2>&1; echo x > /bin/evil 2>&1; \
             mount -o remount,rw /usr 2>&1; true",
        )
        .await;
    let msg = text(&out.stdout);
    assert!(
        msg.contains("Read-only file system") || msg.contains("Permission denied"),
        "{out:?}"
    );
    assert_eq!(snapshot(&layer), before, "the template changed");
    assert_eq!(std::fs::read(layer.join("etc/passwd")).unwrap(), passwd);
    assert!(std::path::Path::new("/usr/bin/python3").exists());
    assert!(!std::path::Path::new("/usr/evil").exists());
    // A second sandbox of the same template sees none of the first one's changes.
    let other = f.create("sb-tmpl2").await;
    let out = f
        .sh(
            &other,
            "ls /etc/new /newdir 2>&1; test -d /home && echo home-ok; grep -c evil /etc/passwd",
        )
        .await;
    let t = text(&out.stdout);
    assert!(
        t.contains("home-ok") && t.contains("No such file") && t.ends_with("0\n"),
        "{out:?}"
    );
}

#[tokio::test]
async fn host_processes_are_invisible_and_unsignalable() {
    let Some(f) = fixture("esc-procs").await else {
        return;
    };
    let id = f.create("sb-procs").await;
    let me = std::process::id();
    let script = format!(
        r#"
import os, signal
pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
print('max_pid=%d' % max(pids))
print('count=%d' % len(pids))
try:
    os.kill({me}, signal.SIGKILL); print('kill=sent')
except OSError as e: print('kill=' + type(e).__name__)
try:
    os.kill(1, signal.SIGKILL); print('kill_init=sent')
except OSError as e: print('kill_init=' + type(e).__name__)
print('init_comm=' + open('/proc/1/comm').read().strip())
"#
    );
    let out = f.py(&id, &script).await;
    let r = kv(&out.stdout);
    assert!(r["count"].parse::<u32>().unwrap() <= 3, "{out:?}");
    assert!(r["max_pid"].parse::<u32>().unwrap() < 50, "{out:?}");
    if me > 50 {
        assert_eq!(r["kill"], "ProcessLookupError");
    }
    // SIGKILL from inside to PID 1 is ignored by the kernel; the sandbox lives on.
    assert!(f.sh(&id, "echo alive").await.stdout.starts_with(b"alive"));
}

#[tokio::test]
async fn dangerous_syscalls_are_denied() {
    let Some(f) = fixture("esc-syscalls").await else {
        return;
    };
    let id = f.create("sb-sys").await;
    let calls: &[(&str, libc::c_long, &[i64])] = &[
        ("keyctl", libc::SYS_keyctl, &[0]),
        ("add_key", libc::SYS_add_key, &[0, 0, 0, 0, 0]),
        ("request_key", libc::SYS_request_key, &[0, 0, 0, 0]),
        ("bpf", libc::SYS_bpf, &[0, 0, 0]),
        (
            "perf_event_open",
            libc::SYS_perf_event_open,
            &[0, 0, -1, -1, 0],
        ),
        ("init_module", libc::SYS_init_module, &[0, 0, 0]),
        ("finit_module", libc::SYS_finit_module, &[0, 0, 0]),
        ("delete_module", libc::SYS_delete_module, &[0, 0]),
        ("kexec_load", libc::SYS_kexec_load, &[0, 0, 0, 0]),
        ("userfaultfd", libc::SYS_userfaultfd, &[0]),
        ("mount", libc::SYS_mount, &[0, 0, 0, 0, 0]),
        ("umount2", libc::SYS_umount2, &[0, 0]),
        ("pivot_root", libc::SYS_pivot_root, &[0, 0]),
        ("fsopen", libc::SYS_fsopen, &[0, 0]),
        ("open_tree", libc::SYS_open_tree, &[-100, 0, 0]),
        ("move_mount", libc::SYS_move_mount, &[0, 0, 0, 0, 0]),
        (
            "unshare_user",
            libc::SYS_unshare,
            &[libc::CLONE_NEWUSER as i64],
        ),
        (
            "unshare_net",
            libc::SYS_unshare,
            &[libc::CLONE_NEWNET as i64],
        ),
        (
            "unshare_mnt",
            libc::SYS_unshare,
            &[libc::CLONE_NEWNS as i64],
        ),
        (
            "clone_newuser",
            libc::SYS_clone,
            &[(libc::CLONE_NEWUSER | libc::SIGCHLD) as i64, 0, 0, 0, 0],
        ),
        ("setns", libc::SYS_setns, &[0, 0]),
        ("ptrace", libc::SYS_ptrace, &[0, 0, 0, 0]),
        (
            "process_vm_readv",
            libc::SYS_process_vm_readv,
            &[1, 0, 0, 0, 0, 0],
        ),
        ("reboot", libc::SYS_reboot, &[0, 0, 0, 0]),
        ("swapon", libc::SYS_swapon, &[0, 0]),
        ("acct", libc::SYS_acct, &[0]),
        ("open_by_handle_at", libc::SYS_open_by_handle_at, &[0, 0, 0]),
        ("io_uring_setup", libc::SYS_io_uring_setup, &[1, 0]),
        ("personality", libc::SYS_personality, &[0x0040000]),
        ("syslog", libc::SYS_syslog, &[3, 0, 0]),
    ];
    let mut script = SYSCALL_PY.to_string();
    for (name, nr, args) in calls {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        script.push_str(&format!(
            "print('{name}=%d' % sc({nr}, {}))\n",
            args.join(", ")
        ));
    }
    script.push_str(&format!(
        "print('clone3=%d' % sc({}, 0, 0))\n",
        libc::SYS_clone3
    ));
    script.push_str(&format!("print('getpid=%d' % sc({}))\n", libc::SYS_getpid));
    #[cfg(target_arch = "x86_64")]
    script.push_str(&format!(
        "print('x32_getpid=%d' % sc({}))\n",
        0x4000_0000 | libc::SYS_getpid
    ));
    script.push_str(&format!(
        "print('personality_query=%d' % sc({}, 0xffffffff))\n",
        libc::SYS_personality
    ));
    let out = f.py(&id, &script).await;
    let r = kv(&out.stdout);
    for (name, _, _) in calls {
        assert_eq!(
            r.get(*name).map(String::as_str),
            Some("1"),
            "{name} must fail with EPERM: {out:?}"
        );
    }
    assert_eq!(r["clone3"], libc::ENOSYS.to_string());
    assert_eq!(r["getpid"], "0", "allowed syscalls still work");
    assert_eq!(r["personality_query"], "0");
    #[cfg(target_arch = "x86_64")]
    assert_eq!(r["x32_getpid"], "1");
}

#[tokio::test]
async fn no_privileges_beyond_the_minimal_set() {
    let Some(f) = fixture("esc-caps").await else {
        return;
    };
    let id = f.create("sb-caps").await;
    let status = f.sh(&id, "cat /proc/self/status").await;
    let eff = corral_runtime::parse_cap_eff(&text(&status.stdout)).unwrap();
    let allowed: u64 = SANDBOX_CAPS.iter().map(|c| 1u64 << c).sum();
    assert_eq!(eff & !allowed, 0, "unexpected capabilities {eff:#x}");
    let t = text(&status.stdout);
    assert!(
        t.contains("NoNewPrivs:\t1") && t.contains("Seccomp:\t2"),
        "{t}"
    );
    let core = f
        .sh(
            &id,
            "ulimit -c; ulimit -c unlimited 2>/dev/null && echo raised || echo capped",
        )
        .await;
    assert_eq!(
        text(&core.stdout),
        "0\ncapped\n",
        "no core dumps from sandboxes"
    );
    // The init's memory, environment and fds are off limits.
    let out = f
        .sh(
            &id,
            "cat /proc/1/environ; cat /proc/1/mem; ls /proc/1/fd; echo done",
        )
        .await;
    assert_eq!(text(&out.stdout), "done\n", "{out:?}");
    // Sandbox root is an unprivileged host uid, different per sandbox.
    let other = f.create("sb-caps2").await;
    let map_a = text(&f.sh(&id, "cat /proc/self/uid_map").await.stdout);
    let map_b = text(&f.sh(&other, "cat /proc/self/uid_map").await.stdout);
    let host_a: u32 = map_a.split_whitespace().nth(1).unwrap().parse().unwrap();
    let host_b: u32 = map_b.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        host_a >= 100_000 && host_b >= 100_000 && host_a.abs_diff(host_b) >= 65_536,
        "{map_a} {map_b}"
    );
    let pid = f.rt.init_pid(&id).unwrap();
    let host_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        host_status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains(&host_a.to_string())),
        "{host_status}"
    );
}

#[tokio::test]
async fn mount_mknod_sys_and_cgroup_writes_fail() {
    let Some(f) = fixture("esc-mount").await else {
        return;
    };
    let id = f.create("sb-mount").await;
    let script = "\
        mount -t tmpfs none /mnt 2>/dev/null && echo mount=ok || echo mount=denied
        umount /proc 2>/dev/null && echo umount=ok || echo umount=denied
        mknod /tmp/sda b 8 0 2>/dev/null && echo mknod=ok || echo mknod=denied
        mknod /tmp/mem c 1 1 2>/dev/null && echo mknod_c=ok || echo mknod_c=denied
        echo 1 > /sys/kernel/mm/ksm/run 2>/dev/null && echo sys=ok || echo sys=denied
        echo x > /proc/sys/kernel/hostname 2>/dev/null && echo procsys=ok || echo procsys=denied
        echo b > /proc/sysrq-trigger 2>/dev/null && echo sysrq=ok || echo sysrq=denied
        echo cgroups=$(ls /sys/fs/cgroup | wc -l)
        mount -t cgroup2 none /mnt 2>/dev/null && echo cgmount=ok || echo cgmount=denied
        echo 1 > /proc/self/cgroup 2>/dev/null && echo cgwrite=ok || echo cgwrite=denied
        echo kcore=$(head -c 16 /proc/kcore | wc -c)
        echo keys=$(cat /proc/keys | wc -c)
        hostname evil 2>/dev/null && echo hostname=ok || echo hostname=denied
    ";
    let out = f.sh(&id, script).await;
    let r = kv(&out.stdout);
    for k in [
        "mount", "umount", "mknod", "mknod_c", "sys", "procsys", "sysrq", "cgmount", "cgwrite",
        "hostname",
    ] {
        assert_eq!(r.get(k).map(String::as_str), Some("denied"), "{k}: {out:?}");
    }
    assert_eq!(r["cgroups"], "0", "no cgroup filesystem inside");
    assert_eq!(r["kcore"], "0");
    assert_eq!(r["keys"], "0");
    // The host's cgroup limits are untouched.
    assert_eq!(f.rt.limits(&id).unwrap().pids_max, Some(128));
}

#[tokio::test]
async fn raw_sockets_and_foreign_networks_are_unreachable() {
    let Some(f) = fixture("esc-net").await else {
        return;
    };
    let a = f.create("sb-net-a").await;
    let b = f.create("sb-net-b").await;
    // A service on the host's loopback, and an abstract unix socket on the host.
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    let abstract_name = format!("corral-test-{}", std::process::id());
    let _abs = bind_abstract(&abstract_name);
    // A service inside sandbox B on the same port number.
    f.sh(
        &b,
        &format!("/usr/bin/python3 -m http.server {port} --bind 127.0.0.1 >/dev/null 2>&1 &"),
    )
    .await;
    let probe = |tries: u32| {
        format!(
            r#"
import socket, time
def tcp(port):
    for _ in range({tries}):
        try:
            s = socket.create_connection(('127.0.0.1', port), timeout=1); s.close(); return 'connected'
        except ConnectionRefusedError: time.sleep(0.05)
        except OSError as e: return type(e).__name__
    return 'refused'
def sock(fam, typ, proto=0):
    try:
        socket.socket(fam, typ, proto).close(); return 'ok'
    except OSError as e: return type(e).__name__
print('tcp=' + tcp({port}))
print('packet=' + sock(17, socket.SOCK_RAW))
print('vsock=' + sock(40, socket.SOCK_STREAM))
print('raw_icmp=' + sock(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
print('raw_icmp6=' + sock(socket.AF_INET6, socket.SOCK_RAW, 58))
print('netlink=' + sock(socket.AF_NETLINK, socket.SOCK_RAW, 0))
try:
    u = socket.socket(socket.AF_UNIX); u.connect('\0{abstract_name}'); print('abstract=connected')
except OSError as e: print('abstract=' + type(e).__name__)
import os
print('ifaces=' + ','.join(sorted(os.listdir('/sys/class/net'))))
"#
        )
    };
    // Sanity first: B reaches its own server (given time to start), so A's
    // refusal below means isolation, not a server that is not up yet.
    let out_b = f.py(&b, &probe(200)).await;
    assert_eq!(kv(&out_b.stdout)["tcp"], "connected", "{out_b:?}");
    let out_a = f.py(&a, &probe(5)).await;
    let ra = kv(&out_a.stdout);
    assert_eq!(
        ra["tcp"], "refused",
        "host loopback or sandbox B reached: {out_a:?}"
    );
    assert_eq!(ra["packet"], "PermissionError");
    assert_eq!(
        ra["vsock"], "PermissionError",
        "vsock would reach the VM host"
    );
    assert_eq!(ra["raw_icmp"], "PermissionError");
    assert_eq!(ra["raw_icmp6"], "PermissionError");
    assert_eq!(ra["netlink"], "ok", "netlink route sockets stay usable");
    assert_eq!(ra["abstract"], "ConnectionRefusedError");
    assert_eq!(ra["ifaces"], "lo");
    drop(host);
}

fn bind_abstract(name: &str) -> std::os::unix::net::UnixListener {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    std::os::unix::net::UnixListener::bind_addr(&addr).unwrap()
}

#[tokio::test]
async fn setuid_does_not_escalate() {
    let Some(f) = fixture("esc-setuid").await else {
        return;
    };
    let id = f.create("sb-suid").await;
    f.sh(&id, "cp /usr/bin/id /root/suid-id; chmod 4755 /root/suid-id; chmod 755 /root; cp /usr/bin/id /tmp/suid-id; chmod 4755 /tmp/suid-id").await;
    let mut spec = ExecSpec::new([
        "/bin/sh",
        "-c",
        "/root/suid-id -u; /tmp/suid-id -u; /usr/bin/su -c 'id -u' root </dev/null 2>/dev/null || echo su-failed; \
         /usr/bin/python3 -S -c 'import os\ntry:\n os.setuid(0); print(0)\nexcept OSError: print(\"setuid-denied\")'; \
         grep CapEff /proc/self/status",
    ]);
    spec.uid = Some(1000);
    spec.timeout = Some(Duration::from_secs(20));
    let out = f.rt.exec_buffered(&id, spec).await.unwrap();
    assert_eq!(
        text(&out.stdout),
        "1000\n1000\nsu-failed\nsetuid-denied\nCapEff:\t0000000000000000\n",
        "{out:?}"
    );
}

/// Sandbox A fork-bombs into its pids limit; sandbox B and the host carry on.
#[tokio::test]
async fn a_fork_bomb_hits_only_its_own_pids_limit() {
    let Some(f) = fixture("esc-forkbomb").await else {
        return;
    };
    let mut cfg = f.config("sb-bomb");
    cfg.pids_max = 64;
    f.rt.create(cfg).await.unwrap();
    let b = f.create("sb-bystander").await;
    let mut spec = ExecSpec::new(["/bin/sh", "-c", "f(){ f | f & }; f; sleep 3"]);
    spec.timeout = Some(Duration::from_secs(2));
    let bomb = {
        let rt = f.rt.clone();
        tokio::spawn(async move { rt.exec_buffered("sb-bomb", spec).await })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stats = f.rt.stats("sb-bomb").unwrap();
    assert!(stats.pids <= 64, "{stats:?}");
    // Bystander sandbox and the host still fork.
    let out = f
        .sh(&b, "for i in 1 2 3 4 5; do /bin/true; done; echo fine")
        .await;
    assert_eq!(text(&out.stdout), "fine\n");
    assert!(std::process::Command::new("/bin/true")
        .status()
        .unwrap()
        .success());
    let _ = bomb.await.unwrap();
    assert!(f.rt.stats("sb-bomb").unwrap().pids_limit_hits > 0);
    f.rt.destroy("sb-bomb").await.unwrap();
    assert_eq!(f.sh(&b, "echo still").await.stdout, b"still\n");
}

/// Sandbox A allocates past its memory limit: only its hog dies, and the
/// sandbox's end is reported as an OOM kill.
#[tokio::test]
async fn a_memory_hog_is_oom_killed_in_its_own_sandbox() {
    let Some(f) = fixture("esc-oom").await else {
        return;
    };
    let mut cfg = f.config("sb-hog");
    cfg.memory_mb = 64;
    f.rt.create(cfg).await.unwrap();
    let b = f.create("sb-calm").await;
    let out = f
        .run(
            "sb-hog",
            &[
                "/usr/bin/python3",
                "-S",
                "-c",
                "x = b'\\x01' * (400 << 20); print('survived')",
            ],
        )
        .await;
    assert_eq!(out.exit_code, 128 + 9, "{out:?}");
    assert!(f.rt.stats("sb-hog").unwrap().oom_kills >= 1);
    // The init survived its sandbox's OOM and still serves.
    assert_eq!(f.sh("sb-hog", "echo up").await.stdout, b"up\n");
    assert_eq!(f.sh(&b, "echo calm").await.stdout, b"calm\n");
    assert_eq!(f.rt.stats(&b).unwrap().oom_kills, 0);
    let waiter = {
        let rt = f.rt.clone();
        tokio::spawn(async move { rt.wait("sb-hog").await })
    };
    f.rt.destroy("sb-hog").await.unwrap();
    let info = waiter.await.unwrap().unwrap();
    assert!(info.oom_killed, "{info:?}");
}

#[tokio::test]
async fn landlock_limits_writes_to_the_listed_paths() {
    let Some(f) = fixture("esc-landlock").await else {
        return;
    };
    let mut cfg = f.config("sb-landlock");
    cfg.landlock_writable = Some(vec!["/tmp".into()]);
    f.rt.create(cfg).await.unwrap();
    let out = f
        .sh(
            "sb-landlock",
            "echo a > /tmp/ok && echo tmp=ok; echo b > /root/f 2>/dev/null && echo root=ok || echo root=denied; \
             mkdir /data 2>/dev/null && echo mkdir=ok || echo mkdir=denied; echo c > /dev/null && echo devnull=ok; \
             cat /etc/hosts >/dev/null && echo read=ok",
        )
        .await;
    let r = kv(&out.stdout);
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) only returns the ABI version.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    if abi < 1 {
        eprintln!("SKIP landlock assertions: Landlock is not enabled on this kernel");
        return;
    }
    assert_eq!(
        (
            r["tmp"].as_str(),
            r["root"].as_str(),
            r["mkdir"].as_str(),
            r["devnull"].as_str(),
            r["read"].as_str()
        ),
        ("ok", "denied", "denied", "ok", "ok"),
        "{out:?}"
    );
    // The init is not restricted: the runtime can still write anywhere.
    f.rt.write_file("sb-landlock", "/root/by-runtime", b"x", 0)
        .await
        .unwrap();
}
