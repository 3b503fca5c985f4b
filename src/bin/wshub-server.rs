//! `wshub-server`: argument parsing, logging set-up, console and signals;
//! everything else is the `wshub` library.

use std::fs::OpenOptions;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;

use log::{info, LevelFilter};
use simplelog::{format_description, CombinedLogger, ConfigBuilder, SharedLogger, WriteLogger};
use wshub::config::{parse_duration, parse_size};
use wshub::console::run_console;
use wshub::log_lines::Lines;
use wshub::{Server, ServerConfig, ServerHandle};

const USAGE: &str = "\
usage: wshub-server [OPTIONS]

A WebSocket hub: clients connect to ws://HOST:PORT/[ROOM/]NAME and chat.
Every option can also come from the environment variable shown
(command-line flags win).

options:
  --bind ADDR:PORT           listen address; port 0 picks a free port
                             [default: 127.0.0.1:8000] (WSHUB_BIND)
  --mode chat|echo           chat: route by name and room; echo: send back
                             [default: chat] (WSHUB_MODE)
  --max-message-size BYTES   larger messages close the client with 1009
                             [default: 1MiB] (WSHUB_MAX_MESSAGE_SIZE)
  --offline-queue N          messages kept per offline name [default: 100]
                             (WSHUB_OFFLINE_QUEUE)
  --offline-bytes BYTES      bytes kept for all offline names [default: 8MiB]
                             (WSHUB_OFFLINE_BYTES)
  --send-queue N             messages waiting for a client whose socket is
                             full before it is closed with 1008 (4x that in
                             any case) [default: 1024] (WSHUB_SEND_QUEUE)
  --send-queue-bytes BYTES   the same bound in bytes [default: 4MiB]
                             (WSHUB_SEND_QUEUE_BYTES)
  --handshake-timeout SECS   time to send a complete request [default: 10]
                             (WSHUB_HANDSHAKE_TIMEOUT)
  --max-header-bytes BYTES   larger request heads get 431 [default: 16KiB]
                             (WSHUB_MAX_HEADER_BYTES)
  --ping-interval SECS       ping clients silent this long; 0 = never
                             [default: 30] (WSHUB_PING_INTERVAL)
  --idle-timeout SECS        drop a pinged client silent this much longer
                             [default: 30] (WSHUB_IDLE_TIMEOUT)
  --thread-stack BYTES       stack of each client thread [default: 128KiB]
                             (WSHUB_THREAD_STACK)
  --max-clients N            connections at once; more get HTTP 503
                             [default: 1000] (WSHUB_MAX_CLIENTS)
  --max-clients-per-ip N     connections at once from one IP address;
                             0 = no limit [default: 0]
                             (WSHUB_MAX_CLIENTS_PER_IP)
  --rate-limit MSGS_PER_SEC  close a client sending faster with 1008;
                             bursts of 2 seconds' worth are allowed
                             [default: no limit] (WSHUB_RATE_LIMIT)

security:
  --token SECRET             clients must send 'Authorization: Bearer
                             SECRET' or ?token=SECRET, else 401; prefer the
                             environment so it stays out of ps (WSHUB_TOKEN)
  --allow-origin ORIGIN      browsers may connect only from these origins
                             (repeatable; others get 403; clients without
                             Origin are allowed) (WSHUB_ALLOW_ORIGIN, comma-
                             separated)
  --protocol NAME            subprotocols spoken, in order of preference
                             (repeatable; a client offering only others gets
                             400) (WSHUB_PROTOCOL, comma-separated)
  --tls-cert PEM             serve wss:// with this certificate chain ...
  --tls-key PEM              ... and its PKCS#8 key (WSHUB_TLS_CERT,
                             WSHUB_TLS_KEY)
  --tls-pkcs12 FILE          or with this PKCS#12 bundle ...
  --tls-password PASS        ... and its password (WSHUB_TLS_PKCS12,
                             WSHUB_TLS_PASSWORD)
  --log-level LEVEL          error|warn|info|debug|trace [default: info]
                             (WSHUB_LOG_LEVEL)
  --log-file PATH            also append the log to PATH (WSHUB_LOG_FILE)
  --no-web                   do not serve the browser page at /
                             (WSHUB_NO_WEB=1)
  --no-api                   do not serve /api/clients and /api/stats
                             (WSHUB_NO_API=1)
  -h, --help                 print this help
  -V, --version              print the version

