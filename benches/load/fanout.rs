//! Fan-out scenarios: one sender, N receivers in one room.
//!
//! - `fanout` measures throughput: the sender stays at most `--window`
//!   messages ahead of the slowest receiver and sends as fast as that
//!   allows, many frames per `write()` as a busy client would.
//! - `latency` sends at a fixed rate and measures one-way latency: the
//!   stamp carries the send time on the generator's monotonic clock, which
//!   the receivers (same process) read again on arrival.
//!
//! Both first send warm-up messages until every receiver has seen one, so
//! the measured messages go only to receivers the server has joined.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::receivers::{Pool, Settings, Tally};
use crate::report::{quantile, Report};
use crate::target::{Snapshot, Spent, Target};
use crate::wire::{self, Template, WARMUP_SEQ};
use crate::Options;

/// Bytes the window may hold in flight: below wshub's default per-client
/// send queue bound (4 MiB), so large messages do not trip its
/// slow-consumer policy.
const WINDOW_BYTES: usize = 2 << 20;
/// Most bytes the sender puts in one `write()`.
const SEND_CHUNK: usize = 64 << 10;
/// No receiver progress for this long ends a run as stalled.
const STALL: Duration = Duration::from_secs(5);
/// Longest wait for the last messages after sending stops.
const DRAIN: Duration = Duration::from_secs(10);
/// Longest wait for every receiver to be joined.
const WARMUP: Duration = Duration::from_secs(10);

/// A connected room: receivers running, sender ready.
struct Room {
    target: Target,
    pool: Pool,
    sender: TcpStream,
    // Counts what comes back to the sender (a relay that echoes).
    echo: JoinHandle<u64>,
    template: Template,
    epoch: Instant,
}

/// Where the measured part of a run starts, after the warm-up.
struct Mark {
    at: Instant,
    cpu: Snapshot,
    // Messages sent and deliveries seen before it.
    sent: u64,
    received: u64,
}

/// What the send loop did.
struct Sent {
    // Messages sent in all, warm-up included.
    total: u64,
    mark: Mark,
    // From the mark to the last delivery seen.
    elapsed: Duration,
    // CPU from the mark to the end of the drain.
    spent: Spent,
    stalled: bool,
    // Latency mode: how far behind schedule the sender fell, at worst.
    worst_lag: Duration,
}

/// Throughput scenario.
pub fn fanout(opts: &Options) -> Result<(), String> {
    let window = effective_window(opts);
    let mut room = Room::open(opts, false)?;
    let sent = room.send_windowed(opts, window)?;
    let title = format!(
        "{} receivers, {}-byte messages, window {window}, {}",
        opts.receivers, opts.size, room.target.label
    );
    let mut report = Report::new("fanout", title);
    let (tally, target) = room.close();
    add_delivery_rows(&mut report, opts, &sent, &tally);
    add_cpu_rows(&mut report, &sent, &tally);
    add_server_rows(&mut report, target);
    report.int("window", "window (messages)", window as u64);
    report.print();
    Ok(())
}

/// Fixed-rate latency scenario.
pub fn latency(opts: &Options) -> Result<(), String> {
    let mut room = Room::open(opts, true)?;
    let sent = room.send_paced(opts)?;
    let per_s = opts.rate as f64 / opts.receivers as f64;
    let title = format!(
        "{} receivers, {}-byte messages, {} deliveries/s ({per_s:.0} messages/s), {}",
        opts.receivers, opts.size, opts.rate, room.target.label
    );
    let mut report = Report::new("latency", title);
    let (mut tally, target) = room.close();
    tally.latencies.sort_unstable();
    let us = |q: f64| quantile(&tally.latencies, q).map(|ns| ns as f64 / 1e3);
    report.int("rate", "target deliveries/s", opts.rate);
    add_delivery_rows(&mut report, opts, &sent, &tally);
    report.num("p50_us", "latency p50", us(0.50), 1, "µs");
    report.num("p99_us", "latency p99", us(0.99), 1, "µs");
    report.num("p999_us", "latency p99.9", us(0.999), 1, "µs");
    report.num("max_us", "latency max", us(1.0), 1, "µs");
    let lag = sent.worst_lag.as_secs_f64() * 1e6;
    report.num(
        "sender_lag_us",
        "sender behind schedule, worst",
        Some(lag),
        0,
        "µs",
    );
    add_cpu_rows(&mut report, &sent, &tally);
    add_server_rows(&mut report, target);
    report.print();
    Ok(())
}

