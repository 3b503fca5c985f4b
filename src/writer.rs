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
//! half of the batches it would write itself to this thread in one
//! [`Lent`] list, writes the first half, and waits for the list to come
//! back before it starts another round. So no two threads ever write to
//! one socket at the same time, and a receiver's frames keep their order.
//! The thread holds nothing between rounds; it ends when the hub drops
//! its [`Writer`].

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
    /// Set by the writer: whether they were written (or handed to the
    /// session with what the socket did not take), as
    /// `Outbox::write_direct` returns it.
    pub(crate) written: bool,
}

/// The hub's handle on its second writer thread.
pub(crate) struct Writer {
    jobs: Option<Sender<Vec<Lent>>>,
    done: Receiver<Vec<Lent>>,
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
        let (jobs, todo) = crossbeam_channel::bounded::<Vec<Lent>>(1);
        let (finished, done) = crossbeam_channel::bounded(1);
        let spawned = thread::Builder::new()
            .name("wshub-writer".into())
            .stack_size(64 << 10)
            .spawn(move || {
                for mut list in todo {
                    for lent in &mut list {
                        lent.written = lent.outbox.write_direct(&lent.batch);
                    }
                    if finished.send(list).is_err() {
                        break;
                    }
                }
            });
        match spawned {
            Ok(thread) => Some(Writer {
                jobs: Some(jobs),
                done,
                thread: Some(thread),
            }),
            Err(e) => {
                debug!("no second writer thread ({e}); the hub writes alone");
                None
            }
        }
    }

    /// Hands `list` to the writer thread. `Err` gives it back when the
    /// thread has gone.
    pub(crate) fn lend(&self, list: Vec<Lent>) -> Result<(), Vec<Lent>> {
        match &self.jobs {
            Some(jobs) => jobs.send(list).map_err(|e| e.into_inner()),
            None => Err(list),
        }
    }

    /// Waits for the list lent last, each entry marked written or not.
    /// `None` if the thread died with it (a bug; the hub then counts those
    /// frames as lost).
    pub(crate) fn collect(&self) -> Option<Vec<Lent>> {
        self.done.recv().ok()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
