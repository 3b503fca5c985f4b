//! Who may connect: the shared token and the allowed browser origins.
//! Pure functions, called on the connection's own thread.

use crate::http::Request;
use crate::naming::query_param;

/// `true` when no token is required, or the request carries it as
/// `Authorization: Bearer TOKEN` or as `?token=TOKEN`. The comparison takes
/// the same time wherever the first wrong byte is.
pub fn authorized(req: &Request, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let bearer = req
        .header("authorization")
        .and_then(|v| v.trim().strip_prefix("Bearer "))
        .map(str::trim);
    if bearer.is_some_and(|b| same_secret(b.as_bytes(), token.as_bytes())) {
        return true;
    }
    let query = req.target.split_once('?').map_or("", |(_, q)| q);
    query_param(query, "token").is_some_and(|t| same_secret(t.as_bytes(), token.as_bytes()))
}

/// Compares two secrets in time that depends only on their lengths.
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for i in 0..given.len().max(expected.len()) {
        let a = given.get(i).copied().unwrap_or(0);
        let b = expected.get(i).copied().unwrap_or(0);
        diff |= usize::from(a ^ b);
    }
    diff == 0
}

/// `true` when `allowed` is empty, the request has no `Origin` (not a
/// browser), or its origin is listed (case-insensitive, trailing `/`
/// ignored).
pub fn origin_allowed(req: &Request, allowed: &[String]) -> bool {
    let Some(origin) = req.header("origin") else {
        return true;
    };
    let norm = |s: &str| s.trim().trim_end_matches('/').to_ascii_lowercase();
    allowed.is_empty() || allowed.iter().any(|a| norm(a) == norm(origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            target: target.into(),
            version: 1,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn token_by_header_or_query() {
        let t = Some("s3cret");
        assert!(authorized(&req("/a", &[]), None));
        assert!(authorized(
            &req("/a", &[("Authorization", "Bearer s3cret")]),
            t
        ));
        assert!(authorized(&req("/a?x=1&token=s3cret", &[]), t));
        assert!(!authorized(&req("/a", &[]), t));
        assert!(!authorized(&req("/a?token=s3cre", &[]), t));
        assert!(!authorized(
            &req("/a", &[("Authorization", "Basic s3cret")]),
            t
        ));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }

    #[test]
    fn origins() {
        let allowed = vec!["http://board:8000".to_string()];
        assert!(origin_allowed(&req("/", &[]), &allowed));
        assert!(origin_allowed(
            &req("/", &[("Origin", "HTTP://board:8000/")]),
            &allowed
        ));
        assert!(!origin_allowed(
            &req("/", &[("Origin", "http://evil.example")]),
            &allowed
        ));
        assert!(origin_allowed(&req("/", &[("Origin", "http://x")]), &[]));
    }
}