/// `--window`, reduced so the bytes in flight stay under [`WINDOW_BYTES`].
fn effective_window(opts: &Options) -> usize {
    let by_bytes = (WINDOW_BYTES / opts.size.max(1)).max(1);
    if by_bytes < opts.window {
        eprintln!(
            "note: window {} × {} bytes is over {} KiB: using {by_bytes} messages",
            opts.window,
            opts.size,
            WINDOW_BYTES >> 10
        );
    }
    opts.window.min(by_bytes).max(1)
}

impl Room {
    /// Starts the server (unless external), connects everyone, warms up.
    fn open(opts: &Options, latency: bool) -> Result<Room, String> {
        let target = Target::start(opts, false)?;
        let paths: Vec<String> = (0..opts.receivers)
            .map(|i| format!("/{}/r{i}", opts.room))
            .collect();
        let conns = wire::connect_many(target.addr, &paths, opts.connectors)?;
        let epoch = Instant::now();
        let settings = Settings {
            kind: opts.client,
            threads: opts.client_threads,
            latency,
            epoch,
            pause: if latency {
                Duration::ZERO
            } else {
                opts.recv_pause
            },
        };
        let pool =
            Pool::start(conns, &settings).map_err(|e| format!("starting the receivers: {e}"))?;
        let sender_path = format!("/{}/sender", opts.room);
        let (sender, _) = wire::connect(target.addr, &sender_path, Duration::from_secs(10))
            .map_err(|e| format!("sender: {e}"))?;
        sender
            .set_write_timeout(Some(STALL))
            .map_err(|e| e.to_string())?;
        let echo = spawn_echo_counter(&sender)?;
        let mut room = Room {
            target,
            pool,
            sender,
            echo,
            template: Template::new(opts.size),
            epoch,
        };
        room.warm_up(opts.receivers)?;
        Ok(room)
    }

