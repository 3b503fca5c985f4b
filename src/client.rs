//! The blocking client.
//!
//! # Threads
//!
//! [`Client::connect`] does the TCP connect and the opening handshake on
//! the caller's thread, then starts one session thread that owns the
//! socket and runs the same [session loop](crate::session) as the server.
//! The caller talks to it through two channels: [`Client::send`] queues for
//! the session (blocking while `send_queue` messages wait), and
//! [`Client::recv`] takes what the session received (the session stops
//! reading the socket while `recv_queue` messages wait). Pings are answered
//! by the session thread even while the caller is busy.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError as ChannelTimeout, Sender};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::{HeaderName, HeaderValue, Uri};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Error as WsError, Message};

use crate::close::CloseInfo;
use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::session::{self, Handler, Outbox, Reactor, Timing};
use crate::stream::Stream;
use crate::wire::Wire;

/// Messages that may wait to be sent before [`Client::send`] blocks.
const SEND_QUEUE: usize = 1024;

/// What the session thread hands to the application.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A text or binary message.
    Message(Message),
    /// The connection ended; nothing follows.
    Closed(CloseInfo),
}

/// Why [`Client::recv_timeout`] returned no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvTimeoutError {
    /// Nothing arrived in time; the connection is still open.
    Timeout,
    /// The connection has ended; see [`Client::close_info`].
    Closed,
}

/// A connected, blocking WebSocket client.
///
/// ```
/// use std::time::Duration;
/// use wshub::{Client, Mode, Server, ServerConfig};
///
/// let server = Server::bind_with_config("127.0.0.1:0", ServerConfig::default().mode(Mode::Echo)).unwrap();
/// let client = Client::connect(&format!("ws://{}/alice", server.local_addr())).unwrap();
/// client.send_text("hello").unwrap();
/// let reply = client.recv_timeout(Duration::from_secs(5)).unwrap();
/// assert_eq!(reply.to_text().unwrap(), "hello");
/// client.close(1000, "bye");
/// ```
#[derive(Debug)]
pub struct Client {
    outbox: Outbox,
    incoming: Receiver<Incoming>,
    closed: OnceLock<CloseInfo>,
    protocol: Option<String>,
    peer: SocketAddr,
    close_timeout: Duration,
}

impl Client {
    /// Connects to a `ws://` (or, with the `tls` feature, `wss://`) URL with
    /// the default [`ClientConfig`].
    ///
    /// # Errors
    /// [`Error::Url`], [`Error::Connect`], [`Error::Handshake`] (for example
    /// when the server answers with an HTTP error status).
    pub fn connect(url: &str) -> Result<Client> {
        Client::connect_with_config(url, ClientConfig::default())
    }

    /// Connects with `cfg`; see [`Client::connect`].
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub fn connect_with_config(url: &str, cfg: ClientConfig) -> Result<Client> {
        let deadline = Instant::now() + cfg.connect_timeout;
        let request = build_request(url, &cfg)?;
        let (host, port, secure) = endpoint(request.uri())?;
        let tcp = connect_tcp(&host, port, deadline)?;
        let peer = tcp
            .peer_addr()
            .map_err(|e| Error::io("reading the peer address", e))?;
        let stream = wrap_stream(tcp, &host, secure, &cfg, deadline)?;
        let left = deadline.saturating_duration_since(Instant::now());
        stream
            .set_timeouts(Some(left.max(Duration::from_millis(1))))
            .map_err(|e| Error::io("setting the handshake timeout", e))?;
        let ws_cfg = WebSocketConfig::default()
            .read_buffer_size(16 << 10)
            // Every frame goes straight into the Wire, which sends on flush.
            .write_buffer_size(0)
            .max_message_size(Some(cfg.max_message_size))
            .max_frame_size(Some(cfg.max_message_size));
        let wire = Wire::direct(stream);
        let (mut ws, response) =
            tungstenite::client::client_with_config(request, wire, Some(ws_cfg))
                .map_err(|e| handshake_error(e, &host, port))?;
        ws.get_mut().buffer_writes();
        let tcp = ws.get_ref().tcp();
        tcp.set_read_timeout(None)
            .and_then(|()| tcp.set_write_timeout(None))
            .map_err(|e| Error::io("clearing the handshake timeout", e))?;
        let protocol = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);

