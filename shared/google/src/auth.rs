//! Signing in to Google: a Workspace through its service account with domain-wide
//! delegation (the JWT bearer grant of RFC 7523: an assertion signed RS256 with the
//! account's private key, naming the user impersonated as `sub`), a personal account
//! through the refresh token its owner's consent gave (the refresh-token grant).
//!
//! Google issues one access token per impersonated user and scope set, valid an hour; they
//! are cached by `(user, scopes)` and asked for again a minute before they expire, or at
//! once when an API answers 401. Keys and tokens are never formatted into a message: the
//! private key lives only inside ring's key pair, the rest in `Zeroizing` strings.

use crate::client::Fail;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::signature::RsaKeyPair;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

/// How long before its expiry a cached token is replaced: a request started with it must
/// not see it expire on the way.
const RENEW_BEFORE: Duration = Duration::from_secs(60);
/// The lifetime asked for in an assertion: Google's maximum, an hour.
const ASSERTION_LIFETIME: i64 = 3600;

/// A service account's key, from the JSON key file Google's console downloads.
pub struct ServiceAccountKey {
    pub client_email: String,
    pub key_id: String,
    key_pair: RsaKeyPair,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("key", &"<redacted>")
            .finish()
    }
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    client_email: String,
    #[serde(default)]
    private_key_id: String,
    private_key: String,
}

impl ServiceAccountKey {
    /// Reads a key file. The messages never quote the file: it holds the private key.
    ///
    /// # Errors
    /// A message saying what is wrong with the file.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let f: KeyFile = serde_json::from_str(text)
            .map_err(|_| "the service account key is not a Google JSON key file".to_string())?;
        if f.kind != "service_account" {
            return Err(format!(
                "the key file is of type {:?}, not a service account's",
                f.kind
            ));
        }
        let pem = Zeroizing::new(f.private_key);
        let b64: Zeroizing<String> = Zeroizing::new(
            pem.lines()
                .filter(|l| !l.starts_with("-----"))
                .map(str::trim)
                .collect(),
        );
        let der = Zeroizing::new(
            STANDARD
                .decode(b64.as_bytes())
                .map_err(|_| "the service account's private key is not PEM".to_string())?,
        );
        let key_pair = RsaKeyPair::from_pkcs8(&der)
            .map_err(|_| "the service account's private key is not a PKCS#8 RSA key".to_string())?;
        Ok(ServiceAccountKey {
            client_email: f.client_email,
            key_id: f.private_key_id,
            key_pair,
        })
    }

    /// A signed assertion asking for `scopes` on behalf of `sub`, for the token URL `aud`.
    pub fn assertion(
        &self,
        sub: Option<&str>,
        scopes: &str,
        aud: &str,
        now: i64,
    ) -> Result<String, Fail> {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.key_id});
        let mut claims = json!({
            "iss": self.client_email,
            "scope": scopes,
            "aud": aud,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        });
        if let Some(sub) = sub {
            claims["sub"] = json!(sub);
        }
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.key_pair.public().modulus_len()];
        self.key_pair
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| Fail::Auth("the service account's key cannot sign".into()))?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

/// How a task signs in.
pub enum Credential {
    /// A Workspace: every user impersonated through the service account.
    ServiceAccount(Box<ServiceAccountKey>),
    /// A personal account: the installed app's client and the owner's refresh token.
    Refresh {
        client_id: String,
        client_secret: Zeroizing<String>,
        refresh_token: Zeroizing<String>,
    },
}

/// A personal account's secret as sealed with the task: the OAuth client's secret and the
/// refresh token, as one JSON object.
pub struct RefreshSecret {
    pub client_secret: Zeroizing<String>,
    pub refresh_token: Zeroizing<String>,
}

impl RefreshSecret {
    /// Reads `{"client_secret", "refresh_token"}`; `None` when it is not that.
    pub fn from_json(text: &str) -> Option<Self> {
        #[derive(Deserialize)]
        struct Raw {
            client_secret: String,
            refresh_token: String,
        }
        let r: Raw = serde_json::from_str(text).ok()?;
        Some(RefreshSecret {
            client_secret: Zeroizing::new(r.client_secret),
            refresh_token: Zeroizing::new(r.refresh_token),
        })
    }
}

struct Cached {
    token: Arc<Zeroizing<String>>,
    until: Instant,
}

