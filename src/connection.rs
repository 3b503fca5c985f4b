//! One connection's thread, from its first byte to the end of its session.
//!
//! # Who owns what
//!
//! [`serve_connection`] runs on a connection thread (one the acceptor
//! started, or one that accepted the connection itself after its last
//! one, see [`acceptor`](crate::acceptor)) and owns the socket. It runs
//! the TLS handshake when the server has TLS, reads the HTTP request head
//! with a deadline, answers plain HTTP (the [web] page
//! and API) or a refused handshake itself, and on a valid upgrade becomes
//! the client's session thread: it tells the hub who joined, runs the
//! [session loop](crate::session), and tells the hub who left. It reaches
//! shared state only through the hub's channel; the hub, for its part, may
//! write to a plain TCP socket while the session sleeps (the session lends
//! it, see `session::Direct`). A thread that serves one connection after
//! another keeps its epoll set ([`Reactor`]) from one to the next.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, info, warn};
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use crate::close::CloseInfo;
use crate::handshake::{self, Verdict};
use crate::http::{self, HeadError, Response};
use crate::hub::{ClientInfo, Event};
use crate::naming;
use crate::server::Context;
use crate::session::{self, Handler, Reactor, Session, Timing};
use crate::stream::Stream;
use crate::web;
use crate::wire::{Outgoing, Wire};

/// One connection, from the first byte to the end of its session.
///
/// The handshake and the session are two functions that are never inlined
/// into each other, so their stack frames are never live at the same time:
/// a silent client's thread keeps only the stack pages it touched, and the
/// handshake's buffers would otherwise add a page to every one of them.
///
/// `reactor` is the thread's epoll set, kept from its previous connection
/// if it had one; a session takes it and gives it back when it ends. A new
/// thread makes it here, before the handshake, so that an upgrade can be
/// refused when it cannot be made, and so that its frames do not add to
/// the handshake's (see [`websocket`]).
pub(crate) fn serve_connection(
    ctx: &Context,
    tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
    reactor: &mut Option<Reactor>,
) {
    let no_reactor = match reactor {
        Some(_) => None,
        None => start_reactor(reactor).err(),
    };
    if let Some(new) = answer_request(ctx, tcp, peer, id, no_reactor) {
        run_client(ctx, new, reactor);
    }
}

/// Makes the thread's epoll set for its first session.
#[inline(never)]
fn start_reactor(reactor: &mut Option<Reactor>) -> io::Result<()> {
    *reactor = Some(Reactor::new()?);
    Ok(())
}

/// TLS, the request head and the answer to it; `Some` for an accepted
/// WebSocket upgrade, `None` when the connection was answered and closed.
/// With `no_reactor` (the thread could not make its epoll set, as when out
/// of file descriptors) an upgrade is answered 503, not 101 and then a
/// dropped connection.
#[inline(never)]
fn answer_request(
    ctx: &Context,
    tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
    no_reactor: Option<io::Error>,
) -> Option<NewClient> {
    // TCP_NODELAY and the handshake's socket timeouts come from the
    // listener (see `acceptor::Gate::new`).
    let deadline = Instant::now() + ctx.cfg.handshake_timeout;
    let mut stream = secure(ctx, tcp, peer, deadline)?;
    let max = ctx.cfg.max_header_bytes;
    let stop = ctx.gate.stopping();
    let (req, rest) = match http::read_head_in_slices(&mut stream, deadline, max, stop) {
        Ok(head) => head,
        Err(e) => {
            refuse_head(ctx, &mut stream, peer, e);
            return None;
        }
    };
    match handshake::check(&req, &ctx.cfg) {
        Verdict::Plain => {
            let resp = web::answer(&req, &ctx.cfg, &ctx.handle);
            debug!("{peer} {} {} -> {}", req.method, req.target, resp.status);
            answer_and_close(&mut stream, &resp, req.method == "HEAD");
            None
        }
        Verdict::Reject { response, reason } => {
            info!("refused handshake from {peer}: {}", first_line(&response));
            let _ = ctx.hub.send(Event::Rejected(reason));
            answer_and_close(&mut stream, &response, false);
            None
        }
        Verdict::Upgrade { response, protocol } => {
            if let Some(e) = no_reactor {
                warn!("refused {peer}: cannot start a session: {e}");
                let _ = ctx.hub.send(Event::Rejected("out of resources"));
                let resp = Response::text(503, &format!("cannot start a session: {e}"));
                answer_and_close(&mut stream, &resp, false);
                return None;
            }
            // Within the write timeout the socket inherited.
            let bytes = response.to_bytes(false);
            stream
                .write_all(&bytes)
                .and_then(|()| stream.flush())
                .ok()?;
            Some(NewClient {
                stream,
                rest,
                target: req.target,
                protocol,
                peer,
                id,
            })
        }
    }
}

