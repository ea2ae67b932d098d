//! Whether the scan loop still moves, for a liveness probe that restarts a stuck process and
//! leaves a slow or failing one alone.
//!
//! Every event the loop emits is progress; so is going to sleep until the next scan, and so are
//! the bytes the workers read and the units they finish while a batch is processed (a batch
//! may take longer than the stall timeout and still advance). Each
//! sets a deadline by which the loop must show progress again: the stall timeout after
//! progress, the wait plus the stall timeout when going to sleep. A loop past its deadline is
//! stalled (a storage request that never returns, a hung read, a deadlock). A scan that fails
//! is not stalled: its failure is an event, and the retry's wait is progress.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the scan loop was doing at its last sign of progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoopPhase {
    /// Loading the state and checking the locations.
    Starting,
    /// Listing, processing, writing or committing.
    Scanning,
    /// Sleeping until the next scan.
    Waiting,
}

impl LoopPhase {
    const ALL: [LoopPhase; 3] = [LoopPhase::Starting, LoopPhase::Scanning, LoopPhase::Waiting];

    /// The phase as a word for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            LoopPhase::Starting => "starting",
            LoopPhase::Scanning => "scanning",
            LoopPhase::Waiting => "waiting for the next scan",
        }
    }
}

impl fmt::Display for LoopPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A shared record of the scan loop's last progress; cheap to clone and to read from another
/// task (an HTTP handler).
#[derive(Clone, Debug)]
pub struct Heartbeat {
    inner: Arc<Beats>,
}

#[derive(Debug)]
struct Beats {
    /// Instants below are milliseconds since this one.
    origin: Instant,
    stall_timeout: Duration,
    last_ms: AtomicU64,
    due_ms: AtomicU64,
    phase: AtomicU8,
}

/// What [`Heartbeat::check`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    /// The phase at the last progress.
    pub phase: LoopPhase,
    /// Time since the last progress.
    pub since_progress: Duration,
    /// How long the loop is past the deadline for its next progress; `None` while it is not.
    pub stalled_for: Option<Duration>,
    /// The stall timeout in force.
    pub stall_timeout: Duration,
}

impl Liveness {
    /// True while the loop is within its deadline.
    pub fn is_alive(&self) -> bool {
        self.stalled_for.is_none()
    }
}

impl Heartbeat {
    /// A heartbeat in the [`LoopPhase::Starting`] phase that counts the loop as stalled once
    /// it shows no progress for `stall_timeout`.
    pub fn new(stall_timeout: Duration) -> Self {
        let heartbeat = Self {
            inner: Arc::new(Beats {
                origin: Instant::now(),
                stall_timeout,
                last_ms: AtomicU64::new(0),
                due_ms: AtomicU64::new(0),
                phase: AtomicU8::new(0),
            }),
        };
        heartbeat.beat(LoopPhase::Starting);
        heartbeat
    }

    /// Records progress in `phase`: the next is due within the stall timeout.
    pub(crate) fn beat(&self, phase: LoopPhase) {
        self.record(phase, self.inner.stall_timeout);
    }

    /// Records progress in the phase the loop is in: the next is due within the stall timeout,
    /// or later if a deadline further off is set. A worker of an abandoned batch may finish
    /// its unit after the loop went to sleep, and must not bring the sleeping loop's deadline
    /// forward; the phase is left alone for the same reason.
    ///
    /// Workers call it for every read, from several threads: one clock read, and nothing
    /// written while the millisecond is the one already recorded (every record sets a deadline
    /// at least the stall timeout after it), so that they do not contend for the deadline.
    pub(crate) fn progress(&self) {
        let now = self.now_ms();
        if self.inner.last_ms.load(Ordering::Relaxed) == now {
            return;
        }
        self.inner.last_ms.store(now, Ordering::Relaxed);
        self.inner.due_ms.fetch_max(
            now.saturating_add(millis(self.inner.stall_timeout)),
            Ordering::Relaxed,
        );
    }

    /// Records that the loop sleeps for `wait`: the next progress is due within `wait` plus
    /// the stall timeout.
    pub(crate) fn sleeping(&self, wait: Duration) {
        self.record(
            LoopPhase::Waiting,
            wait.saturating_add(self.inner.stall_timeout),
        );
    }

    fn record(&self, phase: LoopPhase, allowance: Duration) {
        let now = self.now_ms();
        let index = LoopPhase::ALL.iter().position(|p| *p == phase).unwrap_or(0);
        self.inner.phase.store(index as u8, Ordering::Relaxed);
        self.inner.last_ms.store(now, Ordering::Relaxed);
        self.inner
            .due_ms
            .store(now.saturating_add(millis(allowance)), Ordering::Relaxed);
    }

    /// Whether the loop is within its deadline now.
    pub fn check(&self) -> Liveness {
        self.check_at(self.now_ms())
    }

    fn check_at(&self, now_ms: u64) -> Liveness {
        let beats = &self.inner;
        let last = beats.last_ms.load(Ordering::Relaxed);
        let due = beats.due_ms.load(Ordering::Relaxed);
        let phase = LoopPhase::ALL[usize::from(beats.phase.load(Ordering::Relaxed)) % 3];
        Liveness {
            phase,
            since_progress: Duration::from_millis(now_ms.saturating_sub(last)),
            stalled_for: (now_ms > due).then(|| Duration::from_millis(now_ms - due)),
            stall_timeout: beats.stall_timeout,
        }
    }

