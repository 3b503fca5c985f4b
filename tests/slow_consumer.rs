//! A client that completes the handshake and then never reads cannot
//! stall the hub: with a small send queue it is closed as a slow consumer
//! (logged and counted in the stats), while 50 well-behaved clients in the
//! same room receive every one of 2000 1 KiB messages, in order, and
//! clients elsewhere keep talking.

mod common;

use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_pair_works, join, raw_ws, read_frame, server, wait_for, WAIT};
use wshub::{Client, Message, ServerConfig};

const RECEIVERS: usize = 50;
const MESSAGES: usize = 2000;
const SIZE: usize = 1024;
const SEND_QUEUE: usize = 64;
/// Most messages the sender runs ahead of the slowest well-behaved
/// receiver. Well under `SEND_QUEUE`, so a receiver that reads all the time
/// can never be mistaken for a slow one, however the threads of this
/// 2-core machine get scheduled; the stuck client still falls behind
/// without limit.
const WINDOW: usize = 16;
/// Loopback TCP buffers take about 4 MiB for a peer that never reads
/// (the send buffer grows to `tcp_wmem`'s maximum), more than the 2000
/// messages carry. So the stuck client is first sent this many bytes of
/// its own, in 1 MiB messages: it has already fallen behind when the
/// broadcast starts, as a client that stopped reading a while ago would.
const BACKLOG: usize = 4 << 20;
const BIG: usize = 1 << 20;

/// Message `i`: its number in the first 4 bytes, then a pattern.
fn payload(i: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..SIZE).map(|j| (i + j) as u8).collect();
    p[..4].copy_from_slice(&(i as u32).to_be_bytes());
    p
}

/// How many messages each receiver has read, for pacing the sender.
struct Progress {
    counts: Mutex<Vec<usize>>,
    moved: Condvar,
}

impl Progress {
    fn new(n: usize) -> Progress {
        Progress {
            counts: Mutex::new(vec![0; n]),
            moved: Condvar::new(),
        }
    }

    fn set(&self, who: usize, count: usize) {
        self.counts.lock().unwrap()[who] = count;
        self.moved.notify_all();
    }

    /// Waits until every receiver has read at least `n` messages.
    fn wait_all(&self, n: usize) {
        let deadline = Instant::now() + WAIT;
        let mut counts = self.counts.lock().unwrap();
        while counts.iter().any(|c| *c < n) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "receivers stalled below {n}: {counts:?}");
            counts = self.moved.wait_timeout(counts, left).unwrap().0;
        }
    }
}

/// Reads every message in order, reporting progress; panics on a gap or
/// an early end.
fn receive_all(client: &Client, who: usize, progress: &Progress) {
    for i in 0..MESSAGES {
        match client.recv_timeout(WAIT) {
            Ok(Message::Binary(got)) => {
                assert_eq!(got.as_ref(), payload(i).as_slice(), "receiver {who}, #{i}");
            }
            other => panic!(
                "receiver {who} got {other:?} as #{i}, closed: {:?}",
                client.close_info()
            ),
        }
        progress.set(who, i + 1);
    }
}

