//! `SqliteCatalog`: the catalog port on one SQLite file, with DynamoDB's conditions,
//! transactions and limits.

use crate::blocking;
use async_trait::async_trait;
use ports::catalog_limits::{check_keys, check_query, check_record, check_transaction};
use ports::{Catalog, Condition, Error, ErrorKind, Page, Record, Result, TxOp};
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a write waits for another process's write lock before giving up with
/// `Unavailable` (the CLI may run two processes on one catalog).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS records (
    pk TEXT NOT NULL,
    sk TEXT NOT NULL,
    version INTEGER NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (pk, sk)
) WITHOUT ROWID";

/// The catalog in one SQLite file: table `records (pk, sk, version, value)`.
///
/// WAL journal with `synchronous=FULL`, so that a committed write (a snapshot's commit
/// record) survives a power loss; conditional writes run in one `BEGIN IMMEDIATE`
/// transaction, so concurrent writers — threads or processes sharing the file — see each
/// other's conditions hold or fail, never interleave.
///
/// Text compares as bytes (SQLite's `BINARY` collation), which is DynamoDB's order for
/// UTF-8 sort keys.
#[derive(Clone)]
pub struct SqliteCatalog {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteCatalog")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteCatalog {
    /// Opens the catalog at `path`, creating the file and its table if missing.
    ///
    /// # Errors
    /// `Unavailable` when the file cannot be opened or is locked past the busy timeout;
    /// `Other` when it is not a SQLite database or WAL mode cannot be set.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let what = format!("catalog {}", path.display());
        let conn = Connection::open(&path).map_err(|e| db_error(e, &what))?;
        // The busy timeout first: switching to WAL takes a lock another process may hold.
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| db_error(e, &what))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| db_error(e, &what))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::new(
                ErrorKind::Other,
                format!("{what}: journal mode is {mode}, WAL needed"),
            ));
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| db_error(e, &what))?;
        conn.execute_batch(SCHEMA).map_err(|e| db_error(e, &what))?;
        Ok(SqliteCatalog {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection, off the async workers (a write may wait for a lock).
    async fn with_conn<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        blocking(move || {
            // A panic while holding the lock leaves no open transaction (rusqlite rolls
            // back on drop), so the connection is still good.
            let mut guard = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut guard)
        })
        .await
    }
}

#[async_trait]
impl Catalog for SqliteCatalog {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Record>> {
        check_keys(pk, sk)?;
        let (pk, sk) = (pk.to_string(), sk.to_string());
        self.with_conn(move |conn| {
            current(conn, &pk, &sk).map(|row| {
                row.map(|(version, value)| Record {
                    pk,
                    sk,
                    version,
                    value,
                })
            })
        })
        .await
    }