/// Runs the TLS handshake when the server has TLS; `None` when it failed
/// (logged and counted).
fn secure(ctx: &Context, tcp: TcpStream, peer: SocketAddr, deadline: Instant) -> Option<Stream> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &ctx.cfg.tls {
        return match tls.accept(tcp, deadline, ctx.gate.stopping()) {
            // The TLS handshake set timeouts of its own: back to what a
            // plain socket inherits, so the rest is the same for both.
            Ok(stream) => match crate::acceptor::set_handshake_timeouts(stream.tcp()) {
                Ok(()) => Some(stream),
                Err(e) => {
                    debug!("{peer} went away after the TLS handshake: {e}");
                    None
                }
            },
            Err(e) => {
                info!("dropped {peer}: TLS handshake failed: {e}");
                let _ = ctx.hub.send(Event::Rejected("tls handshake"));
                None
            }
        };
    }
    let _ = (ctx, peer, deadline);
    Some(Stream::Plain(tcp))
}

/// Answers a request head we could not read, where that still helps.
fn refuse_head(ctx: &Context, stream: &mut Stream, peer: SocketAddr, err: HeadError) {
    let (reason, resp) = match err {
        HeadError::Timeout => {
            info!("dropped {peer}: no complete request within the handshake timeout");
            ("handshake timeout", None)
        }
        HeadError::TooLarge => {
            info!("refused {peer}: request head too large");
            let max = ctx.cfg.max_header_bytes;
            let resp = Response::text(431, &format!("request head over {max} bytes"));
            ("header too large", Some(resp))
        }
        HeadError::Malformed(why) => {
            info!("refused {peer}: malformed request: {why}");
            (
                "bad request",
                Some(Response::text(400, &format!("malformed request: {why}"))),
            )
        }
        HeadError::Closed | HeadError::Io(_) => {
            debug!("{peer} went away during the handshake");
            return;
        }
    };
    let _ = ctx.hub.send(Event::Rejected(reason));
    if let Some(resp) = resp {
        answer_and_close(stream, &resp, false);
    }
}

fn first_line(resp: &Response) -> String {
    let body = String::from_utf8_lossy(&resp.body);
    body.lines().next().unwrap_or_default().to_string()
}

/// Sends `resp`, then closes gently so the peer reads it before the FIN.
pub(crate) fn answer_and_close(stream: &mut Stream, resp: &Response, head_only: bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    if http::send(stream, resp, head_only, deadline).is_ok() {
        http::finish(stream, deadline);
    }
}

/// A connection whose handshake has just succeeded.
struct NewClient {
    stream: Stream,
    // Bytes the client sent right behind its request (its first frames).
    rest: Vec<u8>,
    target: String,
    protocol: Option<String>,
    peer: SocketAddr,
    id: u64,
}

/// A handshaken client: join the hub, run the session, leave the hub.
///
/// Joining is a function of its own so that its locals (the WebSocket
/// being built, the client's description) are not part of the frame that
/// stays on the stack while the session runs.
#[inline(never)]
fn run_client(ctx: &Context, new: NewClient, reactor: &mut Option<Reactor>) {
    let id = new.id;
    // `serve_connection` made the thread's epoll set, or answered 503.
    let Some(epoll) = reactor.take() else {
        return;
    };
    let Some(session) = join(ctx, new, epoll, session::channel(None)) else {
        return;
    };
    // The hub hears that the client left even if the session panics (a
    // bug): otherwise it would keep routing to a client that is gone.
    let mut left = Leave {
        ctx,
        id,
        close: None,
    };
    let (close, used) = session.run();
    *reactor = Some(used);
    left.close = Some(close);
}

/// Tells the hub that client `id` left, when dropped.
struct Leave<'a> {
    ctx: &'a Context,
    id: u64,
    close: Option<CloseInfo>,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let close = self
            .close
            .take()
            .unwrap_or_else(|| CloseInfo::abnormal("the session thread panicked"));
        leave(self.ctx, self.id, close);
    }
}

