//! The bytes a session sends: one ordered buffer under tungstenite, and
//! frames the hub encodes once for all their receivers.
//!
//! # Who owns what
//!
//! A [`Wire`] belongs to one session thread, inside its `WebSocket`: it is
//! the stream tungstenite reads from and writes to. An [`Outgoing`] item
//! is made by the hub (or the client's caller) and moves through the
//! session's outbox. A [`Batch`] is built by the hub for one receiver and
//! then belongs to that receiver's session; the bytes of a large
//! [`Frame`] are shared, read-only, by every batch it was put in.
//!
//! # Why a buffer of our own
//!
//! A broadcast to N clients used to be framed N times: tungstenite builds
//! a header and copies the payload into each receiver's write buffer. The
//! hub now frames a message once ([`Frame::encode`]) and puts the finished
//! bytes in each receiver's [`Batch`]; the session moves the batch into its
//! [`Wire`], the same buffer that tungstenite writes its own frames into
//! (pongs, pings, close frames).
//! Because both go through this one buffer, in the order they were
//! written, frames never interleave on the socket. tungstenite is set to
//! hand every frame over at once (`write_buffer_size(0)`), and [`Wire`]
//! always takes whole writes, so the buffer only ever holds whole frames.
//! Bytes reach the socket on `flush`, normally once per session wake-up.
//!
//! # Buffers go round
//!
//! A batch's buffer is filled on the hub thread and freed on a session
//! thread, after its bytes went out. Under load that is one allocation per
//! receiver and hub round, freed on another thread. musl's allocator hands
//! such buffers back to the kernel and maps fresh ones each time: in the
//! static musl build, `munmap`, page faults and the TLB flushes they send
//! to the other core took about 40 % of the server's CPU under fan-out
//! load. [`Spares`] closes the circle: a session gives the buffer it has
//! sent back, and the hub fills it again. The hub empties it after a quiet
//! second, so an idle server keeps none.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame as WsFrame;
use tungstenite::{Bytes, Message};

use crate::stream::Stream;

/// A whole server-to-client frame (unmasked), encoded once for all its
/// receivers.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    bytes: Bytes,
    payload: usize,
}

impl Frame {
    /// Encodes a text or binary message as one final frame; `None` for
    /// other kinds (they go to tungstenite as messages).
    pub(crate) fn encode(msg: &Message) -> Option<Frame> {
        let (opcode, payload) = match msg {
            Message::Text(text) => (Data::Text, Bytes::from(text.clone())),
            Message::Binary(data) => (Data::Binary, data.clone()),
            _ => return None,
        };
        let len = payload.len();
        let frame = WsFrame::message(payload, OpCode::Data(opcode), true);
        let mut bytes = Vec::with_capacity(frame.len());
        frame.format(&mut bytes).ok()?;
        Some(Frame {
            bytes: Bytes::from(bytes),
            payload: len,
        })
    }

    /// The frame as it goes on the wire.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Payload bytes (what the queue limits count).
    pub(crate) fn payload(&self) -> usize {
        self.payload
    }
}

/// What a session is asked to send.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A message for tungstenite to frame (a client's frames are masked
    /// with a fresh key each, so they cannot be shared).
    Message(Message),
    /// Frames the hub encoded: everything it queued for one receiver
    /// between two wake-ups, handed over at once.
    Batch(Batch),
}

/// Frames up to this size are copied into a receiver's batch; larger ones
/// are shared. Copying 66 bytes costs less than the two atomic reference
/// count updates (one on each core) that sharing costs per receiver, and a
/// batch of copied frames goes to the socket without any further copy.
const COPY_MAX: usize = 512;

/// Buffers kept by [`Spares`]: at most this many, ...
const SPARES_MAX: usize = 64;
/// ... each with a capacity in this range (smaller ones cost little to
/// allocate; larger ones are not worth keeping).
const SPARE_CAPACITY: std::ops::RangeInclusive<usize> = 1024..=(64 << 10);

/// Sent batch buffers on their way back from the sessions to the hub.
/// Cloning shares the same set; giving and taking never block.
#[derive(Debug, Clone)]
pub(crate) struct Spares {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
}

impl Spares {
    /// An empty set.
    pub(crate) fn new() -> Spares {
        let (tx, rx) = crossbeam_channel::bounded(SPARES_MAX);
        Spares { tx, rx }
    }

