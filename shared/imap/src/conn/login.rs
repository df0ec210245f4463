//! Getting to an authenticated session: the byte stream (plain for tests, TLS, or upgraded
//! by STARTTLS), the greeting, a password or XOAUTH2 login, and what the server then says it
//! can do, which decides how much the later commands may ask for.

use super::{within, ImapSession};
use crate::config::{Credentials, ImapConfig, TlsMode};
use crate::error::{Error, Result};
use async_imap::imap_proto::{Response, Status};
use async_imap::{Authenticator, Client};
use rustls::pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::collections::HashSet;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

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

    /// Ends the session politely; errors are of no interest at that point.
    pub async fn logout(mut self) {
        let _ = within(Duration::from_secs(5), self.inner.logout()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoauth2_response_is_googles_format() {
        let r = xoauth2_response("someone@example.com", "ya29.token");
        assert_eq!(
            &r[..],
            b"user=someone@example.com\x01auth=Bearer ya29.token\x01\x01"
        );
    }
}
