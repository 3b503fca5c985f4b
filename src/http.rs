//! Just enough HTTP/1.1 for the opening handshake and plain answers.
//!
//! The connection's own thread reads the request head with a deadline and
//! a size bound (slow or huge heads cannot hold a thread or memory for
//! long), parses it with `httparse`, and writes whole responses. tungstenite
//! can do the server handshake itself, but it answers a bad request by
//! dropping the connection and has no deadline, so the hub does it here.

use std::io::{self, ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::stream::Stream;

/// Most header lines accepted in one request.
const MAX_HEADERS: usize = 64;
/// How often a waiting handshake looks at the server's stop flag.
pub(crate) const STOP_CHECK: Duration = Duration::from_millis(200);

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The request target, e.g. `/lobby/alice?name=x`.
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Header lines in order; values decoded lossily as UTF-8.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `true` when the comma-separated header `name` lists `token`
    /// (case-insensitive), e.g. `Connection: keep-alive, Upgrade`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// Why no request head could be read.
#[derive(Debug)]
pub enum HeadError {
    /// The deadline passed first (slow client).
    Timeout,
    /// The peer closed before sending a whole head.
    Closed,
    /// The head is longer than allowed (answer 431).
    TooLarge,
    /// The bytes are not an HTTP request (answer 400 with this reason).
    Malformed(String),
    /// The socket failed.
    Io(io::Error),
}

/// Reads one request head. Returns it with any bytes that followed it (the
/// client may send WebSocket frames right behind its request). Gives up at
/// `deadline`, or soon after `stop` is set (a server shutting down).
///
/// # Errors
/// See [`HeadError`].
pub fn read_head(
    stream: &mut Stream,
    deadline: Instant,
    max_bytes: usize,
    stop: &AtomicBool,
) -> Result<(Request, Vec<u8>), HeadError> {
    let left = deadline.saturating_duration_since(Instant::now());
    stream
        .set_read_timeout(Some(left.clamp(Duration::from_millis(1), STOP_CHECK)))
        .map_err(HeadError::Io)?;
    read_head_in_slices(stream, deadline, max_bytes, stop)
}

/// [`read_head`] on a socket whose read timeout is already
/// [`STOP_CHECK`] (a server socket, which inherits it from the listener):
/// the timeout is set again only to end at the deadline.
pub(crate) fn read_head_in_slices(
    stream: &mut Stream,
    deadline: Instant,
    max_bytes: usize,
    stop: &AtomicBool,
) -> Result<(Request, Vec<u8>), HeadError> {
    // The head is read straight into `buf` and parsed with a header table
    // on the heap: a connection thread's stack stays small (see
    // `connection::serve_connection`).
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::Timeout);
        }
        if stop.load(Ordering::Relaxed) {
            return Err(HeadError::Closed);
        }
        // Wait in slices so a shutdown need not wait for slow clients;
        // the last slice ends at the deadline.
        if left < STOP_CHECK {
            stream.set_read_timeout(Some(left)).map_err(HeadError::Io)?;
        }
        let filled = buf.len();
        buf.resize(filled + 1024, 0);
        let n = match stream.read(&mut buf[filled..]) {
            Ok(0) => return Err(HeadError::Closed),
            Ok(n) => n,
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {
                buf.truncate(filled);
                continue;
            }
            Err(e) => return Err(HeadError::Io(e)),
        };
        buf.truncate(filled + n);
        let searched_to = filled.saturating_sub(3);
        if let Some(end) = find_end(&buf[searched_to..]) {
            let end = searched_to + end;
            if end > max_bytes {
                return Err(HeadError::TooLarge);
            }
            let rest = buf.split_off(end);
            return parse(&buf).map(|req| (req, rest));
        }
        if buf.len() > max_bytes {
            return Err(HeadError::TooLarge);
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Index just past the `\r\n\r\n` that ends a head.
fn find_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn parse(head: &[u8]) -> Result<Request, HeadError> {
    let mut headers = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HeadError::Malformed("incomplete".into())),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    }
    Ok(Request {
        method: req.method.unwrap_or_default().to_string(),
        target: req.path.unwrap_or_default().to_string(),
        version: req.version.unwrap_or(1),
        headers: req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
    })
}

/// A complete HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code, e.g. 404.
    pub status: u16,
    /// Extra header lines (Content-Length and Connection are added).
    pub headers: Vec<(&'static str, String)>,
    /// The body (not sent for HEAD requests).
    pub body: Vec<u8>,
}

impl Response {
    /// A plain-text response: the status line's words plus `detail`.
    pub fn text(status: u16, detail: &str) -> Response {
        let body = format!("{status} {}: {detail}\n", reason_phrase(status));
        Response {
            status,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".into())],
            body: body.into_bytes(),
        }
    }

    /// Adds a header line.
    #[must_use]
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The bytes on the wire; `head_only` leaves the body out. One
    /// allocation, sized up front (a `format!` per line took 13 per
    /// upgrade).
    pub fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        use std::io::Write as _;
        let lines: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum();
        let body = if head_only { 0 } else { self.body.len() };
        let mut out = Vec::with_capacity(96 + lines + body);
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\n",
            self.status,
            reason_phrase(self.status)
        );
        for (k, v) in &self.headers {
            for part in [k.as_bytes(), b": ", v.as_bytes(), b"\r\n"] {
                out.extend_from_slice(part);
            }
        }
        if self.status != 101 {
            // Every answer but the upgrade ends the connection.
            let _ = write!(
                out,
                "Content-Length: {}\r\nConnection: close\r\n",
                self.body.len()
            );
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// Writes `resp` within the deadline's time left (a write timeout).
///
/// # Errors
/// When the socket fails or the deadline passes.
pub fn send(
    stream: &mut Stream,
    resp: &Response,
    head_only: bool,
    deadline: Instant,
) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    stream.set_write_timeout(Some(left.max(Duration::from_millis(100))))?;
    stream.write_all(&resp.to_bytes(head_only))?;
    stream.flush()
}

/// Half-closes, then discards what the peer still sends until it closes
/// or `deadline` passes. Closing a socket that has unread input makes the
/// kernel send a reset, which can destroy an answer still in flight.
pub fn finish(stream: &mut Stream, deadline: Instant) {
    let _ = stream.tcp().shutdown(std::net::Shutdown::Write);
    let mut scratch = [0u8; 1024];
    let mut discarded = 0usize;
    while discarded < 1 << 20 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_timeouts(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut scratch) {
            Ok(0) | Err(_) => return,
            Ok(n) => discarded += n,
        }
    }
}

/// The standard words for the status codes this crate sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_head() {
        let req =
            parse(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\n\r\n")
                .unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.target, "/a?b=1");
        assert_eq!(req.header("host"), Some("x"));
        assert!(req.has_token("connection", "upgrade"));
        assert!(!req.has_token("connection", "close"));
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            parse(b"\x16\x03\x01\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn response_bytes() {
        let r = Response::text(404, "no such page").with("X-A", "b");
        let text = String::from_utf8(r.to_bytes(false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("X-A: b\r\n"));
        assert!(text.ends_with("\r\n\r\n404 Not Found: no such page\n"));
        assert!(!String::from_utf8(r.to_bytes(true))
            .unwrap()
            .contains("no such page"));
    }
}
