//! File-system events as a trigger: scan seconds after a file is finished, not at the next
//! interval.
//!
//! Events only wake the scanner early. What a scan processes always comes from a full listing
//! merged with the state, so an event that is lost, duplicated or reordered can delay a file
//! until the next interval scan, never lose it or process it twice. Lost events (a queue
//! overflow, the watch limit reached, a file system without notifications) are logged and
//! counted in `gleaner_events_lost_total{reason}`, and the interval scan takes over.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::Notify;

use crate::listing::DirScope;
use crate::telemetry::{self, FileEventSeen, FileEventsLost, FileEventsSettled, WatchingStarted};

/// Where file-system events saw files finished: the directories a scan woken by them looks
/// at, rather than the whole tree. Shared by an [`EventTrigger`] and the [`Scanner`] it wakes
/// ([`Scanner::touched`]); cheap to clone.
///
/// [`Scanner`]: crate::Scanner
/// [`Scanner::touched`]: crate::Scanner::touched
#[derive(Clone, Debug)]
pub struct Touched {
    root: PathBuf,
    dirs: Arc<Mutex<TouchedDirs>>,
    wake: Arc<Notify>,
    /// An [`EventTrigger`] is watching: every change of the tree is recorded here.
    watching: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Debug, Default)]
struct TouchedDirs {
    scope: DirScope,
    /// Events were lost, or named too many directories: the next scan walks everything.
    everything: bool,
    /// The scanner was woken for these events (not only by a plain wake-up).
    woken: bool,
}

/// Beyond this many directories, one walk of the tree is cheaper than many small ones.
const MAX_TOUCHED_DIRS: usize = 1000;

impl Touched {
    /// Directories under `root` (the scanner's watch directory, absolute), and the scanner's
    /// wake-up.
    pub(crate) fn new(root: PathBuf, wake: Arc<Notify>) -> Self {
        Self {
            root,
            dirs: Arc::default(),
            wake,
            watching: Arc::default(),
        }
    }

    /// True while an [`EventTrigger`] records the tree's changes here: a file that comes back
    /// where it was is then seen by the scan after it, even one of a few directories.
    pub(crate) fn watching(&self) -> bool {
        self.watching.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn set_watching(&self, watching: bool) {
        self.watching
            .store(watching, std::sync::atomic::Ordering::SeqCst);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TouchedDirs> {
        self.dirs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that something happened at `path` (absolute): the directory it names is looked
    /// at whole, a file's directory for its own files. A path outside the watch directory
    /// makes the next scan walk everything.
    pub fn path_changed(&self, path: &Path) {
        self.record(path, None);
    }

    /// [`Touched::path_changed`], told by the event whether `path` is a directory; unknown,
    /// the path is looked at (a `statx` per event, which an emitter writing hundreds of files
    /// a second pays for otherwise).
    fn record(&self, path: &Path, is_dir: Option<bool>) {
        let Ok(rel) = path.strip_prefix(&self.root) else {
            self.everything();
            return;
        };
        let is_dir =
            is_dir.unwrap_or_else(|| std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()));
        let rel = rel.as_os_str().as_bytes();
        let (dir, recursive) = if is_dir {
            (rel, true)
        } else {
            let parent = memchr::memrchr(b'/', rel).map_or(&rel[..0], |slash| &rel[..slash]);
            (parent, false)
        };
        let mut touched = self.lock();
        if touched.everything {
            return;
        }
        touched.scope.add(dir, recursive);
        if touched.scope.len() > MAX_TOUCHED_DIRS {
            touched.everything = true;
        }
    }

    /// Makes the next scan walk the whole tree (events were lost).
    pub fn everything(&self) {
        self.lock().everything = true;
    }

    /// Wakes the scanner, for the directories recorded.
    pub fn wake(&self) {
        self.lock().woken = true;
        self.wake.notify_one();
    }

    /// What was touched since the last call (`None`: the whole tree must be walked), and
    /// whether [`Touched::wake`] was called meanwhile.
    pub(crate) fn take(&self) -> (Option<DirScope>, bool) {
        let mut touched = self.lock();
        let taken = std::mem::take(&mut *touched);
        ((!taken.everything).then_some(taken.scope), taken.woken)
    }
}

/// Watches a directory tree and wakes a scanner (through [`Scanner::waker`]) at most once per
/// debounce window after relevant events. Dropping it stops watching.
///
/// [`Scanner::waker`]: crate::Scanner::waker
pub struct EventTrigger {
    _watcher: notify::RecommendedWatcher,
    debouncer: tokio::task::JoinHandle<()>,
    touched: Touched,
}

impl std::fmt::Debug for EventTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventTrigger").finish_non_exhaustive()
    }
}

