//! The hub thread: who is online, where each message goes, the counters.
//!
//! # Who owns what
//!
//! [`run_hub`] runs on its own thread and is the only owner of the client
//! map, the name and room indexes, the offline queues and the statistics.
//! Nothing here is locked: sessions, the acceptor, the console and library
//! callers send it [`Event`]s over one bounded channel, and it answers
//! queries over reply channels they pass along.
//!
//! # Never blocked by a client
//!
//! The hub never waits for a session: it queues into the session's
//! [`Outbox`] (never full) and checks that receiver's backlog itself. A
//! receiver with more than `send_queue` messages or `send_queue_bytes`
//! bytes waiting while its socket refuses more bytes is a slow consumer:
//! the message is not queued, the drop is logged and counted, and that
//! client is closed with 1008. A receiver whose socket still takes bytes
//! is only waiting for a CPU, so its queue may grow to four times those
//! limits before the same rule applies. Everyone else carries on at full
//! speed.
//!
//! # Batching
//!
//! A message is framed once ([`Frame`]) however many clients receive it.
//! The hub handles the events already waiting (up to [`WAKE_AFTER`]
//! deliveries' worth) before it wakes the sessions it queued for, so a
//! burst of messages costs each receiver one wake-up and one `write()`,
//! not one per message. Until then it collects each receiver's frames in
//! a batch of its own and hands the batch over in one piece when it wakes
//! that receiver: one channel send per receiver and round, not one per
//! message. When its channel runs empty it wakes them at once, so a lone
//! message is not delayed; a receiver that sleeps with nothing else to
//! send gets a lone message written to its socket by the hub itself, which
//! costs one `write()` instead of a thread's wake-up (`session::Direct`).
//! When many receivers get such a lone message, a second thread writes
//! half of them on another core ([`crate::writer`]); the hub takes back
//! what that thread has not started and waits for the rest before its
//! next round. Sessions give the buffers of sent batches back
//! ([`Spares`]); the hub fills them again, and frees those left over once
//! it has been quiet for [`SPARES_KEPT`].

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{debug, info, warn};
use tungstenite::Message;

use crate::close::CloseInfo;
use crate::config::{Mode, ServerConfig};
use crate::naming::show_room;
use crate::session::Outbox;
use crate::stats::Stats;
use crate::wire::{Batch, Frame, Spares};
use crate::writer::{Lent, Writer, SPLIT_MIN};

/// Deliveries queued before the hub stops to wake the sessions it queued
/// for (it also wakes them whenever its channel runs empty). Measured with
/// 100 receivers of 64-byte messages: waking after every 64 events gave
/// 4.7 M deliveries/s, after 8192 deliveries 5.4 M/s, after 32768
/// deliveries 7.0-7.9 M/s, because each woken session then writes more
/// frames per `write()`.
const WAKE_AFTER: usize = 32768;
/// A receiver with this many messages batched (or half its send queue,
/// if less) gets them and is woken at once, without waiting for the end of
/// the round, so a busy receiver's queue never nears its limit just
/// because the hub was busy.
const WAKE_EARLY: usize = 256;
/// Most frames, and bytes, the hub writes to a sleeping receiver's socket
/// itself at the end of a quiet round; a receiver with more is woken to
/// write them (the hub is busy then, and the session batches better). The
/// byte bound keeps large messages off the hub: writing 1 MiB to each of
/// 100 sockets from one thread, and keeping what a socket did not take,
/// made the hub the limit at 1 700 deliveries/s, where sessions writing
/// in parallel reach 4 000.
const DIRECT_MAX: usize = 8;
const DIRECT_MAX_BYTES: usize = 16 << 10;
/// Events handled at most between two wake rounds, for events that queue
/// nothing (a flood of messages to nobody).
const MAX_EVENTS: usize = 4096;
/// A receiver's queue may grow to this many times its limits while its
/// socket still takes bytes (it is only not scheduled yet); past that it is
/// closed as too slow all the same.
const HARD_LIMIT_FACTOR: usize = 4;
/// What an offline message costs beyond its payload, for `offline_bytes`.
const OFFLINE_OVERHEAD: usize = 64;
/// How long the hub keeps batch buffers that came back after its last
/// delivery (at most 64 of up to 64 KiB each). Reused, they cut the server's
/// CPU per delivery under fan-out load by 30-45 % in the static musl build
/// (2.1-2.5 -> 3.6-4.7 M deliveries/s); with glibc the difference was
/// within the noise. Kept longer, an idle server would hold them for
/// nothing.
pub(crate) const SPARES_KEPT: Duration = Duration::from_secs(1);

