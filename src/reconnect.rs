//! A client that reconnects by itself, like the classic Qt demo client.
//!
//! # Threads
//!
//! [`ReconnectingClient::start`] starts one manager thread ([`run_manager`])
//! that connects, forwards, and after a drop waits `retry_interval` (plus
//! up to 10 % jitter, so a hundred clients do not return in the same
//! millisecond) and connects again. Each connection has its own session
//! thread, as for [`Client`]. The application sends into a bounded queue
//! that survives drops: what it queues while disconnected is sent, in
//! order, after the next connect. It receives [`ClientEvent`]s: messages
//! and status changes, in the order they happened.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{select, Receiver, RecvTimeoutError, Sender};
use tungstenite::Message;

use crate::client::{Client, Incoming};
use crate::close::CloseInfo;
use crate::config::{ClientConfig, ReconnectConfig};
use crate::error::{Error, Result};

/// What happened on a [`ReconnectingClient`].
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// A connection is up; `protocol` is the negotiated subprotocol.
    Connected {
        /// The subprotocol the server chose, if any.
        protocol: Option<String>,
    },
    /// A text or binary message arrived.
    Message(Message),
    /// The connection ended.
    Disconnected(CloseInfo),
    /// A connect attempt failed, with the error's text.
    ConnectFailed(String),
    /// The next attempt starts after `delay`; `attempt` counts from 1.
    Reconnecting {
        /// Time until the next attempt.
        delay: Duration,
        /// Which retry this is (1 for the first).
        attempt: u32,
    },
    /// No more attempts (`max_retries` reached, or closed on request).
    /// Nothing follows.
    Stopped,
}

/// What the application queues for the manager thread.
#[derive(Debug)]
enum Out {
    Message(Message),
    Close(u16, String),
}

/// A client that keeps a connection up and queues while it is down.
#[derive(Debug)]
pub struct ReconnectingClient {
    out: Sender<Out>,
    events: Receiver<ClientEvent>,
    abort: Sender<()>,
}

impl ReconnectingClient {
    /// Starts connecting to `url` in the background.
    ///
    /// # Errors
    /// [`Error::Io`] when the manager thread cannot start.
    pub fn start(url: &str, cfg: ClientConfig, rcfg: ReconnectConfig) -> Result<Self> {
        let (out_tx, out_rx) = crossbeam_channel::bounded(rcfg.pending_limit.max(1));
        let (ev_tx, events) = crossbeam_channel::bounded(cfg.recv_queue.max(1));
        let (abort, abort_rx) = crossbeam_channel::bounded(1);
        let manager = Manager {
            url: url.to_string(),
            cfg,
            rcfg,
            out: out_rx,
            events: ev_tx,
            abort: abort_rx,
            unsent: None,
        };
        thread::Builder::new()
            .name("wshub-reconnect".into())
            .spawn(move || run_manager(manager))
            .map_err(|e| Error::io("starting the reconnect thread", e))?;
        Ok(ReconnectingClient {
            out: out_tx,
            events,
            abort,
        })
    }

    /// Queues a message; it is sent now, or after the next connect.
    /// Blocks while `pending_limit` messages wait.
    ///
    /// # Errors
    /// [`Error::Closed`] once the client has stopped.
    pub fn send(&self, msg: Message) -> Result<()> {
        self.out.send(Out::Message(msg)).map_err(|_| Error::Closed)
    }

    /// Closes with `code` and `reason` after everything queued before has
    /// been sent; then [`ClientEvent::Stopped`] follows.
    ///
    /// # Errors
    /// [`Error::Closed`] once the client has stopped.
    pub fn close(&self, code: u16, reason: &str) -> Result<()> {
        self.out
            .send(Out::Close(code, reason.to_string()))
            .map_err(|_| Error::Closed)
    }

    /// The stream of events; ends after [`ClientEvent::Stopped`].
    pub fn events(&self) -> &Receiver<ClientEvent> {
        &self.events
    }
}

impl Drop for ReconnectingClient {
    /// Tells the manager thread to close with 1001 and stop; does not wait
    /// for it.
    fn drop(&mut self) {
        let _ = self.abort.try_send(());
    }
}