Durations take s, ms or m suffixes (10, 500ms); sizes take KiB, MiB.

console (standard input; end of input does not stop the server):
  TEXT                 send TEXT to every client (//TEXT sends /TEXT)
  /list, /to NAME TEXT, /kick NAME [REASON], /stats, /quit, /help

SIGINT and SIGTERM close every client with 1001 and exit 0.
exit codes: 0 stopped normally, 1 runtime error (e.g. address in use),
2 usage error.";

/// Flags that take a value; each also reads `WSHUB_<FLAG>` from the
/// environment.
const VALUE_FLAGS: &[&str] = &[
    "bind",
    "mode",
    "max-message-size",
    "offline-queue",
    "offline-bytes",
    "send-queue",
    "send-queue-bytes",
    "handshake-timeout",
    "max-header-bytes",
    "ping-interval",
    "idle-timeout",
    "thread-stack",
    "log-level",
    "log-file",
    "max-clients",
    "max-clients-per-ip",
    "rate-limit",
    "token",
    "allow-origin",
    "protocol",
    "tls-cert",
    "tls-key",
    "tls-pkcs12",
    "tls-password",
];

/// Flags that may be given several times; their environment variables
/// hold comma-separated lists.
const LISTS: &[&str] = &["allow-origin", "protocol"];

/// Flags without a value; `WSHUB_<FLAG>=1` (or true/yes) sets them too.
const SWITCHES: &[&str] = &["no-web", "no-api"];

struct Options {
    bind: String,
    cfg: ServerConfig,
    log_level: LevelFilter,
    log_file: Option<PathBuf>,
    tls: TlsFiles,
}

/// TLS file names, loaded once all flags are known.
#[derive(Default)]
struct TlsFiles {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    pkcs12: Option<PathBuf>,
    password: Option<String>,
}

enum Parsed {
    Run(Box<Options>),
    Exit(&'static str),
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(Parsed::Run(opts)) => opts,
        Ok(Parsed::Exit(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("wshub-server: error: {msg} (see --help)");
            return ExitCode::from(2);
        }
    };
    match run(*opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("wshub-server: error: {msg}");
            ExitCode::from(1)
        }
    }
}

fn run(opts: Options) -> Result<(), String> {
    init_logging(opts.log_level, opts.log_file.as_ref())?;
    raise_fd_limit(opts.cfg.max_clients);
    let server = Server::bind_with_config(&opts.bind, opts.cfg).map_err(|e| e.to_string())?;
    let handle = server.handle();
    start_signal_thread(handle.clone())?;
    thread::Builder::new()
        .name("wshub-console".into())
        .spawn(move || {
            run_console(io::stdin().lock(), io::stdout(), &handle);
        })
        .map_err(|e| format!("cannot start the console thread: {e}"))?;
    server.wait();
    info!("stopped");
    Ok(())
}

fn parse_args() -> Result<Parsed, String> {
    use lexopt::prelude::*;
    let mut opts = Options {
        bind: "127.0.0.1:8000".into(),
        cfg: ServerConfig::default(),
        log_level: LevelFilter::Info,
        log_file: None,
        tls: TlsFiles::default(),
    };
    // Command-line values first, so an environment variable is read only
    // for flags the command line does not give (flags win).
    let mut given: Vec<(String, String)> = Vec::new();
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Exit(USAGE)),
            Short('V') | Long("version") => {
                return Ok(Parsed::Exit(concat!(
                    "wshub-server ",
                    env!("CARGO_PKG_VERSION")
                )))
            }
            Long(flag) if VALUE_FLAGS.contains(&flag) => {
                let flag = flag.to_string();
                let value = parser.value().map_err(|e| e.to_string())?;
                let value = value
                    .into_string()
                    .map_err(|_| format!("--{flag}: value is not valid UTF-8"))?;
                given.push((flag, value));
            }
            Long(flag) if SWITCHES.contains(&flag) => given.push((flag.to_string(), String::new())),
            other => return Err(other.unexpected().to_string()),
        }
    }
    let on_command_line = |flag: &str| given.iter().any(|(f, _)| f == flag);
    for flag in VALUE_FLAGS.iter().filter(|f| !on_command_line(f)) {
        let var = env_name(flag);
        let Ok(value) = std::env::var(&var) else {
            continue;
        };
        let items: Vec<&str> = if LISTS.contains(flag) {
            value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .collect()
        } else {
            vec![value.as_str()]
        };
        for item in items {
            set(&mut opts, flag, item).map_err(|e| format!("{var}: {e}"))?;
        }
    }
    for flag in SWITCHES.iter().filter(|f| !on_command_line(f)) {
        let var = env_name(flag);
        if let Ok(value) = std::env::var(&var) {
            match value.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" => switch(&mut opts, flag),
                "0" | "false" | "no" | "" => {}
                _ => return Err(format!("{var}: expected 1 or 0, got {value:?}")),
            }
        }
    }
    for (flag, value) in &given {
        if SWITCHES.contains(&flag.as_str()) {
            switch(&mut opts, flag);
        } else {
            set(&mut opts, flag, value).map_err(|e| format!("--{flag}: {e}"))?;
        }
    }
    load_tls(&mut opts)?;
    opts.cfg.validate().map_err(|e| e.to_string())?;
    Ok(Parsed::Run(Box::new(opts)))
}

