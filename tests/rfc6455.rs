//! An RFC 6455 edge-case suite of our own, modelled on the Autobahn test
//! suite's categories (framing, ping/pong, reserved bits, opcodes,
//! fragmentation, UTF-8 handling, close handling, limits), run against a
//! hub in echo mode on raw sockets. Each case sends hand-made client frames
//! and compares every frame the server sends back with what the RFC asks
//! for. The suite counts its own results: it prints one table row per case
//! (category, case, expected, got, result) and `N of M cases pass`, and
//! fails if any case fails that is not listed in [`KNOWN_DEVIATIONS`].
//!
//! Pongs may come before or after data messages (the RFC does not order
//! them). As in Autobahn, a case may pass "non-strict": the RFC lets a
//! server that fails or closes the connection drop the echo of a message
//! sent just before; such echoes are shown in `[brackets]`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use common::{frame, raw_ws, server};
use wshub::{Mode, ServerConfig};

/// Cases where wshub knowingly departs from the RFC, as (case name,
/// reason). Kept empty: a deviation is a bug to fix, not a row to hide.
const KNOWN_DEVIATIONS: &[(&str, &str)] = &[];

/// `--max-message-size` of the server under test.
const LIMIT: usize = 128 << 10;

/// How long one read may wait before a case counts as "no answer".
const READ_WAIT: Duration = Duration::from_secs(5);

const CONT: u8 = 0;
const TEXT: u8 = 1;
const BINARY: u8 = 2;
const CLOSE: u8 = 8;
const PING: u8 = 9;
const PONG: u8 = 10;

/// The close "code" of a close frame without a payload (RFC 6455 §7.1.5
/// reports it as 1005, which is never sent on the wire).
const NO_CODE: u16 = 1005;

#[test]
fn rfc6455_edge_cases() {
    let cfg = ServerConfig::default()
        .mode(Mode::Echo)
        .max_message_size(LIMIT)
        .ping_interval(None);
    let server = server(cfg);
    let rows: Vec<Row> = cases()
        .iter()
        .map(|case| run(server.local_addr(), case))
        .collect();
    // Written straight to stderr, past the test harness's capture, so the
    // table shows in every `cargo test` run, passing or not.
    let _ = std::io::stderr().lock().write_all(table(&rows).as_bytes());

    let failed: Vec<String> = rows
        .iter()
        .filter(|r| r.outcome == Outcome::Fail && !known(r))
        .map(|r| {
            format!(
                "[{}] {}: expected {}, got {}",
                r.category, r.name, r.expected, r.got
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "RFC 6455 cases failed:\n{}",
        failed.join("\n")
    );
    let fixed: Vec<&str> = rows
        .iter()
        .filter(|r| r.outcome != Outcome::Fail && known(r))
        .map(|r| r.name.as_str())
        .collect();
    assert!(
        fixed.is_empty(),
        "known deviations that now pass: {fixed:?}"
    );
    let stray: Vec<&str> = KNOWN_DEVIATIONS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !rows.iter().any(|r| r.name == *name))
        .collect();
    assert!(
        stray.is_empty(),
        "known deviations naming no case: {stray:?}"
    );
}

/// The judge itself: answers that differ from the expectation in code,
/// payload, order, length encoding or the end of the connection fail.
#[test]
fn the_judge_rejects_what_the_rfc_does_not_allow() {
    let msg = |op, p: &[u8]| Seen::Msg(op, p.to_vec(), LenForm::Seven, 1);
    let close = |c| Seen::Close(c);
    let fail = [close(1002), Seen::End];
    assert_eq!(verdict(&[closed(&[1002])], &fail), Outcome::Pass);
    assert_eq!(verdict(&[closed(&[1007])], &fail), Outcome::Fail);
    let open = [close(1002), Seen::Timeout];
    assert_eq!(verdict(&[closed(&[1002])], &open), Outcome::Fail);
    assert_eq!(verdict(&[closed(&[1002])], &[Seen::End]), Outcome::Fail);
    let echoed_bad = [msg(TEXT, b"x"), close(1007), Seen::End];
    assert_eq!(verdict(&[closed(&[1007])], &echoed_bad), Outcome::Fail);
    let optional = [maybe(TEXT, b"x"), closed(&[1007])];
    assert_eq!(verdict(&optional, &echoed_bad), Outcome::Pass);
    assert_eq!(
        verdict(&optional, &[close(1007), Seen::End]),
        Outcome::NonStrict
    );

    let two = [echo(TEXT, b"a"), echo(TEXT, b"b"), echo(PONG, b"p")];
    let seen = [msg(PONG, b"p"), msg(TEXT, b"a"), msg(TEXT, b"b")];
    assert_eq!(verdict(&two, &seen), Outcome::Pass, "pongs may come first");
    let swapped = [msg(TEXT, b"b"), msg(TEXT, b"a"), msg(PONG, b"p")];
    assert_eq!(
        verdict(&two, &swapped),
        Outcome::Fail,
        "data keeps its order"
    );
    assert_eq!(
        verdict(&[echo(TEXT, b"a")], &[Seen::Timeout]),
        Outcome::Fail
    );

    let long = vec![b'a'; 200];
    let wide = [Seen::Msg(TEXT, long.clone(), LenForm::Sixteen, 1)];
    assert_eq!(verdict(&[framed(TEXT, &long)], &wide), Outcome::Pass);
    let split = [Seen::Msg(TEXT, long.clone(), LenForm::Sixteen, 2)];
    assert_eq!(verdict(&[framed(TEXT, &long)], &split), Outcome::Fail);
    assert_eq!(verdict(&[echo(TEXT, &long)], &split), Outcome::Pass);
}

// ------------------------------------------------------------------ cases

/// One case: what the client sends, and what the server must send back.
struct Case {
    category: &'static str,
    name: String,
    /// Each element is one `write()`.
    writes: Vec<Vec<u8>>,
    /// Pause 1 ms between writes, so the server really sees the pieces
    /// apart (this paces the traffic; nothing waits on it).
    paced: bool,
    expect: Vec<Want>,
}

/// One thing the server must send, in order.
#[derive(Clone)]
enum Want {
    /// A data message (fragments reassembled) or a pong. With `form`, it
    /// must come as one frame with that length encoding; when `optional`,
    /// it may be missing (non-strict).
    Msg {
        op: u8,
        payload: Vec<u8>,
        form: Option<LenForm>,
        optional: bool,
    },
    /// A close frame with one of these codes, then the end of the TCP
    /// connection and nothing else.
    Close(Vec<u16>),
}

fn want_msg(op: u8, payload: &[u8], form: Option<LenForm>, optional: bool) -> Want {
    let payload = payload.to_vec();
    Want::Msg {
        op,
        payload,
        form,
        optional,
    }
}

fn echo(op: u8, payload: &[u8]) -> Want {
    want_msg(op, payload, None, false)
}

/// A single frame with the minimal length encoding.
fn framed(op: u8, payload: &[u8]) -> Want {
    want_msg(op, payload, Some(LenForm::minimal(payload.len())), false)
}

/// An echo the server may drop because the connection ends right after.
fn maybe(op: u8, payload: &[u8]) -> Want {
    want_msg(op, payload, None, true)
}

fn closed(codes: &[u16]) -> Want {
    Want::Close(codes.to_vec())
}

/// How a frame header encodes its payload length (RFC 6455 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LenForm {
    Seven,
    Sixteen,
    SixtyFour,
}

