//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, nightly), and
//! the same checks run on stable by this module's tests with random input.
//!
//! Each takes arbitrary bytes, builds a local view and a server answer from
//! them, runs the pure path the poll loop takes (decode, sequence, plan),
//! and panics if an invariant breaks. The invariants are the promises the
//! dataplane makes: commands apply strictly in seq order, a sandbox is never
//! started twice, and a full sync starts exactly what is wanted and unknown,
//! stops only what runs and is unwanted, and never touches what it keeps.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use corral_core::reconcile::{self, Local};
use corral_core::sequence::plan_batch;
use corral_core::SandboxSpec;
use corral_proto::v1::{command, poll_response, PollResponse};
use prost::Message;

use crate::apply::{plan_commands, plan_full_sync, to_cmd, Action, Cmd, Plan};
use crate::cursor::Cursor;
use crate::pool::PoolConf;
use crate::record::{Record, Status};

/// The local side, read from the front of the input: a cursor seq, then up
/// to 16 sandboxes (`sb-N` and a status), then whether each was started.
struct LocalView {
    cursor: Cursor,
    records: BTreeMap<String, Record>,
    started: HashSet<String>,
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, tail) = data.split_at(n.min(data.len()));
    *data = tail;
    head
}

fn local_from(data: &mut &[u8]) -> LocalView {
    let head = take(data, 2);
    let seq = u64::from(head.first().copied().unwrap_or(0));
    let n = usize::from(head.get(1).copied().unwrap_or(0) % 17);
    let mut records = BTreeMap::new();
    let mut started = HashSet::new();
    for pair in take(data, n * 2).chunks(2) {
        let id = format!("sb-{}", pair[0] % 32);
        let flags = pair.get(1).copied().unwrap_or(0);
        let status = match flags % 4 {
            0 => Status::Alive,
            1 => Status::Exited { message: String::new() },
            2 => Status::Stopping { reason: "deleted".into() },
            _ => Status::Stopped { reason: "deleted".into() },
        };
        if flags & 0x10 != 0 || status.is_alive() {
            started.insert(id.clone());
        }
        records.insert(id, Record { spec: crate::record::spec_from_proto(None), status });
    }
    // Some ids ran here once and were forgotten since.
    for b in take(data, 1) {
        started.insert(format!("sb-{}", b % 32));
    }
    LocalView { cursor: Cursor { epoch: 1, seq }, records, started }
}

/// Decodes a poll answer and plans it as the poll loop would.
pub fn poll_response(mut data: &[u8]) {
    let local = local_from(&mut data);
    let Ok(resp) = PollResponse::decode(data) else { return };
    match resp.result {
        Some(poll_response::Result::Batch(batch)) => {
            let seqs: Vec<u64> = batch.commands.iter().map(|c| c.seq).collect();
            let plan = plan_batch(local.cursor.seq, &seqs);
            check_sequencing(local.cursor.seq, &seqs, &plan);
            let cmds: Vec<Cmd> = plan.apply.iter().filter_map(|&i| to_cmd(&batch.commands[i].kind)).collect();
            for &i in &plan.apply {
                if let Some(command::Kind::SetPool(sp)) = &batch.commands[i].kind {
                    if let Some(p) = &sp.pool {
                        drop(PoolConf::from_proto(p));
                    }
                }
            }
            let new_cursor = Cursor { epoch: local.cursor.epoch, seq: plan.new_cursor };
            let planned = plan_commands(&local.records, &local.started, &cmds, new_cursor);
            assert_eq!(planned.change.cursor, Some(new_cursor));
            check_starts_once(&local.records, &local.started, &planned);
            // Applying the same commands again on the result starts nothing.
            let (records, started) = after(&local.records, &local.started, &planned);
            let again = plan_commands(&records, &started, &cmds, new_cursor);
            assert!(!again.actions.iter().any(|a| matches!(a, Action::Start(_))), "a replay started a sandbox again");
        }
        Some(poll_response::Result::FullSync(fs)) => {
            let desired: BTreeMap<String, SandboxSpec> = fs
                .sandboxes
                .into_iter()
                .map(|a| (a.sandbox_id, crate::record::spec_from_proto(a.spec)))
                .collect();
            let cursor = Cursor { epoch: fs.epoch, seq: fs.seq };
            let planned = plan_full_sync(&local.records, &local.started, &desired, cursor);
            assert_eq!(planned.change.cursor, Some(cursor));
            check_starts_once(&local.records, &local.started, &planned);
            for a in &planned.actions {
                match a {
                    Action::Start(id) => assert!(desired.contains_key(id)),
                    Action::Stop { id, .. } => {
                        assert!(!desired.contains_key(id) && local.records[id].status.is_alive(), "stopped {id}")
                    }
                    Action::Forget(id) => assert!(!desired.contains_key(id), "forgot wanted {id}"),
                    _ => {}
                }
            }
        }
        None => {}
    }
}

