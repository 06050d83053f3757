//! The Agent service: exec and files inside a running sandbox.

mod common;

use common::*;
use corral_proto::v1::agent_client::AgentClient;
use corral_proto::v1::{ExecRequest, ExecResponse, ReadFileRequest, WriteFileRequest};
use tonic::transport::Channel;
use tonic::Code;

async fn running() -> (Harness, AgentClient<Channel>) {
    let mut h = Harness::new().await;
    h.start(h.config());
    h.bootstrap().await;
    let mut cmd = add(1, "sb-x");
    if let Some(corral_proto::v1::command::Kind::Add(a)) = cmd.kind.as_mut() {
        if let Some(spec) = a.spec.as_mut() {
            spec.env.insert("FROM_SPEC".into(), "spec".into());
        }
    }
    h.control.push(batch(vec![cmd]));
    h.wait_for("STARTED", |s| {
        s.acked_kind(corral_proto::v1::EventKind::Started, "sb-x")
    })
    .await;
    let agent = h.agent().await;
    (h, agent)
}

fn req(cmd: &[&str]) -> ExecRequest {
    ExecRequest {
        sandbox_id: "sb-x".into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

async fn exec(agent: &mut AgentClient<Channel>, r: ExecRequest) -> ExecResponse {
    agent.exec(r).await.expect("exec").into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_commands_with_codes_streams_stdin_env_and_cwd() {
    let (h, mut agent) = running().await;
    let out = exec(&mut agent, req(&["echo", "hello"])).await;
    assert_eq!(
        (out.exit_code, out.stdout.as_slice(), out.timed_out),
        (0, &b"hello\n"[..], false)
    );

    let out = exec(&mut agent, req(&["sh", "-c", "echo oops >&2; exit 3"])).await;
    assert_eq!((out.exit_code, out.stderr.as_slice()), (3, &b"oops\n"[..]));

    let out = exec(
        &mut agent,
        ExecRequest {
            stdin: b"fed in".to_vec(),
            ..req(&["cat"])
        },
    )
    .await;
    assert_eq!(out.stdout, b"fed in");

    let mut r = req(&["sh", "-c", "echo $FROM_SPEC $FROM_REQ $HOME"]);
    r.env.insert("FROM_REQ".into(), "req".into());
    let out = exec(&mut agent, r).await;
    let sandbox_dir = h.data_dir.join("sandboxes/sb-x");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("spec req {}\n", sandbox_dir.display())
    );

    let out = exec(&mut agent, req(&["pwd"])).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        sandbox_dir.display().to_string()
    );
    exec(&mut agent, req(&["mkdir", "-p", "sub/dir"])).await;
    let out = exec(
        &mut agent,
        ExecRequest {
            cwd: "sub/dir".into(),
            ..req(&["pwd"])
        },
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        sandbox_dir.join("sub/dir").display().to_string()
    );
    let err = agent
        .exec(ExecRequest {
            cwd: "../..".into(),
            ..req(&["pwd"])
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_timeouts_kill_the_command_group_and_bad_requests_are_clear_errors() {
    let (_h, mut agent) = running().await;
    let r = ExecRequest {
        timeout_ms: 200,
        ..req(&["sh", "-c", "sleep 30 & sleep 30; echo never"])
    };
    let out = exec(&mut agent, r).await;
    assert!(out.timed_out);
    assert_eq!(out.exit_code, 128 + 9);
    assert!(out.duration_ms < 5000, "{}", out.duration_ms);

    let err = agent.exec(req(&["no-such-program-xyz"])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "a missing program is the request's fault, not a missing sandbox: {err:?}");
    let err = agent.exec(req(&[])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = agent
        .exec(ExecRequest {
            sandbox_id: "sb-nope".into(),
            ..req(&["true"])
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_round_trip_inside_the_sandbox_and_escapes_are_rejected() {
    let (h, mut agent) = running().await;
    let write = |path: &str, content: &[u8]| WriteFileRequest {
        sandbox_id: "sb-x".into(),
        path: path.into(),
        content: content.to_vec(),
        mode: 0,
    };
    let read = |path: &str| ReadFileRequest {
        sandbox_id: "sb-x".into(),
        path: path.into(),
    };
    agent
        .write_file(write("a/b/c.txt", b"payload"))
        .await
        .expect("write");
    let got = agent
        .read_file(read("a/b/c.txt"))
        .await
        .expect("read")
        .into_inner()
        .content;
    assert_eq!(got, b"payload");
    assert!(h.data_dir.join("sandboxes/sb-x/a/b/c.txt").is_file());
    // Absolute paths are inside the sandbox, and exec sees the same files.
    agent
        .write_file(write("/etc/conf", b"mine"))
        .await
        .expect("write abs");
    assert_eq!(
        std::fs::read(h.data_dir.join("sandboxes/sb-x/etc/conf")).unwrap(),
        b"mine"
    );
    let out = exec(&mut agent, req(&["cat", "a/b/c.txt"])).await;
    assert_eq!(out.stdout, b"payload");

    let err = agent.read_file(read("../../starts.log")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = agent
        .write_file(write("x/../../escape", b"no"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    exec(&mut agent, req(&["ln", "-s", "/etc", "link"])).await;
    let err = agent.read_file(read("link/hostname")).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "a symlink out of the sandbox is an escape too"
    );
    let err = agent.read_file(read("missing.txt")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = agent
        .read_file(ReadFileRequest {
            sandbox_id: "sb-nope".into(),
            path: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}
