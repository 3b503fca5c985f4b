//! `wss://` with the test CA in `tests/certs/`: a round trip between two
//! library clients through a TLS server; a client without the CA refuses
//! the certificate (and the server counts the failed handshake); the
//! `wshub-client` binary trusts the server with `--ca-file`, connects with
//! `--insecure` after a warning, and reports a verification failure as one
//! line naming the host, exit 1; the `wshub-server` binary refuses a
//! missing, unreadable, non-certificate or mismatched file and a wrong
//! PKCS#12 password with one line naming the file, exit 2, and serves
//! `wss://` from a PKCS#12 bundle; a plain `ws://` client on the `wss://`
//! port fails at once while TLS clients connected at the same time carry
//! on.
#![cfg(feature = "tls")]

mod common;

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use wshub::tls::ServerTls;
use wshub::{Client, ClientConfig, Error, Message, Mode, Server, ServerConfig};

const SERVER: &str = env!("CARGO_BIN_EXE_wshub-server");

/// A file in `tests/certs/`.
fn cert(name: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "certs", name]
        .iter()
        .collect();
    path.to_str().expect("a UTF-8 path").to_string()
}

/// A library server speaking `wss://` with the test certificate.
fn tls_server(cfg: ServerConfig) -> Server {
    let tls = ServerTls::from_pem_files(cert("server.pem").as_ref(), cert("server.key").as_ref())
        .expect("load the test certificate");
    server(cfg.tls(Some(tls)))
}

/// `wss://localhost:PORT/PATH`: the name the certificate is issued for.
fn wss(addr: SocketAddr, path: &str) -> String {
    format!("wss://localhost:{}/{path}", addr.port())
}

/// A client config that trusts the test CA.
fn trusting() -> ClientConfig {
    let ca = fs::read(cert("ca.pem")).expect("read the test CA");
    ClientConfig::default().ca_pem(vec![ca])
}

/// Connects a client that trusts the test CA and waits for the join.
fn join_tls(server: &Server, path: &str) -> Client {
    let before = server.stats().connections_total;
    let client = Client::connect_with_config(&wss(server.local_addr(), path), trusting())
        .expect("a wss client trusting the test CA connects");
    wait_for(
        || server.stats().connections_total > before,
        "the hub to see the join",
    );
    client
}

/// How many handshakes the server refused for `reason`.
fn rejected(server: &Server, reason: &str) -> u64 {
    server.stats().rejected.get(reason).copied().unwrap_or(0)
}

/// The only stderr line that reports an error; no panic anywhere.
fn one_error_line(stderr: &[String]) -> &str {
    assert!(
        !stderr
            .iter()
            .any(|l| l.contains("panicked") || l.contains("RUST_BACKTRACE")),
        "a panic instead of an error line: {stderr:?}"
    );
    let errors: Vec<&String> = stderr.iter().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "expected one error line, got {stderr:?}");
    errors[0]
}

#[test]
fn wss_round_trip_between_two_clients() {
    let server = tls_server(ServerConfig::default());
    let alice = join_tls(&server, "lobby/alice");
    let bob = join_tls(&server, "lobby/bob");
    assert_eq!(server.clients().len(), 2);

    alice.send_text("hello over tls").unwrap();
    assert_eq!(recv_text(&bob), "hello over tls");
    let blob: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    bob.send_binary(blob.clone()).unwrap();
    assert_eq!(
        alice.recv_timeout(WAIT).expect("the binary message"),
        Message::binary(blob),
        "a 100 kB binary message crosses TLS unchanged"
    );
    assert_eq!(rejected(&server, "tls handshake"), 0);
}

