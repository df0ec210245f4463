//! Tasks and accounts: what a tenant has connected, each task with its own data key.

use crate::{Engine, Error, Result};
use chrono::{DateTime, Utc};
use domain::{AccountId, TaskId};
use ports::{CatalogExt, Condition, EncryptionContext, ObjectKey, ObjectStoreExt, Record};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use vault::Vault;

/// The daily backup hour (UTC) when the tenant has not chosen one.
pub const DEFAULT_BACKUP_HOUR: u8 = 2;

/// Where a task's data comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceConfig {
    /// A local folder, backed up as one account.
    Files { path: PathBuf },
}

impl SourceConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Files { .. } => "files",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub name: TaskId,
    pub source: SourceConfig,
    /// The task's data key, wrapped by the key service under `{tenant, task}` (with the
    /// tenant's own key, which deleting the tenant destroys).
    #[serde(with = "hex_bytes")]
    pub wrapped_key: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub backup_hour: u8,
    /// Set while the task's data is being deleted.
    #[serde(default)]
    pub deleting: bool,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The account of a `files` task: the folder is one protected account.
pub const FILES_ACCOUNT: &str = "folder";

impl Engine {
    fn tenant_pk(&self) -> String {
        format!("t#{}", self.tenant)
    }

    /// Connects a new task and gives it a fresh data key.
    ///
    /// # Errors
    /// `Invalid` when the name is taken; a key service or catalog failure.
    pub async fn add_task(&self, name: TaskId, source: SourceConfig) -> Result<TaskRecord> {
        let ctx = EncryptionContext::for_task(&self.tenant, &name);
        let key = self.ports.keys.generate_data_key(&ctx).await?;
        let rec = TaskRecord {
            name: name.clone(),
            source,
            wrapped_key: key.wrapped.clone(),
            created_at: self.ports.clock.now(),
            backup_hour: DEFAULT_BACKUP_HOUR,
            deleting: false,
        };
        let value = serde_json::to_vec(&rec).expect("task records serialise");
        let mut ops = vec![ports::TxOp::Put(
            Record::new(self.tenant_pk(), format!("task#{name}"), value),
            Condition::Absent,
        )];
        match rec.source {
            // A files task protects exactly one account, known from the start.
            SourceConfig::Files { .. } => ops.push(ports::TxOp::Put(
                Record::new(
                    self.tenant_pk(),
                    format!("account#{name}#{FILES_ACCOUNT}"),
                    Vec::new(),
                ),
                Condition::None,
            )),
        }
        match self.ports.catalog.transact(ops).await {
            Ok(()) => Ok(rec),
            Err(e) if e.kind() == ports::ErrorKind::ConditionFailed => Err(Error::Invalid(
                format!("a task named {name} already exists; choose another name"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn tasks(&self) -> Result<Vec<TaskRecord>> {
        let recs = self
            .ports
            .catalog
            .query_all(&self.tenant_pk(), "task#")
            .await?;
        recs.iter()
            .map(|r| {
                serde_json::from_slice(&r.value)
                    .map_err(|e| Error::Invalid(format!("task record {} is unreadable: {e}", r.sk)))
            })
            .collect()
    }

    /// # Errors
    /// `NotFound` with the names of the tasks that do exist.
    pub async fn task(&self, name: &str) -> Result<TaskRecord> {
        let name = TaskId::new(name)?;
        match self
            .ports
            .catalog
            .get(&self.tenant_pk(), &format!("task#{name}"))
            .await?
        {
            Some(r) => serde_json::from_slice(&r.value)
                .map_err(|e| Error::Invalid(format!("task record {name} is unreadable: {e}"))),
            None => {
                let names: Vec<String> = self
                    .tasks()
                    .await?
                    .into_iter()
                    .map(|t| t.name.to_string())
                    .collect();
                let hint = if names.is_empty() {
                    "there are no tasks yet; add one with `lifeboat task add`".to_string()
                } else {
                    format!("tasks: {}", names.join(", "))
                };
                Err(Error::NotFound(format!("no task named {name} ({hint})")))
            }
        }
    }

    /// The accounts a task protects.
    pub async fn accounts(&self, task: &TaskRecord) -> Result<Vec<AccountId>> {
        let prefix = format!("account#{}#", task.name);
        let recs = self
            .ports
            .catalog
            .query_all(&self.tenant_pk(), &prefix)
            .await?;
        recs.iter()
            .map(|r| Ok(AccountId::new(&r.sk[prefix.len()..])?))
            .collect()
    }

    /// Opens a task's vault, unwrapping its data key.
    ///
    /// # Errors
    /// `Invalid` for a task being deleted; the key service's `Integrity` error when the
    /// wrapped key does not belong to this tenant and task.
    pub async fn vault(&self, task: &TaskRecord) -> Result<Vault> {
        if task.deleting {
            return Err(Error::Invalid(format!(
                "task {} is being deleted",
                task.name
            )));
        }
        let ctx = EncryptionContext::for_task(&self.tenant, &task.name);
        let key = self
            .ports
            .keys
            .decrypt_data_key(&task.wrapped_key, &ctx)
            .await?;
        Ok(Vault::new(
            self.tenant.clone(),
            task.name.clone(),
            &key,
            self.ports.store.clone(),
            self.ports.catalog.clone(),
        ))
    }

    /// Deletes everything of this tenant. The keys go first (crypto-shredding: the key
    /// service destroys the tenant's key, so from that moment no copy of any of its wrapped
    /// data keys, and so nothing stored, can be decrypted), then objects, then catalog
    /// records. Safe to run again after an interruption.
    pub async fn delete_tenant(&self) -> Result<()> {
        self.ports.keys.destroy_tenant_keys(&self.tenant).await?;
        let catalog = &self.ports.catalog;
        let pk = self.tenant_pk();
        let tasks = self.tasks().await?;
        for t in &tasks {
            let mut shredded = t.clone();
            shredded.wrapped_key.clear();
            shredded.deleting = true;
            let value = serde_json::to_vec(&shredded).expect("task records serialise");
            catalog
                .put(
                    Record::new(pk.clone(), format!("task#{}", t.name), value),
                    Condition::None,
                )
                .await?;
        }
        let store = &self.ports.store;
        for (key, _) in store
            .list_all(&ObjectKey::tenant_prefix(&self.tenant))
            .await?
        {
            store.delete(&key).await?;
        }
        for t in &tasks {
            for a in self.accounts(t).await? {
                for part in [
                    vault::snapshot::snapshots_pk(&self.tenant, &t.name, &a),
                    vault::snapshot::pending_pk(&self.tenant, &t.name, &a),
                ] {
                    for r in catalog.query_all(&part, "").await? {
                        catalog.delete(&part, &r.sk, Condition::None).await?;
                    }
                }
            }
        }
        for r in catalog.query_all(&pk, "").await? {
            catalog.delete(&pk, &r.sk, Condition::None).await?;
        }
        Ok(())
    }
}
