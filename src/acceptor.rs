//! New connections: who accepts them, the connection limits, and one
//! thread per accepted connection.
//!
//! # Who owns what
//!
//! The listening socket sits in one epoll set, the [`Gate`], that every
//! thread free to take a connection waits in: connection threads that
//! finished their last connection ([`run_worker`]) and, when none of
//! those is waiting, the acceptor thread ([`run_acceptor`]). The kernel
//! wakes one waiter of an epoll set per event, and the listener is
//! registered one-shot, so each new connection wakes exactly one thread;
//! that thread accepts it, re-arms the listener for the next waiter, and
//! applies the limits ([`admit`]: `--max-clients`, `--max-clients-per-ip`,
//! the room left in the address space). A connection thread then serves
//! the connection itself; the acceptor starts a new connection thread for
//! it, with a small, configurable stack. So while finished threads wait,
//! a connection costs no hand-over between threads: with the acceptor
//! handing every connection to a waiting thread, a connect, handshake and
//! close cycle cost 81-85 µs of server CPU and about five context
//! switches; with the gate, 61-63 µs (measured with `cargo bench --bench
//! load -- --scenario connect`). The kernel reports a connection only
//! once its request has started to arrive ([`defer_accept`]), so the
//! thread that takes it seldom has to sleep again before it can read:
//! 61.2 -> 58.7 µs and 15.3 -> 15.9 k cycles/s (means of six interleaved
//! rounds). A connection over a limit gets 503 from a short-lived thread,
//! so no thread that takes connections waits on a client.
//!
//! The per-address counts live in [`Admission`], behind a lock that only
//! a server with `--max-clients-per-ip` takes.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use rustix::event::{epoll, eventfd, EventfdFlags, Timespec};

use crate::connection::{answer_and_close, serve_connection};
use crate::http::{self, Response};
use crate::hub::Event;
use crate::server::{tls_enabled, Context};
use crate::stream::Stream;

/// Most threads answering refused connections with 503 at once; past
/// that (a flood), refused connections are just closed.
const MAX_REFUSING: usize = 16;
/// Finished connection threads that may wait for a next connection.
const MAX_IDLE_WORKERS: usize = 16;
/// How long a finished connection thread waits for one before it exits.
const WORKER_IDLE: Duration = Duration::from_secs(2);
/// How long, in seconds, the kernel holds a new connection that has sent
/// nothing before reporting it anyway (see [`defer_accept`]).
const DEFER_ACCEPT: libc::c_int = 1;
/// How long the gate stays closed after an accept error such as EMFILE.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Address space kept free under a limit, for the hub, queues and malloc.
const AS_RESERVE: u64 = 8 << 20;
/// Address space counted per connection besides its stack and guard page.
const AS_PER_CONNECTION: u64 = (64 << 10) + 4096;
/// How long the answer to an upgrade request may take to write.
const UPGRADE_SEND: Duration = Duration::from_secs(5);
/// The gate's epoll tokens.
const LISTENER: u64 = 0;
const STOP: u64 = 1;

/// The epoll set that threads free to take a connection wait in: the
/// listening socket (one-shot, re-armed after each accept) and the stop
/// request (an eventfd that stays readable, so every waiter sees it).
#[derive(Debug)]
pub(crate) struct Gate {
    epoll: OwnedFd,
    listener: TcpListener,
    stop: OwnedFd,
    // Set with the stop eventfd; also read by handshakes in progress.
    stopping: AtomicBool,
    // Whether the last accept failed (logged once per failing stretch).
    failing: AtomicBool,
    // The acceptor waits here while finished connection threads wait in
    // the gate; woken when the last of those takes a connection, and on
    // stop.
    dry_lock: Mutex<()>,
    dry: Condvar,
    // Finished connection threads waiting in the gate.
    idle: AtomicUsize,
}

/// What a wait in the [`Gate`] gave.
enum Waited {
    /// A connection, accepted.
    Connection(TcpStream, SocketAddr),
    /// The server is stopping.
    Stopped,
    /// Nothing came in time.
    TimedOut,
}