#[test]
fn a_client_without_the_ca_refuses_the_certificate() {
    let server = tls_server(ServerConfig::default());
    let err = Client::connect(&wss(server.local_addr(), "untrusting"))
        .expect_err("a certificate from an unknown CA must be refused");
    match &err {
        Error::Tls(msg) => assert!(
            msg.to_lowercase().contains("verify"),
            "the reason should say verification failed: {msg}"
        ),
        other => panic!("expected Error::Tls, got {other:?}"),
    }
    assert!(
        err.to_string().contains("localhost"),
        "names the host: {err}"
    );

    // The server saw a failed TLS handshake, nobody joined, and a client
    // that trusts the CA still gets in.
    wait_for(
        || rejected(&server, "tls handshake") == 1,
        "the failed TLS handshake to be counted",
    );
    assert!(server.clients().is_empty());
    let trusted = join_tls(&server, "trusted");
    assert_eq!(server.clients().len(), 1);
    drop(trusted);
}

#[test]
fn an_insecure_library_client_connects_without_the_ca() {
    let server = tls_server(ServerConfig::default().mode(Mode::Echo));
    let cfg = ClientConfig::default().insecure(true);
    let client = Client::connect_with_config(&wss(server.local_addr(), "careless"), cfg)
        .expect("--insecure skips verification");
    client.send_text("echo me").unwrap();
    assert_eq!(recv_text(&client), "echo me");
}

#[test]
fn client_binary_trusts_the_server_with_ca_file() {
    let (server, addr) = server_bin(&[
        "--tls-cert",
        &cert("server.pem"),
        "--tls-key",
        &cert("server.key"),
    ]);
    let watcher = Client::connect_with_config(&wss(addr, "r/watcher"), trusting()).unwrap();
    server.stderr.wait_for("join watcher ");

    let mut cli = client_bin(&[&wss(addr, "r/cli"), "--ca-file", &cert("ca.pem")]);
    let line = cli.stderr.wait_for("connected to");
    assert!(line.contains(&wss(addr, "r/cli")), "{line:?}");
    server.stderr.wait_for("join cli ");
    cli.send_line("typed over tls");
    assert_eq!(recv_text(&watcher), "typed over tls");
    watcher.send_text("answer over tls").unwrap();
    cli.stdout.wait_for("answer over tls");

    cli.close_stdin();
    let (code, _, err) = cli.finish();
    assert_eq!(code, 0, "stderr: {err:?}");
}

#[test]
fn client_binary_verification_failure_is_one_line_and_exit_1() {
    let server = tls_server(ServerConfig::default());
    let mut cli = client_bin(&[&wss(server.local_addr(), "cli"), "--no-stdin"]);
    let (code, out, err) = cli.finish();
    assert_eq!(code, 1, "stderr: {err:?}");
    assert!(out.is_empty(), "nothing on stdout: {out:?}");
    assert_eq!(err.len(), 1, "one line on stderr: {err:?}");
    let line = one_error_line(&err);
    assert!(line.starts_with("wshub-client: error:"), "{line:?}");
    assert!(line.contains("localhost"), "says which host: {line:?}");
    assert!(line.to_lowercase().contains("verif"), "says why: {line:?}");
    assert!(server.clients().is_empty());
}

#[test]
fn client_binary_insecure_connects_and_warns() {
    let server = tls_server(ServerConfig::default());
    let watcher = join_tls(&server, "r/watcher");
    let mut cli = client_bin(&[&wss(server.local_addr(), "r/cli"), "--insecure"]);
    cli.stderr.wait_for("connected to");
    wait_online(&server, "cli");
    cli.send_line("unverified but encrypted");
    assert_eq!(recv_text(&watcher), "unverified but encrypted");

    cli.close_stdin();
    let (code, _, err) = cli.finish();
    assert_eq!(code, 0, "stderr: {err:?}");
    let warning = err
        .iter()
        .position(|l| l.contains("warning") && l.contains("insecure"))
        .unwrap_or_else(|| panic!("no --insecure warning on stderr: {err:?}"));
    let connected = err.iter().position(|l| l.contains("connected to")).unwrap();
    assert!(warning < connected, "the warning comes first: {err:?}");
}

