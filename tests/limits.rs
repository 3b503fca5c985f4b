//! Every limit that keeps one client from hurting the others, crossed on
//! real sockets: the exact HTTP status or close code, the counter (and, for
//! the server binary, the log line) that says why, and two well-behaved
//! clients connected at the same time that keep sending and receiving
//! throughout. Covered: `max_clients` and `max_clients_per_ip` (503, the
//! slot comes back when a connection ends), the handshake timeout (a
//! slowloris trickling half a request is dropped on time while others
//! chat), `max_header_bytes` (a head at the bound passes, one byte more
//! and an endless head get 431 at once), `max_message_size` (1009), a
//! frame header announcing 2^63-1 bytes (1009 at once, no allocation, the
//! server binary keeps running) and `rate_limit` (a burst is allowed, a
//! flood is closed with 1008 and counted). The stuck receiver among 50
//! clients is proven in `tests/slow_consumer.rs`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use wshub::{Client, Message, RecvTimeoutError, Server, ServerConfig};

/// Two well-behaved clients alone in room `ok`.
fn witnesses(server: &Server) -> (Client, Client) {
    (join(server, "ok/a"), join(server, "ok/b"))
}

/// How many handshakes the server refused for `reason`.
fn rejected(server: &Server, reason: &str) -> u64 {
    server.stats().rejected.get(reason).copied().unwrap_or(0)
}

/// How many messages the server dropped for `reason`.
fn dropped(server: &Server, reason: &str) -> u64 {
    server.stats().dropped.get(reason).copied().unwrap_or(0)
}

/// Waits until `client`'s connection has ended; returns its close code
/// and reason. Messages still arriving are skipped.
fn wait_closed(client: &Client) -> (u16, String) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.recv_timeout(left) {
            Ok(_) => {}
            Err(RecvTimeoutError::Closed) => break,
            Err(RecvTimeoutError::Timeout) => panic!("the client was not closed"),
        }
    }
    let info = client.close_info().expect("close info after the end");
    (info.code, info.reason.clone())
}

/// Retries an upgrade until the server admits it again (a slot came
/// back); returns the admitted connection.
fn admitted_again(addr: SocketAddr) -> TcpStream {
    let mut admitted = None;
    wait_for(
        || {
            let (tcp, head) = upgrade_raw(addr, "later", &[]);
            let ok = http_status(&head) == 101;
            if ok {
                admitted = Some(tcp);
            }
            ok
        },
        "a freed slot to admit a new client",
    );
    admitted.unwrap()
}

#[test]
fn over_max_clients_gets_503_counted_as_server_full() {
    let server = server(ServerConfig::default().max_clients(3));
    let addr = server.local_addr();
    let (a, b) = witnesses(&server);
    // A connection whose request is on its way holds a slot too.
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.write_all(b"GET /ok/c HTTP/1.1\r\n").unwrap();
    let (mut tcp, head) = upgrade_raw(addr, "fourth", &[]);
    assert_eq!(http_status(&head), 503, "{head}");
    assert!(head_header(&head, "Retry-After").is_some(), "{head}");
    let body = read_to_end_lossy(&mut tcp);
    assert!(body.contains("server full"), "{body:?}");
    wait_for(
        || rejected(&server, "server full") == 1,
        "the refusal to be counted",
    );
    assert_eq!(server.clients().len(), 2, "nobody over the limit joined");
    assert_pair_works(&a, &b);

    // When a connection ends, its slot is free again.
    drop(idle);
    let _later = admitted_again(addr);
    wait_online(&server, "later");
    assert_pair_works(&a, &b);
}

#[test]
fn a_connection_that_has_sent_nothing_takes_no_slot() {
    let server = server(ServerConfig::default().max_clients(1));
    let addr = server.local_addr();
    // The kernel holds a silent connection for its first second
    // (TCP_DEFER_ACCEPT), so it cannot keep a client out meanwhile.
    // Before, it was accepted first and the client behind it got 503.
    let _silent = TcpStream::connect(addr).unwrap();
    let (_tcp, head) = upgrade_raw(addr, "first", &[]);
    assert_eq!(http_status(&head), 101, "{head}");
    wait_online(&server, "first");
    assert_eq!(rejected(&server, "server full"), 0);
}

