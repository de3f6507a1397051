//! Bearer-token authentication, configured separately for ingest (the OTLP export services on
//! both receivers) and for reading (the query service), so a token that may write need not be
//! able to read. Requests carry `authorization: Bearer <token>`; anything else is answered
//! gRPC `UNAUTHENTICATED` or HTTP 401. Health and reflection stay open.
//!
//! The running server keeps only the tokens' SHA-256 digests, and a presented token's digest is
//! compared with every accepted one in constant time, so timing does not give a token away.
//!
//! People sign in to the web UI with the query token once; their browser then holds a session
//! ([`Sessions`]): a random id in an HttpOnly cookie, kept in the database as a digest with the
//! digest of the token it was given for. Signing out deletes it; a token no longer accepted
//! (rotated out) ends every session it gave; failed sign-ins are limited per client address.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use deadpool_postgres::Pool;
use http::{header, HeaderMap, Request, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use crate::config::Secret;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the token file {path}: {source}")]
    File { path: String, source: std::io::Error },
    #[error("the token file {0} holds no token")]
    EmptyFile(String),
    #[error("{0} is empty; leave it unset to turn authentication off")]
    EmptyToken(&'static str),
}

/// The tokens one group of endpoints accepts.
pub struct Tokens {
    digests: Vec<[u8; 32]>,
}

impl Tokens {
    /// The tokens from `inline` and from `file` (one per line, blank lines ignored); None when
    /// neither is set, which leaves the endpoints open.
    ///
    /// # Errors
    /// An unreadable or empty file, or an empty inline token.
    pub fn load(
        key: &'static str,
        inline: Option<&Secret>,
        file: Option<&Path>,
    ) -> Result<Option<Self>, AuthError> {
        let mut tokens = Vec::new();
        if let Some(Secret(token)) = inline {
            if token.trim().is_empty() {
                return Err(AuthError::EmptyToken(key));
            }
            tokens.push(token.trim().to_owned());
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|source| AuthError::File { path: path.display().to_string(), source })?;
            let before = tokens.len();
            tokens.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned));
            if tokens.len() == before {
                return Err(AuthError::EmptyFile(path.display().to_string()));
            }
        }
        Ok((!tokens.is_empty())
            .then(|| Self { digests: tokens.iter().map(|t| digest(t.as_bytes())).collect() }))
    }

    /// Whether `presented` is one of the tokens. Every accepted token is compared, each in
    /// constant time.
    pub fn allows(&self, presented: &[u8]) -> bool {
        self.allows_digest(&digest(presented))
    }

    /// Whether `presented` is the digest of one of the tokens.
    fn allows_digest(&self, presented: &[u8; 32]) -> bool {
        self.digests.iter().fold(subtle::Choice::from(0), |found, d| found | d.ct_eq(presented)).into()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// The token a request presents, if it presents one as `Bearer`.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then(|| token.trim_ascii())
}

/// Which tokens guard which endpoints. Cheap to clone.
#[derive(Clone, Default)]
pub struct Access {
    pub ingest: Option<Arc<Tokens>>,
    pub query: Option<Arc<Tokens>>,
    /// The web UI's sign-in sessions, where a query token is set.
    pub sessions: Option<Sessions>,
}

/// gRPC path prefixes and the tokens they need.
const INGEST_SERVICES: &str = "/opentelemetry.proto.collector.";
const QUERY_SERVICES: &str = "/otelephant.query.v1.";

impl Access {
    pub fn is_open(&self) -> bool {
        self.ingest.is_none() && self.query.is_none()
    }

    /// Whether a request with these headers may call `tokens`' endpoints.
    fn admits(tokens: Option<&Tokens>, headers: &HeaderMap) -> bool {
        tokens.is_none_or(|tokens| bearer(headers).is_some_and(|token| tokens.allows(token)))
    }

    /// Lets a gRPC request through, or answers it `UNAUTHENTICATED`.
    #[allow(clippy::result_large_err)] // The shape tower-http's request validation asks for.
    pub fn check_grpc<B>(&self, request: &Request<B>) -> Result<(), Response<tonic::body::Body>> {
        let path = request.uri().path();
        let tokens = if path.starts_with(INGEST_SERVICES) {
            self.ingest.as_deref()
        } else if path.starts_with(QUERY_SERVICES) {
            self.query.as_deref()
        } else {
            None
        };
        if Self::admits(tokens, request.headers()) {
            Ok(())
        } else {
            Err(tonic::Status::unauthenticated(
                "a valid bearer token is required (authorization: Bearer <token>)",
            )
            .into_http())
        }
    }