/// A connected client, as `/list` and [`Server::clients`](crate::Server::clients) show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// Connection number, unique for the server's lifetime.
    pub id: u64,
    /// The client's name (from its URL path).
    pub name: String,
    /// The client's room; empty for the default room.
    pub room: String,
    /// The client's address.
    pub peer: SocketAddr,
    /// When the handshake completed.
    pub since: SystemTime,
    /// The subprotocol agreed in the handshake, if any.
    pub protocol: Option<String>,
}

/// What other threads tell the hub.
///
/// The hub's channel preallocates a slot for every event it can hold, so
/// the rare, large events are boxed and a slot is little more than a
/// message.
#[derive(Debug)]
pub(crate) enum Event {
    /// A session finished its handshake.
    Join(Box<(ClientInfo, Outbox)>),
    /// A session received a message.
    Message(u64, Message),
    /// A session ended.
    Leave(u64, CloseInfo),
    /// A handshake was refused, for this reason.
    Rejected(&'static str),
    /// A session dropped a message it received, for this reason.
    Dropped(&'static str),
    /// A request from the console or a library caller.
    Command(Box<Command>),
}

/// Requests that come from the console or the library.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send to every client.
    Broadcast(Message),
    /// Send to the clients with this name; replies with how many.
    SendTo(String, Message, Sender<usize>),
    /// Close the clients with this name with 1008; replies with how many.
    Kick(String, String, Sender<usize>),
    /// Reply with the online clients.
    List(Sender<Vec<ClientInfo>>),
    /// Reply with the counters.
    Stats(Sender<Stats>),
    /// Close everyone with 1001 and end the hub.
    Shutdown,
}

/// Hashes the hub's client ids for its map of clients: one multiplication
/// (Fibonacci hashing) instead of the default SipHash, whose
/// flooding resistance ids do not need: the server assigns them, one
/// counter value per connection. SipHash was a fifth of the server's
/// instructions per delivery (two lookups per delivered message).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The hub's clients by id.
type Clients = HashMap<u64, Entry, BuildHasherDefault<IdHasher>>;

/// One online client, as the hub keeps it.
struct Entry {
    info: ClientInfo,
    outbox: Outbox,
    // Set once the hub has asked this client to close; it gets nothing more.
    closing: bool,
    // Queued for during this batch and not yet woken.
    dirty: bool,
    // Frames queued during this round, handed to the session in one piece
    // when it is woken (one channel send per receiver and round, not per
    // message), and their payload bytes.
    batch: Batch,
}

/// The hub's state; only the hub thread touches it.
struct Hub {
    cfg: ServerConfig,
    limits: QueueLimits,
    clients: Clients,
    by_name: HashMap<String, Vec<u64>>,
    by_room: HashMap<String, Vec<u64>>,
    offline: HashMap<String, VecDeque<Message>>,
    offline_bytes: usize,
    stats: Stats,
    dirty: Vec<u64>,
    // Deliveries queued since the last wake round.
    queued: usize,
    shutting_down: Option<Instant>,
    // The second writer (plain TCP on two or more cores), and the frames
    // lent to it this round and not yet back.
    writer: Option<Writer>,
    lent_frames: usize,
    // Buffers of sent batches, back from the sessions; and whether batches
    // went out since they were last freed (so more may come back).
    spares: Spares,
    spares_due: bool,
}

/// A receiver's queue limits, worked out once from the config (they are
/// checked on every delivery).
struct QueueLimits {
    // Over these while the socket is full: too slow.
    messages: usize,
    bytes: usize,
    // Over these in any case: too slow.
    hard_messages: usize,
    hard_bytes: usize,
    // Wake the receiver at once at this many waiting messages.
    wake_at: usize,
}

impl QueueLimits {
    fn new(cfg: &ServerConfig) -> QueueLimits {
        QueueLimits {
            messages: cfg.send_queue,
            bytes: cfg.send_queue_bytes,
            hard_messages: cfg.send_queue * HARD_LIMIT_FACTOR,
            hard_bytes: cfg.send_queue_bytes * HARD_LIMIT_FACTOR,
            wake_at: (cfg.send_queue / 2).clamp(1, WAKE_EARLY),
        }
    }
}

/// What an offline message counts against `offline_bytes`.
fn offline_cost(msg: &Message) -> usize {
    msg.len() + OFFLINE_OVERHEAD
}

/// The hub thread's loop: handle events in batches until shut down and
/// every client has left (or the close timeout has passed).
pub(crate) fn run_hub(cfg: ServerConfig, events: Receiver<Event>, spares: Spares) {
    let mut hub = Hub::new(cfg, spares);
    // Join and leave lines go out once per round (see `log_lines`).
    crate::log_lines::hold_on_this_thread();
    let _written = crate::log_lines::EndRoundOnDrop;
    loop {
        crate::log_lines::end_round();
        let first = match hub.shutting_down {
            None if hub.spares_due => events.recv_timeout(SPARES_KEPT),
            None => events.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(since) => {
                let limit = since + hub.cfg.close_timeout + Duration::from_millis(500);
                events.recv_deadline(limit)
            }
        };
        let first = match first {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) if hub.shutting_down.is_none() => {
                debug!("quiet: freeing {} spare buffers", hub.spares.len());
                hub.spares.clear();
                hub.spares_due = false;
                continue;
            }
            Err(_) => break,
        };
        hub.handle(first);
        for event in events.try_iter().take(MAX_EVENTS) {
            hub.handle(event);
            if hub.queued >= WAKE_AFTER {
                break;
            }
        }
        hub.wake_dirty(events.is_empty());
        if hub.shutting_down.is_some() && hub.clients.is_empty() {
            break;
        }
    }
    if !hub.clients.is_empty() {
        warn!(
            "{} clients did not finish closing in time",
            hub.clients.len()
        );
    }
    debug!("hub thread ends");
}