impl LenForm {
    /// The minimal encoding, which a sender must use.
    fn minimal(len: usize) -> LenForm {
        match len {
            0..=125 => LenForm::Seven,
            126..=65535 => LenForm::Sixteen,
            _ => LenForm::SixtyFour,
        }
    }

    fn label(self) -> &'static str {
        match self {
            LenForm::Seven => "7-bit length",
            LenForm::Sixteen => "16-bit length",
            LenForm::SixtyFour => "64-bit length",
        }
    }
}

/// Collects the cases of one category.
struct Cases {
    category: &'static str,
    all: Vec<Case>,
}

impl Cases {
    /// A case sent in one write.
    fn add(&mut self, name: impl Into<String>, send: Vec<u8>, expect: Vec<Want>) {
        self.add_writes(name, vec![send], false, expect);
    }

    /// A case sent in one write that must fail with one of `codes`.
    fn fails(&mut self, name: impl Into<String>, send: Vec<u8>, codes: &[u16]) {
        self.add(name, send, vec![closed(codes)]);
    }

    /// A case sent in several paced writes.
    fn add_writes(
        &mut self,
        name: impl Into<String>,
        writes: Vec<Vec<u8>>,
        paced: bool,
        expect: Vec<Want>,
    ) {
        self.all.push(Case {
            category: self.category,
            name: name.into(),
            writes,
            paced,
            expect,
        });
    }
}

