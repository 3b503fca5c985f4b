//! `wshub-client`: argument parsing, standard input and output; the
//! connection itself is the `wshub` library's [`ReconnectingClient`].

use std::io::{self, BufRead, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{never, select, Receiver};
use data_encoding::{BASE64, HEXLOWER};
use wshub::config::parse_duration;
use wshub::{ClientConfig, ClientEvent, Message, ReconnectConfig, ReconnectingClient};

const USAGE: &str = "\
usage: wshub-client [OPTIONS] URL

Connects to a WebSocket URL (ws://HOST:PORT/[ROOM/]NAME), prints every
received text message to stdout on its own line, and sends each line of
stdin as a text message. Status lines go to stderr.

options:
  --send TEXT            send TEXT after connecting, before stdin (repeatable)
  --no-stdin             do not read stdin
  --count N              exit 0 after receiving N messages
  --timeout SECS         exit 3 if not done within SECS
  --header 'K: V'        extra handshake header (repeatable)
  --origin ORIGIN        Origin header
  --protocol NAME        offer subprotocol NAME (repeatable, in order)
  --binary               send stdin lines as binary messages
  --binary-format F      how received binary messages are printed:
                         hex (default) or base64, as one line
                         '[binary N bytes] DATA'
  --reconnect            reconnect after a drop or failed connect
  --retry-interval SECS  pause between attempts [default: 3] (+0-10% jitter)
  --max-retries N        give up after N failed attempts in a row
                         [default: unlimited with --reconnect]
  --on-connect TEXT      send TEXT after every connect (repeatable)
  --ping-interval SECS   ping a server silent this long; drop it if it
                         stays silent --idle-timeout more (then
                         --reconnect applies)
  --idle-timeout SECS    [default: 30]
  --token SECRET         send 'Authorization: Bearer SECRET' (or set
                         WSHUB_TOKEN)
  --ca-file PEM          also trust this CA for wss:// (repeatable)
  --insecure             do not verify the wss:// certificate (says so)
  -q, --quiet            no status lines on stderr (errors still print)
  -h, --help             print this help
  -V, --version          print the version

End of stdin sends a close frame (1000) once everything typed was sent,
waits briefly for the server's answer and exits; with --count, end of
stdin waits for the count instead. Lines typed while disconnected are
queued (up to 1000) and sent after the reconnect.

exit codes: 0 done (closed normally, count reached), 1 connection or
protocol error, 2 usage error, 3 timeout.";

#[derive(Clone, Copy)]
enum BinaryFormat {
    Hex,
    Base64,
}

struct Options {
    url: String,
    send: Vec<String>,
    stdin: bool,
    count: Option<u64>,
    timeout: Option<Duration>,
    binary: bool,
    binary_format: BinaryFormat,
    quiet: bool,
    cfg: ClientConfig,
    rcfg: ReconnectConfig,
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(Some(opts)) => opts,
        Ok(None) => return ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("wshub-client: error: {msg} (see --help)");
            return ExitCode::from(2);
        }
    };
    ExitCode::from(run(opts))
}