/// The manager thread's state.
struct Manager {
    url: String,
    cfg: ClientConfig,
    rcfg: ReconnectConfig,
    out: Receiver<Out>,
    events: Sender<ClientEvent>,
    abort: Receiver<()>,
    // A message taken from the queue whose connection died before it was
    // handed over; it goes first after the next connect.
    unsent: Option<Message>,
}

/// How one connection ended.
enum Ending {
    /// The connection dropped; try again.
    Dropped,
    /// The application asked to stop.
    Stop,
}

/// The manager thread: connect, pump, wait, again.
fn run_manager(mut m: Manager) {
    let mut attempt = 0u32;
    loop {
        match Client::connect_with_config(&m.url, m.cfg.clone()) {
            Ok(client) => {
                attempt = 0;
                let protocol = client.protocol().map(str::to_string);
                if !m.emit(ClientEvent::Connected { protocol }) {
                    return;
                }
                if let Ending::Stop = m.pump(&client) {
                    break;
                }
            }
            Err(e) => {
                if !m.emit(ClientEvent::ConnectFailed(e.to_string())) {
                    return;
                }
            }
        }
        attempt += 1;
        if m.rcfg.max_retries.is_some_and(|max| attempt > max) {
            break;
        }
        let delay = jitter(m.rcfg.retry_interval);
        if !m.emit(ClientEvent::Reconnecting { delay, attempt }) {
            return;
        }
        match m.abort.recv_timeout(delay) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
    m.emit(ClientEvent::Stopped);
}

impl Manager {
    /// Hands an event to the application; `false` when it has gone.
    fn emit(&self, event: ClientEvent) -> bool {
        select! {
            send(self.events, event) -> r => r.is_ok(),
            recv(self.abort) -> _ => false,
        }
    }

    /// Moves messages both ways until the connection ends or a close is
    /// requested.
    fn pump(&mut self, client: &Client) -> Ending {
        for msg in self.rcfg.on_connect.clone() {
            if client.send(msg).is_err() {
                return self.dropped(client, None);
            }
        }
        if let Some(msg) = self.unsent.take() {
            if client.send(msg.clone()).is_err() {
                return self.dropped(client, Some(msg));
            }
        }
        loop {
            select! {
                recv(client.incoming()) -> item => match item {
                    Ok(Incoming::Message(msg)) => {
                        if !self.emit(ClientEvent::Message(msg)) {
                            return Ending::Stop;
                        }
                    }
                    Ok(Incoming::Closed(info)) => {
                        client.set_closed(info.clone());
                        self.emit(ClientEvent::Disconnected(info));
                        return Ending::Dropped;
                    }
                    Err(_) => return self.dropped(client, None),
                },
                recv(self.out) -> item => match item {
                    Ok(Out::Message(msg)) => {
                        if client.send(msg.clone()).is_err() {
                            return self.dropped(client, Some(msg));
                        }
                    }
                    Ok(Out::Close(code, reason)) => {
                        let info = client.close(code, &reason);
                        self.emit(ClientEvent::Disconnected(info));
                        return Ending::Stop;
                    }
                    // The application dropped its sender: close normally.
                    Err(_) => {
                        client.close(1000, "");
                        return Ending::Stop;
                    }
                },
                recv(self.abort) -> _ => {
                    client.close(1001, "going away");
                    return Ending::Stop;
                }
            }
        }
    }

    /// The session ended while we were sending: keep the message, report
    /// the end.
    fn dropped(&mut self, client: &Client, unsent: Option<Message>) -> Ending {
        self.unsent = unsent;
        let info = loop {
            match client.incoming().recv() {
                Ok(Incoming::Message(msg)) => {
                    self.emit(ClientEvent::Message(msg));
                }
                Ok(Incoming::Closed(info)) => break info,
                Err(_) => break CloseInfo::abnormal("connection lost"),
            }
        };
        self.emit(ClientEvent::Disconnected(info));
        Ending::Dropped
    }
}

/// `base` plus up to 10 % random jitter.
fn jitter(base: Duration) -> Duration {
    let random = RandomState::new().hash_one(std::time::SystemTime::now());
    let tenth_ms = (base.as_millis() / 10).max(1) as u64;
    base + Duration::from_millis(random % tenth_ms)
}
