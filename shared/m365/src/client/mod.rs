//! The Graph HTTP client: app-only tokens from the client-credentials grant (cached, renewed
//! before they expire and once more on a 401), `Retry-After` on 429/503/504 with a capped
//! backoff, at most four requests in flight per mailbox, and Graph's error bodies turned
//! into errors that say what to do. The client secret is only ever put in the token request
//! body; it is never formatted into a message.
//!
//! Every category's backup and restore goes through the one [`Graph`] defined here; its
//! concerns live in modules of their own: `token` (the app's token), `pace` (the service
//! limits kept under), `request` (sending and retrying), `batch` (`$batch`), `fail` (what
//! a failure means) and `paging` (whole collections).

mod batch;
mod fail;
mod pace;
mod paging;
mod request;
mod token;

pub use batch::{BatchAnswer, BatchRequest, BATCH_MAX};
pub use fail::{FResult, Fail};
pub use pace::{resource_units, Throttle, MAILBOX_CONCURRENCY};
pub use request::RetryPolicy;

pub(crate) use paging::pages;

use bytes::Bytes;
use pace::{budgets_of, Budgets};
use reqwest::{Method, Response};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use token::{scope_for, Token};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroizing;

/// How long a request may wait for its next bytes.
pub const READ_TIMEOUT: Duration = Duration::from_secs(90);

/// A request body.
#[derive(Clone)]
pub enum Body {
    Json(Value),
    Bytes(Bytes, &'static str),
}

/// One tenant's Graph endpoint with its credentials.
pub struct Graph {
    http: reqwest::Client,
    /// `https://graph.microsoft.com/v1.0`, without a trailing slash.
    pub root: String,
    token_url: String,
    client_id: String,
    secret: Zeroizing<String>,
    scope: String,
    token: tokio::sync::Mutex<Option<Token>>,
    generation: std::sync::atomic::AtomicU64,
    mailboxes: Mutex<HashMap<String, Arc<Semaphore>>>,
    pub policy: RetryPolicy,
    pub throttle: Throttle,
    budgets: Arc<Budgets>,
}

/// A response with the mailbox permit it was made under: the permit is held until the
/// body has been read, so a streamed body still counts against the mailbox's limit.
pub struct Answer {
    pub resp: Response,
    pub permit: Option<OwnedSemaphorePermit>,
}

/// The request line for messages: the path without its query, which can be long and
/// carries opaque state tokens.
fn what(method: &Method, url: &str) -> String {
    let path = url.split('?').next().unwrap_or(url);
    let path = path
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or(path);
    format!("{method} {path}")
}

fn http_client(read_timeout: Duration) -> engine::Result<reqwest::Client> {
    reqwest::Client::builder()
        // Redirects are followed by hand: a download's redirect leaves Graph, and the
        // bearer token must not follow it.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(30))
        // Every request, a download's body included, fails when nothing arrives for this
        // long, so a stalled connection cannot hold a run until its end; a download that
        // breaks off is resumed where it stopped.
        .read_timeout(read_timeout)
        .build()
        .map_err(|e| engine::Error::Invalid(format!("cannot build an HTTP client: {e}")))
}

impl Graph {
    /// # Errors
    /// `Invalid` when the HTTP client cannot be built.
    pub fn new(
        graph_url: &str,
        login_url: &str,
        tenant: &str,
        client_id: &str,
        secret: Zeroizing<String>,
    ) -> engine::Result<Graph> {
        let http = http_client(READ_TIMEOUT)?;
        let graph = graph_url.trim_end_matches('/');
        let root = if graph.ends_with("/v1.0") {
            graph.to_string()
        } else {
            format!("{graph}/v1.0")
        };
        Ok(Graph {
            http,
            token_url: format!(
                "{}/{}/oauth2/v2.0/token",
                login_url.trim_end_matches('/'),
                tenant
            ),
            scope: scope_for(graph),
            root,
            client_id: client_id.to_string(),
            secret,
            token: tokio::sync::Mutex::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
            mailboxes: Mutex::new(HashMap::new()),
            policy: RetryPolicy::default(),
            throttle: Throttle::default(),
            budgets: budgets_of(format!("{graph} {login_url} {tenant} {client_id}")),
        })
    }

    /// Sets how long a request may wait for its next bytes ([`READ_TIMEOUT`] unless set),
    /// so that tests can stall a connection without waiting minutes.
    ///
    /// # Errors
    /// `Invalid` when the HTTP client cannot be built.
    pub fn set_read_timeout(&mut self, t: Duration) -> engine::Result<()> {
        self.http = http_client(t)?;
        Ok(())
    }

    /// An absolute URL for a Graph path (`/users`), or the URL itself (a next link).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{}", self.root, path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_show_the_path_not_the_query() {
        assert_eq!(
            what(
                &Method::GET,
                "https://graph.microsoft.com/v1.0/users/a/messages/delta?$deltatoken=abc"
            ),
            "GET /v1.0/users/a/messages/delta"
        );
    }
}
