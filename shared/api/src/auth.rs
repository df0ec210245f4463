//! Who is calling. The tenant comes from a verified token only, never from a path or a
//! body (design decision 7): every handler builds its engine from what the authenticator
//! returns, so another tenant's ids simply do not exist for it.
//!
//! On AWS, API Gateway's JWT authorizer verifies the token before the function runs, and
//! the function's authenticator reads the verified claims from the request context. Served
//! locally, [`Hs256`] verifies tokens itself with a key that never leaves the machine.

use axum::http::request::Parts;
use domain::TenantId;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The claim that names the caller's tenant.
pub const TENANT_CLAIM: &str = "tenant";

/// Why a request is refused. The message says what to fix and never echoes the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthError(pub String);

/// Turns a request into the tenant it acts for.
pub trait Authenticator: Send + Sync {
    /// # Errors
    /// [`AuthError`] when the request carries no valid credential.
    fn tenant(&self, parts: &Parts) -> Result<TenantId, AuthError>;
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    tenant: String,
    exp: i64,
    iat: i64,
}

/// HS256 bearer tokens verified with a local key: the authenticator of `lifeboat serve`.
pub struct Hs256 {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Hs256 {
    /// `key` is at least 32 random bytes kept private to the server.
    pub fn new(key: &[u8]) -> Self {
        Hs256 {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
        }
    }

    /// A token for `subject` acting for `tenant`, valid for `ttl`.
    pub fn mint(&self, tenant: &TenantId, subject: &str, ttl: chrono::Duration) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: subject.to_string(),
            tenant: tenant.to_string(),
            iat: now,
            exp: now + ttl.num_seconds(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing does not fail")
    }
}

/// The bearer token of a request.
pub fn bearer(parts: &Parts) -> Result<&str, AuthError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| AuthError("no Authorization header; send `Bearer <token>`".into()))?;
    let value = header
        .to_str()
        .map_err(|_| AuthError("the Authorization header is not text".into()))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() => {
            Ok(token.trim())
        }
        _ => Err(AuthError(
            "the Authorization header is not `Bearer <token>`".into(),
        )),
    }
}

impl Authenticator for Hs256 {
    fn tenant(&self, parts: &Parts) -> Result<TenantId, AuthError> {
        let token = bearer(parts)?;
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 30;
        v.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            AuthError(match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired; get a new one".into(),
                ErrorKind::InvalidSignature => "the token's signature is not valid".into(),
                _ => "the token is not valid".into(),
            })
        })?;
        TenantId::new(&data.claims.tenant)
            .map_err(|_| AuthError("the token names no valid tenant".into()))
    }
}