/// The server side of the WebSocket protocol over `stream`, on the heap.
///
/// Setting a session up is the deepest a connection thread's stack goes,
/// and a silent client's thread keeps every stack page it ever touched.
/// With the WebSocket built and moved by value, and the outbox's channel
/// made inside `session::pair`, it went 8 440 bytes deep: a third page,
/// 4 KiB more per idle client. Built here, in a frame that is gone before
/// the session is put together, boxed, and with the channel made by
/// `run_client` ahead of it, the deepest point is 7 152 bytes (the box
/// saved 616, the channel 520).
#[inline(never)]
fn websocket(ctx: &Context, stream: Stream, rest: Vec<u8>) -> Box<WebSocket<Wire>> {
    let cfg = &ctx.cfg;
    let ws_cfg = WebSocketConfig::default()
        .read_buffer_size(cfg.read_buffer_size)
        // Every frame goes straight into the Wire, which sends on flush.
        .write_buffer_size(0)
        .max_message_size(Some(cfg.max_message_size))
        .max_frame_size(Some(cfg.max_message_size));
    let wire = Wire::buffered(stream, Some(ctx.spares.clone()));
    Box::new(WebSocket::from_partially_read(
        wire,
        rest,
        Role::Server,
        Some(ws_cfg),
    ))
}

/// Builds the session and tells the hub who joined; `None` when that
/// failed (logged) or the hub has stopped.
#[inline(never)]
fn join(
    ctx: &Context,
    new: NewClient,
    reactor: Reactor,
    channel: (Sender<Outgoing>, Receiver<Outgoing>),
) -> Option<Box<Session<HubHandler>>> {
    let cfg = &ctx.cfg;
    let ws = websocket(ctx, new.stream, new.rest);
    let timing = Timing {
        ping_interval: cfg.ping_interval,
        idle_timeout: cfg.idle_timeout,
        close_timeout: cfg.close_timeout,
    };
    let handler = HubHandler {
        id: new.id,
        hub: ctx.hub.clone(),
        limit: cfg.rate_limit.map(RateLimit::new),
    };
    let (session, outbox) = match session::pair(ws, handler, timing, channel, reactor, true) {
        Ok(pair) => pair,
        Err(e) => {
            warn!("cannot start a session for {}: {e}", new.peer);
            return None;
        }
    };
    let addr = naming::address(&new.target, new.id);
    let info = ClientInfo {
        id: new.id,
        name: addr.name,
        room: addr.room,
        peer: new.peer,
        since: SystemTime::now(),
        protocol: new.protocol,
    };
    // Err: the hub has stopped.
    ctx.hub.send(Event::Join(Box::new((info, outbox)))).ok()?;
    Some(session)
}

/// Tells the hub a client left and how.
#[inline(never)]
fn leave(ctx: &Context, id: u64, close: CloseInfo) {
    let _ = ctx.hub.send(Event::Leave(id, close));
}

/// Hands a server session's messages to the hub, enforcing the rate limit.
struct HubHandler {
    id: u64,
    hub: Sender<Event>,
    limit: Option<RateLimit>,
}

impl Handler for HubHandler {
    fn message(&mut self, msg: Message) -> std::result::Result<(), (u16, String)> {
        if let Some(limit) = &mut self.limit {
            if !limit.allow(Instant::now()) {
                let _ = self.hub.send(Event::Dropped("rate limit"));
                let reason = format!("rate limit exceeded ({} messages/s)", limit.rate);
                return Err((1008, reason));
            }
        }
        self.hub
            .send(Event::Message(self.id, msg))
            .map_err(|_| (1001, "server shutting down".to_string()))
    }
}

/// A token bucket: `rate` messages per second, bursts of two seconds'
/// worth.
struct RateLimit {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(rate: f64) -> RateLimit {
        RateLimit {
            rate,
            tokens: Self::burst(rate),
            last: Instant::now(),
        }
    }

    fn burst(rate: f64) -> f64 {
        (rate * 2.0).max(1.0)
    }

    /// Takes one token if there is one.
    fn allow(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(Self::burst(self.rate));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut limit = RateLimit::new(10.0);
        let burst = (0..100).take_while(|_| limit.allow(start)).count();
        assert_eq!(burst, 20);
        assert!(!limit.allow(start));
        assert!(limit.allow(start + Duration::from_millis(100)));
        assert!(!limit.allow(start + Duration::from_millis(100)));
    }
}
