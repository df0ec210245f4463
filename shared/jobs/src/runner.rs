//! Runs queued jobs: a batch as Lambda's SQS trigger delivers it (reporting the messages
//! that failed, so that only those come back), or the local queue until it is empty.

use crate::fetch::{run_backup, Outcome};
use crate::transfer::{run_export, run_prune, run_restore};
use crate::Context;
use domain::{JobEnvelope, JobKind};
use serde::Serialize;
use std::time::Duration;

/// One delivered message.
#[derive(Clone, Debug)]
pub struct Incoming {
    /// SQS's message id (what a partial batch failure names).
    pub id: String,
    pub body: String,
}

/// What happened to one message.
#[derive(Clone, Debug, Serialize)]
pub struct Handled {
    pub id: String,
    /// `None` when the message must come back (a failure, or the account was busy).
    pub outcome: Option<Outcome>,
    /// Why it failed: one line, no secrets.
    pub error: Option<String>,
}

impl Handled {
    pub fn failed(&self) -> bool {
        self.outcome.as_ref().is_none_or(Outcome::retry)
    }
}

fn report(r: engine::Result<Outcome>) -> (Option<Outcome>, Option<String>) {
    match r {
        Ok(o) => (Some(o), None),
        Err(e) => (None, Some(e.to_string())),
    }
}

/// Runs one message's job.
pub async fn handle(ctx: &Context, msg: &Incoming) -> Handled {
    let (outcome, error) = match JobEnvelope::decode(&msg.body) {
        // A message this build cannot read never will: it fails every delivery and ends
        // in the dead-letter queue, where it is reported.
        Err(why) => (None, Some(why)),
        Ok(env) => match env.job {
            JobKind::Backup(job) => match run_backup(ctx, &job).await {
                Ok(o) => (Some(o), None),
                Err(e) => {
                    tracing::warn!(tenant = %job.tenant, task = %job.task, error = %e, "backup job failed");
                    (None, Some(e.to_string()))
                }
            },
            JobKind::Restore(job) => report(run_restore(ctx, &job).await),
            JobKind::Export(job) => report(run_export(ctx, &job).await),
            JobKind::Prune(job) => report(run_prune(ctx, &job).await),
        },
    };
    Handled {
        id: msg.id.clone(),
        outcome,
        error,
    }
}

/// Runs a batch one message at a time (a backup uses both cores by itself) and returns
/// what happened to each; the ids of the failed ones are Lambda's partial batch response.
pub async fn handle_batch(ctx: &Context, msgs: &[Incoming]) -> Vec<Handled> {
    let mut out = Vec::with_capacity(msgs.len());
    for m in msgs {
        out.push(handle(ctx, m).await);
    }
    out
}

/// What draining the local queue did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DrainReport {
    pub handled: Vec<Handled>,
    /// Messages set aside in the dead-letter queue.
    pub dead_letters: Vec<String>,
}

/// Runs the context's queue until no message is visible: the local worker, and the way
/// tests drive the same code the fetcher Lambda runs.
///
/// # Errors
/// A queue failure.
pub async fn drain(ctx: &Context, visibility: Duration) -> ports::Result<DrainReport> {
    let mut report = DrainReport::default();
    loop {
        let msgs = ctx
            .queue
            .receive(ports::QUEUE_MAX_BATCH, visibility)
            .await?;
        if msgs.is_empty() {
            break;
        }
        for m in msgs {
            let h = handle(
                ctx,
                &Incoming {
                    id: m.receipt.clone(),
                    body: m.body,
                },
            )
            .await;
            if !h.failed() {
                ctx.queue.delete(&m.receipt).await?;
            }
            report.handled.push(h);
        }
    }
    report.dead_letters = ctx.queue.dead_letters().await?;
    Ok(report)
}