impl Hub {
    fn new(cfg: ServerConfig, spares: Spares) -> Hub {
        let cfg_plain = !crate::server::tls_enabled(&cfg);
        Hub {
            limits: QueueLimits::new(&cfg),
            cfg,
            clients: Clients::default(),
            by_name: HashMap::new(),
            by_room: HashMap::new(),
            offline: HashMap::new(),
            offline_bytes: 0,
            stats: Stats::new(),
            dirty: Vec::new(),
            queued: 0,
            shutting_down: None,
            // Only plain TCP sessions lend their sockets.
            writer: cfg_plain.then(Writer::start).flatten(),
            lent_frames: 0,
            spares,
            spares_due: false,
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Join(joined) => {
                let (info, outbox) = *joined;
                self.join(info, outbox);
            }
            Event::Message(id, msg) => self.message(id, msg),
            Event::Leave(id, close) => self.leave(id, close),
            Event::Rejected(reason) => self.stats.reject(reason),
            Event::Dropped(reason) => self.stats.drop(reason, 1),
            Event::Command(cmd) => self.command(*cmd),
        }
    }

    fn join(&mut self, info: ClientInfo, outbox: Outbox) {
        let id = info.id;
        self.stats.connections_total += 1;
        self.by_name.entry(info.name.clone()).or_default().push(id);
        self.by_room.entry(info.room.clone()).or_default().push(id);
        info!(
            "join {} room {} from {} ({} online)",
            info.name,
            show_room(&info.room),
            info.peer,
            self.clients.len() + 1
        );
        let name = info.name.clone();
        self.clients.insert(
            id,
            Entry {
                info,
                outbox,
                closing: false,
                dirty: false,
                batch: Batch::default(),
            },
        );
        if self.shutting_down.is_some() {
            self.close(id, 1001, "server shutting down");
            return;
        }
        self.deliver_offline(&name, id);
    }

    fn leave(&mut self, id: u64, close: CloseInfo) {
        let Some(entry) = self.clients.remove(&id) else {
            return;
        };
        // Batched here, or handed over and never taken by the session.
        let lost = entry.batch.len() + entry.outbox.len();
        if lost > 0 {
            lost_to_leave(&entry.info.name, lost, &mut self.stats);
        }
        let info = entry.info;
        unindex(&mut self.by_name, &info.name, id);
        unindex(&mut self.by_room, &info.room, id);
        let by = if close.by_peer {
            ""
        } else {
            " (closed by server)"
        };
        info!(
            "leave {} room {} from {}: {close}{by} ({} online)",
            info.name,
            show_room(&info.room),
            info.peer,
            self.clients.len()
        );
    }