fn parse_args() -> Result<Option<Options>, String> {
    use lexopt::prelude::*;
    let mut opts = Options {
        url: String::new(),
        send: Vec::new(),
        stdin: true,
        count: None,
        timeout: None,
        binary: false,
        binary_format: BinaryFormat::Hex,
        quiet: false,
        cfg: ClientConfig::default(),
        rcfg: ReconnectConfig::default().max_retries(Some(0)),
    };
    let mut reconnect = false;
    let mut max_retries = None;
    let mut url = None;
    let mut parser = lexopt::Parser::from_env();
    let err = |e: lexopt::Error| e.to_string();
    while let Some(arg) = parser.next().map_err(err)? {
        match arg {
            Short('h') | Long("help") => {
                println!("{USAGE}");
                return Ok(None);
            }
            Short('V') | Long("version") => {
                println!("wshub-client {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            Long("send") => opts.send.push(string(&mut parser)?),
            Long("no-stdin") => opts.stdin = false,
            Long("count") => opts.count = Some(number(&mut parser, "count")?),
            Long("timeout") => opts.timeout = Some(duration(&mut parser, "timeout")?),
            Long("header") => {
                let h = string(&mut parser)?;
                let (k, v) = h
                    .split_once(':')
                    .ok_or_else(|| format!("--header: expected 'Name: value', got {h:?}"))?;
                opts.cfg.headers.push((k.trim().into(), v.trim().into()));
            }
            Long("origin") => opts.cfg.origin = Some(string(&mut parser)?),
            Long("protocol") => opts.cfg.protocols.push(string(&mut parser)?),
            Long("binary") => opts.binary = true,
            Long("binary-format") => {
                opts.binary_format = match string(&mut parser)?.as_str() {
                    "hex" => BinaryFormat::Hex,
                    "base64" => BinaryFormat::Base64,
                    other => {
                        return Err(format!("--binary-format: {other:?} is not hex or base64"))
                    }
                }
            }
            Long("reconnect") => reconnect = true,
            Long("retry-interval") => {
                opts.rcfg.retry_interval = duration(&mut parser, "retry-interval")?
            }
            Long("max-retries") => max_retries = Some(number(&mut parser, "max-retries")? as u32),
            Long("on-connect") => opts
                .rcfg
                .on_connect
                .push(Message::text(string(&mut parser)?)),
            Long("ping-interval") => {
                let d = duration(&mut parser, "ping-interval")?;
                opts.cfg.ping_interval = Some(d).filter(|d| !d.is_zero());
            }
            Long("token") => opts.cfg.token = Some(string(&mut parser)?),
            Long("ca-file") => {
                let path = string(&mut parser)?;
                let pem = std::fs::read(&path)
                    .map_err(|e| format!("--ca-file: cannot read {path}: {e}"))?;
                opts.cfg.ca_pem.push(pem);
            }
            Long("insecure") => opts.cfg.insecure = true,
            Long("idle-timeout") => opts.cfg.idle_timeout = duration(&mut parser, "idle-timeout")?,
            Short('q') | Long("quiet") => opts.quiet = true,
            Value(v) if url.is_none() => {
                url = Some(v.into_string().map_err(|_| "URL is not valid UTF-8")?)
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    opts.url = url.ok_or("missing URL (e.g. ws://127.0.0.1:8000/alice)")?;
    if opts.cfg.token.is_none() {
        opts.cfg.token = std::env::var("WSHUB_TOKEN").ok().filter(|t| !t.is_empty());
    }
    if !opts.url.starts_with("ws://") && !opts.url.starts_with("wss://") {
        return Err(format!(
            "URL must start with ws:// or wss://, got {:?}",
            opts.url
        ));
    }
    if reconnect {
        opts.rcfg.max_retries = max_retries;
    } else if max_retries.is_some() {
        return Err("--max-retries needs --reconnect".into());
    }
    Ok(Some(opts))
}

fn string(parser: &mut lexopt::Parser) -> Result<String, String> {
    let v = parser.value().map_err(|e| e.to_string())?;
    v.into_string()
        .map_err(|_| "value is not valid UTF-8".into())
}

fn number(parser: &mut lexopt::Parser, flag: &str) -> Result<u64, String> {
    let v = string(parser)?;
    v.parse()
        .map_err(|_| format!("--{flag}: not a whole number: {v:?}"))
}

fn duration(parser: &mut lexopt::Parser, flag: &str) -> Result<Duration, String> {
    parse_duration(&string(parser)?).map_err(|e| format!("--{flag}: {e}"))
}

/// Runs the client; returns the exit code.
fn run(opts: Options) -> u8 {
    if opts.cfg.insecure && opts.url.starts_with("wss://") {
        eprintln!("wshub-client: warning: --insecure: the server's certificate is not verified");
    }
    let client = match ReconnectingClient::start(&opts.url, opts.cfg.clone(), opts.rcfg.clone()) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("wshub-client: error: {e}");
            return 1;
        }
    };
    for text in &opts.send {
        let _ = client.send(Message::text(text.clone()));
    }
    let stdin_done = if opts.stdin {
        read_stdin(client.clone(), opts.binary)
    } else {
        never()
    };
    Session::new(&opts).run(&client, &stdin_done)
}

/// Sends stdin lines from a thread; the returned channel closes at EOF.
fn read_stdin(client: Arc<ReconnectingClient>, binary: bool) -> Receiver<()> {
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
    thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let line = line.strip_suffix('\r').unwrap_or(&line).to_string();
            let msg = if binary {
                Message::binary(line.into_bytes())
            } else {
                Message::text(line)
            };
            if client.send(msg).is_err() {
                break;
            }
        }
        drop(done_tx);
    });
    done_rx
}

