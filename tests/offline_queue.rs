//! Offline queues: a directed message for a name nobody has is kept and
//! delivered, in order and before anything newer, when a client with that
//! name connects; a full queue drops its oldest message and counts it
//! under "offline queue overflow".

mod common;

use common::{assert_nothing_before_marker, join, recv_text, server, wait_for};
use wshub::{Message, ServerConfig};

/// A directed JSON message for `receiver` carrying `msg`.
fn directed(receiver: &str, msg: &str) -> String {
    format!(r#"{{"sender":"s","receiver":"{receiver}","msg":"{msg}"}}"#)
}

#[test]
fn messages_for_an_absent_name_are_delivered_in_order_on_join() {
    let server = server(ServerConfig::default());
    let sender = join(&server, "s");
    for i in 0..5 {
        sender.send_text(directed("late", &i.to_string())).unwrap();
    }
    wait_for(|| server.stats().messages_in == 5, "the hub to take all 5");
    assert_eq!(server.stats().messages_out, 0, "nobody to deliver to yet");

    let late = join(&server, "lobby/topic=late");
    // Something sent after the join comes after what was queued.
    sender.send_text(directed("late", "live")).unwrap();
    for i in 0..5 {
        assert_eq!(recv_text(&late), directed("late", &i.to_string()));
    }
    assert_eq!(recv_text(&late), directed("late", "live"));
    assert_nothing_before_marker(&server, &[&late, &sender]);
    assert_eq!(server.stats().dropped_total(), 0);
}

#[test]
fn a_queue_is_delivered_once_to_the_first_client_with_the_name() {
    let server = server(ServerConfig::default());
    let sender = join(&server, "s");
    sender.send_text(directed("late", "kept")).unwrap();
    wait_for(|| server.stats().messages_in == 1, "the hub to take it");

    let first = join(&server, "late");
    assert_eq!(recv_text(&first), directed("late", "kept"));
    let second = join(&server, "late");
    assert_nothing_before_marker(&server, &[&first, &second]);
}

#[test]
fn overflow_drops_the_oldest_and_counts_it() {
    let server = server(ServerConfig::default().offline_queue(3));
    let sender = join(&server, "s");
    for i in 0..5 {
        sender.send_text(directed("late", &i.to_string())).unwrap();
    }
    wait_for(|| server.stats().messages_in == 5, "the hub to take all 5");
    let dropped = server.stats().dropped;
    assert_eq!(
        dropped.get("offline queue overflow"),
        Some(&2),
        "{dropped:?}"
    );

    let late = join(&server, "late");
    for i in 2..5 {
        assert_eq!(recv_text(&late), directed("late", &i.to_string()));
    }
    assert_nothing_before_marker(&server, &[&late]);
    assert_eq!(server.stats().dropped_total(), 2);
}

#[test]
fn queues_are_per_name() {
    let server = server(ServerConfig::default().offline_queue(2));
    let sender = join(&server, "s");
    for (who, what) in [("a", "a1"), ("b", "b1"), ("a", "a2"), ("b", "b2")] {
        sender.send_text(directed(who, what)).unwrap();
    }
    sender.send_binary(b"not directed".to_vec()).unwrap();
    wait_for(|| server.stats().messages_in == 5, "the hub to take all 5");
    assert_eq!(server.stats().dropped_total(), 0, "two per name fit");

    let b = join(&server, "b");
    assert_eq!(recv_text(&b), directed("b", "b1"));
    assert_eq!(recv_text(&b), directed("b", "b2"));
    let a = join(&server, "a");
    assert_eq!(recv_text(&a), directed("a", "a1"));
    assert_eq!(recv_text(&a), directed("a", "a2"));
    // A broadcast is never queued for later.
    server.broadcast(Message::text("now"));
    assert_eq!(recv_text(&a), "now");
    assert_eq!(recv_text(&b), "now");
}
