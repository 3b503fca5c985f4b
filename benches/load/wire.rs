//! The load generator's own WebSocket client side, without a library.
//!
//! A load generator on the same two cores as the server must cost far less
//! per delivery than the server does, or it measures itself. So the
//! receivers do not decode messages: [`Parser`] walks the frames in the
//! bytes a `read()` returned, keeps only the first [`STAMP`] bytes of each
//! message (sequence number and send time) and skips the rest. Sending
//! uses a pre-masked template in which only the stamp changes.
//!
//! The opening handshake is written out by hand too ([`connect`]), so the
//! bytes that follow the server's `101` are kept for the parser.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bytes at the start of every benchmark message: 16 hex digits of
/// sequence number, then 16 hex digits of send time (ns since the
/// generator's epoch).
pub const STAMP: usize = 32;
/// Sequence number of the warm-up messages that prove a receiver joined.
pub const WARMUP_SEQ: u64 = u64::MAX;
/// The mask every generated frame uses (clients must mask; its value does
/// not matter to a server).
const MASK: [u8; 4] = [0x5a, 0x3c, 0x96, 0xe1];
/// Largest request head plus `101` answer we accept.
const MAX_HEAD: usize = 8 << 10;

const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;

/// Resolves `host:port` to the first IPv4 or IPv6 address.
pub fn resolve(addr: &str) -> io::Result<SocketAddr> {
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other(format!("{addr} resolves to nothing")))
}

/// Opens a TCP connection to `addr` and completes the WebSocket handshake
/// for `path`. Returns the stream (blocking, no timeouts) and the bytes
/// that arrived after the `101` answer.
///
/// # Errors
/// Connect failures, a handshake that takes longer than `timeout`, or any
/// answer other than a valid `101`.
pub fn connect(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> io::Result<(TcpStream, Vec<u8>)> {
    let mut tcp = TcpStream::connect_timeout(&addr, timeout)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let key = new_key();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes())?;
    let rest = read_upgrade(&mut tcp, &key)?;
    tcp.set_read_timeout(None)?;
    tcp.set_write_timeout(None)?;
    Ok((tcp, rest))
}

/// A fresh `Sec-WebSocket-Key`: unique per connection, which is all a
/// server can check.
fn new_key() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0x6c6f_6164_6765_6e00);
    let n = NEXT.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&n.to_le_bytes());
    raw[8..].copy_from_slice(&std::process::id().to_le_bytes().repeat(2));
    data_encoding::BASE64.encode(&raw)
}

/// Reads the answer head, checks it is a proper `101`, returns what
/// followed it.
fn read_upgrade(tcp: &mut TcpStream, key: &str) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = tcp.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::other("server closed during the handshake"));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                check_upgrade(&resp, key)?;
                return Ok(buf.split_off(len));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Err(io::Error::other("answer head too long")),
            Err(e) => return Err(io::Error::other(format!("bad answer head: {e}"))),
        }
    }
}

fn check_upgrade(resp: &httparse::Response, key: &str) -> io::Result<()> {
    if resp.code != Some(101) {
        let code = resp.code.unwrap_or(0);
        let hint = if code == 503 {
            " (the server's connection limit? wshub: --spawn --server-args '--max-clients N')"
        } else {
            ""
        };
        return Err(io::Error::other(format!(
            "handshake answered {code}, not 101{hint}"
        )));
    }
    let want = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let accept = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|h| h.value);
    if accept != Some(want.as_bytes()) {
        return Err(io::Error::other("wrong Sec-WebSocket-Accept"));
    }
    Ok(())
}

/// Appends one masked client frame (FIN set) to `out`.
pub fn push_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    push_header(out, opcode, payload.len());
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], 0);
}

/// Appends a masked close frame with `code` to `out`.
pub fn push_close(out: &mut Vec<u8>, code: u16) {
    push_frame(out, OP_CLOSE, &code.to_be_bytes());
}

