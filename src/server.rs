//! Binding, the acceptor thread, and each connection's handshake.
//!
//! # Threads
//!
//! - [`run_acceptor`] owns the listening socket. It waits in `epoll` for
//!   new connections or a stop request, and starts one thread per accepted
//!   connection (with a small, configurable stack).
//! - That connection thread ([`serve_connection`]) reads the HTTP request
//!   head with a deadline, answers plain HTTP or a broken handshake itself,
//!   and on a valid upgrade becomes the client's session thread: it tells
//!   the hub who joined, runs the [session loop](crate::session), and tells
//!   the hub who left.
//! - The hub thread ([`run_hub`]) is started here too.
//!
//! [`Server`] owns the two long-lived threads; [`ServerHandle`] is the
//! cloneable remote control other threads (console, signal handler, tests)
//! use.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, error, info, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use crate::config::ServerConfig;
use crate::error::{Error, Result};
use crate::handshake::{self, Verdict};
use crate::http::{self, HeadError, Response};
use crate::hub::{run_hub, ClientInfo, Command, Event};
use crate::naming;
use crate::session::{self, Handler, Timing};
use crate::stats::Stats;
use crate::stream::Stream;
use crate::web;

const LISTENER: Token = Token(0);
const STOP: Token = Token(1);
/// Events the hub's channel holds before senders wait.
const HUB_QUEUE: usize = 4096;
/// How long a library call waits for the hub's answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Most threads answering refused connections with 503 at once; past
/// that (a flood), refused connections are just closed.
const MAX_REFUSING: usize = 16;

/// A running hub: listening socket, acceptor thread and hub thread.
///
/// Dropping it shuts the hub down (see [`Server::shutdown`]).
#[derive(Debug)]
pub struct Server {
    handle: ServerHandle,
    acceptor: Option<JoinHandle<()>>,
    hub: Option<JoinHandle<()>>,
}

/// A cloneable remote control for a running [`Server`].
#[derive(Debug, Clone)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    hub: Sender<Event>,
    stop: Arc<Stop>,
    // Connection threads alive (handshaking or in a session).
    active: Arc<AtomicUsize>,
}

/// Tells the acceptor to stop.
#[derive(Debug)]
struct Stop {
    flag: AtomicBool,
    waker: Waker,
}

/// What every connection thread needs; shared read-only.
struct Context {
    cfg: ServerConfig,
    hub: Sender<Event>,
    // For plain HTTP answers that ask the hub (the API endpoints).
    handle: ServerHandle,
    active: Arc<AtomicUsize>,
    next_id: AtomicU64,
    // Connection threads report their peer's IP here when they end, so the
    // acceptor can keep its per-address counts (only with a per-IP limit).
    ended: Sender<IpAddr>,
    // Threads busy answering refused connections.
    refusing: AtomicUsize,
}

impl Server {
    /// Listens on `addr` with the default [`ServerConfig`].
    ///
    /// # Errors
    /// [`Error::Bind`] when the address is taken or not ours.
    pub fn bind(addr: impl ToSocketAddrs) -> Result<Server> {
        Server::bind_with_config(addr, ServerConfig::default())
    }

