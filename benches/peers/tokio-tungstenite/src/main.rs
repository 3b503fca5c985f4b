//! A relay on tokio-tungstenite with wshub's routing, for side-by-side load
//! runs: the chat server of tokio-tungstenite's examples (a task per client,
//! an unbounded channel feeding each client's sink) with rooms, directed
//! messages and a 4 KiB read buffer instead of tungstenite's 128 KiB.
//!
//! `ws://127.0.0.1:PORT/ROOM/NAME` joins ROOM as NAME (one segment: the
//! default room; a last segment `key=value` names the client `value`). A
//! plain message goes to every other client in the sender's room, type and
//! payload unchanged; a text message that is a JSON object with a string
//! "receiver" goes to the clients with that name. No offline queue, no
//! limits beyond tungstenite's own.
//!
//! usage: tokio-tungstenite-relay [PORT]   (PORT 0, the default, picks a
//! free one; or $PORT)
//! prints: listening on ws://127.0.0.1:PORT

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{future, stream, StreamExt, TryStreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

type Tx = UnboundedSender<Message>;
/// Key (room or name) -> client id -> that client's outgoing channel.
type Index = HashMap<String, HashMap<u64, Tx>>;

#[derive(Default)]
struct State {
    rooms: Index,
    names: Index,
}

type Shared = Arc<Mutex<State>>;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::args().nth(1).or_else(|| std::env::var("PORT").ok()) {
        Some(p) => p.parse().map_err(|_| format!("bad port {p:?}"))?,
        None => 0,
    };
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on ws://{}", listener.local_addr()?);
    let state = Shared::default();
    loop {
        let (tcp, _) = listener.accept().await?;
        tokio::spawn(handle(tcp, state.clone()));
    }
}

async fn handle(tcp: TcpStream, state: Shared) {
    // As Node's ws and Python's asyncio do by default: no Nagle delay.
    let _ = tcp.set_nodelay(true);
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let mut path = String::new();
    let remember_path = |req: &Request, resp: Response| {
        path = req.uri().path().to_owned();
        Ok(resp)
    };
    let ws = match tokio_tungstenite::accept_hdr_async_with_config(tcp, remember_path, Some(config))
        .await
    {
        Ok(ws) => ws,
        Err(_) => return,
    };
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let (room, name) = address(&path, id);
    let (tx, mut rx) = unbounded_channel();
    {
        let mut s = state.lock().unwrap();
        s.rooms.entry(room.clone()).or_default().insert(id, tx.clone());
        s.names.entry(name.clone()).or_default().insert(id, tx);
    }

    let (outgoing, incoming) = ws.split();
    let relay_incoming = incoming.try_for_each(|msg| {
        let receiver = match &msg {
            Message::Text(text) => receiver_of(text),
            Message::Binary(_) => None,
            // Ping, pong, close: tungstenite answers them itself.
            _ => return future::ok(()),
        };
        let s = state.lock().unwrap();
        let targets = match &receiver {
            Some(receiver) => s.names.get(receiver),
            None => s.rooms.get(&room),
        };
        for (peer, tx) in targets.into_iter().flatten() {
            if *peer != id {
                let _ = tx.send(msg.clone());
            }
        }
        future::ok(())
    });
    // Feeds the sink while messages are queued, flushes when none are.
    let from_others = stream::poll_fn(|cx| rx.poll_recv(cx)).map(Ok).forward(outgoing);
    futures_util::pin_mut!(relay_incoming, from_others);
    future::select(relay_incoming, from_others).await;

    let mut guard = state.lock().unwrap();
    let s = &mut *guard;
    for (index, key) in [(&mut s.rooms, &room), (&mut s.names, &name)] {
        if let Some(set) = index.get_mut(key) {
            set.remove(&id);
            if set.is_empty() {
                index.remove(key);
            }
        }
    }
}

/// The room (segments before the last, joined by `/`) and the name (the
/// last segment, or what follows its `=`) of a request path.
fn address(path: &str, id: u64) -> (String, String) {
    let mut segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let name = match segments.pop() {
        Some(last) => match last.split_once('=') {
            Some((_, value)) if !value.is_empty() => value.to_owned(),
            _ => last,
        },
        None => format!("anon-{id}"),
    };
    (segments.join("/"), name)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).and_then(|h| {
            let h = std::str::from_utf8(h).ok()?;
            u8::from_str_radix(h, 16).ok().filter(|_| h.bytes().all(|c| c.is_ascii_hexdigit()))
        });
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The "receiver" of a directed JSON text message, or `None`.
fn receiver_of(text: &str) -> Option<String> {
    if !text.starts_with('{') {
        return None;
    }
    match serde_json::from_str::<serde_json::Value>(text).ok()? {
        serde_json::Value::Object(mut obj) => match obj.remove("receiver")? {
            serde_json::Value::String(r) => Some(r),
            _ => None,
        },
        _ => None,
    }
}
