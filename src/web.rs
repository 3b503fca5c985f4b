//! Plain HTTP answers on the WebSocket port: the browser page and the JSON
//! API, for requests that are not an upgrade.
//!
//! | path           | answer                                         | off with   |
//! |----------------|------------------------------------------------|------------|
//! | `/`            | the chat page (`src/web/index.html`)           | `--no-web` |
//! | `/api/clients` | JSON list of online clients                    | `--no-api` |
//! | `/api/stats`   | JSON counters                                  | `--no-api` |
//!
//! Anything else is 404; a known path with a method other than GET or
//! HEAD is 405. When the server has a token, the API answers 401 unless
//! the request carries it (`Authorization: Bearer TOKEN` or `?token=TOKEN`,
//! compared in constant time by [`auth`]); the page itself
//! holds no secret and is served to anyone, and asks for the token.
//!
//! The page is one self-contained file compiled into the binary (no CDN, no
//! external fonts), so it works on a LAN without internet. Its
//! Content-Security-Policy allows exactly its own inline script and style
//! (by SHA-256 hash), connections back to this host, and nothing else: a
//! message that smuggled markup into the page could not run code even if
//! the page inserted it as HTML, which it never does.
//!
//! # Threads
//!
//! [`answer`] runs on the connection's own thread and touches no shared
//! state; the API endpoints ask the hub thread for a snapshot through the
//! [`ServerHandle`], like the console's `/list` and `/stats` do.

mod sha256;

use std::collections::BTreeMap;
use std::fmt::{Display, Write as _};
use std::sync::OnceLock;
use std::time::SystemTime;

use data_encoding::BASE64;

use crate::auth;
use crate::config::ServerConfig;
use crate::console::utc_timestamp;
use crate::http::{Request, Response};
use crate::hub::ClientInfo;
use crate::server::ServerHandle;
use crate::stats::Stats;

/// The browser page, with its script and style inline.
const PAGE: &str = include_str!("web/index.html");

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Page,
    Clients,
    Stats,
}

/// The answer to a plain (non-upgrade) HTTP request.
///
/// Every answer carries `X-Content-Type-Options: nosniff`, a
/// Content-Security-Policy, `Referrer-Policy: no-referrer` and a
/// `Cache-Control` (`no-store` for everything but the page).
pub fn answer(req: &Request, cfg: &ServerConfig, server: &ServerHandle) -> Response {
    let path = req.target.split_once('?').map_or(&*req.target, |(p, _)| p);
    let resp = match route(path, cfg) {
        None => not_found(path, cfg),
        Some(_) if !matches!(req.method.as_str(), "GET" | "HEAD") => {
            Response::text(405, "only GET and HEAD are served here").with("Allow", "GET, HEAD")
        }
        Some(Route::Page) => page(req),
        Some(_) if !auth::authorized(req, cfg.token.as_deref()) => Response::text(
            401,
            "this hub needs its token: Authorization: Bearer TOKEN or ?token=TOKEN",
        )
        .with("WWW-Authenticate", "Bearer realm=\"wshub\""),
        Some(Route::Clients) => json(clients_json(&server.clients(), SystemTime::now())),
        Some(Route::Stats) => json(stats_json(&server.stats())),
    };
    with_security_headers(resp)
}

/// The route for `path`, if that part of the server is turned on.
fn route(path: &str, cfg: &ServerConfig) -> Option<Route> {
    match path {
        "/" if cfg.web => Some(Route::Page),
        "/api/clients" if cfg.api => Some(Route::Clients),
        "/api/stats" if cfg.api => Some(Route::Stats),
        _ => None,
    }
}

/// 404, saying why when the path exists but is turned off.
fn not_found(path: &str, cfg: &ServerConfig) -> Response {
    let detail = match path {
        "/" if !cfg.web => "the page is turned off on this hub (--no-web)",
        "/api/clients" | "/api/stats" if !cfg.api => "the API is turned off on this hub (--no-api)",
        _ => "nothing here; WebSocket clients connect to ws://HOST:PORT/NAME",
    };
    Response::text(404, detail)
}

