//! The receiving side of the generator: many connections, few threads.
//!
//! Two kinds, to check that the generator is not what is being measured:
//!
//! - `raw` (default): a few `load-recv-N` threads, each waiting in epoll
//!   on its share of the connections and walking frames with
//!   [`Parser`](crate::wire::Parser), which keeps only each message's stamp.
//! - `tungstenite`: one `load-tung-N` thread per connection with a
//!   blocking `tungstenite::WebSocket`, as a simple client would be written.
//!
//! Each receiver publishes how many messages it has seen in its own
//! cache-line-sized slot, which the sender reads to keep its window, and
//! unparks the sender after every read.

use std::io::{ErrorKind, Read};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use crate::wire::{self, Frame, Parser, WARMUP_SEQ};

/// How receivers are written; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// Epoll threads and a frame walker.
    Raw,
    /// A thread and a tungstenite WebSocket per connection.
    Tungstenite,
}

/// Latency samples one receiver thread keeps (80 MB); later ones are
/// dropped, so a long run cannot eat the machine's memory.
const MAX_SAMPLES: usize = 10_000_000;
/// Bytes one raw receiver thread reads at a time.
const READ_CHUNK: usize = 256 << 10;
const STOP: Token = Token(usize::MAX);

/// One receiver's counter, alone on its cache line so receivers on
/// different cores do not slow each other down.
#[repr(align(64))]
#[derive(Default)]
struct Slot {
    received: AtomicU64,
    // Has seen a warm-up message, so the server routes to it.
    joined: AtomicBool,
    // Closed or broken: the sender no longer waits for it.
    gone: AtomicBool,
}

/// What the receivers share with the sender.
pub struct Shared {
    slots: Vec<Slot>,
    // Woken after each read, so a sender waiting for its window goes on.
    sender: Thread,
    // Send times are nanoseconds since this instant.
    epoch: Instant,
    // Keep each message's latency.
    latency: bool,
    // Keep latencies only of messages sent from then on (ns since
    // `epoch`; the warm-up is not measured).
    record_from: AtomicU64,
    // Raw receivers sleep this long after each wake-up.
    pause: Duration,
    // Set by `Pool::stop`: connections ending now are not failures.
    stopping: AtomicBool,
}

/// How to run the receivers.
pub struct Settings {
    /// Raw or tungstenite.
    pub kind: ClientKind,
    /// Raw receiver threads.
    pub threads: usize,
    /// Keep each message's one-way latency.
    pub latency: bool,
    /// Send times in the stamps are nanoseconds since this instant.
    pub epoch: Instant,
    /// Raw receivers sleep this long after handling a wake-up, so bytes
    /// from a server that writes one frame per `write()` pile up and are
    /// read in fewer calls (throughput runs only: it adds latency).
    pub pause: Duration,
}

impl Shared {
    /// Messages the slowest receiver still connected has seen (`None`
    /// when none is connected).
    pub fn min_received(&self) -> Option<u64> {
        let live = self
            .slots
            .iter()
            .filter(|s| !s.gone.load(Ordering::Relaxed));
        live.map(|s| s.received.load(Ordering::Acquire)).min()
    }

    /// Keeps latencies of messages sent from `ns` (since the epoch) on.
    pub fn record_from(&self, ns: u64) {
        self.record_from.store(ns, Ordering::Relaxed);
    }

    /// Receivers that have seen a warm-up message.
    pub fn joined(&self) -> usize {
        let joined = self
            .slots
            .iter()
            .filter(|s| s.joined.load(Ordering::Relaxed));
        joined.count()
    }

    /// Receivers closed or broken.
    pub fn gone(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.gone.load(Ordering::Relaxed))
            .count()
    }

    /// Messages seen by all receivers together.
    pub fn total_received(&self) -> u64 {
        let counts = self
            .slots
            .iter()
            .map(|s| s.received.load(Ordering::Relaxed));
        counts.sum()
    }
}

/// What the receivers saw, added up.
#[derive(Debug, Default)]
pub struct Tally {
    /// Benchmark messages received (warm-up ones not counted).
    pub received: u64,
    /// Messages whose sequence number was not above the previous one.
    pub out_of_order: u64,
    /// Messages without a readable stamp.
    pub garbled: u64,
    /// Pings answered.
    pub pings: u64,
    /// Connections the server closed, with the first close code seen.
    pub closed: u64,
    /// The first close code or error.
    pub first_close: Option<String>,
    /// One-way latencies in ns, when asked for.
    pub latencies: Vec<u64>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.received += other.received;
        self.out_of_order += other.out_of_order;
        self.garbled += other.garbled;
        self.pings += other.pings;
        self.closed += other.closed;
        if self.first_close.is_none() {
            self.first_close = other.first_close;
        }
        self.latencies.extend(other.latencies);
    }
}

