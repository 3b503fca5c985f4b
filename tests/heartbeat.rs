//! Dead peers disappear. On the server, a half-open client (a raw socket
//! that completes the handshake and then never reads or answers) is pinged
//! after `ping_interval` of silence and removed once `idle_timeout` more
//! has passed (gone from `Server::clients()`, its leave logged by the
//! server binary), while normal clients, whose sessions answer pings by
//! themselves, stay connected well past that time. On the client, a server
//! that completes the handshake by hand and then goes silent is pinged and
//! dropped, and the reconnecting client (and `wshub-client --reconnect`)
//! tries again.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use crossbeam_channel::Receiver;
use wshub::{
    Client, ClientConfig, ClientEvent, ReconnectConfig, ReconnectingClient, RecvTimeoutError,
    ServerConfig,
};

const PING: Duration = Duration::from_millis(300);
const IDLE: Duration = Duration::from_millis(300);
const CLOSE: Duration = Duration::from_millis(100);

/// Asserts that `took` is no earlier than the heartbeat allows and not
/// much later than ping interval + idle timeout + close timeout.
fn assert_on_time(took: Duration, close_timeout: Duration) {
    assert!(
        took >= PING + IDLE - Duration::from_millis(50),
        "dropped before ping interval + idle timeout: {took:?}"
    );
    assert!(
        took < PING + IDLE + close_timeout + Duration::from_secs(1),
        "dropped too late: {took:?}"
    );
}

#[test]
fn a_half_open_client_is_removed_while_live_clients_stay() {
    let cfg = ServerConfig::default()
        .ping_interval(Some(PING))
        .idle_timeout(IDLE)
        .close_timeout(CLOSE);
    let server = server(cfg);
    let a = join(&server, "r/a");
    let b = join(&server, "r/b");
    let live_since = Instant::now();

    let mut ghost = raw_ws(server.local_addr(), "r/ghost");
    let ghost_since = Instant::now();
    wait_online(&server, "ghost");
    wait_for(
        || server.clients().iter().all(|c| c.name != "ghost"),
        "the half-open client to be removed",
    );
    assert_on_time(ghost_since.elapsed(), CLOSE);

    // The live clients have been silent longer than that, yet answered
    // the pings and are still here.
    assert!(live_since.elapsed() > PING + IDLE);
    let names: Vec<String> = server.clients().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(server.stats().connections_now, 2);

    // What the ghost was sent while it did not read: a ping, then a close.
    let (op, _) = read_frame(&mut ghost).expect("a frame for the ghost");
    assert_eq!(op, 9, "first a ping");
    assert_eq!(read_close_code(&mut ghost), Some(1001));

    // Two more heartbeat periods of silence change nothing.
    assert_silent(&a, 2 * (PING + IDLE));
    assert_eq!(server.clients().len(), 2);
    assert_pair_works(&a, &b);
}

#[test]
fn the_server_binary_logs_the_half_open_clients_leave() {
    let (server, addr) = server_bin(&[
        "--ping-interval",
        "300ms",
        "--idle-timeout",
        "300ms",
        "--mode",
        "echo",
    ]);
    let live = Client::connect(&url(addr, "live")).unwrap();
    server.stderr.wait_for("join live ");
    let live_since = Instant::now();
    let _ghost = raw_ws(addr, "ghost");
    let ghost_since = Instant::now();
    server.stderr.wait_for("join ghost ");

    let line = server.stderr.wait_for("leave ghost ");
    // The binary waits its default 1 s close timeout for the ghost's
    // answer to the close frame.
    assert_on_time(ghost_since.elapsed(), Duration::from_secs(1));
    assert!(line.contains("ping"), "says why: {line:?}");
    assert!(line.contains("closed by server"), "{line:?}");

    assert!(live_since.elapsed() > PING + IDLE);
    live.send_text("still here").unwrap();
    assert_eq!(recv_text(&live), "still here");
    assert!(
        !server.stderr.all().iter().any(|l| l.contains("leave live")),
        "the live client must stay"
    );
}

/// What the silent server saw: connection number and event.
#[derive(Debug, PartialEq)]
enum Seen {
    Connected(usize),
    /// A frame's opcode (reading is not answering).
    Frame(usize, u8),
    Ended(usize),
}

/// A server that completes each WebSocket handshake by hand, then never
/// sends another byte. Reports what it sees.
fn silent_server() -> (SocketAddr, Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    thread::spawn(move || {
        for (n, tcp) in listener.incoming().enumerate() {
            let Ok(tcp) = tcp else { return };
            let tx = tx.clone();
            thread::spawn(move || serve_silently(tcp, n, &tx));
        }
    });
    (addr, rx)
}

fn serve_silently(mut tcp: TcpStream, n: usize, tx: &crossbeam_channel::Sender<Seen>) {
    let head = read_http_head(&mut tcp);
    let key = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if tcp.write_all(answer.as_bytes()).is_err() {
        return;
    }
    let _ = tx.send(Seen::Connected(n));
    tcp.set_read_timeout(None).unwrap();
    while let Some(op) = read_masked_frame(&mut tcp) {
        let _ = tx.send(Seen::Frame(n, op));
    }
    let _ = tx.send(Seen::Ended(n));
}

