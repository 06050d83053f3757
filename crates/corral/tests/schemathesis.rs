//! Property-based fuzzing of the REST API from its own OpenAPI document with
//! schemathesis: no 5xx, every answer conforms to the document (status codes,
//! content types, headers, bodies), schema-invalid input is rejected, and
//! rejected input writes nothing (the server ends up holding exactly the
//! sandboxes and pools of the requests it answered with 2xx).
//!
//! schemathesis lives in a venv that `scripts/setup-schemathesis.sh` makes
//! (`scripts/test.sh` runs it); without it this test says so and skips.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use common::{Cluster, Driver};
use corral_client::ListFilter;

fn schemathesis() -> Option<PathBuf> {
    let path = std::env::var_os("CORRAL_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/corral-venv/bin/schemathesis"));
    path.exists().then_some(path)
}

/// What the run's 2xx answers created, read from its HAR log.
#[derive(Debug, Default)]
struct Created {
    sandboxes: usize,
    pools: BTreeSet<String>,
    cases: usize,
}

fn created_by(har: &serde_json::Value) -> Created {
    let mut out = Created::default();
    for e in har["log"]["entries"].as_array().into_iter().flatten() {
        out.cases += 1;
        let (method, url) = (e["request"]["method"].as_str().unwrap_or(""), e["request"]["url"].as_str().unwrap_or(""));
        let path = url.split('?').next().unwrap_or("").splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap_or_default();
        let status = e["response"]["status"].as_u64().unwrap_or(0);
        let body: serde_json::Value =
            serde_json::from_str(e["response"]["content"]["text"].as_str().unwrap_or("null")).unwrap_or_default();
        match (method, path.as_str(), status) {
            ("POST", "/v1/sandboxes", 201) => out.sandboxes += 1,
            ("POST", "/v1/sandboxes/batch", 201) => out.sandboxes += body["ids"].as_array().map_or(0, Vec::len),
            ("PUT", p, 200) if p.starts_with("/v1/pools/") => {
                out.pools.insert(body["template"].as_str().unwrap_or_default().to_string());
            }
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn the_rest_api_survives_schemathesis_and_rejected_input_changes_nothing() {
    let Some(st) = schemathesis() else {
        eprintln!("skipped: schemathesis is not installed (scripts/setup-schemathesis.sh installs it)");
        return;
    };
    // Simulated sandboxes: a run creates thousands (batches of up to 10 000),
    // which real processes would turn into minutes of start-up work.
    let mut c = Cluster::prepare(Driver::Sim);
    // A create that still finds no room waits for capacity; end it quickly so
    // a `?wait=running` answers well within the request timeout.
    // Room for every create the run makes, whatever limits it asks for.
    // A live-sandbox limit keeps batches of thousands from piling up (they get
    // a documented 429), so a `?wait=running` create is never stuck behind them.
    c.extra_up_args = [
        "--pending-timeout-ms", "2000", "--cpu-overcommit", "1000000", "--memory-overcommit", "1000000",
        "--max-live-per-token", "300",
    ]
    .map(String::from)
    .to_vec();
    c.start_up().await;
    let har = c.dir.path().join("schemathesis.har");
    let url = c.url();
    let out = Command::new(&st)
        .args(["run", &format!("{url}/openapi.json"), "--url", &url])
        // Every check but two, which test things this API does differently on purpose:
        // - positive_data_acceptance: some rules (env and label names, the
        //   first `cmd` element not empty) are prose in the document, not schema;
        // - use_after_free: an ended sandbox stays readable (`terminated`,
        //   with its end_reason) instead of becoming a 404.
        .args(["--checks", "all", "--exclude-checks", "positive_data_acceptance,use_after_free"])
        // Server-sent events never end; the stream endpoint is still tested.
        .args(["--exclude-path", "/v1/events"])
        .args(["--max-examples", "40", "--seed", "1", "--workers", "1", "--request-timeout", "20"])
        .args(["--report", "har", "--report-har-path"])
        .arg(&har)
        .env("NO_COLOR", "1")
        // Its cache of past failures goes with the cluster's temp dir, not the source tree.
        .current_dir(c.dir.path())
        .output()
        .expect("run schemathesis");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let summary: Vec<&str> = text.lines().filter(|l| l.contains("generated") || l.contains("passed")).collect();
    eprintln!("schemathesis: {}", summary.join(" | "));
    assert!(out.status.success(), "schemathesis found problems:\n{text}\n{}", c.logs());

    let run: serde_json::Value = serde_json::from_slice(&std::fs::read(&har).expect("HAR report")).expect("HAR JSON");
    let created = created_by(&run);
    assert!(created.cases > 100, "too few cases ran: {}", created.cases);
    let held = c.client.list(&ListFilter { limit: Some(100_000), ..Default::default() }).await.unwrap().len();
    assert_eq!(held, created.sandboxes, "every sandbox held comes from a 2xx create; rejected ones wrote nothing");
    let pools: BTreeSet<String> = c.client.pools().await.unwrap().pools.into_iter().map(|p| p.template).collect();
    assert_eq!(pools, created.pools, "every pool setting comes from a 2xx PUT");
}
