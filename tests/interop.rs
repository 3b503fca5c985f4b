//! Interoperability with WebSocket code nobody here wrote. Python
//! `websockets` and Node `ws` clients talk to a spawned `wshub-server`:
//! text, binary, directed JSON, 1 MiB messages, ping/pong, close codes
//! both ways and wss with the test CA. `wshub-client` talks to a Python
//! `websockets` echo server and a Node `ws` server, over ws and wss: it
//! sends, receives, closes, follows the server's close, and reconnects
//! when that server restarts on the same port.
//!
//! The programs in `tests/interop/` speak a small line protocol (their
//! headers describe it): commands on stdin, one event per line on stdout.
//! `.ci/install-interop` installs the two libraries; without them each
//! test prints `SKIPPED interop test: …` and passes, except under
//! `CI=true`, where a missing library fails the test.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::{client_bin, server_bin, Proc, WAIT};

/// The helper programs and the Python virtual environment.
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop");
/// The test CA, and a server certificate for localhost and 127.0.0.1.
const CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/certs/ca.pem");
const CERT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/certs/server.pem");
const KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/certs/server.key");

const MIB: usize = 1 << 20;

/// Every test below runs once with each library.
macro_rules! with_each_library {
    ($($(#[$attr:meta])* $test:ident),* $(,)?) => {
        mod python {
            $($(#[$attr])*
            #[test]
            fn $test() {
                super::run(super::Lib::Python, concat!("python::", stringify!($test)), super::$test);
            })*
        }
        mod node {
            $($(#[$attr])*
            #[test]
            fn $test() {
                super::run(super::Lib::Node, concat!("node::", stringify!($test)), super::$test);
            })*
        }
    };
}

with_each_library!(
    text_and_binary_between_two_clients,
    directed_json_reaches_only_the_named_client,
    one_mib_messages_both_ways_and_1009_above_the_limit,
    pings_are_answered_with_the_same_payload,
    close_codes_both_ways,
    #[cfg(feature = "tls")]
    wss_with_the_test_ca,
    wshub_client_sends_receives_and_closes,
    #[cfg(feature = "tls")]
    wshub_client_over_wss,
    wshub_client_follows_the_servers_close,
    wshub_client_reconnects_when_the_server_restarts,
);

#[test]
fn python_and_node_clients_talk_through_the_hub() {
    let name = "python_and_node_clients_talk_through_the_hub";
    if !Lib::Python.ready(name) || !Lib::Node.ready(name) {
        return;
    }
    let (hub, addr) = server_bin(&[]);
    let mut py = join(Lib::Python, &hub, addr, "lobby/py", "py");
    let mut node = join(Lib::Node, &hub, addr, "lobby/node", "node");
    py.send("text from python, 你好");
    node.expect(&text_event("from python, 你好"));
    node.send("binary cafe00");
    py.expect(&binary_event(&[0xca, 0xfe, 0x00]));
    let json = r#"{"sender":"node","receiver":"py","msg":"directed"}"#;
    node.send(&format!("text {json}"));
    py.expect(&text_event(json));
}

// ------------------------------------------- foreign clients, wshub-server

fn text_and_binary_between_two_clients(lib: Lib) {
    let (hub, addr) = server_bin(&[]);
    let mut alice = join(lib, &hub, addr, "alice", "alice");
    let mut bob = join(lib, &hub, addr, "bob", "bob");
    let text = "héllo wörld, 你好 😀";
    alice.send(&format!("text {text}"));
    bob.expect(&text_event(text));
    bob.send("binary 00ff10fe");
    alice.expect(&binary_event(&[0x00, 0xff, 0x10, 0xfe]));
    alice.send("text ");
    bob.expect(&text_event(""));
    bob.send("binary ");
    alice.expect(&binary_event(&[]));
}

fn directed_json_reaches_only_the_named_client(lib: Lib) {
    let (mut hub, addr) = server_bin(&[]);
    let receiver = join(lib, &hub, addr, "topic=10001", "10001");
    let mut sender = join(lib, &hub, addr, "topic=10002", "10002");
    let bystander = join(lib, &hub, addr, "topic=10003", "10003");
    let json = r#"{"sender":"10002","receiver":"10001","msg":"你好"}"#;
    sender.send(&format!("text {json}"));
    receiver.expect(&text_event(json));
    // The console's broadcast is the next thing everyone gets: neither the
    // sender nor the bystander saw the directed message.
    hub.send_line("-- marker --");
    for peer in [&receiver, &sender, &bystander] {
        peer.expect(&text_event("-- marker --"));
    }
}

fn one_mib_messages_both_ways_and_1009_above_the_limit(lib: Lib) {
    let (hub, addr) = server_bin(&["--max-message-size", "2MiB"]);
    let mut a = join(lib, &hub, addr, "a", "a");
    let mut b = join(lib, &hub, addr, "b", "b");
    a.send(&format!("bigtext {MIB}"));
    b.expect(&text_event(&big_text(MIB)));
    b.send(&format!("bigbinary {MIB}"));
    a.expect(&binary_event(&big_binary(MIB)));
    a.send(&format!("bigbinary {}", 2 * MIB + 1));
    let closed = a.next();
    assert!(
        closed.starts_with("closed 1009"),
        "{}: got {closed:?}",
        a.what
    );
}

fn pings_are_answered_with_the_same_payload(lib: Lib) {
    let (hub, addr) = server_bin(&[]);
    let mut peer = join(lib, &hub, addr, "pinger", "pinger");
    for payload in [String::new(), "0123456789abcdef".into(), "a5".repeat(125)] {
        peer.send(&format!("ping {payload}"));
        peer.expect(&format!("pong {payload}"));
    }
}

fn close_codes_both_ways(lib: Lib) {
    let (mut hub, addr) = server_bin(&[]);
    let mut alice = join(lib, &hub, addr, "alice", "alice");
    let mut bob = join(lib, &hub, addr, "bob", "bob");
    let carol = join(lib, &hub, addr, "carol", "carol");
    let dave = join(lib, &hub, addr, "dave", "dave");

    // The client closes; the server echoes its code and reason.
    alice.send("close 1000");
    alice.expect("closed 1000 ");
    assert_eq!(alice.proc.wait_exit(), 0);
    let left = hub.stderr.wait_for("leave alice ");
    assert!(left.contains(": 1000 normal"), "{left}");
    bob.send("close 4001 custom reason");
    bob.expect("closed 4001 custom reason");
    let left = hub.stderr.wait_for("leave bob ");
    assert!(left.contains(": 4001 application: custom reason"), "{left}");

    // The server closes: /kick gives 1008 and the reason, SIGTERM 1001.
    hub.send_line("/kick carol go away now");
    carol.expect("closed 1008 go away now");
    hub.terminate();
    let closed = dave.next();
    assert!(
        closed.starts_with("closed 1001"),
        "{}: got {closed:?}",
        dave.what
    );
    assert_eq!(hub.wait_exit(), 0);
}

#[cfg(feature = "tls")]
fn wss_with_the_test_ca(lib: Lib) {
    let (hub, addr) = server_bin(&["--tls-cert", CERT, "--tls-key", KEY]);
    let port = addr.port();
    let mut alice = Peer::start(lib, &format!("wss://127.0.0.1:{port}/alice"), true);
    hub.stderr.wait_for("join alice ");
    let mut bob = Peer::start(lib, &format!("wss://localhost:{port}/bob"), true);
    hub.stderr.wait_for("join bob ");
    alice.send("text over TLS");
    bob.expect(&text_event("over TLS"));
    bob.send(&format!("bigbinary {}", 100_000));
    alice.expect(&binary_event(&big_binary(100_000)));
    alice.send("close 1000");
    alice.expect("closed 1000 ");

    // Without the test CA the same library refuses the server.
    let url = format!("wss://127.0.0.1:{port}/mallory");
    let refused = Peer::spawn(lib, &url, false);
    let line = refused.next();
    assert!(line.starts_with("error"), "{}: got {line:?}", refused.what);
}

// ------------------------------------------- wshub-client, foreign servers

fn wshub_client_sends_receives_and_closes(lib: Lib) {
    client_round_trip(lib, false);
}

#[cfg(feature = "tls")]
fn wshub_client_over_wss(lib: Lib) {
    client_round_trip(lib, true);
}

/// `wshub-client` sends with `--send` and stdin, prints the echoes, closes
/// with 1000 at the end of stdin and exits 0; `--binary` sends binary.
fn client_round_trip(lib: Lib, tls: bool) {
    let server = ForeignServer::start(lib, 0, tls);
    let url = server.url(tls, "alice");
    let mut client = client_bin(&client_args(&url, tls, &["--send", "first"]));
    client.stderr.wait_for("connected to");
    server.expect("connect /alice");
    assert_eq!(next_line(&client), "first");
    client.send_line("héllo 你好");
    assert_eq!(next_line(&client), "héllo 你好");
    client.close_stdin();
    assert_eq!(client.wait_exit(), 0);
    server.expect(&text_event("first"));
    server.expect(&text_event("héllo 你好"));
    server.expect("closed 1000 ");

    let mut client = client_bin(&client_args(&url, tls, &["--binary"]));
    client.stderr.wait_for("connected to");
    server.expect("connect /alice");
    client.send_line("abc");
    assert_eq!(next_line(&client), "[binary 3 bytes] 616263");
    client.close_stdin();
    assert_eq!(client.wait_exit(), 0);
    server.expect(&binary_event(b"abc"));
    server.expect("closed 1000 ");
}

/// The server closes: with 1000 `wshub-client` exits 0, with 1011 it
/// exits 1, and says which code it got.
fn wshub_client_follows_the_servers_close(lib: Lib) {
    let server = ForeignServer::start(lib, 0, false);
    let url = server.url(false, "bob");
    for (code, status) in [(1000, 0), (1011, 1)] {
        let send = format!("!close {code} bye");
        let mut client = client_bin(&[&url, "--no-stdin", "--send", &send]);
        let (exit, _, stderr) = client.finish();
        assert_eq!(exit, status, "after {code}; stderr: {stderr:?}");
        let said = format!("disconnected ({code} ");
        assert!(stderr.iter().any(|l| l.contains(&said)), "{stderr:?}");
        server.expect("connect /bob");
        server.expect(&text_event(&send));
        server.expect(&format!("closed {code} bye"));
    }
}

/// The server stops (SIGTERM: 1001 to its clients) and starts again on
/// the same port; lines typed meanwhile arrive, in order, after the
/// reconnect.
fn wshub_client_reconnects_when_the_server_restarts(lib: Lib) {
    let mut first = ForeignServer::start(lib, 0, false);
    let port = first.port;
    let url = first.url(false, "carol");
    let mut client = client_bin(&[&url, "--reconnect", "--retry-interval", "0.3"]);
    client.stderr.wait_for("connected to");
    first.expect("connect /carol");
    client.send_line("before");
    assert_eq!(next_line(&client), "before");

    first.proc.terminate();
    assert_eq!(first.proc.wait_exit(), 0, "the server stops cleanly");
    client.stderr.wait_for("disconnected (1001");
    client.stderr.wait_for("reconnecting in");
    client.send_line("queued 1");
    client.send_line("queued 2");

    let second = ForeignServer::start(lib, port, false);
    client.stderr.wait_for("connected to");
    second.expect("connect /carol");
    second.expect(&text_event("queued 1"));
    second.expect(&text_event("queued 2"));
    assert_eq!(next_line(&client), "queued 1");
    assert_eq!(next_line(&client), "queued 2");
    client.close_stdin();
    assert_eq!(client.wait_exit(), 0);
    second.expect("closed 1000 ");
}

// ---------------------------------------------------------------- helpers

/// A WebSocket library nobody here wrote.
#[derive(Clone, Copy, Debug)]
enum Lib {
    Python,
    Node,
}

impl Lib {
    fn label(self) -> &'static str {
        match self {
            Lib::Python => "python websockets",
            Lib::Node => "node ws",
        }
    }

    /// The interpreter, and the environment it needs.
    fn interpreter(self) -> (String, &'static [(&'static str, &'static str)]) {
        match self {
            Lib::Python => (
                format!("{DIR}/.venv/bin/python"),
                &[("PYTHONUTF8", "1"), ("PYTHONDONTWRITEBYTECODE", "1")],
            ),
            Lib::Node => ("node".into(), &[]),
        }
    }

    fn script(self, server: bool) -> String {
        let name = match (self, server) {
            (Lib::Python, false) => "py_client.py",
            (Lib::Python, true) => "py_echo_server.py",
            (Lib::Node, false) => "node_client.mjs",
            (Lib::Node, true) => "node_server.mjs",
        };
        format!("{DIR}/{name}")
    }

    /// Why the library cannot be used here, if it cannot (checked once).
    fn missing(self) -> Option<&'static str> {
        static PYTHON: OnceLock<Option<String>> = OnceLock::new();
        static NODE: OnceLock<Option<String>> = OnceLock::new();
        let (cell, check) = match self {
            Lib::Python => (&PYTHON, "import websockets"),
            Lib::Node => (&NODE, "require('ws')"),
        };
        cell.get_or_init(|| {
            let (bin, envs) = self.interpreter();
            let flag = if matches!(self, Lib::Python) {
                "-c"
            } else {
                "-e"
            };
            let ok = Command::new(&bin)
                .args([flag, check])
                .envs(envs.iter().copied())
                .current_dir(DIR)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            let venv = Path::new(DIR).join(".venv");
            (!ok).then(|| match self {
                Lib::Python if !venv.exists() => {
                    format!("{} is not installed (no tests/interop/.venv)", self.label())
                }
                _ => format!(
                    "{} is not installed (`{bin} {flag} \"{check}\"` failed)",
                    self.label()
                ),
            })
        })
        .as_deref()
    }

    /// `true` when the library is there. Otherwise says why the test is
    /// skipped and returns `false`, or under `CI=true` fails the test.
    fn ready(self, test: &str) -> bool {
        let Some(why) = self.missing() else {
            return true;
        };
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: {why}; CI runs .ci/install-interop before the tests, so it failed");
        }
        // Straight to stderr, past the test harness's capture, so the skip
        // shows in every run.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED interop test: {why}, so {test} did not run; run .ci/install-interop"
        );
        false
    }
}

