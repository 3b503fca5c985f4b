//! The server side of the WebSocket opening handshake (RFC 6455 §4.2).
//!
//! Given a parsed request head, decide: a plain HTTP request (answered by
//! [`web`](crate::web)), a valid upgrade (answer 101 and hand the socket to
//! a session), or a broken upgrade (answer 4xx with a short reason). Pure
//! functions, called on the connection's own thread.

use data_encoding::BASE64;
use tungstenite::handshake::derive_accept_key;

use crate::auth;
use crate::config::ServerConfig;
use crate::http::{Request, Response};

/// What a request head asks for.
#[derive(Debug)]
pub enum Verdict {
    /// Not a WebSocket upgrade: a plain HTTP request.
    Plain,
    /// A valid upgrade: send this 101 response; `protocol` is the chosen
    /// subprotocol, if any.
    Upgrade {
        /// The 101 Switching Protocols answer.
        response: Response,
        /// The subprotocol chosen from the client's offer.
        protocol: Option<String>,
    },
    /// A refused upgrade: send this error response; `reason` is the short
    /// label the statistics count it under.
    Reject {
        /// The HTTP error answer.
        response: Response,
        /// Counter label, e.g. "unauthorized".
        reason: &'static str,
    },
}

/// Checks an upgrade request against RFC 6455 and the server's rules
/// (token, allowed origins, subprotocols) and builds the answer.
pub fn check(req: &Request, cfg: &ServerConfig) -> Verdict {
    if !req.has_token("upgrade", "websocket") {
        return Verdict::Plain;
    }
    let reject = |response, reason| Verdict::Reject { response, reason };
    let accept = match accept_key(req) {
        Ok(accept) => accept,
        Err(resp) => return reject(resp, "bad handshake"),
    };
    if !auth::authorized(req, cfg.token.as_deref()) {
        let resp = Response::text(401, "missing or wrong token").with("WWW-Authenticate", "Bearer");
        return reject(resp, "unauthorized");
    }
    if !auth::origin_allowed(req, &cfg.allowed_origins) {
        let origin = req.header("origin").unwrap_or_default();
        return reject(
            Response::text(403, &format!("origin {origin} is not allowed")),
            "origin",
        );
    }
    let protocol = match choose_protocol(req, &cfg.protocols) {
        Ok(p) => p,
        Err(resp) => return reject(resp, "subprotocol"),
    };
    let mut response = Response {
        status: 101,
        headers: Vec::new(),
        body: Vec::new(),
    }
    .with("Upgrade", "websocket")
    .with("Connection", "Upgrade")
    .with("Sec-WebSocket-Accept", accept);
    if let Some(p) = &protocol {
        response = response.with("Sec-WebSocket-Protocol", p.clone());
    }
    Verdict::Upgrade { response, protocol }
}

/// Validates the upgrade headers and derives `Sec-WebSocket-Accept`.
fn accept_key(req: &Request) -> Result<String, Response> {
    let bad = |why: &str| Response::text(400, why);
    if req.method != "GET" {
        return Err(bad("a WebSocket upgrade must use GET"));
    }
    if req.version < 1 {
        return Err(bad("a WebSocket upgrade needs HTTP/1.1"));
    }
    if !req.has_token("connection", "upgrade") {
        return Err(bad("missing 'Connection: Upgrade'"));
    }
    if req.header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(
            Response::text(426, "only Sec-WebSocket-Version 13 is supported")
                .with("Sec-WebSocket-Version", "13"),
        );
    }
    let key = req.header("sec-websocket-key").map(str::trim).unwrap_or("");
    match BASE64.decode(key.as_bytes()) {
        Ok(raw) if raw.len() == 16 => Ok(derive_accept_key(key.as_bytes())),
        _ => Err(bad("missing or malformed Sec-WebSocket-Key")),
    }
}

/// Picks the first protocol the client offers that the server speaks
/// (RFC 6455 §4.2.2). A client that offers none gets none; a client that
/// offers only protocols the server does not speak is refused, because
/// accepting it without one would only make a browser fail later.
fn choose_protocol(req: &Request, supported: &[String]) -> Result<Option<String>, Response> {
    let offered: Vec<&str> = req
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-protocol"))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() || supported.is_empty() {
        return Ok(None);
    }
    match offered.iter().find(|p| supported.iter().any(|s| s == *p)) {
        Some(p) => Ok(Some(p.to_string())),
        None => Err(Response::text(
            400,
            &format!(
                "no supported subprotocol offered (offered: {}; supported: {})",
                offered.join(", "),
                supported.join(", ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            target: "/a".into(),
            version: 1,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    const GOOD: [(&str, &str); 4] = [
        ("Upgrade", "websocket"),
        ("Connection", "keep-alive, Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn accepts_the_rfc_example() {
        let Verdict::Upgrade { response, .. } = check(&req(&GOOD), &ServerConfig::default()) else {
            panic!("not accepted")
        };
        let text = String::from_utf8(response.to_bytes(false)).unwrap();
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }

    #[test]
    fn plain_requests_are_not_upgrades() {
        let plain = check(&req(&[("Host", "x")]), &ServerConfig::default());
        assert!(matches!(plain, Verdict::Plain));
    }

    #[test]
    fn broken_upgrades_are_rejected_with_a_status() {
        let mut no_key = GOOD.to_vec();
        no_key.pop();
        let mut old: Vec<(&str, &str)> = GOOD.to_vec();
        old[2] = ("Sec-WebSocket-Version", "8");
        for (headers, status) in [(no_key, 400), (old, 426)] {
            match check(&req(&headers), &ServerConfig::default()) {
                Verdict::Reject { response, .. } => assert_eq!(response.status, status),
                other => panic!("{other:?}"),
            }
        }
    }
}

#[cfg(test)]
mod protocol_tests {
    use super::*;

    fn offer(list: &str) -> Request {
        Request {
            method: "GET".into(),
            target: "/".into(),
            version: 1,
            headers: vec![("Sec-WebSocket-Protocol".into(), list.into())],
        }
    }

    #[test]
    fn first_offered_supported_protocol_wins() {
        let supported = vec!["chat".to_string(), "json".to_string()];
        let chosen = choose_protocol(&offer("xml, json, chat"), &supported).unwrap();
        assert_eq!(chosen.as_deref(), Some("json"));
        assert_eq!(choose_protocol(&offer(""), &supported).unwrap(), None);
        assert_eq!(choose_protocol(&offer("xml"), &[]).unwrap(), None);
        assert_eq!(
            choose_protocol(&offer("xml"), &supported)
                .unwrap_err()
                .status,
            400
        );
    }
}
