//! Configuration for the server, the client and the reconnecting client.
//!
//! Each config lists every default in one `impl Default` and has by-value
//! setters named after its fields. Values are validated once, when a server
//! binds or a client connects ([`ServerConfig::validate`]).

use std::time::Duration;

use crate::error::{Error, Result};

/// How the hub routes a message it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Directed JSON (`{"receiver": NAME, …}`) goes to the clients named
    /// NAME (or waits in their offline queue); everything else goes to every
    /// other client in the sender's room.
    #[default]
    Chat,
    /// Every message goes back to its sender only.
    Echo,
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Mode> {
        match s {
            "chat" => Ok(Mode::Chat),
            "echo" => Ok(Mode::Echo),
            _ => Err(Error::Config(format!("unknown mode {s:?} (chat|echo)"))),
        }
    }
}

/// Settings of a [`Server`](crate::Server).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Routing mode. Defaults to [`Mode::Chat`].
    pub mode: Mode,
    /// Largest message (after reassembly) a client may send, in bytes; a
    /// bigger one closes that client with 1009. Defaults to 1 MiB.
    pub max_message_size: usize,
    /// Messages kept per offline name; the oldest is dropped on overflow.
    /// Defaults to 100.
    pub offline_queue: usize,
    /// Bytes kept in all offline queues together; a directed message that
    /// does not fit is dropped (logged and counted). Defaults to 8 MiB.
    pub offline_bytes: usize,
    /// Messages that may wait for one receiver whose socket is full before
    /// it is closed with 1008 as too slow (four times as many in any case).
    /// Defaults to 1024.
    pub send_queue: usize,
    /// The same bound in payload bytes. Defaults to 4 MiB.
    pub send_queue_bytes: usize,
    /// Time a connection has to send its complete HTTP request head,
    /// from when the server takes it: once its first bytes are in, or
    /// after about a second of silence (the kernel holds it until then).
    /// Defaults to 10 s.
    pub handshake_timeout: Duration,
    /// Largest HTTP request head accepted (431 above). Defaults to 16 KiB.
    pub max_header_bytes: usize,
    /// A client silent this long is pinged; `None` disables heartbeats.
    /// Defaults to 30 s.
    pub ping_interval: Option<Duration>,
    /// A pinged client that stays silent this much longer is dropped.
    /// Defaults to 30 s.
    pub idle_timeout: Duration,
    /// Time we wait for a peer's answer to our close frame. Defaults to 1 s.
    pub close_timeout: Duration,
    /// Bytes tungstenite reads from a socket at a time; its buffer is
    /// allocated for every client, so it is most of a silent client's heap.
    /// Defaults to 1 KiB (measured: 3.9 KiB less RSS per idle client than
    /// with 4 KiB, and no change in fan-out throughput).
    pub read_buffer_size: usize,
    /// Stack size of each session thread. Only the pages a thread touches
    /// cost memory (8 KiB for a silent plain client, measured); the rest
    /// is address space. A release build serves TLS clients with 32 KiB; the
    /// default leaves room for debug builds and deeper OpenSSL paths.
    /// Defaults to 128 KiB.
    pub thread_stack: usize,
    /// Most connections at once (handshaking or online); more get HTTP 503.
    /// Defaults to 1000.
    pub max_clients: usize,
    /// Most connections at once from one IP address; 0 means no limit.
    /// Defaults to 0.
    pub max_clients_per_ip: usize,
    /// Messages per second one client may send, with bursts of up to two
    /// seconds' worth; a client over it is closed with 1008. `None` means
    /// no limit. Defaults to none.
    pub rate_limit: Option<f64>,
    /// Browser origins allowed to connect; when not empty, a handshake
    /// whose `Origin` is present and not listed gets 403. Defaults to none.
    pub allowed_origins: Vec<String>,
    /// Subprotocols the server speaks, in order of preference. When not
    /// empty, a client offering only others gets 400. Defaults to none.
    pub protocols: Vec<String>,
    /// TLS identity; with one, the server speaks `wss://`. Defaults to none.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::ServerTls>,
    /// Shared secret clients must present (`Authorization: Bearer …` or
    /// `?token=…`); `None` lets anyone in. Defaults to none.
    pub token: Option<String>,
    /// Serve the browser page at `/`. Defaults to `true`.
    pub web: bool,
    /// Serve `/api/clients` and `/api/stats`. Defaults to `true`.
    pub api: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            mode: Mode::Chat,
            max_message_size: 1 << 20,
            offline_queue: 100,
            offline_bytes: 8 << 20,
            send_queue: 1024,
            send_queue_bytes: 4 << 20,
            handshake_timeout: Duration::from_secs(10),
            max_header_bytes: 16 << 10,
            ping_interval: Some(Duration::from_secs(30)),
            idle_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(1),
            read_buffer_size: 1 << 10,
            thread_stack: 128 << 10,
            max_clients: 1000,
            max_clients_per_ip: 0,
            rate_limit: None,
            allowed_origins: Vec::new(),
            protocols: Vec::new(),
            #[cfg(feature = "tls")]
            tls: None,
            token: None,
            web: true,
            api: true,
        }
    }
}