    /// Keeps `buf` for the hub, unless its size is not worth it or enough
    /// are kept already (then it is freed).
    pub(crate) fn give(&self, mut buf: Vec<u8>) {
        if SPARE_CAPACITY.contains(&buf.capacity()) {
            buf.clear();
            // When full, the buffer comes back in the error and is freed.
            let _ = self.tx.try_send(buf);
        }
    }

    /// A kept buffer, empty, or a new one without capacity.
    pub(crate) fn take(&self) -> Vec<u8> {
        self.rx.try_recv().unwrap_or_default()
    }

    /// Buffers kept.
    pub(crate) fn len(&self) -> usize {
        self.rx.len()
    }

    /// Frees every buffer kept.
    pub(crate) fn clear(&self) {
        while self.rx.try_recv().is_ok() {}
    }
}

/// The frames the hub queued for one receiver, in order: small frames
/// copied back to back into one buffer, large ones shared.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    chunks: Vec<Chunk>,
    count: usize,
    payload: usize,
    // A buffer kept by `clear` for the next run of copied frames.
    spare: Vec<u8>,
}

/// A run of a batch.
#[derive(Debug)]
pub(crate) enum Chunk {
    /// Small frames, copied back to back.
    Copied(Vec<u8>),
    /// A large frame, shared with its other receivers.
    Shared(Frame),
}

impl Batch {
    /// Adds `frame` at the end; a new run of copied frames starts in the
    /// batch's own spare buffer, or else in one from `spares`.
    pub(crate) fn push(&mut self, frame: &Frame, spares: &Spares) {
        self.count += 1;
        self.payload += frame.payload;
        let bytes = frame.as_bytes();
        if bytes.len() > COPY_MAX {
            self.chunks.push(Chunk::Shared(frame.clone()));
        } else if let Some(Chunk::Copied(buf)) = self.chunks.last_mut() {
            buf.extend_from_slice(bytes);
        } else {
            let mut buf = std::mem::take(&mut self.spare);
            if buf.capacity() == 0 {
                buf = spares.take();
            }
            buf.reserve(bytes.len().max(1024));
            buf.extend_from_slice(bytes);
            self.chunks.push(Chunk::Copied(buf));
        }
    }

    /// Empties the batch after its frames were sent, keeping a buffer for
    /// the next ones (the hub writes a lone message to a sleeping receiver
    /// this way, once per message and receiver).
    pub(crate) fn clear(&mut self) {
        for chunk in self.chunks.drain(..) {
            if let Chunk::Copied(mut buf) = chunk {
                buf.clear();
                self.spare = buf;
            }
        }
        self.count = 0;
        self.payload = 0;
    }

    /// Frames in the batch.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Their payload bytes together.
    pub(crate) fn payload(&self) -> usize {
        self.payload
    }

    /// `true` when it holds no frame.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// All its bytes in one piece (borrowed when they are already).
    pub(crate) fn bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        match &self.chunks[..] {
            [Chunk::Copied(buf)] => buf.as_slice().into(),
            [Chunk::Shared(frame)] => frame.as_bytes().into(),
            chunks => chunks
                .iter()
                .flat_map(|c| match c {
                    Chunk::Copied(buf) => buf.as_slice(),
                    Chunk::Shared(frame) => frame.as_bytes(),
                })
                .copied()
                .collect::<Vec<u8>>()
                .into(),
        }
    }

    /// The runs, for the session to send.
    pub(crate) fn into_chunks(self) -> Vec<Chunk> {
        self.chunks
    }
}

/// The stream under a session's `WebSocket`: reads go straight to the
/// socket; writes are queued whole and sent on `flush`.
#[derive(Debug)]
pub(crate) struct Wire {
    io: Io,
    out: Vec<u8>,
    // Bytes of `out` already sent.
    sent: usize,
    // Until `buffer_writes`, writes go straight through (a client's
    // blocking handshake).
    buffered: bool,
    // Where sent batch buffers go back to the hub (a server's sessions).
    spares: Option<Spares>,
}

/// The socket under a [`Wire`]. Plain TCP is held in an `Arc` so that the
/// hub can write to a sleeping session's socket (see
/// `session::Outbox::write_direct`); TLS cannot be shared that way.
#[derive(Debug)]
enum Io {
    Plain(Arc<TcpStream>),
    Other(Stream),
}

