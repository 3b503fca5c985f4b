//! Plain HTTP answers on the WebSocket port, for requests that are not an
//! upgrade. Called on the connection's own thread; touches no shared state.

use crate::config::ServerConfig;
use crate::http::{Request, Response};
use crate::server::ServerHandle;

/// The answer to a plain (non-upgrade) HTTP request.
pub fn answer(req: &Request, _cfg: &ServerConfig, _server: &ServerHandle) -> Response {
    match req.method.as_str() {
        "GET" | "HEAD" => Response::text(
            426,
            "this port speaks WebSocket: connect with ws://HOST:PORT/NAME",
        )
        .with("Upgrade", "websocket"),
        _ => Response::text(405, "only GET and HEAD are served here").with("Allow", "GET, HEAD"),
    }
}