fn run(lib: Lib, name: &str, test: fn(Lib)) {
    if lib.ready(name) {
        test(lib);
    }
}

/// A foreign client process (tests/interop/*_client.*).
struct Peer {
    proc: Proc,
    what: String,
}

impl Peer {
    /// Starts a client for `url` (trusting the test CA when `ca`) without
    /// waiting for anything.
    fn spawn(lib: Lib, url: &str, ca: bool) -> Peer {
        let (bin, envs) = lib.interpreter();
        let script = lib.script(false);
        let mut args = vec![script.as_str(), url];
        if ca {
            args.extend(["--ca", CA]);
        }
        Peer {
            proc: Proc::spawn_env(&bin, &args, envs),
            what: format!("{} client at {url}", lib.label()),
        }
    }

    /// Starts a client and waits until it is connected.
    fn start(lib: Lib, url: &str, ca: bool) -> Peer {
        let peer = Peer::spawn(lib, url, ca);
        peer.expect("open");
        peer
    }

    fn send(&mut self, command: &str) {
        self.proc.send_line(command);
    }

    /// The next event line; fails after [`WAIT`].
    fn next(&self) -> String {
        self.proc.stdout.next(WAIT).unwrap_or_else(|| {
            panic!(
                "{} printed nothing more in time; stdout: {:?}; stderr: {:?}",
                self.what,
                self.proc.stdout.all(),
                self.proc.stderr.all()
            )
        })
    }

