//! End to end against the real binary: `corral up`, then REST and CLI.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{eventually, Cluster, BIN};
use corral_client::{ClientError, ListFilter};
use corral_core::api::{CreateSandboxRequest, ExecRequest};
use corral_core::{EndReason, SandboxState};

fn exec(cmd: &[&str]) -> ExecRequest {
    ExecRequest { cmd: cmd.iter().map(|s| s.to_string()).collect(), ..Default::default() }
}

async fn wait_state(c: &Cluster, id: &str, state: SandboxState) -> corral_core::Sandbox {
    eventually(Duration::from_secs(20), &format!("{id} to be {state}"), || async {
        c.client.get(id).await.ok().filter(|sb| sb.state == state)
    })
    .await
}

#[tokio::test]
async fn create_exec_files_delete_over_rest() {
    let c = Cluster::up().await;
    let sb = c.client.create(&CreateSandboxRequest::default(), true).await.unwrap();
    assert_eq!(sb.state, SandboxState::Running, "{}", c.logs());
    assert_eq!(sb.host.as_deref(), Some("local"));

    let out = c.client.exec(&sb.id, &exec(&["echo", "hello"])).await.unwrap();
    assert_eq!((out.exit_code, out.stdout.as_str(), out.stderr.as_str()), (0, "hello\n", ""));
    let out = c.client.exec(&sb.id, &exec(&["sh", "-c", "echo oops >&2; exit 3"])).await.unwrap();
    assert_eq!((out.exit_code, out.stderr.as_str()), (3, "oops\n"));
    let with_stdin = ExecRequest { stdin: Some("piped".into()), ..exec(&["cat"]) };
    assert_eq!(c.client.exec(&sb.id, &with_stdin).await.unwrap().stdout, "piped");

    c.client.write_file(&sb.id, "notes/hello.txt", b"from the test".to_vec()).await.unwrap();
    assert_eq!(c.client.read_file(&sb.id, "notes/hello.txt").await.unwrap(), b"from the test");
    let out = c.client.exec(&sb.id, &exec(&["cat", "notes/hello.txt"])).await.unwrap();
    assert_eq!(out.stdout, "from the test");

    let stopping = c.client.delete(&sb.id).await.unwrap();
    assert!(matches!(stopping.state, SandboxState::Stopping | SandboxState::Terminated));
    let done = wait_state(&c, &sb.id, SandboxState::Terminated).await;
    assert_eq!(done.end_reason, Some(EndReason::Deleted));
    let err = c.client.exec(&sb.id, &exec(&["true"])).await.unwrap_err();
    assert_eq!(err.status(), Some(409), "exec on an ended sandbox: {err}");
}

fn cli(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).env("CORRAL_URL", url).output().expect("run corral")
}