impl Gate {
    /// Puts a non-blocking listener and a new stop eventfd in a new epoll
    /// set. The listener gets the socket options a handshake needs, which
    /// accepted sockets inherit (three system calls fewer per connection):
    /// `TCP_NODELAY` and [`set_handshake_timeouts`]; and connections are
    /// reported once their first bytes are in ([`defer_accept`]).
    pub(crate) fn new(listener: TcpListener) -> io::Result<Gate> {
        rustix::net::sockopt::set_tcp_nodelay(&listener, true)?;
        set_handshake_timeouts(&listener)?;
        if let Err(e) = defer_accept(&listener) {
            debug!("connections are reported before their first bytes: {e}");
        }
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let stop = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(
            &epoll,
            &listener,
            epoll::EventData::new_u64(LISTENER),
            epoll::EventFlags::IN | epoll::EventFlags::ONESHOT,
        )?;
        epoll::add(
            &epoll,
            &stop,
            epoll::EventData::new_u64(STOP),
            epoll::EventFlags::IN,
        )?;
        Ok(Gate {
            epoll,
            listener,
            stop,
            stopping: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            dry_lock: Mutex::new(()),
            dry: Condvar::new(),
            idle: AtomicUsize::new(0),
        })
    }

    /// The stop flag handshakes in progress watch.
    pub(crate) fn stopping(&self) -> &AtomicBool {
        &self.stopping
    }

    /// Asks every thread waiting in the gate, and the acceptor, to stop,
    /// and stops listening: new connections are refused from now on,
    /// although handles may keep the socket itself open.
    pub(crate) fn stop(&self) {
        if !self.stopping.swap(true, Ordering::SeqCst) {
            let _ = rustix::io::write(&self.stop, &1u64.to_ne_bytes());
            let _ = rustix::net::shutdown(&self.listener, rustix::net::Shutdown::Read);
            let _guard = self.dry_lock.lock();
            self.dry.notify_all();
        }
    }

    /// Waits until a connection comes (and takes it), the server stops,
    /// or `timeout` (if any) passes.
    fn wait(&self, timeout: Option<Duration>) -> Waited {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut events = [epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        }; 2];
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return Waited::Stopped;
            }
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) => Some(Timespec::try_from(left).unwrap_or_default()),
                    None => return Waited::TimedOut,
                },
                None => None,
            };
            let n = match epoll::wait(&self.epoll, &mut events, left.as_ref()) {
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    error!("cannot wait for connections: {e}");
                    return Waited::Stopped;
                }
            };
            if n == 0 {
                return Waited::TimedOut;
            }
            let stop = events[..n].iter().any(|e| e.data.u64() == STOP);
            if stop || self.stopping.load(Ordering::SeqCst) {
                return Waited::Stopped;
            }
            if let Some(accepted) = self.accept() {
                return accepted;
            }
        }
    }

    /// Takes one connection after the listener was reported ready, and
    /// re-arms it for the next waiter. `None` when there was none to take
    /// or the accept failed (then after a pause, so the waiters do not
    /// spin on a connection nobody can take, as with EMFILE).
    fn accept(&self) -> Option<Waited> {
        let result = self.listener.accept();
        if let Err(e) = &result {
            // Only a lack of resources is worth a pause. Anything else is
            // about one connection (another thread was quicker, a signal
            // came, the peer gave up before its turn): nothing to wait for.
            if out_of_resources(e) {
                if !self.failing.swap(true, Ordering::SeqCst) {
                    warn!("accept failed: {e}; retrying every 100 ms");
                }
                thread::sleep(ACCEPT_RETRY);
            }
        } else if self.failing.swap(false, Ordering::SeqCst) {
            info!("accepting connections again");
        }
        let rearmed = epoll::modify(
            &self.epoll,
            &self.listener,
            epoll::EventData::new_u64(LISTENER),
            epoll::EventFlags::IN | epoll::EventFlags::ONESHOT,
        );
        if let Err(e) = rearmed {
            error!("cannot re-arm the listener: {e}");
        }
        result.ok().map(|(tcp, peer)| Waited::Connection(tcp, peer))
    }

    /// A finished connection thread stops waiting; if it was the last, the
    /// acceptor takes over the gate.
    fn leave_idle(&self) {
        if self.idle.fetch_sub(1, Ordering::SeqCst) == 1 {
            let _guard = self.dry_lock.lock();
            self.dry.notify_one();
        }
    }

    /// The acceptor's wait while finished connection threads wait in the
    /// gate. `false` when the server is stopping.
    fn wait_until_dry(&self) -> bool {
        let mut guard = self.dry_lock.lock().unwrap_or_else(|e| e.into_inner());
        while self.idle.load(Ordering::SeqCst) > 0 && !self.stopping.load(Ordering::SeqCst) {
            guard = self.dry.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
        !self.stopping.load(Ordering::SeqCst)
    }
}

