//! `corral sandbox …`: thin wrappers over the REST client.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use corral_client::{Client, ListFilter};
use corral_core::api::{CreateSandboxRequest, ExecRequest, ExecStreamEvent};
use corral_core::time::now_ms;
use corral_core::Sandbox;

use super::parse_pairs;
use crate::cli::{CatArgs, ClientArgs, CreateArgs, ExecArgs, IdArgs, LsArgs, PutArgs, RmArgs, SandboxCommand};

pub fn client(a: &ClientArgs) -> anyhow::Result<Client> {
    let ca = match &a.ca {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("reading the CA file {}", path.display()))?),
        None => None,
    };
    Ok(Client::with_ca(&a.url, a.token.clone(), ca.as_deref())?)
}

pub fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn run(cmd: SandboxCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SandboxCommand::Create(a) => create(a).await,
        SandboxCommand::Exec(a) => exec(a).await,
        SandboxCommand::Ls(a) => ls(a).await,
        SandboxCommand::Get(a) => get(a).await,
        SandboxCommand::Rm(a) => rm(a).await,
        SandboxCommand::Put(a) => put(a).await,
        SandboxCommand::Cat(a) => cat(a).await,
    }
}

async fn create(a: CreateArgs) -> anyhow::Result<ExitCode> {
    let c = client(&a.client)?;
    let req = CreateSandboxRequest {
        template: Some(a.template.clone()),
        cpu_millis: a.cpu_millis,
        memory_mb: a.memory_mb,
        ttl_s: a.ttl_s,
        env: parse_pairs(&a.env, "--env")?,
        labels: parse_pairs(&a.labels, "--label")?,
        idempotency_key: a.idempotency_key.clone(),
        network: a.network.clone(),
    };
    if a.count > 1 {
        let ids = c.create_batch(a.count, &req).await?;
        if a.client.json {
            print_json(&serde_json::json!({ "ids": ids }))?;
        } else {
            ids.iter().for_each(|id| println!("{id}"));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let sb = c.create(&req, a.wait).await?;
    if a.client.json {
        print_json(&sb)?;
    } else {
        println!("{}", sb.id);
    }
    if a.wait && sb.state != corral_core::SandboxState::Running {
        eprintln!("sandbox {} is {}{}", sb.id, sb.state, end_detail(&sb));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn end_detail(sb: &Sandbox) -> String {
    match (&sb.end_reason, &sb.message) {
        (Some(r), Some(m)) => format!(" ({}: {m})", r.as_str()),
        (Some(r), None) => format!(" ({})", r.as_str()),
        _ => String::new(),
    }
}

async fn exec(a: ExecArgs) -> anyhow::Result<ExitCode> {
    let c = client(&a.client)?;
    let stdin = if a.stdin {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading standard input")?;
        Some(s)
    } else {
        None
    };
    let req = ExecRequest {
        cmd: a.cmd,
        env: parse_pairs(&a.env, "--env")?,
        cwd: a.cwd,
        timeout_ms: a.timeout_ms,
        stdin,
    };
    if a.client.json {
        let out = c.exec(&a.id, &req).await?;
        print_json(&out)?;
        return Ok(ExitCode::from(out.exit_code.clamp(0, 255) as u8));
    }
    let mut events = c.exec_stream(&a.id, &req).await?;
    while let Some(event) = events.next().await {
        match event? {
            ExecStreamEvent::Stdout(s) => {
                let mut out = std::io::stdout();
                out.write_all(s.as_bytes())?;
                out.flush()?;
            }
            ExecStreamEvent::Stderr(s) => std::io::stderr().write_all(s.as_bytes())?,
            ExecStreamEvent::Exit(x) => {
                if x.timed_out {
                    eprintln!("corral: command timed out");
                }
                return Ok(ExitCode::from(x.exit_code.clamp(0, 255) as u8));
            }
            ExecStreamEvent::Error(e) => anyhow::bail!("{} ({})", e.message, e.code),
        }
    }
    anyhow::bail!("the output stream ended without an exit status")
}

fn age(ms: u64) -> String {
    let s = now_ms().saturating_sub(ms) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

async fn ls(a: LsArgs) -> anyhow::Result<ExitCode> {
    let filter = ListFilter { state: a.state, label: a.label, host: a.host, limit: a.limit };
    let list = client(&a.client)?.list(&filter).await?;
    if a.client.json {
        print_json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<31} {:<10} {:<10} {:<16} {:>5}  END", "ID", "STATE", "TEMPLATE", "HOST", "AGE");
    for sb in list {
        let end = sb.end_reason.map(|r| r.as_str()).unwrap_or("");
        let host = sb.host.as_deref().unwrap_or("-");
        println!("{:<31} {:<10} {:<10} {:<16} {:>5}  {end}", sb.id, sb.state, sb.spec.template, host, age(sb.created_at_ms));
    }
    Ok(ExitCode::SUCCESS)
}

async fn get(a: IdArgs) -> anyhow::Result<ExitCode> {
    let sb = client(&a.client)?.get(&a.id).await?;
    print_json(&sb)?;
    Ok(ExitCode::SUCCESS)
}

async fn rm(a: RmArgs) -> anyhow::Result<ExitCode> {
    let c = client(&a.client)?;
    let mut failed = false;
    for id in &a.ids {
        match c.delete(id).await {
            Ok(sb) if a.wait => {
                let sb = wait_ended(&c, sb).await?;
                println!("{} {}{}", sb.id, sb.state, end_detail(&sb));
            }
            Ok(sb) => println!("{} {}", sb.id, sb.state),
            Err(e) => {
                eprintln!("{id}: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

async fn wait_ended(c: &Client, mut sb: Sandbox) -> anyhow::Result<Sandbox> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !sb.state.is_terminal() {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "sandbox {} still {} after 60 s", sb.id, sb.state);
        tokio::time::sleep(Duration::from_millis(50)).await;
        sb = c.get(&sb.id).await?;
    }
    Ok(sb)
}

async fn put(a: PutArgs) -> anyhow::Result<ExitCode> {
    let content = if a.local.as_os_str() == "-" {
        let mut v = Vec::new();
        std::io::stdin().read_to_end(&mut v)?;
        v
    } else {
        std::fs::read(&a.local).with_context(|| format!("reading {}", a.local.display()))?
    };
    client(&a.client)?.write_file(&a.id, &a.path, content).await?;
    Ok(ExitCode::SUCCESS)
}

async fn cat(a: CatArgs) -> anyhow::Result<ExitCode> {
    let content = client(&a.client)?.read_file(&a.id, &a.path).await?;
    match a.output {
        Some(p) => std::fs::write(&p, content).with_context(|| format!("writing {}", p.display()))?,
        None => std::io::stdout().write_all(&content)?,
    }
    Ok(ExitCode::SUCCESS)
}