/// `--max-message-size` reads `WSHUB_MAX_MESSAGE_SIZE`.
fn env_name(flag: &str) -> String {
    format!("WSHUB_{}", flag.to_uppercase().replace('-', "_"))
}

/// Applies one flag without a value.
fn switch(opts: &mut Options, flag: &str) {
    match flag {
        "no-web" => opts.cfg.web = false,
        "no-api" => opts.cfg.api = false,
        _ => unreachable!("every flag in SWITCHES is handled"),
    }
}

/// Applies one flag's value (from the command line or the environment).
fn set(opts: &mut Options, flag: &str, value: &str) -> Result<(), String> {
    let count = |v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|_| format!("not a count: {v:?}"))
    };
    let size = |v: &str| parse_size(v).map_err(|e| e.to_string());
    let secs = |v: &str| parse_duration(v).map_err(|e| e.to_string());
    let cfg = &mut opts.cfg;
    match flag {
        "bind" => opts.bind = value.to_string(),
        "mode" => cfg.mode = value.parse().map_err(|e: wshub::Error| e.to_string())?,
        "max-message-size" => cfg.max_message_size = size(value)?,
        "offline-queue" => cfg.offline_queue = count(value)?,
        "offline-bytes" => cfg.offline_bytes = size(value)?,
        "send-queue" => cfg.send_queue = count(value)?,
        "send-queue-bytes" => cfg.send_queue_bytes = size(value)?,
        "handshake-timeout" => cfg.handshake_timeout = secs(value)?,
        "max-header-bytes" => cfg.max_header_bytes = size(value)?,
        "ping-interval" => cfg.ping_interval = Some(secs(value)?).filter(|d| !d.is_zero()),
        "idle-timeout" => cfg.idle_timeout = secs(value)?,
        "thread-stack" => cfg.thread_stack = size(value)?,
        "log-level" => {
            opts.log_level = match value {
                "error" => LevelFilter::Error,
                "warn" => LevelFilter::Warn,
                "info" => LevelFilter::Info,
                "debug" => LevelFilter::Debug,
                "trace" => LevelFilter::Trace,
                _ => {
                    return Err(format!(
                        "unknown level {value:?} (error|warn|info|debug|trace)"
                    ))
                }
            }
        }
        "log-file" => opts.log_file = Some(PathBuf::from(value)),
        "max-clients" => cfg.max_clients = count(value)?,
        "max-clients-per-ip" => cfg.max_clients_per_ip = count(value)?,
        "rate-limit" => {
            let rate: f64 = value
                .trim()
                .parse()
                .map_err(|_| format!("not a number: {value:?}"))?;
            cfg.rate_limit = Some(rate);
        }
        "token" => cfg.token = Some(value.to_string()),
        "allow-origin" => cfg.allowed_origins.push(value.trim().to_string()),
        "protocol" => cfg.protocols.push(value.trim().to_string()),
        "tls-cert" => opts.tls.cert = Some(PathBuf::from(value)),
        "tls-key" => opts.tls.key = Some(PathBuf::from(value)),
        "tls-pkcs12" => opts.tls.pkcs12 = Some(PathBuf::from(value)),
        "tls-password" => opts.tls.password = Some(value.to_string()),
        _ => unreachable!("every flag in VALUE_FLAGS is handled"),
    }
    Ok(())
}

