//! Google's OAuth 2.0 token endpoint (`POST /token`) for the two grants Lifeboat uses:
//! the JWT bearer grant of a service account with domain-wide delegation (RFC 7523: an
//! RS256-signed assertion whose `sub` is the user impersonated), verified against the
//! service account's public key; and the refresh-token grant of an installed app for
//! personal accounts. Refusals are Google's: `invalid_grant` with its descriptions,
//! `unauthorized_client` for scopes the administrator did not delegate.
//!
//! The service account's key pair is made when the simulator starts (by the `openssl`
//! command, since no crate of the workspace generates RSA keys); the private half is only
//! handed out as the JSON key file Google's console downloads, and the simulator keeps the
//! public half, as Google does.

use crate::errors::{oauth_error, ApiError};
use crate::{lock, Shared};
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::signature::{self, KeyPair as _};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The grant type of the JWT bearer flow.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Google's real token URL: assertions may name it as their audience.
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

/// A service account as the simulator knows it: its public key and the key file it handed out.
pub struct ServiceAccount {
    pub client_email: String,
    pub client_id: String,
    pub key_id: String,
    pub public_der: Vec<u8>,
    /// The JSON key file (with the private key), test-only.
    pub key_file: String,
}

/// An access token the simulator issued.
#[derive(Clone, Debug)]
pub struct Access {
    pub sub: String,
    pub scopes: Vec<String>,
    pub expires: Instant,
}

/// A new RSA key pair as PKCS#8 PEM, made by `openssl` (test-only keys).
///
/// # Panics
/// When `openssl` is missing or fails: the simulator cannot serve the JWT grant without it.
pub fn generate_test_key_pem() -> String {
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("the openssl command makes the simulator's test keys");
    assert!(out.status.success(), "openssl genpkey failed");
    String::from_utf8(out.stdout).expect("PEM is ASCII")
}

/// The DER inside a PEM block.
pub fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    STANDARD.decode(b64).ok()
}

/// The public key (RSAPublicKey DER) of a PKCS#8 PEM private key.
pub fn public_der_of(pem: &str) -> Option<Vec<u8>> {
    let der = pem_to_der(pem)?;
    let kp = signature::RsaKeyPair::from_pkcs8(&der).ok()?;
    Some(kp.public_key().as_ref().to_vec())
}

