//! The crate's one error type.
//!
//! Every I/O failure says what was being done and to which address or file,
//! so a binary can print `error: {err}` as its one line and exit.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Binding the listening socket failed.
    Bind {
        /// The address we tried to bind.
        addr: String,
        /// The operating system's reason.
        source: io::Error,
    },
    /// Opening a TCP connection failed.
    Connect {
        /// `host:port` we tried to reach.
        addr: String,
        /// The operating system's reason.
        source: io::Error,
    },
    /// Reading or writing a file (certificate, key, log file) failed.
    File {
        /// What the file was for, e.g. "reading certificate".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// Another I/O failure, with what we were doing.
    Io {
        /// What we were doing, e.g. "starting the hub thread".
        what: String,
        /// The operating system's reason.
        source: io::Error,
    },
    /// A URL we cannot use (wrong scheme, no host, bad port).
    Url(String),
    /// The WebSocket opening handshake failed (HTTP status, bad answer).
    Handshake(String),
    /// TLS set-up or negotiation failed.
    Tls(String),
    /// A configuration value is out of range or inconsistent.
    Config(String),
    /// The connection is closed; nothing more can be sent.
    Closed,
    /// A WebSocket protocol error reported by tungstenite.
    Protocol(tungstenite::Error),
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            Error::Connect { addr, source } => write!(f, "cannot connect to {addr}: {source}"),
            Error::File { what, path, source } => {
                write!(f, "{what} {}: {source}", path.display())
            }
            Error::Io { what, source } => write!(f, "{what}: {source}"),
            Error::Url(msg) => write!(f, "bad URL: {msg}"),
            Error::Handshake(msg) => write!(f, "handshake failed: {msg}"),
            Error::Tls(msg) => write!(f, "TLS: {msg}"),
            Error::Config(msg) => write!(f, "bad configuration: {msg}"),
            Error::Closed => write!(f, "connection closed"),
            Error::Protocol(err) => write!(f, "WebSocket: {err}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Bind { source, .. }
            | Error::Connect { source, .. }
            | Error::File { source, .. }
            | Error::Io { source, .. } => Some(source),
            Error::Protocol(err) => Some(err),
            _ => None,
        }
    }
}

impl Error {
    /// An [`Error::Io`] saying what we were doing.
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// An [`Error::Bind`] for `addr`.
    pub(crate) fn bind(addr: SocketAddr, source: io::Error) -> Self {
        Error::Bind {
            addr: addr.to_string(),
            source,
        }
    }
}