    /// Listens on `addr` (port 0 picks a free port) and starts the acceptor
    /// and hub threads.
    ///
    /// # Errors
    /// [`Error::Config`] for invalid settings, [`Error::Bind`] when the
    /// address cannot be bound, [`Error::Io`] when a thread cannot start.
    pub fn bind_with_config(addr: impl ToSocketAddrs, cfg: ServerConfig) -> Result<Server> {
        cfg.validate()?;
        let addr = addr
            .to_socket_addrs()
            .map_err(|e| Error::Config(format!("bad listen address: {e}")))?
            .next()
            .ok_or_else(|| Error::Config("listen address resolves to nothing".into()))?;
        let listener = TcpListener::bind(addr).map_err(|e| Error::bind(addr, e))?;
        let local_addr = listener.local_addr().map_err(|e| Error::bind(addr, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("setting up the listener", e))?;
        let poll = Poll::new().map_err(|e| Error::io("creating the acceptor's epoll", e))?;
        poll.registry()
            .register(
                &mut SourceFd(&listener.as_raw_fd()),
                LISTENER,
                Interest::READABLE,
            )
            .map_err(|e| Error::io("registering the listener", e))?;
        let stop = Arc::new(Stop {
            flag: AtomicBool::new(false),
            waker: Waker::new(poll.registry(), STOP)
                .map_err(|e| Error::io("creating the acceptor's waker", e))?,
        });

        let (hub_tx, hub_rx) = crossbeam_channel::bounded(HUB_QUEUE);
        let hub = spawn("wshub-hub", {
            let cfg = cfg.clone();
            move || run_hub(cfg, hub_rx)
        })?;
        let handle = ServerHandle {
            local_addr,
            hub: hub_tx.clone(),
            stop: stop.clone(),
            active: Arc::new(AtomicUsize::new(0)),
        };
        let scheme = if tls_enabled(&cfg) { "wss" } else { "ws" };
        let (ended_tx, ended_rx) = crossbeam_channel::unbounded();
        let ctx = Arc::new(Context {
            cfg,
            hub: hub_tx,
            handle: handle.clone(),
            active: handle.active.clone(),
            next_id: AtomicU64::new(1),
            ended: ended_tx,
            refusing: AtomicUsize::new(0),
        });
        let acceptor = Acceptor {
            listener,
            poll,
            ctx,
            stop: stop.clone(),
            per_ip: HashMap::new(),
            ended: ended_rx,
        };
        let acceptor = spawn("wshub-acceptor", move || run_acceptor(acceptor))?;
        info!("listening on {scheme}://{local_addr}");
        Ok(Server {
            handle,
            acceptor: Some(acceptor),
            hub: Some(hub),
        })
    }

    /// The address the server actually listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr
    }

    /// A cloneable handle for other threads.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Sends `msg` to every client. See [`ServerHandle::broadcast`].
    pub fn broadcast(&self, msg: Message) {
        self.handle.broadcast(msg);
    }

    /// Sends `msg` to the clients named `name`; returns how many.
    pub fn send_to(&self, name: &str, msg: Message) -> usize {
        self.handle.send_to(name, msg)
    }

    /// The clients online now, oldest first.
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.handle.clients()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.handle.stats()
    }

    /// Stops accepting, closes every client with 1001 (going away), and
    /// returns once the acceptor, the hub and every connection thread have
    /// ended, or after about twice the close timeout if some peer never
    /// answers.
    pub fn shutdown(mut self) {
        self.handle.shutdown();
        self.join();
    }

    /// Blocks until someone calls [`ServerHandle::shutdown`], then waits
    /// for the threads like [`Server::shutdown`].
    pub fn wait(mut self) {
        self.join();
    }

    /// Joins the acceptor and hub, then waits for connection threads.
    fn join(&mut self) {
        if let Some(hub) = self.hub.take() {
            let _ = hub.join();
        }
        // The hub ended only after a shutdown request, so the acceptor is
        // stopping too.
        self.handle.stop_acceptor();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.handle.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.hub.is_some() {
            self.handle.shutdown();
            self.join();
        }
    }
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Connection threads still running (handshaking or in a session).
    pub fn active_connections(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Sends `msg` to every client, in every room.
    pub fn broadcast(&self, msg: Message) {
        let _ = self.hub.send(Event::Command(Command::Broadcast(msg)));
    }

    /// Sends `msg` to the online clients named `name`; returns how many
    /// (0 also when the server has stopped).
    pub fn send_to(&self, name: &str, msg: Message) -> usize {
        self.ask(|tx| Command::SendTo(name.to_string(), msg, tx))
            .unwrap_or(0)
    }

    /// Closes the clients named `name` with 1008 and `reason`; returns how
    /// many.
    pub fn kick(&self, name: &str, reason: &str) -> usize {
        self.ask(|tx| Command::Kick(name.to_string(), reason.to_string(), tx))
            .unwrap_or(0)
    }

    /// The clients online now, oldest first.
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.ask(Command::List).unwrap_or_default()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.ask(Command::Stats).unwrap_or_else(Stats::new)
    }

    /// Starts a graceful shutdown and returns at once: the acceptor stops
    /// and every client gets a close frame with 1001.
    pub fn shutdown(&self) {
        self.stop_acceptor();
        let _ = self.hub.send(Event::Command(Command::Shutdown));
    }

    fn stop_acceptor(&self) {
        if !self.stop.flag.swap(true, Ordering::SeqCst) {
            let _ = self.stop.waker.wake();
        }
    }

    /// Sends a command carrying a reply channel and waits for the answer.
    fn ask<T>(&self, make: impl FnOnce(Sender<T>) -> Command) -> Option<T> {
        let (tx, rx): (Sender<T>, Receiver<T>) = crossbeam_channel::bounded(1);
        self.hub.send(Event::Command(make(tx))).ok()?;
        rx.recv_timeout(REPLY_TIMEOUT).ok()
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|e| Error::io(format!("starting the {name} thread"), e))
}