/// The page, with a policy that allows its own inline code and
/// connections back to the host it was loaded from.
fn page(req: &Request) -> Response {
    let connect = match req.header("host").filter(|h| is_plain_host(h)) {
        Some(host) => format!("'self' ws://{host} wss://{host}"),
        None => "'self'".to_string(),
    };
    let (script, style) = inline_hashes();
    let csp = format!(
        "default-src 'none'; script-src '{script}'; style-src '{style}'; \
         connect-src {connect}; img-src data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    );
    Response {
        status: 200,
        headers: vec![
            ("Content-Type", "text/html; charset=utf-8".into()),
            ("Cache-Control", "no-cache".into()),
            ("Content-Security-Policy", csp),
        ],
        body: PAGE.as_bytes().to_vec(),
    }
}

/// `true` for a `Host` header value that is safe to echo into the policy:
/// a name or address and an optional port, nothing else.
fn is_plain_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// The CSP sources (`sha256-…`) of the page's inline script and style,
/// computed once.
fn inline_hashes() -> &'static (String, String) {
    static HASHES: OnceLock<(String, String)> = OnceLock::new();
    HASHES.get_or_init(|| {
        let source = |tag: &str| {
            let body = inline_body(PAGE, tag).expect("the page has one inline script and style");
            format!("sha256-{}", BASE64.encode(&sha256::sha256(body.as_bytes())))
        };
        (source("script"), source("style"))
    })
}

/// The text between `<tag>` and `</tag>` (the first such element).
fn inline_body<'a>(html: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = html.find(&open)? + open.len();
    let len = html[start..].find(&format!("</{tag}>"))?;
    Some(&html[start..start + len])
}

/// A JSON answer that no cache keeps.
fn json(body: String) -> Response {
    Response {
        status: 200,
        headers: vec![
            ("Content-Type", "application/json".into()),
            ("Cache-Control", "no-store".into()),
        ],
        body: body.into_bytes(),
    }
}

/// Adds the headers every answer carries.
fn with_security_headers(mut resp: Response) -> Response {
    let has = |resp: &Response, name: &str| resp.headers.iter().any(|(k, _)| *k == name);
    if !has(&resp, "Cache-Control") {
        resp = resp.with("Cache-Control", "no-store");
    }
    if !has(&resp, "Content-Security-Policy") {
        resp = resp.with(
            "Content-Security-Policy",
            "default-src 'none'; frame-ancestors 'none'",
        );
    }
    resp.with("X-Content-Type-Options", "nosniff")
        .with("Referrer-Policy", "no-referrer")
        .with("X-Frame-Options", "DENY")
}

/// `[{"id":1,"name":"alice","room":"","peer":"…","since":"…","connected_secs":5,"protocol":null}, …]`.
///
/// `since` is the server's UTC wall clock; `connected_secs` is measured on
/// the server too, so it is right even when a board's clock is not.
fn clients_json(clients: &[ClientInfo], now: SystemTime) -> String {
    let mut out = String::from("[");
    for (i, c) in clients.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let secs = now.duration_since(c.since).unwrap_or_default().as_secs();
        let mut obj = Object::new(&mut out);
        obj.number("id", c.id);
        obj.string("name", &c.name);
        obj.string("room", &c.room);
        obj.string("peer", &c.peer.to_string());
        obj.string("since", &utc_timestamp(c.since).replacen(' ', "T", 1));
        obj.number("connected_secs", secs);
        match &c.protocol {
            Some(p) => obj.string("protocol", p),
            None => obj.null("protocol"),
        }
        obj.end();
    }
    out.push(']');
    out
}

