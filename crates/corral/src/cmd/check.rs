//! `corral server check`: the store invariants on a stopped server's data dir.

use std::process::ExitCode;

use crate::cli::ServerCheckArgs;

pub fn run(a: ServerCheckArgs) -> anyhow::Result<ExitCode> {
    let report = corral_server::check::check_data_dir(&a.data_dir).map_err(|e| {
        // The message already carries its cause; a chain would repeat it.
        let hint = if e.to_string().contains("already open") { " (stop the server first)" } else { "" };
        anyhow::anyhow!("checking the store in {}: {e}{hint}", a.data_dir.display())
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for v in &report.violations {
            println!("{v}");
        }
        let verdict = if report.ok() { "ok" } else { "BROKEN" };
        println!(
            "store {verdict}: {} sandboxes, {} hosts, {} outbox rows, {} violations",
            report.sandboxes,
            report.hosts,
            report.outbox_rows,
            report.violations.len()
        );
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