fn tls_enabled(cfg: &ServerConfig) -> bool {
    #[cfg(feature = "tls")]
    return cfg.tls.is_some();
    #[cfg(not(feature = "tls"))]
    {
        let _ = cfg;
        false
    }
}

/// The acceptor thread's state; only that thread touches it.
struct Acceptor {
    listener: TcpListener,
    poll: Poll,
    ctx: Arc<Context>,
    stop: Arc<Stop>,
    // Open connections per peer address (kept only with a per-IP limit).
    per_ip: HashMap<IpAddr, usize>,
    ended: Receiver<IpAddr>,
}

/// The acceptor thread: accept until told to stop, one thread per client.
fn run_acceptor(mut acc: Acceptor) {
    let mut events = Events::with_capacity(8);
    // After an accept error such as EMFILE, retry in a while instead of
    // waiting for the next edge, which may never come.
    let mut retry = None;
    // Whether the last accept failed (logged once per failing stretch).
    let mut failing = false;
    loop {
        if let Err(e) = acc.poll.poll(&mut events, retry) {
            if e.kind() != ErrorKind::Interrupted {
                error!("acceptor cannot wait for connections: {e}");
                break;
            }
        }
        if acc.stop.flag.load(Ordering::SeqCst) {
            break;
        }
        retry = None;
        loop {
            match acc.listener.accept() {
                Ok((tcp, peer)) => {
                    if std::mem::take(&mut failing) {
                        info!("accepting connections again");
                    }
                    acc.admit(tcp, peer);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        warn!("accept failed: {e}; retrying every 100 ms");
                    }
                    retry = Some(Duration::from_millis(100));
                    break;
                }
            }
        }
    }
    debug!("acceptor thread ends");
}