// Masked client frames, FIN set unless the name says otherwise.
fn text(p: &[u8]) -> Vec<u8> {
    frame(true, TEXT, p)
}
fn binary(p: &[u8]) -> Vec<u8> {
    frame(true, BINARY, p)
}
fn ping(p: &[u8]) -> Vec<u8> {
    frame(true, PING, p)
}
fn pong(p: &[u8]) -> Vec<u8> {
    frame(true, PONG, p)
}
/// The first frame of a fragmented message (FIN clear).
fn start(op: u8, p: &[u8]) -> Vec<u8> {
    frame(false, op, p)
}
/// A continuation frame.
fn cont(fin: bool, p: &[u8]) -> Vec<u8> {
    frame(fin, CONT, p)
}
fn close(code: u16, reason: &[u8]) -> Vec<u8> {
    frame(true, CLOSE, &[&code.to_be_bytes()[..], reason].concat())
}
/// A frame whose first byte (FIN, RSV bits, opcode) is `b0` as given.
fn raw_b0(b0: u8, p: &[u8]) -> Vec<u8> {
    let mut bytes = frame(true, 0, p);
    bytes[0] = b0;
    bytes
}
/// `payload` as `n` (at least 2) fragments of `op`, with empty ones at
/// the end if needed.
fn fragments(op: u8, payload: &[u8], n: usize) -> Vec<u8> {
    assert!(n >= 2, "a fragmented message has at least 2 frames");
    let size = payload.len().div_ceil(n).max(1);
    let mut parts: Vec<&[u8]> = payload.chunks(size).collect();
    parts.resize(n.max(parts.len()), b"");
    let last = parts.len() - 1;
    let mut out = start(op, parts[0]);
    for (i, part) in parts.iter().enumerate().skip(1) {
        out.extend(cont(i == last, part));
    }
    out
}
fn letters(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}
/// One byte per write.
fn bytewise(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes.iter().map(|b| vec![*b]).collect()
}

