//! Who may connect. With a token, a handshake without it or with a wrong
//! one is answered 401 (read on a raw socket), logged by the server binary
//! with the peer's address and counted as "unauthorized"; the right token
//! gets in as `Authorization: Bearer` or `?token=`, also when the server
//! binary takes it from `WSHUB_TOKEN`, and the client binary sends it with
//! `--token`. With allowed origins, a listed origin and a missing `Origin`
//! get in and any other origin gets 403. Subprotocols: the first protocol
//! the client offers that the server speaks is chosen and echoed
//! (`Client::protocol()`, the client binary's `connected to` line), a
//! client offering only others gets 400, and one offering none gets in
//! without one.

mod common;

use std::net::SocketAddr;

use common::*;
use wshub::{Client, ClientConfig, Error, Server, ServerConfig};

const CLIENT: &str = env!("CARGO_BIN_EXE_wshub-client");
const SECRET: &str = "s3cret-token";

/// How many handshakes the server refused for `reason`.
fn rejected(server: &Server, reason: &str) -> u64 {
    server.stats().rejected.get(reason).copied().unwrap_or(0)
}

/// The message of a failed handshake; fails the test for anything else.
fn handshake_error(result: Result<Client, Error>) -> String {
    match result {
        Err(Error::Handshake(msg)) => msg,
        Err(other) => panic!("expected Error::Handshake, got {other:?}"),
        Ok(_) => panic!("the handshake should have been refused"),
    }
}

/// The status a raw upgrade request for `path` with `headers` gets.
fn status(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
    http_status(&upgrade_raw(addr, path, headers).1)
}

#[test]
fn missing_or_wrong_token_gets_401_logged_with_the_peer() {
    let (server, addr) = server_bin(&["--token", SECRET]);
    let wrong_bearer = "Bearer not-the-token".to_string();
    let longer = format!("Bearer {SECRET}x");
    let basic = format!("Basic {SECRET}");
    let cases: [(&str, &[(&str, &str)]); 5] = [
        ("a", &[]),
        ("a", &[("Authorization", &wrong_bearer)]),
        ("a", &[("Authorization", &longer)]),
        ("a", &[("Authorization", &basic)]),
        ("a?token=s3cret", &[]),
    ];
    for (path, headers) in cases {
        let (mut tcp, head) = upgrade_raw(addr, path, headers);
        assert_eq!(http_status(&head), 401, "{path} {headers:?}: {head}");
        assert_eq!(
            head_header(&head, "WWW-Authenticate").as_deref(),
            Some("Bearer")
        );
        let body = read_to_end_lossy(&mut tcp);
        assert!(body.contains("token"), "says why: {body:?}");
        let peer = tcp.local_addr().unwrap();
        let line = server
            .stderr
            .wait_for(&format!("refused handshake from {peer}: "));
        assert!(line.contains("401"), "{line:?}");
    }

    // The right token gets in; the secret itself never reaches the log.
    let cfg = ClientConfig::default().token(Some(SECRET.into()));
    let _ok = Client::connect_with_config(&url(addr, "a"), cfg).expect("right token");
    server.stderr.wait_for("join a ");
    let log = server.stderr.all();
    assert!(
        !log.iter().any(|l| l.contains(SECRET)),
        "the token leaked into the log: {log:?}"
    );
    assert_eq!(
        log.iter().filter(|l| l.contains("join ")).count(),
        1,
        "only the right token joined: {log:?}"
    );
}

#[test]
fn right_token_by_header_or_query_gets_in() {
    let server = server(ServerConfig::default().token(Some(SECRET.into())));
    let addr = server.local_addr();
    let by_header = ClientConfig::default().token(Some(SECRET.into()));
    let a = Client::connect_with_config(&url(addr, "r/a"), by_header).expect("Bearer token");
    let b = Client::connect(&url(addr, &format!("r/b?token={SECRET}"))).expect("?token=");
    wait_for(|| server.clients().len() == 2, "both to join");
    let names: Vec<String> = server.clients().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["a", "b"], "?token= does not change the name");
    assert_pair_works(&a, &b);

    let msg = handshake_error(Client::connect(&url(addr, "r/c")));
    assert!(msg.contains("401"), "{msg}");
    let wrong = ClientConfig::default().token(Some("guess".into()));
    let msg = handshake_error(Client::connect_with_config(&url(addr, "r/d"), wrong));
    assert!(msg.contains("401"), "{msg}");
    wait_for(
        || rejected(&server, "unauthorized") == 2,
        "two refusals counted as unauthorized",
    );
    assert_eq!(server.clients().len(), 2);
    assert_pair_works(&a, &b);
}

