//! Create, exec (streaming, stdin, env, cwd, timeout), files, limits, wait, destroy.

mod common;

use std::time::Duration;

use common::{fixture, text};
use corral_runtime::{ExecEvent, ExecSpec, RuntimeError};

#[tokio::test]
async fn create_exec_destroy() {
    let Some(f) = fixture("basic").await else { return };
    let id = f.create("sb-basic").await;
    let out = f.sh(&id, "echo hello; echo oops >&2; hostname; id -u; exit 3").await;
    assert_eq!(out.exit_code, 3, "{out:?}");
    assert_eq!(text(&out.stdout), "hello\nsb-basic\n0\n");
    assert_eq!(text(&out.stderr), "oops\n");
    f.rt.destroy(&id).await.unwrap();
    f.rt.destroy(&id).await.unwrap(); // idempotent
    assert!(matches!(f.rt.exec_buffered(&id, ExecSpec::new(["/bin/true"])).await, Err(RuntimeError::NotFound(_))));
}
