//! How a client's request URL becomes its name and room.
//!
//! `ws://board:8000/topic=10001` is named `10001` in the default room,
//! `/lobby/alice` is `alice` in room `lobby`, `?name=X` overrides the name,
//! and a request without a path gets an anonymous name unique to the
//! connection. Pure functions; the connection's own thread calls them
//! during the handshake.

/// Where a client sits on the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The client's name (not unique: several clients may share one).
    pub name: String,
    /// The room, as the path segments before the name joined by `/`;
    /// empty for the default room.
    pub room: String,
}

/// Works out name and room from a request target such as
/// `/lobby/alice?x=1`; `id` makes the anonymous name unique.
///
/// ```
/// use wshub::naming::address;
/// let a = address("/topic=10001", 7);
/// assert_eq!((a.name.as_str(), a.room.as_str()), ("10001", ""));
/// let b = address("/lobby/alice", 7);
/// assert_eq!((b.name.as_str(), b.room.as_str()), ("alice", "lobby"));
/// assert_eq!(address("/", 7).name, "anon-7");
/// ```
pub fn address(target: &str, id: u64) -> Address {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect();
    let last = segments.pop();
    let room = segments.join("/");
    let from_path = last.map(|seg| match seg.split_once('=') {
        Some((_, value)) if !value.is_empty() => value.to_string(),
        _ => seg,
    });
    let name = query_param(query, "name")
        .filter(|n| !n.is_empty())
        .or(from_path)
        .unwrap_or_else(|| format!("anon-{id}"));
    Address { name, room }
}

/// How a room is shown in logs and lists: `/` for the default room,
/// `/lobby` otherwise.
pub fn show_room(room: &str) -> String {
    format!("/{room}")
}

/// The first value of `key` in a query string, percent-decoded.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| percent_decode(k, true) == key)
        .map(|(_, v)| percent_decode(v, true))
}

/// Decodes `%XX` escapes (and `+` as a space in a query), replacing
/// invalid UTF-8 with U+FFFD; a malformed escape stays as it is.
pub fn percent_decode(s: &str, query: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).and_then(|h| {
            let h = std::str::from_utf8(h).ok()?;
            u8::from_str_radix(h, 16)
                .ok()
                .filter(|_| h.bytes().all(|c| c.is_ascii_hexdigit()))
        });
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) if query => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(target: &str) -> (String, String) {
        let a = address(target, 42);
        (a.name, a.room)
    }

    #[test]
    fn names_from_paths() {
        assert_eq!(pair("/topic=10001"), ("10001".into(), "".into()));
        assert_eq!(pair("/alice"), ("alice".into(), "".into()));
        assert_eq!(pair("/lobby/alice/"), ("alice".into(), "lobby".into()));
        assert_eq!(pair("/a/b/topic=7"), ("7".into(), "a/b".into()));
        assert_eq!(pair("/topic="), ("topic=".into(), "".into()));
        assert_eq!(pair(""), ("anon-42".into(), "".into()));
        assert_eq!(pair("/?x=1"), ("anon-42".into(), "".into()));
    }

    #[test]
    fn query_name_overrides() {
        assert_eq!(
            pair("/lobby/alice?name=bob"),
            ("bob".into(), "lobby".into())
        );
        assert_eq!(
            pair("/?token=t&name=J%C3%BCrgen+M"),
            ("Jürgen M".into(), "".into())
        );
        assert_eq!(pair("/alice?name="), ("alice".into(), "".into()));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            pair("/r%20oom/%E4%BD%A0%E5%A5%BD"),
            ("你好".into(), "r oom".into())
        );
        assert_eq!(percent_decode("a+b%2", false), "a+b%2");
        assert_eq!(percent_decode("%ff", false), "\u{fffd}");
        assert_eq!(percent_decode("%+1", false), "%+1");
    }

    #[test]
    fn rooms_show_with_a_slash() {
        assert_eq!(show_room(""), "/");
        assert_eq!(show_room("lobby"), "/lobby");
    }
}
