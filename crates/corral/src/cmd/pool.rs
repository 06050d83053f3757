//! `corral pool set|ls`.

use std::process::ExitCode;

use corral_core::api::SetPoolRequest;

use super::sandbox::{client, print_json};
use crate::cli::PoolCommand;

pub async fn run(cmd: PoolCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PoolCommand::Set(a) => {
            let req = SetPoolRequest { min: a.min, max: a.max, buffer: a.buffer, prewarm: a.prewarm };
            let spec = client(&a.client)?.set_pool(&a.template, &req).await?;
            if a.client.json {
                print_json(&spec)?;
            } else {
                println!("{}: min {} max {} buffer {}", spec.template, spec.min, spec.max, spec.buffer);
                for w in &spec.prewarm {
                    println!("  pre-warm {} from {} ms to {} ms (epoch)", w.size, w.start_ms, w.end_ms);
                }
            }
        }
        PoolCommand::Ls(a) => {
            let list = client(&a.client)?.pools().await?;
            if a.client.json {
                print_json(&list)?;
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<20} {:>11} {:>6} {:>6} {:>9} {:>6} {:>6} {:>8}",
                "TEMPLATE", "MIN/MAX/BUF", "SIZE", "READY", "ALLOCATED", "UTIL", "TARGET", "FORECAST"
            );
            for p in list.pools {
                let bounds = p.spec.map(|s| format!("{}/{}/{}", s.min, s.max, s.buffer)).unwrap_or_else(|| "-".into());
                println!(
                    "{:<20} {:>11} {:>6} {:>6} {:>9} {:>5.0}% {:>6} {:>7.1}/s",
                    p.template,
                    bounds,
                    p.size,
                    p.ready,
                    p.allocated,
                    p.utilization * 100.0,
                    p.target,
                    p.forecast
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