    /// Sends warm-up messages until every receiver has seen one.
    fn warm_up(&mut self, receivers: usize) -> Result<(), String> {
        let deadline = Instant::now() + WARMUP;
        let mut frame = Vec::new();
        // Small whatever --size says: they only prove the route.
        let mut warm = Template::new(wire::STAMP);
        while self.pool.shared.joined() < receivers {
            if Instant::now() > deadline || self.pool.shared.gone() > 0 {
                let joined = self.pool.shared.joined();
                return Err(format!(
                    "only {joined} of {receivers} receivers got a warm-up message \
                     ({} closed); is this a relay that sends to the others in the room?",
                    self.pool.shared.gone()
                ));
            }
            frame.clear();
            warm.push(&mut frame, WARMUP_SEQ, 0);
            self.sender
                .write_all(&frame)
                .map_err(|e| format!("sender: {e}"))?;
            thread::park_timeout(Duration::from_millis(10));
        }
        Ok(())
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Notes where measuring starts; from now on receivers keep
    /// latencies.
    fn mark(&self, sent: u64) -> Mark {
        self.pool.shared.record_from(self.now_ns());
        Mark {
            at: Instant::now(),
            cpu: self.target.snapshot(),
            sent,
            received: self.pool.shared.total_received(),
        }
    }

    /// Ends a run: waits for the last deliveries, then reads the CPU.
    fn finish(&self, total: u64, mark: Mark, stalled: bool, worst_lag: Duration) -> Sent {
        let elapsed = self.drain(total, mark.at);
        let spent = self.target.snapshot().since(&mark.cpu);
        Sent {
            total,
            mark,
            elapsed,
            spent,
            stalled,
            worst_lag,
        }
    }

    /// Throughput loop: as many frames per write as the window allows,
    /// `--warmup` seconds unmeasured, then `--seconds` (or `--messages`).
    fn send_windowed(&mut self, opts: &Options, window: usize) -> Result<Sent, String> {
        let measure_at = Instant::now() + Duration::from_secs_f64(opts.warmup);
        let (mut next, mut stalled, mut mark) = (0u64, false, None::<Mark>);
        let mut buf = Vec::with_capacity(SEND_CHUNK + self.template.frame_len());
        let (mut seen, mut progress_at) = (0u64, Instant::now());
        loop {
            let now = Instant::now();
            if mark.is_none() && now >= measure_at {
                mark = Some(self.mark(next));
            }
            let left = match &mark {
                Some(m) if now >= m.at + Duration::from_secs_f64(opts.seconds) => break,
                Some(m) => opts
                    .messages
                    .map_or(u64::MAX, |n| (m.sent + n).saturating_sub(next)),
                None => u64::MAX,
            };
            let Some(slowest) = self.pool.shared.min_received() else {
                break; // every receiver is gone
            };
            if left == 0 {
                break;
            }
            let room = (slowest + window as u64).saturating_sub(next).min(left);
            if room == 0 {
                if slowest != seen {
                    (seen, progress_at) = (slowest, now);
                } else if progress_at.elapsed() > STALL {
                    stalled = true;
                    break;
                }
                thread::park_timeout(Duration::from_millis(5));
                continue;
            }
            buf.clear();
            let t = self.now_ns();
            let mut n = 0;
            while n < room && buf.len() < SEND_CHUNK {
                self.template.push(&mut buf, next + n, t);
                n += 1;
            }
            if let Err(e) = self.sender.write_all(&buf) {
                eprintln!("sender: {e}");
                stalled = true;
                break;
            }
            next += n;
        }
        let mark = mark.unwrap_or_else(|| self.mark(next));
        Ok(self.finish(next, mark, stalled, Duration::ZERO))
    }

    /// Latency loop: one message every `receivers / rate` seconds,
    /// `--warmup` seconds unmeasured, then `--seconds` (or `--messages`).
    fn send_paced(&mut self, opts: &Options) -> Result<Sent, String> {
        let interval = Duration::from_secs_f64(opts.receivers as f64 / opts.rate.max(1) as f64);
        let start = Instant::now();
        let measure_at = start + Duration::from_secs_f64(opts.warmup);
        let deadline = measure_at + Duration::from_secs_f64(opts.seconds);
        let mut buf = Vec::with_capacity(self.template.frame_len());
        let (mut next, mut worst_lag, mut mark) = (0u64, Duration::ZERO, None::<Mark>);
        loop {
            let due = start + interval.mul_f64(next as f64);
            if due > deadline {
                break;
            }
            if mark.is_none() && due >= measure_at {
                mark = Some(self.mark(next));
            }
            if let (Some(m), Some(n)) = (&mark, opts.messages) {
                if next >= m.sent + n {
                    break;
                }
            }
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            } else if mark.is_some() {
                worst_lag = worst_lag.max(now - due);
            }
            buf.clear();
            let t = self.now_ns();
            self.template.push(&mut buf, next, t);
            self.sender
                .write_all(&buf)
                .map_err(|e| format!("sender: {e}"))?;
            next += 1;
        }
        let mark = mark.unwrap_or_else(|| self.mark(next));
        Ok(self.finish(next, mark, false, worst_lag))
    }

    /// Waits until every live receiver has seen `sent` messages (or
    /// [`DRAIN`] passes); returns the time from `start` to the last
    /// delivery seen.
    fn drain(&self, sent: u64, start: Instant) -> Duration {
        let deadline = Instant::now() + DRAIN;
        let (mut total, mut last_at) = (self.pool.shared.total_received(), Instant::now());
        while self.pool.shared.min_received().is_some_and(|m| m < sent) && Instant::now() < deadline
        {
            thread::park_timeout(Duration::from_millis(2));
            let now_total = self.pool.shared.total_received();
            if now_total != total {
                (total, last_at) = (now_total, Instant::now());
            }
        }
        if self.pool.shared.min_received().is_none_or(|m| m >= sent) {
            last_at = Instant::now();
        }
        last_at - start
    }

    /// Stops receivers and the sender; the server keeps running until the
    /// caller is done reading its stats.
    fn close(self) -> (Tally, Target) {
        let tally = self.pool.stop();
        let _ = self.sender.shutdown(std::net::Shutdown::Both);
        let echoed = self.echo.join().unwrap_or(0);
        if echoed > 0 {
            eprintln!("note: the relay sent {echoed} bytes back to the sender");
        }
        (tally, self.target)
    }
}