/// A category and the function that adds its cases.
type Group = (&'static str, fn(&mut Cases));

fn cases() -> Vec<Case> {
    let groups: [Group; 8] = [
        ("framing", framing),
        ("ping/pong", pings),
        ("reserved bits", reserved_bits),
        ("opcodes", opcodes),
        ("fragmentation", fragmentation),
        ("utf-8", utf8),
        ("close", closing),
        ("limits", limits),
    ];
    let mut cases = Cases {
        category: "",
        all: Vec::new(),
    };
    for (category, add) in groups {
        cases.category = category;
        add(&mut cases);
    }
    cases.all
}

/// Autobahn 1.x: payload lengths at every encoding boundary, several
/// frames per write, frames dribbled in pieces, masking.
#[rustfmt::skip] // a table of cases, one per line
fn framing(c: &mut Cases) {
    for len in [0, 125, 126, 127, 65535, 65536] {
        c.add(format!("text of {len} bytes"), text(&letters(len)), vec![framed(TEXT, &letters(len))]);
        c.add(format!("binary of {len} bytes"), binary(&pattern(len)), vec![framed(BINARY, &pattern(len))]);
    }
    c.add("text, binary and ping in one write", [text(b"one"), binary(b"\x00\x01"), ping(b"p")].concat(),
        vec![echo(TEXT, b"one"), echo(BINARY, b"\x00\x01"), echo(PONG, b"p")]);
    let twenty: Vec<Vec<u8>> = (0..20).map(|i| format!("m{i}").into_bytes()).collect();
    c.add("20 text frames in one write, in order", twenty.iter().flat_map(|m| text(m)).collect(),
        twenty.iter().map(|m| echo(TEXT, m)).collect());
    c.add_writes("a 300-byte text frame dribbled byte by byte", bytewise(&text(&letters(300))), true,
        vec![echo(TEXT, &letters(300))]);
    let two = [text(b"first"), binary(&pattern(200))].concat();
    c.add_writes("two frames in chunks of 3 bytes", two.chunks(3).map(<[u8]>::to_vec).collect(), true,
        vec![echo(TEXT, b"first"), echo(BINARY, &pattern(200))]);
    c.fails("unmasked client frame", vec![0x81, 0x02, b'h', b'i'], &[1002]);
}

/// Autobahn 2.x: pings are answered with identical pongs, pongs are
/// ignored, control frames stay within 125 bytes.
#[rustfmt::skip] // a table of cases, one per line
fn pings(c: &mut Cases) {
    let high: Vec<u8> = (0x83..=0xffu8).rev().collect();
    c.add("ping without payload", ping(b""), vec![echo(PONG, b"")]);
    c.add("ping with 125 bytes", ping(&pattern(125)), vec![echo(PONG, &pattern(125))]);
    c.add("ping with bytes 0xff down to 0x83", ping(&high), vec![echo(PONG, &high)]);
    c.fails("ping with 126 bytes", ping(&pattern(126)), &[1002]);
    c.add("unsolicited pong is ignored", [pong(b"unasked"), text(b"after")].concat(),
        vec![echo(TEXT, b"after")]);
    c.add("unsolicited pong of 125 bytes is ignored", [pong(&pattern(125)), text(b"after")].concat(),
        vec![echo(TEXT, b"after")]);
    c.add("ping in the middle of a fragmented text",
        [start(TEXT, b"frag1 "), ping(b"mid"), cont(true, b"frag2")].concat(),
        vec![echo(PONG, b"mid"), echo(TEXT, b"frag1 frag2")]);
    c.add("pong in the middle of a fragmented text",
        [start(TEXT, b"frag1 "), pong(b"mid"), cont(true, b"frag2")].concat(),
        vec![echo(TEXT, b"frag1 frag2")]);
    c.add_writes("text then ping, byte by byte", bytewise(&[text(b"before"), ping(b"x")].concat()), true,
        vec![echo(TEXT, b"before"), echo(PONG, b"x")]);
}

/// Autobahn 3.x: no extension was negotiated, so any RSV bit fails the
/// connection, also after a good message and on control frames; the ping
/// after the bad frame is not answered.
fn reserved_bits(c: &mut Cases) {
    let frames = [
        (TEXT, "text"),
        (TEXT, "text"),
        (TEXT, "text"),
        (TEXT, "text"),
    ];
    let frames = frames
        .iter()
        .chain(&[(BINARY, "binary"), (PING, "ping"), (CLOSE, "close")]);
    for (rsv, (op, what)) in (1u8..).zip(frames) {
        let bad = raw_b0(0x80 | rsv << 4 | op, b"\x03\xe8bad");
        c.add(
            format!("RSV={rsv} on a {what} frame after a good text"),
            [text(b"good"), bad, ping(b"p")].concat(),
            vec![maybe(TEXT, b"good"), closed(&[1002])],
        );
    }
}

/// Autobahn 4.x: reserved data (3-7) and control (11-15) opcodes fail the
/// connection; the ping after it is not answered.
fn opcodes(c: &mut Cases) {
    for op in (3..=7).chain(11..=15) {
        c.add(
            format!("reserved opcode {op} after a good text"),
            [text(b"good"), frame(true, op, b"x"), ping(b"p")].concat(),
            vec![maybe(TEXT, b"good"), closed(&[1002])],
        );
    }
}

/// Autobahn 5.x: fragmented messages are reassembled; broken fragment
/// sequences and fragmented control frames fail the connection.
#[rustfmt::skip] // a table of cases, one per line
fn fragmentation(c: &mut Cases) {
    let words = "Fragmented text: κόσμε, 你好, 😀.".as_bytes();
    let data = pattern(1000);
    for n in [2, 3, 10] {
        c.add(format!("text in {n} fragments"), fragments(TEXT, words, n), vec![echo(TEXT, words)]);
        c.add(format!("binary in {n} fragments"), fragments(BINARY, &data, n), vec![echo(BINARY, &data)]);
    }
    c.add("text of 3000 bytes in 300 fragments", fragments(TEXT, &letters(3000), 300),
        vec![echo(TEXT, &letters(3000))]);
    c.add("empty fragments around the payload",
        [start(TEXT, b""), cont(false, b""), cont(false, b"mid"), cont(true, b"")].concat(),
        vec![echo(TEXT, b"mid")]);
    c.add_writes("text in 4 fragments, one write each",
        vec![start(TEXT, b"a"), cont(false, b"b"), cont(false, b"c"), cont(true, b"d")], true,
        vec![echo(TEXT, b"abcd")]);
    c.fails("continuation (FIN) without a start", cont(true, b"x"), &[1002]);
    c.fails("continuation (no FIN) without a start", cont(false, b"x"), &[1002]);
    c.add("continuation after a complete message", [text(b"whole"), cont(true, b"x")].concat(),
        vec![maybe(TEXT, b"whole"), closed(&[1002])]);
    c.fails("new text frame in the middle of a fragmented text",
        [start(TEXT, b"one"), text(b"two")].concat(), &[1002]);
    c.fails("new binary frame in the middle of a fragmented text",
        [start(TEXT, b"one"), start(BINARY, b"two"), cont(true, b"three")].concat(), &[1002]);
    c.fails("fragmented ping", [start(PING, b"pi"), cont(true, b"ng")].concat(), &[1002]);
    c.fails("fragmented pong", [start(PONG, b"po"), cont(true, b"ng")].concat(), &[1002]);
    c.fails("fragmented close", [start(CLOSE, b"\x03"), cont(true, b"\xe8")].concat(), &[1002]);
}

/// "κόσμε" in UTF-8, the text Autobahn's UTF-8 cases are built on.
const KOSME: &[u8] = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5";

/// Autobahn 6.x: valid UTF-8 of every kind is echoed, whole or split at
/// any byte; invalid UTF-8 fails with 1007, as soon as it is known.
#[rustfmt::skip] // a table of cases, one per line
fn utf8(c: &mut Cases) {
    for (name, valid) in [
        ("empty text", ""),
        ("Greek κόσμε", "κόσμε"),
        ("4-byte emoji", "😀"),
        ("U+007F U+0080 U+07FF U+0800", "\u{7f}\u{80}\u{7ff}\u{800}"),
        ("U+D7FF U+E000 around the surrogates", "\u{d7ff}\u{e000}"),
        ("U+FFFD U+FFFE U+FFFF", "\u{fffd}\u{fffe}\u{ffff}"),
        ("U+10000 U+10FFFF", "\u{10000}\u{10ffff}"),
    ] {
        c.add(format!("valid: {name}"), text(valid.as_bytes()), vec![echo(TEXT, valid.as_bytes())]);
    }
    let mixed = "κόσμε 😀 你好 a\u{7f}\u{80}\u{7ff}\u{800}\u{ffff}\u{10000}\u{10ffff}".as_bytes();
    let splits = 1..mixed.len();
    c.add(format!("valid, in 2 fragments split at each of {} bytes", mixed.len() - 1),
        splits.clone().flat_map(|i| [start(TEXT, &mixed[..i]), cont(true, &mixed[i..])].concat()).collect(),
        splits.map(|_| echo(TEXT, mixed)).collect());
    c.add("valid, one fragment per byte", fragments(TEXT, mixed, mixed.len()), vec![echo(TEXT, mixed)]);
    for (name, bad) in [
        ("0xff", &b"ab\xffcd"[..]),
        ("0xfe", b"\xfe"),
        ("lone continuation byte 0x80", b"a\x80b"),
        ("overlong '/' (c0 af)", b"\xc0\xaf"),
        ("overlong U+007F (c1 bf)", b"\xc1\xbf"),
        ("overlong 3-byte '/' (e0 80 af)", b"\xe0\x80\xaf"),
        ("overlong 4-byte '/' (f0 80 80 af)", b"\xf0\x80\x80\xaf"),
        ("overlong U+FFFF (f0 8f bf bf)", b"\xf0\x8f\xbf\xbf"),
        ("surrogate U+D800", b"\xed\xa0\x80"),
        ("surrogate U+DFFF", b"\xed\xbf\xbf"),
        ("surrogate pair U+D834 U+DD1E", b"\xed\xa0\xb4\xed\xb4\x9e"),
        ("above U+10FFFF (f4 90 80 80)", b"\xf4\x90\x80\x80"),
        ("5-byte form (f8 88 80 80 80)", b"\xf8\x88\x80\x80\x80"),
        ("κόσμε, a surrogate, edited", &[KOSME, b"\xed\xa0\x80edited"].concat()),
        ("truncated 3-byte sequence at the end", b"abc\xe4\xbd"),
    ] {
        c.fails(format!("invalid: {name}"), text(bad), &[1007]);
    }
    c.fails("invalid: surrogate split across fragments (ed | a0 80)",
        [start(TEXT, b"ok \xed"), cont(true, b"\xa0\x80")].concat(), &[1007]);
    c.fails("invalid: sequence cut short by the last fragment",
        [start(TEXT, b"abc\xe4"), cont(true, b"\xbd")].concat(), &[1007]);
    // Fail fast (Autobahn 6.4.x): the message is never finished, so only
    // a server that checks each fragment as it arrives can answer.
    c.fails("fail fast: invalid in the first fragment, message unfinished",
        start(TEXT, &[KOSME, b"\xf4\x90\x80\x80"].concat()), &[1007]);
    c.fails("fail fast: invalid across 2 fragments, message unfinished",
        [start(TEXT, &[KOSME, b"\xf4"].concat()), cont(false, b"\x90\x80\x80")].concat(), &[1007]);
}

/// Autobahn 7.x: the closing handshake, close payloads and close codes.
#[rustfmt::skip] // a table of cases, one per line
fn closing(c: &mut Cases) {
    c.fails("close 1000 with a reason is echoed", close(1000, b"bye"), &[1000]);
    c.fails("close without payload", frame(true, CLOSE, b""), &[NO_CODE, 1000]);
    c.fails("close with a 1-byte payload", frame(true, CLOSE, b"\x03"), &[1002]);
    c.fails("close with a 123-byte reason", close(1000, &letters(123)), &[1000]);
    c.fails("close with a 124-byte reason (frame of 126)", close(1000, &letters(124)), &[1002]);
    c.fails("close with a UTF-8 reason", close(1000, "κόσμε 你好".as_bytes()), &[1000]);
    c.fails("close with an invalid UTF-8 reason", close(1000, &[KOSME, b"\xed\xa0\x80edited"].concat()),
        &[1007, 1002]);
    c.add("text right before the close", [text(b"last words"), close(1000, b"")].concat(),
        vec![maybe(TEXT, b"last words"), closed(&[1000])]);
    c.fails("text and ping after the close are ignored",
        [close(1000, b""), text(b"late"), ping(b"late")].concat(), &[1000]);
    c.fails("close in the middle of a fragmented text", [start(TEXT, b"half"), close(1000, b"")].concat(),
        &[1000]);
    for code in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999] {
        c.fails(format!("valid code {code} is echoed"), close(code, b""), &[code]);
    }
    for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
        c.fails(format!("invalid code {code}"), close(code, b""), &[1002]);
    }
}

