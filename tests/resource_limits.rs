//! Under a small address-space limit (as `prlimit --as` or `ulimit -v` set
//! on a board with little memory) or a small open-file limit, the server
//! refuses the clients that would not fit with 503 instead of crashing or
//! dropping them after the handshake, logs it, keeps serving the clients
//! it has, and takes new ones again once others leave.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::{read_http_head, url, WAIT};
use wshub::Client;

/// `VmSize` of a process, in KiB.
fn vm_size_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Sends an upgrade request for `name` on a raw socket: the socket and
/// the response head, or `None` when the server had closed it first.
fn upgrade(addr: std::net::SocketAddr, name: &str) -> Option<(TcpStream, String)> {
    let mut tcp = TcpStream::connect(addr).ok()?;
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let request = common::upgrade_request(addr, name, &[]);
    std::io::Write::write_all(&mut tcp, request.as_bytes()).ok()?;
    let head = read_http_head(&mut tcp);
    Some((tcp, head))
}

/// Tries a WebSocket handshake on a raw socket; the socket for 101.
fn handshake(addr: std::net::SocketAddr, name: &str) -> Option<TcpStream> {
    let (tcp, head) = upgrade(addr, name)?;
    head.starts_with("HTTP/1.1 101").then_some(tcp)
}

/// Starts the server binary under `prlimit --as=LIMIT` (bytes). With
/// `one_arena`, glibc's malloc keeps one arena, so the address space the
/// server needs is predictable; otherwise each new thread may reserve a
/// 64 MiB arena of its own, as it does by default.
fn limited_server(limit: Option<u64>, one_arena: bool) -> (common::Proc, std::net::SocketAddr) {
    let bin = env!("CARGO_BIN_EXE_wshub-server");
    let mut args = vec![];
    let as_arg;
    if let Some(limit) = limit {
        as_arg = format!("--as={limit}:{limit}");
        args.extend(["prlimit", as_arg.as_str(), "--"]);
    }
    args.extend([bin, "--bind", "127.0.0.1:0", "--mode", "echo"]);
    let envs: &[(&str, &str)] = if one_arena {
        &[("MALLOC_ARENA_MAX", "1")]
    } else {
        &[]
    };
    let proc = common::Proc::spawn_env(args[0], &args[1..], envs);
    let line = proc.stderr.wait_for("listening on ws");
    let addr = line.rsplit("://").next().unwrap().trim().parse().unwrap();
    (proc, addr)
}

/// Tries `n` handshakes one after the other: the connections that got 101,
/// kept open, and how many did not.
fn handshakes(addr: std::net::SocketAddr, n: usize) -> (Vec<TcpStream>, usize) {
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..n {
        match handshake(addr, &format!("c{i}")) {
            Some(tcp) => held.push(tcp),
            None => refused += 1,
        }
    }
    (held, refused)
}

/// Sends `text` through the echo server and expects it back.
fn echoes(client: &Client, text: &str) {
    client.send_text(text).unwrap();
    assert_eq!(client.recv_timeout(WAIT).unwrap().to_text().unwrap(), text);
}

/// Tries handshakes for up to five seconds while the server frees what
/// the clients that left held; `true` once one got 101.
fn handshake_again(addr: std::net::SocketAddr) -> bool {
    (0..50).any(|attempt| {
        let upgraded = handshake(addr, &format!("again{attempt}")).is_some();
        if !upgraded {
            std::thread::sleep(Duration::from_millis(100));
        }
        upgraded
    })
}

/// How much address space the server takes with one client come and
/// gone (so that every thread it starts with is running), in bytes.
fn base_size(one_arena: bool) -> u64 {
    let (probe, addr) = limited_server(None, one_arena);
    let client = Client::connect(&url(addr, "probe")).unwrap();
    client.send_text("hello").unwrap();
    client.recv_timeout(WAIT).unwrap();
    drop(client);
    vm_size_kib(probe.child.id()) * 1024
}

