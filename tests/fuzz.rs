//! A seeded random test of the server's input handling. For about five
//! seconds in all (fixed seeds, then one from the clock, each printed so a
//! failure can be replayed with `WSHUB_FUZZ_SEED=SEED cargo test --test
//! fuzz`), worker threads open raw connections and feed them random bytes,
//! mutated valid handshakes, and valid handshakes followed by random or
//! mutated frames: flipped bits in real frames, random lengths up to 2^64-1,
//! random opcodes and flags, unmasked frames, bad close frames, and frames
//! cut short followed by a disconnect. Throughout, two well-behaved clients
//! keep exchanging messages; at the end no thread anywhere has panicked
//! (a panic hook records every panic), every raw connection is gone from
//! the hub, and the server still accepts new clients.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, Once};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{frame, join, read_http_head, recv_text, server, upgrade_request, wait_for};
use crossbeam_channel::RecvTimeoutError;
use wshub::{Client, Server, ServerConfig};

/// Seeds that run every time; one from the clock follows.
const FIXED_SEEDS: [u64; 3] = [1, 0x5eed_cafe, 0xdead_beef_f00d];
/// Time each seed runs for.
const PER_SEED: Duration = Duration::from_millis(1200);
/// Connections fed in parallel per seed.
const WORKERS: u64 = 4;
/// How long a fuzz connection waits for the server's answer.
const ANSWER_WAIT: Duration = Duration::from_millis(60);

/// Every panic in any thread of this process, with the thread's name.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Installs (once) a panic hook that records every panic, then prints it
/// as usual.
fn record_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = thread::current();
            let entry = format!("thread {:?}: {info}", thread.name().unwrap_or("unnamed"));
            PANICS.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
            default(info);
        }));
    });
}

fn panics() -> Vec<String> {
    PANICS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// xorshift64: tiny, fast, and the same sequence for the same seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }

    /// Fewer than `max` random bytes.
    fn some_bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max);
        self.bytes(len)
    }

    /// Mostly short lengths, sometimes around and over the 64 KiB limit.
    fn length(&mut self) -> usize {
        match self.below(10) {
            0 => 60_000 + self.below(10_000),
            1 => self.below(4096),
            _ => self.below(200),
        }
    }

    /// Valid UTF-8 from all planes, usually; sometimes a bad byte in it.
    fn text(&mut self, len: usize) -> Vec<u8> {
        let mut s = String::new();
        while s.len() < len {
            let c = match self.below(4) {
                0 => char::from_u32(self.below(0x11_0000) as u32).unwrap_or('?'),
                _ => char::from(b' ' + self.below(95) as u8),
            };
            s.push(c);
        }
        let mut out = s.into_bytes();
        if self.one_in(8) && !out.is_empty() {
            let i = self.below(out.len());
            out[i] = 0x80 | self.byte();
        }
        out
    }
}

/// Changes `data` in one to four random ways.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        if data.is_empty() {
            data.push(rng.byte());
            continue;
        }
        let i = rng.below(data.len());
        match rng.below(6) {
            0 => data[i] ^= 1 << rng.below(8),
            1 => data[i] = rng.byte(),
            2 => data.insert(i, rng.byte()),
            3 => {
                data.remove(i);
            }
            4 => data.truncate(i),
            _ => {
                let end = (i + 1 + rng.below(16)).min(data.len());
                let chunk = data[i..end].to_vec();
                data.splice(i..i, chunk);
            }
        }
    }
}

/// A close frame with a code and reason that may or may not be valid.
fn close_frame(rng: &mut Rng) -> Vec<u8> {
    let codes = [
        1000u16, 1001, 1002, 1003, 1005, 1006, 1015, 999, 0, 3000, 4999, 5000,
    ];
    let code = if rng.one_in(4) {
        rng.next() as u16
    } else {
        codes[rng.below(codes.len())]
    };
    let mut payload = code.to_be_bytes().to_vec();
    match rng.below(4) {
        0 => payload.truncate(rng.below(2)),
        1 => payload.extend(rng.some_bytes(200)),
        _ => {
            let len = rng.below(40);
            payload.extend(rng.text(len));
        }
    }
    frame(true, 8, &payload)
}