/// Running receivers; [`Pool::stop`] ends them and adds up their tallies.
pub struct Pool {
    /// Counters the sender watches.
    pub shared: Arc<Shared>,
    threads: Vec<JoinHandle<Tally>>,
    wakers: Vec<Waker>,
    // For `Tungstenite`: clones to shut the blocking sockets down.
    sockets: Vec<TcpStream>,
}

/// Connections handed to the pool: stream and bytes already read.
pub type Conn = (TcpStream, Vec<u8>);

impl Pool {
    /// Starts receiving on `conns`. The calling thread is the sender they
    /// unpark.
    pub fn start(conns: Vec<Conn>, settings: &Settings) -> std::io::Result<Pool> {
        let shared = Arc::new(Shared {
            slots: (0..conns.len()).map(|_| Slot::default()).collect(),
            sender: thread::current(),
            epoch: settings.epoch,
            latency: settings.latency,
            record_from: AtomicU64::new(u64::MAX),
            pause: settings.pause,
            stopping: AtomicBool::new(false),
        });
        let mut pool = Pool {
            shared,
            threads: Vec::new(),
            wakers: Vec::new(),
            sockets: Vec::new(),
        };
        match settings.kind {
            ClientKind::Raw => pool.start_raw(conns, settings.threads.max(1))?,
            ClientKind::Tungstenite => pool.start_tungstenite(conns)?,
        }
        Ok(pool)
    }

    fn start_raw(&mut self, conns: Vec<Conn>, threads: usize) -> std::io::Result<()> {
        let mut shares: Vec<Vec<(usize, Conn)>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, conn) in conns.into_iter().enumerate() {
            shares[i % threads].push((i, conn));
        }
        for (n, share) in shares.into_iter().enumerate() {
            let poll = Poll::new()?;
            self.wakers.push(Waker::new(poll.registry(), STOP)?);
            let mut conns = Vec::with_capacity(share.len());
            for (slot, (tcp, rest)) in share {
                tcp.set_nonblocking(true)?;
                let fd = tcp.as_raw_fd();
                poll.registry().register(
                    &mut SourceFd(&fd),
                    Token(conns.len()),
                    Interest::READABLE,
                )?;
                conns.push(RawConn::new(slot, tcp, rest));
            }
            let shared = self.shared.clone();
            self.threads.push(
                thread::Builder::new()
                    .name(format!("load-recv-{n}"))
                    .spawn(move || run_raw(poll, conns, &shared))?,
            );
        }
        Ok(())
    }

    fn start_tungstenite(&mut self, conns: Vec<Conn>) -> std::io::Result<()> {
        for (slot, (tcp, rest)) in conns.into_iter().enumerate() {
            self.sockets.push(tcp.try_clone()?);
            let cfg = WebSocketConfig::default().max_message_size(Some(64 << 20));
            let ws = WebSocket::from_partially_read(tcp, rest, Role::Client, Some(cfg));
            let shared = self.shared.clone();
            self.threads.push(
                thread::Builder::new()
                    .name(format!("load-tung-{slot}"))
                    .stack_size(256 << 10)
                    .spawn(move || run_tungstenite(ws, slot, &shared))?,
            );
        }
        Ok(())
    }

    /// Ends the receivers and adds up what they saw.
    pub fn stop(self) -> Tally {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for waker in &self.wakers {
            let _ = waker.wake();
        }
        for tcp in &self.sockets {
            let _ = tcp.shutdown(Shutdown::Both);
        }
        let mut tally = Tally::default();
        for handle in self.threads {
            if let Ok(part) = handle.join() {
                tally.add(part);
            }
        }
        tally
    }
}

/// Per-connection state of a raw receiver.
struct RawConn {
    slot: usize,
    stream: TcpStream,
    parser: Parser,
    // Bytes read before the session started (after the handshake).
    early: Vec<u8>,
    last_seq: Option<u64>,
    received: u64,
    open: bool,
}

impl RawConn {
    fn new(slot: usize, stream: TcpStream, early: Vec<u8>) -> RawConn {
        RawConn {
            slot,
            stream,
            parser: Parser::default(),
            early,
            last_seq: None,
            received: 0,
            open: true,
        }
    }
}

