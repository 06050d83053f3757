//! What applying commands means, as pure functions: given the local view and
//! a batch (or a full sync), the records to persist and the actions to take
//! once they are durable. The poll loop does the I/O; everything decided here
//! is unit-tested.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use corral_core::reconcile;
use corral_core::SandboxSpec;

use corral_proto::v1::command;

use crate::cursor::{Change, Cursor};
use crate::record::{spec_from_proto, Record, Status};

/// A command as the dataplane applies it (reasons stay strings: the dataplane
/// passes them through without needing to understand new ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Add { id: String, spec: SandboxSpec },
    Remove { id: String, reason: String },
}

/// Something to do once the change is persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A new sandbox: start it (in arrival order).
    Start(String),
    /// A known alive sandbox: stop it and report STOPPED.
    Stop { id: String, reason: String },
    /// Nothing runs under this id (unknown or already ended): just report STOPPED.
    ReportStopped { id: String, reason: String },
    /// It ran here before and was forgotten: report it ended, never restart it.
    ReportGone(String),
    /// Ended and no longer wanted: drop its record and files.
    Forget(String),
}

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Persisted in one transaction before any action runs.
    pub change: Change,
    pub actions: Vec<Action>,
}

/// Plans applying `cmds` (already filtered by `plan_batch`) on top of `local`.
/// `started` holds every id ever started here.
pub fn plan_commands(
    local: &BTreeMap<String, Record>,
    started: &HashSet<String>,
    cmds: &[Cmd],
    cursor: Cursor,
) -> Plan {
    let mut view: BTreeMap<&str, Record> = BTreeMap::new();
    let mut plan = Plan::default();
    for cmd in cmds {
        match cmd {
            Cmd::Add { id, spec } => {
                if view.contains_key(id.as_str()) || local.contains_key(id) {
                    continue; // idempotent by id
                }
                if started.contains(id) {
                    plan.actions.push(Action::ReportGone(id.clone()));
                    continue;
                }
                view.insert(
                    id,
                    Record {
                        spec: spec.clone(),
                        status: Status::Alive,
                    },
                );
                plan.actions.push(Action::Start(id.clone()));
            }
            Cmd::Remove { id, reason } => {
                let current = view.get(id.as_str()).or_else(|| local.get(id)).cloned();
                match current {
                    Some(r) if r.status.is_alive() => {
                        view.insert(
                            id,
                            Record {
                                spec: r.spec,
                                status: Status::Stopping {
                                    reason: reason.clone(),
                                },
                            },
                        );
                        plan.actions.push(Action::Stop {
                            id: id.clone(),
                            reason: reason.clone(),
                        });
                    }
                    Some(Record {
                        status: Status::Stopping { .. } | Status::Stopped { .. },
                        ..
                    }) => {}
                    Some(r) => {
                        view.insert(
                            id,
                            Record {
                                spec: r.spec,
                                status: Status::Stopped {
                                    reason: reason.clone(),
                                },
                            },
                        );
                        plan.actions.push(Action::ReportStopped {
                            id: id.clone(),
                            reason: reason.clone(),
                        });
                    }
                    None => plan.actions.push(Action::ReportStopped {
                        id: id.clone(),
                        reason: reason.clone(),
                    }),
                }
            }
        }
    }
    plan.change.cursor = Some(cursor);
    plan.change.upsert = view
        .into_iter()
        .map(|(id, r)| (id.to_string(), r))
        .collect();
    plan
}

/// The sandbox command a wire command carries; `None` for pool settings
/// (applied separately) and for an empty command.
pub(crate) fn to_cmd(kind: &Option<command::Kind>) -> Option<Cmd> {
    match kind.as_ref()? {
        command::Kind::SetPool(_) => None,
        command::Kind::Add(a) => Some(Cmd::Add {
            id: a.sandbox_id.clone(),
            spec: spec_from_proto(a.spec.clone()),
        }),
        command::Kind::Remove(r) => {
            let reason = if r.reason.is_empty() {
                "deleted".to_string()
            } else {
                r.reason.clone()
            };
            Some(Cmd::Remove {
                id: r.sandbox_id.clone(),
                reason,
            })
        }
    }
}

pub(crate) fn cmd_id(c: &Cmd) -> &str {
    match c {
        Cmd::Add { id, .. } | Cmd::Remove { id, .. } => id,
    }
}

/// The reason given for sandboxes a full sync no longer wants.
pub const UNWANTED_REASON: &str = "deleted";

