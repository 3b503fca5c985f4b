//! The server side of the WebSocket opening handshake (RFC 6455 §4.2).
//!
//! Given a parsed request head, decide: a plain HTTP request (answered by
//! [`web`](crate::web)), a valid upgrade (answer 101 and hand the socket to
//! a session), or a broken upgrade (answer 4xx with a short reason). Pure
//! functions, called on the connection's own thread.

use data_encoding::BASE64;
use tungstenite::handshake::derive_accept_key;

use crate::http::{Request, Response};

/// What a request head asks for.
#[derive(Debug)]
pub enum Verdict {
    /// Not a WebSocket upgrade: a plain HTTP request.
    Plain,
    /// A valid upgrade; send this 101 response.
    Upgrade(Response),
    /// A broken upgrade; send this error response.
    Reject(Response),
}

/// Checks an upgrade request and builds the answer.
pub fn check(req: &Request) -> Verdict {
    if !req.has_token("upgrade", "websocket") {
        return Verdict::Plain;
    }
    match accept_key(req) {
        Ok(accept) => Verdict::Upgrade(
            Response {
                status: 101,
                headers: Vec::new(),
                body: Vec::new(),
            }
            .with("Upgrade", "websocket")
            .with("Connection", "Upgrade")
            .with("Sec-WebSocket-Accept", accept),
        ),
        Err(resp) => Verdict::Reject(resp),
    }
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
        let Verdict::Upgrade(resp) = check(&req(&GOOD)) else {
            panic!("not accepted")
        };
        let text = String::from_utf8(resp.to_bytes(false)).unwrap();
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }

    #[test]
    fn plain_requests_are_not_upgrades() {
        assert!(matches!(check(&req(&[("Host", "x")])), Verdict::Plain));
    }

    #[test]
    fn broken_upgrades_are_rejected_with_a_status() {
        let mut no_key = GOOD.to_vec();
        no_key.pop();
        let mut old = GOOD.to_vec();
        old[2] = ("Sec-WebSocket-Version", "8");
        for (headers, status) in [(no_key, 400), (old, 426)] {
            match check(&req(&headers)) {
                Verdict::Reject(r) => assert_eq!(r.status, status),
                other => panic!("{other:?}"),
            }
        }
    }
}
