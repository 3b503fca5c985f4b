//! Bad input from the network, sent by hand on raw sockets: each protocol
//! error closes only that connection with the RFC 6455 code (1002, 1007,
//! 1009), each broken HTTP request gets an HTTP error status, fragmented
//! messages are reassembled and pings answered, and a peer's close is
//! answered. Every test also checks that two well-behaved clients
//! connected at the same time still talk afterwards.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::{
    assert_nothing_before_marker, assert_pair_works, frame, join, raw_ws, read_close_code,
    read_frame, read_http_head, recv_text, server, wait_for, WAIT,
};
use wshub::{Client, Message, Server, ServerConfig};

/// Two well-behaved clients in their own room.
fn witnesses(server: &Server) -> (Client, Client) {
    (join(server, "ok/a"), join(server, "ok/b"))
}

/// Waits until the hub has seen `total` joins and has the two witnesses
/// left, i.e. the raw client came and went.
fn wait_raw_gone(server: &Server, total: u64) {
    wait_for(
        || {
            let s = server.stats();
            s.connections_total == total && s.connections_now == 2
        },
        "the hub to drop the raw client",
    );
}

/// Asserts that the server ends the TCP connection (EOF or reset) soon.
fn assert_ends(tcp: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the server did not end the connection: {e}"),
        }
    }
}

/// Sends `bytes` on a handshaken raw connection and expects a close frame
/// with `code`, the end of the connection, and working witnesses.
fn expect_close(cfg: ServerConfig, bytes: &[u8], code: u16) {
    let server = server(cfg);
    let (a, b) = witnesses(&server);
    let mut raw = raw_ws(server.local_addr(), "raw");
    raw.write_all(bytes).unwrap();
    assert_eq!(read_close_code(&mut raw), Some(code));
    assert_ends(&mut raw);
    // Closing our side lets the server finish at once, not after its
    // close timeout.
    drop(raw);
    wait_raw_gone(&server, 3);
    assert_pair_works(&a, &b);
}

#[test]
fn invalid_utf8_text_closes_with_1007() {
    expect_close(
        ServerConfig::default(),
        &frame(true, 1, b"ok \xff\xfe not"),
        1007,
    );
}

#[test]
fn invalid_utf8_split_across_fragments_closes_with_1007() {
    // "\xe4\xbd" starts a three-byte character; "A" cannot continue it.
    let mut bytes = frame(false, 1, b"abc\xe4\xbd");
    bytes.extend(frame(true, 0, b"A"));
    expect_close(ServerConfig::default(), &bytes, 1007);
}

#[test]
fn an_unmasked_client_frame_closes_with_1002() {
    expect_close(ServerConfig::default(), &[0x81, 0x02, b'h', b'i'], 1002);
}

#[test]
fn a_reserved_opcode_closes_with_1002() {
    expect_close(ServerConfig::default(), &frame(true, 3, b"x"), 1002);
}

#[test]
fn a_continuation_without_a_start_closes_with_1002() {
    expect_close(ServerConfig::default(), &frame(true, 0, b"x"), 1002);
}

#[test]
fn a_message_over_the_limit_closes_with_1009() {
    let cfg = ServerConfig::default().max_message_size(1024);
    expect_close(cfg, &frame(true, 2, &[7u8; 2000]), 1009);
}

#[test]
fn fragments_adding_up_to_more_than_the_limit_close_with_1009() {
    let mut bytes = frame(false, 2, &[7u8; 600]);
    bytes.extend(frame(true, 0, &[7u8; 600]));
    let cfg = ServerConfig::default().max_message_size(1024);
    expect_close(cfg, &bytes, 1009);
}

#[test]
fn a_message_of_exactly_the_limit_passes() {
    let server = server(ServerConfig::default().max_message_size(1024));
    let receiver = join(&server, "r");
    let mut raw = raw_ws(server.local_addr(), "raw");
    raw.write_all(&frame(true, 2, &[7u8; 1024])).unwrap();
    let got = receiver.recv_timeout(WAIT).expect("the message");
    assert_eq!(got, Message::binary(vec![7u8; 1024]));
}

#[test]
fn a_header_announcing_2_pow_63_bytes_closes_with_1009() {
    let mut bytes = vec![0x82, 0x80 | 127];
    bytes.extend_from_slice(&(i64::MAX as u64).to_be_bytes());
    bytes.extend_from_slice(&[1, 2, 3, 4]);
    bytes.extend_from_slice(b"and then some");
    expect_close(ServerConfig::default(), &bytes, 1009);
}

#[test]
fn the_server_stays_responsive_after_a_huge_length_header() {
    let server = server(ServerConfig::default());
    let (a, b) = witnesses(&server);
    let mut raw = raw_ws(server.local_addr(), "raw");
    let mut bytes = vec![0x81, 0x80 | 127];
    bytes.extend_from_slice(&(i64::MAX as u64).to_be_bytes());
    bytes.extend_from_slice(&[1, 2, 3, 4]);
    raw.write_all(&bytes).unwrap();
    // New clients still get in and talk while the raw one is dealt with.
    let c = join(&server, "ok/c");
    a.send_text("after the huge header").unwrap();
    assert_eq!(recv_text(&b), "after the huge header");
    assert_eq!(recv_text(&c), "after the huge header");
    assert_eq!(read_close_code(&mut raw), Some(1009));
}

