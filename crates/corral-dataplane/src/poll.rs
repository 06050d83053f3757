//! The poll loop: long-poll the server's outbox from the persisted cursor and
//! apply what comes back, in order, exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use corral_core::sequence::plan_batch;
use corral_proto::v1::{command, poll_response, CommandBatch, FullSync, PollRequest};
use tracing::{debug, info, warn};

use crate::apply::{cmd_id, plan_commands, plan_full_sync, to_cmd, Cmd};
use crate::backoff::Backoff;
use crate::cursor::Cursor;
use crate::latency::ReceivedLatency;
use crate::link::Link;
use crate::pool::PoolConf;
use crate::record::spec_from_proto;
use crate::runtime::Runtime;
use crate::DataplaneError;

/// Extra time over `wait_ms` before a poll is given up as lost.
const POLL_SLACK: Duration = Duration::from_secs(30);

/// Polls until a fatal (storage) error. Any RPC error backs off and registers again.
pub async fn poll_loop(link: Arc<Link>, rt: Arc<Runtime>) -> Result<(), DataplaneError> {
    let mut backoff = Backoff::default();
    let latency = ReceivedLatency::open(&link.config.data_dir);
    let _flush = latency.flusher();
    loop {
        let cursor = link.cursor();
        let req = PollRequest {
            host_id: link.config.host_id.clone(),
            epoch: cursor.epoch,
            after_seq: cursor.seq,
            wait_ms: link.config.poll_wait_ms,
            max_commands: 0,
            max_bytes: 0,
        };
        let mut request = tonic::Request::new(req);
        request.set_timeout(Duration::from_millis(link.config.poll_wait_ms) + POLL_SLACK);
        match link.client.clone().poll_commands(request).await {
            Ok(resp) => {
                backoff.reset();
                match resp.into_inner().result {
                    Some(poll_response::Result::Batch(b)) => {
                        let decided = b.commands.iter().map(|c| c.decided_at_us);
                        latency.record(decided, corral_core::time::now_us());
                        let applied = !b.commands.is_empty();
                        apply_batch(&link, &rt, b).await?;
                        // The next poll carries the ack.
                        if applied && link.config.debug_ack_delay_ms > 0 {
                            tokio::time::sleep(Duration::from_millis(link.config.debug_ack_delay_ms)).await;
                        }
                    }
                    Some(poll_response::Result::FullSync(fs)) => {
                        apply_full_sync(&link, &rt, fs).await?
                    }
                    None => {}
                }
            }
            Err(status) => {
                let delay = backoff.next_delay();
                warn!(code = ?status.code(), "poll failed: {}; retrying in {delay:?}", status.message());
                tokio::time::sleep(delay).await;
                link.register().await;
            }
        }
    }
}

/// Applies the in-order part of a batch: duplicates are skipped, a gap stops
/// it (the next poll asks again from the cursor, which the server reads as
/// "resend from here").
async fn apply_batch(
    link: &Link,
    rt: &Arc<Runtime>,
    batch: CommandBatch,
) -> Result<(), DataplaneError> {
    let cursor = link.cursor();
    let seqs: Vec<u64> = batch.commands.iter().map(|c| c.seq).collect();
    let plan = plan_batch(cursor.seq, &seqs);
    if plan.duplicates > 0 {
        debug!(
            duplicates = plan.duplicates,
            "skipped commands already applied"
        );
    }
    if let Some(gap) = plan.gap_at {
        warn!(
            cursor = plan.new_cursor,
            next = gap,
            "gap in the command stream; asking again from the cursor"
        );
    }
    if plan.apply.is_empty() {
        return Ok(());
    }
    let cmds: Vec<Cmd> = plan
        .apply
        .iter()
        .filter_map(|&i| to_cmd(&batch.commands[i].kind))
        .collect();
    let new_cursor = Cursor {
        epoch: cursor.epoch,
        seq: plan.new_cursor,
    };
    let pools: Vec<PoolConf> = plan
        .apply
        .iter()
        .filter_map(|&i| match &batch.commands[i].kind {
            Some(command::Kind::SetPool(sp)) => sp.pool.as_ref().map(PoolConf::from_proto),
            _ => None,
        })
        .collect();
    let local = rt.records_of(cmds.iter().map(cmd_id));
    let mut apply = rt.with_started(|started| plan_commands(&local, started, &cmds, new_cursor));
    // Pool settings are persisted with the cursor they came with.
    apply.change.pools = pools.clone();
    rt.apply(apply).await?;
    rt.pools.set(&pools);
    link.set_cursor(new_cursor);
    debug!(
        applied = cmds.len(),
        cursor = new_cursor.seq,
        "applied commands"
    );
    Ok(())
}

/// Reconciles against the host's complete desired state and adopts its cursor.
async fn apply_full_sync(
    link: &Link,
    rt: &Arc<Runtime>,
    fs: FullSync,
) -> Result<(), DataplaneError> {
    let desired: BTreeMap<String, _> = fs
        .sandboxes
        .into_iter()
        .map(|a| (a.sandbox_id, spec_from_proto(a.spec)))
        .collect();
    let cursor = Cursor {
        epoch: fs.epoch,
        seq: fs.seq,
    };
    info!(reason = %fs.reason, epoch = fs.epoch, seq = fs.seq, wanted = desired.len(), "full sync");
    let local = rt.all_records();
    let pools: Vec<PoolConf> = fs.pools.iter().map(PoolConf::from_proto).collect();
    let mut plan = rt.with_started(|started| plan_full_sync(&local, started, &desired, cursor));
    plan.change.pools = pools.clone();
    plan.change.pools_replace = true;
    rt.apply(plan).await?;
    rt.pools.replace(&pools);
    link.set_cursor(cursor);
    Ok(())
}
