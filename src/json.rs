//! The little JSON the hub needs: finding the `receiver` of a directed
//! message, and writing JSON strings.
//!
//! A full JSON library would parse every message into a tree; the hub only
//! needs to know whether a text message is a JSON object with a top-level
//! string field `receiver`, and what that string says. This checker walks
//! the text once, validates all of it (so `{"receiver":"a"` with no closing
//! brace is not directed), allocates only for the receiver's name, and
//! limits nesting so a hostile message cannot exhaust the hub's stack.
//! Pure functions; any thread may call them.

/// Deepest nesting of arrays and objects accepted.
const MAX_DEPTH: usize = 64;

/// Returns the top-level string field `receiver` when `text` is a complete
/// JSON object that has one; `None` for anything else.
///
/// ```
/// use wshub::json::receiver;
/// assert_eq!(receiver(r#"{"sender":"1","receiver":"10001","msg":"hi"}"#).as_deref(), Some("10001"));
/// assert_eq!(receiver(r#"{"receiver": 5}"#), None);
/// assert_eq!(receiver("hello"), None);
/// ```
pub fn receiver(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    // Fast exit for the common case of a plain chat line.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    let mut p = Parser { b: bytes, i: 0 };
    p.ws();
    let found = p.object(0, true).ok()?;
    p.ws();
    if p.i != bytes.len() {
        return None;
    }
    found
}

/// Writes `s` as a JSON string literal (with quotes) onto `out`.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A byte cursor over JSON text. Every method returns `Err(())` on the
/// first byte that is not valid JSON.
struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

type Res<T> = Result<T, ()>;

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Res<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(())
        }
    }

    fn value(&mut self, depth: usize) -> Res<()> {
        match self.peek().ok_or(())? {
            b'{' => self.object(depth + 1, false).map(drop),
            b'[' => self.array(depth + 1),
            b'"' => self.string(false).map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(()),
        }
    }

    /// Parses an object; when `top`, returns its `receiver` string field.
    fn object(&mut self, depth: usize, top: bool) -> Res<Option<String>> {
        if depth > MAX_DEPTH {
            return Err(());
        }
        self.eat(b'{')?;
        self.ws();
        let mut found = None;
        if self.eat(b'}').is_ok() {
            return Ok(None);
        }
        loop {
            self.ws();
            let key = self.string(true)?.ok_or(())?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            if top && key == "receiver" {
                found = if self.peek() == Some(b'"') {
                    self.string(true)?
                } else {
                    self.value(depth)?;
                    None
                };
            } else {
                self.value(depth)?;
            }
            self.ws();
            if self.eat(b'}').is_ok() {
                return Ok(found);
            }
            self.eat(b',')?;
        }
    }

    fn array(&mut self, depth: usize) -> Res<()> {
        if depth > MAX_DEPTH {
            return Err(());
        }
        self.eat(b'[')?;
        self.ws();
        if self.eat(b']').is_ok() {
            return Ok(());
        }
        loop {
            self.ws();
            self.value(depth)?;
            self.ws();
            if self.eat(b']').is_ok() {
                return Ok(());
            }
            self.eat(b',')?;
        }
    }

    fn literal(&mut self, word: &[u8]) -> Res<()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(())
        }
    }

    fn digits(&mut self) -> Res<()> {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        if self.i == start {
            Err(())
        } else {
            Ok(())
        }
    }

    fn number(&mut self) -> Res<()> {
        let _ = self.eat(b'-');
        if self.eat(b'0').is_err() {
            self.digits()?;
        }
        if self.eat(b'.').is_ok() {
            self.digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.digits()?;
        }
        Ok(())
    }

    /// Parses a string; decodes it only when `keep`.
    fn string(&mut self, keep: bool) -> Res<Option<String>> {
        self.eat(b'"')?;
        let mut out = keep.then(String::new);
        loop {
            let start = self.i;
            while !matches!(self.peek(), None | Some(b'"' | b'\\' | 0..=0x1f)) {
                self.i += 1;
            }
            if let Some(out) = out.as_mut() {
                // The input is a &str and we stopped at ASCII bytes, so this
                // slice is valid UTF-8.
                out.push_str(std::str::from_utf8(&self.b[start..self.i]).map_err(drop)?);
            }
            match self.peek().ok_or(())? {
                b'"' => {
                    self.i += 1;
                    return Ok(out);
                }
                b'\\' => {
                    self.i += 1;
                    let c = self.escape()?;
                    if let Some(out) = out.as_mut() {
                        out.push(c);
                    }
                }
                _ => return Err(()), // raw control character
            }
        }
    }

    fn escape(&mut self) -> Res<char> {
        let c = self.peek().ok_or(())?;
        self.i += 1;
        Ok(match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => return self.unicode_escape(),
            _ => return Err(()),
        })
    }

    fn hex4(&mut self) -> Res<u32> {
        let s = self.b.get(self.i..self.i + 4).ok_or(())?;
        let s = std::str::from_utf8(s).map_err(drop)?;
        let v = u32::from_str_radix(s, 16).map_err(drop)?;
        if s.starts_with('+') {
            return Err(());
        }
        self.i += 4;
        Ok(v)
    }

    /// `\uXXXX`, joining a surrogate pair; a lone surrogate is invalid.
    fn unicode_escape(&mut self) -> Res<char> {
        let hi = self.hex4()?;
        if (0xDC00..0xE000).contains(&hi) {
            return Err(());
        }
        if !(0xD800..0xDC00).contains(&hi) {
            return char::from_u32(hi).ok_or(());
        }
        self.eat(b'\\')?;
        self.eat(b'u')?;
        let lo = self.hex4()?;
        if !(0xDC00..0xE000).contains(&lo) {
            return Err(());
        }
        char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)).ok_or(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_receiver() {
        let msg = r#"{"sender":"10002","receiver":"10001","msg":"你好"}"#;
        assert_eq!(receiver(msg).as_deref(), Some("10001"));
        assert_eq!(
            receiver(r#"  { "receiver" : "a\"b\u0041" }  "#).as_deref(),
            Some("a\"bA")
        );
        assert_eq!(
            receiver(r#"{"receiver":"\ud83d\ude00"}"#).as_deref(),
            Some("😀")
        );
    }

    #[test]
    fn nested_receivers_do_not_count() {
        assert_eq!(receiver(r#"{"x":{"receiver":"a"}}"#), None);
        assert_eq!(receiver(r#"[{"receiver":"a"}]"#), None);
    }

    #[test]
    fn invalid_json_is_not_directed() {
        for bad in [
            r#"{"receiver":"a""#,
            r#"{"receiver":"a"} x"#,
            r#"{"receiver":"a",}"#,
            r#"{"receiver":'a'}"#,
            r#"{"receiver":"a","n":01}"#,
            r#"{"receiver":"\ud800"}"#,
            "{\"receiver\":\"a\tb\"}",
            r#"{"receiver":null}"#,
            "",
        ] {
            assert_eq!(receiver(bad), None, "{bad}");
        }
    }

    #[test]
    fn other_values_are_validated() {
        let ok = r#"{"a":[1,-2.5e+3,true,false,null,{"b":[]}],"receiver":"r"}"#;
        assert_eq!(receiver(ok).as_deref(), Some("r"));
        assert_eq!(receiver(r#"{"a":[1,],"receiver":"r"}"#), None);
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(receiver(&deep), None);
    }

    #[test]
    fn write_str_escapes() {
        let mut out = String::new();
        write_str(&mut out, "a\"b\\c\n\u{1}");
        assert_eq!(out, r#""a\"b\\c\n\u0001""#);
    }
}