        let (tx, incoming) = crossbeam_channel::bounded(cfg.recv_queue.max(1));
        let timing = Timing {
            ping_interval: cfg.ping_interval,
            idle_timeout: cfg.idle_timeout,
            close_timeout: cfg.close_timeout,
        };
        let handler = AppHandler { tx: tx.clone() };
        let reactor = Reactor::new().map_err(|e| Error::io("starting the session", e))?;
        let (session, outbox) = session::pair(
            Box::new(ws),
            handler,
            timing,
            session::channel(Some(SEND_QUEUE)),
            reactor,
            false,
        )
        .map_err(|e| Error::io("starting the session", e))?;
        thread::Builder::new()
            .name("wshub-client-session".into())
            .spawn(move || {
                let (info, _) = session.run();
                let _ = tx.send(Incoming::Closed(info));
            })
            .map_err(|e| Error::io("starting the session thread", e))?;
        Ok(Client {
            outbox,
            incoming,
            closed: OnceLock::new(),
            protocol,
            peer,
            close_timeout: cfg.close_timeout,
        })
    }

    /// Queues a message; blocks while the send queue is full.
    ///
    /// # Errors
    /// [`Error::Closed`] once the connection has ended.
    pub fn send(&self, msg: Message) -> Result<()> {
        if self.outbox.push(msg) {
            Ok(())
        } else {
            Err(Error::Closed)
        }
    }

    /// Sends a text message. See [`Client::send`].
    ///
    /// # Errors
    /// [`Error::Closed`] once the connection has ended.
    pub fn send_text(&self, text: impl Into<String>) -> Result<()> {
        self.send(Message::text(text.into()))
    }

    /// Sends a binary message. See [`Client::send`].
    ///
    /// # Errors
    /// [`Error::Closed`] once the connection has ended.
    pub fn send_binary(&self, data: impl Into<Vec<u8>>) -> Result<()> {
        self.send(Message::binary(data.into()))
    }

    /// Waits for the next text or binary message; `None` once the
    /// connection has ended (then see [`Client::close_info`]).
    pub fn recv(&self) -> Option<Message> {
        match self.incoming.recv() {
            Ok(item) => self.take(item),
            Err(_) => None,
        }
    }

    /// Like [`Client::recv`], giving up after `timeout`.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] when nothing arrived in time,
    /// [`RecvTimeoutError::Closed`] when the connection has ended.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Message, RecvTimeoutError> {
        match self.incoming.recv_timeout(timeout) {
            Ok(item) => self.take(item).ok_or(RecvTimeoutError::Closed),
            Err(ChannelTimeout::Timeout) => Err(RecvTimeoutError::Timeout),
            Err(ChannelTimeout::Disconnected) => Err(RecvTimeoutError::Closed),
        }
    }

    fn take(&self, item: Incoming) -> Option<Message> {
        match item {
            Incoming::Message(msg) => Some(msg),
            Incoming::Closed(info) => {
                let _ = self.closed.set(info);
                None
            }
        }
    }

    /// Sends a close frame with `code` and `reason`, waits up to the close
    /// timeout for the server's answer, and says how the connection ended.
    /// Messages still unread are discarded.
    pub fn close(&self, code: u16, reason: &str) -> CloseInfo {
        self.outbox.close(code, reason);
        let deadline = Instant::now() + self.close_timeout + Duration::from_millis(500);
        while self.closed.get().is_none() {
            match self.incoming.recv_deadline(deadline) {
                Ok(item) => {
                    self.take(item);
                }
                Err(_) => break,
            }
        }
        self.closed.get().cloned().unwrap_or_else(|| CloseInfo {
            code,
            reason: reason.to_string(),
            by_peer: false,
        })
    }

    /// How the connection ended, once [`Client::recv`] has returned `None`.
    pub fn close_info(&self) -> Option<&CloseInfo> {
        self.closed.get()
    }

    /// The subprotocol the server chose, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The receiving end, for `select!` in the reconnecting client.
    pub(crate) fn incoming(&self) -> &Receiver<Incoming> {
        &self.incoming
    }

    /// Records the end seen through [`Client::incoming`].
    pub(crate) fn set_closed(&self, info: CloseInfo) {
        let _ = self.closed.set(info);
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if self.closed.get().is_none() {
            self.outbox.close(1000, "");
        }
    }
}