/// Sets the socket timeouts a server handshake works with: reads wait
/// in slices of `http::STOP_CHECK` (see `http::read_head_in_slices`), and
/// the answer to an upgrade may take [`UPGRADE_SEND`] to write. Set on the
/// listener, whose accepted sockets inherit them, and again after a TLS
/// handshake, which sets timeouts of its own.
pub(crate) fn set_handshake_timeouts(socket: impl AsFd) -> io::Result<()> {
    use rustix::net::sockopt::{set_socket_timeout, Timeout};
    set_socket_timeout(&socket, Timeout::Recv, Some(http::STOP_CHECK))?;
    set_socket_timeout(&socket, Timeout::Send, Some(UPGRADE_SEND))?;
    Ok(())
}

/// Asks the kernel to report a new connection only once its first bytes
/// (the request head, or a TLS ClientHello) have arrived, or after
/// [`DEFER_ACCEPT`] seconds of silence. The thread woken for a connection
/// then finds the request there instead of going back to sleep until it
/// comes, and a connection that sends nothing takes no thread and no place
/// in the limits meanwhile.
///
/// The library's one `unsafe` block: Rust's own call for this option is
/// unstable, and rustix and socket2 do not have one.
#[allow(unsafe_code)] // a plain setsockopt on a borrowed, open descriptor
fn defer_accept(listener: &TcpListener) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let secs: libc::c_int = DEFER_ACCEPT;
    // SAFETY: the descriptor stays open for the call (borrowed from
    // `listener`); the pointer and length describe `secs`, which outlives
    // the call and is only read.
    let done = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether an accept error is about this process or machine (out of
/// descriptors, buffers or memory: the gate waits before it tries again)
/// rather than about one connection. Linux also passes on network errors
/// of a pending connection (EPROTO, ENETUNREACH, ...), which accept(2)
/// says to treat like EAGAIN; a pause for those would hold up every other
/// client.
fn out_of_resources(e: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        Errno::from_io_error(e),
        Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)
    )
}

/// The connection limits' state, shared by every thread that accepts.
#[derive(Debug)]
pub(crate) struct Admission {
    // Open connections per peer address (kept only with a per-IP limit).
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    // The process's address-space size when the server started, bytes
    // (for when it cannot be read later).
    base_vm: u64,
    // Under an address-space limit: the most connections open at once so
    // far, each admitted with room to spare (see `thread_budget`).
    fitted: AtomicUsize,
    // Threads busy answering refused connections.
    refusing: AtomicUsize,
}

impl Admission {
    /// Empty counts; the address space is measured now.
    pub(crate) fn new() -> Admission {
        Admission {
            per_ip: Mutex::new(HashMap::new()),
            base_vm: vm_size().unwrap_or(0),
            fitted: AtomicUsize::new(0),
            refusing: AtomicUsize::new(0),
        }
    }