/// A raw receiver thread: wait, read everything ready, walk the frames.
fn run_raw(mut poll: Poll, mut conns: Vec<RawConn>, shared: &Shared) -> Tally {
    let mut tally = Tally::default();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut events = Events::with_capacity(256);
    for conn in &mut conns {
        let early = std::mem::take(&mut conn.early);
        handle_bytes(conn, &early, shared, &mut tally);
    }
    'outer: loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        for event in events.iter() {
            if event.token() == STOP {
                break 'outer;
            }
            let conn = &mut conns[event.token().0];
            read_ready(conn, &mut buf, shared, &mut tally);
        }
        shared.sender.unpark();
        if !shared.pause.is_zero() {
            thread::sleep(shared.pause);
        }
    }
    tally
}

/// Reads a ready connection until it would block (readiness is
/// edge-triggered).
fn read_ready(conn: &mut RawConn, buf: &mut [u8], shared: &Shared, tally: &mut Tally) {
    while conn.open {
        match conn.stream.read(buf) {
            Ok(0) => close(
                conn,
                shared,
                tally,
                "connection closed without a close frame".into(),
            ),
            Ok(n) => handle_bytes(conn, &buf[..n], shared, tally),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => close(conn, shared, tally, format!("read error: {e}")),
        }
    }
}

/// Walks the frames in `bytes`; all of them arrived by now.
fn handle_bytes(conn: &mut RawConn, bytes: &[u8], shared: &Shared, tally: &mut Tally) {
    let now = if shared.latency {
        shared.epoch.elapsed().as_nanos() as u64
    } else {
        0
    };
    let mut pings: Vec<Vec<u8>> = Vec::new();
    let mut close_code = None;
    let result = conn.parser.feed(bytes, &mut |frame| match frame {
        Frame::Message(prefix) => count(
            prefix,
            now,
            &mut conn.last_seq,
            &mut conn.received,
            shared,
            conn.slot,
            tally,
        ),
        Frame::Ping(payload) => pings.push(payload.to_vec()),
        Frame::Close(code) => close_code = Some(code),
    });
    shared.slots[conn.slot]
        .received
        .store(conn.received, Ordering::Release);
    for payload in pings {
        tally.pings += 1;
        let _ = wire::pong(&mut conn.stream, &payload);
    }
    if let Err(e) = result {
        close(conn, shared, tally, format!("bad frames: {e}"));
    } else if let Some(code) = close_code {
        close(conn, shared, tally, format!("close code {code}"));
    }
}

/// Books one message: joined flag for warm-ups, order and latency for the
/// rest.
fn count(
    prefix: &[u8],
    now: u64,
    last_seq: &mut Option<u64>,
    received: &mut u64,
    shared: &Shared,
    slot: usize,
    tally: &mut Tally,
) {
    let Some((seq, sent)) = wire::parse_stamp(prefix) else {
        tally.garbled += 1;
        return;
    };
    if seq == WARMUP_SEQ {
        shared.slots[slot].joined.store(true, Ordering::Relaxed);
        return;
    }
    if last_seq.is_some_and(|last| seq <= last) {
        tally.out_of_order += 1;
    }
    *last_seq = Some(seq);
    *received += 1;
    tally.received += 1;
    let measured = sent >= shared.record_from.load(Ordering::Relaxed);
    if shared.latency && measured && tally.latencies.len() < MAX_SAMPLES {
        tally.latencies.push(now.saturating_sub(sent));
    }
}

fn close(conn: &mut RawConn, shared: &Shared, tally: &mut Tally, why: String) {
    conn.open = false;
    shared.slots[conn.slot].gone.store(true, Ordering::Relaxed);
    tally.closed += 1;
    tally.first_close.get_or_insert(why);
}

/// A tungstenite receiver thread: blocking reads until the socket ends.
fn run_tungstenite(mut ws: WebSocket<TcpStream>, slot: usize, shared: &Shared) -> Tally {
    let mut tally = Tally::default();
    let mut last_seq = None;
    let mut received = 0;
    let why = loop {
        match ws.read() {
            Ok(Message::Text(text)) => {
                let now = shared.epoch.elapsed().as_nanos() as u64;
                let prefix = &text.as_bytes()[..text.len().min(wire::STAMP)];
                count(
                    prefix,
                    now,
                    &mut last_seq,
                    &mut received,
                    shared,
                    slot,
                    &mut tally,
                );
                shared.slots[slot]
                    .received
                    .store(received, Ordering::Release);
                shared.sender.unpark();
            }
            Ok(Message::Close(frame)) => {
                break format!("close code {}", frame.map_or(1005, |f| u16::from(f.code)));
            }
            Ok(Message::Ping(_)) => tally.pings += 1,
            Ok(_) => tally.garbled += 1,
            Err(e) => break e.to_string(),
        }
    };
    shared.slots[slot].gone.store(true, Ordering::Relaxed);
    if !shared.stopping.load(Ordering::SeqCst) {
        tally.closed += 1;
        tally.first_close = Some(why);
    }
    tally
}