/// Autobahn 9.x sizes at the limit, and length headers that would make a
/// careless server allocate: the limit is checked from the frame header.
#[rustfmt::skip] // a table of cases, one per line
fn limits(c: &mut Cases) {
    let header = |len: u64| [&[0x80 | BINARY, 0x80 | 127][..], &len.to_be_bytes(), &[1, 2, 3, 4]].concat();
    c.add(format!("binary of exactly the limit ({LIMIT} bytes)"), binary(&pattern(LIMIT)),
        vec![echo(BINARY, &pattern(LIMIT))]);
    c.fails(format!("binary of the limit + 1 ({} bytes)", LIMIT + 1), binary(&pattern(LIMIT + 1)), &[1009]);
    c.fails("text of the limit + 1 in 2 fragments", fragments(TEXT, &letters(LIMIT + 1), 2), &[1009]);
    c.add("text of the limit in 64 fragments", fragments(TEXT, &letters(LIMIT), 64),
        vec![echo(TEXT, &letters(LIMIT))]);
    c.fails("length header of 2^63-1 bytes", [header(i64::MAX as u64), b"and then some".to_vec()].concat(),
        &[1009]);
    c.fails("length header with the top bit set (2^63)", header(1 << 63), &[1002, 1009]);
    c.add("still echoing after those headers", text(b"still here"), vec![echo(TEXT, b"still here")]);
}

