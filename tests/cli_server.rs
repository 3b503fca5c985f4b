//! The `wshub-server` binary from the outside, as a spawned process on real
//! sockets: `--help`/`--version`, usage errors (exit 2, one error line),
//! settings from the environment, the listening line with the real port,
//! join/leave log lines with millisecond timestamps (also in `--log-file`),
//! every console command through a pipe to stdin, end of stdin not
//! stopping the server, and graceful shutdown with close 1001 and exit 0 on
//! `/quit` and SIGTERM, also when a peer never answers the close.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use wshub::{Client, RecvTimeoutError};

const SERVER: &str = env!("CARGO_BIN_EXE_wshub-server");

/// The only stderr line that reports an error, checked to be free of
/// panics and backtraces.
fn one_error_line(stderr: &[String]) -> &str {
    let errors: Vec<&String> = stderr.iter().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "expected one error line, got {stderr:?}");
    assert!(
        !stderr
            .iter()
            .any(|l| l.contains("panicked") || l.contains("RUST_BACKTRACE")),
        "a panic instead of an error line: {stderr:?}"
    );
    errors[0]
}

/// Waits until a client's connection has ended and returns its close code
/// and reason.
fn closed_with(client: &Client) -> (u16, String) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.recv_timeout(left) {
            Ok(_) => continue,
            Err(RecvTimeoutError::Closed) => break,
            Err(RecvTimeoutError::Timeout) => panic!("the client was not closed"),
        }
    }
    let info = client.close_info().expect("close info after the end");
    (info.code, info.reason.clone())
}

/// Connects a library client at `path` and waits for the server's join
/// log line for `name`.
fn join_bin(server: &Proc, addr: std::net::SocketAddr, path: &str, name: &str) -> Client {
    let client = Client::connect(&url(addr, path)).expect("connect");
    server.stderr.wait_for(&format!("join {name} "));
    client
}

#[test]
fn help_and_version_exit_0() {
    let (code, out, _) = run_bin(SERVER, &["--help"], &[]);
    assert_eq!(code, 0);
    let text = out.join("\n");
    for needle in [
        "usage: wshub-server",
        "--bind",
        "--mode",
        "/kick",
        "exit codes",
    ] {
        assert!(text.contains(needle), "--help lacks {needle:?}:\n{text}");
    }

    let (code, out, _) = run_bin(SERVER, &["--version"], &[]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        vec![format!("wshub-server {}", env!("CARGO_PKG_VERSION"))]
    );
}

#[test]
fn unknown_flag_is_one_error_line_and_exit_2() {
    let (code, out, err) = run_bin(SERVER, &["--frobnicate"], &[]);
    assert_eq!(code, 2);
    assert!(out.is_empty(), "nothing on stdout: {out:?}");
    assert!(one_error_line(&err).contains("--frobnicate"), "{err:?}");
}

#[test]
fn bad_values_are_one_error_line_and_exit_2() {
    let cases: [(&[&str], &[&str]); 3] = [
        (
            &["--max-message-size", "lots"],
            &["max-message-size", "lots"],
        ),
        (&["--mode", "nope"], &["mode", "nope"]),
        (&["--log-level", "loud"], &["log-level", "loud"]),
    ];
    for (args, needles) in cases {
        let (code, _, err) = run_bin(SERVER, args, &[]);
        assert_eq!(code, 2, "{args:?} should be a usage error: {err:?}");
        let line = one_error_line(&err);
        for needle in needles {
            assert!(line.contains(needle), "{args:?}: {line:?} lacks {needle:?}");
        }
    }
}

#[test]
fn environment_variable_sets_a_flag() {
    let (_server, addr) = server_bin_env(&[], &[("WSHUB_MODE", "echo")]);
    let client = Client::connect(&url(addr, "solo")).unwrap();
    client.send_text("ping").unwrap();
    assert_eq!(recv_text(&client), "ping", "WSHUB_MODE=echo did not echo");

    let (code, _, err) = run_bin(SERVER, &[], &[("WSHUB_MODE", "nope")]);
    assert_eq!(code, 2);
    assert!(one_error_line(&err).contains("WSHUB_MODE"), "{err:?}");
}