impl Acceptor {
    /// Applies the connection limits, then starts the connection's thread.
    fn admit(&mut self, tcp: TcpStream, peer: SocketAddr) {
        let cfg = &self.ctx.cfg;
        let open = self.ctx.active.load(Ordering::SeqCst);
        if open >= cfg.max_clients {
            let detail = format!("server full ({open} connections)");
            return self.refuse(tcp, peer, "server full", detail);
        }
        if cfg.max_clients_per_ip > 0 {
            for ip in self.ended.try_iter() {
                if let Some(n) = self.per_ip.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        self.per_ip.remove(&ip);
                    }
                }
            }
            let n = self.per_ip.entry(peer.ip()).or_default();
            if *n >= cfg.max_clients_per_ip {
                let detail = format!("too many connections from {} ({n})", peer.ip());
                return self.refuse(tcp, peer, "too many from one address", detail);
            }
            *n += 1;
        }
        if !start_connection(&self.ctx, tcp, peer) && cfg.max_clients_per_ip > 0 {
            let _ = self.ctx.ended.send(peer.ip());
        }
    }

    /// Answers a connection over a limit with 503 from a short-lived thread
    /// (plain TCP only; a TLS client just sees the connection close).
    fn refuse(&self, tcp: TcpStream, peer: SocketAddr, reason: &'static str, detail: String) {
        warn!("refused {peer}: {detail}");
        let _ = self.ctx.hub.try_send(Event::Rejected(reason));
        if tls_enabled(&self.ctx.cfg) || self.ctx.refusing.load(Ordering::SeqCst) >= MAX_REFUSING {
            return;
        }
        self.ctx.refusing.fetch_add(1, Ordering::SeqCst);
        let ctx = self.ctx.clone();
        let spawned = thread::Builder::new()
            .name("wshub-refuse".into())
            .stack_size(64 << 10)
            .spawn(move || {
                let mut stream = Stream::Plain(tcp);
                let resp = Response::text(503, &detail).with("Retry-After", "10");
                answer_and_close(&mut stream, &resp, false);
                ctx.refusing.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            self.ctx.refusing.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Starts the thread for one accepted connection; `false` if it could not.
fn start_connection(ctx: &Arc<Context>, tcp: TcpStream, peer: SocketAddr) -> bool {
    let id = ctx.next_id.fetch_add(1, Ordering::Relaxed);
    ctx.active.fetch_add(1, Ordering::SeqCst);
    let thread_ctx = ctx.clone();
    let spawned = thread::Builder::new()
        .name(format!("wshub-conn-{id}"))
        .stack_size(ctx.cfg.thread_stack)
        .spawn(move || {
            let _slot = Slot {
                ctx: &thread_ctx,
                ip: peer.ip(),
            };
            serve_connection(&thread_ctx, tcp, peer, id);
        });
    if let Err(e) = spawned {
        ctx.active.fetch_sub(1, Ordering::SeqCst);
        warn!("refused {peer}: cannot start a thread: {e}");
        let _ = ctx.hub.try_send(Event::Rejected("no thread"));
        return false;
    }
    true
}

/// A connection's place in the limits; given back when its thread ends,
/// even by a panic.
struct Slot<'a> {
    ctx: &'a Context,
    ip: IpAddr,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.ctx.cfg.max_clients_per_ip > 0 {
            let _ = self.ctx.ended.send(self.ip);
        }
        self.ctx.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One connection, from the first byte to the end of its session.
fn serve_connection(ctx: &Context, tcp: TcpStream, peer: SocketAddr, id: u64) {
    let _ = tcp.set_nodelay(true);
    let deadline = Instant::now() + ctx.cfg.handshake_timeout;
    let Some(mut stream) = secure(ctx, tcp, peer, deadline) else {
        return;
    };
    let max = ctx.cfg.max_header_bytes;
    let stop = &ctx.handle.stop.flag;
    let (req, rest) = match http::read_head(&mut stream, deadline, max, stop) {
        Ok(head) => head,
        Err(e) => return refuse_head(ctx, &mut stream, peer, e),
    };
    match handshake::check(&req, &ctx.cfg) {
        Verdict::Plain => {
            let resp = web::answer(&req, &ctx.cfg, &ctx.handle);
            debug!("{peer} {} {} -> {}", req.method, req.target, resp.status);
            answer_and_close(&mut stream, &resp, req.method == "HEAD");
        }
        Verdict::Reject { response, reason } => {
            info!("refused handshake from {peer}: {}", first_line(&response));
            let _ = ctx.hub.send(Event::Rejected(reason));
            answer_and_close(&mut stream, &response, false);
        }
        Verdict::Upgrade { response, protocol } => {
            let deadline = Instant::now() + Duration::from_secs(5);
            if http::send(&mut stream, &response, false, deadline).is_ok() {
                let new = NewClient {
                    stream,
                    rest,
                    target: &req.target,
                    protocol,
                    peer,
                    id,
                };
                run_client(ctx, new);
            }
        }
    }
}

/// Runs the TLS handshake when the server has TLS; `None` when it failed
/// (logged and counted).
fn secure(ctx: &Context, tcp: TcpStream, peer: SocketAddr, deadline: Instant) -> Option<Stream> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &ctx.cfg.tls {
        return match tls.accept(tcp, deadline, &ctx.handle.stop.flag) {
            Ok(stream) => Some(stream),
            Err(e) => {
                info!("dropped {peer}: TLS handshake failed: {e}");
                let _ = ctx.hub.send(Event::Rejected("tls handshake"));
                None
            }
        };
    }
    let _ = (ctx, peer, deadline);
    Some(Stream::Plain(tcp))
}

/// Answers a request head we could not read, where that still helps.
fn refuse_head(ctx: &Context, stream: &mut Stream, peer: SocketAddr, err: HeadError) {
    let (reason, resp) = match err {
        HeadError::Timeout => {
            info!("dropped {peer}: no complete request within the handshake timeout");
            ("handshake timeout", None)
        }
        HeadError::TooLarge => {
            info!("refused {peer}: request head too large");
            let max = ctx.cfg.max_header_bytes;
            let resp = Response::text(431, &format!("request head over {max} bytes"));
            ("header too large", Some(resp))
        }
        HeadError::Malformed(why) => {
            info!("refused {peer}: malformed request: {why}");
            (
                "bad request",
                Some(Response::text(400, &format!("malformed request: {why}"))),
            )
        }
        HeadError::Closed | HeadError::Io(_) => {
            debug!("{peer} went away during the handshake");
            return;
        }
    };
    let _ = ctx.hub.send(Event::Rejected(reason));
    if let Some(resp) = resp {
        answer_and_close(stream, &resp, false);
    }
}

fn first_line(resp: &Response) -> String {
    let body = String::from_utf8_lossy(&resp.body);
    body.lines().next().unwrap_or_default().to_string()
}

/// Sends `resp`, then closes gently so the peer reads it before the FIN.
fn answer_and_close(stream: &mut Stream, resp: &Response, head_only: bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    if http::send(stream, resp, head_only, deadline).is_ok() {
        http::finish(stream, deadline);
    }
}

/// A connection whose handshake has just succeeded.
struct NewClient<'a> {
    stream: Stream,
    // Bytes the client sent right behind its request (its first frames).
    rest: Vec<u8>,
    target: &'a str,
    protocol: Option<String>,
    peer: SocketAddr,
    id: u64,
}

/// A handshaken client: join the hub, run the session, leave the hub.
fn run_client(ctx: &Context, new: NewClient) {
    let cfg = &ctx.cfg;
    let ws_cfg = WebSocketConfig::default()
        .read_buffer_size(cfg.read_buffer_size)
        .write_buffer_size(64 << 10)
        .max_message_size(Some(cfg.max_message_size))
        .max_frame_size(Some(cfg.max_message_size));
    let ws = WebSocket::from_partially_read(new.stream, new.rest, Role::Server, Some(ws_cfg));
    let timing = Timing {
        ping_interval: cfg.ping_interval,
        idle_timeout: cfg.idle_timeout,
        close_timeout: cfg.close_timeout,
    };
    let handler = HubHandler {
        id: new.id,
        hub: ctx.hub.clone(),
        limit: cfg.rate_limit.map(RateLimit::new),
    };
    let (session, outbox) = match session::pair(ws, handler, timing, None) {
        Ok(pair) => pair,
        Err(e) => {
            warn!("cannot start a session for {}: {e}", new.peer);
            return;
        }
    };
    let addr = naming::address(new.target, new.id);
    let info = ClientInfo {
        id: new.id,
        name: addr.name,
        room: addr.room,
        peer: new.peer,
        since: SystemTime::now(),
        protocol: new.protocol,
    };
    if ctx.hub.send(Event::Join(info, outbox)).is_err() {
        return; // the hub has stopped
    }
    let close = session.run();
    let _ = ctx.hub.send(Event::Leave(new.id, close));
}

/// Hands a server session's messages to the hub, enforcing the rate limit.
struct HubHandler {
    id: u64,
    hub: Sender<Event>,
    limit: Option<RateLimit>,
}

impl Handler for HubHandler {
    fn message(&mut self, msg: Message) -> std::result::Result<(), (u16, String)> {
        if let Some(limit) = &mut self.limit {
            if !limit.allow(Instant::now()) {
                let _ = self.hub.send(Event::Dropped("rate limit"));
                let reason = format!("rate limit exceeded ({} messages/s)", limit.rate);
                return Err((1008, reason));
            }
        }
        self.hub
            .send(Event::Message(self.id, msg))
            .map_err(|_| (1001, "server shutting down".to_string()))
    }
}

/// A token bucket: `rate` messages per second, bursts of two seconds'
/// worth.
struct RateLimit {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(rate: f64) -> RateLimit {
        RateLimit {
            rate,
            tokens: Self::burst(rate),
            last: Instant::now(),
        }
    }

    fn burst(rate: f64) -> f64 {
        (rate * 2.0).max(1.0)
    }

    /// Takes one token if there is one.
    fn allow(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(Self::burst(self.rate));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut limit = RateLimit::new(10.0);
        let burst = (0..100).take_while(|_| limit.allow(start)).count();
        assert_eq!(burst, 20);
        assert!(!limit.allow(start));
        assert!(limit.allow(start + Duration::from_millis(100)));
        assert!(!limit.allow(start + Duration::from_millis(100)));
    }
}
