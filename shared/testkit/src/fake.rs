//! The one fake connector every crate's tests use: an in-process source of accounts, each a
//! mailbox-like store of items in folders with a change log, read the way real connectors
//! read their sources (a cursor that is a position in the change log, as a Graph delta
//! link or an IMAP MODSEQ is). It fails the way sources fail, on demand: a refused
//! credential, an item that cannot be fetched, a connection that drops after some fetches,
//! a cursor the source has forgotten, a run that must pause, a source that fails for a few
//! calls only, an account the source will not open. It records what it was asked
//! (backups with their cursors, restores with their items), so a test can check what the
//! engine did through a path independent of the vault.

use async_trait::async_trait;
use bytes::Bytes;
use domain::{AccountId, ItemPath, Service};
use engine::{
    AccountInfo, AccountTree, Connector, Connectors, EntryKind, Error, ItemInfo, RestoreContent,
    Result, SourceConfig, SourceErrorKind, SourceRestore, SourceRestoreReport, TaskRecord,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

/// The connector name of fake tasks.
pub const FAKE: &str = "fake";

/// The source of a fake task, for [`engine::NewTask`].
pub fn fake_source() -> SourceConfig {
    SourceConfig::new(FAKE, serde_json::json!({}))
}

/// One item at the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeItem {
    /// The folder, as the account tree names it (`Inbox`, `Archive/2026`).
    pub folder: String,
    pub body: Vec<u8>,
    /// The item's metadata (`from`, `subject`, `seen`, …).
    pub meta: Vec<(String, String)>,
    /// The item's own time, nanoseconds since the epoch.
    pub mtime_ns: i64,
}

impl FakeItem {
    /// A message in `folder`.
    pub fn new(folder: &str, body: &[u8]) -> Self {
        FakeItem {
            folder: folder.to_string(),
            body: body.to_vec(),
            meta: Vec::new(),
            mtime_ns: 0,
        }
    }

    /// With metadata.
    pub fn with_meta(mut self, meta: &[(&str, &str)]) -> Self {
        self.meta = meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self
    }

    /// With the item's own time.
    pub fn at(mut self, mtime_ns: i64) -> Self {
        self.mtime_ns = mtime_ns;
        self
    }
}

#[derive(Clone, Debug)]
enum Change {
    Put(u32),
    Meta(u32),
    Moved(u32, String),
    Gone(u32, String),
}

/// One account's store.
#[derive(Default)]
struct Mailbox {
    name: String,
    items: BTreeMap<u32, FakeItem>,
    log: Vec<Change>,
    /// Cursors before this log position are refused, as an expired delta token is.
    forget_before: usize,
    /// Items whose fetch fails (a corrupt item at the source).
    broken: Vec<u32>,
    /// Listed by the source (an account the source dropped keeps its store).
    listed: bool,
    /// Backups of and restores into this account fail so ([`FakeSource::refuse_account`]).
    refused: Option<(SourceErrorKind, String)>,
}

/// What a restore wrote: the account, the item's path inside the restore (its label first
/// when there is one), its bytes and its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    pub account: AccountId,
    pub path: String,
    pub body: Vec<u8>,
    pub meta: Vec<(String, String)>,
}

#[derive(Default)]
struct State {
    accounts: BTreeMap<AccountId, Mailbox>,
    /// Every call fails with this (credentials refused, the source down).
    refuse: Option<(SourceErrorKind, String)>,
    /// With `refuse` set: how many more calls fail ([`FakeSource::refuse_next`]); `None`:
    /// every call until [`FakeSource::accept`].
    refuse_calls: Option<usize>,
    /// Fail the run after this many more fetches (a dropped connection).
    fail_after: Option<usize>,
    /// Pause after this many changes in a run, whatever the time (a run out of time).
    pause_every: Option<usize>,
    fetches: usize,
    backups: Vec<(AccountId, Option<String>)>,
    restored: Vec<Restored>,
    checks: usize,
    /// Every fetch asked for since the source was made (never reset, unlike `fetches`).
    fetched: usize,
    /// The credential of every opening through [`FakeConnectors`], in order.
    opened_with: Vec<Option<String>>,
}

