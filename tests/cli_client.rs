//! The `wshub-client` binary from the outside, as a spawned process on real
//! sockets: `--count`, `--timeout` (exit 3), `--send` order, stdin lines as
//! text or `--binary`, `--no-stdin`, close 1000 and exit 0 at end of stdin,
//! how received binary messages print (hex, base64), exit 1 with one error
//! line for a closed port or an HTTP error answer, `--header`/`--origin`/
//! `--protocol` on the wire, `--reconnect` across a server restart with
//! queued lines delivered in order, `--on-connect` after every connect,
//! `--max-retries`, and status lines on stderr silenced by `-q`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use crossbeam_channel::Receiver;
use wshub::{Client, Message, ServerConfig};

const CLIENT: &str = env!("CARGO_BIN_EXE_wshub-client");

/// A library server with a watcher in room `r` and a `wshub-client`
/// started as `r/cli` with `args` (after the URL), already online.
struct Setup {
    server: wshub::Server,
    watcher: Client,
    cli: Proc,
}

fn setup(args: &[&str]) -> Setup {
    let server = common::server(ServerConfig::default());
    let watcher = join(&server, "r/watcher");
    let cli_url = url(server.local_addr(), "r/cli");
    let mut all = vec![cli_url.as_str()];
    all.extend_from_slice(args);
    let cli = client_bin(&all);
    wait_online(&server, "cli");
    Setup {
        server,
        watcher,
        cli,
    }
}

/// The lines of `lines` that contain `needle`.
fn matching<'a>(lines: &'a [String], needle: &str) -> Vec<&'a String> {
    lines.iter().filter(|l| l.contains(needle)).collect()
}

/// A one-connection raw TCP server: it reads the request head, sends it on
/// the returned channel, then lets `answer` finish the conversation.
fn raw_server(
    answer: impl FnOnce(&mut TcpStream, &str) + Send + 'static,
) -> (SocketAddr, Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let Ok((mut tcp, _)) = listener.accept() else {
            return;
        };
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        let head = read_http_head(&mut tcp);
        answer(&mut tcp, &head);
        let _ = tx.send(head);
    });
    (addr, rx)
}

/// The value of header `name` in a request head (case-insensitive name).
fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Reads one masked (client) frame: (opcode, unmasked payload).
fn read_client_frame(tcp: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut hdr = [0u8; 2];
    tcp.read_exact(&mut hdr).ok()?;
    assert!(hdr[1] & 0x80 != 0, "client frames must be masked");
    let len = match hdr[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            tcp.read_exact(&mut b).ok()?;
            usize::from(u16::from_be_bytes(b))
        }
        127 => panic!("unexpectedly large client frame"),
        n => usize::from(n),
    };
    let mut mask = [0u8; 4];
    tcp.read_exact(&mut mask).ok()?;
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).ok()?;
    payload
        .iter_mut()
        .zip(mask.iter().cycle())
        .for_each(|(b, m)| *b ^= m);
    Some((hdr[0] & 0x0f, payload))
}

#[test]
fn help_and_usage_errors() {
    let (code, out, _) = run_bin(CLIENT, &["--help"], &[]);
    assert_eq!(code, 0);
    let text = out.join("\n");
    for needle in [
        "usage: wshub-client",
        "--count",
        "--reconnect",
        "exit codes",
    ] {
        assert!(text.contains(needle), "--help lacks {needle:?}:\n{text}");
    }
    let (code, _, err) = run_bin(CLIENT, &[], &[]);
    assert_eq!(code, 2, "a missing URL is a usage error: {err:?}");
    assert_eq!(matching(&err, "error").len(), 1, "{err:?}");
    let (code, _, err) = run_bin(CLIENT, &["ws://127.0.0.1:1/x", "--count", "many"], &[]);
    assert_eq!(code, 2, "{err:?}");
    assert!(matching(&err, "error")[0].contains("--count"), "{err:?}");
}

#[test]
fn count_exits_0_after_n_messages_and_prints_them() {
    let mut s = setup(&["--count", "2", "--no-stdin"]);
    s.watcher.send_text("one").unwrap();
    s.watcher.send_text("two").unwrap();
    let (code, out, _) = s.cli.finish();
    assert_eq!(code, 0);
    assert_eq!(out, ["one", "two"]);
}

#[test]
fn timeout_exits_3_when_the_work_is_not_done() {
    let server = common::server(ServerConfig::default());
    let start = Instant::now();
    let cli_url = url(server.local_addr(), "waiting");
    let mut cli = client_bin(&[&cli_url, "--count", "1", "--timeout", "0.5", "--no-stdin"]);
    let (code, out, err) = cli.finish();
    let took = start.elapsed();
    assert_eq!(code, 3, "stderr: {err:?}");
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(matching(&err, "timeout").len(), 1, "{err:?}");
    assert!(took >= Duration::from_millis(500), "exited after {took:?}");
    assert_eq!(server.stats().connections_total, 1, "it did connect");
}