    /// Asserts that the next event line is `line`.
    fn expect(&self, line: &str) {
        let got = self.next();
        assert_eq!(
            got,
            line,
            "{}; stderr: {:?}",
            self.what,
            self.proc.stderr.all()
        );
    }
}

/// Starts a client of `lib` at `ws://ADDR/PATH` and waits until the hub
/// logged its join as `name`.
fn join(lib: Lib, hub: &Proc, addr: SocketAddr, path: &str, name: &str) -> Peer {
    let peer = Peer::start(lib, &format!("ws://{addr}/{path}"), false);
    hub.stderr.wait_for(&format!("join {name} "));
    peer
}

/// A foreign echo server (tests/interop/*_server.*).
struct ForeignServer {
    proc: Proc,
    port: u16,
    what: String,
}

impl ForeignServer {
    /// Starts the server on `port` (0: any free port) and waits until it
    /// listens.
    fn start(lib: Lib, port: u16, tls: bool) -> ForeignServer {
        let (bin, envs) = lib.interpreter();
        let script = lib.script(true);
        let port_arg = port.to_string();
        let mut args = vec![script.as_str(), "--port", &port_arg];
        if tls {
            args.extend(["--tls", CERT, KEY]);
        }
        let proc = Proc::spawn_env(&bin, &args, envs);
        let line = proc.stdout.wait_for("listening on ");
        let port = line
            .rsplit(' ')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        let what = format!("{} server on port {port}", lib.label());
        ForeignServer { proc, port, what }
    }