    /// Routes a message a client sent.
    fn message(&mut self, from: u64, msg: Message) {
        self.stats.messages_in += 1;
        self.stats.bytes_in += msg.len() as u64;
        let Some(sender) = self.clients.get(&from) else {
            return;
        };
        if sender.closing {
            self.stats.drop("sender closing", 1);
            debug!(
                "dropped a message from {} while it closes",
                sender.info.name
            );
            return;
        }
        if self.cfg.mode == Mode::Echo {
            if let Some(frame) = self.frame(&msg) {
                self.deliver(from, &frame);
            }
            return;
        }
        let receiver = match &msg {
            Message::Text(text) => crate::json::receiver(text),
            _ => None,
        };
        match receiver {
            Some(name) => self.direct(&name, msg),
            None => self.broadcast_from(from, &msg),
        }
    }

    /// A directed message: to every client called `name`, or into the
    /// offline queue when none is online.
    fn direct(&mut self, name: &str, msg: Message) {
        if self.send_to_name(name, &msg) > 0 {
            return;
        }
        let cost = offline_cost(&msg);
        if self.offline_bytes + cost > self.cfg.offline_bytes || self.cfg.offline_queue == 0 {
            warn!("offline store full: dropped a message for {name}");
            self.stats.drop("offline store full", 1);
            return;
        }
        let queue = self.offline.entry(name.to_string()).or_default();
        queue.push_back(msg);
        self.offline_bytes += cost;
        if queue.len() > self.cfg.offline_queue {
            if let Some(old) = queue.pop_front() {
                self.offline_bytes -= offline_cost(&old);
                warn!("offline queue for {name} full: dropped its oldest message");
                self.stats.drop("offline queue overflow", 1);
            }
        }
    }

    /// Delivers what waited for `name` to the client `id` that just joined.
    fn deliver_offline(&mut self, name: &str, id: u64) {
        let Some(queue) = self.offline.remove(name) else {
            return;
        };
        info!("delivering {} queued messages to {name}", queue.len());
        for msg in queue {
            self.offline_bytes -= offline_cost(&msg);
            if let Some(frame) = self.frame(&msg) {
                self.deliver(id, &frame);
            }
        }
    }

    /// Sends to every open client called `name`; returns how many.
    fn send_to_name(&mut self, name: &str, msg: &Message) -> usize {
        // Borrowed out of the index while delivering, as in
        // `broadcast_from`: no copy of the list per message.
        let Some(ids) = self.by_name.get_mut(name).map(std::mem::take) else {
            return 0;
        };
        let sent = match self.frame(msg) {
            Some(frame) => ids.iter().filter(|&&id| self.deliver(id, &frame)).count(),
            None => 0,
        };
        if let Some(slot) = self.by_name.get_mut(name) {
            *slot = ids;
        }
        sent
    }

    /// Sends to every other client in the sender's room.
    fn broadcast_from(&mut self, from: u64, msg: &Message) {
        let Some(sender) = self.clients.get(&from) else {
            return;
        };
        // Borrow the member list out of the index while delivering (no copy
        // per message); delivering never changes room membership.
        let Some(ids) = self.by_room.get_mut(&sender.info.room).map(std::mem::take) else {
            return;
        };
        // Framed once for all the receivers.
        if let Some(frame) = self.frame(msg) {
            for &id in &ids {
                if id != from {
                    self.deliver(id, &frame);
                }
            }
        }
        if let Some(sender) = self.clients.get(&from) {
            if let Some(slot) = self.by_room.get_mut(&sender.info.room) {
                *slot = ids;
            }
        }
    }

    /// Frames `msg` once for all its receivers. Only text and binary
    /// messages are routed (a session answers pings and closes itself).
    fn frame(&mut self, msg: &Message) -> Option<Frame> {
        let frame = Frame::encode(msg);
        if frame.is_none() {
            warn!("not sent: only text and binary messages are routed");
            self.stats.drop("not a data message", 1);
        }
        frame
    }

