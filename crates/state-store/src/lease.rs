//! The writer lease: a small object a running writer rewrites every [`LEASE_RENEW`], so that
//! tools that must not act under a live writer (`gleaner state gc`, `gleaner run --baseline`)
//! can tell one from a source whose writer is gone.
//!
//! It is advice, not a lock: the single-writer guarantee stays with the conditional create of
//! every delta (the fence). A lease only tells that a writer was alive lately, and which.

use std::fmt;
use std::time::Duration;

/// How often a running writer rewrites its lease.
pub const LEASE_RENEW: Duration = Duration::from_secs(30);

/// How long a lease counts as live after it was last written: ten renewals, so that a writer
/// whose store is slow for a few minutes (retries take up to `--storage-retry-timeout`, 3
/// minutes by default) still counts as live.
pub const LEASE_TTL: Duration = Duration::from_secs(300);

/// The name of the lease object in a source's state directory. It is not a log object: loading
/// and verifying ignore it.
pub(crate) const LEASE_NAME: &str = "writer.lease";

/// What a writer's lease says: who wrote it, and when.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// The writer's random id (the `writer_id` of the objects it writes).
    pub writer_id: u64,
    /// The writer's host name (in Kubernetes, the Pod's name); empty if unknown.
    pub host: String,
    /// The directory it watches; empty if unknown.
    pub watch_dir: String,
    /// Its process id.
    pub pid: u32,
    /// When the writer last wrote it, by the writer's clock, in milliseconds since the Unix
    /// epoch.
    pub renewed_at_ms: u64,
    /// When the store last wrote it, by the store's clock (its last-modified time), in
    /// milliseconds since the Unix epoch.
    pub stored_at_ms: u64,
}

impl Lease {
    /// When it was last renewed: the later of the writer's and the store's clock, so that
    /// neither clock running behind makes a live writer look gone.
    pub fn renewed_ms(&self) -> u64 {
        self.renewed_at_ms.max(self.stored_at_ms)
    }

    /// True if it was renewed less than [`LEASE_TTL`] before `now_ms` (or after it: a clock
    /// ahead of ours).
    pub fn is_live(&self, now_ms: u64) -> bool {
        now_ms
            < self
                .renewed_ms()
                .saturating_add(LEASE_TTL.as_millis() as u64)
    }

    /// The lease's text: one `key=value` per line, readable with `cat`.
    pub(crate) fn encode(&self) -> String {
        format!(
            "gleaner writer lease\nwriter_id={:016x}\nhost={}\nwatch_dir={}\npid={}\nrenewed_at_ms={}\n",
            self.writer_id, self.host, self.watch_dir, self.pid, self.renewed_at_ms
        )
    }

    /// Reads a lease's text; what cannot be read stays unknown (0 or empty). A damaged lease
    /// still counts by its `stored_at_ms`: it is advice, never a reason to fail.
    pub(crate) fn decode(text: &str, stored_at_ms: u64) -> Lease {
        let mut lease = Lease {
            stored_at_ms,
            ..Lease::default()
        };
        for (key, value) in text.lines().filter_map(|line| line.split_once('=')) {
            match key {
                "writer_id" => lease.writer_id = u64::from_str_radix(value, 16).unwrap_or(0),
                "host" => lease.host = value.to_string(),
                "watch_dir" => lease.watch_dir = value.to_string(),
                "pid" => lease.pid = value.parse().unwrap_or(0),
                "renewed_at_ms" => lease.renewed_at_ms = value.parse().unwrap_or(0),
                _ => {}
            }
        }
        lease
    }
}

/// `host:watch_dir (pid N, writer W)`.
impl fmt::Display for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} (pid {}, writer {:016x})",
            self.host, self.watch_dir, self.pid, self.writer_id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_reads_back_and_lives_for_its_ttl_by_the_later_clock() {
        let lease = Lease {
            writer_id: 0xabc,
            host: "pod-a".into(),
            watch_dir: "/data".into(),
            pid: 7,
            renewed_at_ms: 1_000_000,
            stored_at_ms: 0,
        };
        let back = Lease::decode(&lease.encode(), 1_000_500);
        assert_eq!(
            back,
            Lease {
                stored_at_ms: 1_000_500,
                ..lease.clone()
            }
        );
        let ttl = LEASE_TTL.as_millis() as u64;
        assert!(back.is_live(1_000_500 + ttl - 1));
        assert!(!back.is_live(1_000_500 + ttl));
        assert!(back.is_live(0), "a clock ahead of ours");
        assert_eq!(
            back.to_string(),
            "pod-a:/data (pid 7, writer 0000000000000abc)"
        );
        // Damaged text: known by the store's clock alone.
        let damaged = Lease::decode("\u{0}garbage=\nwriter_id=zz", 5);
        assert_eq!((damaged.writer_id, damaged.renewed_ms()), (0, 5));
    }
}
