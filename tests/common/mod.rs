//! Helpers shared by the integration tests: servers on port 0, clients,
//! spawned binaries with their output captured, and bounded waits.
#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use wshub::{Client, Message, Server, ServerConfig};

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Starts a server on 127.0.0.1:0 with `cfg`.
pub fn server(cfg: ServerConfig) -> Server {
    Server::bind_with_config("127.0.0.1:0", cfg).expect("bind a test server")
}

/// `ws://ADDR/PATH` (`path` without the leading slash).
pub fn url(addr: SocketAddr, path: &str) -> String {
    format!("ws://{addr}/{path}")
}

/// Connects a client at `path` and waits until the hub lists it.
pub fn join(server: &Server, path: &str) -> Client {
    let before = server.stats().connections_total;
    let client = Client::connect(&url(server.local_addr(), path)).expect("connect");
    wait_for(
        || server.stats().connections_total > before,
        "the hub to see the join",
    );
    client
}

/// Polls `cond` until it holds, failing the test after [`WAIT`].
pub fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// The next message's text, failing the test after [`WAIT`].
pub fn recv_text(client: &Client) -> String {
    match client.recv_timeout(WAIT) {
        Ok(Message::Text(t)) => t.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Asserts that nothing arrives within `quiet`.
pub fn assert_silent(client: &Client, quiet: Duration) {
    if let Ok(msg) = client.recv_timeout(quiet) {
        panic!("expected nothing, got {msg:?}");
    }
}

/// A spawned binary with its stdout and stderr lines collected.
pub struct Proc {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: Lines,
    pub stderr: Lines,
}

/// Lines read from a pipe by a background thread.
#[derive(Clone)]
pub struct Lines {
    rx: Receiver<String>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Lines {
    fn spawn(pipe: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = crossbeam_channel::unbounded();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                log.lock().unwrap().push(line.clone());
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { rx, seen }
    }

    /// Waits for a line containing `needle`, returning it; fails after
    /// [`WAIT`] with everything seen so far.
    pub fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.rx.recv_deadline(deadline) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no line with {needle:?}; saw:\n{}", self.all().join("\n"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "stream ended without {needle:?}; saw:\n{}",
                        self.all().join("\n")
                    )
                }
            }
        }
    }

    /// The next line, or `None` after `timeout` or at the end.
    pub fn next(&self, timeout: Duration) -> Option<String> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The first line seen so far that contains `needle`; fails if none.
    pub fn seen(&self, needle: &str) -> String {
        let all = self.all();
        let found = all.iter().find(|l| l.contains(needle)).cloned();
        found.unwrap_or_else(|| panic!("no line with {needle:?} yet; saw:\n{}", all.join("\n")))
    }

    /// Every line seen so far.
    pub fn all(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Proc {
    /// Spawns `bin` with `args`, stdin piped.
    pub fn spawn(bin: &str, args: &[&str]) -> Proc {
        Proc::spawn_env(bin, args, &[])
    }

    /// Writes one line to the process's stdin.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").expect("write to child stdin");
        stdin.flush().unwrap();
    }

    /// Closes the process's stdin.
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Waits for the exit code, failing after [`WAIT`].
    pub fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "process did not exit in time");
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `wshub-server` on a free port; returns it and its address.
pub fn server_bin(extra: &[&str]) -> (Proc, SocketAddr) {
    server_bin_env(extra, &[])
}

/// Starts `wshub-client` with `args`.
pub fn client_bin(args: &[&str]) -> Proc {
    Proc::spawn(env!("CARGO_BIN_EXE_wshub-client"), args)
}

/// A raw TCP connection that has completed a WebSocket handshake at
/// `path`, for sending hand-made frames.
pub fn raw_ws(addr: SocketAddr, path: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        tcp,
        "GET /{path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    let head = read_http_head(&mut tcp);
    assert!(head.starts_with("HTTP/1.1 101"), "handshake failed: {head}");
    tcp
}

/// Reads bytes up to the end of an HTTP head.
pub fn read_http_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tcp.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A masked client frame: `fin`, `opcode`, payload (mask key 0x01020304).
pub fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len < 65536 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [1u8, 2, 3, 4];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads one (unmasked, server) frame: (opcode, payload).
pub fn read_frame(tcp: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut hdr = [0u8; 2];
    tcp.read_exact(&mut hdr).ok()?;
    let mut len = u64::from(hdr[1] & 0x7f);
    if len == 126 {
        let mut b = [0u8; 2];
        tcp.read_exact(&mut b).ok()?;
        len = u64::from(u16::from_be_bytes(b));
    } else if len == 127 {
        let mut b = [0u8; 8];
        tcp.read_exact(&mut b).ok()?;
        len = u64::from_be_bytes(b);
    }
    let mut payload = vec![0u8; len as usize];
    tcp.read_exact(&mut payload).ok()?;
    Some((hdr[0] & 0x0f, payload))
}

/// Reads frames until a close frame; returns its code (None if the
/// connection ended without one).
pub fn read_close_code(tcp: &mut TcpStream) -> Option<u16> {
    loop {
        let (op, payload) = read_frame(tcp)?;
        if op == 8 {
            return payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
        }
    }
}