/// The counters as one flat object, keyed like the fields of [`Stats`];
/// `dropped` and `rejected` are objects from reason to count.
fn stats_json(stats: &Stats) -> String {
    let mut out = String::new();
    let mut obj = Object::new(&mut out);
    obj.number("uptime_secs", stats.uptime().as_secs());
    obj.number("connections_now", stats.connections_now);
    obj.number("connections_total", stats.connections_total);
    obj.number("messages_in", stats.messages_in);
    obj.number("bytes_in", stats.bytes_in);
    obj.number("messages_out", stats.messages_out);
    obj.number("bytes_out", stats.bytes_out);
    obj.number("written_by_hub", stats.written_by_hub);
    obj.number("written_by_writer", stats.written_by_writer);
    obj.number("dropped_total", stats.dropped_total());
    obj.counts("dropped", &stats.dropped);
    obj.number("rejected_total", stats.rejected.values().sum::<u64>());
    obj.counts("rejected", &stats.rejected);
    obj.end();
    out
}

/// Writes one JSON object member by member.
struct Object<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Object<'a> {
    fn new(out: &'a mut String) -> Self {
        out.push('{');
        Object { out, first: true }
    }

    /// Writes `"key":` after a comma when needed.
    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        crate::json::write_str(self.out, key);
        self.out.push(':');
    }

    fn string(&mut self, key: &str, value: &str) {
        self.key(key);
        crate::json::write_str(self.out, value);
    }

    fn number(&mut self, key: &str, value: impl Display) {
        self.key(key);
        let _ = write!(self.out, "{value}");
    }

    fn null(&mut self, key: &str) {
        self.key(key);
        self.out.push_str("null");
    }

    fn counts(&mut self, key: &str, counts: &BTreeMap<&'static str, u64>) {
        self.key(key);
        let mut inner = Object::new(self.out);
        for (reason, n) in counts {
            inner.number(reason, n);
        }
        inner.end();
    }

    fn end(self) {
        self.out.push('}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_page_has_exactly_one_inline_script_and_style() {
        for tag in ["script", "style"] {
            assert_eq!(PAGE.matches(&format!("<{tag}")).count(), 1, "<{tag}>");
            assert!(inline_body(PAGE, tag).is_some_and(|b| !b.trim().is_empty()));
        }
        // The policy would block these, so the page must not use them.
        for banned in [
            " style=",
            " onclick=",
            " onload=",
            "innerHTML",
            "http://",
            "https://",
            "eval(",
        ] {
            assert!(!PAGE.contains(banned), "the page uses {banned:?}");
        }
    }

    #[test]
    fn hashes_are_csp_sources() {
        let (script, style) = inline_hashes();
        for h in [script, style] {
            assert!(h.starts_with("sha256-") && h.len() == 7 + 44, "{h}");
        }
        assert_ne!(script, style);
    }

    #[test]
    fn only_plain_hosts_reach_the_policy() {
        assert!(is_plain_host("board:8000"));
        assert!(is_plain_host("[::1]:8000"));
        assert!(!is_plain_host(""));
        assert!(!is_plain_host("a; script-src *"));
        assert!(!is_plain_host("a'b"));
    }

    #[test]
    fn clients_as_json() {
        let since = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_230_245_678);
        let c = ClientInfo {
            id: 7,
            name: "a\"b".into(),
            room: "lobby".into(),
            peer: "127.0.0.1:5000".parse().unwrap(),
            since,
            protocol: None,
        };
        let now = since + Duration::from_secs(90);
        assert_eq!(
            clients_json(&[c], now),
            r#"[{"id":7,"name":"a\"b","room":"lobby","peer":"127.0.0.1:5000","since":"2026-11-21T03:04:05.678Z","connected_secs":90,"protocol":null}]"#
        );
        assert_eq!(clients_json(&[], now), "[]");
    }

    #[test]
    fn stats_as_json() {
        let mut stats = Stats::new();
        stats.messages_in = 3;
        stats.drop("slow consumer", 2);
        stats.reject("bad handshake");
        let text = stats_json(&stats);
        assert!(text.starts_with(r#"{"uptime_secs":0,"connections_now":0,"#));
        assert!(text.contains(r#""messages_in":3,"#));
        assert!(text.contains(r#""dropped_total":2,"dropped":{"slow consumer":2}"#));
        assert!(text.ends_with(r#""rejected_total":1,"rejected":{"bad handshake":1}}"#));
    }
}
