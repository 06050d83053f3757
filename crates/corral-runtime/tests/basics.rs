//! Create, exec (streaming, stdin, env, cwd, timeout, users), files, limits,
//! wait, destroy, adoption by a new runtime, and the base template's tools.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{fixture, text};
use corral_runtime::{ExecEvent, ExecSpec, Priority, Runtime, RuntimeError};

#[tokio::test]
async fn create_exec_destroy() {
    let Some(f) = fixture("basic").await else {
        return;
    };
    let id = f.create("sb-basic").await;
    let out = f
        .sh(&id, "echo hello; echo oops >&2; hostname; id -u; exit 3")
        .await;
    assert_eq!(out.exit_code, 3, "{out:?}");
    assert_eq!(text(&out.stdout), "hello\nsb-basic\n0\n");
    assert_eq!(text(&out.stderr), "oops\n");
    assert_eq!(f.rt.list().await.unwrap(), vec![id.clone()]);
    f.rt.destroy(&id).await.unwrap();
    f.rt.destroy(&id).await.unwrap(); // idempotent
    assert!(f.rt.list().await.unwrap().is_empty());
    let gone = f.rt.exec_buffered(&id, ExecSpec::new(["/bin/true"])).await;
    assert!(matches!(gone, Err(RuntimeError::NotFound(_))), "{gone:?}");
}

#[tokio::test]
async fn bad_requests_are_refused() {
    let Some(f) = fixture("badreq").await else {
        return;
    };
    for bad in ["", "a/b", "../x", ".hidden", "has space"] {
        let r = f.rt.create(f.config(bad)).await;
        assert!(
            matches!(r, Err(RuntimeError::InvalidArgument(_))),
            "{bad}: {r:?}"
        );
    }
    let id = f.create("sb-dup").await;
    assert!(matches!(
        f.rt.create(f.config(&id)).await,
        Err(RuntimeError::AlreadyExists(_))
    ));
    let missing =
        f.rt.exec_buffered(&id, ExecSpec::new(["/no/such/program"]))
            .await;
    assert!(
        matches!(missing, Err(RuntimeError::Missing(_))),
        "{missing:?}"
    );
    let empty = f.rt.exec_buffered(&id, ExecSpec::default()).await;
    assert!(
        matches!(empty, Err(RuntimeError::InvalidArgument(_))),
        "{empty:?}"
    );
    let mut layer = f.config("sb-badlayer");
    layer.rootfs = vec!["/nonexistent/layer".into()];
    let r = f.rt.create(layer).await;
    assert!(matches!(r, Err(RuntimeError::Setup(_))), "{r:?}");
    assert_eq!(f.rt.list().await.unwrap(), vec![id]); // the failed one left nothing
    assert!(!f.cfg.state_dir.join("sb-badlayer").exists());
}