impl Drop for EventTrigger {
    fn drop(&mut self) {
        self.touched.set_watching(false);
        self.debouncer.abort();
    }
}

impl EventTrigger {
    /// Starts watching `dir` recursively.
    ///
    /// Events that can make a file ready (created, closed after writing, renamed in) start a
    /// burst and record their directories in `touched`; once no such event came for `debounce`
    /// (or at most `4 × debounce` after the first), the scanner is woken once, however many
    /// events arrived, and looks at those directories only. Lost events make it walk the
    /// whole tree. Fails if the platform
    /// cannot watch `dir` at all (the caller then relies on the interval, and should say so).
    /// Registering the watches walks the tree: that runs on a blocking thread.
    pub async fn start(
        dir: &Path,
        debounce: Duration,
        touched: Touched,
    ) -> Result<Self, notify::Error> {
        let pending = Arc::new(Pending::default());
        let pending_events = Arc::clone(&pending);
        let recorder = touched.clone();
        let recorded = touched.clone();
        let dir = dir.to_path_buf();
        let watched = dir.clone();
        let watcher = tokio::task::spawn_blocking(move || {
            // Links are not followed: the walks never follow them, and a scan must not look
            // through one at files outside the watch directory.
            let config = notify::Config::default().with_follow_symlinks(false);
            let mut watcher = notify::RecommendedWatcher::new(
                {
                    let gather = Gather::default();
                    move |event| {
                        on_event(event, &recorder, &pending_events);
                        gather.after_event();
                    }
                },
                config,
            )?;
            if let Err(e) = watcher.watch(&watched, RecursiveMode::Recursive) {
                lost(error_reason(&e), &e.to_string());
                return Err(e);
            }
            Ok(watcher)
        })
        .await
        .map_err(|e| notify::Error::generic(&format!("watch registration failed: {e}")))??;
        let debouncer = tokio::spawn(debounce_events(pending, touched, debounce));
        telemetry::emit(WatchingStarted {
            dir: &dir,
            debounce,
        });
        recorded.set_watching(true);
        Ok(Self {
            _watcher: watcher,
            debouncer,
            touched: recorded,
        })
    }
}

/// What the notify thread does with one event: records the paths it names (or that the whole
/// tree must be walked), and counts it for the debouncer.
fn on_event(event: notify::Result<Event>, recorder: &Touched, pending: &Pending) {
    match event {
        Ok(event) if event.need_rescan() => {
            lost("overflow", "the event queue overflowed; events were lost");
            recorder.everything();
            pending.event();
        }
        Ok(event) if is_relevant(&event.kind) => {
            telemetry::emit(FileEventSeen);
            if event.paths.is_empty() {
                recorder.everything();
            }
            for (at, path) in event.paths.iter().enumerate() {
                if !crate::cleanup::is_private_name(path) {
                    recorder.record(path, names_a_directory(&event.kind, at));
                }
            }
            pending.event();
        }
        Ok(_) => {}
        Err(e) => {
            lost(error_reason(&e), &e.to_string());
            // Whatever was missed, a scan of the whole tree finds it.
            recorder.everything();
            pending.event();
        }
    }
}