    /// Whether an OTLP/HTTP export may go through.
    pub fn admits_ingest(&self, headers: &HeaderMap) -> bool {
        Self::admits(self.ingest.as_deref(), headers)
    }

    /// Whether a read over HTTP (the web UI, the JSON and Jaeger APIs) may go through: no
    /// query token is set, or the request presents one as a bearer token, or it carries a live
    /// session of the web UI's sign-in (see [`Sessions`]).
    pub async fn admits_query(&self, headers: &HeaderMap) -> bool {
        if self.query.is_none() || bearer(headers).is_some_and(|token| self.is_query_token(token)) {
            return true;
        }
        match &self.sessions {
            Some(sessions) => sessions.admits(headers).await,
            None => false,
        }
    }

    /// Whether `token` is one of the query tokens (or no query token is set).
    pub fn is_query_token(&self, token: &[u8]) -> bool {
        self.query.as_deref().is_none_or(|tokens| tokens.allows(token))
    }
}

/// The cookie that holds a web UI session's id.
pub const SESSION_COOKIE: &str = "otelephant_session";

/// How long a session lasts after sign-in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Failed sign-ins one client address may make per [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 10;
/// The window failed sign-ins are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Client addresses whose failures are remembered at once; past it the oldest windows go first.
const MAX_TRACKED_CLIENTS: usize = 10_000;

/// A session cookie's value from the request, if it carries one.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("that is not a query token this server accepts")]
    BadToken,
    #[error("too many failed sign-ins from this address; try again in {0} s")]
    TooManyFailures(u64),
    #[error("the session could not be stored: {0}")]
    Database(String),
}

/// The web UI's sign-in sessions, kept in the database (`ui_sessions`) so that every replica
/// knows them. Cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    pool: Pool,
    tokens: Arc<Tokens>,
    failures: Arc<Mutex<HashMap<IpAddr, (Instant, u32)>>>,
}

impl Sessions {
    /// Sessions for `tokens` (the query tokens), stored through `pool`.
    pub fn new(pool: Pool, tokens: Arc<Tokens>) -> Self {
        Self { pool, tokens, failures: Arc::default() }
    }

    /// Signs in with `token`: the new session's cookie value.
    ///
    /// # Errors
    /// A token that is not accepted (counted against `client`), a client past its failures, or
    /// a database that cannot store the session.
    pub async fn sign_in(&self, token: &[u8], client: Option<IpAddr>) -> Result<String, SessionError> {
        if let Some(wait) = client.and_then(|c| self.blocked_for(c)) {
            return Err(SessionError::TooManyFailures(wait.as_secs().max(1)));
        }
        let token_digest = digest(token);
        if !self.tokens.allows_digest(&token_digest) {
            if let Some(client) = client {
                self.failed(client);
            }
            return Err(SessionError::BadToken);
        }
        let mut id = [0u8; 32];
        getrandom::fill(&mut id).map_err(|e| SessionError::Database(format!("no randomness: {e}")))?;
        let now = crate::time::now_nanos();
        let expires = now.saturating_add(SESSION_LIFETIME.as_nanos() as u64);
        let client = self.pool.get().await.map_err(|e| SessionError::Database(e.to_string()))?;
        // Expired sessions go as new ones come: sign-ins are few.
        client
            .execute("DELETE FROM ui_sessions WHERE expires_unix_nano < $1", &[&(now as i64)])
            .await
            .map_err(|e| SessionError::Database(e.to_string()))?;
        client
            .execute(
                "INSERT INTO ui_sessions (id_digest, token_digest, expires_unix_nano) VALUES ($1, $2, $3)",
                &[&digest(&id).as_slice(), &token_digest.as_slice(), &(expires as i64)],
            )
            .await
            .map_err(|e| SessionError::Database(e.to_string()))?;
        Ok(hex::encode(id))
    }