/// A hand-made frame header with random flags, opcode, length encoding
/// and mask bit, followed by up to a few hundred payload bytes.
fn raw_frame(rng: &mut Rng) -> Vec<u8> {
    let mut out = vec![rng.byte()];
    let mask_bit = if rng.one_in(4) { 0 } else { 0x80 };
    let announced: u64 = match rng.below(3) {
        0 => {
            let n = rng.below(126) as u8;
            out.push(mask_bit | n);
            u64::from(n)
        }
        1 => {
            let n = rng.next() as u16;
            out.push(mask_bit | 126);
            out.extend_from_slice(&n.to_be_bytes());
            u64::from(n)
        }
        _ => {
            let n = match rng.below(3) {
                0 => u64::MAX,
                1 => i64::MAX as u64,
                _ => rng.next() >> rng.below(64),
            };
            out.push(mask_bit | 127);
            out.extend_from_slice(&n.to_be_bytes());
            n
        }
    };
    if mask_bit != 0 {
        out.extend(rng.bytes(4));
    }
    let sent = announced.min(rng.below(300) as u64) as usize;
    out.extend(rng.bytes(sent));
    out
}

/// A stream of one to six frames, valid or not, maybe mutated.
fn frames(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..1 + rng.below(6) {
        let len = rng.length();
        match rng.below(9) {
            0 => out.extend(frame(true, 1, &rng.text(len))),
            1 => out.extend(frame(true, 2, &rng.bytes(len))),
            2 => {
                // A fragmented message, possibly with a ping in between.
                let opcode = 1 + rng.below(2) as u8;
                let parts = 2 + rng.below(4);
                for p in 0..parts {
                    let op = if p == 0 { opcode } else { 0 };
                    let n = rng.below(100);
                    out.extend(frame(p + 1 == parts, op, &rng.text(n)));
                    if rng.one_in(3) {
                        out.extend(frame(true, 9, b"in between"));
                    }
                }
            }
            3 => {
                let n = if rng.one_in(4) {
                    126 + rng.below(10)
                } else {
                    rng.below(126)
                };
                out.extend(frame(true, 9, &rng.bytes(n)));
            }
            4 => out.extend(frame(true, 10, &rng.some_bytes(126))),
            5 => out.extend(close_frame(rng)),
            6 => {
                let opcode = rng.below(16) as u8;
                out.extend(frame(rng.one_in(2), opcode, &rng.bytes(len)));
            }
            7 => out.extend(raw_frame(rng)),
            _ => out.extend(rng.some_bytes(64)),
        }
    }
    if rng.one_in(2) {
        mutate(rng, &mut out);
    }
    out
}