/// Loads the TLS identity named by the flags, before anything binds.
fn load_tls(opts: &mut Options) -> Result<(), String> {
    let t = &opts.tls;
    let wanted = t.cert.is_some() || t.key.is_some() || t.pkcs12.is_some();
    if !wanted {
        return Ok(());
    }
    #[cfg(feature = "tls")]
    {
        use wshub::tls::ServerTls;
        let loaded =
            match (&t.cert, &t.key, &t.pkcs12) {
                (Some(cert), Some(key), None) => ServerTls::from_pem_files(cert, key),
                (None, None, Some(p12)) => {
                    ServerTls::from_pkcs12_file(p12, t.password.as_deref().unwrap_or(""))
                }
                (None, None, None) => unreachable!(),
                _ => return Err(
                    "give either --tls-cert with --tls-key, or --tls-pkcs12 (with --tls-password)"
                        .into(),
                ),
            };
        opts.cfg.tls = Some(loaded.map_err(|e| e.to_string())?);
        Ok(())
    }
    #[cfg(not(feature = "tls"))]
    Err("this build has no TLS support (rebuild with the `tls` feature)".into())
}

/// Logs to stderr and, with `--log-file`, to that file too, with
/// millisecond UTC timestamps. simplelog writes a line in several pieces;
/// [`Lines`] makes that one `write()` per line (15 system calls per
/// connect-and-close cycle became 4), and one per round of the hub's
/// events for the hub's join and leave lines.
fn init_logging(level: LevelFilter, file: Option<&PathBuf>) -> Result<(), String> {
    let config = ConfigBuilder::new()
        .set_time_format_custom(format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
        .set_thread_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .build();
    let mut loggers: Vec<Box<dyn SharedLogger>> = vec![WriteLogger::new(
        level,
        config.clone(),
        Lines::new(io::stderr()),
    )];
    if let Some(path) = file {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
        loggers.push(WriteLogger::new(level, config, Lines::new(f)));
    }
    CombinedLogger::init(loggers).map_err(|e| format!("cannot set up logging: {e}"))
}

/// Raises the soft open-file limit to the hard one: each client holds
/// three descriptors (socket, epoll set, waker), and the usual soft limit of
/// 1024 would stop near 340 clients.
fn raise_fd_limit(max_clients: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if setrlimit(Resource::Nofile, limit).is_ok() {
            log::debug!(
                "open-file limit raised from {before:?} to {:?}",
                limit.current
            );
        }
    }
    // The server itself holds about ten descriptors (standard streams,
    // listener, epoll sets, log file); the rest is headroom for
    // connections being answered or refused.
    const OWN: u64 = 16;
    const HEADROOM: u64 = 64;
    let now = getrlimit(Resource::Nofile).current;
    let needed = max_clients as u64 * 3 + HEADROOM;
    if let Some(now) = now.filter(|n| *n < needed) {
        log::warn!(
            "open-file limit {now} is below the {needed} that --max-clients {max_clients} needs; \
             clients past about {} will be refused",
            now.saturating_sub(OWN) / 3
        );
    }
}

/// SIGINT/SIGTERM start a graceful shutdown; a second one exits at once.
fn start_signal_thread(handle: ServerHandle) -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    thread::Builder::new()
        .name("wshub-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                seen += 1;
                if seen > 1 {
                    std::process::exit(130);
                }
                let name = if signal == SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                info!("{name} received: shutting down");
                handle.shutdown();
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}