    async fn put(&self, record: Record, cond: Condition) -> Result<()> {
        check_record(&record)?;
        self.with_conn(move |conn| {
            let what = format!("record {}/{}", record.pk, record.sk);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| db_error(e, &what))?;
            let cur = current_version(&tx, &record.pk, &record.sk)?;
            if !holds(cond, cur) {
                return Err(condition_failed(&what, cond));
            }
            upsert(&tx, &record)?;
            tx.commit().map_err(|e| db_error(e, &what))
        })
        .await
    }

    async fn delete(&self, pk: &str, sk: &str, cond: Condition) -> Result<()> {
        check_keys(pk, sk)?;
        let (pk, sk) = (pk.to_string(), sk.to_string());
        self.with_conn(move |conn| {
            let what = format!("record {pk}/{sk}");
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| db_error(e, &what))?;
            let cur = current_version(&tx, &pk, &sk)?;
            if !holds(cond, cur) {
                return Err(condition_failed(&what, cond));
            }
            remove(&tx, &pk, &sk)?;
            tx.commit().map_err(|e| db_error(e, &what))
        })
        .await
    }

    async fn query(
        &self,
        pk: &str,
        sk_prefix: &str,
        after: Option<&str>,
        limit: usize,
        descending: bool,
    ) -> Result<Page> {
        check_query(pk, limit)?;
        let (pk, prefix, after) = (
            pk.to_string(),
            sk_prefix.to_string(),
            after.map(str::to_string),
        );
        self.with_conn(move |conn| {
            query_blocking(conn, &pk, &prefix, after.as_deref(), limit, descending)
        })
        .await
    }

    async fn transact(&self, ops: Vec<TxOp>) -> Result<()> {
        check_transaction(&ops)?;
        self.with_conn(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| db_error(e, "transaction"))?;
            // Every condition first, against the state before the transaction (keys are
            // distinct, so no write could change another operation's condition).
            for (i, op) in ops.iter().enumerate() {
                let (pk, sk, cond) = match op {
                    TxOp::Put(r, cond) => (r.pk.as_str(), r.sk.as_str(), *cond),
                    TxOp::Delete { pk, sk, cond } | TxOp::Check { pk, sk, cond } => {
                        (pk.as_str(), sk.as_str(), *cond)
                    }
                };
                if !holds(cond, current_version(&tx, pk, sk)?) {
                    return Err(condition_failed(
                        &format!("transaction cancelled: operation {i} on record {pk}/{sk}"),
                        cond,
                    ));
                }
            }
            for op in &ops {
                match op {
                    TxOp::Put(r, _) => upsert(&tx, r)?,
                    TxOp::Delete { pk, sk, .. } => remove(&tx, pk, sk)?,
                    TxOp::Check { .. } => {}
                }
            }
            tx.commit().map_err(|e| db_error(e, "transaction"))
        })
        .await
    }
}

fn query_blocking(
    conn: &Connection,
    pk: &str,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
    descending: bool,
) -> Result<Page> {
    // A byte-prefix as a key range (`LIKE` would treat '%' and '_' as wildcards), which
    // the primary key index serves directly.
    let mut sql = String::from("SELECT sk, version, value FROM records WHERE pk = ?1 AND sk >= ?2");
    let mut args = vec![Value::Text(pk.to_string()), Value::Text(prefix.to_string())];
    if let Some(upper) = prefix_successor(prefix) {
        args.push(Value::Text(upper));
        sql.push_str(&format!(" AND sk < ?{}", args.len()));
    }
    if let Some(after) = after {
        args.push(Value::Text(after.to_string()));
        let op = if descending { "<" } else { ">" };
        sql.push_str(&format!(" AND sk {op} ?{}", args.len()));
    }
    // One row more than asked tells whether another page follows.
    let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
    args.push(Value::Integer(fetch));
    let order = if descending { "DESC" } else { "ASC" };
    sql.push_str(&format!(" ORDER BY sk {order} LIMIT ?{}", args.len()));

    let what = format!("query of partition {pk}");
    let mut stmt = conn.prepare_cached(&sql).map_err(|e| db_error(e, &what))?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), |row| {
            Ok(Record {
                pk: pk.to_string(),
                sk: row.get(0)?,
                version: from_db_version(row.get(1)?),
                value: row.get(2)?,
            })
        })
        .map_err(|e| db_error(e, &what))?;
    let mut records = rows
        .collect::<rusqlite::Result<Vec<Record>>>()
        .map_err(|e| db_error(e, &what))?;
    let next = if records.len() > limit {
        records.truncate(limit);
        records.last().map(|r| r.sk.clone())
    } else {
        None
    };
    Ok(Page { records, next })
}

