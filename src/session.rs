//! The per-connection loop, shared by the server and the client.
//!
//! # Who owns what
//!
//! A session thread owns one [`WebSocket`] and its socket. Other threads
//! (the hub on the server, the application on the client) reach it only
//! through its [`Outbox`]: a crossbeam channel of messages, a close
//! request, and a wake-up. One exception, on the server over plain TCP:
//! while the session sleeps with nothing to send, it lends its socket's
//! write side to the hub, which then writes a lone message's frame itself
//! instead of waking the thread ([`Direct`]; the lock makes the two
//! writers take turns).
//!
//! # Why readiness waiting, not a blocking read
//!
//! A session must react at once to two things: bytes arriving on its
//! socket, and messages queued for it by another thread. A blocking
//! `read()` cannot be interrupted by a channel, and a read timeout that
//! polls the channel costs latency and a wake-up per interval on every idle
//! client. So the socket is non-blocking and the thread sleeps in
//! `epoll_wait` (through `mio`) on two sources: the socket, and a
//! [`mio::Waker`] that the queueing thread triggers. tungstenite is built
//! for this: `read` and `flush` return `WouldBlock` and resume later, with
//! any partial frame kept in its buffers. An idle session costs no CPU.
//!
//! # Cheap per message
//!
//! The queueing side wakes a session only when it may be asleep (the
//! `asleep` flag), not once per message. A woken session drains what is
//! queued into its [`Wire`] (the hub's batches of encoded frames go in as
//! they are, often as the buffer itself; tungstenite frames the rest) and
//! flushes once, so one `write()` carries many frames. Readiness is
//! edge-triggered, so the loop remembers whether the socket may still have
//! data (`readable`) or is full (`write_blocked`) and skips syscalls that
//! would only say `WouldBlock`.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::{Error as WsError, Message, WebSocket};

use crate::close::{clip_reason, CloseInfo};
use crate::wire::{Batch, Chunk, Outgoing, Wire};

const SOCKET: Token = Token(0);
const WAKE: Token = Token(1);
/// Most messages read per loop turn before the loop looks at its outbox.
const READ_BATCH: usize = 64;
/// Most messages written per loop turn before the loop flushes and reads.
const WRITE_BATCH: usize = 256;
/// Queued bytes at which the loop sends before queueing more, so one turn
/// of large messages cannot pile up in memory.
const FLUSH_AT: usize = 64 << 10;

/// What a session sleeps on: an epoll set and the waker registered in it.
///
/// Made once per thread and handed from one session to the next: a server
/// connection thread that serves many connections in turn (see
/// `acceptor::run_worker`) then creates no epoll instance or eventfd per
/// connection (four system calls and two kernel objects fewer per
/// connect, handshake and close cycle; the session takes its socket out of
/// the set when it ends, so the next one starts clean). A wake-up meant
/// for the previous session can reach the next one; it only makes the
/// loop look once more at a queue that is empty.
#[derive(Debug)]
pub(crate) struct Reactor {
    poll: Poll,
    events: Events,
    waker: Arc<Waker>,
}

impl Reactor {
    /// Creates the epoll set and its waker.
    ///
    /// # Errors
    /// When the kernel refuses an epoll instance or an eventfd.
    pub(crate) fn new() -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        Ok(Reactor {
            poll,
            events: Events::with_capacity(4),
            waker,
        })
    }
}

/// State shared between a session thread and the threads that queue for it.
#[derive(Debug)]
struct Shared {
    waker: Arc<Waker>,
    // Set by the session just before it sleeps, cleared when it wakes.
    asleep: AtomicBool,
    // Items (messages or frames) queued and not yet taken by the session.
    count: AtomicUsize,
    // Their payload bytes.
    bytes: AtomicUsize,
    // Set by the session while the socket refuses more bytes.
    blocked: AtomicBool,
    // A close the owner asked for: sent once the queue is drained, or at
    // once when the socket is stuck and the queue cannot drain.
    close: OnceLock<(u16, String)>,
    // The hub's way to write to this session's socket while it sleeps
    // (plain TCP on the server only).
    direct: Option<Mutex<Direct>>,
}

