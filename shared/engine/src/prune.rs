//! Reclaiming a task's space: packs left by crashed runs or emptied by a repack deleted,
//! small and mostly dead packs rewritten. The protocol (two-phase delete with a grace
//! period, safe beside running backups) is the vault's; see its `prune` module.

use crate::{Engine, Progress, Result, TaskRecord};
use domain::AccountId;
use vault::{PruneOptions, PruneReport};

/// What a prune or repack did to one task, account by account.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TaskPruneReport {
    pub accounts: Vec<AccountPrune>,
    /// The sums over the accounts.
    pub total: PruneReport,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct AccountPrune {
    pub account: AccountId,
    #[serde(flatten)]
    pub report: PruneReport,
}

impl Engine {
    /// Prunes (and, with `opts.repack`, repacks) every account of `task`; `progress`
    /// advances by one per account.
    ///
    /// # Errors
    /// A store or catalog failure. An account whose snapshots cannot all be read is held
    /// back (nothing of it deleted) and said so in its report; the others go on.
    pub async fn prune(
        &self,
        task: &TaskRecord,
        opts: &PruneOptions,
        progress: &dyn Progress,
    ) -> Result<TaskPruneReport> {
        let vault = self.vault(task).await?;
        let mut out = TaskPruneReport::default();
        for account in self.accounts(task).await? {
            let report = vault.account(&account).prune(opts).await?;
            add(&mut out.total, &report);
            out.accounts.push(AccountPrune { account, report });
            progress.advance(1);
        }
        Ok(out)
    }
}

fn add(t: &mut PruneReport, r: &PruneReport) {
    t.packs += r.packs;
    t.bytes += r.bytes;
    t.live_packs += r.live_packs;
    t.dead_bytes_in_live_packs += r.dead_bytes_in_live_packs;
    t.repacked += r.repacked;
    t.repacked_bytes += r.repacked_bytes;
    t.moved_blobs += r.moved_blobs;
    t.new_packs += r.new_packs;
    t.condemned += r.condemned;
    t.condemned_bytes += r.condemned_bytes;
    t.revived += r.revived;
    t.deleted += r.deleted;
    t.deleted_bytes += r.deleted_bytes;
    t.waiting += r.waiting;
    if t.held_back.is_none() {
        t.held_back.clone_from(&r.held_back);
    }
}