    /// Queues `frame` for client `id` unless it is closing or too slow.
    /// Returns whether it was queued.
    fn deliver(&mut self, id: u64, frame: &Frame) -> bool {
        let Some(entry) = self.clients.get_mut(&id) else {
            return false;
        };
        if entry.closing {
            self.stats.drop("receiver closing", 1);
            return false;
        }
        let len = frame.payload();
        let backlog = entry.outbox.len() + entry.batch.len();
        let bytes = entry.outbox.bytes() + entry.batch.payload() + len;
        let limits = &self.limits;
        let over = backlog >= limits.messages || bytes > limits.bytes;
        let far_over = backlog >= limits.hard_messages || bytes > limits.hard_bytes;
        if (over && entry.outbox.is_blocked()) || far_over {
            warn!(
                "{} ({}) is too slow: {backlog} messages waiting; closing it",
                entry.info.name, entry.info.peer
            );
            self.stats.drop("slow consumer", 1);
            self.close(id, 1008, "too slow: send queue full");
            return false;
        }
        entry.batch.push(frame, &self.spares);
        self.spares_due = true;
        self.queued += 1;
        if entry.batch.len() >= self.limits.wake_at {
            hand_over(entry, &mut self.stats);
            entry.outbox.wake();
        }
        self.stats.messages_out += 1;
        self.stats.bytes_out += len as u64;
        if !entry.dirty {
            entry.dirty = true;
            self.dirty.push(id);
        }
        true
    }

    /// Asks client `id` to close with `code`; it gets nothing more.
    fn close(&mut self, id: u64, code: u16, reason: &str) {
        if let Some(entry) = self.clients.get_mut(&id) {
            if !entry.closing {
                entry.closing = true;
                // What was queued before goes out before the close frame.
                hand_over(entry, &mut self.stats);
                entry.outbox.close(code, reason);
            }
        }
    }

    /// Hands the sessions queued for during this round their frames and
    /// wakes them. When the hub has nothing else waiting (`idle`), a
    /// sleeping receiver of a few frames gets them written to its socket
    /// by the hub instead, which costs one `write()` instead of waking its
    /// thread (see `session::Direct`); with many such receivers, the
    /// second writer takes half of them.
    fn wake_dirty(&mut self, idle: bool) {
        self.queued = 0;
        let mut dirty = std::mem::take(&mut self.dirty);
        let lent = if idle { self.lend_half(&dirty) } else { 0 };
        for id in dirty.drain(..) {
            if let Some(entry) = self.clients.get_mut(&id) {
                entry.dirty = false;
                if entry.batch.is_empty() {
                    continue; // lent, or handed over early (then woken)
                }
                let written = idle && lone(&entry.batch) && entry.outbox.write_direct(&entry.batch);
                settle(entry, written, &mut self.stats);
            }
        }
        self.dirty = dirty;
        if idle {
            self.take_back(lent);
        }
    }

    /// Lends the second writer the second half of the batches the hub
    /// would write itself this round, if there are enough of them.
    /// Returns how many it lent.
    fn lend_half(&mut self, dirty: &[u64]) -> usize {
        let Some(writer) = &self.writer else {
            return 0;
        };
        let clients = &self.clients;
        let n = dirty
            .iter()
            .filter(|id| clients.get(id).is_some_and(|e| lone(&e.batch)))
            .count();
        if n < SPLIT_MIN {
            return 0;
        }
        let mut skip = n - n / 2;
        let mut lent = 0;
        for id in dirty {
            let Some(entry) = self.clients.get_mut(id) else {
                continue;
            };
            if !lone(&entry.batch) {
                continue;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            let frames = entry.batch.len();
            let item = Lent {
                id: *id,
                outbox: entry.outbox.clone(),
                batch: std::mem::take(&mut entry.batch),
                written: false,
                by_writer: false,
            };
            if let Err(item) = writer.lend(item) {
                // The thread has ended: the hub writes the rest itself,
                // and `take_back` lets the writer go.
                entry.batch = item.batch;
                break;
            }
            self.lent_frames += frames;
            lent += 1;
        }
        lent
    }

    /// Ends a round with a second writer: writes the `lent` batches it has
    /// not started, waits for those it is writing, and keeps the books. A
    /// writer thread that has ended (a bug) is let go, and the hub writes
    /// alone from then on.
    fn take_back(&mut self, mut lent: usize) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        let mut alive = true;
        while lent > 0 {
            let item = match writer.take_back() {
                Some(mut item) => {
                    item.write();
                    item
                }
                None => match writer.finished() {
                    Some(item) => item,
                    None => {
                        alive = false;
                        break;
                    }
                },
            };
            lent -= 1;
            self.lent_frames -= item.batch.len();
            self.restore(item);
        }
        if alive && writer.alive() {
            self.writer = Some(writer);
            return;
        }
        // What it had taken and not given back may be gone.
        let n = std::mem::take(&mut self.lent_frames);
        warn!("the second writer thread has ended ({n} frames lost); the hub writes alone");
        if n > 0 {
            self.stats.drop("writer failed", n as u64);
        }
    }