// ----------------------------------------------------------------- runner

/// One item the server sent.
#[derive(Debug)]
enum Seen {
    /// A data message (fragments reassembled: the first frame's length
    /// form and the number of frames) or a ping/pong.
    Msg(u8, Vec<u8>, LenForm, usize),
    /// A close frame with this code ([`NO_CODE`] when empty).
    Close(u16),
    /// The connection ended (EOF or reset).
    End,
    /// Nothing more within [`READ_WAIT`].
    Timeout,
    /// Something no server may send.
    Bad(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Pass,
    /// Passed with an optional echo missing.
    NonStrict,
    Fail,
}

/// One table row.
struct Row {
    category: &'static str,
    name: String,
    expected: String,
    got: String,
    outcome: Outcome,
}

fn known(row: &Row) -> bool {
    KNOWN_DEVIATIONS.iter().any(|(name, _)| *name == row.name)
}

/// Connects, sends the case's bytes, reads the answer and judges it.
fn run(addr: SocketAddr, case: &Case) -> Row {
    let mut tcp = raw_ws(addr, "rfc6455");
    tcp.set_read_timeout(Some(READ_WAIT)).unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut write_error = None;
    for chunk in &case.writes {
        // The server may fail the connection before it read everything;
        // its close frame is still there to read.
        if let Err(e) = tcp.write_all(chunk) {
            write_error = Some(e);
            break;
        }
        if case.paced {
            thread::sleep(Duration::from_millis(1));
        }
    }
    let seen = observe(&mut tcp, &case.expect);
    let outcome = verdict(&case.expect, &seen);
    let mut got = describe_seen(&seen, &case.expect);
    if let (Outcome::Fail, Some(e)) = (outcome, write_error) {
        got.push_str(&format!(" (write failed: {e})"));
    }
    Row {
        category: case.category,
        name: case.name.clone(),
        expected: describe_wants(&case.expect),
        got,
        outcome,
    }
}

/// Reads what the server sends until the case can be judged: a close
/// frame and what follows it, the end, a timeout, something invalid, or
/// as many messages as expected when no close is expected.
fn observe(tcp: &mut TcpStream, wants: &[Want]) -> Vec<Seen> {
    let closing = matches!(wants.last(), Some(Want::Close(_)));
    let mut seen = Vec::new();
    let mut partial: Option<(u8, Vec<u8>, LenForm, usize)> = None;
    loop {
        let f = match read_raw(tcp).and_then(RawFrame::checked) {
            Ok(f) => f,
            Err(end) => {
                seen.push(end);
                return seen;
            }
        };
        let item = match (f.opcode, &mut partial) {
            (CLOSE, _) => {
                let code = match f.payload.len() {
                    0 => NO_CODE,
                    1 => 0,
                    _ => u16::from_be_bytes([f.payload[0], f.payload[1]]),
                };
                seen.push(Seen::Close(code));
                // After a close, only the end of the connection may come.
                seen.push(match read_raw(tcp) {
                    Ok(f) => Seen::Bad(format!("opcode {} after the close", f.opcode)),
                    Err(end) => end,
                });
                return seen;
            }
            (PING | PONG, _) => Seen::Msg(f.opcode, f.payload, f.form, 1),
            (TEXT | BINARY, None) if f.fin => Seen::Msg(f.opcode, f.payload, f.form, 1),
            (TEXT | BINARY, None) => {
                partial = Some((f.opcode, f.payload, f.form, 1));
                continue;
            }
            (CONT, Some((_, buf, _, frames))) => {
                buf.extend_from_slice(&f.payload);
                *frames += 1;
                if !f.fin {
                    continue;
                }
                let (op, buf, form, frames) = partial.take().unwrap();
                Seen::Msg(op, buf, form, frames)
            }
            (op, _) => Seen::Bad(format!("opcode {op} out of sequence")),
        };
        let bad = matches!(item, Seen::Bad(_));
        seen.push(item);
        if bad || (!closing && seen.len() >= wants.len()) || seen.len() > wants.len() + 2 {
            return seen;
        }
    }
}

/// Judges `seen` against `wants`. Data messages must come in order and
/// pongs in order, but pongs may come before or after data (the RFC does
/// not order them); an expected close must be followed by the end.
fn verdict(wants: &[Want], seen: &[Seen]) -> Outcome {
    let mut body = seen;
    if let Some(Want::Close(codes)) = wants.last() {
        match seen {
            [rest @ .., Seen::Close(code), Seen::End] if codes.contains(code) => body = rest,
            _ => return Outcome::Fail,
        }
    }
    let is_data = |op: u8| op == TEXT || op == BINARY;
    let mut got_data = Vec::new();
    let mut got_control = Vec::new();
    for s in body {
        match s {
            Seen::Msg(op, ..) if is_data(*op) => got_data.push(s),
            Seen::Msg(..) => got_control.push(s),
            _ => return Outcome::Fail,
        }
    }
    let want_msgs = wants.iter().filter(|w| matches!(w, Want::Msg { .. }));
    let (want_data, want_control): (Vec<&Want>, Vec<&Want>) =
        want_msgs.partition(|w| matches!(w, Want::Msg { op, .. } if is_data(*op)));
    if want_control.len() != got_control.len()
        || !want_control
            .iter()
            .zip(&got_control)
            .all(|(w, s)| matches(w, s))
    {
        return Outcome::Fail;
    }
    let mut outcome = Outcome::Pass;
    let mut got = got_data.iter().peekable();
    for w in want_data {
        if got.peek().is_some_and(|s| matches(w, s)) {
            got.next();
        } else if matches!(w, Want::Msg { optional: true, .. }) {
            outcome = Outcome::NonStrict;
        } else {
            return Outcome::Fail;
        }
    }
    if got.next().is_some() {
        return Outcome::Fail;
    }
    outcome
}

fn matches(want: &Want, seen: &Seen) -> bool {
    match (want, seen) {
        (
            Want::Msg {
                op, payload, form, ..
            },
            Seen::Msg(sop, sp, sform, frames),
        ) => op == sop && payload == sp && form.is_none_or(|f| f == *sform && *frames == 1),
        _ => false,
    }
}

/// A frame as it came from the server.
struct RawFrame {
    fin: bool,
    rsv: u8,
    opcode: u8,
    masked: bool,
    form: LenForm,
    payload: Vec<u8>,
}

impl RawFrame {
    /// The frame, or why no server may send it.
    fn checked(self) -> Result<RawFrame, Seen> {
        let len = self.payload.len();
        let problem = if self.masked {
            "a masked server frame".to_string()
        } else if self.rsv != 0 {
            format!("RSV bits {:#x} set", self.rsv)
        } else if self.form != LenForm::minimal(len) {
            format!("a {} for {len} bytes", self.form.label())
        } else if self.opcode >= 8 && (!self.fin || len > 125) {
            format!("a bad control frame (opcode {})", self.opcode)
        } else {
            return Ok(self);
        };
        Err(Seen::Bad(problem))
    }
}

/// Reads one frame; `Err` is the end of the connection or a timeout.
fn read_raw(tcp: &mut TcpStream) -> Result<RawFrame, Seen> {
    let mut hdr = [0u8; 2];
    read_exact(tcp, &mut hdr)?;
    let (len, form) = match hdr[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            read_exact(tcp, &mut b)?;
            (u64::from(u16::from_be_bytes(b)), LenForm::Sixteen)
        }
        127 => {
            let mut b = [0u8; 8];
            read_exact(tcp, &mut b)?;
            (u64::from_be_bytes(b), LenForm::SixtyFour)
        }
        n => (u64::from(n), LenForm::Seven),
    };
    if len > 16 << 20 {
        return Err(Seen::Bad(format!("a frame announcing {len} bytes")));
    }
    let masked = hdr[1] & 0x80 != 0;
    if masked {
        read_exact(tcp, &mut [0u8; 4])?;
    }
    let mut payload = vec![0u8; len as usize];
    read_exact(tcp, &mut payload)?;
    Ok(RawFrame {
        fin: hdr[0] & 0x80 != 0,
        rsv: (hdr[0] >> 4) & 0x7,
        opcode: hdr[0] & 0x0f,
        masked,
        form,
        payload,
    })
}

