//! Verifying a task's vault: every pack read and checked, every snapshot walked, and each
//! damaged or missing object named with the items it affects, so a customer knows exactly
//! what cannot be restored (and a scheduled verify can alert before anyone needs it).

use crate::{Engine, Progress, Result, TaskRecord};
use vault::VerifyReport;

impl Engine {
    /// Verifies every snapshot of every account of `task`. Damage is in the report, not an
    /// error.
    ///
    /// # Errors
    /// Only when the store or catalog cannot be read at all.
    pub async fn verify(&self, task: &TaskRecord, progress: &dyn Progress) -> Result<VerifyReport> {
        let vault = self.vault(task).await?;
        let accounts = self.accounts(task).await?;
        Ok(vault.verify(&accounts, &|n| progress.advance(n)).await?)
    }
}
