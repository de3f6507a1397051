//! Bearer-token authentication, configured separately for ingest (the OTLP export services on
//! both receivers) and for reading (the query service), so a token that may write need not be
//! able to read. Requests carry `authorization: Bearer <token>`; anything else is answered
//! gRPC `UNAUTHENTICATED` or HTTP 401. Health and reflection stay open.
//!
//! The running server keeps only the tokens' SHA-256 digests, and a presented token's digest is
//! compared with every accepted one in constant time, so timing does not give a token away.

use std::{path::Path, sync::Arc};

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
        let presented = digest(presented);
        self.digests.iter().fold(subtle::Choice::from(0), |found, d| found | d.ct_eq(&presented)).into()
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

    /// Whether a read over HTTP (the web UI, the JSON and Jaeger APIs) may go through: the
    /// query token as a bearer token, or in the cookie the web UI's sign-in sets.
    pub fn admits_query(&self, headers: &HeaderMap) -> bool {
        bearer(headers).is_some_and(|token| self.is_query_token(token))
            || query_cookie(headers).is_some_and(|token| self.is_query_token(token.as_bytes()))
            || self.query.is_none()
    }

    /// Whether `token` is one of the query tokens (or no query token is set).
    pub fn is_query_token(&self, token: &[u8]) -> bool {
        self.query.as_deref().is_none_or(|tokens| tokens.allows(token))
    }
}

/// The cookie the web UI keeps the query token in once a person has given it.
pub const QUERY_COOKIE: &str = "otelephant_query_token";

/// The query token from the request's cookies, if it carries one.
fn query_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == QUERY_COOKIE)
        .map(|(_, value)| value)
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

    #[test]
    fn the_query_token_is_taken_from_a_bearer_header_or_the_ui_cookie() {
        let tokens = Tokens::load("auth.query_token", Some(&Secret("r3ad".into())), None).unwrap().unwrap();
        let access = Access { ingest: None, query: Some(Arc::new(tokens)) };
        let cookie = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::COOKIE, value.parse().unwrap());
            headers
        };
        assert!(access.admits_query(&headers("Bearer r3ad")));
        assert!(access.admits_query(&cookie("a=b; otelephant_query_token=r3ad")));
        assert!(!access.admits_query(&cookie("otelephant_query_token=r3ad2")));
        assert!(!access.admits_query(&cookie("other_token=r3ad")));
        assert!(!access.admits_query(&HeaderMap::new()));
        assert!(Access::default().admits_query(&HeaderMap::new()), "no query token: open");
    }

    #[test]
    fn a_secret_does_not_show_in_debug_output() {
        assert_eq!(format!("{:?}", Some(Secret("s3cret".into()))), "Some(Secret(redacted))");
    }
}