/// A sleeping session's socket, lent to the hub.
///
/// Waking a thread to write one frame costs more than the write (an
/// eventfd write, two context switches and an `epoll_wait`), which is most
/// of the CPU a delivery costs when messages come one at a time. So while
/// a session sleeps with nothing queued and nothing buffered, it marks its
/// socket open here, and the hub writes a lone message's frame itself. The
/// session closes the socket to the hub (under this lock) before it
/// writes anything of its own, so the two never interleave, and it only
/// opens it while it may still send data frames (no close frame sent).
/// What the socket does not take at once is left here for the session,
/// which sends it before anything else.
#[derive(Debug)]
struct Direct {
    tcp: Arc<TcpStream>,
    open: bool,
    leftover: Vec<u8>,
}

/// The handle other threads use to queue messages for one session.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: Sender<Outgoing>,
    shared: Arc<Shared>,
}

impl Outbox {
    /// Queues `msg` for tungstenite to frame and wakes the session if it
    /// sleeps. Returns `false` when the session has ended. Blocks while a
    /// bounded outbox is full.
    pub(crate) fn push(&self, msg: Message) -> bool {
        let (count, bytes) = (1, msg.len());
        let queued = self.send(Outgoing::Message(msg), count, bytes);
        self.wake();
        queued
    }

    /// Queues a batch of encoded frames without waking (call
    /// [`Outbox::wake`]). Returns `false` when the session has ended.
    pub(crate) fn push_batch(&self, batch: Batch) -> bool {
        let (count, bytes) = (batch.len(), batch.payload());
        self.send(Outgoing::Batch(batch), count, bytes)
    }

    /// Sends `item` (`count` messages of `bytes` payload bytes) and keeps
    /// the books: counted before the send, so the session never takes
    /// more than was counted, and taken off again if the session has
    /// ended.
    fn send(&self, item: Outgoing, count: usize, bytes: usize) -> bool {
        self.shared.count.fetch_add(count, Ordering::Relaxed);
        self.shared.bytes.fetch_add(bytes, Ordering::Relaxed);
        let sent = self.tx.send(item).is_ok();
        if !sent {
            self.shared.count.fetch_sub(count, Ordering::Relaxed);
            self.shared.bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
        sent
    }

    /// Wakes the session if it is asleep (at most one syscall per sleep).
    pub(crate) fn wake(&self) {
        if self.shared.asleep.swap(false, Ordering::SeqCst) {
            let _ = self.shared.waker.wake();
        }
    }

    /// Asks the session to close with `code` and `reason` once what is
    /// already queued has been written, or at once if its socket is stuck
    /// (then the close timer bounds how long a peer that never reads can
    /// hold it). Only the first request counts.
    pub(crate) fn close(&self, code: u16, reason: &str) {
        if self.shared.close.set((code, reason.to_string())).is_ok() {
            let _ = self.shared.waker.wake();
        }
    }

    /// `true` while the session's socket refuses more bytes.
    pub(crate) fn is_blocked(&self) -> bool {
        self.shared.blocked.load(Ordering::Relaxed)
    }

    /// Items queued and not yet taken.
    pub(crate) fn len(&self) -> usize {
        self.shared.count.load(Ordering::Relaxed)
    }

    /// Writes `batch` straight to the session's socket if the session
    /// sleeps with nothing queued (see [`Direct`]). Returns `false` when it
    /// did not (the caller queues them instead); `true` when they were sent,
    /// or handed to the session (woken) for what the socket did not take.
    pub(crate) fn write_direct(&self, batch: &Batch) -> bool {
        let Some(direct) = &self.shared.direct else {
            return false;
        };
        // A session that holds the lock is awake: queue instead of waiting.
        let Ok(mut direct) = direct.try_lock() else {
            return false;
        };
        // Anything handed over and not taken yet must go first.
        if !direct.open || self.shared.count.load(Ordering::SeqCst) > 0 {
            return false;
        }
        let bytes = batch.bytes();
        let sent = match (&*direct.tcp).write(&bytes) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
            Err(_) => {
                // A broken socket: let the session find out and end.
                direct.open = false;
                drop(direct);
                self.wake();
                return false;
            }
        };
        if sent < bytes.len() {
            direct.leftover.extend_from_slice(&bytes[sent..]);
            direct.open = false;
            drop(direct);
            self.wake();
        }
        true
    }

    /// Payload bytes queued and not yet taken.
    pub(crate) fn bytes(&self) -> usize {
        self.shared.bytes.load(Ordering::Relaxed)
    }
}

/// What a session does with what it receives.
pub(crate) trait Handler {
    /// A text or binary message arrived. `Err((code, reason))` closes the
    /// connection with that code.
    fn message(&mut self, msg: Message) -> Result<(), (u16, String)>;
}

