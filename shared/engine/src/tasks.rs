//! Tasks: what a tenant has connected, each with its own data key, its sealed credential
//! and its place in the schedule.

use crate::{Connectors, Engine, Error, Result};
use chrono::{DateTime, Utc};
use domain::{TaskId, TenantId};
use ports::{catalog_keys, CatalogExt, CatalogKey, Condition, EncryptionContext, Record, TxOp};
use serde::{Deserialize, Serialize};
use vault::Vault;
use zeroize::Zeroizing;

/// The daily backup hour (UTC) when the tenant has not chosen one.
pub const DEFAULT_BACKUP_HOUR: u8 = 2;

/// How a task reaches its source: the connector that speaks to it, the connector's own
/// settings, and the credential, sealed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceConfig {
    /// The connector's name (`folder`, `imap`, `m365`, …; see [`crate::Connectors`]).
    pub connector: String,
    /// The connector's own settings (never secret).
    pub settings: serde_json::Value,
    /// The credential (password, token, client secret), sealed with the task's key; empty
    /// when the source needs none.
    #[serde(default, with = "hex_bytes", skip_serializing_if = "Vec::is_empty")]
    pub sealed_secret: Vec<u8>,
}

impl SourceConfig {
    /// A source reached by `connector` with `settings` (its credential is given to
    /// [`Engine::add_task`]).
    pub fn new(connector: &str, settings: serde_json::Value) -> Self {
        SourceConfig {
            connector: connector.to_string(),
            settings,
            sealed_secret: Vec::new(),
        }
    }

    /// The connector's name.
    pub fn kind(&self) -> &str {
        &self.connector
    }
}