/// An in-process source; see the module doc. Shared (`Arc`) between the test, which
/// changes it, and the engine, which backs it up through [`FakeConnectors`].
#[derive(Default)]
pub struct FakeSource {
    state: Mutex<State>,
}

fn item_path(folder: &str, uid: u32) -> Result<ItemPath> {
    Ok(ItemPath::parse(format!("{folder}/{uid}.eml").as_bytes())?)
}

fn uid_of(name: &[u8]) -> Option<u32> {
    std::str::from_utf8(name)
        .ok()?
        .strip_suffix(".eml")?
        .parse()
        .ok()
}

fn info(m: &FakeItem) -> ItemInfo {
    ItemInfo {
        mtime_ns: m.mtime_ns,
        fingerprint: 0,
        meta: m.meta.clone(),
    }
}

fn id(account: &str) -> AccountId {
    AccountId::new(account).expect("a valid account id")
}

impl FakeSource {
    /// A source with no accounts.
    pub fn new() -> Arc<Self> {
        Arc::new(FakeSource::default())
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn mailbox<T>(&self, account: &str, f: impl FnOnce(&mut Mailbox) -> T) -> T {
        self.with(|s| {
            let m = s.accounts.entry(id(account)).or_insert_with(|| Mailbox {
                name: account.to_string(),
                listed: true,
                ..Default::default()
            });
            f(m)
        })
    }

    /// Adds an account (listed from now on).
    pub fn add_account(&self, account: &str) {
        self.mailbox(account, |m| m.listed = true);
    }

    /// The source stops listing an account (a user who left); its items stay.
    pub fn drop_account(&self, account: &str) {
        self.mailbox(account, |m| m.listed = false);
    }

    /// Puts an item (new, or a new version of `uid`).
    pub fn put(&self, account: &str, uid: u32, item: FakeItem) {
        self.mailbox(account, |m| {
            if let Some(old) = m.items.get(&uid) {
                if old.folder != item.folder {
                    m.log.push(Change::Gone(uid, old.folder.clone()));
                }
            }
            m.items.insert(uid, item);
            m.log.push(Change::Put(uid));
        })
    }

    /// Changes an item's metadata only (flags, labels).
    pub fn set_meta(&self, account: &str, uid: u32, meta: &[(&str, &str)]) {
        self.mailbox(account, |m| {
            if let Some(it) = m.items.get_mut(&uid) {
                it.meta = meta
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                m.log.push(Change::Meta(uid));
            }
        })
    }

    /// Moves an item to another folder.
    pub fn move_item(&self, account: &str, uid: u32, to: &str) {
        self.mailbox(account, |m| {
            if let Some(it) = m.items.get_mut(&uid) {
                let from = std::mem::replace(&mut it.folder, to.to_string());
                m.log.push(Change::Moved(uid, from));
            }
        })
    }

    /// Deletes an item.
    pub fn delete(&self, account: &str, uid: u32) {
        self.mailbox(account, |m| {
            if let Some(it) = m.items.remove(&uid) {
                m.log.push(Change::Gone(uid, it.folder));
            }
        })
    }

    /// The items of an account now, by uid.
    pub fn items(&self, account: &str) -> BTreeMap<u32, FakeItem> {
        self.mailbox(account, |m| m.items.clone())
    }

    /// An item that cannot be fetched from now on (or again, with `false`).
    pub fn break_item(&self, account: &str, uid: u32, broken: bool) {
        self.mailbox(account, |m| {
            m.broken.retain(|u| *u != uid);
            if broken {
                m.broken.push(uid);
            }
        })
    }

    /// Refuses every cursor given so far, as a source does with an expired delta token:
    /// the next backup enumerates everything.
    pub fn forget_cursors(&self, account: &str) {
        self.mailbox(account, |m| m.forget_before = m.log.len());
    }

    /// Every call fails with `kind` until [`FakeSource::accept`].
    pub fn refuse(&self, kind: SourceErrorKind, message: &str) {
        self.with(|s| {
            s.refuse = Some((kind, message.to_string()));
            s.refuse_calls = None;
        });
    }

    /// Calls succeed again.
    pub fn accept(&self) {
        self.with(|s| {
            s.refuse = None;
            s.refuse_calls = None;
        });
    }

    /// Only the next `calls` calls (of any kind: check, accounts, backup, restore) fail
    /// with `kind`, then calls succeed again by themselves: a source that throttles or is
    /// down for a moment, so a retry of the same work succeeds. Added for the jobs tests
    /// (a throttled restore job that is retried).
    pub fn refuse_next(&self, calls: usize, kind: SourceErrorKind, message: &str) {
        self.with(|s| {
            s.refuse = (calls > 0).then(|| (kind, message.to_string()));
            s.refuse_calls = (calls > 0).then_some(calls);
        });
    }

    /// Backups of `account` and restores into it fail with `kind` until
    /// [`FakeSource::accept_account`]: an account the source will not open (a disabled
    /// mailbox, a permission missing), while its other accounts work. The account is
    /// still listed. Added for the jobs tests (one failing account among many).
    pub fn refuse_account(&self, account: &str, kind: SourceErrorKind, message: &str) {
        self.mailbox(account, |m| m.refused = Some((kind, message.to_string())));
    }

    /// The account works again.
    pub fn accept_account(&self, account: &str) {
        self.mailbox(account, |m| m.refused = None);
    }

    /// The name the source shows for `account` when it lists it (a person's display name);
    /// the account id until set. Added for the API tests (an account's name as listed).
    pub fn set_account_name(&self, account: &str, name: &str) {
        self.mailbox(account, |m| m.name = name.to_string());
    }

    /// The run fails (the connection drops) after `n` more fetches; `None`: never.
    pub fn fail_after(&self, n: Option<usize>) {
        self.with(|s| {
            s.fail_after = n;
            s.fetches = 0;
        });
    }

    /// A run pauses after `n` changes, as a run out of time does; `None`: only when the
    /// run's deadline comes.
    pub fn pause_every(&self, n: Option<usize>) {
        self.with(|s| s.pause_every = n);
    }

    /// The backups asked for so far: the account and the cursor each started from.
    pub fn backups(&self) -> Vec<(AccountId, Option<String>)> {
        self.with(|s| s.backups.clone())
    }

    /// What restores wrote so far.
    pub fn restored(&self) -> Vec<Restored> {
        self.with(|s| s.restored.clone())
    }

    /// How many item fetches were asked of the source since it was made, over every run
    /// (failed ones included; [`FakeSource::fail_after`] does not reset it): what a test
    /// counts to check that an incremental backup reads only what changed. Added for
    /// the end-to-end connector tests.
    pub fn fetched(&self) -> usize {
        self.with(|s| s.fetched)
    }

    /// The credential each opening of this source through [`FakeConnectors`] was given,
    /// in order (`None`: opened without one): the credential the engine unsealed, seen
    /// from the connector's side. Added for the end-to-end credential tests.
    pub fn credentials(&self) -> Vec<Option<String>> {
        self.with(|s| s.opened_with.clone())
    }

    /// How many times the connector was checked (a task added, a credential replaced).
    pub fn checks(&self) -> usize {
        self.with(|s| s.checks)
    }

    fn refused(&self) -> Result<()> {
        let refusal = self.with(|s| {
            let refusal = s.refuse.clone()?;
            if let Some(left) = &mut s.refuse_calls {
                *left = left.saturating_sub(1);
                if *left == 0 {
                    s.refuse = None;
                    s.refuse_calls = None;
                }
            }
            Some(refusal)
        });
        match refusal {
            Some((kind, msg)) => Err(Error::source(kind, msg)),
            None => Ok(()),
        }
    }

    /// The failure of an account refused with [`FakeSource::refuse_account`].
    fn account_refused(&self, account: &AccountId) -> Result<()> {
        match self.with(|s| s.accounts.get(account).and_then(|m| m.refused.clone())) {
            Some((kind, msg)) => Err(Error::source(kind, msg)),
            None => Ok(()),
        }
    }

    /// An item's content, as a fetch from the source: `None` for a broken one.
    fn fetch(&self, account: &AccountId, uid: u32) -> Result<Option<FakeItem>> {
        self.with(|s| {
            s.fetches += 1;
            s.fetched += 1;
            if s.fail_after.is_some_and(|n| s.fetches > n) {
                return Err(Error::source(
                    SourceErrorKind::Unavailable,
                    "the server closed the connection",
                ));
            }
            let m = s
                .accounts
                .get(account)
                .ok_or_else(|| Error::source(SourceErrorKind::NotFound, "no such account"))?;
            if m.broken.contains(&uid) {
                return Ok(None);
            }
            Ok(m.items.get(&uid).cloned())
        })
    }

    async fn put_fetched(
        &self,
        account: &AccountId,
        uid: u32,
        path: &ItemPath,
        tree: &mut AccountTree,
    ) -> Result<()> {
        match self.fetch(account, uid)? {
            Some(item) => {
                tree.put_item(path, info(&item), Bytes::from(item.body))
                    .await
            }
            None => {
                tree.record_error(path, "the source could not read this item");
                Ok(())
            }
        }
    }

    /// Enumerates everything against the tree (a first backup, or a forgotten cursor):
    /// items no longer there go, every item is put again (the vault stores nothing twice).
    async fn full(&self, account: &AccountId, tree: &mut AccountTree) -> Result<()> {
        let all = self
            .with(|s| s.accounts.get(account).map(|m| m.items.clone()))
            .unwrap_or_default();
        for f in tree.folder_paths().await? {
            let names: Vec<Vec<u8>> = tree.items(&f).await?.map(|e| e.name).collect();
            for name in names {
                let keep = uid_of(&name)
                    .and_then(|u| all.get(&u))
                    .is_some_and(|m| f.to_string() == m.folder);
                if !keep {
                    tree.remove(&f.join(&name)?).await?;
                }
            }
        }
        for (uid, item) in &all {
            self.put_fetched(account, *uid, &item_path(&item.folder, *uid)?, tree)
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Connector for FakeSource {
    async fn check(&self) -> Result<()> {
        self.with(|s| s.checks += 1);
        self.refused()
    }

    async fn accounts(&self) -> Result<Vec<AccountInfo>> {
        self.refused()?;
        Ok(self.with(|s| {
            s.accounts
                .iter()
                .filter(|(_, m)| m.listed)
                .map(|(id, m)| AccountInfo {
                    id: id.clone(),
                    name: m.name.clone(),
                    services: vec![Service::Mail],
                })
                .collect()
        }))
    }

    async fn backup(
        &self,
        account: &AccountInfo,
        cursor: Option<&str>,
        tree: &mut AccountTree,
    ) -> Result<Option<String>> {
        self.with(|s| {
            s.backups
                .push((account.id.clone(), cursor.map(str::to_string)))
        });
        self.refused()?;
        self.account_refused(&account.id)?;
        let a = &account.id;
        let (log, forget, pause_every) = self.with(|s| {
            let m = s.accounts.get(a);
            (
                m.map(|m| m.log.clone()).unwrap_or_default(),
                m.map_or(0, |m| m.forget_before),
                s.pause_every,
            )
        });
        let from = cursor.and_then(|c| c.parse::<usize>().ok());
        let Some(pos) = from.filter(|p| *p >= forget && *p <= log.len()) else {
            self.full(a, tree).await?;
            return Ok(Some(log.len().to_string()));
        };
        for (i, ch) in log[pos..].iter().enumerate() {
            // Out of time with work left: pause, reporting how far this run got.
            let out_of_time = tree.time_is_up() || pause_every.is_some_and(|n| i >= n);
            if i > 0 && out_of_time {
                tree.pause();
                return Ok(Some((pos + i).to_string()));
            }
            let current = |uid: &u32| {
                self.with(|s| s.accounts.get(a).and_then(|m| m.items.get(uid).cloned()))
            };
            match ch {
                Change::Put(uid) => {
                    // Put and then deleted or moved: later entries of the log say so.
                    if let Some(item) = current(uid) {
                        self.put_fetched(a, *uid, &item_path(&item.folder, *uid)?, tree)
                            .await?;
                    }
                }
                Change::Meta(uid) => {
                    if let Some(item) = current(uid) {
                        tree.update_item(&item_path(&item.folder, *uid)?, |e| {
                            e.meta = item.meta.clone()
                        })
                        .await?;
                    }
                }
                Change::Moved(uid, from) => {
                    if let Some(item) = current(uid) {
                        let (old, new) = (item_path(from, *uid)?, item_path(&item.folder, *uid)?);
                        if tree.item(&old).await?.is_some() {
                            tree.rename(&old, &new).await?;
                        }
                    }
                }
                Change::Gone(uid, folder) => {
                    tree.remove(&item_path(folder, *uid)?).await?;
                }
            }
        }
        Ok(Some(log.len().to_string()))
    }

    async fn restore(
        &self,
        job: &SourceRestore,
        content: &RestoreContent,
    ) -> Result<SourceRestoreReport> {
        self.refused()?;
        self.account_refused(&job.to)?;
        let mut report = SourceRestoreReport {
            target: job.label.clone().unwrap_or_default(),
            ..Default::default()
        };
        for (path, entry) in &job.items {
            if entry.kind == EntryKind::Dir {
                report.folders += 1;
                continue;
            }
            let body = match content.read(entry).await {
                Ok(b) => b,
                Err(e) => {
                    report.errors.push(format!("{path}: {e}"));
                    continue;
                }
            };
            report.items += 1;
            report.bytes += body.len() as u64;
            let path = match &job.label {
                Some(l) => format!("{l}/{path}"),
                None => path.to_string(),
            };
            self.with(|s| {
                s.restored.push(Restored {
                    account: job.to.clone(),
                    path,
                    body,
                    meta: entry.meta.clone(),
                })
            });
        }
        Ok(report)
    }
}

/// Opens every task of kind [`FAKE`] on the same [`FakeSource`], so a test changes the
/// source the engine backs up. Any other kind is refused, as a build without that
/// connector refuses it. A task may require a credential: with `secret` set, opening
/// without it, or with another, is an `Auth` failure.
#[derive(Clone)]
pub struct FakeConnectors {
    pub source: Arc<FakeSource>,
    pub secret: Option<String>,
}

impl FakeConnectors {
    pub fn new(source: &Arc<FakeSource>) -> Self {
        FakeConnectors {
            source: source.clone(),
            secret: None,
        }
    }
}

impl Connectors for FakeConnectors {
    fn offers(&self, connector: &str) -> bool {
        connector == FAKE
    }

    fn open(
        &self,
        task: &TaskRecord,
        secret: Option<Zeroizing<String>>,
    ) -> Result<Arc<dyn Connector>> {
        if task.source.kind() != FAKE {
            return Err(Error::Invalid(format!(
                "task {} uses the {} connector, which this build does not have",
                task.name,
                task.source.kind()
            )));
        }
        self.source
            .with(|s| s.opened_with.push(secret.as_ref().map(|x| x.to_string())));
        if let Some(want) = &self.secret {
            if secret.as_deref().map(String::as_str) != Some(want.as_str()) {
                return Err(Error::source(
                    SourceErrorKind::Auth,
                    "the source refused the credential",
                ));
            }
        }
        Ok(self.source.clone())
    }
}
