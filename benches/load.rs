//! Load benchmark for wshub, or for any WebSocket relay given a URL.
//!
//! ```text
//! cargo bench --bench load -- [OPTIONS]
//! cargo bench --bench load -- --scenario fanout --seconds 2 --receivers 20
//! cargo bench --bench load -- --scenario all
//! cargo bench --bench load -- --url ws://127.0.0.1:9000 --pid 1234
//! cargo bench --bench load -- --server-cmd 'node benches/peers/node-ws/relay.js'
//! ```
//!
//! Each scenario prints a table and then one JSON line (`grep '^{'`).
//! Run `cargo bench --bench load -- --help` for every option, and see
//! `benches/peers/README.md` for the relays in other stacks that the same
//! run can measure side by side.
//!
//! # What is measured, and how
//!
//! - Traffic scenarios use one room: receivers `/bench/r0…`, a sender
//!   `/bench/sender`. Each message starts with a stamp (sequence number,
//!   send time on this process's monotonic clock), so receivers count
//!   lost and out-of-order messages and one-way latency with no clock
//!   skew. Warm-up messages first prove every receiver is routed to.
//! - CPU comes from `/proc`: the server's (its process, or wshub's own
//!   `wshub-…` threads when it runs in this process), the generator's, and
//!   the rest of the machine's, which is noise to watch on a shared box.
//!   Context switches per delivery tell how often the server's threads
//!   sleep and wake.
//! - Memory is the server process's `VmRSS`, so the idle and footprint
//!   scenarios spawn the release `wshub-server` (or the `--server-cmd`).
//!
//! # Layout
//!
//! `load/wire.rs` is the generator's own minimal WebSocket client
//! (handshake, masked frames, a frame walker that keeps only each
//! message's stamp); `load/receivers.rs` runs the receiving connections;
//! `load/target.rs` starts or finds the server; `load/procfs.rs` reads
//! `/proc`; `load/fanout.rs` holds the fan-out and latency scenarios;
//! `load/idle.rs` the idle, connect and footprint ones; `load/report.rs`
//! prints. They live under `load/` with `#[path]` so Cargo does not take
//! them for benches of their own.

#![forbid(unsafe_code)]

#[path = "load/fanout.rs"]
mod fanout;
#[path = "load/idle.rs"]
mod idle;
#[path = "load/procfs.rs"]
mod procfs;
#[path = "load/receivers.rs"]
mod receivers;
#[path = "load/report.rs"]
mod report;
#[path = "load/target.rs"]
mod target;
#[path = "load/wire.rs"]
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use receivers::ClientKind;

const USAGE: &str = "\
usage: cargo bench --bench load -- [OPTIONS]