/// Plans a full sync: the desired sandboxes of the host and the cursor to adopt.
pub fn plan_full_sync(
    local: &BTreeMap<String, Record>,
    started: &HashSet<String>,
    desired: &BTreeMap<String, SandboxSpec>,
    cursor: Cursor,
) -> Plan {
    let wanted: BTreeSet<String> = desired.keys().cloned().collect();
    let view = local
        .iter()
        .map(|(id, r)| (id.clone(), r.status.local()))
        .collect();
    let d = reconcile::diff(&wanted, &view);
    let mut plan = Plan::default();
    for id in d.start {
        if started.contains(&id) {
            plan.actions.push(Action::ReportGone(id));
        } else if let Some(spec) = desired.get(&id) {
            plan.change.upsert.push((
                id.clone(),
                Record {
                    spec: spec.clone(),
                    status: Status::Alive,
                },
            ));
            plan.actions.push(Action::Start(id));
        }
    }
    for id in d.stop {
        if let Some(r) = local.get(&id) {
            let status = Status::Stopping {
                reason: UNWANTED_REASON.into(),
            };
            plan.change.upsert.push((
                id.clone(),
                Record {
                    spec: r.spec.clone(),
                    status,
                },
            ));
            plan.actions.push(Action::Stop {
                id,
                reason: UNWANTED_REASON.into(),
            });
        }
    }
    for id in d.forget {
        plan.change.delete.push(id.clone());
        plan.actions.push(Action::Forget(id));
    }
    plan.change.cursor = Some(cursor);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SandboxSpec {
        SandboxSpec {
            template: "base".into(),
            cpu_millis: 100,
            memory_mb: 64,
            ttl_s: 60,
            ..Default::default()
        }
    }

    fn rec(status: Status) -> Record {
        Record {
            spec: spec(),
            status,
        }
    }

    fn add(id: &str) -> Cmd {
        Cmd::Add {
            id: id.into(),
            spec: spec(),
        }
    }

    fn rm(id: &str) -> Cmd {
        Cmd::Remove {
            id: id.into(),
            reason: "deleted".into(),
        }
    }

    const C: Cursor = Cursor { epoch: 1, seq: 5 };

    #[test]
    fn adds_start_once_per_id() {
        let local = BTreeMap::from([("a".to_string(), rec(Status::Alive))]);
        let started = HashSet::from(["old".to_string()]);
        let p = plan_commands(
            &local,
            &started,
            &[add("a"), add("b"), add("b"), add("old")],
            C,
        );
        assert_eq!(
            p.actions,
            vec![Action::Start("b".into()), Action::ReportGone("old".into())]
        );
        assert_eq!(p.change.upsert, vec![("b".to_string(), rec(Status::Alive))]);
        assert_eq!(p.change.cursor, Some(C));
    }

    #[test]
    fn removes_stop_alive_and_settle_the_rest() {
        let local = BTreeMap::from([
            ("a".to_string(), rec(Status::Alive)),
            (
                "e".to_string(),
                rec(Status::Exited {
                    message: "x".into(),
                }),
            ),
            (
                "s".to_string(),
                rec(Status::Stopping {
                    reason: "deleted".into(),
                }),
            ),
        ]);
        let p = plan_commands(
            &local,
            &HashSet::new(),
            &[rm("a"), rm("e"), rm("s"), rm("zz"), add("n"), rm("n")],
            C,
        );
        let stop = |id: &str| Action::Stop {
            id: id.into(),
            reason: "deleted".into(),
        };
        let report = |id: &str| Action::ReportStopped {
            id: id.into(),
            reason: "deleted".into(),
        };
        assert_eq!(
            p.actions,
            vec![
                stop("a"),
                report("e"),
                report("zz"),
                Action::Start("n".into()),
                stop("n")
            ]
        );
        let stopping = rec(Status::Stopping {
            reason: "deleted".into(),
        });
        assert_eq!(
            p.change.upsert,
            vec![
                ("a".to_string(), stopping.clone()),
                (
                    "e".to_string(),
                    rec(Status::Stopped {
                        reason: "deleted".into()
                    })
                ),
                ("n".to_string(), stopping),
            ]
        );
    }

    #[test]
    fn a_full_sync_keeps_starts_stops_and_forgets() {
        let local = BTreeMap::from([
            ("keep".to_string(), rec(Status::Alive)),
            (
                "ended".to_string(),
                rec(Status::Exited {
                    message: "x".into(),
                }),
            ),
            ("unwanted".to_string(), rec(Status::Alive)),
            (
                "gone".to_string(),
                rec(Status::Stopped {
                    reason: "deleted".into(),
                }),
            ),
        ]);
        let desired = BTreeMap::from([
            ("keep".to_string(), spec()),
            ("ended".to_string(), spec()),
            ("new".to_string(), spec()),
            ("ran-before".to_string(), spec()),
        ]);
        let started = HashSet::from(["ran-before".to_string()]);
        let p = plan_full_sync(&local, &started, &desired, Cursor { epoch: 9, seq: 40 });
        assert_eq!(
            p.actions,
            vec![
                Action::Start("new".into()),
                Action::ReportGone("ran-before".into()),
                Action::Stop {
                    id: "unwanted".into(),
                    reason: "deleted".into()
                },
                Action::Forget("gone".into()),
            ]
        );
        assert_eq!(p.change.delete, vec!["gone".to_string()]);
        assert_eq!(p.change.cursor, Some(Cursor { epoch: 9, seq: 40 }));
    }
}