#[test]
fn send_flags_go_out_in_order() {
    let mut s = setup(&["--send", "A", "--send", "B", "--send", "C"]);
    assert_eq!(recv_text(&s.watcher), "A");
    assert_eq!(recv_text(&s.watcher), "B");
    assert_eq!(recv_text(&s.watcher), "C");
    s.cli.close_stdin();
    assert_eq!(s.cli.wait_exit(), 0);
}

#[test]
fn stdin_lines_are_sent_as_text() {
    let mut s = setup(&[]);
    s.cli.send_line("hello there");
    s.cli.send_line("second line");
    for want in ["hello there", "second line"] {
        match s.watcher.recv_timeout(WAIT) {
            Ok(Message::Text(t)) => assert_eq!(t.as_str(), want),
            other => panic!("expected text {want:?}, got {other:?}"),
        }
    }
    s.cli.close_stdin();
    assert_eq!(s.cli.wait_exit(), 0);
}

#[test]
fn binary_flag_sends_stdin_lines_as_binary() {
    let mut s = setup(&["--binary"]);
    s.cli.send_line("abc");
    match s.watcher.recv_timeout(WAIT) {
        Ok(Message::Binary(data)) => assert_eq!(&data[..], b"abc"),
        other => panic!("expected binary \"abc\", got {other:?}"),
    }
    s.cli.close_stdin();
    assert_eq!(s.cli.wait_exit(), 0);
}

#[test]
fn received_binary_prints_as_hex_by_default() {
    let mut s = setup(&["--count", "1", "--no-stdin"]);
    s.watcher.send_binary(vec![0x00, 0xff, 0x10]).unwrap();
    let (code, out, _) = s.cli.finish();
    assert_eq!(code, 0);
    assert_eq!(out, ["[binary 3 bytes] 00ff10"]);
}

#[test]
fn received_binary_prints_as_base64_on_request() {
    let mut s = setup(&["--count", "1", "--no-stdin", "--binary-format", "base64"]);
    s.watcher.send_binary(vec![0x00, 0xff, 0x10]).unwrap();
    let (code, out, _) = s.cli.finish();
    assert_eq!(code, 0);
    assert_eq!(out, ["[binary 3 bytes] AP8Q"]);
}

#[test]
fn no_stdin_ignores_stdin_and_its_end() {
    let mut s = setup(&["--no-stdin", "--send", "first"]);
    s.cli.send_line("typed, must not be sent");
    s.cli.close_stdin();
    assert_eq!(recv_text(&s.watcher), "first");
    assert_silent(&s.watcher, Duration::from_millis(300));

    // Still connected after the end of stdin: it receives and prints.
    s.watcher.send_text("still there?").unwrap();
    s.cli.stdout.wait_for("still there?");
    assert!(
        s.cli.is_running(),
        "end of stdin stopped a --no-stdin client"
    );
    assert!(s.server.clients().iter().any(|c| c.name == "cli"));
}

#[test]
fn end_of_stdin_closes_with_1000_and_exits_0_with_status_lines() {
    let (server, addr) = server_bin(&[]);
    let cli_url = url(addr, "carol");
    let mut cli = client_bin(&[&cli_url]);
    let connected = cli.stderr.wait_for("connected to");
    assert_eq!(connected, format!("connected to {cli_url}"));
    server.stderr.wait_for("join carol");

    cli.close_stdin();
    let (code, out, err) = cli.finish();
    assert_eq!(code, 0, "stderr: {err:?}");
    assert!(
        out.is_empty(),
        "status lines must not go to stdout: {out:?}"
    );
    assert!(
        err.contains(&"disconnected (1000 normal)".to_string()),
        "{err:?}"
    );

    let leave = server.stderr.wait_for("leave carol");
    assert!(leave.contains("1000 normal"), "{leave:?}");
    assert!(!leave.contains("closed by server"), "{leave:?}");
}

#[test]
fn quiet_silences_status_lines() {
    let (server, addr) = server_bin(&[]);
    let mut cli = client_bin(&[&url(addr, "hush"), "-q"]);
    server.stderr.wait_for("join hush");
    cli.close_stdin();
    let (code, _, err) = cli.finish();
    assert_eq!(code, 0);
    assert!(err.is_empty(), "-q printed {err:?}");
    let leave = server.stderr.wait_for("leave hush");
    assert!(leave.contains("1000"), "{leave:?}");
}

#[test]
fn closed_port_exits_1_with_one_error_line() {
    let addr = dead_addr();
    let mut cli = client_bin(&[&url(addr, "x"), "--no-stdin"]);
    let (code, out, err) = cli.finish();
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(err.len(), 1, "expected one line, got {err:?}");
    assert!(err[0].contains("error"), "{err:?}");
    assert!(err[0].contains(&addr.to_string()), "{err:?} lacks {addr}");
}

