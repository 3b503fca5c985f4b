//! The hub's second writer: a thread that writes half of a quiet round's
//! lone frames, so that on a machine with two or more cores the hub's
//! direct writes (see `session::Direct`) run on two cores at once.
//!
//! # Why
//!
//! When a lone message goes to many sleeping receivers, the hub writes
//! its frame to each socket itself, one `write()` after another, instead
//! of waking each receiver's thread. A `write()` to a socket costs a few
//! microseconds, so with 100 receivers the last one got the message about
//! 0.5 ms after the first, where an event loop on two cores spreads the
//! writes over both.
//!
//! # Who owns what
//!
//! The hub owns every batch. At the end of a round it lends the second
//! half of the batches it would write itself to this thread, one [`Lent`]
//! at a time over a channel, and writes the first half. Then it takes
//! back from the same channel whatever this thread has not started (if
//! the thread has not been scheduled yet, the hub ends up writing
//! everything, as it would alone) and waits only for the ones this thread
//! is writing, before it starts another round. So no two threads ever
//! write to one socket at the same time, and a receiver's frames keep
//! their order. The thread holds nothing between rounds; it ends when the
//! hub drops its [`Writer`].

use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};
use log::debug;

use crate::session::Outbox;
use crate::wire::Batch;

/// Fewest lone batches in a round before half of them are lent: below
/// that, waking the writer costs more than the writes it would take over.
pub(crate) const SPLIT_MIN: usize = 16;

/// One receiver's frames, lent to the writer for one round.
pub(crate) struct Lent {
    /// The receiver's id in the hub.
    pub(crate) id: u64,
    /// Its outbox, for `Outbox::write_direct`.
    pub(crate) outbox: Outbox,
    /// The frames.
    pub(crate) batch: Batch,
    /// Whether they were written (or handed to the session with what the
    /// socket did not take), as `Outbox::write_direct` returns it.
    pub(crate) written: bool,
    /// Whether the writer thread wrote them (rather than the hub, which
    /// took them back before the thread started on them).
    pub(crate) by_writer: bool,
}

impl Lent {
    /// Writes the frames straight to the receiver's socket.
    pub(crate) fn write(&mut self) {
        self.written = self.outbox.write_direct(&self.batch);
    }
}

/// The hub's handle on its second writer thread.
pub(crate) struct Writer {
    todo: Option<Sender<Lent>>,
    // The same queue the thread takes from: the hub takes back what the
    // thread has not started.
    queue: Receiver<Lent>,
    done: Receiver<Lent>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread, or `None` when the machine has a single
    /// core (two threads writing would only take turns) or the thread
    /// cannot be started (the hub then writes everything itself).
    pub(crate) fn start() -> Option<Writer> {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        if cores < 2 {
            return None;
        }
        let (todo, queue) = crossbeam_channel::unbounded::<Lent>();
        let (finished, done) = crossbeam_channel::unbounded();
        let taken = queue.clone();
        let spawned = thread::Builder::new()
            .name("wshub-writer".into())
            .stack_size(64 << 10)
            .spawn(move || {
                for mut lent in taken {
                    lent.write();
                    lent.by_writer = true;
                    if finished.send(lent).is_err() {
                        break;
                    }
                }
            });
        match spawned {
            Ok(thread) => Some(Writer {
                todo: Some(todo),
                queue,
                done,
                thread: Some(thread),
            }),
            Err(e) => {
                debug!("no second writer thread ({e}); the hub writes alone");
                None
            }
        }
    }

    /// Whether the thread is still there (it could only end by a bug).
    pub(crate) fn alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Hands `lent` to the writer thread. `Err` gives it back when the
    /// thread has ended. The channel itself never refuses: this handle
    /// keeps a receiver of it.
    pub(crate) fn lend(&self, lent: Lent) -> Result<(), Lent> {
        match &self.todo {
            Some(todo) if self.alive() => todo.send(lent).map_err(|e| e.into_inner()),
            _ => Err(lent),
        }
    }

    /// Takes back one lent batch the thread has not started, if any.
    pub(crate) fn take_back(&self) -> Option<Lent> {
        self.queue.try_recv().ok()
    }

    /// Waits for a batch the thread has written. `None` if the thread
    /// died (a bug; the hub then counts what it still had as lost).
    pub(crate) fn finished(&self) -> Option<Lent> {
        self.done.recv().ok()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.todo.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
