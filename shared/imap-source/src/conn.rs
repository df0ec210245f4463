//! One authenticated IMAP connection and the commands a backup and a restore need, each
//! bounded by the configured time-out. Folder names are passed and returned in their wire
//! form (modified UTF-7), which is what identifies a folder on its server.

use crate::config::{Credentials, ImapConfig, TlsMode};
use crate::error::{Error, Result};
use crate::mutf7;
use async_imap::imap_proto::{
    AttributeValue, MailboxDatum, MailboxListData, NameAttribute, RequestId, Response,
    ResponseCode, Status, StatusAttribute,
};
use async_imap::{Authenticator, Client, Session};
use chrono::{DateTime, FixedOffset};
use rustls::pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

/// The largest piece of a message body asked for in one response, and so the most of one
/// message held in memory: the client buffers a response whole. Messages up to this size
/// (nearly all mail) come in one response; a 30 MiB one in eight.
pub const BODY_PART: u32 = 4 * 1024 * 1024;

/// How many messages are asked for in one UID FETCH of bodies: enough to hide the round
/// trip, few enough that a dropped connection wastes little.
const BODIES_PER_FETCH: usize = 32;

/// The byte stream under the IMAP client: plain TCP (tests only, or before STARTTLS) or TLS.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stream::Plain(_) => "Stream::Plain",
            Stream::Tls(_) => "Stream::Tls",
        })
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What the server offers, upper-cased.
#[derive(Clone, Debug, Default)]
pub struct Capabilities(HashSet<String>);

impl Capabilities {
    pub fn has(&self, cap: &str) -> bool {
        self.0.contains(&cap.to_ascii_uppercase())
    }
    /// RFC 7162: per-message MODSEQ and `CHANGEDSINCE`.
    pub fn condstore(&self) -> bool {
        self.has("CONDSTORE") || self.qresync()
    }
    /// RFC 7162: expunged UIDs reported as `VANISHED`.
    pub fn qresync(&self) -> bool {
        self.has("QRESYNC")
    }
    /// Gmail's extensions (`X-GM-MSGID`, `X-GM-LABELS`).
    pub fn gmail(&self) -> bool {
        self.has("X-GM-EXT-1")
    }
}

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

/// What a backup keeps about a message besides its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageMeta {
    pub uid: u32,
    /// System flags and keywords, sorted; `\Recent` is left out (it is per session and
    /// cannot be restored).
    pub flags: Vec<String>,
    pub internal_date: Option<DateTime<FixedOffset>>,
    pub size: Option<u32>,
    pub modseq: Option<u64>,
    /// Gmail's message id: the same message under every label.
    pub gm_msgid: Option<u64>,
    /// Gmail's labels, decoded; system labels keep their backslash (`\Important`).
    pub gm_labels: Vec<String>,
}

impl MessageMeta {
    /// Reads a FETCH response's attributes; `None` without a UID (an unsolicited FETCH).
    pub(crate) fn from_attrs(attrs: &[AttributeValue<'_>]) -> Option<MessageMeta> {
        let mut m = MessageMeta {
            uid: 0,
            flags: Vec::new(),
            internal_date: None,
            size: None,
            modseq: None,
            gm_msgid: None,
            gm_labels: Vec::new(),
        };
        let mut uid = None;
        for a in attrs {
            match a {
                AttributeValue::Uid(u) => uid = Some(*u),
                AttributeValue::Flags(fs) => {
                    m.flags = fs
                        .iter()
                        .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
                        .map(|f| f.to_string())
                        .collect()
                }
                AttributeValue::InternalDate(d) => m.internal_date = parse_internal_date(d),
                AttributeValue::Rfc822Size(n) => m.size = Some(*n),
                AttributeValue::ModSeq(v) => m.modseq = Some(*v),
                AttributeValue::GmailMsgId(v) => m.gm_msgid = Some(*v),
                AttributeValue::GmailLabels(ls) => {
                    m.gm_labels = crate::gmail::decode_labels(ls.iter().map(|l| l.as_ref()))
                }
                _ => {}
            }
        }
        m.uid = uid?;
        m.flags.sort();
        m.flags.dedup();
        Some(m)
    }
}

/// IMAP's `date-time` (`" 2-Jan-2024 11:00:05 +0000"`; the day may be space-padded).
pub(crate) fn parse_internal_date(s: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_str(s.trim(), "%d-%b-%Y %H:%M:%S %z").ok()
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

/// What changed in the selected folder since a mod-sequence.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Messages whose flags changed, or that are new, with their new flags and MODSEQ.
    pub changed: Vec<MessageMeta>,
    /// UIDs expunged since (QRESYNC only; `None` when the server cannot say).
    pub vanished: Option<Vec<u32>>,
}

/// One piece of a message body, as the server sent it.
pub struct BodyPart {
    pub uid: u32,
    /// Where in the message these bytes start.
    pub offset: u64,
    /// The message ends with this part (it came back shorter than asked).
    pub last: bool,
    data: Vec<u8>,
}

impl BodyPart {
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }
}

