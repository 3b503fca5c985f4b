//! The hub's counters. The hub thread owns the live copy; callers get
//! snapshots through [`Server::stats`](crate::Server::stats).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

/// A snapshot of the hub's counters.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Stats {
    /// When the hub started.
    pub started: Instant,
    /// Clients online now.
    pub connections_now: usize,
    /// Clients that completed a handshake since start.
    pub connections_total: u64,
    /// Messages received from clients.
    pub messages_in: u64,
    /// Payload bytes received from clients.
    pub bytes_in: u64,
    /// Messages queued for delivery to clients (one per receiver).
    pub messages_out: u64,
    /// Payload bytes queued for delivery to clients.
    pub bytes_out: u64,
    /// Of `messages_out`, those the hub wrote to a sleeping receiver's
    /// socket itself instead of waking the receiver's thread.
    pub written_by_hub: u64,
    /// Of `written_by_hub`, those its second writer thread wrote (machines
    /// with two or more cores, plain TCP).
    pub written_by_writer: u64,
    /// Messages the hub had to drop, by reason.
    pub dropped: BTreeMap<&'static str, u64>,
    /// Connections refused before or during the handshake, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
}

impl Stats {
    pub(crate) fn new() -> Stats {
        Stats {
            started: Instant::now(),
            connections_now: 0,
            connections_total: 0,
            messages_in: 0,
            bytes_in: 0,
            messages_out: 0,
            bytes_out: 0,
            written_by_hub: 0,
            written_by_writer: 0,
            dropped: BTreeMap::new(),
            rejected: BTreeMap::new(),
        }
    }

    /// Time since the hub started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Messages dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    pub(crate) fn drop(&mut self, reason: &'static str, n: u64) {
        *self.dropped.entry(reason).or_default() += n;
    }

    pub(crate) fn reject(&mut self, reason: &'static str) {
        *self.rejected.entry(reason).or_default() += 1;
    }
}

impl fmt::Display for Stats {
    /// Several `key: value` lines, as the console's `/stats` prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "uptime: {}s", self.uptime().as_secs())?;
        writeln!(
            f,
            "connections: {} now, {} total",
            self.connections_now, self.connections_total
        )?;
        writeln!(
            f,
            "in: {} messages, {} bytes",
            self.messages_in, self.bytes_in
        )?;
        writeln!(
            f,
            "out: {} messages, {} bytes ({} written by the hub, {} of them by its second writer)",
            self.messages_out, self.bytes_out, self.written_by_hub, self.written_by_writer
        )?;
        write!(f, "dropped: {}", self.dropped_total())?;
        for (reason, n) in &self.dropped {
            write!(f, ", {reason}: {n}")?;
        }
        writeln!(f)?;
        write!(f, "rejected: {}", self.rejected.values().sum::<u64>())?;
        for (reason, n) in &self.rejected {
            write!(f, ", {reason}: {n}")?;
        }
        Ok(())
    }
}