#[test]
fn server_binary_takes_the_token_from_the_environment() {
    let (server, addr) = server_bin_env(&[], &[("WSHUB_TOKEN", SECRET)]);
    assert_eq!(status(addr, "x", &[]), 401);
    let bearer = format!("Bearer {SECRET}");
    let (_ok, head) = upgrade_raw(addr, "x", &[("Authorization", &bearer)]);
    assert_eq!(http_status(&head), 101, "{head}");
    server.stderr.wait_for("join x ");
}

#[test]
fn client_binary_sends_its_token() {
    let server = server(ServerConfig::default().token(Some(SECRET.into())));
    let addr = server.local_addr();
    let cfg = ClientConfig::default().token(Some(SECRET.into()));
    let watcher = Client::connect_with_config(&url(addr, "r/watcher"), cfg).unwrap();
    wait_online(&server, "watcher");

    // --token on the command line.
    let mut cli = client_bin(&[&url(addr, "r/cli"), "--token", SECRET, "--send", "by flag"]);
    cli.stderr.wait_for("connected to");
    assert_eq!(recv_text(&watcher), "by flag");
    cli.close_stdin();
    assert_eq!(cli.wait_exit(), 0);

    // WSHUB_TOKEN in the client's environment.
    let mut cli = Proc::spawn_env(
        CLIENT,
        &[&url(addr, "r/env"), "--send", "by env"],
        &[("WSHUB_TOKEN", SECRET)],
    );
    cli.stderr.wait_for("connected to");
    assert_eq!(recv_text(&watcher), "by env");
    cli.close_stdin();
    assert_eq!(cli.wait_exit(), 0);

    // No token: one error line naming the status, exit 1.
    let (code, _, err) = run_bin(CLIENT, &[&url(addr, "r/none"), "--no-stdin"], &[]);
    assert_eq!(code, 1, "{err:?}");
    let errors: Vec<&String> = err.iter().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{err:?}");
    assert!(errors[0].contains("401"), "{err:?}");
    assert_eq!(rejected(&server, "unauthorized"), 1);
}

#[test]
fn only_allowed_origins_get_in_and_clients_without_origin_do() {
    let allowed = "http://board.local:8000";
    let server = server(ServerConfig::default().allowed_origins(vec![allowed.into()]));
    let addr = server.local_addr();

    let listed = ClientConfig::default().origin(Some(allowed.into()));
    let a = Client::connect_with_config(&url(addr, "r/a"), listed).expect("listed origin");
    let b = Client::connect(&url(addr, "r/b")).expect("no Origin header");
    wait_for(|| server.clients().len() == 2, "both to join");

    let (mut tcp, head) = upgrade_raw(addr, "r/evil", &[("Origin", "http://evil.example")]);
    assert_eq!(http_status(&head), 403, "{head}");
    let body = read_to_end_lossy(&mut tcp);
    assert!(body.contains("http://evil.example"), "names it: {body:?}");
    let other = ClientConfig::default().origin(Some("http://board.local:9999".into()));
    let msg = handshake_error(Client::connect_with_config(&url(addr, "r/c"), other));
    assert!(msg.contains("403"), "{msg}");

    wait_for(|| rejected(&server, "origin") == 2, "two origin refusals");
    assert_eq!(server.clients().len(), 2);
    assert_pair_works(&a, &b);
}

#[test]
fn a_refused_origin_is_logged_by_the_server_binary() {
    let (server, addr) = server_bin(&["--allow-origin", "http://board.local:8000"]);
    let (tcp, head) = upgrade_raw(addr, "x", &[("Origin", "http://evil.example")]);
    assert_eq!(http_status(&head), 403, "{head}");
    let peer = tcp.local_addr().unwrap();
    let line = server
        .stderr
        .wait_for(&format!("refused handshake from {peer}: "));
    assert!(
        line.contains("403") && line.contains("http://evil.example"),
        "{line:?}"
    );
    let (_ok, head) = upgrade_raw(addr, "y", &[("Origin", "http://board.local:8000")]);
    assert_eq!(http_status(&head), 101, "{head}");
}

