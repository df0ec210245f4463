//! The IMAP side of Lifeboat's personal-mailbox source (Gmail, Yahoo Mail, any IMAP server):
//! connecting (implicit TLS, STARTTLS, or plaintext for local tests), logging in with a
//! password or an OAuth 2 token (XOAUTH2), listing folders with their special use, reading
//! messages byte-exact with bounded memory, noticing what changed since the last backup
//! (CONDSTORE/QRESYNC), and putting messages back with APPEND.
//!
//! # Why `async-imap`
//!
//! Three maintained Rust IMAP clients were weighed:
//!
//! - `imap` (jonhoo): blocking only, and its 3.0 line has stayed in alpha for years.
//! - `imap-next` / `imap-codec` (duesee): the most thorough grammar (CONDSTORE/QRESYNC behind a
//!   feature), sans-I/O; but no Gmail extensions (`X-GM-MSGID`, `X-GM-LABELS` would have to be
//!   parsed by hand), and a lower-level flow API to drive for every command.
//! - `async-imap` (chatmail, the client behind Delta Chat, run against every large provider
//!   daily): tokio, any stream type (so STARTTLS and rustls are ours to choose), `ENABLE`,
//!   `HIGHESTMODSEQ` and `MODSEQ` parsed, `VANISHED` parsed by its parser (`imap-proto`),
//!   `X-GM-MSGID` / `X-GM-LABELS` parsed, `APPEND` with flags and internal date,
//!   `AUTHENTICATE` with any mechanism.
//!
//! `async-imap` it is: connection set-up, login, AUTHENTICATE, CAPABILITY, SELECT/EXAMINE and
//! STATUS go through its API, and its parser reads every response. Three things are done
//! here on top of it:
//! - LIST, UID FETCH and UID SEARCH are driven on its response reader rather than its
//!   stream helpers, which end quietly on a tagged NO, a BYE or a closed connection, so that
//!   a listing cut short can never pass for a complete one (and be read as expunges);
//! - APPEND streams a large message instead of taking it whole ([`ImapSession::append`]);
//! - bounded memory on fetch: the client holds a whole response in memory, so a body is
//!   fetched in partial ranges (`BODY.PEEK[]<offset.length>`) of at most [`BODY_PART`]
//!   (4 MiB) bytes.
//!
//! That is the memory cap: whatever a message's size, no more than one part of it is in
//! memory at a time (the connector spools larger messages to a temporary file).
//! Modified UTF-7 folder names are encoded here too ([`mutf7`]): the crates that offer it
//! panic on malformed input, and a server's folder list is input from outside.

mod config;
mod conn;
pub mod connector;
mod error;
pub mod gmail;
pub mod mutf7;
pub mod sync;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{Credentials, ImapConfig, Secret, TlsMode};
pub use conn::{
    connect, BodyPart, Capabilities, Changes, FolderInfo, FolderStatus, ImapSession, MessageMeta,
    SpecialUse, BODY_PART,
};
pub use connector::{AuthKind, ImapConnector, ImapSettings};
pub use error::{Error, ErrorKind, Result};