macro_rules! setters {
    ($ty:ident { $($(#[$doc:meta])* $field:ident : $t:ty),* $(,)? }) => {
        impl $ty {
            $(
                $(#[$doc])*
                #[must_use]
                pub fn $field(mut self, value: $t) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}

setters!(ServerConfig {
    /// Sets [`ServerConfig::mode`]. Defaults to chat.
    mode: Mode,
    /// Sets [`ServerConfig::max_message_size`]. Defaults to 1 MiB.
    max_message_size: usize,
    /// Sets [`ServerConfig::offline_queue`]. Defaults to 100.
    offline_queue: usize,
    /// Sets [`ServerConfig::offline_bytes`]. Defaults to 8 MiB.
    offline_bytes: usize,
    /// Sets [`ServerConfig::send_queue`]. Defaults to 1024.
    send_queue: usize,
    /// Sets [`ServerConfig::send_queue_bytes`]. Defaults to 4 MiB.
    send_queue_bytes: usize,
    /// Sets [`ServerConfig::handshake_timeout`]. Defaults to 10 s.
    handshake_timeout: Duration,
    /// Sets [`ServerConfig::max_header_bytes`]. Defaults to 16 KiB.
    max_header_bytes: usize,
    /// Sets [`ServerConfig::ping_interval`]. Defaults to 30 s.
    ping_interval: Option<Duration>,
    /// Sets [`ServerConfig::idle_timeout`]. Defaults to 30 s.
    idle_timeout: Duration,
    /// Sets [`ServerConfig::close_timeout`]. Defaults to 1 s.
    close_timeout: Duration,
    /// Sets [`ServerConfig::read_buffer_size`]. Defaults to 1 KiB.
    read_buffer_size: usize,
    /// Sets [`ServerConfig::thread_stack`]. Defaults to 128 KiB.
    thread_stack: usize,
    /// Sets [`ServerConfig::max_clients`]. Defaults to 1000.
    max_clients: usize,
    /// Sets [`ServerConfig::max_clients_per_ip`]. Defaults to 0 (no limit).
    max_clients_per_ip: usize,
    /// Sets [`ServerConfig::rate_limit`]. Defaults to none.
    rate_limit: Option<f64>,
    /// Sets [`ServerConfig::allowed_origins`]. Defaults to none.
    allowed_origins: Vec<String>,
    /// Sets [`ServerConfig::protocols`]. Defaults to none.
    protocols: Vec<String>,
    /// Sets [`ServerConfig::tls`]. Defaults to none.
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::ServerTls>,
    /// Sets [`ServerConfig::token`]. Defaults to none.
    token: Option<String>,
    /// Sets [`ServerConfig::web`]. Defaults to `true`.
    web: bool,
    /// Sets [`ServerConfig::api`]. Defaults to `true`.
    api: bool,
});

impl ServerConfig {
    /// Checks that the values make sense together.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first value that does not.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: &str| Err(Error::Config(msg.to_string()));
        if self.max_message_size == 0 {
            return bad("max message size must be at least 1 byte");
        }
        if self.send_queue == 0 {
            return bad("send queue must hold at least 1 message");
        }
        if self.send_queue_bytes < self.max_message_size {
            return bad("send queue bytes must be at least the max message size");
        }
        if self.read_buffer_size < 256 {
            return bad("read buffer must be at least 256 bytes");
        }
        if self.thread_stack < 32 << 10 {
            return bad("thread stack must be at least 32 KiB");
        }
        if self.max_header_bytes < 512 {
            return bad("max header bytes must be at least 512");
        }
        if self.max_clients == 0 {
            return bad("max clients must be at least 1");
        }
        if self.rate_limit.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return bad("rate limit must be a positive number of messages per second");
        }
        if self.token.as_deref() == Some("") {
            return bad("token must not be empty");
        }
        Ok(())
    }
}

/// Settings of a [`Client`](crate::Client).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Extra request headers, `(name, value)`. Defaults to none.
    pub headers: Vec<(String, String)>,
    /// `Origin` header to send. Defaults to none.
    pub origin: Option<String>,
    /// Subprotocols to offer, in order of preference. The server must pick
    /// one of them, or the handshake fails (as it does in browsers).
    /// Defaults to none.
    pub protocols: Vec<String>,
    /// Time allowed for TCP connect plus the opening handshake.
    /// Defaults to 10 s.
    pub connect_timeout: Duration,
    /// Largest message accepted from the server. Defaults to 64 MiB.
    pub max_message_size: usize,
    /// Ping the server after this much silence; `None` disables it.
    /// Defaults to none.
    pub ping_interval: Option<Duration>,
    /// After a ping, drop a server that stays silent this much longer.
    /// Defaults to 30 s.
    pub idle_timeout: Duration,
    /// Time we wait for the server's answer to our close frame.
    /// Defaults to 1 s.
    pub close_timeout: Duration,
    /// Received messages buffered for the application before the client
    /// stops reading from the socket. Defaults to 1024.
    pub recv_queue: usize,
    /// Sent as `Authorization: Bearer TOKEN`. Defaults to none.
    pub token: Option<String>,
    /// Extra CA certificates (PEM) trusted for `wss://`, besides the
    /// system's. Defaults to none.
    pub ca_pem: Vec<Vec<u8>>,
    /// Skip certificate and host name checks for `wss://` (testing only).
    /// Defaults to `false`.
    pub insecure: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            headers: Vec::new(),
            origin: None,
            protocols: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            max_message_size: 64 << 20,
            ping_interval: None,
            idle_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(1),
            recv_queue: 1024,
            token: None,
            ca_pem: Vec::new(),
            insecure: false,
        }
    }
}

setters!(ClientConfig {
    /// Sets [`ClientConfig::headers`]. Defaults to none.
    headers: Vec<(String, String)>,
    /// Sets [`ClientConfig::origin`]. Defaults to none.
    origin: Option<String>,
    /// Sets [`ClientConfig::protocols`]. Defaults to none.
    protocols: Vec<String>,
    /// Sets [`ClientConfig::connect_timeout`]. Defaults to 10 s.
    connect_timeout: Duration,
    /// Sets [`ClientConfig::max_message_size`]. Defaults to 64 MiB.
    max_message_size: usize,
    /// Sets [`ClientConfig::ping_interval`]. Defaults to none.
    ping_interval: Option<Duration>,
    /// Sets [`ClientConfig::idle_timeout`]. Defaults to 30 s.
    idle_timeout: Duration,
    /// Sets [`ClientConfig::close_timeout`]. Defaults to 1 s.
    close_timeout: Duration,
    /// Sets [`ClientConfig::recv_queue`]. Defaults to 1024.
    recv_queue: usize,
    /// Sets [`ClientConfig::token`]. Defaults to none.
    token: Option<String>,
    /// Sets [`ClientConfig::ca_pem`]. Defaults to none.
    ca_pem: Vec<Vec<u8>>,
    /// Sets [`ClientConfig::insecure`]. Defaults to `false`.
    insecure: bool,
});

/// Settings of a [`ReconnectingClient`](crate::ReconnectingClient).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReconnectConfig {
    /// Pause between attempts (plus up to 10 % random jitter).
    /// Defaults to 3 s.
    pub retry_interval: Duration,
    /// Attempts after a failure or drop before giving up; `None` retries
    /// forever and `Some(0)` never retries. Defaults to none.
    pub max_retries: Option<u32>,
    /// Messages sent after every successful connect, before anything else.
    /// Defaults to none.
    pub on_connect: Vec<tungstenite::Message>,
    /// Messages kept while disconnected; sending more fails.
    /// Defaults to 1000.
    pub pending_limit: usize,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            retry_interval: Duration::from_secs(3),
            max_retries: None,
            on_connect: Vec::new(),
            pending_limit: 1000,
        }
    }
}