#[test]
fn the_first_offered_protocol_the_server_speaks_is_chosen_and_echoed() {
    let spoken = vec!["chat.v2".to_string(), "json".to_string()];
    let server = server(ServerConfig::default().protocols(spoken));
    let addr = server.local_addr();

    // The client's order decides, not the server's.
    let offer = ["xml", "json", "chat.v2"].map(String::from).to_vec();
    let client =
        Client::connect_with_config(&url(addr, "p"), ClientConfig::default().protocols(offer))
            .expect("a supported protocol is offered");
    assert_eq!(client.protocol(), Some("json"));
    wait_online(&server, "p");
    assert_eq!(server.clients()[0].protocol.as_deref(), Some("json"));

    // On the wire: exactly the chosen one is echoed.
    let (_raw, head) = upgrade_raw(addr, "q", &[("Sec-WebSocket-Protocol", "xml, chat.v2")]);
    assert_eq!(http_status(&head), 101, "{head}");
    assert_eq!(
        head_header(&head, "Sec-WebSocket-Protocol").as_deref(),
        Some("chat.v2")
    );

    // Offering none: accepted without a protocol.
    let plain = Client::connect(&url(addr, "none")).expect("no offer is fine");
    assert_eq!(plain.protocol(), None);
    let (_raw, head) = upgrade_raw(addr, "none2", &[]);
    assert_eq!(http_status(&head), 101, "{head}");
    assert_eq!(head_header(&head, "Sec-WebSocket-Protocol"), None);

    // Offering only unsupported ones: 400, saying what is supported.
    let (mut tcp, head) = upgrade_raw(addr, "bad", &[("Sec-WebSocket-Protocol", "xml, soap")]);
    assert_eq!(http_status(&head), 400, "{head}");
    let body = read_to_end_lossy(&mut tcp);
    assert!(
        body.contains("chat.v2") && body.contains("json"),
        "{body:?}"
    );
    let only_xml = ClientConfig::default().protocols(vec!["xml".into()]);
    let msg = handshake_error(Client::connect_with_config(&url(addr, "bad2"), only_xml));
    assert!(msg.contains("400"), "{msg}");
    wait_for(
        || rejected(&server, "subprotocol") == 2,
        "two subprotocol refusals",
    );
}

#[test]
fn a_server_without_protocols_ignores_an_offer_and_the_client_refuses_that() {
    let server = server(ServerConfig::default());
    let (_raw, head) = upgrade_raw(
        server.local_addr(),
        "raw",
        &[("Sec-WebSocket-Protocol", "xml")],
    );
    assert_eq!(http_status(&head), 101, "{head}");
    assert_eq!(head_header(&head, "Sec-WebSocket-Protocol"), None);

    // Like a browser, wshub's client treats an offer the server ignored as
    // a failed handshake, and says so.
    let cfg = ClientConfig::default().protocols(vec!["xml".into()]);
    let err = Client::connect_with_config(&url(server.local_addr(), "p"), cfg)
        .expect_err("an offered subprotocol must be chosen");
    assert!(err.to_string().contains("no subprotocol"), "{err}");
}

#[test]
fn client_binary_shows_the_chosen_protocol() {
    let server = server(ServerConfig::default().protocols(vec!["chat.v2".into(), "json".into()]));
    let addr = server.local_addr();
    let mut cli = client_bin(&[&url(addr, "cli"), "--protocol", "xml", "--protocol", "json"]);
    let line = cli.stderr.wait_for("connected to");
    assert_eq!(
        line,
        format!("connected to {} (protocol json)", url(addr, "cli"))
    );
    wait_online(&server, "cli");
    assert_eq!(server.clients()[0].protocol.as_deref(), Some("json"));
    cli.close_stdin();
    assert_eq!(cli.wait_exit(), 0);

    let (code, _, err) = run_bin(
        CLIENT,
        &[&url(addr, "cli2"), "--protocol", "xml", "--no-stdin"],
        &[],
    );
    assert_eq!(code, 1, "{err:?}");
    assert!(
        err.iter().any(|l| l.contains("error") && l.contains("400")),
        "{err:?}"
    );
}