/// Hands received messages to the application's channel.
struct AppHandler {
    tx: Sender<Incoming>,
}

impl Handler for AppHandler {
    fn message(&mut self, msg: Message) -> std::result::Result<(), (u16, String)> {
        self.tx
            .send(Incoming::Message(msg))
            .map_err(|_| (1000, String::new()))
    }
}

/// The handshake request: the URL plus configured headers.
fn build_request(url: &str, cfg: &ClientConfig) -> Result<tungstenite::handshake::client::Request> {
    let mut request = url
        .into_client_request()
        .map_err(|e| Error::Url(format!("{url}: {e}")))?;
    let headers = request.headers_mut();
    let mut add = |name: &str, value: &str| -> Result<()> {
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| Error::Config(format!("bad header name {name:?}")))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| Error::Config(format!("bad value for header {name}")))?;
        headers.append(name, value);
        Ok(())
    };
    if let Some(token) = &cfg.token {
        add("Authorization", &format!("Bearer {token}"))?;
    }
    if let Some(origin) = &cfg.origin {
        add("Origin", origin)?;
    }
    if !cfg.protocols.is_empty() {
        add("Sec-WebSocket-Protocol", &cfg.protocols.join(", "))?;
    }
    for (name, value) in &cfg.headers {
        add(name, value)?;
    }
    Ok(request)
}

/// Host, port and whether TLS is wanted, from a `ws://` or `wss://` URI.
fn endpoint(uri: &Uri) -> Result<(String, u16, bool)> {
    let secure = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        other => {
            return Err(Error::Url(format!(
                "scheme must be ws or wss, not {}",
                other.unwrap_or("none")
            )))
        }
    };
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Error::Url(format!("{uri}: no host")))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    Ok((host, port, secure))
}

/// Connects to the first address of `host` that answers before `deadline`.
fn connect_tcp(host: &str, port: u16, deadline: Instant) -> Result<TcpStream> {
    let target = format!("{host}:{port}");
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::Connect {
            addr: target.clone(),
            source: e,
        })?
        .collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            last = std::io::ErrorKind::TimedOut.into();
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(e) => last = e,
        }
    }
    Err(Error::Connect {
        addr: target,
        source: last,
    })
}

/// Puts TLS around the socket for `wss://`.
fn wrap_stream(
    tcp: TcpStream,
    host: &str,
    secure: bool,
    cfg: &ClientConfig,
    deadline: Instant,
) -> Result<Stream> {
    if !secure {
        return Ok(Stream::Plain(tcp));
    }
    #[cfg(feature = "tls")]
    {
        if cfg.insecure {
            log::warn!("--insecure: not verifying the certificate of {host}");
        }
        crate::tls::connect(tcp, host, &cfg.ca_pem, cfg.insecure, deadline)
    }
    #[cfg(not(feature = "tls"))]
    {
        let _ = (tcp, host, cfg, deadline);
        Err(Error::Tls(
            "this build has no TLS support (feature `tls`)".into(),
        ))
    }
}

/// Turns a failed handshake into one clear error.
fn handshake_error<R: tungstenite::handshake::HandshakeRole>(
    err: HandshakeError<R>,
    host: &str,
    port: u16,
) -> Error {
    match err {
        HandshakeError::Interrupted(_) => Error::Handshake(format!(
            "{host}:{port} did not answer the handshake in time"
        )),
        HandshakeError::Failure(WsError::Http(resp)) => {
            let status = resp.status();
            let body = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).trim().to_string())
                .map(|b| match b.split_once(": ") {
                    // wshub's own error bodies repeat the status line first.
                    Some((head, rest)) if head.starts_with(status.as_str()) => rest.to_string(),
                    _ => b,
                })
                .filter(|b| !b.is_empty());
            Error::Handshake(match body {
                Some(body) => format!("server answered {status}: {body}"),
                None => format!("server answered {status}"),
            })
        }
        HandshakeError::Failure(WsError::Io(e)) => Error::Handshake(format!("{host}:{port}: {e}")),
        HandshakeError::Failure(e) => Error::Handshake(e.to_string()),
    }
}