setters!(ReconnectConfig {
    /// Sets [`ReconnectConfig::retry_interval`]. Defaults to 3 s.
    retry_interval: Duration,
    /// Sets [`ReconnectConfig::max_retries`]. Defaults to unlimited.
    max_retries: Option<u32>,
    /// Sets [`ReconnectConfig::on_connect`]. Defaults to none.
    on_connect: Vec<tungstenite::Message>,
    /// Sets [`ReconnectConfig::pending_limit`]. Defaults to 1000.
    pending_limit: usize,
});

/// Parses a byte size: `4096`, `64KiB`, `64k`, `1MiB`, `1M`, `2GiB`
/// (binary multiples; case-insensitive).
///
/// # Errors
/// [`Error::Config`] for anything else.
pub fn parse_size(s: &str) -> Result<usize> {
    let t = s.trim().to_ascii_lowercase();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let shift = match unit.trim() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(Error::Config(format!(
                "bad size {s:?} (e.g. 4096, 64KiB, 1MiB)"
            )))
        }
    };
    num.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| Error::Config(format!("bad size {s:?} (e.g. 4096, 64KiB, 1MiB)")))
}

/// Parses a duration: `10` or `10s` (seconds), `1.5`, `500ms`, `2m`.
///
/// # Errors
/// [`Error::Config`] for anything else.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let t = s.trim();
    let bad = || Error::Config(format!("bad duration {s:?} (e.g. 10, 10s, 500ms, 2m)"));
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let value: f64 = num.trim().parse().map_err(|_| bad())?;
    if !value.is_finite() || value < 0.0 || value * scale > 1e9 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(value * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64KiB").unwrap(), 64 << 10);
        assert_eq!(parse_size("1M").unwrap(), 1 << 20);
        assert!(parse_size("1.5M").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("0.25s").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-3").is_err());
    }

    #[test]
    fn defaults_validate() {
        ServerConfig::default().validate().unwrap();
        assert!(ServerConfig::default().send_queue(0).validate().is_err());
    }
}
