//! The server under test, and what `/proc` says about it.
//!
//! Three kinds: wshub in this process (the default for the traffic
//! scenarios: nothing extra to build), a spawned process (the release
//! `wshub-server`, or any relay given by `--server-cmd`, needed wherever
//! RSS or CPU of the server alone is measured), or an external server at
//! `--url` with an optional `--pid` for its metrics.
//!
//! CPU of an in-process server is told apart from the generator's by
//! thread name: wshub names its threads `wshub-…`, the generator's are
//! `load-…`.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::procfs::{machine_busy_s, process_cpu_s, status_field, threads_usage, Usage};
use crate::Options;

/// How long a spawned server has to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// The line wshub-server (and the peers in benches/peers/) print.
const LISTENING: &str = "listening on ws://";

/// The server a scenario drives.
pub struct Target {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// What it is, for the reports.
    pub label: String,
    /// Process to read metrics from, if any.
    pub pid: Option<u32>,
    // Threads of this process to count as the server ("wshub-" prefix).
    in_process: Option<wshub::Server>,
    child: Option<Spawned>,
}

struct Spawned {
    child: Child,
    // Where its stdout and stderr go (removed when it stops).
    log: PathBuf,
}

/// What a spawned server wrote to stderr besides its address.
#[derive(Default)]
pub struct LogSummary {
    /// Lines at warn level or above.
    pub warnings: u64,
    /// The first such line.
    pub first_warning: Option<String>,
}

impl Target {
    /// Starts (or finds) the server for a scenario. `needs_process`: the
    /// scenario measures the server's own RSS/CPU, so it must be a
    /// separate process.
    pub fn start(opts: &Options, needs_process: bool) -> Result<Target, String> {
        if let Some(url) = &opts.url {
            return external(url, opts.pid);
        }
        if let Some(cmd) = &opts.server_cmd {
            let argv: Vec<String> = cmd.split_whitespace().map(String::from).collect();
            return spawn(&argv, cmd, &[]);
        }
        if needs_process || opts.spawn {
            let bin = server_bin(opts)?;
            let mut argv = vec![
                bin.display().to_string(),
                "--bind".into(),
                "127.0.0.1:0".into(),
            ];
            argv.extend(opts.server_args.split_whitespace().map(String::from));
            // Room for every connection a scenario opens, over the default
            // connection limit; an environment variable, so a build without
            // that setting ignores it, and --server-args still win.
            let wanted = opts.connections.max(opts.receivers + 1) + 64;
            let env = [("WSHUB_MAX_CLIENTS", wanted.max(1000).to_string())];
            return spawn(&argv, "wshub-server (release binary)", &env);
        }
        in_process()
    }

    /// The in-process server, if that is what runs.
    pub fn server(&self) -> Option<&wshub::Server> {
        self.in_process.as_ref()
    }

    /// CPU time and context switches of the server so far.
    pub fn usage(&self) -> Option<Usage> {
        if self.in_process.is_some() {
            return Some(threads_usage("self", Some("wshub-")));
        }
        let pid = self.pid?.to_string();
        let mut usage = threads_usage(&pid, None);
        // The process total also counts threads that have ended.
        usage.cpu_s = process_cpu_s(&pid)?;
        Some(usage)
    }

    /// Resident memory of the server process, KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        if self.in_process.is_some() {
            return None; // shared with the generator: meaningless
        }
        status_field(&self.pid?.to_string(), "VmRSS")
    }

    /// Threads of the server process.
    pub fn threads(&self) -> Option<u64> {
        status_field(&self.pid?.to_string(), "Threads")
    }

    /// Stops a server this run started; says what its log showed.
    pub fn stop(mut self) -> LogSummary {
        if let Some(server) = self.in_process.take() {
            server.shutdown();
        }
        match self.child.take() {
            Some(spawned) => spawned.stop(),
            None => LogSummary::default(),
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(spawned) = self.child.take() {
            spawned.stop();
        }
    }
}

impl Spawned {
    /// Whether the process has not exited yet.
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, a few seconds for a graceful exit, then SIGKILL.
    fn stop(mut self) -> LogSummary {
        if self.running() {
            let pid = self.child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.running() {
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let _ = std::fs::remove_file(&self.log);
        summarize(&text)
    }
}

fn external(url: &str, pid: Option<u32>) -> Result<Target, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("--url {url}: only ws:// URLs"))?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let addr = crate::wire::resolve(hostport).map_err(|e| format!("--url {url}: {e}"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "--url {url}: only loopback targets (127.0.0.0/8, ::1)"
        ));
    }
    Ok(Target {
        addr,
        label: format!("external {url}"),
        pid,
        in_process: None,
        child: None,
    })
}

fn in_process() -> Result<Target, String> {
    let server = wshub::Server::bind_with_config("127.0.0.1:0", wshub::ServerConfig::default())
        .map_err(|e| format!("starting wshub in-process: {e}"))?;
    Ok(Target {
        addr: server.local_addr(),
        label: "wshub (in-process, default config)".into(),
        pid: Some(std::process::id()),
        in_process: Some(server),
        child: None,
    })
}