#[test]
fn over_max_clients_per_ip_gets_503() {
    let server = server(ServerConfig::default().max_clients_per_ip(3));
    let addr = server.local_addr();
    let (a, b) = witnesses(&server);
    let third = raw_ws(addr, "third");
    wait_online(&server, "third");

    let (mut tcp, head) = upgrade_raw(addr, "fourth", &[]);
    assert_eq!(http_status(&head), 503, "{head}");
    let body = read_to_end_lossy(&mut tcp);
    assert!(body.contains("127.0.0.1"), "names the address: {body:?}");
    wait_for(
        || rejected(&server, "too many from one address") == 1,
        "the refusal to be counted",
    );
    assert_eq!(server.clients().len(), 3);
    assert_pair_works(&a, &b);

    drop(third);
    let _later = admitted_again(addr);
    wait_online(&server, "later");
    assert_pair_works(&a, &b);
}

/// Opens `n` upgrades to `addr` at the same moment; returns each one's
/// HTTP status with its connection (kept open).
fn upgrades_at_once(addr: SocketAddr, n: usize) -> Vec<(u16, TcpStream)> {
    let start = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                let (tcp, head) = upgrade_raw(addr, &format!("rush{i}"), &[]);
                (http_status(&head), tcp)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn limits_stay_exact_when_several_threads_accept_at_once() {
    // Finished connection threads accept the next connection themselves,
    // so several may admit at the same moment: neither limit may let one
    // more in.
    for (cfg, allowed, reason) in [
        (ServerConfig::default().max_clients(5), 5, "server full"),
        (
            ServerConfig::default().max_clients_per_ip(4),
            4,
            "too many from one address",
        ),
    ] {
        let server = server(cfg);
        let addr = server.local_addr();
        // Leave finished threads waiting for connections.
        let warm: Vec<Client> = (0..4).map(|i| join(&server, &format!("w{i}"))).collect();
        for client in warm {
            client.close(1000, "done");
        }
        wait_for(
            || server.handle().active_connections() == 0,
            "the warm-up clients to leave",
        );
        let results = upgrades_at_once(addr, 14);
        let admitted = results.iter().filter(|(status, _)| *status == 101).count();
        let refused = results.iter().filter(|(status, _)| *status == 503).count();
        assert_eq!((admitted, refused), (allowed, 14 - allowed), "{reason}");
        wait_for(
            || rejected(&server, reason) == (14 - allowed) as u64,
            "the refusals to be counted",
        );
        wait_for(
            || server.clients().len() == allowed,
            "the admitted clients to join",
        );
    }
}

/// Trickles a request that never ends on a new connection, and keeps the
/// witnesses chatting between bytes, until the server drops it. Returns
/// how long that took and how many exchanges happened meanwhile.
fn slowloris(addr: SocketAddr, a: &Client, b: &Client) -> (Duration, usize) {
    let mut slow = TcpStream::connect(addr).unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut exchanges = 0;
    let mut buf = [0u8; 256];
    loop {
        // One more byte: trickling must not move the deadline.
        let _ = slow.write_all(b"z");
        match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => panic!(
                "a slowloris gets no answer, got {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break, // reset: dropped too
        }
        assert_pair_works(a, b);
        exchanges += 1;
        assert!(started.elapsed() < WAIT, "the slowloris was never dropped");
    }
    (started.elapsed(), exchanges)
}

#[test]
fn a_slowloris_is_dropped_after_the_handshake_timeout_while_others_chat() {
    let timeout = Duration::from_secs(1);
    let server = server(ServerConfig::default().handshake_timeout(timeout));
    let (a, b) = witnesses(&server);
    let (took, exchanges) = slowloris(server.local_addr(), &a, &b);
    assert!(
        took >= timeout - Duration::from_millis(100),
        "dropped too early: {took:?}"
    );
    assert!(
        took < timeout + Duration::from_secs(2),
        "dropped too late: {took:?}"
    );
    assert!(
        exchanges >= 3,
        "the witnesses chatted only {exchanges} times"
    );
    wait_for(
        || rejected(&server, "handshake timeout") == 1,
        "the drop to be counted",
    );
    assert_eq!(server.clients().len(), 2);
    assert_pair_works(&a, &b);
}

/// An upgrade request for `path` padded to exactly `len` bytes.
fn padded_request(addr: SocketAddr, path: &str, len: usize) -> String {
    let bare = upgrade_request(addr, path, &[("X-Pad", "")]);
    let pad = "p".repeat(len - bare.len());
    let request = upgrade_request(addr, path, &[("X-Pad", &pad)]);
    assert_eq!(request.len(), len);
    request
}

/// Sends `bytes` on a new connection and returns it with the answer's head.
fn send_raw(addr: SocketAddr, bytes: &[u8]) -> (TcpStream, String) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.write_all(bytes).unwrap();
    let head = read_http_head(&mut tcp);
    (tcp, head)
}