impl ServiceAccount {
    pub fn generate(project: &str, n: u64) -> Self {
        let pem = generate_test_key_pem();
        let public_der = public_der_of(&pem).expect("openssl made a PKCS#8 RSA key");
        let client_email = format!("lifeboat-backup@{project}.iam.gserviceaccount.com");
        let client_id = format!("1{:020}", crate::splitmix(n));
        let key_id = format!(
            "{:016x}{:016x}{:08x}",
            crate::splitmix(n ^ 1),
            crate::splitmix(n ^ 2),
            n & 0xffff_ffff
        );
        let key_file = serde_json::to_string_pretty(&json!({
            "type": "service_account",
            "project_id": project,
            "private_key_id": key_id,
            "private_key": pem,
            "client_email": client_email,
            "client_id": client_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": GOOGLE_TOKEN_URL,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": format!("https://www.googleapis.com/robot/v1/metadata/x509/{}", client_email.replace('@', "%40")),
            "universe_domain": "googleapis.com",
        }))
        .expect("serialises");
        ServiceAccount {
            client_email,
            client_id,
            key_id,
            public_der,
            key_file,
        }
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Issues an access token for `sub` with `scopes`.
pub fn issue(shared: &Shared, sub: &str, scopes: Vec<String>) -> (String, u64) {
    let n = shared.next();
    let token = format!("ya29.sim{:016x}{:08x}", crate::splitmix(n), n);
    let life = shared.cfg.token_lifetime;
    lock(&shared.tokens).insert(
        token.clone(),
        Access {
            sub: sub.to_string(),
            scopes,
            expires: Instant::now() + life,
        },
    );
    (token, life.as_secs())
}

fn granted(token: String, expires_in: u64, scope: &str) -> Response {
    axum::Json(json!({
        "access_token": token,
        "expires_in": expires_in,
        "scope": scope,
        "token_type": "Bearer",
    }))
    .into_response()
}

pub async fn token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    lock(&shared.stats).token_requests += 1;
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    match get("grant_type") {
        Some(JWT_BEARER) => jwt_grant(&shared, get("assertion").unwrap_or("")),
        Some("refresh_token") => refresh_grant(
            &shared,
            get("client_id").unwrap_or(""),
            get("client_secret").unwrap_or(""),
            get("refresh_token").unwrap_or(""),
        ),
        Some(_) => oauth_error(400, "unsupported_grant_type", "Invalid grant_type: "),
        None => oauth_error(
            400,
            "invalid_request",
            "Required parameter is missing: grant_type",
        ),
    }
}

fn jwt_grant(shared: &Shared, assertion: &str) -> Response {
    let parts: Vec<&str> = assertion.split('.').collect();
    if parts.len() != 3 {
        return oauth_error(400, "invalid_request", "Invalid JWT format.");
    }
    let decode = |s: &str| -> Option<Value> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).ok()?).ok()
    };
    let (Some(header), Some(claims), Ok(sig)) = (
        decode(parts[0]),
        decode(parts[1]),
        URL_SAFE_NO_PAD.decode(parts[2]),
    ) else {
        return oauth_error(400, "invalid_grant", "Invalid JWT format.");
    };
    let sa = &shared.service_account;
    if header["alg"] != "RS256" {
        return oauth_error(400, "invalid_grant", "Invalid JWT: unsupported algorithm.");
    }
    if claims["iss"] != sa.client_email.as_str() {
        return oauth_error(400, "invalid_grant", "Invalid JWT Signature.");
    }
    if header.get("kid").is_some_and(|k| k != sa.key_id.as_str()) {
        return oauth_error(400, "invalid_grant", "Invalid JWT Signature.");
    }
    let signed = format!("{}.{}", parts[0], parts[1]);
    let key =
        signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &sa.public_der);
    if key.verify(signed.as_bytes(), &sig).is_err() {
        return oauth_error(400, "invalid_grant", "Invalid JWT Signature.");
    }
    let own = format!("{}/token", shared.base());
    if claims["aud"] != GOOGLE_TOKEN_URL && claims["aud"] != own.as_str() {
        return oauth_error(400, "invalid_grant", "Invalid JWT: Failed audience check.");
    }
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap_or(0),
        claims["exp"].as_i64().unwrap_or(0),
    );
    let now = now_secs();
    if exp <= now || exp - iat > 3600 || iat > now + 300 || exp <= iat {
        return oauth_error(
            400,
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        );
    }
    let scope = claims["scope"].as_str().unwrap_or("");
    let scopes: Vec<String> = scope.split_whitespace().map(str::to_string).collect();
    let delegated = &shared.cfg.delegated_scopes;
    if scopes.is_empty() || !scopes.iter().all(|s| delegated.contains(s)) {
        return oauth_error(
            401,
            "unauthorized_client",
            "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.",
        );
    }
    // Without `sub` the token is the service account's own, which reads no mailbox.
    let sub = claims["sub"]
        .as_str()
        .unwrap_or(&sa.client_email)
        .to_string();
    if sub != sa.client_email {
        let known = shared
            .sim()
            .users
            .iter()
            .any(|u| u.workspace && u.email.eq_ignore_ascii_case(&sub) && !u.suspended);
        if !known {
            return oauth_error(400, "invalid_grant", "Invalid email or User ID");
        }
    }
    let (token, life) = issue(shared, &sub.to_ascii_lowercase(), scopes);
    granted(token, life, scope)
}

fn refresh_grant(shared: &Shared, client_id: &str, secret: &str, refresh: &str) -> Response {
    let cfg = &shared.cfg;
    if client_id != cfg.oauth_client_id || secret != cfg.oauth_client_secret {
        return oauth_error(401, "invalid_client", "The OAuth client was not found.");
    }
    let Some((sub, scopes)) = lock(&shared.refresh_tokens).get(refresh).cloned() else {
        return oauth_error(400, "invalid_grant", "Token has been expired or revoked.");
    };
    let scope = scopes.join(" ");
    let (token, life) = issue(shared, &sub, scopes);
    granted(token, life, &scope)
}

/// The caller of an API request: its bearer token, checked (a 401 `authError` otherwise).
pub fn caller(shared: &Shared, headers: &axum::http::HeaderMap) -> Result<Access, ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(ApiError::auth)?;
    let access = lock(&shared.tokens)
        .get(token)
        .cloned()
        .ok_or_else(ApiError::auth)?;
    if access.expires <= Instant::now() {
        return Err(ApiError::auth());
    }
    Ok(access)
}

/// Expires every access token now (refresh and JWT grants still work).
pub fn expire_all(shared: &Shared) {
    let past = Instant::now() - Duration::from_secs(1);
    for a in lock(&shared.tokens).values_mut() {
        a.expires = past;
    }
}