#[test]
fn listening_line_shows_the_real_port() {
    let (server, addr) = server_bin(&[]);
    assert_ne!(addr.port(), 0);
    let line = server.stderr.seen("listening on");
    assert!(
        line.ends_with(&format!("listening on ws://{addr}")),
        "{line:?}"
    );
    assert_timestamped(&line);
    TcpStream::connect(addr).expect("the logged port accepts connections");
}

#[test]
fn join_and_leave_are_logged_with_timestamp_name_room_peer_and_code() {
    let (server, addr) = server_bin(&[]);
    let mut raw = raw_ws(addr, "lobby/alice");
    let peer = raw.local_addr().unwrap().to_string();

    let join = server.stderr.wait_for("join alice");
    assert_timestamped(&join);
    assert!(join.contains("room /lobby"), "{join:?}");
    assert!(join.contains(&peer), "{join:?} lacks {peer}");

    let mut close = 4000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye now");
    raw.write_all(&frame(true, 8, &close)).unwrap();
    assert_eq!(read_close_code(&mut raw), Some(4000));

    let leave = server.stderr.wait_for("leave alice");
    assert_timestamped(&leave);
    assert!(leave.contains("room /lobby"), "{leave:?}");
    assert!(leave.contains(&peer), "{leave:?} lacks {peer}");
    assert!(leave.contains("4000"), "no close code in {leave:?}");
    assert!(leave.contains("bye now"), "no close reason in {leave:?}");
}

/// A log line without its leading timestamp (each log sink takes its own
/// clock reading, so the milliseconds may differ between stderr and file).
fn body(line: &str) -> &str {
    assert_timestamped(line);
    &line["YYYY-MM-DD HH:MM:SS.mmmZ".len()..]
}

#[test]
fn log_file_receives_the_same_lines() {
    let path = temp_path("server.log");
    let (server, addr) = server_bin(&["--log-file", path.to_str().unwrap()]);
    let client = Client::connect(&url(addr, "filed")).unwrap();
    let join = server.stderr.wait_for("join filed");
    client.close(1000, "");
    let leave = server.stderr.wait_for("leave filed");
    let listening = format!("listening on ws://{addr}");

    let mut text = String::new();
    wait_for(
        || {
            text = std::fs::read_to_string(&path).unwrap_or_default();
            text.contains(body(&leave))
        },
        "the leave line in the log file",
    );
    let _ = std::fs::remove_file(&path);
    let bodies: Vec<&str> = text.lines().map(body).collect();
    assert!(bodies.iter().any(|l| l.ends_with(&listening)), "{text}");
    assert!(bodies.contains(&body(&join)), "{join:?} not in:\n{text}");
    assert!(bodies.contains(&body(&leave)), "{leave:?} not in:\n{text}");
}

#[test]
fn console_line_reaches_every_client() {
    let (mut server, addr) = server_bin(&[]);
    let a = join_bin(&server, addr, "lobby/a", "a");
    let b = join_bin(&server, addr, "b", "b");
    server.send_line("hello from the console");
    assert_eq!(recv_text(&a), "hello from the console");
    assert_eq!(recv_text(&b), "hello from the console");
}

#[test]
fn console_list_shows_name_room_address_and_since() {
    let (mut server, addr) = server_bin(&[]);
    let raw = raw_ws(addr, "lobby/alice");
    let peer = raw.local_addr().unwrap().to_string();
    server.stderr.wait_for("join alice");

    server.send_line("/list");
    server.stdout.wait_for("1 online");
    let line = server.stdout.wait_for("alice");
    assert!(line.contains("room /lobby"), "{line:?}");
    assert!(line.contains(&peer), "{line:?} lacks {peer}");
    let since = line
        .split("since ")
        .nth(1)
        .unwrap_or_else(|| panic!("no 'since' in {line:?}"));
    assert_timestamped(&format!("{since} "));
}