impl Wire {
    /// Wraps `stream`, queueing writes from the start (a server: its
    /// handshake answer went out before), and giving the buffers of sent
    /// batches back to `spares`.
    pub(crate) fn buffered(stream: Stream, spares: Option<Spares>) -> Wire {
        let io = match stream {
            Stream::Plain(tcp) => Io::Plain(Arc::new(tcp)),
            #[allow(unreachable_patterns)] // without the tls feature
            other => Io::Other(other),
        };
        Wire {
            io,
            out: Vec::new(),
            sent: 0,
            buffered: true,
            spares,
        }
    }

    /// Wraps `stream`, writing straight through until
    /// [`Wire::buffer_writes`] (a client, whose handshake tungstenite runs).
    pub(crate) fn direct(stream: Stream) -> Wire {
        Wire {
            buffered: false,
            ..Wire::buffered(stream, None)
        }
    }

    /// From now on, queue writes until `flush`.
    pub(crate) fn buffer_writes(&mut self) {
        self.buffered = true;
    }

    /// Queues a run of a batch behind what is already queued. A run of
    /// copied frames that finds the queue empty becomes the queue, with no
    /// copy. The buffer given up either way goes back to the spares.
    pub(crate) fn queue(&mut self, chunk: Chunk) {
        let done = match chunk {
            Chunk::Shared(frame) => {
                self.out.extend_from_slice(frame.as_bytes());
                return;
            }
            Chunk::Copied(buf) if self.pending() == 0 => {
                self.sent = 0;
                std::mem::replace(&mut self.out, buf)
            }
            Chunk::Copied(buf) => {
                self.out.extend_from_slice(&buf);
                buf
            }
        };
        if let Some(spares) = &self.spares {
            spares.give(done);
        }
    }

    /// Queues bytes that must go out first: the rest of a frame the hub
    /// began to write while the session slept. Only called with nothing
    /// else queued.
    pub(crate) fn queue_first(&mut self, bytes: &[u8]) {
        debug_assert_eq!(self.pending(), 0);
        self.out.extend_from_slice(bytes);
    }

    /// Bytes queued and not yet sent.
    pub(crate) fn pending(&self) -> usize {
        self.out.len() - self.sent
    }

    /// The TCP socket underneath.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match &self.io {
            Io::Plain(tcp) => tcp,
            Io::Other(stream) => stream.tcp(),
        }
    }

    /// The plain TCP socket, to share with the hub; `None` under TLS.
    pub(crate) fn shared_tcp(&self) -> Option<Arc<TcpStream>> {
        match &self.io {
            Io::Plain(tcp) => Some(tcp.clone()),
            Io::Other(_) => None,
        }
    }
}

impl Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Io::Plain(tcp) => (&**tcp).write(buf),
            Io::Other(stream) => stream.write(buf),
        }
    }
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.io {
            Io::Plain(tcp) => (&**tcp).read(buf),
            Io::Other(stream) => stream.read(buf),
        }
    }
}

