//! `corral bench` end to end at small N, against the real binary: one burst
//! per provider, checking every artifact a run promises. bwrap and podman
//! are skipped, saying why, when the tool is missing or cannot run here.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Cluster, BIN};

const N: usize = 5;

/// Runs `corral bench burst` and returns (exit success, stderr).
fn bench(provider: &str, url: &str, out: &Path) -> (bool, String) {
    let output = Command::new(BIN)
        .args(["bench", "burst", "--count", &N.to_string(), "--provider", provider, "--url", url, "--quiet"])
        .arg("--out")
        .arg(out)
        .args(["--timeout-ms", "60000"])
        .output()
        .expect("run corral bench");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success(), format!("{stdout}\n{stderr}"))
}

fn check_artifacts(out: &Path, provider: &str) {
    let raw = std::fs::read_to_string(out.join("raw.jsonl")).expect("raw.jsonl");
    let lines: Vec<serde_json::Value> = raw.lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    assert_eq!(lines.len(), N);
    for l in &lines {
        assert_eq!(l["status"], "success", "{l}");
        let tti = l["tti_ms"].as_f64().expect("tti_ms");
        let alloc = l["allocate_ms"].as_f64().expect("allocate_ms");
        assert!(tti >= alloc && alloc >= 0.0, "{l}");
        assert!(l["liveness_at_ms"].as_f64().is_some() && l["destroyed_at_ms"].as_f64().is_some(), "{l}");
        assert!(l["provider_id"].is_string(), "{l}");
    }
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("meta.json")).expect("meta.json")).expect("meta json");
    assert_eq!(meta["provider"], provider);
    assert_eq!(meta["summary"]["counts"]["success"], N);
    assert!(meta["summary"]["tti_ms"]["all_attempts"]["p99"].as_f64().is_some());
    assert!(meta["summary"]["timeline"]["peak"].as_u64().unwrap_or(0) >= 1);
    assert!(meta["machine"]["cores"].as_u64().unwrap_or(0) >= 1);
    for f in ["allocate.hdr", "first_command.hdr", "tti.hdr", "tti_cdf.svg", "timeline.svg"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn corral_provider_burst() {
    let cluster = Cluster::up().await;
    let out = cluster.dir.path().join("bench");
    let (ok, log) = tokio::task::spawn_blocking({
        let (url, out) = (cluster.url(), out.clone());
        move || bench("corral", &url, &out)
    })
    .await
    .unwrap();
    assert!(ok, "corral bench failed:\n{log}\n{}", cluster.logs());
    check_artifacts(&out, "corral");
    // Every sandbox was deleted at the end.
    let running = cluster.count_in("running").await;
    assert_eq!(running, Some(0), "{}", cluster.logs());
    // The sampler found the server behind the URL.
    let meta = std::fs::read_to_string(out.join("meta.json")).unwrap();
    assert!(meta.contains("\"role\": \"server\""), "no server samples");
}

fn tool_missing(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().map(|o| !o.status.success()).unwrap_or(true)
}

fn local_provider(provider: &str, tool: Option<&str>) {
    if let Some(tool) = tool.filter(|t| tool_missing(t)) {
        eprintln!("SKIP: {tool} is not installed (scripts/setup.sh installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let (ok, log) = bench(provider, "http://127.0.0.1:1", &out);
    if !ok && log.contains("cannot run here") {
        eprintln!("SKIP: {provider} cannot run on this machine:\n{log}");
        return;
    }
    assert!(ok, "{provider} bench failed:\n{log}");
    check_artifacts(&out, provider);
}

#[test]
fn bwrap_provider_burst() {
    local_provider("bwrap", Some("bwrap"));
}

#[test]
fn plain_provider_burst() {
    local_provider("plain", None);
}

#[test]
fn podman_provider_burst() {
    local_provider("podman", Some("podman"));
}

#[test]
fn merge_of_two_runs_has_the_shape_of_one() {
    if tool_missing("bwrap") {
        eprintln!("SKIP: bwrap is not installed; merge is also covered by corral-bench's unit tests");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b, m) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("m"));
    for d in [&a, &b] {
        let (ok, log) = bench("bwrap", "http://127.0.0.1:1", d);
        if !ok && log.contains("cannot run here") {
            eprintln!("SKIP: bwrap cannot run here");
            return;
        }
        assert!(ok, "{log}");
    }
    let out = Command::new(BIN).args(["bench", "merge"]).arg(&a).arg(&b).arg("--out").arg(&m).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let raw = std::fs::read_to_string(m.join("raw.jsonl")).unwrap();
    assert_eq!(raw.lines().count(), 2 * N);
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(m.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["summary"]["attempts"], 2 * N);
    assert_eq!(meta["shards"].as_array().map(|s| s.len()), Some(2));
}
