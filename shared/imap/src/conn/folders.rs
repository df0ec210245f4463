//! Folders: listing them with their special use, reading their state (STATUS without
//! selecting, or SELECT/EXAMINE), and creating or deleting them for a restore or a test.

use super::{quote, ImapSession};
use crate::error::{Error, Result};
use crate::mutf7;
use async_imap::imap_proto::{
    MailboxDatum, MailboxListData, NameAttribute, Response, ResponseCode, StatusAttribute,
};
use serde::{Deserialize, Serialize};

/// RFC 6154 special use of a folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpecialUse {
    All,
    Archive,
    Drafts,
    Flagged,
    Junk,
    Sent,
    Trash,
    Important,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderInfo {
    /// The name as the server spells it (modified UTF-7): what commands use.
    pub wire: String,
    /// The name for people (decoded), or the wire name where it does not decode.
    pub name: String,
    /// The hierarchy separator, `None` for a flat namespace.
    pub delimiter: Option<String>,
    pub special_use: Option<SpecialUse>,
    /// False for `\Noselect` / `\NonExistent` folders that only hold others.
    pub selectable: bool,
}

impl FolderInfo {
    /// The decoded name split on the hierarchy separator.
    pub fn segments(&self) -> Vec<String> {
        match &self.delimiter {
            Some(d) if !d.is_empty() => self.name.split(d.as_str()).map(String::from).collect(),
            _ => vec![self.name.clone()],
        }
    }
}

/// A folder's state, from STATUS or SELECT/EXAMINE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderStatus {
    pub uid_validity: u32,
    pub uid_next: u32,
    pub messages: u32,
    /// Present when the server has CONDSTORE and the folder keeps mod-sequences.
    pub highest_modseq: Option<u64>,
}

/// A folder's state as responses report it, piece by piece.
#[derive(Default)]
struct PartialStatus {
    uid_validity: Option<u32>,
    uid_next: Option<u32>,
    messages: Option<u32>,
    highest_modseq: Option<u64>,
}

impl PartialStatus {
    fn finish(self, verb: &str, condstore: bool) -> Result<FolderStatus> {
        Ok(FolderStatus {
            uid_validity: self
                .uid_validity
                .ok_or_else(|| Error::Protocol(format!("{verb} did not give UIDVALIDITY")))?,
            // UIDNEXT is only a SHOULD; nothing relies on it but the quick unchanged test.
            uid_next: self.uid_next.unwrap_or(0),
            // The count decides whether an empty folder is listed at all: never guessed.
            messages: self
                .messages
                .ok_or_else(|| Error::Protocol(format!("{verb} did not give the message count")))?,
            highest_modseq: self.highest_modseq.filter(|_| condstore),
        })
    }
}

impl ImapSession {
    /// Every folder, with its special use (RFC 6154 attributes on LIST).
    pub async fn list_folders(&mut self) -> Result<Vec<FolderInfo>> {
        let mut out = Vec::new();
        self.run("LIST", "LIST \"\" \"*\"", |r| {
            if let Response::MailboxData(MailboxDatum::List(l)) = r {
                out.push(folder_info(l));
            }
        })
        .await?;
        out.sort_by(|a, b| a.wire.cmp(&b.wire));
        out.dedup_by(|a, b| a.wire == b.wire);
        Ok(out)
    }

    /// The folder's state without selecting it: a daily run skips folders where nothing
    /// changed at this cost.
    pub async fn status(&mut self, wire: &str) -> Result<FolderStatus> {
        let condstore = self.caps.condstore();
        let items = if condstore {
            "(UIDVALIDITY UIDNEXT MESSAGES HIGHESTMODSEQ)"
        } else {
            "(UIDVALIDITY UIDNEXT MESSAGES)"
        };
        let mut st = PartialStatus::default();
        self.run("STATUS", &format!("STATUS {} {items}", quote(wire)?), |r| {
            if let Response::MailboxData(MailboxDatum::Status { status, .. }) = r {
                for a in status {
                    match a {
                        StatusAttribute::UidValidity(v) => st.uid_validity = Some(*v),
                        StatusAttribute::UidNext(v) => st.uid_next = Some(*v),
                        StatusAttribute::Messages(v) => st.messages = Some(*v),
                        StatusAttribute::HighestModSeq(v) => st.highest_modseq = Some(*v),
                        _ => {}
                    }
                }
            }
        })
        .await?;
        st.finish("STATUS", condstore)
    }