#[test]
fn out_of_address_space_refuses_new_clients_and_keeps_the_others() {
    let base = base_size(true);
    // Room for the reserve and about 20 clients, not for a hundred.
    let (mut server, addr) = limited_server(Some(base + (8 << 20) + 20 * (200 << 10)), true);

    let echo = Client::connect(&url(addr, "steady")).unwrap();
    echoes(&echo, "before");

    let (held, refused) = handshakes(addr, 100);
    assert!(
        refused > 0,
        "all 100 clients got in; the limit did not bite"
    );
    assert!(!held.is_empty(), "no client fitted under the limit");
    assert!(
        server.is_running(),
        "the server died under the limit: {:?}",
        server.stderr.all()
    );
    server.stderr.wait_for("address-space limit reached");

    // The client connected first still works.
    echoes(&echo, "during");

    // Once others leave, there is room again.
    drop(held);
    assert!(
        handshake_again(addr),
        "no new client accepted after the others left"
    );
    echoes(&echo, "after");
    assert!(server.is_running());
}

#[test]
fn malloc_arenas_under_a_limit_lead_to_refusals_not_an_abort() {
    // Room for a few of the 64 MiB arenas glibc gives new threads, and for
    // far fewer than 600 clients once they are taken: counted from the
    // size at start, the server used to let clients in until a small
    // allocation failed and the process aborted.
    let base = base_size(false);
    let (mut server, addr) = limited_server(Some(base + (120 << 20)), false);

    let echo = Client::connect(&url(addr, "steady")).unwrap();
    let (held, refused) = handshakes(addr, 600);
    let log = server.stderr.all().join("\n");
    assert!(server.is_running(), "the server died: {log}");
    assert!(
        !log.contains("memory allocation"),
        "an allocation failed: {log}"
    );
    assert!(refused > 0, "all 600 got in; the limit did not bite");
    server.stderr.wait_for("address-space limit reached");
    echoes(&echo, "still here");
    drop(held);
}

#[test]
fn out_of_file_descriptors_answers_503_and_recovers() {
    // Each client needs three descriptors (socket, epoll set, waker); 40
    // leave room for about ten.
    let bin = env!("CARGO_BIN_EXE_wshub-server");
    let args = ["--nofile=40:40", "--", bin, "--bind", "127.0.0.1:0"];
    let mut server = common::Proc::spawn("prlimit", &args);
    let line = server.stderr.wait_for("listening on ws");
    let addr: std::net::SocketAddr = line.rsplit("://").next().unwrap().trim().parse().unwrap();

    let steady = Client::connect(&url(addr, "steady")).unwrap();
    let mut held = Vec::new();
    let (mut upgraded, mut refused) = (0, 0);
    // Upgraded clients, kept open.
    for i in 0..20 {
        let (tcp, head) = upgrade(addr, &format!("c{i}")).expect("an answer");
        if head.starts_with("HTTP/1.1 101") {
            upgraded += 1;
            held.push(tcp);
        } else {
            assert!(
                head.starts_with("HTTP/1.1 503"),
                "neither 101 nor 503: {head:?}"
            );
            refused += 1;
        }
    }
    assert!(
        upgraded > 0 && refused > 0,
        "{upgraded} upgraded, {refused} refused"
    );
    server
        .stderr
        .wait_for("cannot start a session: Too many open files");

    // Every client that got 101 has a session: a message from `steady`
    // reaches all of them.
    steady.send_text("to all").unwrap();
    for tcp in &mut held {
        let mut frame = [0u8; 8];
        std::io::Read::read_exact(tcp, &mut frame).expect("an upgraded client has a session");
        assert_eq!(&frame, b"\x81\x06to all");
    }

    drop(held);
    assert!(
        handshake_again(addr),
        "no client accepted after the others left"
    );
    assert!(server.is_running());
}