/// Reads what the server answers for a moment, then lets go.
fn drain(tcp: &mut TcpStream) {
    let deadline = Instant::now() + 2 * ANSWER_WAIT;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Sends `bytes`, then either drops the connection at once (a cut-off
/// peer), half-closes, or waits for the server's answer.
fn send_and_finish(rng: &mut Rng, tcp: &mut TcpStream, bytes: &[u8]) {
    if tcp.write_all(bytes).is_err() {
        return;
    }
    match rng.below(4) {
        0 => {}
        1 => {
            let _ = tcp.shutdown(std::net::Shutdown::Write);
            drain(tcp);
        }
        _ => drain(tcp),
    }
}

/// One raw connection fed with one kind of bad input. Never panics.
fn fuzz_connection(rng: &mut Rng, addr: SocketAddr, n: u64) {
    let Ok(mut tcp) = TcpStream::connect(addr) else {
        return;
    };
    let _ = tcp.set_read_timeout(Some(ANSWER_WAIT));
    let _ = tcp.set_write_timeout(Some(Duration::from_secs(1)));
    let path = format!("fuzz{n}/c{n}");
    match rng.below(4) {
        0 => {
            let mut bytes = if rng.one_in(2) {
                b"GET / HTTP/1.1\r\n".to_vec()
            } else {
                Vec::new()
            };
            let max = if rng.one_in(8) { 8000 } else { 3000 };
            let len = rng.below(max);
            bytes.extend(rng.bytes(len));
            if rng.one_in(2) {
                bytes.extend_from_slice(b"\r\n\r\n");
            }
            send_and_finish(rng, &mut tcp, &bytes);
        }
        1 => {
            let mut request = upgrade_request(addr, &path, &[]).into_bytes();
            mutate(rng, &mut request);
            if tcp.write_all(&request).is_err() {
                return;
            }
            if read_http_head(&mut tcp).starts_with("HTTP/1.1 101") {
                let bytes = frames(rng);
                send_and_finish(rng, &mut tcp, &bytes);
            } else {
                drain(&mut tcp);
            }
        }
        _ => {
            let request = upgrade_request(addr, &path, &[]);
            if tcp.write_all(request.as_bytes()).is_err() {
                return;
            }
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
            let upgraded = read_http_head(&mut tcp).starts_with("HTTP/1.1 101");
            let _ = tcp.set_read_timeout(Some(ANSWER_WAIT));
            if upgraded {
                let bytes = frames(rng);
                send_and_finish(rng, &mut tcp, &bytes);
            }
        }
    }
}

/// Feeds raw connections until `deadline`.
fn worker(seed: u64, addr: SocketAddr, deadline: Instant) -> u64 {
    let mut rng = Rng::new(seed);
    let mut n = 0;
    while Instant::now() < deadline {
        fuzz_connection(&mut rng, addr, seed.wrapping_add(n) % 1000);
        n += 1;
    }
    n
}

/// One message each way between the well-behaved pair.
fn exchange(a: &Client, b: &Client, tag: &str) {
    a.send_text(format!("{tag} from a")).unwrap();
    assert_eq!(recv_text(b), format!("{tag} from a"), "{tag}");
    b.send_text(format!("{tag} from b")).unwrap();
    assert_eq!(recv_text(a), format!("{tag} from b"), "{tag}");
}

/// Fuzzes a fresh server with `seed` for [`PER_SEED`], checking the pair
/// as it goes; returns the server for the final checks.
fn run_seed(seed: u64) -> Server {
    let cfg = ServerConfig::default()
        .max_message_size(64 << 10)
        .handshake_timeout(Duration::from_millis(500))
        .max_header_bytes(4096)
        .close_timeout(Duration::from_millis(200));
    let server = server(cfg);
    let addr = server.local_addr();
    let a = join(&server, "good/a");
    let b = join(&server, "good/b");

    let deadline = Instant::now() + PER_SEED;
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
    let connections: u64 = thread::scope(|s| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let done = done_tx.clone();
                let seed = seed ^ (w + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
                s.spawn(move || {
                    let n = worker(seed, addr, deadline);
                    drop(done);
                    n
                })
            })
            .collect();
        drop(done_tx);
        // The pair keeps talking while the workers run.
        let mut round = 0;
        loop {
            exchange(&a, &b, &format!("seed {seed:#x} round {round}"));
            round += 1;
            match done_rx.recv_timeout(Duration::from_millis(20)) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => break,
            }
        }
        assert!(round > 5, "seed {seed:#x}: only {round} rounds");
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    eprintln!("fuzz: seed {seed:#x}: {connections} connections");
    assert!(
        connections >= 10,
        "seed {seed:#x}: only {connections} connections"
    );

    // Every raw connection has gone; the pair still talks; a newcomer gets
    // in and hears the room.
    wait_for(
        || server.clients().len() == 2,
        &format!("seed {seed:#x}: the raw connections to leave"),
    );
    exchange(&a, &b, &format!("seed {seed:#x} after"));
    let c = join(&server, "good/c");
    a.send_text("welcome c").unwrap();
    assert_eq!(recv_text(&b), "welcome c");
    assert_eq!(recv_text(&c), "welcome c");
    server
}

/// The seeds to run: `WSHUB_FUZZ_SEED` alone to replay one, otherwise the
/// fixed ones and one from the clock.
fn seeds() -> Vec<u64> {
    if let Ok(text) = std::env::var("WSHUB_FUZZ_SEED") {
        let t = text.trim();
        let seed = match t.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => t.parse(),
        };
        return vec![seed.unwrap_or_else(|_| panic!("bad WSHUB_FUZZ_SEED {text:?}"))];
    }
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64);
    let mut seeds = FIXED_SEEDS.to_vec();
    seeds.push(clock);
    seeds
}

#[test]
fn random_input_never_panics_and_never_stops_the_service() {
    record_panics();
    let mut rejected = 0;
    let mut joined = 0;
    for seed in seeds() {
        eprintln!(
            "fuzz: seed {seed:#x} (replay: WSHUB_FUZZ_SEED={seed:#x} cargo test --test fuzz)"
        );
        let server = run_seed(seed);
        let stats = server.stats();
        eprintln!(
            "fuzz: seed {seed:#x}: {} handshakes, refused {:?}, dropped {:?}",
            stats.connections_total, stats.rejected, stats.dropped
        );
        rejected += stats.rejected.values().sum::<u64>();
        joined += stats.connections_total;
        let seen = panics();
        assert!(seen.is_empty(), "seed {seed:#x}: panics: {seen:#?}");
        server.shutdown();
    }
    // The input reached both the HTTP and the WebSocket layer.
    assert!(
        rejected > 0,
        "no handshake was refused: the fuzzer missed HTTP"
    );
    assert!(
        joined > 20,
        "only {joined} handshakes: the fuzzer missed frames"
    );
    let seen = panics();
    assert!(seen.is_empty(), "panics: {seen:#?}");
}

#[test]
fn the_generator_is_deterministic() {
    let run = |seed| {
        let mut rng = Rng::new(seed);
        (0..20).flat_map(|_| frames(&mut rng)).collect::<Vec<u8>>()
    };
    assert_eq!(run(42), run(42), "the same seed must replay the same bytes");
    assert_ne!(run(42), run(43));
}
