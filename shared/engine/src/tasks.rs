//! Tasks and accounts: what a tenant has connected, each task with its own data key.

use crate::{Engine, Error, Result};
use chrono::{DateTime, Utc};
use domain::{AccountId, TaskId, TenantId};
use ports::{CatalogExt, Condition, EncryptionContext, ObjectKey, ObjectStoreExt, Record};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use vault::Vault;
use zeroize::Zeroizing;

/// The daily backup hour (UTC) when the tenant has not chosen one.
pub const DEFAULT_BACKUP_HOUR: u8 = 2;

/// Where a task's data comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceConfig {
    /// A local folder, backed up as one account.
    Files { path: PathBuf },
    /// A SaaS source served by a connector (see [`crate::source`]): `source` names it
    /// (`imap`, `m365`, …) and `settings` are its own, never secret, settings.
    Source {
        source: String,
        settings: serde_json::Value,
        /// The credential (password, token, client secret), sealed with the task's key;
        /// empty when the source needs none.
        #[serde(default, with = "hex_bytes")]
        sealed_secret: Vec<u8>,
    },
}

impl SourceConfig {
    /// `files`, or the connector's name.
    pub fn kind(&self) -> &str {
        match self {
            SourceConfig::Files { .. } => "files",
            SourceConfig::Source { source, .. } => source,
        }
    }

    /// A connector source with `settings` (its credential is given to
    /// [`Engine::add_task_with_secret`]).
    pub fn source(name: &str, settings: serde_json::Value) -> Self {
        SourceConfig::Source {
            source: name.to_string(),
            settings,
            sealed_secret: Vec::new(),
        }
    }
}

/// The id a task's credential is sealed under (with the task's key and the kind `Secret`,
/// so a sealed credential moved to another task does not open).
const SECRET_ID: [u8; 32] = *b"lifeboat task credential v1\0\0\0\0\0";

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

/// The schedule index is spread over this many partitions per hour, so that a million
/// tasks due at 02:00 do not share one DynamoDB partition.
pub const SCHEDULE_SHARDS: u32 = 16;

/// The partition of the schedule index holding the tasks of `hour` (UTC) in `shard`.
///
/// This index is the one place where keys do not start with a tenant: the scheduler must
/// find every tenant's due tasks without scanning the table. It holds only tenant and task
/// names, never customer data, and is written and read only by Lifeboat itself.
pub fn schedule_pk(hour: u8, shard: u32) -> String {
    format!("sched#{hour:02}#{shard:02}")
}

/// The sort key of a task in the schedule index.
pub fn schedule_sk(tenant: &TenantId, task: &TaskId) -> String {
    format!("{tenant}#{task}")
}

fn schedule_shard(tenant: &TenantId, task: &TaskId) -> u32 {
    let h = blake3::hash(schedule_sk(tenant, task).as_bytes());
    u32::from_le_bytes(h.as_bytes()[..4].try_into().expect("4 bytes")) % SCHEDULE_SHARDS
}