/// How long the notify thread lets events gather in the kernel's queue once it has woken for
/// one. A directory written to steadily (600 files a second, each with a create, a write, a
/// close and cleanup's rename and unlink) woke the thread for nearly every event, and its
/// wake-ups took a quarter of Gleaner's CPU (BENCHMARKS.md, "A sidecar under a steady
/// emitter"); gathered, it wakes at most about 50 times a second and reads the rest in bulk.
/// Far below the debounce, so the scans come as before; the kernel's queue (16,384 events by
/// default) holds this long of even a very busy directory.
const GATHER: Duration = Duration::from_millis(20);

/// Events handled less than this apart came from one read of the queue; a longer gap means
/// the thread waited for the event: a new wake-up.
const SAME_WAKE: Duration = Duration::from_micros(200);

/// Tells the first event of each wake-up of the notify thread from the ones read with it, and
/// sleeps [`GATHER`] after the first: the events that arrive meanwhile are read in the same
/// wake-up.
#[derive(Debug, Default)]
struct Gather {
    last: std::cell::Cell<Option<std::time::Instant>>,
}

impl Gather {
    fn after_event(&self) {
        let now = std::time::Instant::now();
        if self.last.get().is_none_or(|last| now - last > SAME_WAKE) {
            std::thread::sleep(GATHER);
        }
        self.last.set(Some(std::time::Instant::now()));
    }
}

/// Wakes the scanner once per burst of events: a burst ends when a whole `debounce` passed
/// without an event; a burst that never ends wakes the scanner at least every `4 × debounce`.
async fn debounce_events(pending: Arc<Pending>, touched: Touched, debounce: Duration) {
    let longest = debounce.saturating_mul(4);
    loop {
        pending.wake.notified().await;
        let first = tokio::time::Instant::now();
        loop {
            let seen = pending.count();
            tokio::time::sleep(debounce).await;
            if pending.count() == seen || first.elapsed() >= longest {
                break;
            }
        }
        // Idle before the wake-up: an event after this point starts a new burst, one before it
        // is recorded before the scan it wakes.
        pending.idle();
        telemetry::emit(FileEventsSettled);
        touched.wake();
    }
}

/// Events counted between the notify thread and the debouncer. Only the first event of a burst
/// wakes the debouncer (an emitter of hundreds of files a second sends thousands of events, and
/// a wake-up of the runtime for each cost more than the files' reading); the debouncer then
/// watches the count.
#[derive(Debug)]
struct Pending {
    events: std::sync::atomic::AtomicU64,
    idle: std::sync::atomic::AtomicBool,
    wake: Notify,
}

impl Default for Pending {
    fn default() -> Self {
        Self {
            events: std::sync::atomic::AtomicU64::new(0),
            idle: std::sync::atomic::AtomicBool::new(true),
            wake: Notify::new(),
        }
    }
}

impl Pending {
    /// An event was recorded: counted, and the debouncer woken if no burst is under way.
    fn event(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.events.fetch_add(1, SeqCst);
        if self.idle.swap(false, SeqCst) {
            self.wake.notify_one();
        }
    }

    fn count(&self) -> u64 {
        self.events.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The burst is over: the next event starts another.
    fn idle(&self) {
        self.idle.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Whether an event's kind says its path number `at` is a directory (`None`: it does not say).
/// A name renamed away no longer exists: whatever it was, its parent's listing shows it gone,
/// so it counts as a file without looking.
fn names_a_directory(kind: &EventKind, at: usize) -> Option<bool> {
    match kind {
        EventKind::Create(CreateKind::File) | EventKind::Access(AccessKind::Close(_)) => {
            Some(false)
        }
        EventKind::Create(CreateKind::Folder) => Some(true),
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => Some(false),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if at == 0 => Some(false),
        _ => None,
    }
}

/// Events after which a file may have become ready: created, closed after writing, renamed.
/// Reads and metadata changes are not (a scan reads files, and must not wake itself), nor are
/// plain writes: a file being written is not ready, and a log appended to all day would
/// otherwise list the tree every debounce window. A file written in place and left open
/// becomes ready by `--min-age`, which schedules its own scan.
fn is_relevant(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) => true,
        EventKind::Modify(ModifyKind::Name(_)) => true,
        EventKind::Modify(ModifyKind::Metadata(_) | ModifyKind::Data(_)) => false,
        EventKind::Modify(ModifyKind::Any | ModifyKind::Other) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Any | EventKind::Other => true,
        EventKind::Access(_) | EventKind::Remove(_) => false,
    }
}

fn error_reason(e: &notify::Error) -> &'static str {
    match e.kind {
        notify::ErrorKind::MaxFilesWatch => "watch_limit",
        notify::ErrorKind::PathNotFound | notify::ErrorKind::WatchNotFound => "vanished",
        notify::ErrorKind::Io(_) | notify::ErrorKind::Generic(_) => "error",
        notify::ErrorKind::InvalidConfig(_) => "unsupported",
    }
}