/// Runs the server binary with `args`, expecting exit 2 and one error
/// line that names `file`, before anything listens.
fn refuses_to_start(args: &[&str], file: &str) -> String {
    let mut all = vec!["--bind", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let (code, out, err) = run_bin(SERVER, &all, &[]);
    assert_eq!(code, 2, "args {args:?}: stderr {err:?}");
    assert!(out.is_empty(), "{out:?}");
    assert!(
        !err.iter().any(|l| l.contains("listening")),
        "must fail before binding: {err:?}"
    );
    let line = one_error_line(&err).to_string();
    assert!(line.contains(file), "the error names {file}: {line:?}");
    line
}

#[test]
fn server_binary_refuses_bad_tls_files_with_exit_2() {
    let key = cert("server.key");
    let pem = cert("server.pem");

    let missing = temp_path("missing.pem");
    let missing = missing.to_str().unwrap();
    let line = refuses_to_start(&["--tls-cert", missing, "--tls-key", &key], missing);
    assert!(line.contains("certificate"), "{line:?}");
    refuses_to_start(&["--tls-cert", &pem, "--tls-key", missing], missing);

    // A file the server cannot read. Permission bits do not stop root, so
    // there a directory stands in for an unreadable file.
    let unreadable = temp_path("unreadable.pem");
    fs::copy(&pem, &unreadable).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&unreadable, fs::Permissions::from_mode(0o000)).unwrap();
    }
    if fs::read(&unreadable).is_ok() {
        fs::remove_file(&unreadable).unwrap();
        fs::create_dir(&unreadable).unwrap();
    }
    let path = unreadable.to_str().unwrap();
    refuses_to_start(&["--tls-cert", path, "--tls-key", &key], path);
    let _ = fs::remove_file(&unreadable).or_else(|_| fs::remove_dir(&unreadable));

    // A key where the certificate should be.
    refuses_to_start(&["--tls-cert", &key, "--tls-key", &key], &key);

    // A key that does not belong to the certificate.
    let other = cert("other.key");
    let line = refuses_to_start(&["--tls-cert", &pem, "--tls-key", &other], &other);
    assert!(line.contains("does not belong"), "{line:?}");

    // A PKCS#12 bundle with the wrong password.
    let p12 = cert("server.p12");
    let line = refuses_to_start(&["--tls-pkcs12", &p12, "--tls-password", "wrong"], &p12);
    assert!(line.contains("password"), "{line:?}");
}

#[test]
fn server_binary_serves_wss_from_pkcs12() {
    let (server, addr) = server_bin(&[
        "--tls-pkcs12",
        &cert("server.p12"),
        "--tls-password",
        "secret",
        "--mode",
        "echo",
    ]);
    let listening = server.stderr.seen("listening on");
    assert!(
        listening.contains(&format!("listening on wss://{addr}")),
        "{listening:?}"
    );
    let client = Client::connect_with_config(&wss(addr, "p12"), trusting())
        .expect("the PKCS#12 identity verifies against the test CA");
    client.send_text("via pkcs12").unwrap();
    assert_eq!(recv_text(&client), "via pkcs12");
}

#[test]
fn plain_ws_on_the_wss_port_fails_cleanly_while_tls_clients_carry_on() {
    let server = tls_server(ServerConfig::default());
    let a = join_tls(&server, "ok/a");
    let b = join_tls(&server, "ok/b");

    let started = Instant::now();
    let cfg = ClientConfig::default().connect_timeout(Duration::from_secs(5));
    let result = Client::connect_with_config(&url(server.local_addr(), "ok/plain"), cfg);
    assert!(result.is_err(), "a plain client must not get in");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "fails at once, not by a timeout: {:?}",
        started.elapsed()
    );

    // Plain bytes that are not even HTTP: dropped too.
    let mut raw = std::net::TcpStream::connect(server.local_addr()).unwrap();
    raw.set_read_timeout(Some(WAIT)).unwrap();
    std::io::Write::write_all(&mut raw, b"hello?\r\n\r\n").unwrap();
    let answer = read_to_end_lossy(&mut raw);
    assert!(!answer.contains("HTTP/1.1 101"), "{answer:?}");

    wait_for(
        || rejected(&server, "tls handshake") == 2,
        "both failed TLS handshakes to be counted",
    );
    assert_eq!(server.clients().len(), 2);
    assert_pair_works(&a, &b);
}