/// Reads (and discards) whatever the relay sends the sender.
fn spawn_echo_counter(sender: &TcpStream) -> Result<JoinHandle<u64>, String> {
    let mut reader = sender.try_clone().map_err(|e| e.to_string())?;
    thread::Builder::new()
        .name("load-echo".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            let mut total = 0u64;
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            total
        })
        .map_err(|e| e.to_string())
}

fn add_delivery_rows(report: &mut Report, opts: &Options, sent: &Sent, tally: &Tally) {
    let secs = sent.elapsed.as_secs_f64();
    let measured = tally.received.saturating_sub(sent.mark.received);
    let rate = measured as f64 / secs;
    report.num(
        "warmup_s",
        "warm-up (not measured)",
        Some(opts.warmup),
        1,
        "s",
    );
    report.int(
        "sent",
        "messages sent after it",
        sent.total - sent.mark.sent,
    );
    report.int("deliveries", "deliveries after it", measured);
    report.num("seconds", "elapsed", Some(secs), 3, "s");
    report.num("deliveries_per_s", "deliveries/s", Some(rate), 0, "");
    let mib = rate * opts.size as f64 / 1048576.0;
    report.num("mib_per_s", "payload delivered", Some(mib), 1, "MiB/s");
    // Loss and order cover the warm-up too.
    let expected = sent.total * opts.receivers as u64;
    report.int(
        "lost",
        "lost (whole run)",
        expected.saturating_sub(tally.received),
    );
    report.int(
        "out_of_order",
        "out of order (whole run)",
        tally.out_of_order,
    );
    report.int("garbled", "garbled", tally.garbled);
    report.int("closed", "receivers closed by the server", tally.closed);
    if let Some(why) = &tally.first_close {
        report.text("first_close", "first close", why.clone());
    }
    report.text(
        "stalled",
        "stalled",
        if sent.stalled { "yes" } else { "no" },
    );
}

fn add_cpu_rows(report: &mut Report, sent: &Sent, tally: &Tally) {
    let (spent, delta) = (&sent.spent, sent.spent.server.as_ref());
    let deliveries = tally.received.saturating_sub(sent.mark.received);
    let per = |v: f64| (deliveries > 0).then(|| v / deliveries as f64);
    report.num("server_cpu_s", "server CPU", delta.map(|d| d.cpu_s), 2, "s");
    // One thread near 100 % of the run is the server's bottleneck.
    if let Some((name, cpu_s)) = delta.and_then(|d| d.busiest.clone()) {
        let share = cpu_s / sent.elapsed.as_secs_f64() * 100.0;
        report.text("busiest_thread", "busiest server thread", name);
        report.num(
            "busiest_thread_pct",
            "  its CPU",
            Some(share),
            0,
            "% of one core",
        );
    }
    let us = delta.and_then(|d| per(d.cpu_s * 1e6));
    report.num(
        "server_cpu_us_per_delivery",
        "server CPU per delivery",
        us,
        3,
        "µs",
    );
    let switches = delta.and_then(|d| per(d.switches as f64));
    report.num(
        "server_switches_per_delivery",
        "server context switches per delivery",
        switches,
        4,
        "",
    );
    report.num(
        "client_cpu_s",
        "generator CPU (sender + receivers)",
        spent.generator_s,
        2,
        "s",
    );
    report.num(
        "others_cpu_s",
        "other processes' CPU (noise)",
        spent.others_s,
        2,
        "s",
    );
}

/// Counters an in-process wshub keeps about itself; stops the server.
fn add_server_rows(report: &mut Report, target: Target) {
    report.text("server", "server", target.label.clone());
    if let Some(server) = target.server() {
        let stats = server.stats();
        report.int(
            "server_dropped",
            "server: messages dropped",
            stats.dropped_total(),
        );
    }
    let log = target.stop();
    if log.warnings > 0 {
        report.int("server_warnings", "server: warnings logged", log.warnings);
        report.text(
            "server_first_warning",
            "server: first warning",
            log.first_warning.unwrap_or_default(),
        );
    }
}