    /// Gives a lent batch back to its entry and settles it (see
    /// [`settle`]).
    fn restore(&mut self, lent: Lent) {
        let Lent {
            id,
            batch,
            written,
            by_writer,
            ..
        } = lent;
        // The map does not change while batches are lent; should that ever
        // break, what was not written is still counted.
        let Some(entry) = self.clients.get_mut(&id) else {
            if !written {
                warn!(
                    "dropped {} messages for client {id}: it is gone",
                    batch.len()
                );
                self.stats.drop("receiver left", batch.len() as u64);
            }
            return;
        };
        if written && by_writer {
            self.stats.written_by_writer += batch.len() as u64;
        }
        entry.batch = batch;
        settle(entry, written, &mut self.stats);
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Broadcast(msg) => {
                let ids: Vec<u64> = self.clients.keys().copied().collect();
                if let Some(frame) = self.frame(&msg) {
                    for id in ids {
                        self.deliver(id, &frame);
                    }
                }
            }
            Command::SendTo(name, msg, reply) => {
                let _ = reply.send(self.send_to_name(&name, &msg));
            }
            Command::Kick(name, reason, reply) => {
                let ids = self.by_name.get(&name).cloned().unwrap_or_default();
                for id in &ids {
                    info!("kicking {name}: {reason}");
                    self.close(*id, 1008, &reason);
                }
                let _ = reply.send(ids.len());
            }
            Command::List(reply) => {
                let mut list: Vec<ClientInfo> =
                    self.clients.values().map(|e| e.info.clone()).collect();
                list.sort_by_key(|c| c.id);
                let _ = reply.send(list);
            }
            Command::Stats(reply) => {
                self.stats.connections_now = self.clients.len();
                let _ = reply.send(self.stats.clone());
            }
            Command::Shutdown => self.shutdown(),
        }
    }

    fn shutdown(&mut self) {
        if self.shutting_down.is_some() {
            return;
        }
        info!("shutting down: closing {} clients", self.clients.len());
        self.shutting_down = Some(Instant::now());
        let ids: Vec<u64> = self.clients.keys().copied().collect();
        for id in ids {
            self.close(id, 1001, "server shutting down");
        }
    }
}

/// Whether `batch` holds a few small frames, which the hub (or its second
/// writer) writes to a sleeping receiver itself.
fn lone(batch: &Batch) -> bool {
    !batch.is_empty() && batch.len() <= DIRECT_MAX && batch.payload() <= DIRECT_MAX_BYTES
}

/// Ends `entry`'s round: a batch `written` straight to its socket is
/// counted and emptied (its buffer kept for the next round); any other is
/// handed to the session, which is woken.
fn settle(entry: &mut Entry, written: bool, stats: &mut Stats) {
    if written {
        stats.written_by_hub += entry.batch.len() as u64;
        entry.batch.clear();
    } else {
        hand_over(entry, stats);
        entry.outbox.wake();
    }
}

/// Gives the frames queued for `entry` this round to its session. If the
/// session has just ended (the hub has not handled its leave yet), they
/// are dropped, logged and counted.
fn hand_over(entry: &mut Entry, stats: &mut Stats) {
    if entry.batch.is_empty() {
        return;
    }
    let batch = std::mem::take(&mut entry.batch);
    let n = batch.len();
    if !entry.outbox.push_batch(batch) {
        lost_to_leave(&entry.info.name, n, stats);
    }
}

/// Logs and counts `n` messages for `name` that cannot go out because
/// that client has left.
fn lost_to_leave(name: &str, n: usize, stats: &mut Stats) {
    info!("dropped {n} messages for {name}: it has left");
    stats.drop("receiver left", n as u64);
}

/// Removes `id` from the index list under `key`, dropping empty lists.
fn unindex(index: &mut HashMap<String, Vec<u64>>, key: &str, id: u64) {
    if let Some(ids) = index.get_mut(key) {
        ids.retain(|x| *x != id);
        if ids.is_empty() {
            index.remove(key);
        }
    }
}
