//! The rules a stored state must satisfy, whatever crashed and whenever.
//!
//! Every decision is one atomic store transaction, so after any crash the
//! store holds the result of some prefix of decisions — and every such result
//! satisfies these rules. [`check`] reads a raw [`Snapshot`] (not the indexed
//! [`State`](super::State), which would hide duplicates and orphans) and lists
//! every broken rule. `corral server check` runs it on a stopped server's data
//! dir; the crash tests run it after SIGKILLing the server again and again.
//!
//! The rules, by name:
//! - `sandbox-host`: a sandbox that is enqueued, starting, running or stopping
//!   is placed on a host the store knows; a pending one is placed nowhere.
//! - `sandbox-end`: a terminal sandbox has an `end_reason` matching its state
//!   and an end time; a stopping one has the reason it is stopping for; a
//!   running one has a start time.
//! - `idempotency-key`: no two sandboxes share a key.
//! - `host-seq`: a host's `acked_seq` is at most its `last_seq`, its epoch is set.
//! - `outbox-host`: every outbox row belongs to a known host.
//! - `outbox-seq`: a host's rows are exactly `acked_seq+1 ..= last_seq`: a
//!   gap would be a lost command (the dataplane stops at gaps), a row at or
//!   below the ack one that should have been deleted.
//! - `outbox-command`: an `AddSandbox` row is for a sandbox placed on (or
//!   refused by) that host; a `RemoveSandbox` row for one of that host's
//!   sandboxes that is stopping or has ended.
//! - `enqueued-command`: an enqueued sandbox has its `AddSandbox` in its
//!   host's outbox (acknowledging the command is what moves it on).

use std::collections::{BTreeMap, HashMap, HashSet};

use corral_core::{Command, Host, Sandbox, SandboxState};
use corral_store::Snapshot;

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// The rule's name (see the module docs).
    pub rule: &'static str,
    /// What breaks it: a sandbox id, a host id, or `host/seq` of an outbox row.
    pub subject: String,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.rule, self.subject, self.detail)
    }
}

fn violation(rule: &'static str, subject: impl Into<String>, detail: impl Into<String>) -> Violation {
    Violation { rule, subject: subject.into(), detail: detail.into() }
}

/// Every rule `snap` breaks, in a stable order (sandboxes, hosts, outbox).
pub fn check(snap: &Snapshot) -> Vec<Violation> {
    let hosts: BTreeMap<&str, &Host> = snap.hosts.iter().map(|h| (h.id.as_str(), h)).collect();
    let sandboxes: HashMap<&str, &Sandbox> = snap.sandboxes.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut out = Vec::new();
    let mut sorted: Vec<&Sandbox> = snap.sandboxes.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    for sb in &sorted {
        check_sandbox(sb, &hosts, &mut out);
    }
    check_keys(&sorted, &mut out);
    for h in hosts.values() {
        if h.acked_seq > h.last_seq {
            out.push(violation("host-seq", &h.id, format!("acked_seq {} > last_seq {}", h.acked_seq, h.last_seq)));
        }
        if h.epoch == 0 {
            out.push(violation("host-seq", &h.id, "epoch is 0"));
        }
    }
    check_outbox(snap, &hosts, &sandboxes, &mut out);
    out
}

fn check_sandbox(sb: &Sandbox, hosts: &BTreeMap<&str, &Host>, out: &mut Vec<Violation>) {
    use SandboxState::*;
    let id = sb.id.as_str();
    match (sb.state, sb.host.as_deref()) {
        (Pending, Some(h)) => out.push(violation("sandbox-host", id, format!("pending but placed on {h}"))),
        (Enqueued | Starting | Running | Stopping, None) => {
            out.push(violation("sandbox-host", id, format!("{} but placed on no host", sb.state)))
        }
        (Enqueued | Starting | Running | Stopping, Some(h)) if !hosts.contains_key(h) => {
            out.push(violation("sandbox-host", id, format!("{} on unknown host {h}", sb.state)))
        }
        _ => {}
    }
    match (sb.state, sb.end_reason) {
        (s, None) if s.is_terminal() => out.push(violation("sandbox-end", id, format!("{s} without an end_reason"))),
        (s, Some(r)) if s.is_terminal() && r.terminal_state() != s => {
            out.push(violation("sandbox-end", id, format!("{s} but end_reason {} means {}", r.as_str(), r.terminal_state())))
        }
        (Stopping, None) => out.push(violation("sandbox-end", id, "stopping without the reason it stops for")),
        _ => {}
    }
    if sb.state.is_terminal() && sb.ended_at_ms.is_none() {
        out.push(violation("sandbox-end", id, format!("{} without ended_at_ms", sb.state)));
    }
    if sb.state == Running && sb.started_at_ms.is_none() {
        out.push(violation("sandbox-end", id, "running without started_at_ms"));
    }
}