#[tokio::test]
async fn the_cli_creates_execs_lists_and_removes() {
    let c = Cluster::up().await;
    let url = c.url();
    let out = cli(&url, &["sandbox", "create", "--wait", "--label", "suite=cli"]);
    assert!(out.status.success(), "create: {}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(corral_core::id::is_sandbox_id(&id), "printed {id:?}");

    let out = cli(&url, &["sandbox", "exec", &id, "--", "echo", "hello"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert_eq!(out.status.code(), Some(0));
    let out = cli(&url, &["sandbox", "exec", &id, "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "the command's exit code is the CLI's");

    let out = cli(&url, &["sandbox", "ls", "--label", "suite=cli", "--json"]);
    let list: Vec<corral_core::Sandbox> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, id);
    let out = cli(&url, &["sandbox", "ls"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));

    let out = cli(&url, &["sandbox", "rm", "--wait", &id]);
    assert!(out.status.success(), "rm: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("terminated (deleted)"));

    let out = cli(&url, &["sandbox", "get", "sb-000000000000ffffffffffffffff"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"), "a clear error for an unknown id");
    let out = cli(&url, &["host", "ls"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("local"));
}

async fn raw(url: &str, method: &str, path: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let client = reqwest::Client::new();
    let resp = client
        .request(method.parse().unwrap(), format!("{url}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let json = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, json)
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let c = Cluster::up().await;
    let url = c.url();
    let before = c.client.list(&ListFilter::default()).await.unwrap().len();
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("POST", "/v1/sandboxes", br#"{"template":"no-such-template"}"#.to_vec(), 404, "unknown_template"),
        ("POST", "/v1/sandboxes", br#"{"memory_mb":-5}"#.to_vec(), 400, "invalid_request"),
        ("POST", "/v1/sandboxes", br#"{"cpu_millis":1000000000000}"#.to_vec(), 400, "invalid_request"),
        ("POST", "/v1/sandboxes", br#"{"cpu_millis":0}"#.to_vec(), 400, "invalid_request"),
        ("POST", "/v1/sandboxes", br#"{"ttl_s":0}"#.to_vec(), 400, "invalid_request"),
        ("POST", "/v1/sandboxes", b"{not json".to_vec(), 400, "invalid_json"),
        ("POST", "/v1/sandboxes", br#"{"memroy_mb":5}"#.to_vec(), 400, "invalid_json"),
        ("POST", "/v1/sandboxes", vec![b' '; 2 * 1024 * 1024], 413, "payload_too_large"),
        ("POST", "/v1/sandboxes?wait=forever", b"{}".to_vec(), 400, "invalid_request"),
        ("POST", "/v1/sandboxes/batch", br#"{"count":0}"#.to_vec(), 400, "invalid_request"),
        ("POST", "/v1/sandboxes/batch", br#"{"count":100000}"#.to_vec(), 400, "invalid_request"),
        ("GET", "/v1/sandboxes/does-not-exist", vec![], 404, "not_found"),
        ("DELETE", "/v1/sandboxes/does-not-exist", vec![], 404, "not_found"),
        ("POST", "/v1/sandboxes/does-not-exist/exec", br#"{"cmd":["true"]}"#.to_vec(), 404, "not_found"),
        ("GET", "/v1/sandboxes?state=sleeping", vec![], 400, "invalid_request"),
        ("GET", "/v1/nothing-here", vec![], 404, "not_found"),
    ];
    for (method, path, body, status, code) in cases {
        let (got, json) = raw(&url, method, path, body).await;
        assert_eq!(got, status, "{method} {path}: {json}");
        assert_eq!(json["error"]["code"], code, "{method} {path}: {json}");
        assert!(json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{method} {path}: {json}");
    }
    let sb = c.client.create(&CreateSandboxRequest::default(), true).await.unwrap();
    let (got, json) = raw(&url, "POST", &format!("/v1/sandboxes/{}/exec", sb.id), br#"{"cmd":[]}"#.to_vec()).await;
    assert_eq!((got, json["error"]["code"].as_str()), (400, Some("invalid_request")));
    let after = c.client.list(&ListFilter::default()).await.unwrap().len();
    assert_eq!(after, before + 1, "only the one valid create added a sandbox");
}

#[tokio::test]
async fn idempotency_keys_ttl_and_batches() {
    let c = Cluster::up().await;
    let req = CreateSandboxRequest { idempotency_key: Some("retry-me".into()), ..Default::default() };
    let a = c.client.create(&req, false).await.unwrap();
    let b = c.client.create(&req, false).await.unwrap();
    assert_eq!(a.id, b.id);
    let other = CreateSandboxRequest { memory_mb: Some(1024), ..req.clone() };
    let err = c.client.create(&other, false).await.unwrap_err();
    assert!(matches!(&err, ClientError::Api { status: 409, code, .. } if code == "idempotency_conflict"), "{err}");

    let short = CreateSandboxRequest { ttl_s: Some(1), ..Default::default() };
    let sb = c.client.create(&short, true).await.unwrap();
    let ended = wait_state(&c, &sb.id, SandboxState::Terminated).await;
    assert_eq!(ended.end_reason, Some(EndReason::TtlExpired));

    let ids = c.client.create_batch(20, &CreateSandboxRequest::default()).await.unwrap();
    assert_eq!(ids.len(), 20);
    for id in &ids {
        wait_state(&c, id, SandboxState::Running).await;
    }
}

#[tokio::test]
async fn the_shared_contract_smoke_passes() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/contract_smoke.py");
    if !script.exists() {
        eprintln!("skipped: {} not found (it lives beside the repository)", script.display());
        return;
    }
    let c = Cluster::up().await;
    let out = Command::new("/usr/bin/python3").arg(&script).arg(c.url()).output().expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("contract ok"), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn up_shuts_down_cleanly_on_sigterm() {
    let mut c = Cluster::up().await;
    let mut up = c.server.take().unwrap();
    assert!(up.terminate(), "corral up exits 0 on SIGTERM:\n{}", up.log_text());
    assert!(!c.client.healthy().await);
}

#[tokio::test]
async fn exec_streams_output_while_the_command_runs() {
    use corral_core::api::ExecStreamEvent;
    let c = Cluster::up().await;
    let sb = c.client.create(&CreateSandboxRequest::default(), true).await.unwrap();
    // The command prints, then waits for a file that the test writes only
    // after it has seen that output: it can only finish if output streams.
    let script = "echo ready; while [ ! -f /tmp/go ]; do sleep 0.02; done; echo done; echo warn >&2; exit 4";
    let mut events = c.client.exec_stream(&sb.id, &exec(&["sh", "-c", script])).await.unwrap();
    let first = events.next().await.unwrap().unwrap();
    assert_eq!(first, ExecStreamEvent::Stdout("ready\n".into()));
    c.client.write_file(&sb.id, "/tmp/go", Vec::new()).await.unwrap();
    let (mut stdout, mut stderr, mut exit) = (String::new(), String::new(), None);
    while let Some(ev) = events.next().await {
        match ev.unwrap() {
            ExecStreamEvent::Stdout(s) => stdout.push_str(&s),
            ExecStreamEvent::Stderr(s) => stderr.push_str(&s),
            ExecStreamEvent::Exit(x) => exit = Some(x),
            ExecStreamEvent::Error(e) => panic!("stream broke: {e:?}"),
        }
    }
    assert_eq!((stdout.as_str(), stderr.as_str()), ("done\n", "warn\n"));
    assert_eq!(exit.map(|x| x.exit_code), Some(4));
}

#[tokio::test]
async fn a_restarted_up_adopts_its_running_sandboxes() {
    let mut c = Cluster::up().await;
    let sb = c.client.create(&CreateSandboxRequest::default(), true).await.unwrap();
    c.client.write_file(&sb.id, "/tmp/state", b"kept".to_vec()).await.unwrap();
    c.server.as_mut().unwrap().kill9();
    let restarted = Cluster::restart_up(&mut c).await;
    assert!(restarted);
    // Until the new dataplane re-registers its agent address, exec is a 503.
    let out = eventually(Duration::from_secs(20), "exec after the restart", || async {
        c.client.exec(&sb.id, &exec(&["cat", "/tmp/state"])).await.ok()
    })
    .await;
    assert_eq!(out.stdout, "kept", "the same sandbox, with its private layer, survived the restart");
    assert_eq!(c.client.get(&sb.id).await.unwrap().state, SandboxState::Running);
}

#[tokio::test]
async fn pool_settings_are_validated_stored_and_listed() {
    use corral_core::api::SetPoolRequest;
    let c = Cluster::up().await;
    let spec = c.client.set_pool("base", &SetPoolRequest { min: 2, max: 20, buffer: 4, ..Default::default() }).await.unwrap();
    assert_eq!((spec.min, spec.max, spec.buffer), (2, 20, 4));
    let bad = c.client.set_pool("base", &SetPoolRequest { min: 30, max: 20, buffer: 0, ..Default::default() }).await.unwrap_err();
    assert_eq!(bad.status(), Some(400), "{bad}");
    let unknown = c.client.set_pool("nope", &SetPoolRequest { min: 0, max: 1, buffer: 0, ..Default::default() }).await.unwrap_err();
    assert_eq!(unknown.status(), Some(404), "{unknown}");
    let pools = c.client.pools().await.unwrap();
    let base = pools.pools.iter().find(|p| p.template == "base").expect("base listed");
    assert_eq!(base.spec.as_ref().map(|s| (s.min, s.max, s.buffer)), Some((2, 20, 4)));
    let out = Command::new(BIN).args(["pool", "ls"]).env("CORRAL_URL", c.url()).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("2/20/4"), "{}", String::from_utf8_lossy(&out.stdout));

    // The CLI sets pre-warm windows; a bad one is refused before any request.
    let cli = |args: &[&str]| Command::new(BIN).args(args).env("CORRAL_URL", c.url()).output().unwrap();
    let out = cli(&["pool", "set", "base", "--min", "2", "--max", "20", "--prewarm", "+0s/+1h=5", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let spec: corral_core::pool::PoolSpec = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(spec.prewarm.len(), 1);
    assert_eq!((spec.prewarm[0].size, spec.prewarm[0].end_ms - spec.prewarm[0].start_ms), (5, 3_600_000));
    let out = cli(&["pool", "set", "base", "--max", "20", "--prewarm", "+1h/+0s=5"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("END is not after START"), "{}", String::from_utf8_lossy(&out.stderr));
    let stored = c.client.pools().await.unwrap();
    let base = stored.pools.iter().find(|p| p.template == "base").and_then(|p| p.spec.clone()).unwrap();
    assert_eq!(base.prewarm, spec.prewarm, "the refused command changed nothing");
}

#[tokio::test]
async fn a_warm_pool_of_50_serves_50_claims_falls_back_to_cold_and_refills() {
    use corral_core::api::SetPoolRequest;
    let c = Cluster::up().await;
    if c.driver != common::Driver::Native {
        eprintln!("skipped: pools need the native driver");
        return;
    }
    c.client.set_pool("base", &SetPoolRequest { min: 50, max: 50, buffer: 0, ..Default::default() }).await.unwrap();
    let ready = || async {
        let pools = c.client.pools().await.ok()?;
        pools.pools.into_iter().find(|p| p.template == "base").map(|p| p.ready)
    };
    eventually(Duration::from_secs(120), "50 ready in the pool", || async { (ready().await? >= 50).then_some(()) }).await;

    // 60 creates at once: the 50 ready members are claimed, and the rest
    // start cold (user starts go before any refill), all of them running.
    let ids = c.client.create_batch(60, &CreateSandboxRequest::default()).await.unwrap();
    let all = eventually(Duration::from_secs(120), "60 sandboxes running", || async {
        let mut all = Vec::new();
        for id in &ids {
            let sb = c.client.get(id).await.ok()?;
            assert!(!sb.state.is_terminal(), "{sb:?}");
            if sb.state != SandboxState::Running {
                return None;
            }
            all.push(sb);
        }
        Some(all)
    })
    .await;
    let n = |path: &str| all.iter().filter(|sb| sb.start_path.as_deref() == Some(path)).count();
    let (warm, wait, cold) = (n("warm"), n("wait"), n("cold"));
    assert!(warm >= 50 && cold >= 1 && warm + wait + cold == 60, "warm {warm}, wait {wait}, cold {cold}");
    for sb in all.iter().step_by(7) {
        let out = c.client.exec(&sb.id, &exec(&["hostname"])).await.unwrap();
        assert_eq!(out.stdout.trim(), sb.id, "a claimed sandbox carries its own id");
    }

    // A released sandbox is destroyed, never handed to the next tenant.
    let first = &all[0].id;
    c.client.write_file(first, "/tmp/mark", b"tenant one".to_vec()).await.unwrap();
    c.client.delete(first).await.unwrap();
    eventually(Duration::from_secs(120), "the pool to refill", || async { (ready().await? >= 50).then_some(()) }).await;
    for _ in 0..3 {
        let next = c.client.create(&CreateSandboxRequest::default(), true).await.unwrap();
        assert_eq!(next.start_path.as_deref(), Some("warm"));
        assert!(c.client.read_file(&next.id, "/tmp/mark").await.is_err(), "{} sees the last tenant's file", next.id);
    }
    let metrics = c.client.metrics().await.unwrap();
    let warm_total = corral_client::metric_sum(&metrics, "corral_sandbox_start_seconds_count{path=\"warm\"}").unwrap_or(0.0);
    assert!(warm_total >= 53.0, "{metrics}");
}

#[tokio::test]
async fn a_prewarm_window_fills_the_pool_while_it_lasts() {
    use corral_core::api::SetPoolRequest;
    use corral_core::pool::PrewarmWindow;
    let c = Cluster::up().await;
    if c.driver != common::Driver::Native {
        eprintln!("skipped: pools need the native driver");
        return;
    }
    let now = corral_core::time::now_ms();
    let backwards = PrewarmWindow { start_ms: now + 10, end_ms: now, size: 3 };
    let bad = SetPoolRequest { max: 10, prewarm: vec![backwards], ..Default::default() };
    assert_eq!(c.client.set_pool("base", &bad).await.unwrap_err().status(), Some(400));
    let window = PrewarmWindow { start_ms: now.saturating_sub(1000), end_ms: now + 120_000, size: 3 };
    let req = SetPoolRequest { min: 0, max: 10, buffer: 0, prewarm: vec![window.clone()] };
    let spec = c.client.set_pool("base", &req).await.unwrap();
    assert_eq!(spec.prewarm, vec![window]);
    eventually(Duration::from_secs(60), "the window to fill the pool to 3", || async {
        let pools = c.client.pools().await.ok()?;
        let base = pools.pools.into_iter().find(|p| p.template == "base")?;
        (base.ready >= 3).then_some(())
    })
    .await;
}