impl Write for Wire {
    /// Takes all of `buf` (never a part, never `WouldBlock`), so the queue
    /// holds whole frames only.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.buffered {
            return self.io.write(buf);
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    /// Sends what is queued; `WouldBlock` when the socket takes only part
    /// of it (the rest stays queued, in order).
    fn flush(&mut self) -> io::Result<()> {
        while self.sent < self.out.len() {
            match self.io.write(&self.out[self.sent..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.sent = 0;
        match &mut self.io {
            Io::Plain(_) => Ok(()),
            Io::Other(stream) => stream.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_rfc_6455_header_and_the_payload() {
        let frame = |msg: Message| Frame::encode(&msg).expect("data encodes");
        assert_eq!(frame(Message::text("hi")).as_bytes(), b"\x81\x02hi");
        assert_eq!(
            frame(Message::binary(vec![1u8, 2, 3])).as_bytes(),
            [0x82, 3, 1, 2, 3]
        );
        // 126..=65535 bytes: a 16-bit length; more: a 64-bit length.
        let long = frame(Message::text("x".repeat(126)));
        assert_eq!(long.as_bytes()[..4], [0x81, 126, 0, 126]);
        assert_eq!(long.as_bytes().len(), 4 + 126);
        let longer = frame(Message::binary(vec![7u8; 65_536]));
        assert_eq!(longer.as_bytes()[..10], [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(longer.as_bytes().len(), 10 + 65_536);
        assert_eq!(longer.payload, 65_536);
        assert!(Frame::encode(&Message::Ping(Bytes::new())).is_none());
    }

    #[test]
    fn a_batch_keeps_order_copying_small_frames_and_sharing_large_ones() {
        let small = |t: &str| Frame::encode(&Message::text(t)).unwrap();
        let large = Frame::encode(&Message::binary(vec![9u8; COPY_MAX + 1])).unwrap();
        let mut batch = Batch::default();
        let spares = Spares::new();
        for frame in [small("a"), small("bc"), large.clone(), small("d")] {
            batch.push(&frame, &spares);
        }
        assert_eq!(
            (batch.len(), batch.payload()),
            (4, 1 + 2 + COPY_MAX + 1 + 1)
        );
        let mut expected = b"\x81\x01a\x81\x02bc".to_vec();
        expected.extend_from_slice(large.as_bytes());
        expected.extend_from_slice(b"\x81\x01d");
        assert_eq!(&batch.bytes()[..], &expected[..]);
        let kinds: Vec<&str> = batch
            .into_chunks()
            .iter()
            .map(|c| match c {
                Chunk::Copied(_) => "copied",
                Chunk::Shared(_) => "shared",
            })
            .collect();
        assert_eq!(kinds, ["copied", "shared", "copied"]);
    }

    #[test]
    fn a_cleared_batch_starts_again_with_its_old_buffer() {
        let mut batch = Batch::default();
        let spares = Spares::new();
        batch.push(&Frame::encode(&Message::text("one")).unwrap(), &spares);
        batch.clear();
        assert!(batch.is_empty());
        assert_eq!((batch.len(), batch.payload()), (0, 0));
        assert!(batch.spare.capacity() >= 1024, "the buffer was kept");
        batch.push(&Frame::encode(&Message::text("two")).unwrap(), &spares);
        assert_eq!(&batch.bytes()[..], b"\x81\x03two");
        assert_eq!(batch.spare.capacity(), 0, "and is in use again");
    }

    #[test]
    fn spares_keep_only_useful_buffers_and_only_so_many() {
        let spares = Spares::new();
        spares.give(Vec::with_capacity(16));
        spares.give(Vec::with_capacity(1 << 20));
        assert_eq!(spares.len(), 0, "too small and too large are freed");
        let mut used = Vec::with_capacity(4096);
        used.extend_from_slice(b"sent bytes");
        spares.give(used);
        assert_eq!(spares.len(), 1);
        let again = spares.take();
        assert!(
            again.is_empty() && again.capacity() >= 4096,
            "empty, same size"
        );
        assert_eq!(spares.take().capacity(), 0, "none left: a new one");
        for _ in 0..SPARES_MAX + 5 {
            spares.give(Vec::with_capacity(2048));
        }
        assert_eq!(spares.len(), SPARES_MAX, "the rest were freed");
        spares.clear();
        assert_eq!(spares.len(), 0);
    }

    #[test]
    fn a_sent_batch_buffer_goes_round_to_the_next_batch() {
        let (a, b) = socket_pair();
        let spares = Spares::new();
        let mut wire = Wire::buffered(Stream::Plain(a), Some(spares.clone()));
        let text = |t: &str| Frame::encode(&Message::text(t)).unwrap();
        let mut first = Batch::default();
        first.push(&text("one"), &spares);
        let first_buf = match &first.chunks[..] {
            [Chunk::Copied(buf)] => buf.as_ptr(),
            _ => unreachable!("one run of copied frames"),
        };
        for chunk in first.into_chunks() {
            wire.queue(chunk);
        }
        wire.flush().unwrap();
        // The next batch becomes the queue; the sent one goes to the spares
        // and starts the batch after.
        let mut second = Batch::default();
        second.push(&text("two"), &spares);
        for chunk in second.into_chunks() {
            wire.queue(chunk);
        }
        assert_eq!(spares.len(), 1);
        let mut third = Batch::default();
        third.push(&text("three"), &spares);
        match &third.chunks[..] {
            [Chunk::Copied(buf)] => assert_eq!(buf.as_ptr(), first_buf, "the same buffer"),
            _ => unreachable!("one run of copied frames"),
        }
        assert_eq!(
            &third.bytes()[..],
            b"\x81\x05three",
            "holding only its own frame"
        );
        for chunk in third.into_chunks() {
            wire.queue(chunk);
        }
        wire.flush().unwrap();
        let mut got = vec![0u8; 5 + 5 + 7];
        (&b).read_exact(&mut got).unwrap();
        assert_eq!(&got[..], b"\x81\x03one\x81\x03two\x81\x05three");
    }

    /// A connected pair of loopback sockets.
    fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        (a, b)
    }
}