/// Proves that none of `clients` has anything unread: the server
/// broadcasts a fresh marker to everyone, and it must be the next message
/// each of `clients` reads. Call it only after the hub has routed whatever
/// must not arrive (for example once another receiver got it); every other
/// connected client also receives the marker.
pub fn assert_nothing_before_marker(server: &Server, clients: &[&Client]) {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let marker = format!("-- marker {n} --");
    server.broadcast(Message::text(marker.clone()));
    for (i, client) in clients.iter().enumerate() {
        assert_eq!(
            recv_text(client),
            marker,
            "client #{i} got something else first"
        );
    }
}

/// Asserts that `a` and `b` (in the same room, nobody else there) still
/// exchange messages both ways.
pub fn assert_pair_works(a: &Client, b: &Client) {
    a.send_text("ping from a").expect("a can still send");
    assert_eq!(recv_text(b), "ping from a");
    b.send_text("ping from b").expect("b can still send");
    assert_eq!(recv_text(a), "ping from b");
}

// Helpers for the command-line tests (tests/cli_*.rs).

impl Proc {
    /// Spawns `bin` with `args` and the extra environment variables
    /// `envs` (set on this child only), stdin piped.
    pub fn spawn_env(bin: &str, args: &[&str], envs: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(bin)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        let stdin = child.stdin.take();
        let stdout = Lines::spawn(child.stdout.take().unwrap());
        let stderr = Lines::spawn(child.stderr.take().unwrap());
        Proc {
            child,
            stdin,
            stdout,
            stderr,
        }
    }

    /// `true` while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the exit and for both output streams to end; returns the
    /// exit code and every stdout and stderr line.
    pub fn finish(&mut self) -> (i32, Vec<String>, Vec<String>) {
        let code = self.wait_exit();
        (code, self.stdout.until_end(), self.stderr.until_end())
    }
}

impl Lines {
    /// Waits until the stream ends (failing after [`WAIT`]) and returns
    /// every line it carried.
    pub fn until_end(&self) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.rx.recv_deadline(deadline) {
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => return self.all(),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("stream did not end; saw:\n{}", self.all().join("\n"))
                }
            }
        }
    }
}

/// Starts `wshub-server` on a free port with extra environment variables;
/// returns it and its address.
pub fn server_bin_env(extra: &[&str], envs: &[(&str, &str)]) -> (Proc, SocketAddr) {
    let mut args = vec!["--bind", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let proc = Proc::spawn_env(env!("CARGO_BIN_EXE_wshub-server"), &args, envs);
    let line = proc.stderr.wait_for("listening on ws");
    let addr = line
        .rsplit("://")
        .next()
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (proc, addr)
}

/// Runs a binary that is expected to exit by itself (usage errors,
/// `--help`); returns its exit code, stdout lines and stderr lines.
pub fn run_bin(bin: &str, args: &[&str], envs: &[(&str, &str)]) -> (i32, Vec<String>, Vec<String>) {
    let mut proc = Proc::spawn_env(bin, args, envs);
    proc.close_stdin();
    proc.finish()
}

/// A path under the temporary directory that no other test uses.
pub fn temp_path(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("wshub-test-{}-{tag}-{n}", std::process::id()))
}

/// Asserts that `line` starts with a UTC timestamp to the millisecond,
/// `YYYY-MM-DD HH:MM:SS.mmmZ`.
pub fn assert_timestamped(line: &str) {
    let shape = "dddd-dd-dd dd:dd:dd.dddZ";
    let ok = line.len() > shape.len()
        && line.bytes().zip(shape.bytes()).all(|(c, s)| match s {
            b'd' => c.is_ascii_digit(),
            _ => c == s,
        });
    assert!(ok, "no millisecond timestamp at the start of {line:?}");
}

/// Waits until the hub lists a client named `name`.
pub fn wait_online(server: &Server, name: &str) {
    wait_for(
        || server.clients().iter().any(|c| c.name == name),
        &format!("{name} to be online"),
    );
}

/// A free local port: bound once, then released.
pub fn dead_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

// Helpers for the security tests (tests/auth.rs, limits.rs, tls.rs,
// heartbeat.rs, fuzz.rs).

/// A WebSocket upgrade request head for `/PATH` with extra `headers`.
pub fn upgrade_request(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> String {
    let mut head = format!(
        "GET /{path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Sends an upgrade request for `path` with extra `headers` on a new
/// connection; returns the socket and the answer's head (empty when the
/// server said nothing).
pub fn upgrade_raw(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (TcpStream, String) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.write_all(upgrade_request(addr, path, headers).as_bytes())
        .unwrap();
    let head = read_http_head(&mut tcp);
    (tcp, head)
}

/// The status code of a response head; fails the test when there is none.
pub fn http_status(head: &str) -> u16 {
    head.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {head:?}"))
}

/// The value of header `name` (case-insensitive) in a response head.
pub fn head_header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Reads until the peer ends the connection (EOF or reset) and returns
/// what came, lossily as text; fails the test after the socket's read
/// timeout.
pub fn read_to_end_lossy(tcp: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the connection did not end: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