/// Heartbeat and closing timers of a session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Ping the peer after this much silence.
    pub ping_interval: Option<Duration>,
    /// Drop a pinged peer that stays silent this much longer.
    pub idle_timeout: Duration,
    /// Wait this long for the answer to our close frame.
    pub close_timeout: Duration,
}

/// One connection's loop; see the module docs.
pub(crate) struct Session<H> {
    // Boxed, so that moving it into the session costs the handshake's
    // stack a pointer, not the whole WebSocket.
    ws: Box<WebSocket<Wire>>,
    reactor: Reactor,
    inbox: Receiver<Outgoing>,
    // The rest of the batch taken from the inbox last.
    current: std::vec::IntoIter<Chunk>,
    shared: Reclaim,
    handler: H,
    timing: Timing,
    // The socket may have unread bytes (edge-triggered readiness).
    readable: bool,
    // The last write hit WouldBlock; wait for writable before writing more.
    write_blocked: bool,
    last_heard: Instant,
    ping_sent: bool,
    // Set when we sent a close frame: (when, code, reason).
    our_close: Option<(Instant, u16, String)>,
    peer_close: Option<CloseInfo>,
}

/// The channel under an outbox. With `capacity`, [`Outbox::push`] blocks
/// while that many items wait (the client's backpressure); without, the
/// outbox never blocks and the owner bounds it (the hub checks
/// [`Outbox::len`] and [`Outbox::bytes`]).
///
/// Made apart from [`pair`], and by callers high up their thread's stack:
/// crossbeam builds a channel on the stack before moving it to the heap,
/// almost a kilobyte, and under `pair` that took a connection thread's
/// stack into a third page, which a silent client keeps for good.
#[inline(never)]
pub(crate) fn channel(capacity: Option<usize>) -> (Sender<Outgoing>, Receiver<Outgoing>) {
    match capacity {
        Some(n) => crossbeam_channel::bounded(n),
        None => crossbeam_channel::unbounded(),
    }
}

/// Creates a session for `ws`, sleeping on `reactor`, and the outbox that
/// feeds it, over `channel` (from [`channel`]). With `lend_socket` (the
/// server), a plain TCP socket is lent to the outbox's owner while the
/// session sleeps ([`Direct`]).
///
/// # Errors
/// When the socket cannot be made non-blocking or registered with epoll.
#[inline(never)] // its frame is not kept under the session loop's
pub(crate) fn pair<H: Handler>(
    ws: Box<WebSocket<Wire>>,
    handler: H,
    timing: Timing,
    channel: (Sender<Outgoing>, Receiver<Outgoing>),
    reactor: Reactor,
    lend_socket: bool,
) -> io::Result<(Box<Session<H>>, Outbox)> {
    ws.get_ref().tcp().set_nonblocking(true)?;
    // The previous session's socket left the set when that session ended.
    let fd = ws.get_ref().tcp().as_raw_fd();
    reactor.poll.registry().register(
        &mut SourceFd(&fd),
        SOCKET,
        Interest::READABLE | Interest::WRITABLE,
    )?;
    let shared = Arc::new(Shared {
        waker: reactor.waker.clone(),
        asleep: AtomicBool::new(false),
        count: AtomicUsize::new(0),
        bytes: AtomicUsize::new(0),
        blocked: AtomicBool::new(false),
        close: OnceLock::new(),
        direct: ws
            .get_ref()
            .shared_tcp()
            .filter(|_| lend_socket)
            .map(|tcp| {
                Mutex::new(Direct {
                    tcp,
                    open: false,
                    leftover: Vec::new(),
                })
            }),
    });
    let (tx, inbox) = channel;
    // On the heap: the session lives as long as the connection, and a
    // thread's stack pages, once touched, stay for the thread's lifetime.
    let session = Box::new(Session {
        ws,
        reactor,
        inbox,
        current: Vec::new().into_iter(),
        shared: Reclaim(shared.clone()),
        handler,
        timing,
        readable: true,
        write_blocked: false,
        last_heard: Instant::now(),
        ping_sent: false,
        our_close: None,
        peer_close: None,
    });
    Ok((session, Outbox { tx, shared }))
}

/// The session's handle on its shared state. When it is dropped, however
/// the session ends (a panic included), it takes the socket back from the
/// hub and ends the connection: the hub's handle on the socket would
/// otherwise keep it open until the hub hears the client left.
#[derive(Debug)]
struct Reclaim(Arc<Shared>);

