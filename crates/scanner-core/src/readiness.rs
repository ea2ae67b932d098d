//! Deciding whether a listed file is complete enough to be read.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::listing::ListedFile;

/// Rules that say when a file is complete. A file is ready only if every rule agrees.
///
/// * **In-progress names** — a name ending in one of [`Readiness::in_progress_suffixes`]
///   (`.tmp`, `.part`, `.partial` by default) or a path with a component starting with `.` is
///   never ready. Emitters that write under a temporary name and rename when done are never
///   read half-written.
/// * **Minimum age** — a file modified less than [`Readiness::min_age`] ago is not ready yet.
///   This covers emitters that write in place and then stop; choose it longer than the longest
///   pause between two writes of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// How long a file must have been left unmodified.
    pub min_age: Duration,
    /// Name endings that mark a file as still being written.
    pub in_progress_suffixes: Vec<String>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            min_age: Duration::from_secs(5),
            in_progress_suffixes: [".tmp", ".part", ".partial"].map(String::from).to_vec(),
        }
    }
}

/// Why a file is not ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotReady {
    /// Its name says it is still being written.
    InProgressName,
    /// It was modified too recently; it will be old enough at `ready_at`.
    TooYoung {
        /// When the file becomes old enough, if it is not modified again.
        ready_at: SystemTime,
    },
}

impl Readiness {
    /// Checks one file at instant `now` (the start of the listing).
    pub fn check(&self, file: &ListedFile, now: SystemTime) -> Result<(), NotReady> {
        if self.is_in_progress_name(file.path.as_bytes()) {
            return Err(NotReady::InProgressName);
        }
        match mtime(file.mtime_ns).checked_add(self.min_age) {
            Some(ready_at) if ready_at <= now => Ok(()),
            Some(ready_at) => Err(NotReady::TooYoung { ready_at }),
            // Beyond what the clock can express: not ready in any foreseeable future.
            None => Err(NotReady::TooYoung {
                ready_at: now + Duration::from_secs(100 * 365 * 86_400),
            }),
        }
    }

    /// True if the path has a hidden component or an in-progress suffix.
    pub fn is_in_progress_name(&self, path: &[u8]) -> bool {
        let hidden = path
            .split(|&b| b == b'/')
            .any(|component| component.first() == Some(&b'.'));
        hidden
            || self
                .in_progress_suffixes
                .iter()
                .any(|suffix| path.ends_with(suffix.as_bytes()))
    }
}

/// Converts nanoseconds since the Unix epoch (possibly negative) to a `SystemTime`.
pub fn mtime(mtime_ns: i64) -> SystemTime {
    let magnitude = Duration::from_nanos(mtime_ns.unsigned_abs());
    if mtime_ns >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, age: Duration, now: SystemTime) -> ListedFile {
        let mtime = now - age;
        ListedFile {
            path: path.into(),
            size: 1,
            mtime_ns: mtime.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64,
            inode: 1,
            btime_ns: 0,
        }
    }

    #[test]
    fn old_enough_plain_names_are_ready() {
        let rules = Readiness::default();
        let now = SystemTime::now();
        assert_eq!(
            rules.check(&file("a/b.log", Duration::from_secs(6), now), now),
            Ok(())
        );
        assert_eq!(
            rules.check(&file("a/b.log", Duration::from_secs(5), now), now),
            Ok(())
        );
    }

    #[test]
    fn young_files_say_when_they_will_be_ready() {
        let rules = Readiness::default();
        let now = SystemTime::now();
        let f = file("b.log", Duration::from_secs(2), now);
        match rules.check(&f, now) {
            Err(NotReady::TooYoung { ready_at }) => {
                let wait = ready_at.duration_since(now).unwrap();
                assert!(wait > Duration::from_millis(2900) && wait <= Duration::from_secs(3));
            }
            other => panic!("{other:?}"),
        }
        // A modification time in the future (clock skew) is not ready until it has aged.
        let future = file("c.log", Duration::ZERO, now + Duration::from_secs(60));
        assert!(matches!(
            rules.check(&future, now),
            Err(NotReady::TooYoung { .. })
        ));
    }

    #[test]
    fn in_progress_and_hidden_names_are_never_ready() {
        let rules = Readiness {
            min_age: Duration::ZERO,
            ..Readiness::default()
        };
        let now = SystemTime::now();
        let old = Duration::from_secs(3600);
        for name in [
            "x.tmp",
            "d/x.log.part",
            "x.partial",
            ".x",
            "d/.x",
            ".d/x.log",
        ] {
            assert_eq!(
                rules.check(&file(name, old, now), now),
                Err(NotReady::InProgressName),
                "{name}"
            );
        }
        for name in ["x.tmpl", "x.log", "d.tmp/x.log", "x.parts", "x..log"] {
            assert_eq!(rules.check(&file(name, old, now), now), Ok(()), "{name}");
        }
    }

    #[test]
    fn mtimes_before_the_epoch_convert() {
        assert_eq!(mtime(-1_000_000_000), UNIX_EPOCH - Duration::from_secs(1));
    }
}