/// A task to add.
#[derive(Clone, Debug)]
pub struct NewTask {
    pub name: TaskId,
    pub source: SourceConfig,
    /// The source's credential, if it needs one; sealed before it is stored.
    pub secret: Option<Zeroizing<String>>,
    /// The hour (UTC) of its daily backup; [`DEFAULT_BACKUP_HOUR`] when `None`.
    pub backup_hour: Option<u8>,
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

/// The shard of the schedule index a task is in: a hash of tenant and task, so that no
/// shard grows hot.
fn schedule_shard(tenant: &TenantId, task: &TaskId) -> u32 {
    let h = blake3::hash(catalog_keys::schedule_name(tenant, task).as_bytes());
    u32::from_le_bytes(h.as_bytes()[..4].try_into().expect("4 bytes")) % SCHEDULE_SHARDS
}

fn schedule_key(tenant: &TenantId, task: &TaskId, hour: u8) -> CatalogKey {
    catalog_keys::schedule(hour, schedule_shard(tenant, task), tenant, task)
}

fn task_json(task: &TaskRecord) -> Vec<u8> {
    serde_json::to_vec(task).expect("task records serialise")
}

fn read_task(name: &TaskId, r: &Record) -> Result<TaskRecord> {
    serde_json::from_slice(&r.value)
        .map_err(|e| Error::Invalid(format!("task record {name} is unreadable: {e}")))
}

fn check_hour(hour: u8) -> Result<()> {
    if hour > 23 {
        return Err(Error::Invalid(format!(
            "the backup hour is {hour}; give an hour of the day from 0 to 23 (UTC)"
        )));
    }
    Ok(())
}

impl Engine {
    /// Connects a new task: checks its source (signs in with the credential, so that a
    /// wrong host, secret or permission shows now and not at the first nightly backup),
    /// gives it a fresh data key, seals its credential with that key (so it is shredded
    /// with the tenant's keys), and puts it in the schedule. Its accounts are listed at
    /// its first backup.
    ///
    /// # Errors
    /// `Invalid` when the name is taken, the hour is past 23, or the connector does not
    /// exist or refuses its settings; what the connector's check returns (`Source` with
    /// `Auth` for a refused credential); a key service or catalog failure.
    pub async fn add_task(&self, new: NewTask, connectors: &dyn Connectors) -> Result<TaskRecord> {
        let hour = new.backup_hour.unwrap_or(DEFAULT_BACKUP_HOUR);
        check_hour(hour)?;
        let name = new.name;
        let mut rec = TaskRecord {
            name: name.clone(),
            source: new.source,
            wrapped_key: Vec::new(),
            created_at: self.ports.clock.now(),
            backup_hour: hour,
            deleting: false,
        };
        if self.task_record(&name).await?.is_some() {
            return Err(taken(&name));
        }
        connectors.open(&rec, new.secret.clone())?.check().await?;
        let ctx = EncryptionContext::for_task(&self.tenant, &name);
        let key = self.ports.keys.generate_data_key(&ctx).await?;
        if let Some(secret) = &new.secret {
            let keys = vault::TaskKeys::derive(&key.plaintext, self.tenant.as_str(), name.as_str());
            rec.source.sealed_secret = keys.seal(
                vault::crypto::SealKind::Secret,
                &SECRET_ID,
                secret.as_bytes(),
            )?;
        }
        rec.wrapped_key = key.wrapped.clone();
        let tk = catalog_keys::task(&self.tenant, &name);
        let sched = schedule_key(&self.tenant, &name, hour);
        let ops = vec![
            TxOp::Put(
                Record::new(tk.pk, tk.sk, task_json(&rec)),
                Condition::Absent,
            ),
            TxOp::Put(Record::new(sched.pk, sched.sk, Vec::new()), Condition::None),
        ];
        match self.ports.catalog.transact(ops).await {
            Ok(()) => Ok(rec),
            Err(e) if e.kind() == ports::ErrorKind::ConditionFailed => Err(taken(&name)),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn tasks(&self) -> Result<Vec<TaskRecord>> {
        let range = catalog_keys::tasks(&self.tenant);
        let recs = self
            .ports
            .catalog
            .query_all(&range.pk, &range.prefix)
            .await?;
        recs.iter()
            .map(|r| {
                serde_json::from_slice(&r.value)
                    .map_err(|e| Error::Invalid(format!("task record {} is unreadable: {e}", r.sk)))
            })
            .collect()
    }

    async fn task_record(&self, name: &TaskId) -> Result<Option<Record>> {
        let key = catalog_keys::task(&self.tenant, name);
        Ok(self.ports.catalog.get(&key.pk, &key.sk).await?)
    }

    /// # Errors
    /// `NotFound` with the names of the tasks that do exist.
    pub async fn task(&self, name: &str) -> Result<TaskRecord> {
        let name = TaskId::new(name)?;
        match self.task_record(&name).await? {
            Some(r) => read_task(&name, &r),
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

    /// Opens a task's vault, unwrapping its data key.
    ///
    /// # Errors
    /// `Invalid` for a task being deleted; the key service's `Integrity` error when the
    /// wrapped key does not belong to this tenant and task.
    pub(crate) async fn vault(&self, task: &TaskRecord) -> Result<Vault> {
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
    pub(crate) async fn task_secret(&self, task: &TaskRecord) -> Result<Option<Zeroizing<String>>> {
        let sealed = &task.source.sealed_secret;
        if sealed.is_empty() {
            return Ok(None);
        }
        let vault = self.vault(task).await?;
        let plain = Zeroizing::new(vault.keys().open(
            vault::crypto::SealKind::Secret,
            &SECRET_ID,
            sealed,
            &format!("the credential of task {}", task.name),
        )?);
        let s = std::str::from_utf8(&plain).map_err(|_| {
            Error::Invalid(format!("the credential of task {} is not text", task.name))
        })?;
        Ok(Some(Zeroizing::new(s.to_string())))
    }

    /// Replaces a task's credential (an administrator changed the password or secret),
    /// after signing in with the new one: a typo must not stop tonight's backups.
    ///
    /// # Errors
    /// What the connector's check returns with the new credential; a catalog failure, or
    /// `Invalid` when the task changed meanwhile (try again).
    pub async fn replace_secret(
        &self,
        name: &str,
        secret: &Zeroizing<String>,
        connectors: &dyn Connectors,
    ) -> Result<TaskRecord> {
        let name = TaskId::new(name)?;
        let rec = self
            .task_record(&name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no task named {name}")))?;
        let mut task = read_task(&name, &rec)?;
        connectors
            .open(&task, Some(secret.clone()))?
            .check()
            .await?;
        let vault = self.vault(&task).await?;
        task.source.sealed_secret = vault.keys().seal(
            vault::crypto::SealKind::Secret,
            &SECRET_ID,
            secret.as_bytes(),
        )?;
        let key = catalog_keys::task(&self.tenant, &name);
        match self
            .ports
            .catalog
            .put(
                Record {
                    version: rec.version + 1,
                    ..Record::new(key.pk, key.sk, task_json(&task))
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
        check_hour(hour)?;
        let name = TaskId::new(name)?;
        let rec = self
            .task_record(&name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no task named {name}")))?;
        let mut task = read_task(&name, &rec)?;
        if task.backup_hour == hour {
            return Ok(task);
        }
        let old = schedule_key(&self.tenant, &name, task.backup_hour);
        let new = schedule_key(&self.tenant, &name, hour);
        task.backup_hour = hour;
        let key = catalog_keys::task(&self.tenant, &name);
        let ops = vec![
            TxOp::Put(
                Record {
                    version: rec.version + 1,
                    ..Record::new(key.pk, key.sk, task_json(&task))
                },
                Condition::Version(rec.version),
            ),
            TxOp::Delete {
                pk: old.pk,
                sk: old.sk,
                cond: Condition::None,
            },
            TxOp::Put(Record::new(new.pk, new.sk, Vec::new()), Condition::None),
        ];
        match self.ports.catalog.transact(ops).await {
            Ok(()) => Ok(task),
            Err(e) if e.kind() == ports::ErrorKind::ConditionFailed => Err(Error::Invalid(
                format!("task {name} changed while its backup hour was being set; try again"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes a task out of the schedule and marks it as being deleted, its wrapped key
    /// cleared (part of deleting a tenant).
    pub(crate) async fn retire_task(&self, task: &TaskRecord) -> Result<()> {
        let sched = schedule_key(&self.tenant, &task.name, task.backup_hour);
        self.ports
            .catalog
            .delete(&sched.pk, &sched.sk, Condition::None)
            .await?;
        let mut shredded = task.clone();
        shredded.wrapped_key.clear();
        shredded.deleting = true;
        let key = catalog_keys::task(&self.tenant, &task.name);
        self.ports
            .catalog
            .put(
                Record::new(key.pk, key.sk, task_json(&shredded)),
                Condition::None,
            )
            .await?;
        Ok(())
    }
}

fn taken(name: &TaskId) -> Error {
    Error::Invalid(format!(
        "a task named {name} already exists; choose another name"
    ))
}
