//! Routing through the library on real sockets: how a URL names a client
//! and picks its room, where broadcasts and directed JSON messages go,
//! that payloads arrive unchanged and in per-sender order, echo mode, and
//! the server-side API (`broadcast`, `send_to`, `kick`) that needs no
//! console.

mod common;

use std::io::Write;
use std::thread;

use common::{assert_nothing_before_marker, join, recv_text, server, wait_for, WAIT};
use wshub::{Client, Message, Mode, RecvTimeoutError, ServerConfig};

/// (name, room) of every online client, in join order.
fn names(server: &wshub::Server) -> Vec<(String, String)> {
    server
        .clients()
        .into_iter()
        .map(|c| (c.name, c.room))
        .collect()
}

#[test]
fn names_and_rooms_come_from_the_url() {
    let server = server(ServerConfig::default());
    let _alice = join(&server, "alice");
    let _topic = join(&server, "topic=10001");
    let _bob = join(&server, "lobby/bob");
    let _over = join(&server, "lobby/alice?name=carol");
    let _encoded = join(&server, "r%20oom/%E4%BD%A0%E5%A5%BD");
    let pairs = names(&server);
    let expected = [
        ("alice", ""),
        ("10001", ""),
        ("bob", "lobby"),
        ("carol", "lobby"),
        ("你好", "r oom"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(n, r)| (n.to_string(), r.to_string()))
        .collect();
    assert_eq!(pairs, expected);
}

#[test]
fn no_path_gives_each_connection_its_own_anonymous_name() {
    let server = server(ServerConfig::default());
    let _a = join(&server, "");
    let _b = join(&server, "");
    let clients = server.clients();
    assert_eq!(clients.len(), 2);
    for c in &clients {
        assert!(!c.name.is_empty(), "an anonymous client needs a name");
        assert_eq!(c.room, "", "no path means the default room");
    }
    assert_ne!(clients[0].name, clients[1].name, "anonymous names collide");
}

#[test]
fn a_broadcast_stays_in_the_senders_room_and_skips_the_sender() {
    let server = server(ServerConfig::default());
    let a = join(&server, "lobby/a");
    let b = join(&server, "lobby/b");
    let c = join(&server, "lobby/c");
    let outsider = join(&server, "kitchen/d");
    let default_room = join(&server, "e");

    a.send_text("hello lobby").unwrap();
    assert_eq!(recv_text(&b), "hello lobby");
    assert_eq!(recv_text(&c), "hello lobby");
    // The hub has routed it: the sender and the other rooms got nothing.
    assert_nothing_before_marker(&server, &[&a, &outsider, &default_room]);
}

#[test]
fn a_directed_message_crosses_rooms() {
    let server = server(ServerConfig::default());
    let a = join(&server, "lobby/a");
    let b = join(&server, "lobby/b");
    let d = join(&server, "kitchen/d");

    let payload = r#"{"sender":"d","receiver":"a","msg":"across"}"#;
    d.send_text(payload).unwrap();
    assert_eq!(recv_text(&a), payload);
    assert_nothing_before_marker(&server, &[&b, &d]);
}

#[test]
fn text_and_binary_payloads_arrive_unchanged() {
    let server = server(ServerConfig::default());
    let sender = join(&server, "s");
    let receiver = join(&server, "r");

    let text = "plain ascii, 你好, emoji 🦀, tab\t and newline\n end";
    let binary: Vec<u8> = (0..=255u8).chain([0xff, 0xfe, 0x00]).collect();
    let big_binary: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    sender.send_text(text).unwrap();
    sender.send_binary(binary.clone()).unwrap();
    sender.send_binary(Vec::new()).unwrap();
    sender.send_binary(big_binary.clone()).unwrap();
    sender.send_text("").unwrap();

    let next = || receiver.recv_timeout(WAIT).expect("a message");
    assert_eq!(next(), Message::text(text));
    assert_eq!(next(), Message::binary(binary));
    assert_eq!(next(), Message::binary(Vec::new()));
    assert_eq!(next(), Message::binary(big_binary));
    assert_eq!(next(), Message::text(""));
}

#[test]
fn directed_json_reaches_only_the_clients_with_that_name() {
    let server = server(ServerConfig::default());
    let first = join(&server, "topic=10001");
    let second = join(&server, "topic=10001");
    let sender = join(&server, "topic=10002");
    let other = join(&server, "topic=10003");

    let payload = r#"{"sender":"10002","receiver":"10001","msg":"你好"}"#;
    sender.send_text(payload).unwrap();
    assert_eq!(recv_text(&first), payload, "sent unchanged");
    assert_eq!(recv_text(&second), payload, "every client with the name");
    assert_nothing_before_marker(&server, &[&other, &sender]);
}

#[test]
fn json_without_a_receiver_is_a_broadcast() {
    let server = server(ServerConfig::default());
    let sender = join(&server, "topic=10002");
    let other = join(&server, "topic=10003");

    let payload = r#"{"sender":"10002","msg":"to all"}"#;
    sender.send_text(payload).unwrap();
    assert_eq!(recv_text(&other), payload);
    // A receiver that is not a string, or binary JSON, is no direction either.
    let numeric = r#"{"receiver":10003,"msg":"n"}"#;
    sender.send_text(numeric).unwrap();
    assert_eq!(recv_text(&other), numeric);
    let bin = br#"{"receiver":"nobody"}"#.to_vec();
    sender.send_binary(bin.clone()).unwrap();
    assert_eq!(other.recv_timeout(WAIT).unwrap(), Message::binary(bin));
}

#[test]
fn order_is_kept_per_sender_for_every_receiver() {
    const N: usize = 2000;
    let server = server(ServerConfig::default());
    let sender = join(&server, "room/sender");
    let receivers: Vec<Client> = (0..3)
        .map(|i| join(&server, &format!("room/r{i}")))
        .collect();

    thread::scope(|s| {
        let readers: Vec<_> = receivers
            .iter()
            .map(|r| s.spawn(move || receive_numbers(r, N)))
            .collect();
        for i in 0..N {
            sender.send_text(i.to_string()).unwrap();
        }
        let want: Vec<usize> = (0..N).collect();
        for reader in readers {
            assert_eq!(reader.join().unwrap(), want, "lost or reordered");
        }
    });
    assert_nothing_before_marker(&server, &receivers.iter().collect::<Vec<_>>());
}

/// Reads `n` numbered text messages; on an early end, fails saying how
/// many arrived and how the connection ended.
fn receive_numbers(client: &Client, n: usize) -> Vec<usize> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match client.recv_timeout(WAIT) {
            Ok(msg) => got.push(msg.to_text().unwrap().parse().expect("a number")),
            Err(e) => panic!(
                "a receiver that reads all the time got {} of {n} messages, then {e:?}: {:?}",
                got.len(),
                client.close_info()
            ),
        }
    }
    got
}