#[test]
fn a_request_head_over_max_header_bytes_gets_431() {
    let max = 1024;
    let server = server(ServerConfig::default().max_header_bytes(max));
    let addr = server.local_addr();
    let (a, b) = witnesses(&server);

    // Exactly at the bound: accepted.
    let (_fits, head) = send_raw(addr, padded_request(addr, "fits", max).as_bytes());
    assert_eq!(
        http_status(&head),
        101,
        "a head of exactly {max} bytes: {head}"
    );
    wait_online(&server, "fits");

    // One byte over: 431, saying what the bound is.
    let request = padded_request(addr, "over", max + 1);
    let (mut tcp, head) = send_raw(addr, request.as_bytes());
    assert_eq!(http_status(&head), 431, "{head}");
    let body = read_to_end_lossy(&mut tcp);
    assert!(body.contains(&max.to_string()), "{body:?}");

    // A head that never ends is refused as soon as it passes the bound,
    // not when the handshake timeout (10 s) runs out.
    let started = Instant::now();
    let endless = format!(
        "GET /x HTTP/1.1\r\nHost: x\r\nX-Big: {}",
        "b".repeat(2 * max)
    );
    let (_tcp, head) = send_raw(addr, endless.as_bytes());
    assert_eq!(http_status(&head), 431, "{head}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    wait_for(
        || rejected(&server, "header too large") == 2,
        "both refusals to be counted",
    );
    assert_eq!(server.clients().len(), 3);
    assert_pair_works(&a, &b);
}

#[test]
fn a_message_over_max_message_size_closes_the_sender_with_1009() {
    let server = server(ServerConfig::default().max_message_size(1024));
    let (a, b) = witnesses(&server);
    let big = join(&server, "ok/big");
    big.send_text("x".repeat(1025)).unwrap();
    a.send_text("while big is being closed").unwrap();
    assert_eq!(recv_text(&b), "while big is being closed");
    let (code, reason) = wait_closed(&big);
    assert_eq!(code, 1009, "{reason}");
    wait_for(
        || server.clients().iter().all(|c| c.name != "big"),
        "big to leave",
    );
    // The message went nowhere, and the room still works.
    assert_nothing_before_marker(&server, &[&a, &b]);
    assert_pair_works(&a, &b);
}

#[test]
fn over_the_rate_limit_a_client_is_closed_with_1008_and_counted() {
    let rate = 20.0;
    let server = server(ServerConfig::default().rate_limit(Some(rate)));
    let (a, b) = witnesses(&server);
    let flooder = join(&server, "flood/flooder");
    let listener = join(&server, "flood/listener");
    assert_pair_works(&a, &b);

    // A burst within two seconds' worth is fine.
    for i in 0..30 {
        a.send_text(format!("burst {i}")).unwrap();
    }
    for i in 0..30 {
        assert_eq!(recv_text(&b), format!("burst {i}"));
    }

    // 200 at once is not.
    for i in 0..200 {
        flooder.send_text(format!("m{i}")).unwrap();
    }
    assert_pair_works(&a, &b);
    let (code, reason) = wait_closed(&flooder);
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("rate"), "the reason says why: {reason:?}");
    wait_for(
        || server.clients().iter().all(|c| c.name != "flooder"),
        "the flooder to leave",
    );
    assert_eq!(dropped(&server, "rate limit"), 1);

    // The listener got the allowed burst, in order, and nothing after.
    server.broadcast(Message::text("-- end --"));
    let mut got = 0;
    loop {
        let text = recv_text(&listener);
        if text == "-- end --" {
            break;
        }
        assert_eq!(text, format!("m{got}"));
        got += 1;
    }
    let burst = (rate * 2.0) as usize;
    assert!(
        (burst..burst + 10).contains(&got),
        "expected about {burst} messages through, got {got}"
    );
    assert_eq!(recv_text(&a), "-- end --");
    assert_eq!(recv_text(&b), "-- end --");
    assert_pair_works(&a, &b);
}