Drives wshub (started in-process, or the release wshub-server where the
server's own memory and CPU are measured) or any relay at --url, whose
plain text messages must go to every other client of the sender's room
(/ROOM/NAME).

scenarios (--scenario, default all):
  fanout      throughput: N receivers + 1 sender, windowed
  latency     one-way latency at a fixed delivery rate
  idle        K silent connections: server RSS per connection, idle CPU
  connect     connect + handshake + close cycles per second
  footprint   release binary sizes, server RSS right after start
  all         each of the above in turn

server:
  --url ws://HOST:PORT     drive this relay instead (loopback only)
  --pid PID                its process, for memory and CPU figures
  --server-cmd 'CMD ARGS'  spawn this relay (split on spaces); it must print
                           'listening on ws://HOST:PORT' on stdout or stderr
  --server-bin PATH        wshub-server to spawn [default: target/release,
                           built if missing]
  --server-args 'ARGS'     extra flags for the spawned wshub-server
  --spawn                  use the spawned wshub-server in every scenario
  --rebuild                first bring the release wshub-server and
                           wshub-client up to date (otherwise they are only
                           built when missing, and may be older than src/)

load:
  --receivers N      receivers in fanout/latency [default: 100]
  --size BYTES       message size, at least 32 [default: 64]
  --window W         fanout: most messages ahead of the slowest receiver
                     [default: 1000; less for big messages, 2 MiB in flight]
  --seconds S        fanout/latency/connect duration [default: 5]
  --warmup S         fanout/latency: run this long first, unmeasured, so
                     a JIT-compiled peer is warm [default: 1]
  --messages M       stop after M messages (connect: M cycles) instead
  --rate R           latency: deliveries/s over all receivers [default: 50000]
  --connections K    idle: connections to hold [default: 1000]
  --idle-seconds S   idle: quiet period measured [default: 10]
  --connectors C     threads opening connections [default: 4]
  --client raw|tungstenite
                     receivers: epoll threads walking frames, or one thread
                     with a tungstenite WebSocket per receiver [default: raw]
  --client-threads T raw receiver threads [default: 1]
  --recv-pause-us U  fanout: raw receivers sleep U µs after each wake-up, so
                     a server that writes frame by frame is read in fewer
                     calls (checks the generator is not the limit) [default: 0]
  --room NAME        room the clients join [default: bench]
  -h, --help         print this help";

/// Every option; see [`USAGE`].
pub struct Options {
    scenarios: Vec<String>,
    url: Option<String>,
    pid: Option<u32>,
    server_cmd: Option<String>,
    server_bin: Option<PathBuf>,
    server_args: String,
    spawn: bool,
    rebuild: bool,
    receivers: usize,
    size: usize,
    window: usize,
    seconds: f64,
    warmup: f64,
    messages: Option<u64>,
    rate: u64,
    connections: usize,
    idle_seconds: f64,
    connectors: usize,
    client: ClientKind,
    client_threads: usize,
    recv_pause: Duration,
    room: String,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            scenarios: Vec::new(),
            url: None,
            pid: None,
            server_cmd: None,
            server_bin: None,
            server_args: String::new(),
            spawn: false,
            rebuild: false,
            receivers: 100,
            size: 64,
            window: 1000,
            seconds: 5.0,
            warmup: 1.0,
            messages: None,
            rate: 50_000,
            connections: 1000,
            idle_seconds: 10.0,
            connectors: 4,
            client: ClientKind::Raw,
            client_threads: 1,
            recv_pause: Duration::ZERO,
            room: "bench".into(),
        }
    }
}