fn read_exact(tcp: &mut TcpStream, buf: &mut [u8]) -> Result<(), Seen> {
    tcp.read_exact(buf).map_err(|e| match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Seen::Timeout,
        _ => Seen::End,
    })
}

// ----------------------------------------------------------------- report

fn op_name(op: u8) -> &'static str {
    match op {
        TEXT => "text",
        BINARY => "binary",
        PING => "ping",
        PONG => "pong",
        _ => "frame",
    }
}

fn codes_label(codes: &[u16]) -> String {
    let label = |c: &u16| match *c {
        NO_CODE => "(no code)".to_string(),
        c => c.to_string(),
    };
    codes.iter().map(label).collect::<Vec<_>>().join(" or ")
}

fn describe_wants(wants: &[Want]) -> String {
    let items: Vec<String> = wants
        .iter()
        .map(|w| match w {
            Want::Msg {
                op,
                payload,
                form,
                optional,
            } => {
                let mut d = format!("{} {} B", op_name(*op), payload.len());
                if let Some(form) = form {
                    d.push_str(&format!(", {}", form.label()));
                }
                if *optional {
                    d = format!("[{d}]");
                }
                d
            }
            Want::Close(codes) => format!("close {}", codes_label(codes)),
        })
        .collect();
    summarize(&items)
}