#[test]
fn http_error_answer_exits_1_and_names_the_status() {
    let (addr, _head) = raw_server(|tcp, _| {
        let _ = tcp.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    });
    let mut cli = client_bin(&[&url(addr, "x"), "--no-stdin"]);
    let (code, _, err) = cli.finish();
    assert_eq!(code, 1, "stderr: {err:?}");
    let errors = matching(&err, "error");
    assert_eq!(errors.len(), 1, "{err:?}");
    assert!(errors[0].contains("401"), "{err:?}");
}

#[test]
fn header_origin_and_protocol_reach_the_server() {
    let (addr, head) = raw_server(|tcp, head| {
        let key = header(head, "sec-websocket-key").expect("a websocket key");
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        write!(
            tcp,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\
             Sec-WebSocket-Protocol: superchat\r\n\r\n"
        )
        .unwrap();
        tcp.write_all(&[0x81, 7]).unwrap();
        tcp.write_all(b"welcome").unwrap();
        // --count 1: the client closes with 1000; answer it.
        let (op, payload) = read_client_frame(tcp).expect("a close frame");
        assert_eq!((op, &payload[..2]), (8, &1000u16.to_be_bytes()[..]));
        let _ = tcp.write_all(&[0x88, 2, 0x03, 0xe8]);
    });
    let mut cli = client_bin(&[
        &url(addr, "x"),
        "--header",
        "X-Test: 1",
        "--origin",
        "http://board.example",
        "--protocol",
        "chat",
        "--protocol",
        "superchat",
        "--count",
        "1",
        "--no-stdin",
    ]);
    let (code, out, err) = cli.finish();
    let head = head
        .recv_timeout(WAIT)
        .expect("the raw server saw a request");
    assert_eq!(header(&head, "x-test").as_deref(), Some("1"), "{head}");
    assert_eq!(
        header(&head, "origin").as_deref(),
        Some("http://board.example"),
        "{head}"
    );
    assert_eq!(
        header(&head, "sec-websocket-protocol").as_deref(),
        Some("chat, superchat"),
        "{head}"
    );
    assert_eq!(code, 0, "stderr: {err:?}");
    assert_eq!(out, ["welcome"]);
    assert!(
        matching(&err, "connected to")[0].contains("(protocol superchat)"),
        "{err:?}"
    );
}

#[test]
fn on_connect_goes_first() {
    let s = setup(&[
        "--on-connect",
        "login",
        "--on-connect",
        "subscribe",
        "--send",
        "after",
        "--no-stdin",
    ]);
    assert_eq!(recv_text(&s.watcher), "login");
    assert_eq!(recv_text(&s.watcher), "subscribe");
    assert_eq!(recv_text(&s.watcher), "after");
}

#[test]
fn reconnect_after_restart_sends_on_connect_and_queued_lines_in_order() {
    let directed = |n: &str| format!(r#"{{"receiver":"watcher","n":"{n}"}}"#);
    let hello = directed("hello");
    let (mut first, addr) = server_bin(&[]);
    let mut cli = client_bin(&[
        &url(addr, "cli"),
        "--reconnect",
        "--retry-interval",
        "0.2",
        "--on-connect",
        &hello,
    ]);
    cli.stderr.wait_for("connected to");
    let watcher = Client::connect(&url(addr, "watcher")).unwrap();
    assert_eq!(
        recv_text(&watcher),
        hello,
        "--on-connect on the first connect"
    );

    // The server dies; lines typed while it is down are queued.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    cli.stderr.wait_for("disconnected");
    cli.stderr.wait_for("reconnecting in");
    for n in ["1", "2", "3"] {
        cli.send_line(&directed(n));
    }

    // A new server on the same port: the client comes back by itself.
    let (_second, addr2) = server_bin(&["--bind", &addr.to_string()]);
    assert_eq!(addr2, addr);
    let watcher = Client::connect(&url(addr, "watcher")).unwrap();
    for want in [&hello, &directed("1"), &directed("2"), &directed("3")] {
        assert_eq!(&recv_text(&watcher), want);
    }
    let again = cli.stderr.wait_for("connected to");
    assert!(again.contains(&url(addr, "cli")), "{again:?}");
    assert!(cli.is_running());
}

#[test]
fn max_retries_gives_up_with_exit_1() {
    let addr = dead_addr();
    let mut cli = client_bin(&[
        &url(addr, "x"),
        "--reconnect",
        "--max-retries",
        "2",
        "--retry-interval",
        "0.1",
        "--no-stdin",
    ]);
    let (code, _, err) = cli.finish();
    assert_eq!(code, 1, "stderr: {err:?}");
    let retries = matching(&err, "reconnecting in");
    assert_eq!(retries.len(), 2, "{err:?}");
    assert!(retries[0].contains("attempt 1") && retries[1].contains("attempt 2"));
    assert_eq!(
        matching(&err, "error").len(),
        3,
        "three failed attempts: {err:?}"
    );
}
