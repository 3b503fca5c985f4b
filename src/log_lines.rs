//! Log output in whole lines, with the hub's lines written once per round.
//!
//! A logger such as simplelog's `WriteLogger` writes a line in several
//! pieces (time, level, message, newline). [`Lines`] gathers them and
//! writes each line with one `write()`, as a `LineWriter` would.
//!
//! The hub thread logs a line for every client that joins or leaves. Under
//! many short connections that was two `write()` calls per connection on
//! the thread every event passes through. So the hub marks itself with
//! [`hold_on_this_thread`], and its lines wait in the buffer until it ends
//! a round of events and is about to wait for more ([`end_round`], which
//! calls the logger's `flush`): a round that saw ten clients come and go
//! costs one `write()`.
//!
//! # Who owns what
//!
//! A [`Lines`] sits behind the logger's lock, so one thread at a time
//! writes through it. Lines from every other thread go out as soon as they
//! are complete, after any held ones, so the output keeps the order in
//! which lines were logged, and nothing another thread logs waits for the
//! hub. Held lines also go out once [`HOLD_MAX`] bytes are waiting. A line
//! is held at most until the hub's round ends (at most a few thousand
//! events), or until the hub thread ends or unwinds.

use std::cell::Cell;
use std::io::{self, Write};

/// Held bytes past which the hub's lines are written at once.
pub const HOLD_MAX: usize = 8 << 10;

thread_local! {
    // Whether this thread's lines wait for `end_round`.
    static HOLDS: Cell<bool> = const { Cell::new(false) };
    // Whether this thread left lines waiting since its last `end_round`.
    static WAITING: Cell<bool> = const { Cell::new(false) };
}

/// From now on, complete lines this thread logs through a [`Lines`] wait
/// until it calls [`end_round`]. For a thread that calls it before every
/// wait, as the hub does.
pub(crate) fn hold_on_this_thread() {
    HOLDS.with(|h| h.set(true));
}

/// Writes the lines this thread left waiting, if any (through the global
/// logger's `flush`). Cheap when there are none: one thread-local read.
pub(crate) fn end_round() {
    if WAITING.with(|w| w.replace(false)) {
        log::logger().flush();
    }
}

/// Calls [`end_round`] when dropped, so held lines are written when the
/// thread that holds them returns or unwinds.
#[derive(Debug)]
pub(crate) struct EndRoundOnDrop;

impl Drop for EndRoundOnDrop {
    fn drop(&mut self) {
        end_round();
    }
}

/// A `Write` for a logger: writes whole lines, and holds those of a thread
/// that called [`hold_on_this_thread`] until that thread's [`end_round`].
#[derive(Debug)]
pub struct Lines<W: Write> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> Lines<W> {
    /// Lines written to `out`.
    pub fn new(out: W) -> Lines<W> {
        Lines {
            out,
            buf: Vec::new(),
        }
    }

    /// Writes out what is buffered. On an error the lines are dropped (a
    /// log that cannot be written must not grow without bound).
    fn write_out(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let written = self.out.write_all(&self.buf);
        self.buf.clear();
        if self.buf.capacity() > 2 * HOLD_MAX {
            self.buf.shrink_to(HOLD_MAX);
        }
        written
    }
}

impl<W: Write> Write for Lines<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if data.ends_with(b"\n") {
            if HOLDS.with(Cell::get) && self.buf.len() < HOLD_MAX {
                WAITING.with(|w| w.set(true));
            } else {
                self.write_out()?;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer that records each `write()` call it gets.
    #[derive(Clone, Default)]
    struct Calls(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Calls {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(data.to_vec());
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Calls {
        fn taken(&self) -> Vec<String> {
            let calls = std::mem::take(&mut *self.0.lock().unwrap());
            calls
                .into_iter()
                .map(|c| String::from_utf8(c).unwrap())
                .collect()
        }
    }

    #[test]
    fn a_line_in_pieces_is_written_once() {
        let calls = Calls::default();
        let mut lines = Lines::new(calls.clone());
        write!(lines, "12:00 ").unwrap();
        write!(lines, "INFO ").unwrap();
        writeln!(lines, "join alice").unwrap();
        assert_eq!(calls.taken(), ["12:00 INFO join alice\n"]);
        write!(lines, "no newline yet").unwrap();
        assert!(calls.taken().is_empty());
    }

    #[test]
    fn held_lines_wait_for_the_round_end_and_keep_their_order() {
        let calls = Calls::default();
        let lines = Arc::new(Mutex::new(Lines::new(calls.clone())));
        let hub = {
            let lines = lines.clone();
            std::thread::spawn(move || {
                hold_on_this_thread();
                writeln!(lines.lock().unwrap(), "join a").unwrap();
                writeln!(lines.lock().unwrap(), "leave a").unwrap();
                assert!(WAITING.with(Cell::get));
            })
        };
        hub.join().unwrap();
        assert!(calls.taken().is_empty(), "held until the round ends");
        // Another thread's line takes the held ones with it, first.
        writeln!(lines.lock().unwrap(), "refused b").unwrap();
        assert_eq!(calls.taken(), ["join a\nleave a\nrefused b\n"]);
    }

    #[test]
    fn held_lines_go_out_past_the_bound() {
        let calls = Calls::default();
        let hub = std::thread::spawn(move || {
            let mut lines = Lines::new(calls.clone());
            hold_on_this_thread();
            let line = "x".repeat(99);
            // 100-byte lines: as many as stay under the bound wait...
            for _ in 0..HOLD_MAX / 100 {
                writeln!(lines, "{line}").unwrap();
            }
            assert!(calls.taken().is_empty());
            // ...and the one that reaches it takes them all out at once.
            writeln!(lines, "{line}").unwrap();
            let out = calls.taken();
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].len(), (HOLD_MAX / 100 + 1) * 100);
            lines.flush().unwrap();
            assert!(calls.taken().is_empty());
        });
        hub.join().unwrap();
    }
}