fn describe_seen(seen: &[Seen], wants: &[Want]) -> String {
    let show_form = wants
        .iter()
        .any(|w| matches!(w, Want::Msg { form: Some(_), .. }));
    let after_close = |i: usize| i > 0 && matches!(seen[i - 1], Seen::Close(_));
    let mut items = Vec::new();
    for (i, s) in seen.iter().enumerate() {
        items.push(match s {
            Seen::Msg(op, p, form, frames) => {
                let mut d = format!("{} {} B", op_name(*op), p.len());
                if show_form {
                    d.push_str(&format!(", {}", form.label()));
                }
                if *frames > 1 {
                    d.push_str(&format!(" in {frames} frames"));
                }
                let same_size = |w: &Want| matches!(w, Want::Msg { op: o, payload, .. } if o == op && payload.len() == p.len());
                let same = |w: &Want| matches!(w, Want::Msg { op: o, payload, .. } if o == op && payload == p);
                if wants.iter().any(same_size) && !wants.iter().any(same) {
                    d.push_str(" (other bytes)");
                }
                d
            }
            Seen::Close(code) => format!("close {}", codes_label(&[*code])),
            // The end right after a close is what a close implies.
            Seen::End if after_close(i) => continue,
            Seen::End => "connection ended".into(),
            Seen::Timeout if after_close(i) => "connection left open".into(),
            Seen::Timeout => "nothing more".into(),
            Seen::Bad(what) => format!("bad: {what}"),
        });
    }
    summarize(&items)
}

/// Joins items, collapsing a run of equal ones into "N x item".
fn summarize(items: &[String]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < items.len() {
        let run = items[i..].iter().take_while(|x| **x == items[i]).count();
        out.push(match run {
            1 => items[i].clone(),
            n => format!("{n} x {}", items[i]),
        });
        i += run;
    }
    out.join(", ")
}

/// The results table and the `N of M cases pass` line.
fn table(rows: &[Row]) -> String {
    let result = |r: &Row| match (r.outcome, known(r)) {
        (Outcome::Pass, _) => "pass",
        (Outcome::NonStrict, _) => "pass (non-strict)",
        (Outcome::Fail, true) => "FAIL (known deviation)",
        (Outcome::Fail, false) => "FAIL",
    };
    let width =
        |f: fn(&Row) -> usize, title: &str| rows.iter().map(f).max().unwrap_or(0).max(title.len());
    let wc = width(|r| r.category.chars().count(), "category");
    let wn = width(|r| r.name.chars().count(), "case");
    let we = width(|r| r.expected.chars().count(), "expected");
    let wg = width(|r| r.got.chars().count(), "got");
    let line = |c: &str, n: &str, e: &str, g: &str, res: &str| {
        format!("{c:<wc$} | {n:<wn$} | {e:<we$} | {g:<wg$} | {res}\n")
    };
    let mut out = String::from("\nRFC 6455 edge cases against wshub in echo mode\n\n");
    out.push_str(&line("category", "case", "expected", "got", "result"));
    out.push_str(&format!("{}\n", "-".repeat(wc + wn + we + wg + 30)));
    for r in rows {
        out.push_str(&line(r.category, &r.name, &r.expected, &r.got, result(r)));
    }
    let passed = rows.iter().filter(|r| r.outcome != Outcome::Fail).count();
    let non_strict = rows
        .iter()
        .filter(|r| r.outcome == Outcome::NonStrict)
        .count();
    out.push_str(&format!(
        "\n{passed} of {} cases pass ({non_strict} non-strict: an echo in [brackets] was dropped \
         because the connection failed or closed right after, as RFC 6455 allows)\n",
        rows.len()
    ));
    for (name, why) in KNOWN_DEVIATIONS {
        out.push_str(&format!("known deviation: {name}: {why}\n"));
    }
    out
}
