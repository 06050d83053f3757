//! TLS on the server's two ports (REST and dataplane gRPC), with rustls and
//! the `ring` provider (the one reqwest already brings; nothing builds aws-lc).
//!
//! The certificate and key are read and checked once, in [`Server::bind`]
//! (`crate::Server`), so a wrong path or a key that does not match the
//! certificate stops the server at start-up with a message naming the file,
//! instead of failing every handshake later.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Where the PEM certificate chain and private key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate, followed by any intermediates.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("TLS certificate {0}: no PEM certificate in it ({1})")]
    NoCertificate(PathBuf, String),
    #[error("TLS key {0}: no PEM private key in it ({1})")]
    NoKey(PathBuf, String),
    #[error("TLS certificate {cert} and key {key} do not make a usable identity: {message}")]
    Identity { cert: PathBuf, key: PathBuf, message: String },
}

/// A checked identity, ready for both ports.
#[derive(Clone)]
pub struct Tls {
    /// For the REST port (HTTP/1.1).
    pub rest: Arc<rustls::ServerConfig>,
    /// The same PEM, for tonic's own TLS set-up on the gRPC port.
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls { .. }") // never the key
    }
}

impl Tls {
    /// Reads and checks `files`: at least one certificate, one private key,
    /// and a key that belongs to the certificate.
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        let cert_pem = read(&files.cert)?;
        let key_pem = read(&files.key)?;
        let rest = rest_config(&cert_pem, &key_pem).map_err(|e| match e {
            Bad::Cert(m) => TlsError::NoCertificate(files.cert.clone(), m),
            Bad::Key(m) => TlsError::NoKey(files.key.clone(), m),
            Bad::Identity(message) => {
                TlsError::Identity { cert: files.cert.clone(), key: files.key.clone(), message }
            }
        })?;
        Ok(Tls { rest: Arc::new(rest), cert_pem, key_pem })
    }

    /// The identity as tonic takes it.
    pub fn grpc_config(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read(path.to_path_buf(), e))
}

enum Bad {
    Cert(String),
    Key(String),
    Identity(String),
}

/// The pure part of [`Tls::load`]: PEM bytes to a rustls server config.
fn rest_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<rustls::ServerConfig, Bad> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_pem).collect::<Result<_, _>>().map_err(|e| Bad::Cert(e.to_string()))?;
    if certs.is_empty() {
        return Err(Bad::Cert("the file has no CERTIFICATE section".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| Bad::Key(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Bad::Identity(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Bad::Identity(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The REST port over TLS, as an [`axum::serve::Listener`]. Handshakes run
/// in tasks of their own, so one slow or hostile client never holds up the
/// accept loop; connections are handed over once their handshake is done.
/// Accepted sockets get `TCP_NODELAY`, like the plain port's.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(1024);
        let acceptor = TlsAcceptor::from(config);
        let accept_loop = tokio::spawn(accept_loop(listener, acceptor, tx));
        Ok(TlsListener { local, ready, accept_loop })
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!("accepting a REST connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => drop(ready.send((tls, peer)).await),
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_without_a_certificate_or_key_is_named_as_such() {
        assert!(matches!(rest_config(b"", b""), Err(Bad::Cert(_))));
        assert!(matches!(rest_config(b"not pem at all", b""), Err(Bad::Cert(_))));
        let cert = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        assert!(matches!(rest_config(cert, b"no key here"), Err(Bad::Key(_))));
    }

    #[test]
    fn missing_files_name_the_path() {
        let files = TlsFiles { cert: "/nonexistent/cert.pem".into(), key: "/nonexistent/key.pem".into() };
        let err = Tls::load(&files).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    }
}
