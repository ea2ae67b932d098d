//! File-system events as a trigger: scan seconds after a file is finished, not at the next
//! interval.
//!
//! Events only wake the scanner early. What a scan processes always comes from a full listing
//! merged with the state, so an event that is lost, duplicated or reordered can delay a file
//! until the next interval scan, never lose it or process it twice. Lost events (a queue
//! overflow, the watch limit reached, a file system without notifications) are logged and
//! counted in `gleaner_events_lost_total{reason}`, and the interval scan takes over.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::Notify;

use crate::telemetry::{self, FileEventSeen, FileEventsLost, FileEventsSettled, WatchingStarted};

/// Watches a directory tree and wakes a scanner (through [`Scanner::waker`]) at most once per
/// debounce window after relevant events. Dropping it stops watching.
///
/// [`Scanner::waker`]: crate::Scanner::waker
pub struct EventTrigger {
    _watcher: notify::RecommendedWatcher,
    debouncer: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for EventTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventTrigger").finish_non_exhaustive()
    }
}

impl Drop for EventTrigger {
    fn drop(&mut self) {
        self.debouncer.abort();
    }
}

impl EventTrigger {
    /// Starts watching `dir` recursively.
    ///
    /// Events that can make a file ready (created, closed after writing, renamed in) start a
    /// burst; once no such event came for `debounce` (or at most `4 × debounce` after the
    /// first), `waker` is notified once, however many events arrived. Fails if the platform
    /// cannot watch `dir` at all (the caller then relies on the interval, and should say so).
    /// Registering the watches walks the tree: that runs on a blocking thread.
    pub async fn start(
        dir: &Path,
        debounce: Duration,
        waker: Arc<Notify>,
    ) -> Result<Self, notify::Error> {
        let pending = Arc::new(Notify::new());
        let on_event = Arc::clone(&pending);
        let dir = dir.to_path_buf();
        let watched = dir.clone();
        let watcher = tokio::task::spawn_blocking(move || {
            let mut watcher =
                notify::recommended_watcher(move |event: notify::Result<Event>| match event {
                    Ok(event) if event.need_rescan() => {
                        lost("overflow", "the event queue overflowed; events were lost");
                        on_event.notify_one();
                    }
                    Ok(event) if is_relevant(&event.kind) => {
                        telemetry::emit(FileEventSeen);
                        on_event.notify_one();
                    }
                    Ok(_) => {}
                    Err(e) => {
                        lost(error_reason(&e), &e.to_string());
                        // Whatever was missed, a scan finds it.
                        on_event.notify_one();
                    }
                })?;
            if let Err(e) = watcher.watch(&watched, RecursiveMode::Recursive) {
                lost(error_reason(&e), &e.to_string());
                return Err(e);
            }
            Ok(watcher)
        })
        .await
        .map_err(|e| notify::Error::generic(&format!("watch registration failed: {e}")))??;
        let debouncer = tokio::spawn(async move {
            // A burst ends when no event came for `debounce`; a burst that never ends wakes
            // the scanner at least every `4 × debounce`.
            let longest = debounce.saturating_mul(4);
            loop {
                pending.notified().await;
                let first = tokio::time::Instant::now();
                loop {
                    let quiet = tokio::time::sleep(debounce);
                    tokio::select! {
                        () = quiet => break,
                        () = pending.notified() => {
                            if first.elapsed() >= longest {
                                break;
                            }
                        }
                    }
                }
                telemetry::emit(FileEventsSettled);
                waker.notify_one();
            }
        });
        telemetry::emit(WatchingStarted {
            dir: &dir,
            debounce,
        });
        Ok(Self {
            _watcher: watcher,
            debouncer,
        })
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
        let _trigger =
            EventTrigger::start(dir.path(), Duration::from_millis(200), Arc::clone(&waker))
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
        let _trigger =
            EventTrigger::start(dir.path(), Duration::from_millis(50), Arc::clone(&waker))
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
        let _trigger =
            EventTrigger::start(dir.path(), Duration::from_millis(50), Arc::clone(&waker))
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
            Arc::new(Notify::new()),
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