fn push_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    match len {
        0..=125 => out.push(0x80 | len as u8),
        126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
}

/// XORs `bytes` with the mask, `bytes[0]` being payload byte `offset`.
fn apply_mask(bytes: &mut [u8], offset: usize) {
    for (i, b) in bytes.iter_mut().enumerate() {
        *b ^= MASK[(offset + i) % 4];
    }
}

/// A text message of a fixed size whose stamp changes per message; the
/// rest of the frame is masked once, up front.
pub struct Template {
    frame: Vec<u8>,
    // Where the payload starts inside `frame`.
    payload_at: usize,
}

impl Template {
    /// A text message of `size` bytes (at least [`STAMP`]).
    pub fn new(size: usize) -> Template {
        let size = size.max(STAMP);
        let mut payload = vec![b'.'; size];
        payload[..STAMP].fill(b'0');
        let mut frame = Vec::with_capacity(size + 14);
        push_frame(&mut frame, OP_TEXT, &payload);
        let payload_at = frame.len() - size;
        Template { frame, payload_at }
    }

    /// Appends the frame for message `seq` sent at `t_ns` to `out`.
    pub fn push(&mut self, out: &mut Vec<u8>, seq: u64, t_ns: u64) {
        let mut stamp = [0u8; STAMP];
        hex16(&mut stamp[..16], seq);
        hex16(&mut stamp[16..], t_ns);
        apply_mask(&mut stamp, 0);
        self.frame[self.payload_at..self.payload_at + STAMP].copy_from_slice(&stamp);
        out.extend_from_slice(&self.frame);
    }

    /// Bytes of one frame on the wire.
    pub fn frame_len(&self) -> usize {
        self.frame.len()
    }
}

fn hex16(out: &mut [u8], v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().enumerate() {
        *b = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// Reads the sequence number and send time from a message's first bytes.
pub fn parse_stamp(prefix: &[u8]) -> Option<(u64, u64)> {
    if prefix.len() < STAMP {
        return None;
    }
    Some((unhex16(&prefix[..16])?, unhex16(&prefix[16..STAMP])?))
}

fn unhex16(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u64::from(v))
    })
}