/// Peak resident memory of process `pid`, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

#[test]
fn a_frame_header_announcing_2_pow_63_bytes_is_refused_at_once_without_allocating() {
    let (mut server, addr) = server_bin(&["--max-message-size", "64KiB"]);
    let a = join_bin(&server, addr, "ok", "a");
    let b = join_bin(&server, addr, "ok", "b");
    let mut raw = raw_ws(addr, "huge");
    server.stderr.wait_for("join huge ");
    let peak_before = peak_rss_kib(server.child.id());

    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(i64::MAX as u64).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    let started = Instant::now();
    raw.write_all(&header).unwrap();
    assert_eq!(read_close_code(&mut raw), Some(1009));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "not at once: {:?}",
        started.elapsed()
    );
    drop(raw);
    let line = server.stderr.wait_for("leave huge ");
    assert!(line.contains("1009"), "{line:?}");

    assert_pair_works(&a, &b);
    assert!(server.is_running(), "the server binary must keep running");
    let grown = peak_rss_kib(server.child.id()).saturating_sub(peak_before);
    assert!(grown < 16 << 10, "peak memory grew by {grown} KiB");
}

/// Connects a library client to a server binary and waits for its join
/// log line.
fn join_bin(server: &Proc, addr: SocketAddr, room: &str, name: &str) -> Client {
    let client = Client::connect(&url(addr, &format!("{room}/{name}"))).unwrap();
    server.stderr.wait_for(&format!("join {name} "));
    client
}

#[test]
fn connection_limits_are_logged_with_the_peer_and_the_reason() {
    for (flag, why) in [
        ("--max-clients", "server full"),
        (
            "--max-clients-per-ip",
            "too many connections from 127.0.0.1",
        ),
    ] {
        let (server, addr) = server_bin(&[flag, "2"]);
        let a = join_bin(&server, addr, "ok", "a");
        let b = join_bin(&server, addr, "ok", "b");
        let (tcp, head) = upgrade_raw(addr, "third", &[]);
        assert_eq!(http_status(&head), 503, "{flag}: {head}");
        let peer = tcp.local_addr().unwrap();
        let line = server.stderr.wait_for(&format!("refused {peer}: "));
        assert!(line.contains(why), "{flag}: {line:?}");
        assert_pair_works(&a, &b);
    }
}

#[test]
fn handshake_and_message_limits_are_logged_with_the_reason() {
    let (server, addr) = server_bin(&[
        "--handshake-timeout",
        "1",
        "--max-header-bytes",
        "1KiB",
        "--max-message-size",
        "1KiB",
        "--rate-limit",
        "20",
    ]);
    let a = join_bin(&server, addr, "ok", "a");
    let b = join_bin(&server, addr, "ok", "b");

    let (took, _) = slowloris(addr, &a, &b);
    assert!(took >= Duration::from_millis(900), "{took:?}");
    server
        .stderr
        .wait_for("no complete request within the handshake timeout");

    let request = padded_request(addr, "over", 1025);
    let (tcp, head) = send_raw(addr, request.as_bytes());
    assert_eq!(http_status(&head), 431, "{head}");
    let peer = tcp.local_addr().unwrap();
    let line = server.stderr.wait_for(&format!("refused {peer}: "));
    assert!(line.contains("too large"), "{line:?}");

    let big = join_bin(&server, addr, "x", "big");
    big.send_binary(vec![0u8; 1025]).unwrap();
    assert_eq!(wait_closed(&big).0, 1009);
    let line = server.stderr.wait_for("leave big ");
    assert!(line.contains("1009"), "{line:?}");

    let flooder = join_bin(&server, addr, "x", "flooder");
    for i in 0..200 {
        flooder.send_text(format!("m{i}")).unwrap();
    }
    assert_eq!(wait_closed(&flooder).0, 1008);
    let line = server.stderr.wait_for("leave flooder ");
    assert!(
        line.contains("1008") && line.contains("rate limit"),
        "{line:?}"
    );

    assert_pair_works(&a, &b);
}