/// Commands apply strictly in order from the cursor, stopping at a hole.
fn check_sequencing(cursor: u64, seqs: &[u64], plan: &corral_core::sequence::ApplyPlan) {
    let applied: Vec<u64> = plan.apply.iter().map(|&i| seqs[i]).collect();
    let expected: Vec<u64> = (1..=applied.len() as u64).map(|k| cursor + k).collect();
    assert_eq!(applied, expected, "applied seqs must continue the cursor one by one");
    assert_eq!(plan.new_cursor, cursor + applied.len() as u64);
    assert!(plan.apply.windows(2).all(|w| w[0] < w[1]), "applied in arrival order");
    if let Some(gap) = plan.gap_at {
        assert!(gap > plan.new_cursor + 1, "a gap is a seq past the next one");
    }
    assert!(plan.duplicates + plan.apply.len() <= seqs.len());
}

/// No sandbox known or ever started here is started again, and none twice.
fn check_starts_once(records: &BTreeMap<String, Record>, started: &HashSet<String>, plan: &Plan) {
    let mut seen = HashSet::new();
    for a in &plan.actions {
        if let Action::Start(id) = a {
            assert!(!records.contains_key(id) && !started.contains(id), "restarted {id}");
            assert!(seen.insert(id.clone()), "started {id} twice");
        }
    }
}

fn after(
    records: &BTreeMap<String, Record>,
    started: &HashSet<String>,
    plan: &Plan,
) -> (BTreeMap<String, Record>, HashSet<String>) {
    let mut records = records.clone();
    records.extend(plan.change.upsert.iter().cloned());
    let mut started = started.clone();
    started.extend(plan.actions.iter().filter_map(|a| match a {
        Action::Start(id) => Some(id.clone()),
        _ => None,
    }));
    (records, started)
}

/// The full-sync diff on sets read from the bytes: ids `sb-0`…`sb-31`, each
/// byte wanted (bit 0), known locally (bit 1), alive if known (bit 2).
pub fn full_sync_diff(data: &[u8]) {
    let mut desired = BTreeSet::new();
    let mut local = BTreeMap::new();
    for (i, b) in data.iter().take(64).enumerate() {
        let id = format!("sb-{}", i % 32 + usize::from(*b >> 5) * 32);
        if b & 1 != 0 {
            desired.insert(id.clone());
        }
        if b & 2 != 0 {
            local.insert(id, if b & 4 != 0 { Local::Alive } else { Local::Ended });
        }
    }
    let d = reconcile::diff(&desired, &local);
    for list in [&d.start, &d.stop, &d.forget, &d.keep] {
        assert!(list.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
    }
    let all: Vec<&String> = d.start.iter().chain(&d.stop).chain(&d.forget).chain(&d.keep).collect();
    let unique: BTreeSet<&String> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "each id lands in one list");
    let everything: BTreeSet<&String> = desired.iter().chain(local.keys()).collect();
    assert_eq!(unique, everything, "every id wanted or known is decided");
    assert!(d.start.iter().all(|id| desired.contains(id) && !local.contains_key(id)));
    assert!(d.keep.iter().all(|id| desired.contains(id) && local.contains_key(id)));
    assert!(d.stop.iter().all(|id| !desired.contains(id) && local[id] == Local::Alive));
    assert!(d.forget.iter().all(|id| !desired.contains(id) && local[id] == Local::Ended));
}

#[cfg(test)]
mod tests {
    use corral_proto::v1::{AddSandbox, Command, CommandBatch, FullSync, RemoveSandbox};

    use super::*;

    fn random_bytes(rng: &mut fastrand::Rng) -> Vec<u8> {
        let n = rng.usize(0..256);
        (0..n).map(|_| rng.u8(..)).collect()
    }

    /// A well-formed answer, so the planning (not only the decoder) is exercised.
    fn random_answer(rng: &mut fastrand::Rng) -> Vec<u8> {
        let mut front = vec![rng.u8(0..8), rng.u8(..)];
        front.extend((0..40).map(|_| rng.u8(..)));
        let id = |rng: &mut fastrand::Rng| format!("sb-{}", rng.u8(0..32));
        let result = if rng.bool() {
            let commands = (0..rng.usize(0..12))
                .map(|_| Command {
                    seq: rng.u64(0..16),
                    kind: Some(if rng.bool() {
                        command::Kind::Add(AddSandbox { sandbox_id: id(rng), spec: None })
                    } else {
                        command::Kind::Remove(RemoveSandbox { sandbox_id: id(rng), reason: String::new() })
                    }),
                    decided_at_us: 0,
                })
                .collect();
            poll_response::Result::Batch(CommandBatch { commands, more: false })
        } else {
            let sandboxes = (0..rng.usize(0..12)).map(|_| AddSandbox { sandbox_id: id(rng), spec: None }).collect();
            poll_response::Result::FullSync(FullSync { epoch: 2, seq: rng.u64(0..9), sandboxes, ..Default::default() })
        };
        // The local view takes 2 + 2·n + 1 bytes of the front; pad it to that.
        let n = usize::from(front[1] % 17);
        front.truncate(2 + 2 * n + 1);
        front.extend(PollResponse { result: Some(result) }.encode_to_vec());
        front
    }

    #[test]
    fn poll_answers_keep_the_promises_on_random_input() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..3000 {
            poll_response(&random_bytes(&mut rng));
            poll_response(&random_answer(&mut rng));
        }
    }

    #[test]
    fn the_full_sync_diff_keeps_its_promises_on_random_input() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..3000 {
            full_sync_diff(&random_bytes(&mut rng));
        }
    }
}