/// What [`Parser::feed`] found.
pub enum Frame<'a> {
    /// A complete text or binary message: its first (up to) [`STAMP`] bytes.
    Message(&'a [u8]),
    /// A ping with this payload (the caller answers it).
    Ping(&'a [u8]),
    /// A close frame with this code (1005 when it had none).
    Close(u16),
}

/// Incremental frame parser for what a server sends (unmasked frames).
/// Keeps a message's stamp and skips the rest of its payload.
#[derive(Default)]
pub struct Parser {
    head: [u8; 14],
    head_len: usize,
    // Payload bytes of the current frame still to come; `None` while the
    // frame header is incomplete.
    left: Option<u64>,
    opcode: u8,
    fin: bool,
    // Opcode of the data message in progress (for continuation frames).
    message_op: u8,
    prefix: [u8; STAMP],
    prefix_len: usize,
    control: Vec<u8>,
}

impl Parser {
    /// Walks `data`, calling `on` for every complete message and control
    /// frame.
    ///
    /// # Errors
    /// When the bytes are not a valid server-to-client frame stream.
    pub fn feed(&mut self, mut data: &[u8], on: &mut impl FnMut(Frame)) -> Result<(), String> {
        while !data.is_empty() {
            match self.left {
                None => data = self.take_header(data)?,
                Some(left) => {
                    let n = (left.min(data.len() as u64)) as usize;
                    self.take_payload(&data[..n]);
                    data = &data[n..];
                    self.left = Some(left - n as u64);
                }
            }
            if self.left == Some(0) {
                self.finish_frame(on);
            }
        }
        Ok(())
    }

    /// Collects header bytes; once complete, starts the payload.
    fn take_header<'d>(&mut self, data: &'d [u8]) -> Result<&'d [u8], String> {
        let need = self.header_len();
        let n = (need - self.head_len).min(data.len());
        self.head[self.head_len..self.head_len + n].copy_from_slice(&data[..n]);
        self.head_len += n;
        if self.head_len == self.header_len() {
            self.start_frame()?;
        }
        Ok(&data[n..])
    }

    /// Header length as far as the bytes so far tell.
    fn header_len(&self) -> usize {
        if self.head_len < 2 {
            return 2;
        }
        let ext = match self.head[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.head[1] & 0x80 != 0 { 4 } else { 0 };
        2 + ext + mask
    }

    fn start_frame(&mut self) -> Result<(), String> {
        let (b0, b1) = (self.head[0], self.head[1]);
        if b1 & 0x80 != 0 {
            return Err("server sent a masked frame".into());
        }
        let len = match b1 & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
            127 => u64::from_be_bytes(self.head[2..10].try_into().expect("8 bytes")),
            n => u64::from(n),
        };
        self.opcode = b0 & 0x0f;
        self.fin = b0 & 0x80 != 0;
        self.head_len = 0;
        self.left = Some(len);
        match self.opcode {
            OP_TEXT | OP_BINARY => {
                self.message_op = self.opcode;
                self.prefix_len = 0;
            }
            OP_CONT if self.message_op != 0 => {}
            OP_CLOSE | OP_PING | OP_PONG if len <= 125 && self.fin => self.control.clear(),
            op => return Err(format!("unexpected frame: opcode {op:#x}, {len} bytes")),
        }
        Ok(())
    }

    fn take_payload(&mut self, chunk: &[u8]) {
        if self.opcode >= OP_CLOSE {
            self.control.extend_from_slice(chunk);
        } else if self.prefix_len < STAMP {
            let n = (STAMP - self.prefix_len).min(chunk.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&chunk[..n]);
            self.prefix_len += n;
        }
    }

    fn finish_frame(&mut self, on: &mut impl FnMut(Frame)) {
        self.left = None;
        match self.opcode {
            OP_PING => on(Frame::Ping(&self.control)),
            OP_CLOSE => {
                let code = match self.control.as_slice() {
                    [a, b, ..] => u16::from_be_bytes([*a, *b]),
                    _ => 1005,
                };
                on(Frame::Close(code));
            }
            OP_PONG => {}
            _ if self.fin => {
                self.message_op = 0;
                on(Frame::Message(&self.prefix[..self.prefix_len]));
            }
            _ => {}
        }
    }
}

/// Sends a pong for `payload` (a receiver's only write, so it fits the
/// empty socket buffer whole).
pub fn pong(tcp: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let mut frame = Vec::with_capacity(payload.len() + 6);
    push_frame(&mut frame, OP_PONG, payload);
    tcp.write_all(&frame)
}

/// Connects to every path in `paths` from `threads` threads at once; the
/// result is in the order of `paths`.
///
/// # Errors
/// The first connection that failed, and why.
pub fn connect_many(
    addr: SocketAddr,
    paths: &[String],
    threads: usize,
) -> Result<Vec<(TcpStream, Vec<u8>)>, String> {
    let per_thread = paths.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = paths
            .chunks(per_thread)
            .map(|chunk| {
                std::thread::Builder::new()
                    .name("load-connect".into())
                    .spawn_scoped(scope, move || {
                        let timeout = Duration::from_secs(10);
                        let connect =
                            |p: &String| connect(addr, p, timeout).map_err(|e| format!("{p}: {e}"));
                        chunk
                            .iter()
                            .map(connect)
                            .collect::<Result<Vec<_>, String>>()
                    })
                    .map_err(|e| format!("cannot start a connector thread: {e}"))
            })
            .collect();
        let mut all = Vec::with_capacity(paths.len());
        for handle in handles {
            let part = handle?
                .join()
                .map_err(|_| "a connector thread panicked".to_string())?;
            all.extend(part?);
        }
        Ok(all)
    })
}