#[test]
fn echo_mode_answers_only_the_sender() {
    let server = server(ServerConfig::default().mode(Mode::Echo));
    let a = join(&server, "room/a");
    let b = join(&server, "room/b");

    a.send_text("hello me").unwrap();
    assert_eq!(recv_text(&a), "hello me");
    // Directed JSON is echoed too, not routed.
    let directed = r#"{"receiver":"b","msg":"x"}"#;
    a.send_text(directed).unwrap();
    assert_eq!(recv_text(&a), directed);
    b.send_binary(vec![1, 2, 3]).unwrap();
    assert_eq!(
        b.recv_timeout(WAIT).unwrap(),
        Message::binary(vec![1, 2, 3])
    );
    assert_nothing_before_marker(&server, &[&a, &b]);
}

#[test]
fn server_broadcast_reaches_every_room() {
    let server = server(ServerConfig::default());
    let a = join(&server, "lobby/a");
    let b = join(&server, "kitchen/b");
    let c = join(&server, "c");

    server.broadcast(Message::text("from the server"));
    for client in [&a, &b, &c] {
        assert_eq!(recv_text(client), "from the server");
    }
    server.broadcast(Message::binary(vec![0xde, 0xad]));
    for client in [&a, &b, &c] {
        let got = client.recv_timeout(WAIT).unwrap();
        assert_eq!(got, Message::binary(vec![0xde, 0xad]));
    }
}

#[test]
fn send_to_reaches_the_named_clients_and_counts_them() {
    let server = server(ServerConfig::default());
    let bob1 = join(&server, "lobby/bob");
    let bob2 = join(&server, "kitchen/bob");
    let alice = join(&server, "lobby/alice");

    assert_eq!(server.send_to("bob", Message::text("for bob")), 2);
    assert_eq!(recv_text(&bob1), "for bob");
    assert_eq!(recv_text(&bob2), "for bob");
    assert_eq!(server.send_to("nobody", Message::text("lost")), 0);
    assert_eq!(server.handle().send_to("alice", Message::text("hi")), 1);
    assert_eq!(recv_text(&alice), "hi");
    assert_nothing_before_marker(&server, &[&bob1, &bob2, &alice]);
}

#[test]
fn kick_closes_with_1008_and_the_reason() {
    let server = server(ServerConfig::default());
    let handle = server.handle();
    let troll = join(&server, "lobby/troll");
    let troll2 = join(&server, "kitchen/troll");
    let stays = join(&server, "lobby/stays");

    assert_eq!(handle.kick("troll", "be nice"), 2);
    for kicked in [&troll, &troll2] {
        assert_eq!(kicked.recv_timeout(WAIT), Err(RecvTimeoutError::Closed));
        let info = kicked.close_info().expect("close info after the end");
        assert_eq!(info.code, 1008);
        assert_eq!(info.reason, "be nice");
        assert!(info.by_peer, "the server closed it");
    }
    assert!(
        troll.send_text("after kick").is_err(),
        "its session has ended"
    );
    wait_for(
        || server.clients().iter().all(|c| c.name != "troll"),
        "the kicked clients to leave",
    );
    assert_eq!(handle.kick("troll", "again"), 0);
    // The others are unaffected.
    server.broadcast(Message::text("still here"));
    assert_eq!(recv_text(&stays), "still here");
    assert_eq!(names(&server), vec![("stays".into(), "lobby".into())]);
}