fn schedule_record(tenant: &TenantId, task: &TaskId, hour: u8) -> Record {
    Record::new(
        schedule_pk(hour, schedule_shard(tenant, task)),
        schedule_sk(tenant, task),
        Vec::new(),
    )
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
        self.add_task_with_secret(name, source, None).await
    }

    /// Connects a new task whose source needs a credential, sealed with the task's own
    /// data key before it is stored (so it is shredded with the tenant's keys).
    ///
    /// # Errors
    /// As [`Engine::add_task`]; `Invalid` when a `files` task is given a secret.
    pub async fn add_task_with_secret(
        &self,
        name: TaskId,
        mut source: SourceConfig,
        secret: Option<&str>,
    ) -> Result<TaskRecord> {
        let ctx = EncryptionContext::for_task(&self.tenant, &name);
        let key = self.ports.keys.generate_data_key(&ctx).await?;
        if let Some(secret) = secret {
            let SourceConfig::Source { sealed_secret, .. } = &mut source else {
                return Err(Error::Invalid("a files task has no credential".into()));
            };
            let keys = vault::TaskKeys::derive(&key.plaintext, self.tenant.as_str(), name.as_str());
            *sealed_secret = keys.seal(
                vault::crypto::SealKind::Secret,
                &SECRET_ID,
                secret.as_bytes(),
            )?;
        }
        let rec = TaskRecord {
            name: name.clone(),
            source,
            wrapped_key: key.wrapped.clone(),
            created_at: self.ports.clock.now(),
            backup_hour: DEFAULT_BACKUP_HOUR,
            deleting: false,
        };
        let value = serde_json::to_vec(&rec).expect("task records serialise");
        let mut ops = vec![
            ports::TxOp::Put(
                Record::new(self.tenant_pk(), format!("task#{name}"), value),
                Condition::Absent,
            ),
            ports::TxOp::Put(
                schedule_record(&self.tenant, &name, DEFAULT_BACKUP_HOUR),
                Condition::None,
            ),
        ];
        match rec.source {
            // A connector task's accounts come from its source, at the first backup.
            SourceConfig::Source { .. } => {}
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

    /// The task's credential for its source, if it has one. Held in memory only as long
    /// as the connector needs it, and wiped when dropped.
    ///
    /// # Errors
    /// The key service's error, or `Damaged` when the sealed credential was altered.
    pub async fn task_secret(&self, task: &TaskRecord) -> Result<Option<Zeroizing<String>>> {
        let SourceConfig::Source { sealed_secret, .. } = &task.source else {
            return Ok(None);
        };
        if sealed_secret.is_empty() {
            return Ok(None);
        }
        let vault = self.vault(task).await?;
        let plain = Zeroizing::new(vault.keys().open(
            vault::crypto::SealKind::Secret,
            &SECRET_ID,
            sealed_secret,
            &format!("the credential of task {}", task.name),
        )?);
        let s = std::str::from_utf8(&plain).map_err(|_| {
            Error::Invalid(format!("the credential of task {} is not text", task.name))
        })?;
        Ok(Some(Zeroizing::new(s.to_string())))
    }

    /// Replaces a task's credential (an administrator changed the password or secret).
    ///
    /// # Errors
    /// `Invalid` for a `files` task; a catalog failure, or `Invalid` when the task changed
    /// meanwhile (try again).
    pub async fn replace_secret(&self, name: &str, secret: &str) -> Result<TaskRecord> {
        let rec = self
            .ports
            .catalog
            .get(&self.tenant_pk(), &format!("task#{}", TaskId::new(name)?))
            .await?
            .ok_or_else(|| Error::NotFound(format!("no task named {name}")))?;
        let mut task: TaskRecord = serde_json::from_slice(&rec.value)
            .map_err(|e| Error::Invalid(format!("task record {name} is unreadable: {e}")))?;
        let vault = self.vault(&task).await?;
        let SourceConfig::Source { sealed_secret, .. } = &mut task.source else {
            return Err(Error::Invalid(format!(
                "task {name} reads a local folder and has no credential"
            )));
        };
        *sealed_secret = vault.keys().seal(
            vault::crypto::SealKind::Secret,
            &SECRET_ID,
            secret.as_bytes(),
        )?;
        let value = serde_json::to_vec(&task).expect("task records serialise");
        match self
            .ports
            .catalog
            .put(
                Record {
                    version: rec.version + 1,
                    ..Record::new(self.tenant_pk(), rec.sk.clone(), value)
                },
                Condition::Version(rec.version),
            )
            .await
        {
            Ok(()) => Ok(task),
            Err(e) if e.kind() == ports::ErrorKind::ConditionFailed => Err(Error::Invalid(
                format!("task {name} changed while its credential was being replaced; try again"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets the hour (UTC) of a task's daily backup.
    ///
    /// # Errors
    /// `Invalid` for an hour past 23 or when the task changed meanwhile (try again).
    pub async fn set_backup_hour(&self, name: &str, hour: u8) -> Result<TaskRecord> {
        if hour > 23 {
            return Err(Error::Invalid(format!(
                "the backup hour is {hour}; give an hour of the day from 0 to 23 (UTC)"
            )));
        }
        let name = TaskId::new(name)?;
        let sk = format!("task#{name}");
        let rec = self
            .ports
            .catalog
            .get(&self.tenant_pk(), &sk)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no task named {name}")))?;
        let mut task: TaskRecord = serde_json::from_slice(&rec.value)
            .map_err(|e| Error::Invalid(format!("task record {name} is unreadable: {e}")))?;
        if task.backup_hour == hour {
            return Ok(task);
        }
        let old = schedule_record(&self.tenant, &name, task.backup_hour);
        task.backup_hour = hour;
        let value = serde_json::to_vec(&task).expect("task records serialise");
        let ops = vec![
            ports::TxOp::Put(
                Record {
                    version: rec.version + 1,
                    ..Record::new(self.tenant_pk(), sk, value)
                },
                Condition::Version(rec.version),
            ),
            ports::TxOp::Delete {
                pk: old.pk,
                sk: old.sk,
                cond: Condition::None,
            },
            ports::TxOp::Put(schedule_record(&self.tenant, &name, hour), Condition::None),
        ];
        match self.ports.catalog.transact(ops).await {
            Ok(()) => Ok(task),
            Err(e) if e.kind() == ports::ErrorKind::ConditionFailed => Err(Error::Invalid(
                format!("task {name} changed while its backup hour was being set; try again"),
            )),
            Err(e) => Err(e.into()),
        }
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
            // Out of the schedule first, so no backup starts while the rest goes.
            let sched = schedule_record(&self.tenant, &t.name, t.backup_hour);
            catalog
                .delete(&sched.pk, &sched.sk, Condition::None)
                .await?;
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