#[tokio::test]
async fn exec_streams_stdin_env_cwd_and_users() {
    let Some(f) = fixture("stream").await else {
        return;
    };
    let mut cfg = f.config("sb-stream");
    cfg.env = BTreeMap::from([
        ("FROM_SANDBOX".into(), "a".into()),
        ("OVERRIDE".into(), "sandbox".into()),
    ]);
    cfg.workdir = "/work/dir".into();
    f.rt.create(cfg).await.unwrap();
    let id = "sb-stream";

    // Streaming: the first chunk arrives while the command still waits for
    // us (it ends only once we create /tmp/go after reading that chunk).
    let script = "echo first; while [ ! -e /tmp/go ]; do sleep 0.02; done; echo second >&2";
    let mut spec = ExecSpec::new(["/bin/sh", "-c", script]);
    spec.timeout = Some(Duration::from_secs(20));
    let mut stream = f.rt.exec(id, spec).await.unwrap();
    assert_eq!(
        stream.next().await.unwrap(),
        Some(ExecEvent::Stdout(b"first\n".to_vec()))
    );
    f.rt.write_file(id, "/tmp/go", b"", 0).await.unwrap();
    assert_eq!(
        stream.next().await.unwrap(),
        Some(ExecEvent::Stderr(b"second\n".to_vec()))
    );
    match stream.next().await.unwrap() {
        Some(ExecEvent::Exit(x)) => assert_eq!((x.exit_code, x.timed_out), (0, false)),
        other => panic!("{other:?}"),
    }
    assert_eq!(stream.next().await.unwrap(), None);

    // stdin, env layering, cwd (default = workdir, relative = under it).
    let mut spec = ExecSpec::new([
        "/bin/sh",
        "-c",
        "cat; echo $FROM_SANDBOX $OVERRIDE $FROM_EXEC; pwd",
    ]);
    spec.stdin = b"piped\n".to_vec();
    spec.env = BTreeMap::from([
        ("OVERRIDE".into(), "exec".into()),
        ("FROM_EXEC".into(), "b".into()),
    ]);
    let out = f.rt.exec_buffered(id, spec).await.unwrap();
    assert_eq!(text(&out.stdout), "piped\na exec b\n/work/dir\n");
    let mut spec = ExecSpec::new(["/bin/pwd"]);
    spec.cwd = "/tmp".into();
    assert_eq!(
        text(&f.rt.exec_buffered(id, spec).await.unwrap().stdout),
        "/tmp\n"
    );

    // Big output survives intact; endless output is capped, not hoarded.
    let out = f.sh(id, "head -c 3000000 /dev/zero | tr '\\0' x").await;
    assert_eq!((out.stdout.len(), out.truncated), (3_000_000, false));
    let cap = corral_runtime::MAX_BUFFERED_OUTPUT;
    let out = f
        .sh(
            id,
            &format!("head -c {} /dev/zero; echo done >&2", cap + 1000),
        )
        .await;
    assert_eq!(
        (out.stdout.len(), out.truncated, out.stderr.as_slice()),
        (cap, true, &b"done\n"[..])
    );

    // Another user, and a signal exit code.
    let mut spec = ExecSpec::new(["/bin/sh", "-c", "id -u; id -g; kill -TERM $$"]);
    spec.uid = Some(1000);
    let out = f.rt.exec_buffered(id, spec).await.unwrap();
    assert_eq!(
        (text(&out.stdout).as_str(), out.exit_code),
        ("1000\n1000\n", 128 + 15)
    );
}

#[tokio::test]
async fn exec_timeout_kills_the_process_group() {
    let Some(f) = fixture("timeout").await else {
        return;
    };
    let id = f.create("sb-timeout").await;
    let mut spec = ExecSpec::new(["/bin/sh", "-c", "sleep 100 & sleep 100; echo never"]);
    spec.timeout = Some(Duration::from_millis(300));
    let t0 = std::time::Instant::now();
    let out = f.rt.exec_buffered(&id, spec).await.unwrap();
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.exit_code, 128 + 9);
    assert!(t0.elapsed() < Duration::from_secs(5));
    // The background sleep of the group died too.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ps = f.sh(&id, "cat /proc/[0-9]*/comm").await;
    assert!(!text(&ps.stdout).contains("sleep"), "{ps:?}");
}

#[tokio::test]
async fn dropping_an_exec_stream_kills_the_command() {
    let Some(f) = fixture("dropexec").await else {
        return;
    };
    let id = f.create("sb-dropexec").await;
    let stream =
        f.rt.exec(&id, ExecSpec::new(["/bin/sh", "-c", "exec sleep 100"]))
            .await
            .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(text(&f.sh(&id, "cat /proc/[0-9]*/comm").await.stdout).contains("sleep"));
    drop(stream);
    let mut gone = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if !text(&f.sh(&id, "cat /proc/[0-9]*/comm").await.stdout).contains("sleep") {
            gone = true;
            break;
        }
    }
    assert!(gone, "the abandoned command kept running");
}

