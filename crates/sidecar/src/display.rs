//! Formatting shared by the commands that print for people.

use std::time::{Duration, UNIX_EPOCH};

/// Bytes in binary units: `1.5 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC: `2026-11-24T10:00:00.123Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