#[test]
fn console_to_reaches_only_that_name() {
    let (mut server, addr) = server_bin(&[]);
    let alice = join_bin(&server, addr, "alice", "alice");
    let bob = join_bin(&server, addr, "bob", "bob");
    server.send_line("/to alice just for you");
    assert_eq!(recv_text(&alice), "just for you");
    server.stdout.wait_for("sent to 1 client(s) named alice");
    // The console's commands reach the hub in order: a broadcast after the
    // /to must be the first thing bob sees.
    server.send_line("marker for everyone");
    assert_eq!(recv_text(&bob), "marker for everyone");

    server.send_line("/to nobody hello?");
    server.stdout.wait_for("no client named nobody");
}

#[test]
fn console_kick_closes_with_1008_and_the_reason() {
    let (mut server, addr) = server_bin(&[]);
    let carol = join_bin(&server, addr, "carol", "carol");
    let dave = join_bin(&server, addr, "dave", "dave");
    server.send_line("/kick carol too many messages");
    assert_eq!(closed_with(&carol), (1008, "too many messages".into()));
    server.stdout.wait_for("kicked 1 client(s) named carol");
    let leave = server.stderr.wait_for("leave carol");
    assert!(leave.contains("1008"), "{leave:?}");

    // The others stay connected.
    server.send_line("still here");
    assert_eq!(recv_text(&dave), "still here");
}

#[test]
fn console_stats_prints_connections_messages_bytes_dropped() {
    let (mut server, addr) = server_bin(&["--mode", "echo"]);
    let client = join_bin(&server, addr, "counter", "counter");
    client.send_text("abc").unwrap();
    assert_eq!(recv_text(&client), "abc");

    server.send_line("/stats");
    let conns = server.stdout.wait_for("connections:");
    assert!(
        conns.contains("1 now") && conns.contains("1 total"),
        "{conns:?}"
    );
    let inbound = server.stdout.wait_for("in:");
    assert!(inbound.contains("1 messages, 3 bytes"), "{inbound:?}");
    let outbound = server.stdout.wait_for("out:");
    assert!(outbound.contains("1 messages, 3 bytes"), "{outbound:?}");
    let dropped = server.stdout.wait_for("dropped:");
    assert!(dropped.contains("dropped: 0"), "{dropped:?}");
}

#[test]
fn console_help_and_unknown_command() {
    let (mut server, _addr) = server_bin(&[]);
    server.send_line("/help");
    for needle in ["/list", "/to NAME", "/kick NAME", "/stats", "/quit"] {
        server.stdout.wait_for(needle);
    }
    server.send_line("/frobnicate now");
    let line = server.stdout.wait_for("/frobnicate");
    assert!(line.contains("unknown command"), "{line:?}");
}

#[test]
fn end_of_stdin_does_not_stop_the_server() {
    let (mut server, addr) = server_bin(&[]);
    server.close_stdin();
    let a = join_bin(&server, addr, "room/a", "a");
    let b = join_bin(&server, addr, "room/b", "b");
    a.send_text("after eof").unwrap();
    assert_eq!(recv_text(&b), "after eof");
    assert!(server.is_running(), "the server stopped at end of stdin");
}

#[test]
fn quit_closes_clients_with_1001_and_exits_0() {
    let (mut server, addr) = server_bin(&[]);
    let a = join_bin(&server, addr, "a", "a");
    let b = join_bin(&server, addr, "b", "b");
    server.send_line("/quit");
    assert_eq!(closed_with(&a).0, 1001);
    assert_eq!(closed_with(&b).0, 1001);
    assert_eq!(server.wait_exit(), 0);
}

#[test]
fn sigterm_closes_with_1001_and_exits_0_even_if_a_peer_never_answers() {
    let (mut server, addr) = server_bin(&[]);
    let polite = join_bin(&server, addr, "polite", "polite");
    // A raw peer that reads the close frame but never answers it.
    let mut mute = raw_ws(addr, "mute");
    server.stderr.wait_for("join mute");

    let start = Instant::now();
    server.terminate();
    assert_eq!(closed_with(&polite).0, 1001);
    assert_eq!(read_close_code(&mut mute), Some(1001));
    let code = server.wait_exit();
    let took = start.elapsed();
    assert_eq!(code, 0, "stderr:\n{}", server.stderr.all().join("\n"));
    assert!(took < Duration::from_secs(3), "exit took {took:?}");
}
