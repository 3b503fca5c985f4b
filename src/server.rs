//! The server's public face: binding, and the handles that control it.
//!
//! # Threads
//!
//! [`Server::bind_with_config`] starts two long-lived threads: the hub
//! ([`run_hub`], which owns all shared state) and the acceptor
//! ([`run_acceptor`], which starts one [connection](crate::connection)
//! thread per client whenever no finished connection thread is waiting to
//! take the next connection itself; the listening socket sits in the
//! [`Gate`] they all wait in). [`Server`] owns both threads;
//! [`ServerHandle`] is the cloneable remote control other threads
//! (console, signal handler, tests) use. Both talk to the hub only
//! through its channel.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::info;
use tungstenite::Message;

use crate::acceptor::{run_acceptor, Admission, Gate};
use crate::config::ServerConfig;
use crate::error::{Error, Result};
use crate::hub::{run_hub, ClientInfo, Command, Event};
use crate::stats::Stats;
use crate::wire::Spares;

/// Events the hub's channel holds before senders wait. The channel writes
/// every slot when it is made, so this is resident from the start: 1024
/// slots of 80 bytes are 80 KiB, and a hub round takes up to 4096 events
/// anyway (4096 slots of the old 160-byte events were 640 KiB of the
/// server's RSS at start).
const HUB_QUEUE: usize = 1024;
/// How long a library call waits for the hub's answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

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
    // Where new connections are taken, and the stop request.
    pub(crate) gate: Arc<Gate>,
    // Connection threads alive (handshaking or in a session).
    active: Arc<AtomicUsize>,
}

/// What every connection thread needs, shared by all of them: the
/// settings, the ways to the hub (its channel, the spare buffers), the
/// gate, and counters that are atomic or behind a lock.
pub(crate) struct Context {
    pub(crate) cfg: ServerConfig,
    pub(crate) hub: Sender<Event>,
    // For plain HTTP answers that ask the hub (the API endpoints), and the
    // stop flag handshakes watch.
    pub(crate) handle: ServerHandle,
    // Connection threads alive (handshaking or in a session).
    pub(crate) active: Arc<AtomicUsize>,
    pub(crate) next_id: AtomicU64,
    // The listener and the threads waiting in it (see `acceptor`).
    pub(crate) gate: Arc<Gate>,
    // The connection limits' counts.
    pub(crate) admission: Admission,
    // Where sessions give sent batch buffers back to the hub.
    pub(crate) spares: Spares,
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
        let gate = Gate::new(listener).map_err(|e| Error::io("setting up the listener", e))?;
        let gate = Arc::new(gate);

        let (hub_tx, hub_rx) = crossbeam_channel::bounded(HUB_QUEUE);
        let spares = Spares::new();
        let hub = spawn("wshub-hub", {
            let cfg = cfg.clone();
            let spares = spares.clone();
            move || run_hub(cfg, hub_rx, spares)
        })?;
        let handle = ServerHandle {
            local_addr,
            hub: hub_tx.clone(),
            gate: gate.clone(),
            active: Arc::new(AtomicUsize::new(0)),
        };
        let scheme = if tls_enabled(&cfg) { "wss" } else { "ws" };
        let ctx = Arc::new(Context {
            cfg,
            hub: hub_tx,
            handle: handle.clone(),
            active: handle.active.clone(),
            next_id: AtomicU64::new(1),
            gate,
            admission: Admission::new(),
            spares,
        });
        let acceptor = spawn("wshub-acceptor", move || run_acceptor(ctx))?;
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
        let _ = self
            .hub
            .send(Event::Command(Box::new(Command::Broadcast(msg))));
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
        let _ = self.hub.send(Event::Command(Box::new(Command::Shutdown)));
    }

    fn stop_acceptor(&self) {
        self.gate.stop();
    }

    /// Sends a command carrying a reply channel and waits for the answer.
    fn ask<T>(&self, make: impl FnOnce(Sender<T>) -> Command) -> Option<T> {
        let (tx, rx): (Sender<T>, Receiver<T>) = crossbeam_channel::bounded(1);
        self.hub.send(Event::Command(Box::new(make(tx)))).ok()?;
        rx.recv_timeout(REPLY_TIMEOUT).ok()
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|e| Error::io(format!("starting the {name} thread"), e))
}

/// Whether the server speaks `wss://`.
pub(crate) fn tls_enabled(cfg: &ServerConfig) -> bool {
    #[cfg(feature = "tls")]
    return cfg.tls.is_some();
    #[cfg(not(feature = "tls"))]
    {
        let _ = cfg;
        false
    }
}
