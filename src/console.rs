//! The server's console: lines from standard input turned into commands.
//!
//! [`run_console`] runs on the console thread the server binary starts. It
//! owns nothing but its input and output; every command goes to the hub
//! through a [`ServerHandle`]. End of input ends the console, not the
//! server (it often runs with no terminal at all).

use std::io::{BufRead, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use tungstenite::Message;

use crate::naming::show_room;
use crate::server::ServerHandle;

/// The `/help` text.
pub const HELP: &str = "\
console commands:
  TEXT                 send TEXT to every client (//TEXT sends /TEXT)
  /list                online clients: name, room, address, connected since
  /to NAME TEXT        send TEXT to the clients named NAME
  /kick NAME [REASON]  close the clients named NAME with 1008 and REASON
  /stats               counters: connections, messages, bytes, drops
  /quit                close every client with 1001 and stop
  /help                this text";

/// Reads commands from `input` until it ends or `/quit`; writes answers to
/// `out`. Returns `true` when the input asked to quit.
pub fn run_console(input: impl BufRead, mut out: impl Write, server: &ServerHandle) -> bool {
    for line in input.lines() {
        let Ok(line) = line else { break };
        let quit = execute(line.trim_end_matches('\r'), &mut out, server);
        let _ = out.flush();
        if quit {
            return true;
        }
    }
    false
}

/// Runs one console line; returns `true` for `/quit`.
pub fn execute(line: &str, out: &mut impl Write, server: &ServerHandle) -> bool {
    if line.is_empty() {
        return false;
    }
    if let Some(text) = line.strip_prefix("//") {
        server.broadcast(Message::text(format!("/{text}")));
        return false;
    }
    let Some(command) = line.strip_prefix('/') else {
        server.broadcast(Message::text(line));
        return false;
    };
    let (verb, args) = command.split_once(' ').unwrap_or((command, ""));
    let args = args.trim();
    let _ = match verb {
        "list" => list(out, server),
        "to" => match args.split_once(' ') {
            Some((name, text)) => {
                let n = server.send_to(name, Message::text(text));
                match n {
                    0 => writeln!(out, "no client named {name} is online"),
                    _ => writeln!(out, "sent to {n} client(s) named {name}"),
                }
            }
            None => writeln!(out, "usage: /to NAME TEXT"),
        },
        "kick" if !args.is_empty() => {
            let (name, reason) = args.split_once(' ').unwrap_or((args, "kicked"));
            let n = server.kick(name, reason.trim());
            writeln!(out, "kicked {n} client(s) named {name}")
        }
        "kick" => writeln!(out, "usage: /kick NAME [REASON]"),
        "stats" => writeln!(out, "{}", server.stats()),
        "quit" => {
            let _ = writeln!(out, "shutting down");
            server.shutdown();
            return true;
        }
        "help" => writeln!(out, "{HELP}"),
        _ => writeln!(out, "unknown command /{verb}; /help lists them"),
    };
    false
}

fn list(out: &mut impl Write, server: &ServerHandle) -> std::io::Result<()> {
    let clients = server.clients();
    writeln!(out, "{} online", clients.len())?;
    for c in clients {
        writeln!(
            out,
            "  {}  room {}  {}  since {}",
            c.name,
            show_room(&c.room),
            c.peer,
            utc_timestamp(c.since)
        )?;
    }
    Ok(())
}

/// `2026-11-22 03:04:05.678Z`: a wall-clock time in UTC, to the millisecond.
pub fn utc_timestamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's
/// `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_in_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_230_245_678);
        assert_eq!(utc_timestamp(t), "2026-11-21 03:04:05.678Z");
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01 00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert!(utc_timestamp(leap).starts_with("2000-02-29 "));
    }
}