/// Access tokens, per impersonated user and scope set.
pub struct Tokens {
    http: reqwest::Client,
    token_url: String,
    cred: Credential,
    cache: tokio::sync::Mutex<HashMap<(String, String), Cached>>,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Tokens {
    pub fn new(http: reqwest::Client, token_url: &str, cred: Credential) -> Self {
        Tokens {
            http,
            token_url: token_url.to_string(),
            cred,
            cache: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// A token acting for `sub` with `scopes` (space-separated), from the cache while it has
    /// over a minute left. Concurrent callers wait for one request rather than each sending
    /// their own.
    ///
    /// # Errors
    /// `Fail::Auth` when Google refuses the grant; `Fail::Unavailable` when it cannot be asked.
    pub async fn get(&self, sub: &str, scopes: &str) -> Result<Arc<Zeroizing<String>>, Fail> {
        let key = (sub.to_string(), scopes.to_string());
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.get(&key) {
            if c.until > Instant::now() + RENEW_BEFORE {
                return Ok(c.token.clone());
            }
        }
        let (token, life) = self.request(sub, scopes).await?;
        let token = Arc::new(token);
        cache.insert(
            key,
            Cached {
                token: token.clone(),
                until: Instant::now() + life,
            },
        );
        Ok(token)
    }

    /// Drops `token` from the cache after an API refused it (401), unless it was replaced.
    pub async fn forget(&self, sub: &str, scopes: &str, token: &Arc<Zeroizing<String>>) {
        let key = (sub.to_string(), scopes.to_string());
        let mut cache = self.cache.lock().await;
        if cache
            .get(&key)
            .is_some_and(|c| Arc::ptr_eq(&c.token, token))
        {
            cache.remove(&key);
        }
    }

    async fn request(
        &self,
        sub: &str,
        scopes: &str,
    ) -> Result<(Zeroizing<String>, Duration), Fail> {
        let z = |s: String| Zeroizing::new(s);
        let form: Vec<(&str, Zeroizing<String>)> = match &self.cred {
            Credential::ServiceAccount(key) => vec![
                (
                    "grant_type",
                    z("urn:ietf:params:oauth:grant-type:jwt-bearer".into()),
                ),
                (
                    "assertion",
                    z(key.assertion(Some(sub), scopes, &self.token_url, now_secs())?),
                ),
            ],
            Credential::Refresh {
                client_id,
                client_secret,
                refresh_token,
            } => vec![
                ("grant_type", z("refresh_token".into())),
                ("client_id", z(client_id.clone())),
                ("client_secret", client_secret.clone()),
                ("refresh_token", refresh_token.clone()),
            ],
        };
        let form = Zeroizing::new(form_body(&form));
        let mut last = String::new();
        // The token endpoint is retried on its own 5xx and on connection failures, a few
        // times: a refusal (4xx) is final.
        for attempt in 0..4u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let resp = match self
                .http
                .post(&self.token_url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form.to_string())
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    last = format!(
                        "Google's token endpoint cannot be reached: {}",
                        crate::client::cause(&e)
                    );
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if status == 200 {
                let token = body["access_token"].as_str().unwrap_or("");
                if token.is_empty() {
                    return Err(Fail::Protocol(
                        "Google's token endpoint answered without a token".into(),
                    ));
                }
                let life = body["expires_in"].as_u64().unwrap_or(3599);
                return Ok((Zeroizing::new(token.to_string()), Duration::from_secs(life)));
            }
            if status >= 500 {
                last = format!("Google's token endpoint answered {status}");
                continue;
            }
            let error = body["error"].as_str().unwrap_or("");
            let description = body["error_description"].as_str().unwrap_or("");
            return Err(Fail::Auth(format!(
                "Google refused the sign-in ({status} {error}: {description}); check the key or consent and the scopes delegated"
            )));
        }
        Err(Fail::Unavailable(last))
    }
}

fn form_body<V: AsRef<str>>(pairs: &[(&str, V)]) -> String {
    let mut s = String::new();
    for (k, v) in pairs {
        if !s.is_empty() {
            s.push('&');
        }
        s.push_str(k);
        s.push('=');
        s.extend(percent(v.as_ref()));
    }
    s
}

/// `application/x-www-form-urlencoded` escaping of one value.
fn percent(v: &str) -> impl Iterator<Item = char> + '_ {
    v.bytes().flat_map(|b| {
        let keep = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
        let s: Vec<char> = if keep {
            vec![b as char]
        } else {
            format!("%{b:02X}").chars().collect()
        };
        s.into_iter()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_escaped() {
        assert_eq!(
            form_body(&[("a", "x y/z+="), ("b", "ok")]),
            "a=x%20y%2Fz%2B%3D&b=ok"
        );
    }

    #[test]
    fn a_key_file_of_another_kind_is_refused_without_quoting_it() {
        let e = ServiceAccountKey::from_json(r#"{"type":"authorized_user","client_email":"x","private_key":"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----"}"#)
            .unwrap_err();
        assert!(
            e.contains("authorized_user") && !e.contains("c2VjcmV0"),
            "{e}"
        );
        let e = ServiceAccountKey::from_json(r#"{"type":"service_account","client_email":"x","private_key":"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----"}"#)
            .unwrap_err();
        assert!(!e.contains("c2VjcmV0"), "{e}");
    }
}