    /// Opens a folder read-only: a backup must not change `\Recent` or anything else.
    pub async fn examine(&mut self, wire: &str) -> Result<FolderStatus> {
        self.open_folder("EXAMINE", wire).await
    }

    /// Opens a folder read-write (restore, tests).
    pub async fn select(&mut self, wire: &str) -> Result<FolderStatus> {
        self.open_folder("SELECT", wire).await
    }

    async fn open_folder(&mut self, verb: &str, wire: &str) -> Result<FolderStatus> {
        let condstore = self.caps.condstore();
        let mut st = PartialStatus::default();
        self.run(verb, &format!("{verb} {}", quote(wire)?), |r| match r {
            Response::MailboxData(MailboxDatum::Exists(n)) => st.messages = Some(*n),
            Response::Data { outcome, .. } => match outcome.code {
                Some(ResponseCode::UidValidity(v)) => st.uid_validity = Some(v),
                Some(ResponseCode::UidNext(v)) => st.uid_next = Some(v),
                Some(ResponseCode::HighestModSeq(v)) => st.highest_modseq = Some(v),
                _ => {}
            },
            _ => {}
        })
        .await?;
        st.finish(verb, condstore)
    }

    /// Creates a folder (and, on servers that need it, its parents); an existing one is fine.
    pub async fn create_folder(&mut self, wire: &str) -> Result<()> {
        let cmd = format!("CREATE {}", quote(wire)?);
        match self.simple("CREATE", &cmd).await {
            Ok(()) => Ok(()),
            Err(Error::Server { text, .. })
                if text.to_ascii_uppercase().contains("ALREADYEXISTS")
                    || text.to_ascii_lowercase().contains("already exists") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes a folder (tests; a UIDVALIDITY change on day 2).
    pub async fn delete_folder(&mut self, wire: &str) -> Result<()> {
        let cmd = format!("DELETE {}", quote(wire)?);
        self.simple("DELETE", &cmd).await
    }
}

/// A LIST response as a folder.
fn folder_info(l: &MailboxListData<'_>) -> FolderInfo {
    let wire = l.name.to_string();
    let mut special_use = None;
    let mut selectable = true;
    for a in &l.name_attributes {
        match a {
            NameAttribute::NoSelect => selectable = false,
            NameAttribute::All => special_use = Some(SpecialUse::All),
            NameAttribute::Archive => special_use = Some(SpecialUse::Archive),
            NameAttribute::Drafts => special_use = Some(SpecialUse::Drafts),
            NameAttribute::Flagged => special_use = Some(SpecialUse::Flagged),
            NameAttribute::Junk => special_use = Some(SpecialUse::Junk),
            NameAttribute::Sent => special_use = Some(SpecialUse::Sent),
            NameAttribute::Trash => special_use = Some(SpecialUse::Trash),
            NameAttribute::Extension(x) => {
                let x = x.to_ascii_lowercase();
                if x == "\\nonexistent" || x == "\\noselect" {
                    selectable = false;
                } else if x == "\\important" {
                    special_use = special_use.or(Some(SpecialUse::Important));
                }
            }
            _ => {}
        }
    }
    let name = mutf7::decode(&wire).unwrap_or_else(|_| wire.clone());
    FolderInfo {
        wire,
        name,
        delimiter: l.delimiter.as_deref().map(String::from),
        special_use,
        selectable,
    }
}