#[test]
fn a_fragmented_message_is_reassembled_and_a_ping_between_is_answered() {
    let server = server(ServerConfig::default());
    let (a, b) = witnesses(&server);
    let receiver = join(&server, "w");
    let mut raw = raw_ws(server.local_addr(), "frag");
    // "你" is e4 bd a0: split across the second and third fragment.
    let mut bytes = frame(false, 1, b"Hel");
    bytes.extend(frame(true, 9, b"are you there"));
    bytes.extend(frame(false, 0, b"lo \xe4\xbd"));
    bytes.extend(frame(true, 0, b"\xa0 world"));
    raw.write_all(&bytes).unwrap();

    let (op, payload) = read_frame(&mut raw).expect("a pong");
    assert_eq!((op, payload.as_slice()), (10, &b"are you there"[..]));
    assert_eq!(recv_text(&receiver), "Hello 你 world");
    assert_nothing_before_marker(&server, &[&receiver, &a, &b]);
    assert_pair_works(&a, &b);
}

#[test]
fn a_close_with_1000_is_answered_with_a_close_frame() {
    let server = server(ServerConfig::default());
    let (a, b) = witnesses(&server);
    let mut raw = raw_ws(server.local_addr(), "raw");
    raw.write_all(&frame(true, 8, b"\x03\xe8bye")).unwrap();
    assert_eq!(read_close_code(&mut raw), Some(1000));
    assert_ends(&mut raw);
    wait_raw_gone(&server, 3);
    assert_pair_works(&a, &b);
}

/// Sends `request` on a fresh connection and returns the status, the
/// response head and the body (read to the end of the connection).
fn http_exchange(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.write_all(request).unwrap();
    let head = read_http_head(&mut tcp);
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {head:?}"));
    let mut body = Vec::new();
    match tcp.read_to_end(&mut body) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server did not end the connection: {e}"),
    }
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

/// An upgrade request for `/x` with `key` and `version`.
fn upgrade(addr: SocketAddr, key: &str, version: &str) -> Vec<u8> {
    format!(
        "GET /x HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: {version}\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    )
    .into_bytes()
}

/// Runs `request` against a server with `cfg` next to two witnesses and
/// returns the status, head and body of the answer.
fn http_case(cfg: ServerConfig, request: impl Fn(SocketAddr) -> Vec<u8>) -> (u16, String, String) {
    let server = server(cfg);
    let (a, b) = witnesses(&server);
    let addr = server.local_addr();
    let answer = http_exchange(addr, &request(addr));
    assert_pair_works(&a, &b);
    assert_eq!(server.stats().connections_now, 2, "no one else joined");
    answer
}

#[test]
fn garbage_instead_of_a_request_gets_400() {
    let (status, _, _) = http_case(ServerConfig::default(), |_| {
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x8e\xff garbage\r\n\r\n".to_vec()
    });
    assert_eq!(status, 400);
}

#[test]
fn a_request_head_over_the_limit_gets_431() {
    let cfg = ServerConfig::default().max_header_bytes(1024);
    let (status, _, _) = http_case(cfg, |addr| {
        let big = "a".repeat(2000);
        format!("GET /x HTTP/1.1\r\nHost: {addr}\r\nX-Big: {big}\r\n\r\n").into_bytes()
    });
    assert_eq!(status, 431);
}

#[test]
fn a_plain_get_gets_an_http_error() {
    let (status, _, _) = http_case(ServerConfig::default(), |addr| {
        format!("GET /nope/x HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes()
    });
    assert!(status >= 400, "a plain GET got {status}");
}

#[test]
fn a_post_gets_405() {
    let (status, head, _) = http_case(ServerConfig::default(), |addr| {
        format!("POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n").into_bytes()
    });
    assert_eq!(status, 405);
    assert!(head.contains("Allow: "), "405 without Allow: {head}");
}

#[test]
fn a_bad_websocket_key_gets_400_with_a_reason() {
    let (status, _, body) = http_case(ServerConfig::default(), |addr| {
        upgrade(addr, "not-a-16-byte-key", "13")
    });
    assert_eq!(status, 400);
    assert!(!body.trim().is_empty(), "400 without a reason");
}

#[test]
fn a_missing_websocket_key_gets_400() {
    let (status, _, _) = http_case(ServerConfig::default(), |addr| {
        format!(
            "GET /x HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        )
        .into_bytes()
    });
    assert_eq!(status, 400);
}

#[test]
fn a_wrong_websocket_version_gets_426_naming_13() {
    let (status, head, _) = http_case(ServerConfig::default(), |addr| {
        upgrade(addr, "dGhlIHNhbXBsZSBub25jZQ==", "8")
    });
    assert_eq!(status, 426);
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("sec-websocket-version: 13"),
        "426 should name the supported version: {head}"
    );
}
