//! `corral template ls|build|import|rm`. Plain `ls` asks the server what its
//! hosts advertise (REST); `ls --local`, `build`, `import` and `rm` work on
//! this machine's template store (`--templates-dir`, `CORRAL_TEMPLATES_DIR`).

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use corral_template::{DebootstrapSpec, Progress, Template, TemplateStore};
use indicatif::{ProgressBar, ProgressStyle};

use super::sandbox::print_json;
use crate::cli::{TemplateBuildArgs, TemplateCommand, TemplateImportArgs, TemplateLsArgs, TemplateRmArgs};

pub async fn run(cmd: TemplateCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TemplateCommand::Ls(a) if a.local => blocking(move || ls_local(&a)).await,
        TemplateCommand::Ls(a) => super::fleet::templates(a.client).await,
        TemplateCommand::Build(a) => blocking(move || build(&a)).await,
        TemplateCommand::Import(a) => blocking(move || import(&a)).await,
        TemplateCommand::Rm(a) => blocking(move || rm(&a)).await,
    }
}

/// Template work is file and process I/O: keep it off the async workers.
async fn blocking(f: impl FnOnce() -> anyhow::Result<ExitCode> + Send + 'static) -> anyhow::Result<ExitCode> {
    tokio::task::spawn_blocking(f).await.context("the template task panicked")?
}

fn open(dir: &Path) -> anyhow::Result<TemplateStore> {
    TemplateStore::open(dir).with_context(|| format!("opening the template store at {}", dir.display()))
}

fn ls_local(a: &TemplateLsArgs) -> anyhow::Result<ExitCode> {
    // Listing never creates the store.
    let list = if a.templates_dir.exists() { open(&a.templates_dir)?.list()? } else { Vec::new() };
    if a.client.json {
        print_json(&serde_json::json!({ "templates": list }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<24} {:<12} {:<9} {:>10} {:>6}  ERROR", "TEMPLATE", "KIND", "STATUS", "SIZE", "AGE");
    let now = now_ms();
    for t in list {
        let m = &t.meta;
        let kind = serde_json::to_value(m.kind)?.as_str().unwrap_or("?").to_string();
        let status = serde_json::to_value(m.status)?.as_str().unwrap_or("?").to_string();
        let age = human_age(Duration::from_millis(now.saturating_sub(m.created_at_ms)));
        let error = m.error.as_deref().unwrap_or("").lines().next().unwrap_or("");
        println!("{:<24} {:<12} {:<9} {:>10} {:>6}  {error}", m.name, kind, status, human_size(m.size_bytes), age);
    }
    Ok(ExitCode::SUCCESS)
}

fn build(a: &TemplateBuildArgs) -> anyhow::Result<ExitCode> {
    if !a.debootstrap {
        anyhow::bail!("say how to build template {:?}: --debootstrap (a Debian rootfs; the only builder so far)", a.name);
    }
    let spec = DebootstrapSpec { suite: a.suite.clone(), packages: a.packages.clone(), mirror: a.mirror.clone() };
    let store = open(&a.dir.templates_dir)?;
    let mut ui = Ui::start(&format!("building {} with debootstrap", a.name), a.dir.json);
    let built = store.build_debootstrap(&a.name, &spec, &mut |p| ui.update(&p));
    ui.finish();
    report(built.with_context(|| format!("building template {:?}", a.name))?, a.dir.json, ui.started)
}

fn import(a: &TemplateImportArgs) -> anyhow::Result<ExitCode> {
    let store = open(&a.dir.templates_dir)?;
    let mut ui = Ui::start(&format!("importing {} as {}", a.oci.display(), a.name), a.dir.json);
    let imported = store.import_oci(&a.name, &a.oci, &mut |p| ui.update(&p));
    ui.finish();
    report(imported.with_context(|| format!("importing template {:?}", a.name))?, a.dir.json, ui.started)
}

fn report(t: Template, json: bool, started: Instant) -> anyhow::Result<ExitCode> {
    if json {
        print_json(&t)?;
    } else {
        println!(
            "template {} ready: {}, {:.1}s, rootfs {}",
            t.meta.name,
            human_size(t.meta.size_bytes),
            started.elapsed().as_secs_f64(),
            t.rootfs().display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn rm(a: &TemplateRmArgs) -> anyhow::Result<ExitCode> {
    if !a.dir.templates_dir.exists() {
        anyhow::bail!("no template store at {}", a.dir.templates_dir.display());
    }
    let store = open(&a.dir.templates_dir)?;
    let mut code = ExitCode::SUCCESS;
    for name in &a.names {
        match store.remove(name) {
            Ok(()) if !a.dir.json => println!("removed {name}"),
            Ok(()) => print_json(&serde_json::json!({ "removed": name }))?,
            Err(e) => {
                eprintln!("error: {e}");
                code = ExitCode::FAILURE;
            }
        }
    }
    Ok(code)
}

/// Progress of a long operation: a spinner on a terminal, else one line per step
/// on stderr (stdout stays clean for `--json`).
struct Ui {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Ui {
    fn start(what: &str, json: bool) -> Self {
        let bar = (std::io::stderr().is_terminal() && !json).then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed:>4}] {msg:.dim}") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        match &bar {
            Some(b) => b.println(what),
            None => eprintln!("{what}"),
        }
        Self { bar, started: Instant::now() }
    }

    fn update(&mut self, p: &Progress) {
        match &self.bar {
            Some(b) => b.set_message(p.message.chars().take(100).collect::<String>()),
            None => eprintln!("[{:6.1}s] {}", p.elapsed.as_secs_f64(), p.message),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn human_size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", units[i]) }
}

fn human_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}