/// The main loop's state.
struct Session<'a> {
    opts: &'a Options,
    deadline: Option<Instant>,
    received: u64,
    closing: bool,
    last_close_normal: bool,
    // The last connect attempt failed (cleared by a successful connect).
    failed: bool,
    out: io::StdoutLock<'static>,
}

impl<'a> Session<'a> {
    fn new(opts: &'a Options) -> Self {
        Session {
            opts,
            deadline: opts.timeout.map(|t| Instant::now() + t),
            received: 0,
            closing: false,
            last_close_normal: false,
            failed: false,
            out: io::stdout().lock(),
        }
    }

    fn status(&self, line: &str) {
        if !self.opts.quiet {
            eprintln!("{line}");
        }
    }

    fn run(mut self, client: &ReconnectingClient, stdin_done: &Receiver<()>) -> u8 {
        let mut stdin_done = stdin_done.clone();
        if self.count_reached() {
            self.close(client);
        }
        loop {
            let timeout = match self.deadline {
                Some(d) => crossbeam_channel::at(d),
                None => never(),
            };
            select! {
                recv(client.events()) -> event => match event {
                    Ok(ClientEvent::Stopped) | Err(_) => return self.exit_code(),
                    Ok(event) => self.on_event(event, client),
                },
                recv(stdin_done) -> _ => {
                    stdin_done = never();
                    if self.opts.count.is_none() {
                        self.close(client);
                    }
                }
                recv(timeout) -> _ => {
                    let secs = self.opts.timeout.unwrap_or_default().as_secs_f64();
                    eprintln!("wshub-client: timeout: not done after {secs}s");
                    return 3;
                }
            }
        }
    }

    fn on_event(&mut self, event: ClientEvent, client: &ReconnectingClient) {
        match event {
            ClientEvent::Connected { protocol } => {
                self.failed = false;
                self.connected(protocol);
            }
            ClientEvent::Message(msg) => {
                self.print(&msg, client);
                self.received += 1;
                if self.count_reached() {
                    self.close(client);
                }
            }
            ClientEvent::Disconnected(info) => {
                self.last_close_normal = info.is_normal();
                self.status(&format!("disconnected ({info})"));
            }
            ClientEvent::ConnectFailed(err) => {
                self.failed = true;
                eprintln!("wshub-client: error: {err}");
            }
            ClientEvent::Reconnecting { delay, attempt } => {
                let secs = delay.as_secs_f64();
                self.status(&format!("reconnecting in {secs:.1}s (attempt {attempt})"));
            }
            ClientEvent::Stopped => {}
        }
    }

    fn connected(&self, protocol: Option<String>) {
        match protocol {
            Some(p) => self.status(&format!("connected to {} (protocol {p})", self.opts.url)),
            None => self.status(&format!("connected to {}", self.opts.url)),
        }
    }

    fn print(&mut self, msg: &Message, client: &ReconnectingClient) {
        let _ = match msg {
            Message::Text(text) => writeln!(self.out, "{text}"),
            Message::Binary(data) => {
                let encoded = match self.opts.binary_format {
                    BinaryFormat::Hex => HEXLOWER.encode(data),
                    BinaryFormat::Base64 => BASE64.encode(data),
                };
                writeln!(self.out, "[binary {} bytes] {encoded}", data.len())
            }
            _ => Ok(()),
        };
        if client.events().is_empty() {
            let _ = self.out.flush();
        }
    }

    fn count_reached(&self) -> bool {
        self.opts.count.is_some_and(|n| self.received >= n)
    }

    fn close(&mut self, client: &ReconnectingClient) {
        if !self.closing {
            self.closing = true;
            let _ = client.close(1000, "");
        }
    }

    fn exit_code(&mut self) -> u8 {
        let _ = self.out.flush();
        let done = if self.opts.count.is_some() {
            self.count_reached()
        } else {
            !self.failed && (self.closing || self.last_close_normal)
        };
        u8::from(!done)
    }
}