#[test]
fn a_stuck_reader_is_closed_and_nobody_else_notices() {
    let server = server(ServerConfig::default().send_queue(SEND_QUEUE));
    let sender = join(&server, "room/sender");
    let receivers: Vec<Client> = (0..RECEIVERS)
        .map(|i| join(&server, &format!("room/r{i}")))
        .collect();
    let (x, y) = (join(&server, "elsewhere/x"), join(&server, "elsewhere/y"));
    let mut stuck = raw_ws(server.local_addr(), "room/stuck");
    wait_for(
        || server.clients().iter().any(|c| c.name == "stuck"),
        "the stuck client to join",
    );

    for _ in 0..BACKLOG / BIG {
        assert_eq!(server.send_to("stuck", Message::binary(vec![0xab; BIG])), 1);
    }

    let progress = Progress::new(RECEIVERS);
    thread::scope(|s| {
        for (who, client) in receivers.iter().enumerate() {
            let progress = &progress;
            s.spawn(move || receive_all(client, who, progress));
        }
        for i in 0..MESSAGES {
            if i % WINDOW == 0 && i >= WINDOW {
                progress.wait_all(i - WINDOW);
            }
            sender.send_binary(payload(i)).unwrap();
            if i == MESSAGES / 2 {
                // Mid-broadcast, another room is served at once.
                assert_pair_works(&x, &y);
            }
        }
        progress.wait_all(MESSAGES);
    });

    // The stuck client was closed as a slow consumer, and only it. It
    // cannot answer our close frame, so its session must give up after
    // the close timeout (1 s), long before any heartbeat would notice.
    let closing = Instant::now();
    wait_for(
        || server.clients().iter().all(|c| c.name != "stuck"),
        "the stuck client to be dropped",
    );
    assert!(
        closing.elapsed() < Duration::from_secs(5),
        "the stuck client lingered {:?}",
        closing.elapsed()
    );
    let stats = server.stats();
    assert_eq!(
        stats.dropped.get("slow consumer"),
        Some(&1),
        "{:?}",
        stats.dropped
    );
    // What was meant for it after that is not lost silently: refused
    // while it closed, or queued and never taken, each counted.
    let after = stats.dropped.get("receiver closing").copied().unwrap_or(0)
        + stats.dropped.get("receiver left").copied().unwrap_or(0);
    assert!(after > 0, "{:?}", stats.dropped);
    assert_eq!(stats.connections_now, RECEIVERS + 3);
    assert_pair_works(&x, &y);

    // What reached the stuck socket is a gap-free prefix, and then the
    // connection ends.
    let (mut backlog, mut delivered) = (0, 0);
    while let Some((op, data)) = read_frame(&mut stuck) {
        match op {
            2 if data.len() == BIG => {
                assert_eq!(delivered, 0, "the backlog comes first");
                backlog += 1;
            }
            2 => {
                assert_eq!(data, payload(delivered), "stuck client, #{delivered}");
                delivered += 1;
            }
            8 => {
                let code = u16::from_be_bytes([data[0], data[1]]);
                assert_eq!(code, 1008, "a slow consumer is closed with 1008");
                break;
            }
            9 => {} // a heartbeat ping
            other => panic!("unexpected opcode {other} for the stuck client"),
        }
    }
    assert!(backlog <= BACKLOG / BIG);
    assert!(
        delivered < MESSAGES,
        "the stuck client got everything ({delivered}): the test proves nothing"
    );
}

/// A receiver that reads all the time is not taken for a slow one when a
/// sender runs further ahead of it than `send_queue`: its socket still
/// takes bytes, so it is only waiting for a CPU, and the hub wakes it
/// early instead of closing it.
#[test]
fn a_reader_behind_by_more_than_the_send_queue_is_not_a_slow_consumer() {
    const FLOOD: usize = 20_000;
    const AHEAD: usize = 2 * SEND_QUEUE;
    let server = server(ServerConfig::default().send_queue(SEND_QUEUE));
    let sender = join(&server, "flood/sender");
    let receiver = join(&server, "flood/receiver");
    let read = std::sync::atomic::AtomicUsize::new(0);
    thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..FLOOD {
                let got = receiver.recv_timeout(WAIT).expect("every message arrives");
                assert_eq!(
                    got.to_text().unwrap(),
                    format!(r#"{{"receiver":"receiver","n":{i}}}"#)
                );
                read.store(i + 1, std::sync::atomic::Ordering::Release);
            }
        });
        for i in 0..FLOOD {
            // Stay at most AHEAD messages in front of the reader.
            wait_for(
                || i < read.load(std::sync::atomic::Ordering::Acquire) + AHEAD,
                "the reader to catch up",
            );
            let msg = format!(r#"{{"receiver":"receiver","n":{i}}}"#);
            sender.send(Message::text(msg)).unwrap();
        }
    });
    assert_eq!(server.stats().dropped.get("slow consumer"), None);
}
