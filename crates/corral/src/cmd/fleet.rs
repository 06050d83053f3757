//! `corral host ls`, `corral template ls`.

use std::process::ExitCode;

use crate::cli::ClientArgs;

use super::sandbox::{client, print_json};

pub async fn hosts(a: ClientArgs) -> anyhow::Result<ExitCode> {
    let list = client(&a)?.hosts().await?;
    if a.json {
        print_json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:>6} {:>9} {:>8} {:>10} {:<6} {:>9}",
        "HOST", "ALIVE", "SANDBOXES", "BACKLOG", "HEARTBEAT", "EPOCH", "NET_SLOTS"
    );
    for h in list.hosts {
        let age = h.heartbeat_age_ms.map(|ms| format!("{ms}ms ago")).unwrap_or_else(|| "never".into());
        println!(
            "{:<24} {:>6} {:>9} {:>8} {:>10} {:<6} {:>9}",
            h.host.id, h.alive, h.sandboxes, h.outbox_backlog, age, h.host.epoch, h.free_net_slots
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn templates(a: ClientArgs) -> anyhow::Result<ExitCode> {
    let list = client(&a)?.templates().await?;
    if a.json {
        print_json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<24} {:>6}", "TEMPLATE", "HOSTS");
    for t in list.templates {
        println!("{:<24} {:>6}", t.name, t.hosts);
    }
    Ok(ExitCode::SUCCESS)
}
