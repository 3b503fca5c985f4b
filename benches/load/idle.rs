//! What a server costs while nothing happens, per handshake, and on disk.
//!
//! - `idle`: K silent connections; the server's RSS per connection and its
//!   CPU and wake-ups over a quiet period. Needs the server as its own
//!   process, so by default the release `wshub-server` is spawned.
//! - `connect`: connector threads that each connect, handshake, close
//!   politely (close frame, wait for the answer) and start again.
//! - `footprint`: stripped binary sizes and the server's RSS right after
//!   start.

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::procfs::{self, thread_cpu_s};
use crate::receivers::{ClientKind, Pool, Settings};
use crate::report::{quantile, Report};
use crate::target::{self, Target};
use crate::wire::{self, Frame, Parser};
use crate::Options;

/// Time given to the server to finish its side of the last handshakes
/// before its RSS is read.
const SETTLE: Duration = Duration::from_millis(500);
/// Time one connect cycle may take before it counts as failed.
const CYCLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle-connections scenario.
pub fn idle(opts: &Options) -> Result<(), String> {
    let fd_limit = procfs::raise_nofile();
    let target = Target::start(opts, true)?;
    thread::sleep(SETTLE);
    let rss_before = target.rss_kib();
    let threads_before = target.threads();
    let paths: Vec<String> = (0..opts.connections)
        .map(|i| format!("/{}/idle{i}", opts.room))
        .collect();
    let opened = Instant::now();
    let conns = wire::connect_many(target.addr, &paths, opts.connectors)?;
    let open_s = opened.elapsed().as_secs_f64();
    // Silent clients that still answer pings, so a long --idle-seconds
    // does not get them dropped.
    let settings = Settings {
        kind: ClientKind::Raw,
        threads: 1,
        latency: false,
        epoch: Instant::now(),
        pause: Duration::ZERO,
    };
    let pool =
        Pool::start(conns, &settings).map_err(|e| format!("starting the idle clients: {e}"))?;
    thread::sleep(SETTLE);
    let rss_after = target.rss_kib();
    let threads_after = target.threads();
    let before = target.usage();
    let quiet = Instant::now();
    thread::sleep(Duration::from_secs_f64(opts.idle_seconds));
    let after = target.usage();
    let quiet_s = quiet.elapsed().as_secs_f64();
    let still_open = opts.connections - pool.shared.gone();
    let tally = pool.stop();

    let k = opts.connections as f64;
    let title = format!("{} silent connections, {}", opts.connections, target.label);
    let mut report = Report::new("idle", title);
    report.int("connections", "connections", opts.connections as u64);
    report.int(
        "open_at_end",
        "still open after the quiet period",
        still_open as u64,
    );
    report.num("open_s", "time to open them all", Some(open_s), 2, "s");
    report.num(
        "rss_before_kib",
        "server RSS before",
        rss_before.map(|v| v as f64),
        0,
        "KiB",
    );
    report.num(
        "rss_after_kib",
        "server RSS with the connections",
        rss_after.map(|v| v as f64),
        0,
        "KiB",
    );
    let per_conn = rss_before
        .zip(rss_after)
        .map(|(b, a)| (a as f64 - b as f64) / k);
    report.num(
        "rss_per_conn_kib",
        "server RSS per connection",
        per_conn,
        2,
        "KiB",
    );
    let threads = threads_before
        .zip(threads_after)
        .map(|(b, a)| a as f64 - b as f64);
    report.num("threads_added", "server threads added", threads, 0, "");
    let delta = before.zip(after).map(|(b, a)| a.since(&b));
    let cpu_pct = delta.as_ref().map(|d| d.cpu_s / quiet_s * 100.0);
    report.num("idle_seconds", "quiet period", Some(quiet_s), 1, "s");
    report.num(
        "idle_cpu_pct",
        "server CPU while idle",
        cpu_pct,
        2,
        "% of one core",
    );
    let wakeups = delta.map(|d| d.switches as f64 / quiet_s);
    report.num(
        "idle_wakeups_per_s",
        "server context switches while idle",
        wakeups,
        1,
        "/s",
    );
    report.int("pings", "pings answered", tally.pings);
    report.int("fd_limit", "open-file limit (soft)", fd_limit);
    report.text("server", "server", target.label.clone());
    target.stop();
    report.print();
    Ok(())
}

