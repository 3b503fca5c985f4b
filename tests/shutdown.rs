//! Graceful shutdown through the library: every client gets a close frame
//! with 1001 (going away) after what was already sent to it, shutdown
//! returns within a few seconds even when a peer never answers, the
//! listening socket is closed, and no connection thread is left running.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{join, raw_ws, read_close_code, recv_text, server};
use wshub::{Client, Message, RecvTimeoutError, Server, ServerConfig};

/// How long a shutdown may take when some peer does not cooperate.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(3);

/// Asserts that `client` was closed by the server with 1001.
fn assert_going_away(client: &Client) {
    assert_eq!(
        client.recv_timeout(common::WAIT),
        Err(RecvTimeoutError::Closed)
    );
    let info = client.close_info().expect("close info after the end");
    assert_eq!(info.code, 1001, "{info}");
    assert!(info.by_peer, "the server started the close: {info}");
}

/// Shuts `server` down, failing if that takes longer than
/// [`SHUTDOWN_LIMIT`].
fn shutdown_in_time(server: Server) {
    let started = Instant::now();
    server.shutdown();
    let took = started.elapsed();
    assert!(took < SHUTDOWN_LIMIT, "shutdown took {took:?}");
}

#[test]
fn every_client_gets_1001_after_what_was_sent_before() {
    let server = server(ServerConfig::default());
    let handle = server.handle();
    let addr = server.local_addr();
    let clients = [
        join(&server, "a"),
        join(&server, "lobby/b"),
        join(&server, "kitchen/c"),
    ];
    server.broadcast(Message::text("last words"));

    shutdown_in_time(server);
    for client in &clients {
        assert_eq!(recv_text(client), "last words");
        assert_going_away(client);
    }
    assert_eq!(handle.active_connections(), 0);
    assert!(TcpStream::connect(addr).is_err(), "still accepting");
    // The handle of a stopped server answers without hanging.
    assert!(handle.clients().is_empty());
    assert_eq!(handle.send_to("a", Message::text("late")), 0);
}

#[test]
fn a_peer_that_never_answers_the_close_does_not_hold_shutdown() {
    let server = server(ServerConfig::default());
    let handle = server.handle();
    let polite = join(&server, "polite");
    let mut mute = raw_ws(server.local_addr(), "mute");
    common::wait_for(
        || server.stats().connections_now == 2,
        "both clients to join",
    );

    shutdown_in_time(server);
    assert_going_away(&polite);
    assert_eq!(read_close_code(&mut mute), Some(1001), "the mute peer too");
    assert_eq!(handle.active_connections(), 0);
}

#[test]
fn a_peer_that_never_reads_does_not_hold_shutdown() {
    // Room for 8 MiB of backlog, so that the peer is not closed as a slow
    // consumer first; loopback buffers take only about 4 MiB of it.
    let big = 1 << 20;
    let cfg = ServerConfig::default().send_queue_bytes(16 << 20);
    let server = server(cfg);
    let handle = server.handle();
    let polite = join(&server, "polite");
    let _stuck = raw_ws(server.local_addr(), "stuck");
    common::wait_for(
        || server.stats().connections_now == 2,
        "both clients to join",
    );
    for _ in 0..8 {
        assert_eq!(server.send_to("stuck", Message::binary(vec![0; big])), 1);
    }

    shutdown_in_time(server);
    assert_going_away(&polite);
    assert_eq!(
        handle.active_connections(),
        0,
        "the session of the peer that never reads still runs"
    );
}

#[test]
fn a_half_sent_handshake_does_not_hold_shutdown() {
    let server = server(ServerConfig::default());
    let handle = server.handle();
    let mut slow = TcpStream::connect(server.local_addr()).unwrap();
    let half_a_head = b"GET /slow HTTP/1.1\r\nHost: x\r\n";
    slow.write_all(half_a_head).unwrap();
    common::wait_for(
        || handle.active_connections() == 1,
        "the server to take the connection",
    );

    shutdown_in_time(server);
    assert_eq!(
        handle.active_connections(),
        0,
        "a connection thread still runs after shutdown returned"
    );
}

#[test]
fn shutdown_from_a_handle_ends_wait() {
    let server = server(ServerConfig::default());
    let handle = server.handle();
    let client = join(&server, "c");

    let (done_tx, done) = mpsc::channel();
    let waiter = thread::spawn(move || {
        server.wait();
        let _ = done_tx.send(());
    });
    handle.shutdown();
    assert_going_away(&client);
    assert!(
        done.recv_timeout(SHUTDOWN_LIMIT).is_ok(),
        "wait() did not return"
    );
    waiter.join().unwrap();
    assert_eq!(handle.active_connections(), 0);
}

#[test]
fn dropping_the_server_shuts_it_down() {
    let server = server(ServerConfig::default());
    let handle = server.handle();
    let client = join(&server, "c");
    drop(server);
    assert_going_away(&client);
    assert_eq!(handle.active_connections(), 0);
}
