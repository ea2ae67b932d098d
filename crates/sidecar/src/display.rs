//! Formatting shared by the commands that print for people, and their standard output.

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};

/// Set once standard output turned out to be a pipe whose reader is gone.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes one line of a command's report to standard output.
///
/// A reader that stops early (`gleaner state inspect --entries | head`) closes the pipe; that
/// is the reader's choice, not an error of the command: from then on nothing more is written,
/// quietly, and the command ends with the status its own work has (0, or 1 for a `state
/// verify` that found damage), as ripgrep does. Dying of `SIGPIPE` (status 141) would fail a
/// `set -o pipefail` script for it, and a panic (status 101) says the program broke. Other
/// write errors (a full disk under a redirect) are errors.
pub fn write_line(line: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    if stdout_closed() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to standard output")),
    }
}

/// True once standard output's reader is gone ([`write_line`]): a long listing can stop there.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// `println!` for a command's report, through [`write_line`]: returns early with an error only when
/// standard output cannot be written for another reason than a reader gone.
macro_rules! say {
    () => {
        $crate::display::write_line(format_args!(""))?
    };
    ($($arg:tt)*) => {
        $crate::display::write_line(format_args!($($arg)*))?
    };
}
pub(crate) use say;

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
