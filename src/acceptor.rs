//! The acceptor thread: new connections, connection limits, and one thread
//! per accepted connection.
//!
//! # Who owns what
//!
//! [`run_acceptor`] owns the listening socket and the per-address counts.
//! It waits in `epoll` for new connections or a stop request, applies the
//! limits (`--max-clients`, `--max-clients-per-ip`, and the room left in
//! the address space), and hands each connection it admits to a
//! [connection](crate::connection) thread: one that finished its last
//! connection and waits briefly for another, or a new one with a small,
//! configurable stack. A connection over a limit gets 503 from a
//! short-lived thread, so the acceptor itself never waits on a client.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use log::{debug, error, info, warn};
use mio::{Events, Poll};

use crate::connection::{answer_and_close, serve_connection};
use crate::http::Response;
use crate::hub::Event;
use crate::server::{tls_enabled, Context, Stop};
use crate::stream::Stream;

/// Most threads answering refused connections with 503 at once; past
/// that (a flood), refused connections are just closed.
const MAX_REFUSING: usize = 16;
/// Finished connection threads that may wait for a next connection.
const MAX_IDLE_WORKERS: usize = 16;
/// How long a finished connection thread waits for one before it exits.
const WORKER_IDLE: Duration = Duration::from_secs(2);
/// Address space kept free under a limit, for the hub, queues and malloc.
const AS_RESERVE: u64 = 8 << 20;
/// Address space counted per connection besides its stack and guard page.
const AS_PER_CONNECTION: u64 = (64 << 10) + 4096;

/// The acceptor thread's state; only that thread touches it.
pub(crate) struct Acceptor {
    listener: TcpListener,
    poll: Poll,
    ctx: Arc<Context>,
    stop: Arc<Stop>,
    // Open connections per peer address (kept only with a per-IP limit).
    per_ip: HashMap<IpAddr, usize>,
    ended: Receiver<IpAddr>,
    // Hands a connection to a finished thread waiting for one (a
    // rendezvous channel: a send succeeds only if one is waiting).
    jobs: Sender<Job>,
    waiting: Receiver<Job>,
    // The process's address-space size when the acceptor started, bytes.
    base_vm: u64,
}

/// The acceptor thread: accept until told to stop, one thread per client.
pub(crate) fn run_acceptor(mut acc: Acceptor) {
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
    /// The acceptor's state, before its thread starts.
    pub(crate) fn new(
        listener: TcpListener,
        poll: Poll,
        ctx: Arc<Context>,
        stop: Arc<Stop>,
        ended: Receiver<IpAddr>,
    ) -> Acceptor {
        let (jobs, waiting) = crossbeam_channel::bounded(0);
        Acceptor {
            listener,
            poll,
            ctx,
            stop,
            per_ip: HashMap::new(),
            ended,
            jobs,
            waiting,
            base_vm: vm_size().unwrap_or(0),
        }
    }

    /// How many connection threads fit under an address-space limit
    /// (`ulimit -v`, `prlimit --as`), if one is set. A thread whose stack
    /// cannot be mapped is refused cleanly, but a failed heap allocation
    /// aborts the whole process, so the acceptor stops well before that.
    fn thread_budget(&self) -> Option<usize> {
        use rustix::process::{getrlimit, Resource};
        let limit = getrlimit(Resource::As).current?;
        let per_connection = self.ctx.cfg.thread_stack as u64 + AS_PER_CONNECTION;
        let room = limit.saturating_sub(self.base_vm + AS_RESERVE);
        Some((room / per_connection) as usize)
    }

    /// Applies the connection limits, then starts the connection's thread.
    fn admit(&mut self, tcp: TcpStream, peer: SocketAddr) {
        let cfg = &self.ctx.cfg;
        let open = self.ctx.active.load(Ordering::SeqCst);
        if open >= cfg.max_clients {
            let detail = format!("server full ({open} connections)");
            return self.refuse(tcp, peer, "server full", detail);
        }
        if let Some(budget) = self.thread_budget().filter(|b| open >= *b) {
            let detail = format!("address-space limit reached ({budget} connections fit)");
            return self.refuse(tcp, peer, "out of memory", detail);
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
        if !self.start_connection(tcp, peer) && cfg.max_clients_per_ip > 0 {
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

/// An accepted connection on its way to a thread.
struct Job {
    tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
}

impl Acceptor {
    /// Gives an accepted connection to a finished thread waiting for work,
    /// or starts a new thread for it; `false` if neither was possible.
    fn start_connection(&self, tcp: TcpStream, peer: SocketAddr) -> bool {
        let ctx = &self.ctx;
        let id = ctx.next_id.fetch_add(1, Ordering::Relaxed);
        ctx.active.fetch_add(1, Ordering::SeqCst);
        let job = match self.jobs.try_send(Job { tcp, peer, id }) {
            Ok(()) => return true,
            Err(e) => e.into_inner(),
        };
        let worker_ctx = ctx.clone();
        let waiting = self.waiting.clone();
        let spawned = thread::Builder::new()
            .name("wshub-conn".into())
            .stack_size(ctx.cfg.thread_stack)
            .spawn(move || run_worker(&worker_ctx, job, &waiting));
        if let Err(e) = spawned {
            ctx.active.fetch_sub(1, Ordering::SeqCst);
            warn!("refused {peer}: cannot start a thread: {e}");
            let _ = ctx.hub.try_send(Event::Rejected("no thread"));
            return false;
        }
        true
    }
}

/// A connection thread: serves a connection to its end, then waits a
/// little for the next one, because handing a connection to a thread that
/// exists costs less than starting one (measured: 9.0-9.6 k connect,
/// handshake and close cycles per second with a new thread each time,
/// 12.4-12.6 k with reuse). Ends when no connection comes in time or the
/// acceptor has stopped, so a quiet server keeps no spare threads.
fn run_worker(ctx: &Context, mut job: Job, waiting: &Receiver<Job>) {
    let mut reactor = None;
    loop {
        {
            let _slot = Slot {
                ctx,
                ip: job.peer.ip(),
            };
            serve_connection(ctx, job.tcp, job.peer, job.id, &mut reactor);
        }
        if ctx.idle_workers.fetch_add(1, Ordering::SeqCst) >= MAX_IDLE_WORKERS {
            ctx.idle_workers.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        let next = waiting.recv_timeout(WORKER_IDLE);
        ctx.idle_workers.fetch_sub(1, Ordering::SeqCst);
        match next {
            Ok(next) => job = next,
            Err(_) => return,
        }
    }
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

/// This process's address-space size (`VmSize`), in bytes.
fn vm_size() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmSize:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
