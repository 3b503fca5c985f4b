//! Plain HTTP on the WebSocket port: `/api/clients` and `/api/stats` follow
//! clients as they come and go; unknown paths get 404 and other methods
//! 405; HEAD has no body; every answer carries its content and security
//! headers; `web(false)`, `api(false)` and the token switch parts off; and
//! plain requests never disturb the WebSocket clients.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::{join, recv_text, server, wait_for, WAIT};
use wshub::{Message, ServerConfig};

/// A parsed HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request with `extra` header lines and reads the answer.
fn request(addr: SocketAddr, method: &str, target: &str, extra: &[&str]) -> Reply {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\n");
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    send_raw(addr, &head)
}

/// Sends `head` as it is and reads the whole answer (the server closes
/// after each).
fn send_raw(addr: SocketAddr, head: &str) -> Reply {
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).expect("read the answer");
    parse(&String::from_utf8(raw).expect("UTF-8 answer"))
}

fn get(addr: SocketAddr, target: &str) -> Reply {
    request(addr, "GET", target, &[])
}

fn parse(raw: &str) -> Reply {
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete head");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .map(|l| l.split_once(": ").expect("a header line"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Asserts that `body` is valid JSON. The crate's own checker validates a
/// whole message before it trusts its `receiver`, so wrapping the body in
/// a directed envelope and asking for the receiver back is a full check.
fn assert_json(body: &str) {
    let wrapped = format!(r#"{{"receiver":"ok","body":{body}}}"#);
    assert_eq!(
        wshub::json::receiver(&wrapped).as_deref(),
        Some("ok"),
        "not JSON: {body}"
    );
}

fn api_json(addr: SocketAddr, path: &str) -> String {
    let reply = get(addr, path);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_json(&reply.body);
    reply.body
}

#[test]
fn clients_and_stats_follow_clients_as_they_come_and_go() {
    let server = server(ServerConfig::default());
    let addr = server.local_addr();
    assert_eq!(api_json(addr, "/api/clients"), "[]");
    let stats = api_json(addr, "/api/stats");
    assert!(
        stats.contains(r#""connections_now":0,"connections_total":0,"#),
        "{stats}"
    );

    let alice = join(&server, "lobby/alice");
    let bob = join(&server, "lobby/bob");
    let clients = api_json(addr, "/api/clients");
    assert!(
        clients.starts_with(r#"[{"id":"#)
            && clients.contains(r#""name":"alice","room":"lobby","peer":"127.0.0.1:"#)
            && clients.contains(r#""name":"bob","room":"lobby","peer":"127.0.0.1:"#)
            && clients.contains(r#""since":"20"#)
            && clients.contains(r#""connected_secs":"#),
        "{clients}"
    );

    alice.send_text("hello").unwrap();
    assert_eq!(recv_text(&bob), "hello");
    let stats = api_json(addr, "/api/stats");
    for part in [
        r#""connections_now":2,"connections_total":2,"#,
        r#""messages_in":1,"bytes_in":5,"messages_out":1,"bytes_out":5,"#,
        r#""dropped_total":0,"dropped":{},"#,
        r#""uptime_secs":"#,
    ] {
        assert!(stats.contains(part), "{part} not in {stats}");
    }

    alice.close(1000, "bye");
    wait_for(
        || !api_json(addr, "/api/clients").contains("alice"),
        "alice to leave the list",
    );
    assert!(api_json(addr, "/api/clients").contains(r#""name":"bob""#));
    let stats = api_json(addr, "/api/stats");
    assert!(
        stats.contains(r#""connections_now":1,"connections_total":2,"#),
        "{stats}"
    );
}

#[test]
fn rejected_handshakes_show_up_in_stats_by_reason() {
    let server = server(ServerConfig::default());
    let addr = server.local_addr();
    let reply = request(
        addr,
        "GET",
        "/x",
        &["Upgrade: websocket", "Connection: Upgrade"],
    );
    assert!((400..500).contains(&reply.status), "{reply:?}");
    wait_for(
        || api_json(addr, "/api/stats").contains(r#""rejected_total":1,"rejected":{"#),
        "the refused handshake to be counted",
    );
}

#[test]
fn unknown_paths_are_404_and_other_methods_405() {
    let server = server(ServerConfig::default());
    let addr = server.local_addr();
    for path in ["/nope", "/alice", "/api", "/api/clients/x", "/index.html"] {
        assert_eq!(get(addr, path).status, 404, "{path}");
    }
    for (method, path) in [
        ("POST", "/api/stats"),
        ("PUT", "/"),
        ("DELETE", "/api/clients"),
        ("OPTIONS", "/"),
    ] {
        let reply = request(addr, method, path, &["Content-Length: 0"]);
        assert_eq!(reply.status, 405, "{method} {path}");
        assert_eq!(reply.header("Allow"), Some("GET, HEAD"));
    }
    assert_eq!(
        request(addr, "POST", "/nope", &["Content-Length: 0"]).status,
        404
    );
}

#[test]
fn head_has_the_headers_of_get_and_no_body() {
    let server = server(ServerConfig::default());
    let addr = server.local_addr();
    for path in ["/", "/api/clients", "/api/stats", "/nope"] {
        let full = get(addr, path);
        let head = request(addr, "HEAD", path, &[]);
        assert_eq!(head.status, full.status, "{path}");
        assert_eq!(head.body, "", "{path}");
        assert_eq!(
            head.header("Content-Length"),
            Some(full.body.len().to_string().as_str()),
            "{path}"
        );
        assert_eq!(head.header("Content-Type"), full.header("Content-Type"));
    }
}

#[test]
fn answers_carry_content_and_security_headers() {
    let server = server(ServerConfig::default());
    let addr = server.local_addr();

    let page = get(addr, "/?name=alice");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        page.header("Content-Length"),
        Some(page.body.len().to_string().as_str())
    );
    assert!(page.body.starts_with("<!doctype html>"));
    let csp = page.header("Content-Security-Policy").unwrap();
    for part in [
        "default-src 'none'",
        "script-src 'sha256-",
        "style-src 'sha256-",
        &format!("connect-src 'self' ws://{addr} wss://{addr};"),
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{part} not in {csp}");
    }
    assert_eq!(page.header("X-Content-Type-Options"), Some("nosniff"));

    for path in ["/api/clients", "/api/stats"] {
        let api = get(addr, path);
        assert_eq!(
            api.header("Content-Type"),
            Some("application/json"),
            "{path}"
        );
        assert_eq!(api.header("Cache-Control"), Some("no-store"), "{path}");
        assert_eq!(api.header("X-Content-Type-Options"), Some("nosniff"));
        assert_eq!(
            api.header("Content-Security-Policy"),
            Some("default-src 'none'; frame-ancestors 'none'")
        );
    }
    let missing = get(addr, "/nope");
    assert_eq!(missing.header("X-Content-Type-Options"), Some("nosniff"));
    assert_eq!(missing.header("Cache-Control"), Some("no-store"));
}

#[test]
fn a_hostile_host_header_does_not_reach_the_policy() {
    let server = server(ServerConfig::default());
    let page = send_raw(
        server.local_addr(),
        "GET / HTTP/1.1\r\nHost: x; script-src 'unsafe-inline'\r\n\r\n",
    );
    assert_eq!(page.status, 200);
    let csp = page.header("Content-Security-Policy").unwrap();
    assert!(csp.contains("connect-src 'self';"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
}

#[test]
fn the_page_and_the_api_can_be_turned_off() {
    let no_web = server(ServerConfig::default().web(false));
    let reply = get(no_web.local_addr(), "/");
    assert_eq!(reply.status, 404);
    assert!(reply.body.contains("--no-web"), "{}", reply.body);
    assert_eq!(get(no_web.local_addr(), "/api/stats").status, 200);

    let no_api = server(ServerConfig::default().api(false));
    assert_eq!(get(no_api.local_addr(), "/").status, 200);
    for path in ["/api/clients", "/api/stats"] {
        let reply = get(no_api.local_addr(), path);
        assert_eq!(reply.status, 404, "{path}");
        assert!(reply.body.contains("--no-api"), "{}", reply.body);
    }

    let neither = server(ServerConfig::default().web(false).api(false));
    for path in ["/", "/api/clients", "/api/stats"] {
        assert_eq!(get(neither.local_addr(), path).status, 404, "{path}");
    }
    // WebSocket clients are unaffected.
    let a = join(&neither, "a");
    let b = join(&neither, "b");
    a.send_text("still here").unwrap();
    assert_eq!(recv_text(&b), "still here");
}

#[test]
fn with_a_token_the_api_needs_it_and_the_page_does_not() {
    let server = server(ServerConfig::default().token(Some("s3cret".into())));
    let addr = server.local_addr();
    for path in ["/api/clients", "/api/stats"] {
        for (target, extra) in [
            (path.to_string(), None),
            (format!("{path}?token=s3cre"), None),
            (format!("{path}?token=s3cret2"), None),
            (path.to_string(), Some("Authorization: Bearer wrong")),
            (path.to_string(), Some("Authorization: Basic s3cret")),
        ] {
            let reply = request(addr, "GET", &target, extra.as_slice());
            assert_eq!(reply.status, 401, "{target} {extra:?}");
            assert_eq!(
                reply.header("WWW-Authenticate"),
                Some("Bearer realm=\"wshub\"")
            );
            assert!(!reply.body.contains('['), "no data leaks: {}", reply.body);
        }
        let by_query = get(addr, &format!("{path}?token=s3cret"));
        assert_eq!(by_query.status, 200, "{path}?token=");
        assert_json(&by_query.body);
        let by_header = request(addr, "GET", path, &["Authorization: Bearer s3cret"]);
        assert_eq!(by_header.status, 200, "{path} with bearer");
    }
    assert_eq!(get(addr, "/").status, 200, "the page itself needs no token");
    assert_eq!(get(addr, "/nope").status, 404);
}

#[test]
fn plain_http_never_disturbs_connected_clients() {
    let server = server(ServerConfig::default());
    let addr = server.local_addr();
    let alice = join(&server, "alice");
    let bob = join(&server, "bob");
    let requests: [(&str, &str); 7] = [
        ("GET", "/"),
        ("HEAD", "/"),
        ("GET", "/api/clients"),
        ("GET", "/api/stats"),
        ("GET", "/bob"),
        ("POST", "/"),
        ("GET", "/alice?name=bob"),
    ];
    for round in 0..5 {
        for (method, path) in requests {
            let reply = request(addr, method, path, &["Content-Length: 0"]);
            assert!(reply.status < 500, "{method} {path}: {reply:?}");
            alice.send_text(format!("{round} {method} {path}")).unwrap();
            assert_eq!(recv_text(&bob), format!("{round} {method} {path}"));
        }
    }
    // Nothing else reached either client: the next thing each reads is a
    // fresh broadcast.
    server.broadcast(Message::text("marker"));
    assert_eq!(recv_text(&alice), "marker");
    assert_eq!(recv_text(&bob), "marker");
    let stats = server.stats();
    assert_eq!((stats.connections_now, stats.connections_total), (2, 2));
    wait_for(
        || server.handle().active_connections() == 2,
        "the HTTP connection threads to end",
    );
    bob.send_text("bob is fine").unwrap();
    assert_eq!(recv_text(&alice), "bob is fine");
}