impl std::ops::Deref for Reclaim {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Drop for Reclaim {
    fn drop(&mut self) {
        if let Some(direct) = &self.0.direct {
            let mut direct = direct.lock().unwrap_or_else(PoisonError::into_inner);
            direct.open = false;
            // A session that ends normally has shut the socket down already.
            if std::thread::panicking() {
                let _ = direct.tcp.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// Why one loop turn ended the session.
type End = CloseInfo;

impl<H: Handler> Session<H> {
    /// Runs until the connection ends, then says how it ended and gives
    /// back the reactor for the thread's next session.
    // Boxed on purpose and never inlined: the session's state stays on the
    // heap and the caller's locals stay out of the loop's frame (see
    // `connection::serve_connection`).
    #[allow(clippy::boxed_local)]
    #[inline(never)]
    pub(crate) fn run(mut self: Box<Self>) -> (CloseInfo, Reactor) {
        let end = loop {
            if let Err(end) = self.turn() {
                break end;
            }
        };
        // A server that has answered the peer's close frame leaves the
        // answer in the wire (tungstenite reports the connection closed
        // before it flushes).
        if self.ws.get_ref().pending() > 0 {
            self.drain(Instant::now() + self.timing.close_timeout);
        }
        let tcp = self.ws.get_ref().tcp();
        let _ = tcp.shutdown(std::net::Shutdown::Both);
        // The reactor serves the thread's next session. Closing the socket
        // would take it out of the epoll set, but the hub may still hold
        // it (see `Direct`) until it hears the client left.
        let _ = self
            .reactor
            .poll
            .registry()
            .deregister(&mut SourceFd(&tcp.as_raw_fd()));
        (end, self.reactor)
    }

    /// One pass: timers, outgoing, incoming, then sleep if nothing is left.
    fn turn(&mut self) -> Result<(), End> {
        let now = Instant::now();
        self.check_timers(now)?;
        if !self.write_blocked {
            self.write_queued()?;
            self.flush()?;
        }
        if self.our_close.is_none() && (self.write_blocked || !self.has_queued()) {
            // A requested close goes out behind what was queued before it,
            // unless the socket is stuck and the queue cannot drain.
            if let Some((code, reason)) = self.shared.close.get() {
                self.start_close(*code, reason.clone())?;
            }
        }
        if self.readable {
            self.read_some()?;
        }
        self.sleep(now)
    }

    /// Pings a silent peer, drops one that does not answer, and gives up on
    /// a close handshake the peer does not finish.
    fn check_timers(&mut self, now: Instant) -> Result<(), End> {
        if let Some((since, code, reason)) = &self.our_close {
            if now.duration_since(*since) >= self.timing.close_timeout {
                return Err(CloseInfo {
                    code: *code,
                    reason: format!("{reason} (no close reply)"),
                    by_peer: false,
                });
            }
        }
        let Some(interval) = self.timing.ping_interval else {
            return Ok(());
        };
        let silent = now.duration_since(self.last_heard);
        if silent >= interval + self.timing.idle_timeout {
            let reason = format!("no answer to ping for {:.1}s", silent.as_secs_f64());
            return Err(self.fail_with(1001, &reason));
        }
        if silent >= interval && !self.ping_sent && self.our_close.is_none() {
            self.ping_sent = true;
            self.ws
                .write(Message::Ping(Default::default()))
                .or_else(|e| self.soft(e))?;
        }
        Ok(())
    }

    /// Moves queued messages into the wire's buffer: encoded frames as
    /// they are, messages through tungstenite. Sends along the way when
    /// the buffer is large.
    fn write_queued(&mut self) -> Result<(), End> {
        for _ in 0..WRITE_BATCH {
            if self.our_close.is_some() || self.write_blocked {
                return Ok(());
            }
            if let Some(chunk) = self.current.next() {
                // After a close frame went out (ours, or tungstenite's
                // reply to the peer's), nothing more may follow it.
                if !self.ws.can_write() {
                    self.current = Vec::new().into_iter();
                    return Ok(());
                }
                self.ws.get_mut().queue(chunk);
            } else {
                let Ok(item) = self.inbox.try_recv() else {
                    return Ok(());
                };
                match item {
                    Outgoing::Batch(batch) => {
                        self.taken(batch.len(), batch.payload());
                        self.current = batch.into_chunks().into_iter();
                    }
                    Outgoing::Message(msg) => {
                        self.taken(1, msg.len());
                        self.ws.write(msg).or_else(|e| self.soft(e))?;
                    }
                }
            }
            if self.ws.get_ref().pending() >= FLUSH_AT {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Takes items off the outbox's books.
    fn taken(&self, count: usize, bytes: usize) {
        self.shared.count.fetch_sub(count, Ordering::Relaxed);
        self.shared.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Whether anything waits to be written.
    fn has_queued(&self) -> bool {
        self.current.len() > 0 || !self.inbox.is_empty()
    }

    /// Sends our close frame and starts the close timer.
    #[cold]
    #[inline(never)]
    fn start_close(&mut self, code: u16, reason: String) -> Result<(), End> {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: clip_reason(&reason).to_string().into(),
        };
        self.our_close = Some((Instant::now(), code, reason));
        self.ws.close(Some(frame)).or_else(|e| self.soft(e))
    }

    /// Sends tungstenite's pending replies and the wire's buffer.
    fn flush(&mut self) -> Result<(), End> {
        self.ws.flush().or_else(|e| self.soft(e))
    }

    /// Treats `WouldBlock` as "wait for writable"; anything else ends.
    fn soft(&mut self, err: WsError) -> Result<(), End> {
        match err {
            WsError::Io(e) if e.kind() == ErrorKind::WouldBlock => {
                self.set_write_blocked(true);
                Ok(())
            }
            other => Err(self.ended(other)),
        }
    }

    /// Reads and handles up to [`READ_BATCH`] messages.
    fn read_some(&mut self) -> Result<(), End> {
        for _ in 0..READ_BATCH {
            let msg = match self.ws.read() {
                Ok(msg) => msg,
                Err(WsError::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                    self.readable = false;
                    return Ok(());
                }
                Err(e) => return Err(self.ended(e)),
            };
            self.last_heard = Instant::now();
            self.ping_sent = false;
            match msg {
                Message::Text(_) | Message::Binary(_) => {
                    if self.our_close.is_some() {
                        continue; // closing: late data is not passed on
                    }
                    if let Err((code, reason)) = self.handler.message(msg) {
                        self.start_close(code, reason)?;
                    }
                }
                Message::Close(frame) => self.peer_closed(frame),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
        Ok(())
    }

    /// Notes the peer's close frame (tungstenite queues the reply itself).
    #[cold]
    #[inline(never)]
    fn peer_closed(&mut self, frame: Option<CloseFrame>) {
        if self.our_close.is_some() {
            return; // this is the answer to our close
        }
        self.peer_close = Some(match frame {
            Some(f) => CloseInfo {
                code: f.code.into(),
                reason: f.reason.to_string(),
                by_peer: true,
            },
            None => CloseInfo {
                code: 1005,
                reason: String::new(),
                by_peer: true,
            },
        });
    }

    /// Sleeps until the socket or the waker has news, or the next timer.
    fn sleep(&mut self, started: Instant) -> Result<(), End> {
        let more_to_write = !self.write_blocked && self.has_queued();
        if self.readable || (more_to_write && self.our_close.is_none()) {
            return Ok(());
        }
        self.shared.asleep.store(true, Ordering::SeqCst);
        // A message queued between the check above and the flag is caught
        // here; one queued after the flag finds it set and wakes us.
        if !self.write_blocked && self.has_queued() && self.our_close.is_none() {
            self.shared.asleep.store(false, Ordering::SeqCst);
            return Ok(());
        }
        let timeout = self
            .next_timer()
            .map(|t| t.saturating_duration_since(started));
        self.lend_socket(true);
        let polled = self.reactor.poll.poll(&mut self.reactor.events, timeout);
        self.shared.asleep.store(false, Ordering::SeqCst);
        self.lend_socket(false);
        match polled {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(CloseInfo::abnormal(format!("epoll: {e}"))),
        }
        let mut writable = false;
        for event in self.reactor.events.iter() {
            if event.token() == SOCKET {
                self.readable |= event.is_readable() || event.is_read_closed();
                self.readable |= event.is_error();
                writable |= event.is_writable() || event.is_write_closed();
            }
        }
        if writable && self.write_blocked {
            self.set_write_blocked(false);
        }
        Ok(())
    }

    /// Lends the socket to the hub before sleeping (when nothing is queued
    /// or buffered and data frames may still be sent), or takes it back,
    /// with whatever the hub could not send, after waking. See [`Direct`].
    fn lend_socket(&mut self, lend: bool) {
        let Some(direct) = &self.shared.direct else {
            return;
        };
        let mut direct = direct.lock().unwrap_or_else(PoisonError::into_inner);
        if lend {
            direct.open = self.ws.get_ref().pending() == 0
                && !self.has_queued()
                && !self.write_blocked
                && self.our_close.is_none()
                && self.ws.can_write();
        } else {
            direct.open = false;
            if !direct.leftover.is_empty() {
                self.ws.get_mut().queue_first(&direct.leftover);
                direct.leftover.clear();
            }
        }
    }

    /// Records whether the socket refuses bytes, for the hub to see.
    fn set_write_blocked(&mut self, blocked: bool) {
        self.write_blocked = blocked;
        self.shared.blocked.store(blocked, Ordering::Relaxed);
    }

    /// When the next timer fires, if any.
    fn next_timer(&self) -> Option<Instant> {
        if let Some((since, ..)) = &self.our_close {
            return Some(*since + self.timing.close_timeout);
        }
        let interval = self.timing.ping_interval?;
        Some(if self.ping_sent {
            self.last_heard + interval + self.timing.idle_timeout
        } else {
            self.last_heard + interval
        })
    }

    /// Turns tungstenite's verdict into how the session ended, sending the
    /// RFC 6455 close code first when the peer broke the protocol.
    #[cold]
    #[inline(never)]
    fn ended(&mut self, err: WsError) -> CloseInfo {
        match err {
            WsError::ConnectionClosed | WsError::AlreadyClosed => self.clean_end(),
            WsError::Io(e) => self.dropped(e.to_string()),
            WsError::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
                self.dropped("connection dropped without a close frame".into())
            }
            WsError::Utf8(_) => self.fail_with(1007, "invalid UTF-8 in a text message"),
            WsError::Capacity(e) => self.fail_with(1009, &e.to_string()),
            WsError::Protocol(e) => self.fail_with(1002, &e.to_string()),
            other => self.fail_with(1011, &other.to_string()),
        }
    }

    /// The closing handshake finished: say who started it.
    fn clean_end(&mut self) -> CloseInfo {
        if let Some(info) = self.peer_close.take() {
            return info;
        }
        match self.our_close.take() {
            Some((_, code, reason)) => CloseInfo {
                code,
                reason,
                by_peer: false,
            },
            None => CloseInfo::abnormal("connection closed"),
        }
    }

    /// The connection broke: keep a close frame we already saw, if any.
    fn dropped(&mut self, reason: String) -> CloseInfo {
        if let Some(info) = self.peer_close.take() {
            return info;
        }
        match self.our_close.take() {
            Some((_, code, why)) => CloseInfo {
                code,
                reason: why,
                by_peer: false,
            },
            None => CloseInfo::abnormal(reason),
        }
    }

    /// Fails the connection: sends a close frame with `code`, gives it a
    /// moment to leave, then ends.
    #[cold]
    #[inline(never)]
    fn fail_with(&mut self, code: u16, reason: &str) -> CloseInfo {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: clip_reason(reason).to_string().into(),
        };
        let _ = self.ws.close(Some(frame));
        self.linger();
        CloseInfo {
            code,
            reason: reason.to_string(),
            by_peer: false,
        }
    }

    /// Pushes out what is buffered, half-closes, and discards input until
    /// the peer closes or the close timeout passes. Closing a socket with
    /// unread input makes the kernel send RST, which can destroy the close
    /// frame before the peer reads it; this avoids that.
    fn linger(&mut self) {
        let deadline = Instant::now() + self.timing.close_timeout;
        // tungstenite's frames into the wire, then the wire to the socket.
        let _ = self.ws.flush();
        if !self.drain(deadline) {
            return;
        }
        let _ = self.ws.get_ref().tcp().shutdown(std::net::Shutdown::Write);
        let mut scratch = [0u8; 1024];
        while Instant::now() < deadline {
            match self.ws.get_mut().read(&mut scratch) {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
            if !self.wait(deadline) {
                return;
            }
        }
    }

    /// Sends what the wire holds, waiting for the socket until `deadline`;
    /// `false` when that failed or took too long.
    fn drain(&mut self, deadline: Instant) -> bool {
        loop {
            match self.ws.get_mut().flush() {
                Ok(()) => return true,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return false,
            }
            if !self.wait(deadline) {
                return false;
            }
        }
    }

    /// Sleeps until the socket has news or `deadline` passes; `false` when
    /// the deadline has passed or epoll failed.
    fn wait(&mut self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let reactor = &mut self.reactor;
        reactor.poll.poll(&mut reactor.events, Some(left)).is_ok()
    }
}