fn check_keys(sorted: &[&Sandbox], out: &mut Vec<Violation>) {
    let mut owner: HashMap<&str, &str> = HashMap::new();
    for sb in sorted {
        let Some(key) = sb.idempotency_key.as_deref() else { continue };
        if let Some(first) = owner.insert(key, &sb.id) {
            out.push(violation("idempotency-key", &sb.id, format!("key {key:?} is also {first}'s")));
        }
    }
}

fn check_outbox(
    snap: &Snapshot,
    hosts: &BTreeMap<&str, &Host>,
    sandboxes: &HashMap<&str, &Sandbox>,
    out: &mut Vec<Violation>,
) {
    let mut rows: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    // (host, sandbox) pairs with an AddSandbox waiting.
    let mut adds: HashSet<(&str, &str)> = HashSet::new();
    for e in &snap.outbox {
        let subject = format!("{}/{}", e.host, e.seq);
        let Some(host) = hosts.get(e.host.as_str()) else {
            out.push(violation("outbox-host", subject, "row of an unknown host"));
            continue;
        };
        rows.entry(host.id.as_str()).or_default().push(e.seq);
        check_command(&e.command, &e.host, &subject, sandboxes, out);
        if let Command::AddSandbox { sandbox_id, .. } = &e.command {
            adds.insert((e.host.as_str(), sandbox_id.as_str()));
        }
    }
    for h in hosts.values() {
        let mut seqs = rows.remove(h.id.as_str()).unwrap_or_default();
        seqs.sort_unstable();
        let expected: Vec<u64> = (h.acked_seq.saturating_add(1)..=h.last_seq).collect();
        if seqs != expected && h.acked_seq <= h.last_seq {
            out.push(violation("outbox-seq", &h.id, seq_mismatch(&seqs, &expected)));
        }
    }
    let mut enqueued: Vec<&&Sandbox> =
        sandboxes.values().filter(|sb| sb.state == SandboxState::Enqueued).collect();
    enqueued.sort_by(|a, b| a.id.cmp(&b.id));
    for sb in enqueued {
        let Some(h) = sb.host.as_deref() else { continue };
        if !adds.contains(&(h, sb.id.as_str())) {
            out.push(violation("enqueued-command", &sb.id, format!("enqueued on {h} but no AddSandbox waits there")));
        }
    }
}

fn check_command(
    command: &Command,
    host: &str,
    subject: &str,
    sandboxes: &HashMap<&str, &Sandbox>,
    out: &mut Vec<Violation>,
) {
    let Some(id) = command.sandbox_id() else { return };
    let Some(sb) = sandboxes.get(id) else {
        out.push(violation("outbox-command", subject, format!("command for unknown sandbox {id}")));
        return;
    };
    let placed_here = sb.host.as_deref() == Some(host);
    match command {
        Command::AddSandbox { .. } if !placed_here && sb.rerouted_from.as_deref() != Some(host) => {
            let at = sb.host.as_deref().unwrap_or("no host");
            out.push(violation("outbox-command", subject, format!("AddSandbox for {id}, which is on {at}")));
        }
        Command::RemoveSandbox { .. } if !placed_here => {
            out.push(violation("outbox-command", subject, format!("RemoveSandbox for {id}, placed elsewhere")));
        }
        Command::RemoveSandbox { .. } if sb.state != SandboxState::Stopping && !sb.state.is_terminal() => {
            out.push(violation("outbox-command", subject, format!("RemoveSandbox for {id}, which is {}", sb.state)));
        }
        _ => {}
    }
}

/// A short description of how a host's outbox seqs differ from the expected run.
fn seq_mismatch(found: &[u64], expected: &[u64]) -> String {
    let want: HashSet<u64> = expected.iter().copied().collect();
    let have: HashSet<u64> = found.iter().copied().collect();
    let mut missing: Vec<u64> = expected.iter().copied().filter(|s| !have.contains(s)).collect();
    let mut extra: Vec<u64> = found.iter().copied().filter(|s| !want.contains(s)).collect();
    missing.truncate(5);
    extra.truncate(5);
    let range = match (expected.first(), expected.last()) {
        (Some(a), Some(b)) => format!("{a}..={b}"),
        _ => "none".into(),
    };
    format!("rows should be seqs {range}; missing {missing:?}, unexpected {extra:?}")
}

#[cfg(test)]
mod tests;
