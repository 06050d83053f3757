//! 200 create/destroy cycles leave no mount, cgroup, process, socket or dir behind.

mod common;

use std::path::Path;

use common::{fixture, text};

fn mountinfo() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap()
}

/// Host pids whose real uid lies in `[lo, hi)`.
fn pids_with_uid_in(lo: u64, hi: u64) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let uid: u64 = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|u| u.parse().ok())
            .unwrap_or(0);
        if (lo..hi).contains(&uid) {
            out.push(format!("{name}: {}", status.lines().next().unwrap_or("")));
        }
    }
    out
}

/// Children of `ppid` (zombies included).
fn children_of(ppid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        if after.split(' ').nth(1) == Some(&ppid.to_string()) {
            out.push(stat);
        }
    }
    out
}

/// Directories named `name` under the cgroup mounts (ours are unique per test).
fn cgroup_dirs_named(name: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![Path::new("/sys/fs/cgroup").to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                if e.file_name().to_string_lossy() == name {
                    found.push(e.path().display().to_string());
                }
                if d.components().count() < 9 {
                    stack.push(e.path());
                }
            }
        }
    }
    found
}

#[tokio::test]
async fn two_hundred_cycles_leave_nothing_behind() {
    let Some(f) = fixture("teardown").await else {
        return;
    };
    // Other tools may mount things on a shared host meanwhile: look for ours.
    let ours = f.dir.path().display().to_string();
    let count_ours = || mountinfo().lines().filter(|l| l.contains(&ours)).count();
    assert_eq!(count_ours(), 0);
    let spawner = f.rt.spawner_pid().unwrap();
    for round in 0..20 {
        let ids: Vec<String> = (0..10).map(|i| format!("cyc-{round}-{i}")).collect();
        let creates = ids.iter().map(|id| f.rt.create(f.config(id)));
        for r in futures_join(creates).await {
            r.unwrap();
        }
        if round % 5 == 0 {
            // Some sandboxes hold running processes and files when destroyed.
            let out = f
                .sh(
                    &ids[0],
                    "sleep 100 >/dev/null 2>&1 & echo x > /tmp/f; echo ok",
                )
                .await;
            assert_eq!(text(&out.stdout), "ok\n");
        }
        for r in futures_join(ids.iter().map(|id| f.rt.destroy(id))).await {
            r.unwrap();
        }
    }
    assert!(f.rt.list().await.unwrap().is_empty());
    assert_eq!(
        count_ours(),
        0,
        "mounts of the runtime leaked onto the host"
    );
    let state_left: Vec<_> = std::fs::read_dir(&f.cfg.state_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(state_left.is_empty(), "{state_left:?}");
    let unix = std::fs::read_to_string("/proc/net/unix").unwrap();
    assert!(
        !unix.contains(&f.cfg.state_dir.display().to_string()),
        "init sockets left"
    );
    let lo = u64::from(f.cfg.id_base);
    let hi = lo + u64::from(f.cfg.id_slots) * 65_536;
    assert_eq!(
        pids_with_uid_in(lo, hi),
        Vec::<String>::new(),
        "sandbox processes left"
    );
    // The spawner reaped every init (no zombie children).
    let mut kids = children_of(spawner);
    for _ in 0..50 {
        if kids.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        kids = children_of(spawner);
    }
    assert!(kids.is_empty(), "{kids:?}");
    // Only the (empty) parents remain, and destroy_all removes them.
    for dir in cgroup_dirs_named(&f.cfg.cgroup_parent) {
        let subdirs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .collect();
        assert!(subdirs.is_empty(), "{dir} still has {subdirs:?}");
    }
    f.rt.destroy_all().await.unwrap();
    assert_eq!(
        cgroup_dirs_named(&f.cfg.cgroup_parent),
        Vec::<String>::new()
    );
}

/// Runs futures concurrently on the current task.
async fn futures_join<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut outs = Vec::with_capacity(handles.len());
    // Poll all of them together through a JoinSet-like select loop.
    let mut pending: Vec<_> = handles
        .into_iter()
        .enumerate()
        .map(|(i, f)| (i, Some(f)))
        .collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (i, slot) in pending.iter_mut() {
            if let Some(fut) = slot {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        results[*i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    for r in results {
        outs.push(r.expect("every future completed"));
    }
    outs
}