#[test]
fn a_connection_thread_serves_one_client_after_another() {
    // A finished connection thread takes the next connection with the
    // epoll set and waker of the previous one (and a waker the hub may
    // still trigger for the client before); both directions must work for
    // every later client.
    let server = server(ServerConfig::default());
    let hub_side = join(&server, "lobby/watcher");
    for i in 0..20 {
        let client = join(&server, &format!("lobby/c{i}"));
        client.send_text(format!("from c{i}")).unwrap();
        assert_eq!(recv_text(&hub_side), format!("from c{i}"));
        hub_side.send_text(format!("to c{i}")).unwrap();
        assert_eq!(recv_text(&client), format!("to c{i}"));
        let info = client.close(1000, "done");
        assert_eq!(info.code, 1000);
        wait_for(
            || !names(&server).iter().any(|(n, _)| n == &format!("c{i}")),
            "the hub to see the leave",
        );
    }
}

#[test]
fn frames_stay_whole_and_in_order_when_the_hub_writes_to_a_sleeping_receiver() {
    // Messages that come one at a time are written to a sleeping
    // receiver's socket by the hub; bursts and the receiver's own pongs go
    // through its session. A raw receiver that pings between messages
    // must still read whole frames, every message once and in order, and
    // a pong for every ping.
    let server = server(ServerConfig::default());
    let mut raw = common::raw_ws(server.local_addr(), "lobby/raw");
    let sender = join(&server, "lobby/sender");
    wait_for(|| names(&server).len() == 2, "both clients online");
    let mut next = 0u32;
    let mut pongs = 0;
    for round in 0..40u32 {
        // Alternate lone messages (the hub writes them) and bursts (the
        // session does), with a ping in the middle of each round.
        let burst = if round % 2 == 0 { 1 } else { 50 };
        for _ in 0..burst {
            sender.send_text(format!("m{next:06}")).unwrap();
            next += 1;
        }
        raw.write_all(&common::frame(true, 9, format!("p{round}").as_bytes()))
            .unwrap();
        let mut got_pong = false;
        let mut expected = next - burst;
        while expected < next || !got_pong {
            let (op, payload) = common::read_frame(&mut raw).expect("a whole frame");
            match op {
                1 => {
                    assert_eq!(payload, format!("m{expected:06}").as_bytes());
                    expected += 1;
                }
                10 => {
                    assert_eq!(payload, format!("p{round}").as_bytes());
                    got_pong = true;
                    pongs += 1;
                }
                other => panic!("unexpected opcode {other}"),
            }
        }
    }
    assert_eq!(pongs, 40);
    let stats = server.stats();
    assert!(
        stats.written_by_hub > 0 && stats.written_by_hub < stats.messages_out,
        "both ways of sending should have been used: {} of {} written by the hub",
        stats.written_by_hub,
        stats.messages_out
    );
}

#[test]
fn many_sleeping_receivers_get_lone_messages_whole_and_in_order() {
    // A lone message to many sleeping receivers is written by the hub and,
    // on two or more cores, half of them by its second writer thread. Every
    // receiver must read whole frames, each message once and in order,
    // through lone messages and bursts alike.
    let server = server(ServerConfig::default());
    let mut raws: Vec<_> = (0..40)
        .map(|i| common::raw_ws(server.local_addr(), &format!("lobby/r{i}")))
        .collect();
    let sender = join(&server, "lobby/sender");
    wait_for(|| names(&server).len() == 41, "every client online");
    let mut next = 0u32;
    // Sixty rounds of lone messages: the writer thread takes part in some
    // of them even on a loaded machine (the hub writes what it has not
    // started).
    for round in 0..90u32 {
        let burst = if round % 3 == 2 { 20 } else { 1 };
        for _ in 0..burst {
            sender.send_text(format!("m{next:06}")).unwrap();
            next += 1;
        }
        // Everyone reads the round before the next, so the receivers'
        // sessions are asleep again when the next lone message comes.
        for raw in &mut raws {
            for expected in next - burst..next {
                let (op, payload) = common::read_frame(raw).expect("a whole frame");
                assert_eq!(op, 1);
                assert_eq!(payload, format!("m{expected:06}").as_bytes());
            }
        }
    }
    let stats = server.stats();
    assert_eq!(stats.messages_out, 40 * u64::from(next));
    assert_eq!(stats.dropped_total(), 0);
    assert!(
        stats.written_by_hub > 0,
        "lone messages are written by the hub"
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores >= 2 {
        assert!(
            stats.written_by_writer > 0 && stats.written_by_writer < stats.written_by_hub,
            "the second writer takes part of them: {} of {}",
            stats.written_by_writer,
            stats.written_by_hub
        );
    } else {
        assert_eq!(stats.written_by_writer, 0, "one core: the hub writes alone");
    }
}
