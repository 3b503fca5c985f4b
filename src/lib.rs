//! A small, synchronous, threaded WebSocket hub.
//!
//! wshub runs on boards with little RAM and a slow CPU: no async runtime,
//! one thread per client, one hub thread that owns all shared state. The
//! same library drives the `wshub-server` and `wshub-client` binaries.
//!
//! # The types to know
//!
//! - [`Server`]: binds, accepts and routes; [`ServerHandle`] controls it
//!   from other threads; [`ServerConfig`] holds every setting.
//! - [`Client`]: a blocking client (connect, send, receive, close).
//! - [`ReconnectingClient`]: a client that comes back after a drop and
//!   queues what is sent meanwhile.
//! - [`Error`]: the one error type.
//!
//! # Quick start
//!
//! ```
//! use std::time::Duration;
//! use wshub::{Client, Server};
//!
//! let server = Server::bind("127.0.0.1:0")?;
//! let url = format!("ws://{}", server.local_addr());
//! let alice = Client::connect(&format!("{url}/lobby/alice"))?;
//! let bob = Client::connect(&format!("{url}/lobby/bob"))?;
//! # while server.clients().len() < 2 { std::thread::sleep(Duration::from_millis(5)); }
//!
//! // A plain message goes to everyone else in the sender's room.
//! alice.send_text("hello room")?;
//! assert_eq!(bob.recv_timeout(Duration::from_secs(5)).unwrap().to_text()?, "hello room");
//!
//! // A JSON object with a "receiver" goes to the clients with that name.
//! bob.send_text(r#"{"sender":"bob","receiver":"alice","msg":"hi"}"#)?;
//! let direct = alice.recv_timeout(Duration::from_secs(5)).unwrap();
//! assert!(direct.to_text()?.contains(r#""msg":"hi""#));
//!
//! alice.close(1000, "bye");
//! server.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Threads
//!
//! ```text
//!             TcpListener  (in one epoll set, the gate)
//!                  |
//!         [acceptor thread]  accepts only while no finished session thread
//!                  |         waits in the gate; starts one thread per client
//!                  v
//!    [session thread] x N  HTTP or WebSocket handshake, then owns its socket
//!                          and its tungstenite::WebSocket; when done, waits
//!                          in the gate and accepts the next connection
//!        |        ^
//!  Event |        | frame encoded once (crossbeam channel + epoll wake-up)
//!        v        |
//!             [hub thread]  owns the client map; routes, fans out, counts;
//!                  ^        writes a lone frame to a sleeping session's socket
//!                  |        (half of many such, the [writer thread], 2+ cores)
//!                  | Command
//!    [console thread] (stdin), signal handler, library callers
//! ```
//!
//! - [`server`]: binding, [`Server`] and [`ServerHandle`].
//! - [`acceptor`]: new connections (who accepts them), connection
//!   limits, one thread each.
//! - [`connection`]: a connection's TLS and HTTP handshake, then its
//!   session as a hub client.
//! - [`session`]: the per-connection loop, full duplex
//!   without polling (why is explained there).
//! - [`wire`]: the session's ordered send buffer, and the frames the hub
//!   encodes once for all their receivers.
//! - [`hub`]: routing, offline queues, slow-consumer policy, counters.
//! - [`writer`]: the hub's second writer, for lone messages to many
//!   sleeping receivers.
//! - [`client`] and [`reconnect`]: the client side, on the same session loop.
//!
//! # Shutdown
//!
//! [`Server::shutdown`] (or [`ServerHandle::shutdown`] from any thread, as
//! the console's `/quit` and SIGTERM do) stops the acceptor, sends every
//! client a close frame with 1001 (going away), waits up to the close
//! timeout for their answers, and returns when the threads have ended.
//!
//! # Errors
//!
//! Library calls return [`Result`] with [`Error`], whose text says what was
//! being done and where. Bad input from the network is never an error of
//! the server: it is answered with an HTTP status during the handshake or
//! with the RFC 6455 close code (1002 protocol, 1007 bad UTF-8, 1008
//! policy, 1009 too big) and only that connection ends.
//!
//! # Logging
//!
//! The library logs through the `log` crate; the binaries print it with
//! timestamps to the millisecond. `error`: the server cannot go on;
//! `warn`: something was dropped or refused for lack of resources (slow
//! consumers, full offline queues, accept failures); `info`: listening,
//! joins and leaves with close codes, refused handshakes, kicks, shutdown;
//! `debug`: plain HTTP requests and connections that went away early;
//! `trace`: tungstenite's frame-level detail. The server binary writes
//! through [`log_lines::Lines`], which writes the hub's lines once per
//! round of events rather than once each.

// One exception, with its reason: `acceptor::defer_accept`, a socket
// option no safe API offers.
#![deny(unsafe_code)]
#![deny(missing_docs)]
// The module docs point readers at the private thread loops and channels;
// `cargo doc --document-private-items` renders those links.
#![allow(rustdoc::private_intra_doc_links)]

mod acceptor;
pub mod auth;
pub mod client;
pub mod close;
pub mod config;
mod connection;
pub mod console;
pub mod error;
pub mod handshake;
pub mod http;
pub mod hub;
pub mod json;
pub mod log_lines;
pub mod naming;
pub mod reconnect;
pub mod server;
mod session;
pub mod stats;
pub mod stream;
#[cfg(feature = "tls")]
pub mod tls;
pub mod web;
mod wire;
mod writer;

pub use client::{Client, RecvTimeoutError};
pub use close::CloseInfo;
pub use config::{ClientConfig, Mode, ReconnectConfig, ServerConfig};
pub use error::{Error, Result};
pub use hub::ClientInfo;
pub use reconnect::{ClientEvent, ReconnectingClient};
pub use server::{Server, ServerHandle};
pub use stats::Stats;
pub use tungstenite::Message;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