/// Runs `argv` and waits for its `listening on ws://ADDR` line on stderr
/// or stdout. Both go to a file rather than a pipe: a pipe would wake a
/// reader thread of the generator for every line a server logs (two per
/// connection for wshub and the Qt relay), CPU the connect scenario would
/// charge to the servers that log.
fn spawn(argv: &[String], label: &str, env: &[(&str, String)]) -> Result<Target, String> {
    let (program, args) = argv.split_first().ok_or("empty --server-cmd")?;
    let log = log_path();
    let file = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let file2 = file.try_clone().map_err(|e| e.to_string())?;
    let child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file2)
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(e) => {
            let _ = std::fs::remove_file(&log);
            return Err(format!("cannot start {program}: {e}"));
        }
    };
    let mut spawned = Spawned { child, log };
    let deadline = Instant::now() + START_TIMEOUT;
    let addr = loop {
        let text = std::fs::read_to_string(&spawned.log).unwrap_or_default();
        if let Some(addr) = listening_addr(&text) {
            break addr;
        }
        if Instant::now() > deadline || !spawned.running() {
            let why = spawned.stop().first_warning.unwrap_or_default();
            return Err(format!(
                "{program} printed no '{LISTENING}ADDR' line: {why}"
            ));
        }
        thread::sleep(Duration::from_millis(10));
    };
    let addr = crate::wire::resolve(&addr).map_err(|e| format!("{program} address {addr}: {e}"))?;
    Ok(Target {
        addr,
        label: label.to_string(),
        pid: Some(spawned.child.id()),
        in_process: None,
        child: Some(spawned),
    })
}

/// A fresh file in the temporary directory for a spawned server's output.
fn log_path() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("wshub-load-{}-{n}.log", std::process::id()))
}

/// The `HOST:PORT` of the first `listening on ws://` line, once it is
/// complete.
fn listening_addr(text: &str) -> Option<String> {
    let at = text.find(LISTENING)?;
    let rest = &text[at + LISTENING.len()..];
    let line = &rest[..rest.find('\n')?];
    Some(line.split(['/', ' ']).next().unwrap_or(line).to_string())
}

/// Counts the warnings and errors in a server's output.
fn summarize(text: &str) -> LogSummary {
    let mut summary = LogSummary::default();
    for line in text.lines() {
        if !line.contains(LISTENING)
            && ["WARN", "ERROR", "error", "Error"]
                .iter()
                .any(|w| line.contains(w))
        {
            summary.warnings += 1;
            summary.first_warning.get_or_insert(line.to_string());
        }
    }
    summary
}

/// The release `wshub-server`: `--server-bin`, or target/release beside
/// this bench binary, built on demand.
fn server_bin(opts: &Options) -> Result<PathBuf, String> {
    if let Some(bin) = &opts.server_bin {
        return Ok(bin.clone());
    }
    let bin = release_dir()?.join("wshub-server");
    if !bin.exists() {
        build_release(&["wshub-server"])?;
    }
    Ok(bin)
}

/// target/release, found from this bench binary's own path
/// (target/release/deps/load-HASH).
pub fn release_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("cannot find target/release from {}", exe.display()))
}

/// `cargo build --release --bin NAME…` for binaries not built yet.
pub fn build_release(bins: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release"]);
    for bin in bins {
        cmd.args(["--bin", bin]);
    }
    eprintln!("building {}: {cmd:?}", bins.join(", "));
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build --release failed ({status})"));
    }
    Ok(())
}

/// CPU counters of the server, this process and the whole machine at one
/// moment; two of them tell who used the cores in between.
#[derive(Debug, Clone)]
pub struct Snapshot {
    server: Option<Usage>,
    own_cpu_s: Option<f64>,
    machine_busy_s: Option<f64>,
    // The server's CPU is part of this process's.
    in_process: bool,
}

/// CPU use between two [`Snapshot`]s, seconds (and server wake-ups).
#[derive(Debug, Clone, Default)]
pub struct Spent {
    /// The server under test (with its context switches).
    pub server: Option<Usage>,
    /// The load generator: this process, less an in-process server.
    pub generator_s: Option<f64>,
    /// Everything else on the machine (other people's builds and tests):
    /// noise, when it is not near zero.
    pub others_s: Option<f64>,
}

impl Target {
    /// Reads the CPU counters now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            server: self.usage(),
            own_cpu_s: process_cpu_s("self"),
            machine_busy_s: machine_busy_s(),
            in_process: self.in_process.is_some(),
        }
    }
}

impl Snapshot {
    /// What was spent from `earlier` to `self`.
    pub fn since(&self, earlier: &Snapshot) -> Spent {
        let server = self
            .server
            .as_ref()
            .zip(earlier.server.as_ref())
            .map(|(a, b)| a.since(b));
        let own = self.own_cpu_s.zip(earlier.own_cpu_s).map(|(a, b)| a - b);
        let machine = self
            .machine_busy_s
            .zip(earlier.machine_busy_s)
            .map(|(a, b)| a - b);
        let server_s = server.as_ref().map_or(0.0, |u| u.cpu_s);
        let (generator_s, others_s) = if self.in_process {
            (
                own.map(|o| o - server_s),
                machine.zip(own).map(|(m, o)| m - o),
            )
        } else {
            (own, machine.zip(own).map(|(m, o)| m - o - server_s))
        };
        Spent {
            server,
            generator_s,
            others_s: others_s.map(|s| s.max(0.0)),
        }
    }
}
