//! Restart adoption: reconciling the records a previous dataplane persisted
//! with the processes it left behind (it may have been SIGKILLed anywhere).
//!
//! - a live keeper of an alive record is adopted and re-reported STARTED;
//! - an alive record that was spawned (in `starts.log`) but has no keeper
//!   ended while nobody watched: EXITED;
//! - an alive record never spawned (crash between persisting and spawning)
//!   is started now;
//! - terminal records re-report their event (it may never have been acked);
//! - anything else alive on this data dir is half-made or orphaned: killed.
//!
//! Nothing is started twice: only ids absent from `starts.log` are started.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::cursor::Change;
use crate::driver::Discovered;
use crate::events::Event;
use crate::record::{Record, Status};
use crate::runtime::Runtime;

pub const GONE_MESSAGE: &str = "process gone while the dataplane was down";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootAction {
    KillStray(Discovered),
    Adopt {
        id: String,
        found: Discovered,
    },
    /// Persisted but never spawned: start it now.
    Start(String),
    /// Spawned, and its keeper is gone.
    Gone(String),
    /// Was being stopped: finish (remove files) and report STOPPED.
    FinishStop {
        id: String,
        reason: String,
    },
    /// Already ended: report its event again.
    Reemit(String),
}

/// Decides what to do with each record and each live process.
pub fn plan_boot(
    records: &BTreeMap<String, Record>,
    started: &HashSet<String>,
    live: &[Discovered],
) -> Vec<BootAction> {
    let mut kills = Vec::new();
    let mut actions = Vec::new();
    let mut adopted = HashSet::new();
    for found in live.iter().filter(|f| f.keeper) {
        let alive = records
            .get(&found.sandbox_id)
            .is_some_and(|r| r.status.is_alive());
        if alive && adopted.insert(found.sandbox_id.clone()) {
            actions.push(BootAction::Adopt {
                id: found.sandbox_id.clone(),
                found: found.clone(),
            });
        } else {
            kills.push(BootAction::KillStray(found.clone()));
        }
    }
    // Commands exec'd in an adopted sandbox live on with it; the rest go.
    for found in live
        .iter()
        .filter(|f| !f.keeper && !adopted.contains(&f.sandbox_id))
    {
        kills.push(BootAction::KillStray(found.clone()));
    }
    for (id, record) in records {
        let action = match &record.status {
            Status::Alive if adopted.contains(id) => continue,
            Status::Alive if started.contains(id) => BootAction::Gone(id.clone()),
            Status::Alive => BootAction::Start(id.clone()),
            Status::Stopping { reason } => BootAction::FinishStop {
                id: id.clone(),
                reason: reason.clone(),
            },
            _ => BootAction::Reemit(id.clone()),
        };
        actions.push(action);
    }
    kills.extend(actions);
    kills
}