    /// Whether the request's session cookie names a live session of a token still accepted.
    pub async fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(id) = session_cookie(headers).and_then(session_id) else { return false };
        let Ok(client) = self.pool.get().await else { return false };
        let now = crate::time::now_nanos() as i64;
        let row = client
            .query_opt(
                "SELECT token_digest FROM ui_sessions WHERE id_digest = $1 AND expires_unix_nano > $2",
                &[&digest(&id).as_slice(), &now],
            )
            .await;
        match row {
            Ok(Some(row)) => {
                let token: Vec<u8> = row.get(0);
                <[u8; 32]>::try_from(token.as_slice()).is_ok_and(|d| self.tokens.allows_digest(&d))
            }
            Ok(None) => false,
            Err(err) => {
                tracing::warn!(%err, "reading a sign-in session failed");
                false
            }
        }
    }

    /// Ends the request's session, if it has one.
    pub async fn sign_out(&self, headers: &HeaderMap) {
        let Some(id) = session_cookie(headers).and_then(session_id) else { return };
        if let Ok(client) = self.pool.get().await {
            if let Err(err) = client
                .execute("DELETE FROM ui_sessions WHERE id_digest = $1", &[&digest(&id).as_slice()])
                .await
            {
                tracing::warn!(%err, "ending a sign-in session failed");
            }
        }
    }

    /// How long `client` must wait before it may try again, if it is past its failures.
    fn blocked_for(&self, client: IpAddr) -> Option<Duration> {
        let failures = self.failures.lock().ok()?;
        let (since, count) = failures.get(&client)?;
        let left = FAILURE_WINDOW.checked_sub(since.elapsed())?;
        (*count >= MAX_FAILURES).then_some(left)
    }

    fn failed(&self, client: IpAddr) {
        let Ok(mut failures) = self.failures.lock() else { return };
        if failures.len() >= MAX_TRACKED_CLIENTS && !failures.contains_key(&client) {
            failures.retain(|_, (since, _)| since.elapsed() < FAILURE_WINDOW);
            if failures.len() >= MAX_TRACKED_CLIENTS {
                // Every slot is in its window: the oldest window gives way.
                if let Some(oldest) = failures.iter().min_by_key(|(_, (since, _))| *since).map(|(ip, _)| *ip)
                {
                    failures.remove(&oldest);
                }
            }
        }
        let entry = failures.entry(client).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= FAILURE_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

/// A session id from its cookie value: 64 hex characters.
fn session_id(text: &str) -> Option<[u8; 32]> {
    let mut id = [0u8; 32];
    hex::decode_to_slice(text, &mut id).ok()?;
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().expect("header value"));
        headers
    }

    #[test]
    fn bearer_tokens_are_matched_exactly() {
        let tokens = Tokens::load("auth.ingest_token", Some(&Secret("s3cret".into())), None)
            .expect("loads")
            .expect("some");
        let tokens = Some(&tokens);
        assert!(Access::admits(tokens, &headers("Bearer s3cret")));
        assert!(Access::admits(tokens, &headers("bearer s3cret")));
        assert!(!Access::admits(tokens, &headers("Bearer s3cre")));
        assert!(!Access::admits(tokens, &headers("Bearer s3cret2")));
        assert!(!Access::admits(tokens, &headers("Basic s3cret")));
        assert!(!Access::admits(tokens, &HeaderMap::new()));
        assert!(Access::admits(None, &HeaderMap::new()), "no tokens configured: open");
    }

    #[tokio::test]
    async fn the_query_token_is_taken_from_a_bearer_header_never_from_a_cookie() {
        let tokens = Tokens::load("auth.query_token", Some(&Secret("r3ad".into())), None).unwrap().unwrap();
        let access = Access { ingest: None, query: Some(Arc::new(tokens)), sessions: None };
        let cookie = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::COOKIE, value.parse().unwrap());
            headers
        };
        assert!(access.admits_query(&headers("Bearer r3ad")).await);
        assert!(
            !access.admits_query(&cookie("a=b; otelephant_query_token=r3ad")).await,
            "a token is no session"
        );
        assert!(!access.admits_query(&cookie("otelephant_session=r3ad")).await);
        assert!(!access.admits_query(&HeaderMap::new()).await);
        assert!(Access::default().admits_query(&HeaderMap::new()).await, "no query token: open");
    }

    #[test]
    fn session_ids_are_64_hex_characters() {
        assert!(session_id(&"ab".repeat(32)).is_some());
        for bad in ["", "ab", &"zz".repeat(32), &"ab".repeat(33)] {
            assert!(session_id(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_secret_does_not_show_in_debug_output() {
        assert_eq!(format!("{:?}", Some(Secret("s3cret".into()))), "Some(Secret(redacted))");
    }
}