/// What one connector thread did.
#[derive(Default)]
struct Cycles {
    done: u64,
    failed: u64,
    first_error: Option<String>,
    // Connect + handshake time of each successful cycle, ns.
    handshake_ns: Vec<u64>,
    cpu_s: f64,
}

/// Handshakes-per-second scenario.
pub fn connect(opts: &Options) -> Result<(), String> {
    procfs::raise_nofile();
    let target = Target::start(opts, false)?;
    let before = target.snapshot();
    let main_cpu = thread_cpu_s();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(opts.seconds);
    let limit = opts.messages.unwrap_or(u64::MAX) / opts.connectors as u64;
    let path = format!("/{}/c", opts.room);
    let results = thread::scope(|scope| {
        let mut handles = Vec::new();
        for n in 0..opts.connectors {
            let (path, addr) = (&path, target.addr);
            let handle = thread::Builder::new()
                .name(format!("load-conn-{n}"))
                .spawn_scoped(scope, move || cycles(addr, path, deadline, limit))
                .map_err(|e| format!("cannot start a connector thread: {e}"))?;
            handles.push(handle);
        }
        let joined = handles.into_iter().filter_map(|h| h.join().ok());
        Ok::<Vec<Cycles>, String>(joined.collect())
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let spent = target.snapshot().since(&before);
    let client_cpu = results.iter().map(|c| c.cpu_s).sum::<f64>() + thread_cpu_s() - main_cpu;
    // An in-process server's connection threads end with each cycle and
    // take their CPU counters with them: there it is this process's CPU
    // less the generator threads' own.
    let server_cpu = match target.server() {
        Some(_) => spent
            .generator_s
            .zip(spent.server)
            .map(|(g, s)| g + s.cpu_s - client_cpu),
        None => spent.server.map(|s| s.cpu_s),
    };
    let mut total = Cycles::default();
    for c in results {
        total.done += c.done;
        total.failed += c.failed;
        total.first_error = total.first_error.or(c.first_error);
        total.handshake_ns.extend(c.handshake_ns);
    }
    total.handshake_ns.sort_unstable();
    let us = |q: f64| quantile(&total.handshake_ns, q).map(|ns| ns as f64 / 1e3);

    let title = format!("{} connector threads, {}", opts.connectors, target.label);
    let mut report = Report::new("connect", title);
    report.int("cycles", "connect + handshake + close cycles", total.done);
    report.int("failed", "failed", total.failed);
    if let Some(e) = total.first_error {
        report.text("first_error", "first error", e);
    }
    report.num("seconds", "elapsed", Some(elapsed), 2, "s");
    report.num(
        "handshakes_per_s",
        "handshakes/s",
        Some(total.done as f64 / elapsed),
        0,
        "",
    );
    report.num(
        "handshake_p50_us",
        "connect + handshake p50",
        us(0.5),
        0,
        "µs",
    );
    report.num(
        "handshake_p99_us",
        "connect + handshake p99",
        us(0.99),
        0,
        "µs",
    );
    report.num("server_cpu_s", "server CPU", server_cpu, 2, "s");
    let per = server_cpu.map(|s| s * 1e6 / total.done.max(1) as f64);
    report.num(
        "server_cpu_us_per_cycle",
        "server CPU per cycle",
        per,
        1,
        "µs",
    );
    report.num("client_cpu_s", "generator CPU", Some(client_cpu), 2, "s");
    report.num(
        "others_cpu_s",
        "other processes' CPU (noise)",
        spent.others_s,
        2,
        "s",
    );
    report.text("server", "server", target.label.clone());
    target.stop();
    report.print();
    Ok(())
}

/// One connector thread's loop, until `deadline` or `limit` cycles.
fn cycles(addr: SocketAddr, path: &str, deadline: Instant, limit: u64) -> Cycles {
    let mut out = Cycles::default();
    while Instant::now() < deadline && out.done + out.failed < limit {
        let t0 = Instant::now();
        match cycle(addr, path) {
            Ok(handshake) => {
                out.done += 1;
                out.handshake_ns.push((handshake - t0).as_nanos() as u64);
            }
            Err(e) => {
                out.failed += 1;
                out.first_error.get_or_insert(e);
                // A refused connection fails fast: do not spin on it.
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
    out.cpu_s = thread_cpu_s();
    out
}

/// Connect, handshake, send close 1000, read until the server's close
/// frame. Returns when the handshake completed.
fn cycle(addr: SocketAddr, path: &str) -> Result<Instant, String> {
    let (mut tcp, rest) = wire::connect(addr, path, CYCLE_TIMEOUT).map_err(|e| e.to_string())?;
    let handshake = Instant::now();
    tcp.set_read_timeout(Some(CYCLE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut frame = Vec::with_capacity(8);
    wire::push_close(&mut frame, 1000);
    tcp.write_all(&frame)
        .map_err(|e| format!("sending close: {e}"))?;
    let mut parser = Parser::default();
    let closed = Cell::new(false);
    let mut on = |f: Frame| closed.set(closed.get() | matches!(f, Frame::Close(_)));
    parser.feed(&rest, &mut on)?;
    let mut buf = [0u8; 512];
    while !closed.get() {
        match tcp.read(&mut buf) {
            Ok(0) => return Err("connection ended before the close answer".into()),
            Ok(n) => parser.feed(&buf[..n], &mut on)?,
            Err(e) => return Err(format!("waiting for the close answer: {e}")),
        }
    }
    Ok(handshake)
}

/// Footprint scenario: binary sizes and RSS at start.
pub fn footprint(opts: &Options) -> Result<(), String> {
    let mut report = Report::new("footprint", "binaries and server memory at start");
    if opts.url.is_none() && opts.server_cmd.is_none() {
        add_binary_rows(&mut report, opts)?;
    }
    let target = Target::start(opts, true)?;
    thread::sleep(SETTLE);
    let status = |field| {
        let pid = target.pid?.to_string();
        procfs::status_field(&pid, field).map(|kib| kib as f64 / 1024.0)
    };
    report.num(
        "rss_start_mib",
        "server RSS after start",
        status("VmRSS"),
        2,
        "MiB",
    );
    // File-backed pages are mostly shared libraries (libc, libcrypto),
    // counted in full although other processes share them.
    report.num(
        "rss_anon_mib",
        "  of which anonymous",
        status("RssAnon"),
        2,
        "MiB",
    );
    report.num(
        "rss_file_mib",
        "  of which file-backed",
        status("RssFile"),
        2,
        "MiB",
    );
    report.num(
        "rss_peak_start_mib",
        "server peak RSS so far",
        status("VmHWM"),
        2,
        "MiB",
    );
    report.num(
        "threads",
        "server threads",
        target.threads().map(|t| t as f64),
        0,
        "",
    );
    report.text("server", "server", target.label.clone());
    target.stop();
    report.print();
    Ok(())
}

/// Sizes of the release binaries as built and after `strip`.
fn add_binary_rows(report: &mut Report, opts: &Options) -> Result<(), String> {
    let dir = target::release_dir()?;
    let missing: Vec<&str> = ["wshub-server", "wshub-client"]
        .into_iter()
        .filter(|b| !dir.join(b).exists())
        .collect();
    if !missing.is_empty() && opts.server_bin.is_none() {
        target::build_release(&missing)?;
    }
    let bins = [
        (
            "server",
            opts.server_bin
                .clone()
                .unwrap_or_else(|| dir.join("wshub-server")),
        ),
        ("client", dir.join("wshub-client")),
    ];
    for (role, path) in bins {
        let size = std::fs::metadata(&path).map(|m| m.len()).ok();
        let kib = |b: Option<u64>| b.map(|b| b as f64 / 1024.0);
        let (key, stripped_key) = match role {
            "server" => ("server_bin_kib", "server_bin_stripped_kib"),
            _ => ("client_bin_kib", "client_bin_stripped_kib"),
        };
        report.num(key, &format!("wshub-{role} as built"), kib(size), 1, "KiB");
        report.num(
            stripped_key,
            &format!("wshub-{role} stripped"),
            kib(stripped_size(&path)),
            1,
            "KiB",
        );
    }
    report.text("bin_dir", "binaries in", dir.display().to_string());
    Ok(())
}

/// Size after `strip` of a copy (the release profile may strip already).
fn stripped_size(path: &std::path::Path) -> Option<u64> {
    let copy = std::env::temp_dir().join(format!("load-strip-{}", std::process::id()));
    std::fs::copy(path, &copy).ok()?;
    let ok = Command::new("strip")
        .arg(&copy)
        .status()
        .is_ok_and(|s| s.success());
    let size = std::fs::metadata(&copy).map(|m| m.len()).ok();
    let _ = std::fs::remove_file(&copy);
    size.filter(|_| ok)
}