/// The least string greater than every string starting with `prefix`, or `None` when
/// there is none (the prefix is empty or all `char::MAX`). UTF-8 byte order is code point
/// order, so bumping the last code point that can be bumped gives the bound.
fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last) + 1;
        if next == 0xD800 {
            next = 0xE000; // surrogates are not chars
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

fn current(conn: &Connection, pk: &str, sk: &str) -> Result<Option<(u64, Vec<u8>)>> {
    conn.prepare_cached("SELECT version, value FROM records WHERE pk = ?1 AND sk = ?2")
        .and_then(|mut s| {
            s.query_row(params![pk, sk], |r| {
                Ok((from_db_version(r.get(0)?), r.get(1)?))
            })
            .optional()
        })
        .map_err(|e| db_error(e, format!("record {pk}/{sk}")))
}

fn current_version(conn: &Connection, pk: &str, sk: &str) -> Result<Option<u64>> {
    conn.prepare_cached("SELECT version FROM records WHERE pk = ?1 AND sk = ?2")
        .and_then(|mut s| s.query_row(params![pk, sk], |r| r.get(0)).optional())
        .map(|v| v.map(from_db_version))
        .map_err(|e| db_error(e, format!("record {pk}/{sk}")))
}

fn upsert(conn: &Connection, r: &Record) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO records (pk, sk, version, value) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (pk, sk) DO UPDATE SET version = excluded.version, value = excluded.value",
    )
    .and_then(|mut s| s.execute(params![r.pk, r.sk, to_db_version(r.version), r.value]))
    .map(|_| ())
    .map_err(|e| db_error(e, format!("record {}/{}", r.pk, r.sk)))
}

fn remove(conn: &Connection, pk: &str, sk: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM records WHERE pk = ?1 AND sk = ?2")
        .and_then(|mut s| s.execute(params![pk, sk]))
        .map(|_| ())
        .map_err(|e| db_error(e, format!("record {pk}/{sk}")))
}

/// SQLite integers are i64; versions are stored bit for bit, so every u64 round-trips
/// (only equality is ever asked of them).
fn to_db_version(v: u64) -> i64 {
    v as i64
}

fn from_db_version(v: i64) -> u64 {
    v as u64
}

fn holds(cond: Condition, current: Option<u64>) -> bool {
    match cond {
        Condition::None => true,
        Condition::Absent => current.is_none(),
        Condition::Exists => current.is_some(),
        Condition::Version(v) => current == Some(v),
    }
}

fn condition_failed(what: &str, cond: Condition) -> Error {
    Error::new(
        ErrorKind::ConditionFailed,
        format!("{what}: condition {cond:?} does not hold"),
    )
}

/// Maps a SQLite error on `what` (a record's keys, a file name): locks held past the busy
/// timeout and I/O faults are transient, the rest is not.
fn db_error(e: rusqlite::Error, what: impl std::fmt::Display) -> Error {
    use rusqlite::ErrorCode as C;
    let kind = match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            C::DatabaseBusy
            | C::DatabaseLocked
            | C::SystemIoFailure
            | C::DiskFull
            | C::CannotOpen
            | C::OutOfMemory => ErrorKind::Unavailable,
            _ => ErrorKind::Other,
        },
        _ => ErrorKind::Other,
    };
    Error::with_source(kind, format!("catalog {what}"), e)
}

#[cfg(test)]
mod tests {
    use super::prefix_successor;

    #[test]
    fn successor_bounds_exactly_the_prefixed_strings() {
        assert_eq!(prefix_successor(""), None);
        assert_eq!(prefix_successor("a"), Some("b".into()));
        assert_eq!(prefix_successor("a/"), Some("a0".into()));
        assert_eq!(prefix_successor("x\u{D7FF}"), Some("x\u{E000}".into()));
        assert_eq!(prefix_successor("a\u{10FFFF}"), Some("b".into()));
        assert_eq!(prefix_successor("\u{10FFFF}\u{10FFFF}"), None);
        for p in ["snap#", "é", "a\u{10FFFF}"] {
            let s = prefix_successor(p).unwrap();
            assert!(s.as_str() > p);
            for longer in [format!("{p}\u{10FFFF}\u{10FFFF}"), format!("{p}zzz")] {
                assert!(longer.as_str() < s.as_str(), "{longer:?} < {s:?}");
            }
        }
    }
}