    fn url(&self, tls: bool, path: &str) -> String {
        let scheme = if tls { "wss" } else { "ws" };
        format!("{scheme}://127.0.0.1:{}/{path}", self.port)
    }

    /// Asserts that the server's next event line is `line`.
    fn expect(&self, line: &str) {
        let got = self.proc.stdout.next(WAIT);
        let stderr = self.proc.stderr.all();
        assert_eq!(
            got.as_deref(),
            Some(line),
            "{}; stderr: {stderr:?}",
            self.what
        );
    }
}

/// `wshub-client` arguments: the URL, the test CA for wss, then `extra`.
fn client_args<'a>(url: &'a str, tls: bool, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![url];
    if tls {
        args.extend(["--ca-file", CA]);
    }
    args.extend_from_slice(extra);
    args
}

/// The next line `wshub-client` printed on stdout; fails after [`WAIT`].
fn next_line(client: &Proc) -> String {
    client.stdout.next(WAIT).unwrap_or_else(|| {
        panic!(
            "wshub-client printed nothing in time; stderr: {:?}",
            client.stderr.all()
        )
    })
}

/// 32-bit FNV-1a, as the helper programs print it.
fn fnv1a(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    });
    format!("{hash:08x}")
}

/// How a helper program reports a received text message.
fn text_event(text: &str) -> String {
    let shown = if text.len() <= 256 { text } else { "" };
    format!("text {} {} {shown}", text.len(), fnv1a(text.as_bytes()))
}

/// How a helper program reports a received binary message.
fn binary_event(data: &[u8]) -> String {
    let shown: String = if data.len() <= 256 {
        data.iter().map(|b| format!("{b:02x}")).collect()
    } else {
        String::new()
    };
    format!("binary {} {} {shown}", data.len(), fnv1a(data))
}

/// What the helpers' `bigtext N` sends.
fn big_text(n: usize) -> String {
    (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect()
}

/// What the helpers' `bigbinary N` sends.
fn big_binary(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}
