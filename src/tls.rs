//! TLS for `wss://`: the server's identity and the client's trust, through
//! native-tls (OpenSSL on Linux).
//!
//! Files are read and checked once, before the server binds or the client
//! connects, so a missing, unreadable or mismatched file is one clear error
//! that names it. The TLS handshake itself runs on the connection's own
//! thread, under the same deadline as the HTTP handshake.

use std::fmt;
use std::fs;
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::http::STOP_CHECK;
use crate::stream::Stream;

/// A server's TLS identity, ready to accept connections.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: Arc<native_tls::TlsAcceptor>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerTls")
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|source| Error::File {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn tls_err(path: &Path, e: impl fmt::Display) -> Error {
    Error::Tls(format!("{}: {e}", path.display()))
}

impl ServerTls {
    /// Loads a PEM certificate chain and its PKCS#8 PEM private key.
    ///
    /// # Errors
    /// [`Error::File`] when a file cannot be read; [`Error::Tls`] naming the
    /// file when it is not what it should be or the key does not belong to
    /// the certificate.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<ServerTls> {
        let cert_pem = read("reading certificate", cert)?;
        let key_pem = read("reading private key", key)?;
        let chain = openssl::x509::X509::stack_from_pem(&cert_pem)
            .map_err(|e| tls_err(cert, format!("not a PEM certificate ({e})")))?;
        let leaf = chain
            .first()
            .ok_or_else(|| tls_err(cert, "no certificate in the file"))?;
        if !key_pem.starts_with(b"-----BEGIN PRIVATE KEY-----") {
            return Err(tls_err(key, "not a PKCS#8 PEM key (-----BEGIN PRIVATE KEY-----); convert it with `openssl pkcs8 -topk8 -nocrypt`"));
        }
        let pkey = openssl::pkey::PKey::private_key_from_pem(&key_pem)
            .map_err(|e| tls_err(key, format!("not a private key ({e})")))?;
        let public = leaf.public_key().map_err(|e| tls_err(cert, e))?;
        if !public.public_eq(&pkey) {
            return Err(Error::Tls(format!(
                "{} does not belong to the certificate in {}",
                key.display(),
                cert.display()
            )));
        }
        let identity =
            native_tls::Identity::from_pkcs8(&cert_pem, &key_pem).map_err(|e| tls_err(cert, e))?;
        ServerTls::from_identity(identity, cert)
    }

    /// Loads a PKCS#12 (`.p12`/`.pfx`) bundle with its password.
    ///
    /// # Errors
    /// [`Error::File`] when the file cannot be read; [`Error::Tls`] when it
    /// is not PKCS#12 or the password is wrong.
    pub fn from_pkcs12_file(path: &Path, password: &str) -> Result<ServerTls> {
        let der = read("reading PKCS#12 file", path)?;
        let identity = native_tls::Identity::from_pkcs12(&der, password).map_err(|e| {
            tls_err(
                path,
                format!("cannot open PKCS#12 (wrong password or not PKCS#12: {e})"),
            )
        })?;
        ServerTls::from_identity(identity, path)
    }

    fn from_identity(identity: native_tls::Identity, path: &Path) -> Result<ServerTls> {
        let acceptor = native_tls::TlsAcceptor::new(identity).map_err(|e| tls_err(path, e))?;
        Ok(ServerTls {
            acceptor: Arc::new(acceptor),
        })
    }

    /// Runs the server side of the TLS handshake, giving up at `deadline`
    /// or soon after `stop` is set.
    pub(crate) fn accept(
        &self,
        tcp: TcpStream,
        deadline: Instant,
        stop: &AtomicBool,
    ) -> std::io::Result<Stream> {
        // Wait in slices so a shutdown need not wait for slow clients.
        let slice = |tcp: &TcpStream| -> std::io::Result<()> {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stop.load(Ordering::Relaxed) {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            tcp.set_read_timeout(Some(left.min(STOP_CHECK)))?;
            tcp.set_write_timeout(Some(left.min(STOP_CHECK)))
        };
        slice(&tcp)?;
        let mut attempt = self.acceptor.accept(tcp);
        loop {
            match attempt {
                Ok(tls) => return Ok(Stream::Tls(Box::new(tls))),
                Err(native_tls::HandshakeError::WouldBlock(mid)) => {
                    slice(mid.get_ref())?;
                    attempt = mid.handshake();
                }
                Err(native_tls::HandshakeError::Failure(e)) => {
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
                }
            }
        }
    }
}

/// Wraps a client's TCP connection in TLS, verifying the server unless
/// `insecure`. `ca_pem` are extra trusted CA certificates (PEM).
pub(crate) fn connect(
    tcp: TcpStream,
    host: &str,
    ca_pem: &[Vec<u8>],
    insecure: bool,
    deadline: Instant,
) -> Result<Stream> {
    let mut builder = native_tls::TlsConnector::builder();
    for pem in ca_pem {
        let cert = native_tls::Certificate::from_pem(pem)
            .map_err(|e| Error::Tls(format!("bad CA certificate: {e}")))?;
        builder.add_root_certificate(cert);
    }
    if insecure {
        builder.danger_accept_invalid_certs(true);
        builder.danger_accept_invalid_hostnames(true);
    }
    let connector = builder
        .build()
        .map_err(|e| Error::Tls(format!("cannot set up TLS: {e}")))?;
    let left = deadline.saturating_duration_since(Instant::now());
    let set = tcp
        .set_read_timeout(Some(left.max(std::time::Duration::from_millis(1))))
        .and_then(|()| tcp.set_write_timeout(Some(left.max(std::time::Duration::from_millis(1)))));
    set.map_err(|e| Error::io("setting the TLS handshake timeout", e))?;
    match connector.connect(host, tcp) {
        Ok(tls) => Ok(Stream::Tls(Box::new(tls))),
        Err(native_tls::HandshakeError::WouldBlock(_)) => {
            Err(Error::Tls(format!("handshake with {host} timed out")))
        }
        Err(native_tls::HandshakeError::Failure(e)) => {
            Err(Error::Tls(format!("handshake with {host} failed: {e}")))
        }
    }
}
