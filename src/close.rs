//! How a connection ended: [`CloseInfo`] and the close-code names used in
//! logs and status lines.

use std::fmt;

/// Why and how a WebSocket connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// The close code (RFC 6455 §7.4). 1005 means a close frame without a
    /// code, 1006 means no close frame at all (connection dropped).
    pub code: u16,
    /// The reason text from the close frame, or what went wrong locally.
    pub reason: String,
    /// `true` when the peer sent the first close frame or dropped the
    /// connection; `false` when this side closed it.
    pub by_peer: bool,
}

impl CloseInfo {
    /// A connection that ended without a close frame.
    pub(crate) fn abnormal(reason: impl Into<String>) -> Self {
        CloseInfo {
            code: 1006,
            reason: reason.into(),
            by_peer: true,
        }
    }

    /// `true` for the codes that mean "done on purpose" (1000, 1001).
    pub fn is_normal(&self) -> bool {
        matches!(self.code, 1000 | 1001)
    }
}

impl fmt::Display for CloseInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, code_name(self.code))?;
        if !self.reason.is_empty() {
            write!(f, ": {}", self.reason)?;
        }
        Ok(())
    }
}

/// A short name for a close code, as used in status lines
/// (`disconnected (1000 normal)`).
pub fn code_name(code: u16) -> &'static str {
    match code {
        1000 => "normal",
        1001 => "going away",
        1002 => "protocol error",
        1003 => "unsupported data",
        1005 => "no status",
        1006 => "abnormal",
        1007 => "invalid data",
        1008 => "policy violation",
        1009 => "too big",
        1010 => "extension required",
        1011 => "internal error",
        1012 => "service restart",
        1013 => "try again later",
        3000..=4999 => "application",
        _ => "unknown",
    }
}

/// Cuts a close reason to the 123 bytes a close frame can carry, on a
/// character boundary.
pub(crate) fn clip_reason(reason: &str) -> &str {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_code() {
        let info = CloseInfo {
            code: 1008,
            reason: "kicked".into(),
            by_peer: true,
        };
        assert_eq!(info.to_string(), "1008 policy violation: kicked");
        assert_eq!(CloseInfo::abnormal("").to_string(), "1006 abnormal");
    }

    #[test]
    fn clip_keeps_utf8_whole() {
        let long = "é".repeat(100);
        let clipped = clip_reason(&long);
        assert!(clipped.len() <= 123);
        assert!(clipped.chars().all(|c| c == 'é'));
    }
}
