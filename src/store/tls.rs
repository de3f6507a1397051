//! TLS to PostgreSQL, following libpq's `sslmode` in `postgres.url`:
//!
//! | sslmode | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `allow`, `prefer` (the default) | if the server offers it | only against `sslrootcert`, when given |
//! | `require` | always | only against `sslrootcert`, when given |
//! | `verify-ca` | always | chain against `sslrootcert` |
//! | `verify-full` | always | chain against `sslrootcert`, and the host name |
//!
//! `sslcert` and `sslkey` give a client certificate. tokio-postgres knows only `disable`,
//! `prefer` and `require` and none of the file parameters, so they are taken out of the URL
//! here and applied to the rustls connector.

use std::{path::PathBuf, sync::Arc};

use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        WebPkiServerVerifier,
    },
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// What the TLS parameters of a connection string ask for.
#[derive(Debug, Default, PartialEq)]
pub struct TlsParams {
    pub mode: Option<String>,
    pub root_cert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum PgTlsError {
    #[error("sslmode={0:?} is not one of disable, allow, prefer, require, verify-ca, verify-full")]
    Mode(String),
    #[error("sslmode={0} needs sslrootcert, the CA certificates to check the server against")]
    NoRootCert(String),
    #[error("sslcert and sslkey go together")]
    HalfIdentity,
    #[error("cannot read {param} {path}: {reason}")]
    File { param: &'static str, path: String, reason: String },
    #[error("TLS settings for PostgreSQL: {0}")]
    Rustls(#[from] rustls::Error),
}

const PARAMS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Takes the TLS parameters out of `url` (a `postgres://` URL or `key=value` pairs), returning
/// the rest for tokio-postgres and what was taken.
pub fn split(url: &str) -> (String, TlsParams) {
    let mut params = TlsParams::default();
    let mut take = |key: &str, value: &str| {
        let value = value.to_owned();
        match key {
            "sslmode" => params.mode = Some(value),
            "sslrootcert" => params.root_cert = Some(value.into()),
            "sslcert" => params.cert = Some(value.into()),
            "sslkey" => params.key = Some(value.into()),
            _ => {}
        }
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else { return (url.to_owned(), params) };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if PARAMS.contains(&key) {
                take(key, &percent_decode(value));
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
        (rest, params)
    } else {
        let mut kept = Vec::new();
        for pair in url.split_whitespace() {
            match pair.split_once('=') {
                Some((key, value)) if PARAMS.contains(&key) => take(key, value.trim_matches('\'')),
                _ => kept.push(pair),
            }
        }
        (kept.join(" "), params)
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TlsParams {
    /// tokio-postgres' mode and the connector that carries out the rest.
    ///
    /// # Errors
    /// An unknown mode, a verifying mode without `sslrootcert`, or unreadable files.
    pub fn connector(&self) -> Result<(SslMode, MakeRustlsConnect), PgTlsError> {
        let mode = self.mode.as_deref().unwrap_or("prefer");
        let (ssl_mode, check) = match mode {
            "disable" => (SslMode::Disable, Check::Nothing),
            "allow" | "prefer" => (SslMode::Prefer, Check::Nothing),
            "require" => (SslMode::Require, Check::Nothing),
            "verify-ca" => (SslMode::Require, Check::Chain),
            "verify-full" => (SslMode::Require, Check::ChainAndName),
            other => return Err(PgTlsError::Mode(other.to_owned())),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = match &self.root_cert {
            Some(path) => Some(Arc::new(root_store(path)?)),
            None if check != Check::Nothing => return Err(PgTlsError::NoRootCert(mode.to_owned())),
            None => None,
        };
        let builder =
            ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
        let verifier: Arc<dyn ServerCertVerifier> = match roots {
            // libpq checks against a root certificate whenever one is given, whatever the mode.
            Some(roots) => {
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| rustls::Error::General(e.to_string()))?;
                Arc::new(ChainVerifier { webpki, check_name: check == Check::ChainAndName })
            }
            None => Arc::new(EncryptOnly { provider }),
        };
        let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| file_error("sslcert", cert, e))?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error("sslkey", key, e))?;
                builder.with_client_auth_cert(chain, key)?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(PgTlsError::HalfIdentity),
        };
        Ok((ssl_mode, MakeRustlsConnect::new(config)))
    }
}

fn file_error(param: &'static str, path: &std::path::Path, err: impl std::fmt::Display) -> PgTlsError {
    PgTlsError::File { param, path: path.display().to_string(), reason: err.to_string() }
}

fn root_store(path: &std::path::Path) -> Result<RootCertStore, PgTlsError> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error("sslrootcert", path, e))?;
    if certs.is_empty() {
        return Err(file_error("sslrootcert", path, "no certificate in the file"));
    }
    for cert in certs {
        roots.add(cert)?;
    }
    Ok(roots)
}

#[derive(Clone, Copy, PartialEq)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

/// `require` without a root certificate: the connection is encrypted, the server's
/// certificate is not checked (libpq's behaviour; use verify-full against impostors). The
/// handshake's signatures are still verified.
#[derive(Debug)]
struct EncryptOnly {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The chain checked against the root certificates; the host name too for verify-full.
#[derive(Debug)]
struct ChainVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_urls() {
        let (rest, params) = split(
            "postgres://u@h:5432/db?application_name=x&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem",
        );
        assert_eq!(rest, "postgres://u@h:5432/db?application_name=x");
        assert_eq!(params.mode.as_deref(), Some("verify-full"));
        assert_eq!(params.root_cert, Some(PathBuf::from("/tmp/ca.pem")));

        let (rest, params) = split("postgres://u@h/db?sslmode=require");
        assert_eq!((rest.as_str(), params.mode.as_deref()), ("postgres://u@h/db", Some("require")));
        let (rest, params) = split("host=h dbname=db sslmode=disable sslcert=/c.pem sslkey=/c.key");
        assert_eq!(rest, "host=h dbname=db");
        assert_eq!((params.cert, params.key), (Some("/c.pem".into()), Some("/c.key".into())));
        assert_eq!(split("postgres://u@h/db").1, TlsParams::default());
    }

    #[test]
    fn verifying_modes_need_a_root_certificate() {
        let params = TlsParams { mode: Some("verify-full".into()), ..Default::default() };
        assert!(matches!(params.connector(), Err(PgTlsError::NoRootCert(_))));
        let params = TlsParams { mode: Some("sometimes".into()), ..Default::default() };
        assert!(matches!(params.connector(), Err(PgTlsError::Mode(_))));
        let params = TlsParams { mode: Some("require".into()), ..Default::default() };
        assert_eq!(params.connector().expect("builds").0, SslMode::Require);
    }
}