/// Reads one masked client frame and returns its opcode.
fn read_masked_frame(tcp: &mut TcpStream) -> Option<u8> {
    let mut hdr = [0u8; 2];
    tcp.read_exact(&mut hdr).ok()?;
    let len = match hdr[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            tcp.read_exact(&mut b).ok()?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            tcp.read_exact(&mut b).ok()?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mask = if hdr[1] & 0x80 != 0 { 4 } else { 0 };
    let mut rest = vec![0u8; mask + len.min(1 << 20) as usize];
    tcp.read_exact(&mut rest).ok()?;
    Some(hdr[0] & 0x0f)
}

/// The next event from the silent server, failing after [`WAIT`].
fn next_seen(rx: &Receiver<Seen>) -> Seen {
    rx.recv_timeout(WAIT)
        .expect("the silent server saw nothing")
}

#[test]
fn a_client_pings_a_silent_server_and_drops_it() {
    let (addr, seen) = silent_server();
    let cfg = ClientConfig::default()
        .ping_interval(Some(PING))
        .idle_timeout(IDLE)
        .close_timeout(CLOSE);
    let client = Client::connect_with_config(&url(addr, "x"), cfg).unwrap();
    let since = Instant::now();
    assert_eq!(next_seen(&seen), Seen::Connected(0));
    assert_eq!(next_seen(&seen), Seen::Frame(0, 9), "a ping first");
    assert!(since.elapsed() >= PING - Duration::from_millis(50));

    assert_eq!(client.recv_timeout(WAIT), Err(RecvTimeoutError::Closed));
    assert_on_time(since.elapsed(), CLOSE);
    let info = client.close_info().unwrap();
    assert!(!info.by_peer, "{info:?}");
    assert!(info.reason.contains("ping"), "{info:?}");
    assert_eq!(next_seen(&seen), Seen::Frame(0, 8), "then a close frame");
}

#[test]
fn a_reconnecting_client_comes_back_after_dropping_a_silent_server() {
    let (addr, seen) = silent_server();
    let cfg = ClientConfig::default()
        .ping_interval(Some(PING))
        .idle_timeout(IDLE)
        .close_timeout(CLOSE);
    let rcfg = ReconnectConfig::default().retry_interval(Duration::from_millis(100));
    let client = ReconnectingClient::start(&url(addr, "x"), cfg, rcfg).unwrap();
    let next = || client.events().recv_timeout(WAIT).expect("an event");

    assert_eq!(next(), ClientEvent::Connected { protocol: None });
    let since = Instant::now();
    match next() {
        ClientEvent::Disconnected(info) => {
            assert!(info.reason.contains("ping"), "{info:?}");
            assert_on_time(since.elapsed(), CLOSE);
        }
        other => panic!("expected a disconnect, got {other:?}"),
    }
    assert!(matches!(
        next(),
        ClientEvent::Reconnecting { attempt: 1, .. }
    ));
    assert_eq!(next(), ClientEvent::Connected { protocol: None });
    // The server notes the second connection on its own thread; wait for
    // it rather than look once.
    while next_seen(&seen) != Seen::Connected(1) {}
}

#[test]
fn client_binary_pings_after_ping_interval() {
    let (addr, seen) = silent_server();
    let _cli = client_bin(&[&url(addr, "x"), "--ping-interval", "0.3", "--no-stdin"]);
    assert_eq!(next_seen(&seen), Seen::Connected(0));
    let since = Instant::now();
    assert_eq!(next_seen(&seen), Seen::Frame(0, 9), "a ping");
    assert!(since.elapsed() >= PING - Duration::from_millis(50));
}

/// Waits up to `limit` for a line containing `needle`.
fn wait_line(lines: &Lines, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    while let Some(line) = lines.next(deadline.saturating_duration_since(Instant::now())) {
        if line.contains(needle) {
            return line;
        }
    }
    panic!("no line with {needle:?}; saw:\n{}", lines.all().join("\n"))
}

#[test]
fn client_binary_drops_a_silent_server_and_reconnects() {
    let (addr, seen) = silent_server();
    let cli = client_bin(&[
        &url(addr, "x"),
        "--ping-interval",
        "0.3",
        "--idle-timeout",
        "0.3",
        "--reconnect",
        "--retry-interval",
        "0.1",
        "--no-stdin",
    ]);
    cli.stderr.wait_for("connected to");
    assert_eq!(next_seen(&seen), Seen::Connected(0));
    assert_eq!(next_seen(&seen), Seen::Frame(0, 9), "a ping");
    let line = wait_line(&cli.stderr, "disconnected", WAIT);
    assert!(line.contains("ping"), "{line:?}");
    wait_line(&cli.stderr, "reconnecting in", WAIT);
    wait_line(&cli.stderr, "connected to", WAIT);
    while next_seen(&seen) != Seen::Connected(1) {}
}