/// Loads the records into the runtime and carries out the boot plan. Returns
/// the events to report once the heartbeat runs.
pub async fn boot(
    rt: &Arc<Runtime>,
    records: BTreeMap<String, Record>,
) -> Result<Vec<Event>, crate::DataplaneError> {
    let live = rt.driver.discover().await?;
    let plan = rt.with_started(|started| plan_boot(&records, started, &live));
    for (id, record) in &records {
        rt.insert(id, record.clone());
    }
    let mut events = Vec::new();
    let mut upsert = Vec::new();
    let mut set = |id: &str, status: Status| {
        if let Some(sb) = rt.get(id) {
            upsert.push((
                id.to_string(),
                Record {
                    spec: sb.spec.clone(),
                    status,
                },
            ));
        }
    };
    for action in plan {
        match action {
            BootAction::KillStray(found) => rt.driver.kill_stray(&found),
            BootAction::Adopt { id, found } => match (rt.get(&id), rt.driver.adopt(&id, &found)) {
                (Some(sb), Ok(started)) => {
                    tracing::info!(sandbox_id = %id, pid = found.pid, "adopted a running sandbox");
                    rt.log_adopted(&id);
                    let path = if rt.driver.was_claimed(&id) {
                        rt.pools.claimed(&sb.spec.template, &id);
                        "warm"
                    } else {
                        "cold"
                    };
                    rt.watch(&sb, started);
                    events.push(Event::started(&id, path));
                }
                _ => {
                    set(
                        &id,
                        Status::Exited {
                            message: GONE_MESSAGE.into(),
                        },
                    );
                    events.push(Event::exited(&id, GONE_MESSAGE));
                }
            },
            BootAction::Start(id) => rt.queue_start(id),
            BootAction::Gone(id) => {
                set(
                    &id,
                    Status::Exited {
                        message: GONE_MESSAGE.into(),
                    },
                );
                events.push(Event::exited(&id, GONE_MESSAGE));
            }
            BootAction::FinishStop { id, reason } => {
                if let Err(e) = rt.driver.remove(&id) {
                    tracing::warn!(sandbox_id = %id, "remove: {e}");
                }
                set(
                    &id,
                    Status::Stopped {
                        reason: reason.clone(),
                    },
                );
                events.push(Event::stopped(&id, &reason));
            }
            BootAction::Reemit(id) => events.extend(reemit(&id, records.get(&id))),
        }
    }
    for (id, record) in &upsert {
        rt.insert(id, record.clone());
    }
    rt.persist(
        Change {
            upsert,
            ..Default::default()
        },
        true,
    )
    .await?;
    Ok(events)
}

fn reemit(id: &str, record: Option<&Record>) -> Option<Event> {
    match &record?.status {
        Status::StartFailed { message } => Some(Event::start_failed(id, message)),
        Status::Exited { message } => Some(Event::exited(id, message)),
        Status::OomKilled { message } => Some(Event::oom_killed(id, message)),
        Status::Stopped { reason } => Some(Event::stopped(id, reason)),
        Status::Alive | Status::Stopping { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_core::SandboxSpec;

    fn rec(status: Status) -> Record {
        let spec = SandboxSpec {
            template: "base".into(),
            cpu_millis: 1,
            memory_mb: 1,
            ttl_s: 1,
            ..Default::default()
        };
        Record { spec, status }
    }

    fn proc(id: &str, pid: i32, keeper: bool) -> Discovered {
        Discovered {
            sandbox_id: id.into(),
            pid,
            keeper,
        }
    }

    #[test]
    fn adopts_reports_starts_and_kills_as_documented() {
        let records = BTreeMap::from([
            ("running".to_string(), rec(Status::Alive)),
            ("died".to_string(), rec(Status::Alive)),
            ("never".to_string(), rec(Status::Alive)),
            (
                "stopping".to_string(),
                rec(Status::Stopping {
                    reason: "deleted".into(),
                }),
            ),
            (
                "exited".to_string(),
                rec(Status::Exited {
                    message: "m".into(),
                }),
            ),
        ]);
        let started: HashSet<String> = ["running", "died", "stopping", "exited"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let live = vec![
            proc("running", 10, true),
            proc("running", 11, false),
            proc("stopping", 20, true),
            proc("unknown", 30, true),
            proc("died", 40, false),
        ];
        let plan = plan_boot(&records, &started, &live);
        assert_eq!(
            plan,
            vec![
                BootAction::KillStray(proc("stopping", 20, true)),
                BootAction::KillStray(proc("unknown", 30, true)),
                BootAction::KillStray(proc("died", 40, false)),
                BootAction::Adopt {
                    id: "running".into(),
                    found: proc("running", 10, true)
                },
                BootAction::Gone("died".into()),
                BootAction::Reemit("exited".into()),
                BootAction::Start("never".into()),
                BootAction::FinishStop {
                    id: "stopping".into(),
                    reason: "deleted".into()
                },
            ]
        );
    }
}