#[tokio::test]
async fn files_put_and_get() {
    let Some(f) = fixture("files").await else {
        return;
    };
    let id = f.create("sb-files").await;
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    f.rt.write_file(&id, "/data/deep/blob.bin", &data, 0o600)
        .await
        .unwrap();
    assert_eq!(
        f.rt.read_file(&id, "/data/deep/blob.bin").await.unwrap(),
        data
    );
    let out = f
        .sh(
            &id,
            "stat -c %a /data/deep/blob.bin; md5sum < /data/deep/blob.bin | cut -c1-8",
        )
        .await;
    assert!(text(&out.stdout).starts_with("600\n"), "{out:?}");
    // Relative paths are under the workdir; written files are visible to execs.
    f.rt.write_file(&id, "rel.txt", b"hi", 0).await.unwrap();
    assert_eq!(
        text(
            &f.sh(&id, "cat /root/rel.txt; stat -c %a /root/rel.txt")
                .await
                .stdout
        ),
        "hi644\n"
    );
    // Errors: missing file, non-regular files, kernel filesystems.
    assert!(matches!(
        f.rt.read_file(&id, "/nope").await,
        Err(RuntimeError::Missing(_))
    ));
    f.sh(&id, "mkfifo /tmp/fifo; ln -s /proc/1/environ /tmp/env")
        .await;
    for p in [
        "/tmp/fifo",
        "/tmp/env",
        "/proc/self/mem",
        "/dev/null",
        "/tmp",
    ] {
        assert!(
            f.rt.read_file(&id, p).await.is_err(),
            "{p} must not be served"
        );
    }
    assert!(f
        .rt
        .write_file(&id, "/proc/sys/kernel/hostname", b"x", 0)
        .await
        .is_err());
}

#[tokio::test]
async fn base_template_runs_python_and_node() {
    let Some(f) = fixture("tools").await else {
        return;
    };
    let id = f.create("sb-tools").await;
    let py = f.run(&id, &["/usr/bin/python3", "-c", "print(1)"]).await;
    assert_eq!(
        (py.exit_code, text(&py.stdout).as_str()),
        (0, "1\n"),
        "{py:?}"
    );
    let node = f.run(&id, &["/usr/bin/node", "-v"]).await;
    assert_eq!(node.exit_code, 0, "{node:?}");
    assert!(text(&node.stdout).starts_with('v'), "{node:?}");
}

#[tokio::test]
async fn limits_are_written_and_read_back() {
    let Some(f) = fixture("limits").await else {
        return;
    };
    let mut cfg = f.config("sb-limits");
    (cfg.cpu_millis, cfg.memory_mb, cfg.pids_max) = (250, 96, 42);
    f.rt.create(cfg).await.unwrap();
    let l = f.rt.limits("sb-limits").unwrap();
    assert_eq!(l.memory_bytes, Some(96 << 20));
    assert_eq!(l.pids_max, Some(42));
    assert_eq!(l.cpu_quota, Some((25_000, 100_000)));
    if let Some(sw) = l.memory_swap_bytes {
        assert_eq!(sw, 96 << 20);
    }
    let stats = f.rt.stats("sb-limits").unwrap();
    assert!(stats.pids >= 1 && stats.memory_bytes > 0, "{stats:?}");
    // The init is in the sandbox's cgroup; inside, the cgroup namespace hides the path.
    let pid = f.rt.init_pid("sb-limits").unwrap();
    let host_view = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        host_view.contains(&format!("{}/sb-limits", f.cfg.cgroup_parent)),
        "{host_view}"
    );
    let inside = f.sh("sb-limits", "cat /proc/self/cgroup").await;
    assert!(
        !text(&inside.stdout).contains(&f.cfg.cgroup_parent),
        "{inside:?}"
    );
    // The writable layer is a tmpfs of disk_mb (64 MiB here).
    let out = f.sh("sb-limits", "head -c 80M /dev/zero > /root/big; echo rc=$?; head -c 8M /dev/zero > /root/small && echo small-ok").await;
    let t = text(&out.stdout) + &text(&out.stderr);
    assert!(t.contains("No space left") && t.contains("rc=1"), "{out:?}");
}

#[tokio::test]
async fn wait_reports_the_end_and_sigterm_stops_the_sandbox() {
    let Some(f) = fixture("wait").await else {
        return;
    };
    let id = f.create("sb-wait").await;
    let pid = f.rt.init_pid(&id).unwrap();
    let waiter = {
        let rt = f.rt.clone();
        let id = id.clone();
        tokio::spawn(async move { rt.wait(&id).await })
    };
    f.sh(&id, "sleep 100 >/dev/null 2>&1 &").await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM).unwrap();
    let info = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((info.code, info.oom_killed), (Some(0), false), "{info:?}");
    f.rt.destroy(&id).await.unwrap();
}