    /// The per-address counts, locked (a panic while they were held left
    /// them consistent: every change is one step).
    fn per_ip(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_ip.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The acceptor thread: takes connections only while no finished
/// connection thread waits for one, and starts a thread for each.
pub(crate) fn run_acceptor(ctx: Arc<Context>) {
    let gate = &ctx.gate;
    while gate.wait_until_dry() {
        match gate.wait(None) {
            Waited::Connection(tcp, peer) => {
                if let Some(job) = admit(&ctx, tcp, peer) {
                    start_thread(&ctx, job);
                }
            }
            Waited::Stopped => break,
            Waited::TimedOut => {}
        }
    }
    debug!("acceptor thread ends");
}

/// An accepted connection that passed the limits, on its way to a thread.
struct Job {
    tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
    // Its place in the limits, given back when the job is dropped.
    slot: Slot,
}

/// Applies the connection limits. `Some` holds the connection's place in
/// them ([`Slot`], given back when the job is dropped); `None` when it was
/// refused. Several threads may admit at once, so a place is taken with
/// one atomic step (under the lock, for an address) and the limits stay
/// exact.
fn admit(ctx: &Arc<Context>, tcp: TcpStream, peer: SocketAddr) -> Option<Job> {
    let cfg = &ctx.cfg;
    // The address's place first: a flood from one address over its limit
    // then never holds a place in the global count, where it could make a
    // client from elsewhere look like one too many.
    if cfg.max_clients_per_ip > 0 {
        let mut per_ip = ctx.admission.per_ip();
        let n = per_ip.entry(peer.ip()).or_default();
        if *n >= cfg.max_clients_per_ip {
            let detail = format!("too many connections from {} ({n})", peer.ip());
            drop(per_ip);
            refuse(ctx, tcp, peer, "too many from one address", detail);
            return None;
        }
        *n += 1;
    }
    let budget = thread_budget(ctx);
    let limit = budget.map_or(cfg.max_clients, |b| b.min(cfg.max_clients));
    let mut open = ctx.active.load(Ordering::SeqCst);
    loop {
        if open >= limit {
            give_back_address(ctx, peer.ip());
            if open >= cfg.max_clients {
                let detail = format!("server full ({open} connections)");
                refuse(ctx, tcp, peer, "server full", detail);
            } else {
                let fit = budget.unwrap_or_default();
                let detail = format!("address-space limit reached ({fit} connections fit)");
                refuse(ctx, tcp, peer, "out of memory", detail);
            }
            return None;
        }
        let taken =
            ctx.active
                .compare_exchange_weak(open, open + 1, Ordering::SeqCst, Ordering::SeqCst);
        match taken {
            Ok(_) => break,
            Err(now) => open = now,
        }
    }
    let id = ctx.next_id.fetch_add(1, Ordering::Relaxed);
    let slot = Slot {
        ctx: ctx.clone(),
        ip: peer.ip(),
    };
    Some(Job {
        tcp,
        peer,
        id,
        slot,
    })
}

/// How many connections fit under an address-space limit (`ulimit -v`,
/// `prlimit --as`), if one is set. A thread whose stack cannot be mapped
/// is refused cleanly, but a failed heap allocation aborts the whole
/// process, so the server stops well before that.
///
/// Two counts, the larger wins:
/// - those open now, and as many more as the address space still free has
///   room for. The size is read afresh for every connection (only under a
///   limit): glibc reserves 64 MiB for each new thread's malloc arena, up
///   to eight per core, so the space a connection takes is not a constant.
///   Counted from the size at start, a server under `ulimit -v 400000` let
///   298 clients in and then aborted on a 5-byte allocation.
/// - the most that were open at once, each admitted by the first count.
///   Their stacks and buffers stay mapped after they leave (glibc keeps
///   stacks for new threads, idle connection threads keep theirs), so the
///   size alone would look full for good after a busy moment, while that
///   many connections fit again in the space they already took.
fn thread_budget(ctx: &Context) -> Option<usize> {
    use rustix::process::{getrlimit, Resource};
    let limit = getrlimit(Resource::As).current?;
    let per_connection = ctx.cfg.thread_stack as u64 + AS_PER_CONNECTION;
    let open = ctx.active.load(Ordering::SeqCst) as u64;
    let used = vm_size().unwrap_or(ctx.admission.base_vm + open * per_connection);
    let room = limit.saturating_sub(used + AS_RESERVE);
    let fit = (open + room / per_connection) as usize;
    if fit > open as usize {
        ctx.admission
            .fitted
            .fetch_max(open as usize + 1, Ordering::SeqCst);
    }
    Some(fit.max(ctx.admission.fitted.load(Ordering::SeqCst)))
}

/// Answers a connection over a limit with 503 from a short-lived thread
/// (plain TCP only; a TLS client just sees the connection close).
fn refuse(
    ctx: &Arc<Context>,
    tcp: TcpStream,
    peer: SocketAddr,
    reason: &'static str,
    detail: String,
) {
    warn!("refused {peer}: {detail}");
    let _ = ctx.hub.try_send(Event::Rejected(reason));
    let refusing = &ctx.admission.refusing;
    if tls_enabled(&ctx.cfg) || refusing.load(Ordering::SeqCst) >= MAX_REFUSING {
        return;
    }
    refusing.fetch_add(1, Ordering::SeqCst);
    let ctx = ctx.clone();
    let spawned = thread::Builder::new()
        .name("wshub-refuse".into())
        .stack_size(64 << 10)
        .spawn(move || {
            let mut stream = Stream::Plain(tcp);
            let resp = Response::text(503, &detail).with("Retry-After", "10");
            answer_and_close(&mut stream, &resp, false);
            ctx.admission.refusing.fetch_sub(1, Ordering::SeqCst);
        });
    if spawned.is_err() {
        refusing.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Starts a connection thread for `job`; if it cannot be started, the
/// connection is closed and its place given back.
fn start_thread(ctx: &Arc<Context>, job: Job) {
    let peer = job.peer;
    let worker_ctx = ctx.clone();
    // A job that never reaches its thread gives its place back as it is
    // dropped with the closure.
    let spawned = thread::Builder::new()
        .name("wshub-conn".into())
        .stack_size(ctx.cfg.thread_stack)
        .spawn(move || run_worker(&worker_ctx, job));
    if let Err(e) = spawned {
        warn!("refused {peer}: cannot start a thread: {e}");
        let _ = ctx.hub.try_send(Event::Rejected("no thread"));
    }
}

/// A connection thread: serves a connection to its end, then waits in
/// the gate for the next one, because taking a connection in a thread
/// that exists costs less than starting one (measured: 9.0-9.6 k connect,
/// handshake and close cycles per second with a new thread each time,
/// 12.4-12.6 k with reuse). Ends when no connection comes in time or the
/// server stops, so a quiet server keeps no spare threads.
fn run_worker(ctx: &Arc<Context>, mut job: Job) {
    let mut reactor = None;
    loop {
        let Job {
            tcp,
            peer,
            id,
            slot,
        } = job;
        serve_connection(ctx, tcp, peer, id, &mut reactor);
        drop(slot);
        let gate = &ctx.gate;
        if gate.idle.fetch_add(1, Ordering::SeqCst) >= MAX_IDLE_WORKERS {
            gate.leave_idle();
            return;
        }
        let deadline = Instant::now() + WORKER_IDLE;
        job = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match gate.wait(Some(left)) {
                Waited::Connection(tcp, peer) => {
                    gate.leave_idle();
                    if let Some(job) = admit(ctx, tcp, peer) {
                        break job;
                    }
                    gate.idle.fetch_add(1, Ordering::SeqCst);
                }
                Waited::Stopped | Waited::TimedOut => {
                    gate.leave_idle();
                    return;
                }
            }
        };
    }
}

/// A connection's place in the limits; given back when its connection
/// ends, even by a panic.
struct Slot {
    ctx: Arc<Context>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        give_back_address(&self.ctx, self.ip);
        self.ctx.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Gives back a place `admit` took under the per-address limit.
fn give_back_address(ctx: &Context, ip: IpAddr) {
    if ctx.cfg.max_clients_per_ip == 0 {
        return;
    }
    let mut per_ip = ctx.admission.per_ip();
    if let Some(n) = per_ip.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            per_ip.remove(&ip);
        }
    }
}

/// This process's address-space size (`VmSize`), in bytes.
fn vm_size() -> Option<u64> {
    // The first field of statm: the size in pages.
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().next()?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_resource_errors_pause_the_gate() {
        let os = |errno: rustix::io::Errno| io::Error::from_raw_os_error(errno.raw_os_error());
        use rustix::io::Errno;
        for errno in [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM] {
            assert!(out_of_resources(&os(errno)), "{errno:?}");
        }
        for errno in [
            Errno::AGAIN,
            Errno::INTR,
            Errno::CONNABORTED,
            Errno::PROTO,
            Errno::NETUNREACH,
            Errno::HOSTUNREACH,
            Errno::PERM,
        ] {
            assert!(!out_of_resources(&os(errno)), "{errno:?}");
        }
    }
}