const SCENARIOS: [&str; 5] = ["fanout", "latency", "idle", "connect", "footprint"];

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("load: error: {e}\nTry 'cargo bench --bench load -- --help'.");
            return ExitCode::from(2);
        }
    };
    if opts.rebuild {
        if let Err(e) = target::build_release(&["wshub-server", "wshub-client"]) {
            eprintln!("load: {e}");
            return ExitCode::FAILURE;
        }
    }
    let mut failed = false;
    for scenario in &opts.scenarios {
        let result = match scenario.as_str() {
            "fanout" => fanout::fanout(&opts),
            "latency" => fanout::latency(&opts),
            "idle" => idle::idle(&opts),
            "connect" => idle::connect(&opts),
            _ => idle::footprint(&opts),
        };
        if let Err(e) = result {
            eprintln!("load: {scenario}: {e}");
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Parses the command line; `Ok(None)` for `--help`.
fn parse_args() -> Result<Option<Options>, String> {
    use lexopt::prelude::*;
    let mut opts = Options::default();
    if std::env::args().len() == 1 {
        // No `--bench`: `cargo test --benches` (or `--all-targets`) runs
        // this as a test. Check that it works, quickly, in-process only.
        eprintln!("load: not run by `cargo bench`: quick smoke run");
        return Ok(Some(smoke_options()));
    }
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        let flag = match &arg {
            Long(name) => name.to_string(),
            Short('h') => return Ok(None),
            // `cargo bench` passes a filter or nothing; ignore plain words.
            Value(_) => continue,
            other => return Err(other.clone().unexpected().to_string()),
        };
        match flag.as_str() {
            "help" => return Ok(None),
            // Added by `cargo bench` to every harness = false bench.
            "bench" => {}
            "spawn" => opts.spawn = true,
            "rebuild" => opts.rebuild = true,
            _ => {
                let value = parser.value().map_err(|e| format!("--{flag}: {e}"))?;
                let value = value.string().map_err(|_| format!("--{flag}: not UTF-8"))?;
                set(&mut opts, &flag, value).map_err(|e| format!("--{flag}: {e}"))?;
            }
        }
    }
    check(&mut opts)?;
    Ok(Some(opts))
}

fn set(opts: &mut Options, flag: &str, value: String) -> Result<(), String> {
    fn num<T: std::str::FromStr>(v: &str) -> Result<T, String> {
        v.parse().map_err(|_| format!("not a number: {v:?}"))
    }
    match flag {
        "scenario" => opts.scenarios = value.split(',').map(String::from).collect(),
        "url" => opts.url = Some(value),
        "pid" => opts.pid = Some(num(&value)?),
        "server-cmd" => opts.server_cmd = Some(value),
        "server-bin" => opts.server_bin = Some(PathBuf::from(value)),
        "server-args" => opts.server_args = value,
        "receivers" => opts.receivers = num(&value)?,
        "size" => opts.size = num(&value)?,
        "window" => opts.window = num(&value)?,
        "seconds" => opts.seconds = num(&value)?,
        "warmup" => opts.warmup = num(&value)?,
        "messages" => opts.messages = Some(num(&value)?),
        "rate" => opts.rate = num(&value)?,
        "connections" => opts.connections = num(&value)?,
        "idle-seconds" => opts.idle_seconds = num(&value)?,
        "connectors" => opts.connectors = num(&value)?,
        "client" => {
            opts.client = match value.as_str() {
                "raw" => ClientKind::Raw,
                "tungstenite" => ClientKind::Tungstenite,
                _ => return Err(format!("{value:?} is not raw or tungstenite")),
            }
        }
        "client-threads" => opts.client_threads = num(&value)?,
        "recv-pause-us" => opts.recv_pause = Duration::from_micros(num(&value)?),
        "room" => opts.room = value,
        _ => return Err("unknown option".into()),
    }
    Ok(())
}

/// A run of a second or two that touches every in-process scenario.
fn smoke_options() -> Options {
    Options {
        scenarios: vec!["fanout".into(), "latency".into(), "connect".into()],
        receivers: 5,
        seconds: 0.3,
        warmup: 0.1,
        rate: 5_000,
        connectors: 2,
        ..Options::default()
    }
}

/// Fills in `all` and rejects values that would make a run meaningless
/// or unbounded.
fn check(opts: &mut Options) -> Result<(), String> {
    if opts.scenarios.is_empty() || opts.scenarios.iter().any(|s| s == "all") {
        opts.scenarios = SCENARIOS.iter().map(|s| s.to_string()).collect();
    }
    if let Some(bad) = opts
        .scenarios
        .iter()
        .find(|s| !SCENARIOS.contains(&s.as_str()))
    {
        return Err(format!("--scenario: unknown {bad:?}"));
    }
    if opts.size < wire::STAMP || opts.size > 64 << 20 {
        return Err(format!("--size must be {}..=64MiB bytes", wire::STAMP));
    }
    let bounded = |s: f64| s > 0.0 && s <= 3600.0;
    if !bounded(opts.seconds) || !bounded(opts.idle_seconds) {
        return Err("--seconds and --idle-seconds must be in (0, 3600]".into());
    }
    if opts.receivers == 0 || opts.connections == 0 || opts.connectors == 0 || opts.window == 0 {
        return Err(
            "--receivers, --connections, --connectors and --window must be at least 1".into(),
        );
    }
    if opts.rate == 0 || opts.client_threads == 0 {
        return Err("--rate and --client-threads must be at least 1".into());
    }
    if !(0.0..=600.0).contains(&opts.warmup) {
        return Err("--warmup must be in [0, 600]".into());
    }
    if opts.recv_pause > Duration::from_millis(100) {
        return Err("--recv-pause-us must be at most 100000".into());
    }
    if opts.room.contains(['/', '?', ' ']) {
        return Err("--room must be one path segment".into());
    }
    Ok(())
}