#[tokio::test]
async fn a_new_runtime_adopts_running_sandboxes() {
    let Some(f) = fixture("adopt").await else {
        return;
    };
    let id = f.create("sb-adopt").await;
    f.sh(&id, "echo kept > /root/state").await;
    let pid = f.rt.init_pid(&id).unwrap();
    // A second runtime on the same state dir (as after a dataplane restart).
    let rt2 = Runtime::new(f.cfg.clone()).await.unwrap();
    assert_eq!(rt2.list().await.unwrap(), vec![id.clone()]);
    assert_eq!(rt2.init_pid(&id).unwrap(), pid);
    let out = rt2
        .exec_buffered(&id, ExecSpec::new(["/bin/cat", "/root/state"]))
        .await
        .unwrap();
    assert_eq!(text(&out.stdout), "kept\n");
    let waiter = {
        let rt2 = rt2.clone();
        let id = id.clone();
        tokio::spawn(async move { rt2.wait(&id).await })
    };
    rt2.destroy(&id).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .is_ok());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/status")).exists() || {
            let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            s.contains("State:\tZ")
        }
    );
    assert!(!f.cfg.state_dir.join(&id).exists());
}

#[tokio::test]
async fn sandboxes_survive_the_spawner_and_a_new_one_is_started() {
    let Some(f) = fixture("spawner").await else {
        return;
    };
    let id = f.create("sb-orphan").await;
    let old = f.rt.spawner_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiter = {
        let rt = f.rt.clone();
        let id = id.clone();
        tokio::spawn(async move { rt.wait(&id).await })
    };
    assert_eq!(f.sh(&id, "echo alive").await.stdout, b"alive\n");
    assert!(
        !waiter.is_finished(),
        "the sandbox must not be reported dead"
    );
    let other = f.create("sb-after").await; // a fresh spawner starts
    assert_ne!(f.rt.spawner_pid(), Some(old));
    assert_eq!(f.sh(&other, "echo ok").await.stdout, b"ok\n");
    f.rt.destroy(&id).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Template layers are id-mapped: files the host root owns belong to the
/// sandbox root, so it can edit them (copy-up) and enter 0700 dirs, while
/// the template on the host stays untouched.
#[tokio::test]
async fn template_files_belong_to_the_sandbox_root() {
    use std::os::unix::fs::PermissionsExt;
    let Some(f) = fixture("idmap").await else {
        return;
    };
    let top = f.dir.path().join("top-layer");
    std::fs::create_dir_all(top.join("private")).unwrap();
    std::fs::set_permissions(top.join("private"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(top.join("private/data"), "layer\n").unwrap();
    let mut cfg = f.config("sb-idmap");
    cfg.rootfs.insert(0, top.clone());
    f.rt.create(cfg).await.unwrap();
    let out = f
        .sh(
            "sb-idmap",
            "stat -c '%u %g' /etc/passwd /private/data; echo extra >> /etc/passwd && echo passwd-ok; \
             cat /private/data; echo more > /private/new && echo private-ok",
        )
        .await;
    assert_eq!(
        text(&out.stdout),
        "0 0\n0 0\npasswd-ok\nlayer\nprivate-ok\n",
        "{out:?}"
    );
    assert!(!top.join("private/new").exists());
    let passwd = std::fs::read_to_string(f.template.layers[0].join("etc/passwd")).unwrap();
    assert!(!passwd.contains("extra"));
}

/// What a warm-pool claim does to a ready sandbox: new limits, new hostname.
#[tokio::test]
async fn a_claim_rebinds_limits_and_hostname() {
    let Some(f) = fixture("claim").await else {
        return;
    };
    let id = f.create("sb-pooled").await;
    f.rt.update_limits(&id, 500, 128).unwrap();
    let l = f.rt.limits(&id).unwrap();
    assert_eq!(
        (l.memory_bytes, l.cpu_quota),
        (Some(128 << 20), Some((50_000, 100_000)))
    );
    assert_eq!(l.pids_max, Some(128), "the task limit stays");
    f.rt.set_hostname(&id, "tenant-sandbox").unwrap();
    assert_eq!(f.sh(&id, "hostname").await.stdout, b"tenant-sandbox\n");
    assert!(f.rt.set_hostname(&id, "").is_err());
}

/// What a command inherits from the init that it must not: blocked or
/// ignored signals (Rust ignores SIGPIPE), the init's OOM immunity, its
/// session.
#[tokio::test]
async fn commands_start_with_default_signals_their_own_session_and_oom_score() {
    let Some(f) = fixture("inherit").await else {
        return;
    };
    let id = f.create("sb-inherit").await;
    let out = f
        .run(
            &id,
            &["/bin/grep", "-E", "^(SigBlk|SigIgn)", "/proc/self/status"],
        )
        .await;
    assert_eq!(
        text(&out.stdout),
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n",
        "{out:?}"
    );
    let out = f.run(&id, &["/bin/cat", "/proc/self/oom_score_adj"]).await;
    assert_eq!(text(&out.stdout), "0\n");
    // A session leader: its session id is its own pid.
    let out = f.sh(&id, "echo $$; cut -d' ' -f6 /proc/$$/stat").await;
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines[0], lines[1], "{out:?}");
}

/// The niceness of a host process (field 19 of `/proc/PID/stat`).
fn nice_of(pid: u32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = stat.rsplit_once(')').unwrap().1;
    after_comm
        .split_whitespace()
        .nth(16)
        .unwrap()
        .parse()
        .unwrap()
}

/// A pool member is made at idle priority (its own niced spawner, the
/// lowest cgroup CPU weight) and works at normal priority once claimed.
#[tokio::test]
async fn a_background_sandbox_is_idle_priority_until_claimed() {
    let Some(f) = fixture("prio").await else {
        return;
    };
    let normal = f.create("sb-normal").await;
    assert_eq!(f.rt.background_spawner_pid(), None, "started on demand");
    let mut cfg = f.config("sb-member");
    cfg.priority = Priority::Background;
    let info = f.rt.create(cfg).await.unwrap();
    let (spawner, background) = (
        f.rt.spawner_pid().unwrap(),
        f.rt.background_spawner_pid().unwrap(),
    );
    assert_ne!(spawner, background);
    assert_eq!((nice_of(spawner), nice_of(background)), (0, 19));
    assert_eq!(
        nice_of(info.pid as u32),
        19,
        "the init inherits the spawner's niceness"
    );
    let exec_nice = "cut -d' ' -f19 /proc/self/stat";
    assert_eq!(text(&f.sh(&info.id, exec_nice).await.stdout), "19\n");
    let weight = |id: &str| f.rt.limits(id).unwrap().cpu_weight;
    // v1 cpu.shares / v2 cpu.weight; hosts without a cpu controller have neither.
    if let Some(w) = weight(&normal) {
        assert!(matches!(w, 100 | 1024), "default weight, got {w}");
        assert!(matches!(weight(&info.id), Some(1 | 2)), "idle weight");
    }
    f.rt.update_limits(&info.id, 500, 128).unwrap();
    assert_eq!(nice_of(info.pid as u32), 0);
    assert_eq!(text(&f.sh(&info.id, exec_nice).await.stdout), "0\n");
    assert_eq!(weight(&info.id), weight(&normal), "claimed: normal weight");
}

/// Orphans are reparented to the init, which reaps them: no zombie stays.
#[tokio::test]
async fn the_init_reaps_orphans() {
    let Some(f) = fixture("reap").await else {
        return;
    };
    let id = f.create("sb-reap").await;
    // Each shell leaves a short-lived orphan behind.
    for _ in 0..5 {
        f.sh(&id, "(sleep 0.1 &) ; exit 0").await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let out = f
        .sh(&id, "grep -l '^State:.*Z' /proc/[0-9]*/status; echo end")
        .await;
    assert_eq!(text(&out.stdout), "end\n", "zombies left: {out:?}");
    let out = f.sh(&id, "cat /proc/[0-9]*/comm").await;
    assert!(!text(&out.stdout).contains("sleep"), "{out:?}");
}