    fn now_ms(&self) -> u64 {
        millis(self.inner.origin.elapsed())
    }
}

thread_local! {
    /// The heartbeat of the batch this worker thread is processing, if any: what it reads
    /// counts as progress.
    static WORKER_HEARTBEAT: std::cell::RefCell<Option<Heartbeat>> =
        const { std::cell::RefCell::new(None) };
}

/// While alive, bytes read on this thread ([`bytes_read`]) are progress of a heartbeat.
pub(crate) struct ReadingFor(());

impl ReadingFor {
    /// Makes reads on this (worker) thread count as progress of `heartbeat`: a batch that takes
    /// longer than the stall timeout (a slow volume, a throttled CPU, an expensive regex) is
    /// not stalled while it advances.
    pub(crate) fn heartbeat(heartbeat: &Heartbeat) -> Self {
        WORKER_HEARTBEAT.set(Some(heartbeat.clone()));
        ReadingFor(())
    }
}

impl Drop for ReadingFor {
    fn drop(&mut self) {
        WORKER_HEARTBEAT.set(None);
    }
}

/// Records that a worker read bytes of a file: progress of the heartbeat of its batch.
pub(crate) fn bytes_read() {
    WORKER_HEARTBEAT.with_borrow(|heartbeat| {
        if let Some(heartbeat) = heartbeat {
            heartbeat.progress();
        }
    });
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One read on a worker thread that works for `heartbeat`.
    fn read_on_a_worker(heartbeat: &Heartbeat) {
        let worker = heartbeat.clone();
        std::thread::spawn(move || {
            let _reading = ReadingFor::heartbeat(&worker);
            bytes_read();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn reads_on_a_worker_thread_are_progress_only_while_it_works_for_the_heartbeat() {
        let heartbeat = Heartbeat::new(Duration::from_millis(50));
        heartbeat.beat(LoopPhase::Scanning);
        std::thread::sleep(Duration::from_millis(80));
        assert!(!heartbeat.check().is_alive(), "no progress: stalled");
        // Judged at a fixed instant, not whenever this thread runs again: the read's beat
        // moves the deadline to at least `before` + 50 ms, and without it the deadline is
        // already behind `before`.
        let before = heartbeat.now_ms();
        read_on_a_worker(&heartbeat);
        let after_read = heartbeat.check_at(before + 40);
        assert!(after_read.is_alive(), "{after_read:?}");
        assert_eq!(after_read.phase, LoopPhase::Scanning);
        // A thread that reads for no batch beats nothing.
        std::thread::sleep(Duration::from_millis(80));
        std::thread::spawn(bytes_read).join().unwrap();
        assert!(!heartbeat.check().is_alive());
    }

    /// A worker of an abandoned batch finishes the unit it is reading after the loop went to
    /// sleep (a failed scan's backoff, the interval): its progress must not bring the sleeping
    /// loop's deadline forward, or the probe calls a loop that waits as told stalled.
    #[test]
    fn a_late_read_never_shortens_the_deadline_of_a_sleeping_loop() {
        let heartbeat = Heartbeat::new(Duration::from_secs(10));
        heartbeat.sleeping(Duration::from_secs(3600));
        let asleep = heartbeat.now_ms();
        read_on_a_worker(&heartbeat);
        heartbeat.progress();
        let later = heartbeat.check_at(asleep + 60_000);
        assert!(later.is_alive(), "{later:?}");
        assert_eq!(later.phase, LoopPhase::Waiting);
        assert!(heartbeat.check_at(asleep + 3_600_000).is_alive());
        assert!(!heartbeat.check_at(asleep + 3_700_000).is_alive());
    }

    #[test]
    fn progress_sets_the_deadline_and_sleeping_extends_it_by_the_wait() {
        let heartbeat = Heartbeat::new(Duration::from_secs(10));
        let start = heartbeat.now_ms();
        let alive = heartbeat.check_at(start + 9_000);
        assert!(alive.is_alive());
        assert_eq!(alive.phase, LoopPhase::Starting);
        let stalled = heartbeat.check_at(start + 12_000);
        assert_eq!(stalled.stalled_for, Some(Duration::from_millis(2_000)));
        assert_eq!(stalled.since_progress, Duration::from_millis(12_000));

        heartbeat.sleeping(Duration::from_secs(3600));
        let now = heartbeat.now_ms();
        let waiting = heartbeat.check_at(now + 3_605_000);
        assert!(waiting.is_alive(), "{waiting:?}");
        assert_eq!(waiting.phase, LoopPhase::Waiting);
        assert!(!heartbeat.check_at(now + 3_611_000).is_alive());

        heartbeat.beat(LoopPhase::Scanning);
        let now = heartbeat.now_ms();
        assert!(heartbeat.check_at(now + 10_000).is_alive());
        let stalled = heartbeat.check_at(now + 10_001);
        assert_eq!(stalled.phase, LoopPhase::Scanning);
        assert!(!stalled.is_alive());
    }
}
