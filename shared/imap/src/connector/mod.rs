//! The IMAP connector: one mailbox per task, backed up into the account tree and restored
//! by APPEND.
//!
//! Layout of an account: one folder per IMAP folder, named as the user sees it (decoded,
//! split on the server's separator: `Projekte/Größe/…`), each message `<uid>.eml` holding the
//! RFC 822 bytes exactly as the server has them. A folder's entry keeps its wire name, and
//! each message its flags, internal date, UID, MODSEQ and (Gmail) message id and labels, as
//! `meta`; a flag change updates the metadata only. The cursor is the [`MailboxCursor`].
//! On Gmail only All Mail, Trash, Spam and Chats are read (see [`crate::gmail`]), so a
//! message under several labels is stored once and its labels are metadata.
//!
//! Memory: a message up to the vault's small-item size is held whole; a larger one is
//! spooled to an unnamed temporary file part by part and streamed into the vault from
//! there, so no message, whatever its size, is held in memory.
//!
//! [`MailboxCursor`]: crate::sync::MailboxCursor

mod backup;
mod layout;
mod restore;
mod settings;

pub use settings::{AuthKind, ImapSettings};

use crate::config::ImapConfig;
use crate::conn::connect;
use crate::error::{Error as ImapError, ErrorKind};
use async_trait::async_trait;
use domain::{AccountId, Service};
use engine::{
    AccountInfo, AccountTree, Connector, Error, RestoreContent, Result, SourceErrorKind,
    SourceRestore, SourceRestoreReport, TaskRecord,
};
use std::time::Duration;
use zeroize::Zeroizing;

/// The source name of IMAP tasks.
pub const SOURCE: &str = "imap";
/// The one account of an IMAP task: the mailbox.
pub const ACCOUNT: &str = "mailbox";

/// Metadata keys.
pub const META_WIRE: &str = "imap.folder";
/// The UIDVALIDITY under which a folder's messages were stored: a folder whose cursor is
/// lost keeps them when it is unchanged.
pub const META_UIDVALIDITY: &str = "imap.uidvalidity";
pub const META_DELIMITER: &str = "imap.delimiter";
pub const META_SPECIAL_USE: &str = "imap.special_use";
pub const META_UID: &str = "imap.uid";
pub const META_MODSEQ: &str = "imap.modseq";
pub const META_FLAGS: &str = "flags";
pub const META_INTERNAL_DATE: &str = engine::connector::META_RECEIVED;
pub const META_FROM: &str = "from";
pub const META_SUBJECT: &str = "subject";
pub const META_GM_MSGID: &str = "gmail.msgid";
pub const META_GM_LABELS: &str = "gmail.labels";

/// Maps an IMAP failure to the engine's source error (the message never holds a secret).
pub fn source_error(e: ImapError) -> Error {
    let kind = match e.kind() {
        ErrorKind::Auth => SourceErrorKind::Auth,
        ErrorKind::Connect | ErrorKind::ConnectionLost | ErrorKind::Timeout | ErrorKind::Tls => {
            SourceErrorKind::Unavailable
        }
        ErrorKind::Invalid => return Error::Invalid(e.to_string()),
        _ => SourceErrorKind::Protocol,
    };
    Error::Source {
        kind,
        message: e.to_string(),
    }
}

pub struct ImapConnector {
    settings: ImapSettings,
    cfg: ImapConfig,
}

impl ImapConnector {
    /// # Errors
    /// `Invalid` for a task that is not an IMAP task, unreadable settings, or a missing
    /// credential.
    pub fn open(task: &TaskRecord, secret: Option<Zeroizing<String>>) -> Result<Self> {
        let (source, settings) = (task.source.kind(), &task.source.settings);
        if source != SOURCE {
            return Err(Error::Invalid(format!(
                "task {} is a {source} task, not an IMAP task",
                task.name
            )));
        }
        let settings: ImapSettings = serde_json::from_value(settings.clone()).map_err(|e| {
            Error::Invalid(format!(
                "the IMAP settings of task {} are unreadable: {e}",
                task.name
            ))
        })?;
        let secret = secret.ok_or_else(|| {
            Error::Invalid(format!(
                "task {} has no password or token; replace its credential",
                task.name
            ))
        })?;
        let cfg = settings.to_config(&secret)?;
        Ok(ImapConnector { settings, cfg })
    }

    pub fn from_config(settings: ImapSettings, cfg: ImapConfig) -> Self {
        ImapConnector { settings, cfg }
    }

    /// Logs in and out: checks the settings and credential when a task is added.
    ///
    /// # Errors
    /// As [`connect`], mapped to source errors.
    pub async fn check(&self) -> Result<()> {
        let s = connect(&self.cfg).await.map_err(source_error)?;
        s.logout().await;
        Ok(())
    }

    fn account(&self) -> AccountInfo {
        AccountInfo {
            id: AccountId::new(ACCOUNT).expect("valid id"),
            name: format!("{}@{}", self.settings.user, self.settings.host),
            services: vec![Service::Mail],
        }
    }
}

#[async_trait]
impl Connector for ImapConnector {
    /// Logs in and out: the mailbox is the account, so listing proves nothing.
    async fn check(&self) -> Result<()> {
        ImapConnector::check(self).await
    }

    async fn accounts(&self) -> Result<Vec<AccountInfo>> {
        Ok(vec![self.account()])
    }

    async fn backup(
        &self,
        _account: &AccountInfo,
        cursor: Option<&str>,
        tree: &mut AccountTree,
    ) -> Result<Option<String>> {
        self.backup_mailbox(cursor, tree).await
    }

    async fn restore(
        &self,
        job: &SourceRestore,
        content: &RestoreContent,
    ) -> Result<SourceRestoreReport> {
        self.restore_items(job, content).await
    }
}

/// How long a connector waits on the server by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