fn lost(reason: &'static str, detail: &str) {
    telemetry::emit(FileEventsLost { reason, detail });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_of_writes_wakes_once_after_the_debounce() {
        let dir = tempfile::tempdir().unwrap();
        let waker = Arc::new(Notify::new());
        let touched = Touched::new(dir.path().to_path_buf(), Arc::clone(&waker));
        let _trigger = EventTrigger::start(dir.path(), Duration::from_millis(200), touched.clone())
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        for i in 0..20 {
            std::fs::write(dir.path().join(format!("sub/{i}.tmp")), b"x\n").unwrap();
        }
        std::fs::rename(dir.path().join("sub/0.tmp"), dir.path().join("sub/0.log")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), waker.notified())
            .await
            .expect("woken");
        assert!(started.elapsed() >= Duration::from_millis(200), "debounced");
        // The scan it wakes looks at the new directory, whole.
        let scope = touched.take().0.expect("no event was lost");
        assert!(scope.covers(b"sub/0.log") && scope.covers(b"sub/deeper/x.log"));
        assert!(!scope.covers(b"elsewhere/x.log"));
        // The burst is over: at most one more wake (events of the first window's end), then
        // quiet.
        let _ = tokio::time::timeout(Duration::from_millis(500), waker.notified()).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(500), waker.notified())
                .await
                .is_err(),
            "no wake without events"
        );
    }

    #[tokio::test]
    async fn a_file_appended_to_all_the_time_does_not_keep_waking() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = std::fs::File::create(dir.path().join("app.log")).unwrap();
        let waker = Arc::new(Notify::new());
        let touched = Touched::new(dir.path().to_path_buf(), Arc::clone(&waker));
        let _trigger = EventTrigger::start(dir.path(), Duration::from_millis(50), touched)
            .await
            .unwrap();
        for _ in 0..20 {
            std::io::Write::write_all(&mut log, b"a line\n").unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(300), waker.notified())
                .await
                .is_err(),
            "writes to an open file are not completions"
        );
        // Closing it after writing is.
        drop(log);
        tokio::time::timeout(Duration::from_secs(5), waker.notified())
            .await
            .expect("woken by the close");
    }

    #[tokio::test]
    async fn reading_files_does_not_wake() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.log"), b"x\n").unwrap();
        let waker = Arc::new(Notify::new());
        let touched = Touched::new(dir.path().to_path_buf(), Arc::clone(&waker));
        let _trigger = EventTrigger::start(dir.path(), Duration::from_millis(50), touched)
            .await
            .unwrap();
        for _ in 0..5 {
            let _ = std::fs::read(dir.path().join("a.log")).unwrap();
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(500), waker.notified())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_missing_directory_is_an_error() {
        let err = EventTrigger::start(
            Path::new("/nonexistent/gleaner-events"),
            Duration::from_millis(10),
            Touched::new(PathBuf::from("/nonexistent"), Arc::new(Notify::new())),
        )
        .await
        .unwrap_err();
        assert!(matches!(
            err.kind,
            notify::ErrorKind::PathNotFound
                | notify::ErrorKind::Io(_)
                | notify::ErrorKind::Generic(_)
        ));
    }
}