struct XOAuth2 {
    response: Option<Zeroizing<Vec<u8>>>,
}

impl Authenticator for XOAuth2 {
    type Response = Zeroizing<Vec<u8>>;
    /// The first challenge is empty and gets the credentials; after a failure Gmail sends an
    /// error as a second challenge, which must be answered with an empty line.
    fn process(&mut self, _challenge: &[u8]) -> Self::Response {
        self.response.take().unwrap_or_default()
    }
}

/// The SASL XOAUTH2 initial response (Google's and Yahoo's documented format).
pub(crate) fn xoauth2_response(user: &str, token: &str) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(format!("user={user}\x01auth=Bearer {token}\x01\x01").into_bytes())
}

async fn within<T>(timeout: Duration, f: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(timeout, f)
        .await
        .map_err(|_| Error::Timeout(timeout))
}

fn tls_connector(cfg: &ImapConfig) -> Result<TlsConnector> {
    let tls_err = |reason: String| Error::Tls {
        host: cfg.host.clone(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = &cfg.extra_roots_pem {
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| tls_err(format!("bad extra CA certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| tls_err(format!("bad extra CA certificate: {e}")))?;
            n += 1;
        }
        if n == 0 {
            return Err(tls_err("the extra CA file holds no certificate".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

async fn tls_handshake(cfg: &ImapConfig, tcp: TcpStream) -> Result<Stream> {
    let connector = tls_connector(cfg)?;
    let name = ServerName::try_from(cfg.host.clone()).map_err(|e| Error::Tls {
        host: cfg.host.clone(),
        reason: format!("not a valid server name: {e}"),
    })?;
    let tls = within(cfg.timeout, connector.connect(name, tcp))
        .await?
        .map_err(|e| Error::Tls {
            host: cfg.host.clone(),
            reason: e.to_string(),
        })?;
    Ok(Stream::Tls(Box::new(tls)))
}

async fn read_greeting(client: &mut Client<Stream>, timeout: Duration) -> Result<()> {
    let resp = within(timeout, client.read_response())
        .await?
        .map_err(|e| Error::ConnectionLost(format!("reading the greeting: {e}")))?
        .ok_or_else(|| Error::ConnectionLost("closed before the greeting".into()))?;
    match resp.parsed() {
        Response::Data {
            status: Status::Ok | Status::PreAuth,
            ..
        } => Ok(()),
        Response::Data {
            status: Status::Bye,
            outcome,
        } => Err(Error::Server {
            command: "greeting".into(),
            text: outcome.information.as_deref().unwrap_or("BYE").to_string(),
        }),
        other => Err(Error::Protocol(format!("unexpected greeting {other:?}"))),
    }
}

/// Connects, protects and logs in as `cfg` says.
///
/// # Errors
/// `Connect` when the server cannot be reached, `Tls` when its certificate is not trusted
/// or TLS fails, `Unsupported` when STARTTLS was asked for and is not offered, `Auth` when
/// the login is refused. No message holds the password or token.
pub async fn connect(cfg: &ImapConfig) -> Result<ImapSession> {
    let tcp = within(
        cfg.timeout,
        TcpStream::connect((cfg.host.as_str(), cfg.port)),
    )
    .await
    .map_err(|_| Error::Connect {
        host: cfg.host.clone(),
        port: cfg.port,
        reason: format!("no answer within {:?}", cfg.timeout),
    })?
    .map_err(|e| Error::Connect {
        host: cfg.host.clone(),
        port: cfg.port,
        reason: e.to_string(),
    })?;
    let _ = tcp.set_nodelay(true);
    let client = match cfg.tls {
        TlsMode::Implicit => {
            let mut c = Client::new(tls_handshake(cfg, tcp).await?);
            read_greeting(&mut c, cfg.timeout).await?;
            c
        }
        TlsMode::NoneForTests => {
            let mut c = Client::new(Stream::Plain(tcp));
            read_greeting(&mut c, cfg.timeout).await?;
            c
        }
        TlsMode::Starttls => {
            let mut c = Client::new(Stream::Plain(tcp));
            read_greeting(&mut c, cfg.timeout).await?;
            within(cfg.timeout, c.run_command_and_check_ok("STARTTLS", None))
                .await?
                .map_err(|e| match e {
                    async_imap::error::Error::No(_) | async_imap::error::Error::Bad(_) => {
                        Error::Unsupported("STARTTLS; use --tls implicit".into())
                    }
                    e => Error::from_imap("STARTTLS", e),
                })?;
            let Stream::Plain(tcp) = c.into_inner() else {
                return Err(Error::Protocol("STARTTLS on a TLS stream".into()));
            };
            // The server says nothing after STARTTLS's OK: no greeting on the TLS stream.
            Client::new(tls_handshake(cfg, tcp).await?)
        }
    };
    let auth_err = |e: async_imap::error::Error| match e {
        async_imap::error::Error::No(text) | async_imap::error::Error::Bad(text) => Error::Auth {
            user: cfg.user.clone(),
            reason: crate::error::server_text(&text),
        },
        // Never echo a validation error: it is about the secret.
        async_imap::error::Error::Validate(_) => Error::Auth {
            user: cfg.user.clone(),
            reason: "the password holds a line break".into(),
        },
        e => Error::from_imap("login", e),
    };
    let session = match &cfg.credentials {
        Credentials::Password(p) => within(cfg.timeout, client.login(&cfg.user, p.expose()))
            .await?
            .map_err(|(e, _)| auth_err(e))?,
        Credentials::OAuth2Token(t) => {
            let auth = XOAuth2 {
                response: Some(xoauth2_response(&cfg.user, t.expose())),
            };
            within(cfg.timeout, client.authenticate("XOAUTH2", auth))
                .await?
                .map_err(|(e, _)| auth_err(e))?
        }
    };
    let mut s = ImapSession {
        inner: session,
        caps: Capabilities::default(),
        timeout: cfg.timeout,
        broken: false,
    };
    s.refresh_capabilities().await?;
    // QRESYNC implies CONDSTORE; enabling either makes SELECT/EXAMINE report HIGHESTMODSEQ
    // and FETCH report MODSEQ without asking each time.
    if s.caps.qresync() {
        s.simple("ENABLE", "ENABLE QRESYNC").await?;
    } else if s.caps.condstore() {
        s.simple("ENABLE", "ENABLE CONDSTORE").await?;
    }
    Ok(s)
}

/// An authenticated connection.
pub struct ImapSession {
    inner: Session<Stream>,
    caps: Capabilities,
    timeout: Duration,
    /// A command was abandoned half way (time-out, drop, a message that could not be
    /// read): what the server sends next belongs to it, so nothing more can be asked.
    broken: bool,
}

fn quote(s: &str) -> Result<String> {
    if s.contains(['\r', '\n']) {
        return Err(Error::Invalid(format!(
            "a folder name cannot hold a line break: {s:?}"
        )));
    }
    Ok(format!(
        "\"{}\"",
        s.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// Compresses sorted UIDs into an IMAP sequence set (`1:3,7,9:10`).
pub(crate) fn uid_set(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end + 1 {
            i += 1;
            end = uids[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// Expands a VANISHED list of ranges.
fn expand(ranges: &[std::ops::RangeInclusive<u32>], out: &mut Vec<u32>) {
    for r in ranges {
        out.extend(r.clone());
    }
}

impl ImapSession {
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    async fn refresh_capabilities(&mut self) -> Result<()> {
        let caps = within(self.timeout, self.inner.capabilities())
            .await?
            .map_err(|e| Error::from_imap("CAPABILITY", e))?;
        let mut set = HashSet::new();
        for c in caps.iter() {
            match c {
                async_imap::types::Capability::Imap4rev1 => set.insert("IMAP4REV1".to_string()),
                async_imap::types::Capability::Auth(a) => {
                    set.insert(format!("AUTH={}", a.to_ascii_uppercase()))
                }
                async_imap::types::Capability::Atom(a) => set.insert(a.to_ascii_uppercase()),
            };
        }
        self.caps = Capabilities(set);
        Ok(())
    }

    fn drain_unsolicited(&mut self) {
        while self.inner.unsolicited_responses.try_recv().is_ok() {}
    }

    /// Whether the session can take no more commands (see `broken`); open a new one.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Starts `command` and returns its tag.
    async fn start(&mut self, verb: &str, command: &str) -> Result<RequestId> {
        if self.broken {
            return Err(Error::ConnectionLost(format!(
                "{verb}: the connection was left mid-command by an earlier failure"
            )));
        }
        self.drain_unsolicited();
        within(self.timeout, self.inner.run_command(command))
            .await?
            .map_err(|e| Error::from_imap(verb, e))
    }

    /// Reads the next response and hands it to `f`. A time-out or a closed connection
    /// breaks the session.
    async fn next_response<T>(
        &mut self,
        verb: &str,
        f: impl FnOnce(&Response<'_>) -> T,
    ) -> Result<T> {
        let r = match within(self.timeout, self.inner.read_response()).await {
            Ok(Ok(Some(r))) => Ok(f(r.parsed())),
            Ok(Ok(None)) => Err(Error::ConnectionLost(format!(
                "the server closed the connection during {verb}"
            ))),
            Ok(Err(e)) => Err(Error::ConnectionLost(format!("{verb}: {e}"))),
            Err(e) => Err(e),
        };
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    /// Reads responses until the command tagged `tag` completes, handing the untagged ones
    /// to `each`. The client's own stream helpers end quietly on a tagged NO, a BYE or a
    /// closed connection, which would make a cut-short listing look complete; here each of
    /// those is an error.
    async fn finish(
        &mut self,
        verb: &str,
        tag: &RequestId,
        mut each: impl FnMut(&Response<'_>),
    ) -> Result<()> {
        loop {
            let step = self
                .next_response(verb, |r| {
                    let done = completion(verb, tag, r);
                    if done.is_none() {
                        each(r);
                    }
                    done
                })
                .await?;
            if let Some(done) = step {
                if matches!(done, Err(Error::ConnectionLost(_))) {
                    self.broken = true;
                }
                return done;
            }
        }
    }

    async fn run(
        &mut self,
        verb: &str,
        command: &str,
        each: impl FnMut(&Response<'_>),
    ) -> Result<()> {
        let tag = self.start(verb, command).await?;
        self.finish(verb, &tag, each).await
    }

    async fn simple(&mut self, verb: &str, command: &str) -> Result<()> {
        self.run(verb, command, |_| {}).await
    }

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

    fn meta_items(&self) -> String {
        let mut items = String::from("(UID FLAGS INTERNALDATE RFC822.SIZE");
        if self.caps.condstore() {
            items.push_str(" MODSEQ");
        }
        if self.caps.gmail() {
            items.push_str(" X-GM-MSGID X-GM-LABELS");
        }
        items.push(')');
        items
    }

    /// Metadata of the messages of the selected folder in `set` (a UID set such as `1:*`).
    pub async fn fetch_meta(&mut self, set: &str) -> Result<Vec<MessageMeta>> {
        let items = self.meta_items();
        self.collect_meta(set, &items).await
    }

    async fn collect_meta(&mut self, set: &str, items: &str) -> Result<Vec<MessageMeta>> {
        let mut out = Vec::new();
        self.run("UID FETCH", &format!("UID FETCH {set} {items}"), |r| {
            if let Response::Fetch(_, attrs) = r {
                if let Some(m) = MessageMeta::from_attrs(attrs) {
                    out.push(m);
                }
            }
        })
        .await?;
        out.sort_by_key(|m| m.uid);
        out.dedup_by_key(|m| m.uid);
        Ok(out)
    }

    /// Flag changes, new messages and (with QRESYNC) expunges in the selected folder since
    /// `modseq`.
    ///
    /// # Errors
    /// `Unsupported` without CONDSTORE.
    pub async fn changes_since(&mut self, modseq: u64) -> Result<Changes> {
        if !self.caps.condstore() {
            return Err(Error::Unsupported("CONDSTORE".into()));
        }
        let qresync = self.caps.qresync();
        let mut items = self.meta_items();
        if qresync {
            items.push_str(&format!(" (CHANGEDSINCE {modseq} VANISHED)"));
        } else {
            items.push_str(&format!(" (CHANGEDSINCE {modseq})"));
        }
        let mut changed = Vec::new();
        let mut vanished = Vec::new();
        self.run(
            "UID FETCH",
            &format!("UID FETCH 1:* {items}"),
            |r| match r {
                Response::Fetch(_, attrs) => {
                    if let Some(m) = MessageMeta::from_attrs(attrs) {
                        changed.push(m);
                    }
                }
                Response::Vanished { uids, .. } => expand(uids, &mut vanished),
                _ => {}
            },
        )
        .await?;
        changed.sort_by_key(|m| m.uid);
        changed.dedup_by_key(|m| m.uid);
        vanished.sort_unstable();
        vanished.dedup();
        Ok(Changes {
            changed,
            vanished: qresync.then_some(vanished),
        })
    }

    /// Every UID in the selected folder.
    pub async fn uids(&mut self) -> Result<Vec<u32>> {
        let mut v = Vec::new();
        self.run("UID SEARCH", "UID SEARCH ALL", |r| {
            if let Response::MailboxData(MailboxDatum::Search(ids)) = r {
                v.extend_from_slice(ids);
            }
        })
        .await?;
        v.sort_unstable();
        v.dedup();
        Ok(v)
    }

    /// Starts fetching the bodies of `uids` from their first byte, [`BODY_PART`] bytes each
    /// at most. A message whose first part is not `last` continues with
    /// [`ImapSession::fetch_rest`]. UIDs that no longer exist are left out by the server.
    pub async fn fetch_bodies(&mut self, uids: &[u32]) -> Result<BodyFetch<'_>> {
        self.start_body_fetch(uids, 0).await
    }

    /// The part of one message's body from `offset` on.
    pub async fn fetch_rest(&mut self, uid: u32, offset: u64) -> Result<BodyFetch<'_>> {
        self.start_body_fetch(&[uid], offset).await
    }

    async fn start_body_fetch(&mut self, uids: &[u32], offset: u64) -> Result<BodyFetch<'_>> {
        let set = uid_set(uids);
        let tag = self
            .start(
                "UID FETCH",
                &format!("UID FETCH {set} (UID BODY.PEEK[]<{offset}.{BODY_PART}>)"),
            )
            .await?;
        Ok(BodyFetch {
            session: self,
            tag,
            offset,
            done: false,
        })
    }

    /// How many bodies to ask for in one [`ImapSession::fetch_bodies`].
    pub const BODIES_PER_FETCH: usize = BODIES_PER_FETCH;

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

    /// Sets flags on messages of the selected folder (`+FLAGS`, `-FLAGS` or `FLAGS`).
    pub async fn store_flags(&mut self, uids: &[u32], op: &str, flags: &[&str]) -> Result<()> {
        let cmd = format!(
            "UID STORE {} {op}.SILENT ({})",
            uid_set(uids),
            flags.join(" ")
        );
        self.simple("UID STORE", &cmd).await
    }

    /// Removes messages marked `\Deleted` from the selected folder.
    pub async fn expunge(&mut self) -> Result<()> {
        self.simple("EXPUNGE", "EXPUNGE").await
    }

    /// Puts a message into a folder with its flags and internal date, streaming `body`
    /// (exactly `len` bytes) instead of holding it in memory.
    ///
    /// # Errors
    /// `Server` when the folder does not exist or the server refuses the message; `Invalid`
    /// when `body` holds fewer than `len` bytes.
    pub async fn append<R: AsyncRead + Unpin>(
        &mut self,
        wire: &str,
        flags: &[String],
        internal_date: Option<DateTime<FixedOffset>>,
        len: u64,
        mut body: R,
    ) -> Result<()> {
        let flags: Vec<&str> = flags
            .iter()
            .map(String::as_str)
            .filter(|f| is_appendable_flag(f))
            .collect();
        let mut cmd = format!("APPEND {} ({})", quote(wire)?, flags.join(" "));
        if let Some(d) = internal_date {
            cmd.push_str(&format!(" \"{}\"", d.format("%e-%b-%Y %H:%M:%S %z")));
        }
        cmd.push_str(&format!(" {{{len}}}"));
        let timeout = self.timeout;
        let id = self.start("APPEND", &cmd).await?;
        // The server either asks for the literal or refuses at once (folder missing, too big).
        loop {
            let step = self
                .next_response("APPEND", |r| match r {
                    Response::Continue(_) => Some(Ok(())),
                    r => completion("APPEND", &id, r).map(|done| {
                        done.and(Err(Error::Protocol(
                            "APPEND completed without the message".into(),
                        )))
                    }),
                })
                .await?;
            match step {
                Some(Ok(())) => break,
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
        // From here until the server's answer the session is mid-command: any failure
        // leaves it unusable.
        self.broken = true;
        let mut buf = vec![0u8; 256 * 1024];
        let mut sent = 0u64;
        {
            let stream = self.inner.get_mut();
            while sent < len {
                let want = buf.len().min((len - sent) as usize);
                let n = body
                    .read(&mut buf[..want])
                    .await
                    .map_err(|e| Error::Sink(format!("reading the message to append: {e}")))?;
                if n == 0 {
                    return Err(Error::Invalid(format!(
                        "the message to append ended after {sent} of {len} bytes"
                    )));
                }
                within(timeout, stream.write_all(&buf[..n]))
                    .await?
                    .map_err(|e| Error::ConnectionLost(format!("APPEND: {e}")))?;
                sent += n as u64;
            }
            within(timeout, stream.write_all(b"\r\n"))
                .await?
                .map_err(|e| Error::ConnectionLost(format!("APPEND: {e}")))?;
            within(timeout, stream.flush())
                .await?
                .map_err(|e| Error::ConnectionLost(format!("APPEND: {e}")))?;
        }
        self.broken = false;
        self.finish("APPEND", &id, |_| {}).await
    }

    /// Ends the session politely; errors are of no interest at that point.
    pub async fn logout(mut self) {
        let _ = within(Duration::from_secs(5), self.inner.logout()).await;
    }
}

/// `\Recent` is the server's to set; anything else that is an atom can be restored.
fn is_appendable_flag(f: &str) -> bool {
    !f.eq_ignore_ascii_case("\\Recent")
        && !f.is_empty()
        && !f.bytes().any(|b| {
            b <= b' ' || b >= 0x7f || matches!(b, b'(' | b')' | b'{' | b'"' | b'%' | b'*' | b']')
        })
}

/// A UID and body bytes out of one FETCH response.
type UidBody = (u32, Vec<u8>);

/// Body parts as they arrive. Dropping it before the end leaves responses unread: the
/// session must then be dropped too (the sync does so on any error).
pub struct BodyFetch<'a> {
    session: &'a mut ImapSession,
    tag: RequestId,
    offset: u64,
    done: bool,
}

impl BodyFetch<'_> {
    /// The next part, `None` when the command has completed.
    ///
    /// # Errors
    /// `Server` when the server refuses the command, `ConnectionLost` on BYE or a closed
    /// connection, `Timeout` when it goes silent.
    pub async fn next(&mut self) -> Result<Option<BodyPart>> {
        while !self.done {
            let tag = &self.tag;
            let step = self
                .session
                .next_response("UID FETCH", |r| -> Option<Result<Option<UidBody>>> {
                    if let Some(done) = completion("UID FETCH", tag, r) {
                        return Some(done.map(|()| None));
                    }
                    // Unsolicited FETCH responses (a flag changed meanwhile) carry no body.
                    let Response::Fetch(_, attrs) = r else {
                        return None;
                    };
                    let mut uid = None;
                    let mut body = None;
                    for a in attrs {
                        match a {
                            AttributeValue::Uid(u) => uid = Some(*u),
                            AttributeValue::BodySection {
                                section: None,
                                data,
                                ..
                            } => body = Some(data.as_deref().unwrap_or(&[]).to_vec()),
                            _ => {}
                        }
                    }
                    match (uid, body) {
                        (Some(uid), Some(data)) => Some(Ok(Some((uid, data)))),
                        _ => None,
                    }
                })
                .await?;
            match step {
                None => continue,
                Some(Ok(None)) => {
                    self.done = true;
                }
                Some(Err(e)) => {
                    self.done = true;
                    if matches!(e, Error::ConnectionLost(_)) {
                        self.session.broken = true;
                    }
                    return Err(e);
                }
                Some(Ok(Some((uid, data)))) => {
                    return Ok(Some(BodyPart {
                        uid,
                        offset: self.offset,
                        last: data.len() < BODY_PART as usize,
                        data,
                    }));
                }
            }
        }
        Ok(None)
    }
}

impl Drop for BodyFetch<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.session.broken = true;
        }
    }
}

/// `Some` when `r` ends the command tagged `tag` (with its outcome) or the session (BYE).
fn completion(verb: &str, tag: &RequestId, r: &Response<'_>) -> Option<Result<()>> {
    match r {
        Response::Done {
            tag: t,
            status,
            outcome,
        } if t == tag => Some(match status {
            Status::Ok => Ok(()),
            _ => Err(Error::Server {
                command: verb.to_string(),
                text: outcome
                    .information
                    .as_deref()
                    .unwrap_or("refused")
                    .to_string(),
            }),
        }),
        Response::Data {
            status: Status::Bye,
            outcome,
        } => Some(Err(Error::ConnectionLost(format!(
            "the server ended the session during {verb}: {}",
            outcome.information.as_deref().unwrap_or("BYE")
        )))),
        _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets_compress_runs() {
        assert_eq!(uid_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(uid_set(&[5]), "5");
        assert_eq!(uid_set(&[]), "");
    }

    #[test]
    fn xoauth2_response_is_googles_format() {
        let r = xoauth2_response("someone@example.com", "ya29.token");
        assert_eq!(
            &r[..],
            b"user=someone@example.com\x01auth=Bearer ya29.token\x01\x01"
        );
    }

    #[test]
    fn appendable_flags() {
        assert!(is_appendable_flag("\\Seen"));
        assert!(is_appendable_flag("$Label1"));
        assert!(!is_appendable_flag("\\Recent"));
        assert!(!is_appendable_flag("bad flag"));
        assert!(!is_appendable_flag("x)"));
    }

    #[test]
    fn quoting_escapes_and_refuses_line_breaks() {
        assert_eq!(quote("a\"b\\c").unwrap(), "\"a\\\"b\\\\c\"");
        assert!(quote("a\r\nb").is_err());
    }
}
