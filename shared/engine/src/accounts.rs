//! The accounts of a task, as its connector last listed them: the billing unit, and what
//! the scheduler backs up every day.

use crate::{AccountInfo, Connector, Engine, Error, Result, TaskRecord};
use domain::AccountId;
use ports::{catalog_keys, CatalogExt, Condition, Record};

impl Engine {
    /// The ids of the accounts a task protects.
    pub async fn accounts(&self, task: &TaskRecord) -> Result<Vec<AccountId>> {
        Ok(self
            .account_infos(task)
            .await?
            .into_iter()
            .map(|a| a.id)
            .collect())
    }

    /// The accounts of a task with what is known of them.
    pub async fn account_infos(&self, task: &TaskRecord) -> Result<Vec<AccountInfo>> {
        let range = catalog_keys::accounts(&self.tenant, &task.name);
        let recs = self
            .ports
            .catalog
            .query_all(&range.pk, &range.prefix)
            .await?;
        recs.iter()
            .filter_map(|r| range.rest(&r.sk).map(|id| (id, r)))
            .map(|(id, r)| {
                let id = AccountId::new(id)?;
                Ok(
                    serde_json::from_slice::<AccountInfo>(&r.value).unwrap_or(AccountInfo {
                        name: id.to_string(),
                        id,
                        services: Vec::new(),
                    }),
                )
            })
            .collect()
    }

    /// One account of a task.
    ///
    /// # Errors
    /// `NotFound` for an account the task does not have.
    pub async fn account(&self, task: &TaskRecord, account: &AccountId) -> Result<AccountInfo> {
        let key = catalog_keys::account(&self.tenant, &task.name, account);
        match self.ports.catalog.get(&key.pk, &key.sk).await? {
            Some(r) => Ok(
                serde_json::from_slice::<AccountInfo>(&r.value).unwrap_or(AccountInfo {
                    name: account.to_string(),
                    id: account.clone(),
                    services: Vec::new(),
                }),
            ),
            None => {
                let known = self.accounts(task).await?;
                let hint = if known.is_empty() {
                    "it has none yet: its accounts are listed at its first backup".to_string()
                } else {
                    let names: Vec<&str> = known.iter().map(AccountId::as_str).collect();
                    format!("its accounts: {}", names.join(", "))
                };
                Err(Error::NotFound(format!(
                    "task {} has no account {account} ({hint})",
                    task.name
                )))
            }
        }
    }

    /// Asks the connector for the accounts it protects now and records them (new ones
    /// are added, names refreshed), so that browsing, billing and the scheduler see them.
    /// An account that disappeared at the source keeps its record and its snapshots.
    pub async fn refresh_accounts(
        &self,
        task: &TaskRecord,
        connector: &dyn Connector,
    ) -> Result<Vec<AccountInfo>> {
        let found = connector.accounts().await?;
        for a in &found {
            let key = catalog_keys::account(&self.tenant, &task.name, &a.id);
            let value = serde_json::to_vec(a).expect("account info serialises");
            self.ports
                .catalog
                .put(Record::new(key.pk, key.sk, value), Condition::None)
                .await?;
        }
        Ok(found)
    }
}
