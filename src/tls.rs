//! TLS for the gRPC and OTLP/HTTP listeners (rustls with the ring provider): the server's
//! certificate chain and key from PEM files, and optionally a CA whose client certificates are
//! then required (mutual TLS). The admin listener stays plain HTTP for probes and scrapers.

use std::{io, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use rustls::{server::WebPkiClientVerifier, RootCertStore, ServerConfig};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::JoinHandle,
};
use tokio_rustls::{server::TlsStream, TlsAcceptor};

use crate::config::TlsConfig;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections whose handshake finished, waiting for the server to take them.
const READY_CONNECTIONS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {key} {path}: {source}")]
    Read { key: &'static str, path: String, source: rustls_pki_types::pem::Error },
    #[error("{key} {path} holds no certificate")]
    NoCertificate { key: &'static str, path: String },
    #[error("invalid TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("invalid tls.client_ca_file: {0}")]
    ClientCa(String),
}

/// The PEM files of a TLS configuration, read and checked.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<Vec<CertificateDer<'static>>>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    client_ca_pem: Option<Vec<u8>>,
}

fn certificates(key: &'static str, path: &Path) -> Result<(Vec<CertificateDer<'static>>, Vec<u8>), TlsError> {
    let read = |source| TlsError::Read { key, path: path.display().to_string(), source };
    let pem = std::fs::read(path).map_err(|e| read(rustls_pki_types::pem::Error::Io(e)))?;
    let chain = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(read)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { key, path: path.display().to_string() });
    }
    Ok((chain, pem))
}

impl Identity {
    /// Reads the files `config` names; None when TLS is off.
    ///
    /// # Errors
    /// A file that cannot be read or holds no certificate or key.
    pub fn load(config: &TlsConfig) -> Result<Option<Self>, TlsError> {
        let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
            return Ok(None);
        };
        let (chain, cert_pem) = certificates("tls.cert_file", cert_file)?;
        let key_pem = std::fs::read(key_file).map_err(|e| TlsError::Read {
            key: "tls.key_file",
            path: key_file.display().to_string(),
            source: rustls_pki_types::pem::Error::Io(e),
        })?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| TlsError::Read {
            key: "tls.key_file",
            path: key_file.display().to_string(),
            source,
        })?;
        let (client_ca, client_ca_pem) = match &config.client_ca_file {
            Some(path) => {
                let (certs, pem) = certificates("tls.client_ca_file", path)?;
                (Some(certs), Some(pem))
            }
            None => (None, None),
        };
        let identity = Self { chain, key, client_ca, cert_pem, key_pem, client_ca_pem };
        // Builds once now so that a key that does not match its certificate stops the start.
        identity.rustls()?;
        Ok(Some(identity))
    }

    /// The gRPC listener's TLS settings.
    pub fn grpc(&self) -> tonic::transport::ServerTlsConfig {
        let identity = tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem);
        let config = tonic::transport::ServerTlsConfig::new().identity(identity);
        match &self.client_ca_pem {
            Some(ca) => config.client_ca_root(tonic::transport::Certificate::from_pem(ca)),
            None => config,
        }
    }

    /// The HTTP listener's TLS settings, offering HTTP/2 and HTTP/1.1.
    ///
    /// # Errors
    /// A key that does not match the certificate, or an unusable client CA.
    pub fn rustls(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder =
            ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
        let builder = match &self.client_ca {
            Some(certs) => {
                let mut roots = RootCertStore::empty();
                for cert in certs {
                    roots.add(cert.clone())?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| TlsError::ClientCa(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A listener whose connections are TLS streams. Handshakes run in tasks of their own, so a
/// slow or silent client holds up no one else.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_CONNECTIONS);
        let acceptor = TlsAcceptor::from(config);
        let accepting = tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!(%err, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(err)) => tracing::debug!(%peer, %err, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local, accepting })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task ended only if it panicked; nothing more will arrive.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
