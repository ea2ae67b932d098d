//! Deciding whether a listed file is complete enough to be read.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use state_store::RelPath;

use crate::ConfigError;
use crate::diff::Seen;
use crate::listing::{ListedFile, YoungFiles};

/// Rules that say when a file is complete. A file is ready only if every rule agrees.
///
/// * **Names** — [`Readiness::names`] (`--include` / `--exclude` globs) says which files are
///   collected at all; the others are never read.
/// * **In-progress names** — a name ending in one of [`Readiness::in_progress_suffixes`]
///   (`.tmp`, `.part`, `.partial` by default) or a path with a component starting with `.` is
///   never ready. Emitters that write under a temporary name and rename when done are never
///   read half-written.
/// * **Markers** — with a [`ReadyMarker`], a file is ready only once its marker exists (the
///   emitter writes it after the data); markers themselves are never processed.
/// * **Minimum age** — a file modified less than [`Readiness::min_age`] ago is not ready yet.
///   This covers emitters that write in place and then stop; choose it longer than the longest
///   pause between two writes of one file.
/// * **Stability** — with [`Readiness::stable_for`], a file is ready only once two listings at
///   least that far apart saw the same size, modification time and inode.
/// * **Clock skew** — a modification time more than [`Readiness::max_clock_skew`] in the
///   future cannot be trusted: the file's age counts from the first listing that saw it.
#[derive(Clone, Debug)]
pub struct Readiness {
    /// How long a file must have been left unmodified.
    pub min_age: Duration,
    /// Name endings that mark a file as still being written.
    pub in_progress_suffixes: Vec<String>,
    /// Which paths are collected at all.
    pub names: NameFilter,
    /// A file that says another file is complete.
    pub marker: Option<ReadyMarker>,
    /// Size, mtime and inode must be unchanged across two listings this far apart.
    pub stable_for: Option<Duration>,
    /// A modification time further in the future than this comes from a skewed clock: such a
    /// file's age is counted from the first listing that saw it as it is, not from its mtime
    /// (which would make it wait, silently, until that future comes).
    pub max_clock_skew: Duration,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            min_age: Duration::from_secs(5),
            in_progress_suffixes: [".tmp", ".part", ".partial"].map(String::from).to_vec(),
            names: NameFilter::default(),
            marker: None,
            stable_for: None,
            max_clock_skew: Duration::from_secs(60),
        }
    }
}

/// `--include` and `--exclude` globs, matched against the path relative to the watch root.
///
/// A path is collected if it matches some include glob (or there are none) and no exclude
/// glob. Globs use `globset` syntax; `*` also matches `/`, so `*.log` means every `.log` file at
/// any depth, and `app/*.log` every `.log` file under `app/`.
#[derive(Clone, Debug, Default)]
pub struct NameFilter {
    include: Option<globset::GlobSet>,
    exclude: Option<globset::GlobSet>,
    patterns: (Vec<String>, Vec<String>),
}

impl NameFilter {
    /// Compiles include and exclude globs.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, globset::Error> {
        let set = |patterns: &[String]| -> Result<Option<globset::GlobSet>, globset::Error> {
            if patterns.is_empty() {
                return Ok(None);
            }
            let mut builder = globset::GlobSetBuilder::new();
            for pattern in patterns {
                builder.add(
                    globset::GlobBuilder::new(pattern)
                        .backslash_escape(true)
                        .build()?,
                );
            }
            builder.build().map(Some)
        };
        Ok(Self {
            include: set(include)?,
            exclude: set(exclude)?,
            patterns: (include.to_vec(), exclude.to_vec()),
        })
    }

    /// True if the path (relative to the watch root) is collected.
    pub fn wants(&self, path: &[u8]) -> bool {
        // Without globs (the default) every file is wanted, and the candidate, which finds the
        // path's name and extension, would be made twice for each listed file for nothing.
        if self.include.is_none() && self.exclude.is_none() {
            return true;
        }
        let candidate = globset::Candidate::from_bytes(path);
        self.include
            .as_ref()
            .is_none_or(|set| set.is_match_candidate(&candidate))
            && !self
                .exclude
                .as_ref()
                .is_some_and(|set| set.is_match_candidate(&candidate))
    }

    /// The include and exclude globs, as given.
    pub fn patterns(&self) -> (&[String], &[String]) {
        (&self.patterns.0, &self.patterns.1)
    }
}

/// A file whose presence says that data is complete (`--ready-marker`).
///
/// * With `{name}` in the pattern, each file has its own marker in the same directory:
///   `{name}.done` makes `a/x.log` ready once `a/x.log.done` exists.
/// * Without, the marker covers its directory: `_SUCCESS` makes every file of `a/` ready once
///   `a/_SUCCESS` exists (the Hadoop and Spark convention).
///
/// Files whose name has the marker's form are markers, and are never processed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadyMarker {
    /// `prefix{name}suffix`, next to each file.
    PerFile {
        /// What comes before the file's name.
        prefix: String,
        /// What comes after the file's name.
        suffix: String,
    },
    /// One marker of this name per directory.
    PerDirectory(String),
}

impl std::str::FromStr for ReadyMarker {
    type Err = ConfigError;

    /// Parses a pattern: a file name (no `/`), with `{name}` at most once.
    fn from_str(pattern: &str) -> Result<Self, ConfigError> {
        let invalid = |reason| ConfigError::ReadyMarker {
            pattern: pattern.to_string(),
            reason,
        };
        if pattern.is_empty() || pattern.contains('/') {
            return Err(invalid(
                "a file name such as {name}.done or _SUCCESS, without '/'",
            ));
        }
        match pattern.split_once("{name}") {
            Some((_, suffix)) if suffix.contains("{name}") => {
                Err(invalid("{name} may appear only once"))
            }
            Some(("", "")) => Err(invalid(
                "a marker needs more than the file's own name, like {name}.done",
            )),
            Some((prefix, suffix)) => Ok(Self::PerFile {
                prefix: prefix.into(),
                suffix: suffix.into(),
            }),
            None => Ok(Self::PerDirectory(pattern.into())),
        }
    }
}

impl ReadyMarker {
    /// True if `path` is a marker itself.
    pub fn is_marker(&self, path: &[u8]) -> bool {
        let name = file_name(path);
        match self {
            Self::PerFile { prefix, suffix } => {
                name.len() > prefix.len() + suffix.len()
                    && name.starts_with(prefix.as_bytes())
                    && name.ends_with(suffix.as_bytes())
            }
            Self::PerDirectory(marker) => name == marker.as_bytes(),
        }
    }

    /// The path of the marker that makes `path` ready.
    pub fn marker_of(&self, path: &[u8]) -> Vec<u8> {
        let name = file_name(path);
        let mut marker = path[..path.len() - name.len()].to_vec();
        match self {
            Self::PerFile { prefix, suffix } => {
                marker.extend_from_slice(prefix.as_bytes());
                marker.extend_from_slice(name);
                marker.extend_from_slice(suffix.as_bytes());
            }
            Self::PerDirectory(name) => marker.extend_from_slice(name.as_bytes()),
        }
        marker
    }
}

fn file_name(path: &[u8]) -> &[u8] {
    path.rsplit(|&b| b == b'/').next().unwrap_or(path)
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
    /// Its ready marker does not exist yet.
    NoMarker,
    /// Appended to (`--on-change=append`) without a complete line yet.
    PartialLine,
    /// It has not been seen unchanged across two listings far enough apart yet.
    Unstable {
        /// When a listing can confirm it, if it does not change.
        recheck_at: SystemTime,
    },
    /// Reading it failed in a way that may pass (permission denied, an IO error); it is tried
    /// again then.
    Retrying {
        /// When it is tried again.
        at: SystemTime,
    },
}

impl NotReady {
    /// The metric label of the reason.
    pub fn label(&self) -> &'static str {
        match self {
            NotReady::InProgressName => "in_progress_name",
            NotReady::TooYoung { .. } => "too_young",
            NotReady::NoMarker => "no_marker",
            NotReady::PartialLine => "partial_line",
            NotReady::Unstable { .. } => "unstable",
            NotReady::Retrying { .. } => "retrying",
        }
    }
}

impl Readiness {
    /// True if the path (relative to the watch root) is collected at all: wanted by the
    /// `--include`/`--exclude` globs, and not a ready marker.
    pub fn collects(&self, path: &[u8]) -> bool {
        self.names.wants(path) && !self.marker.as_ref().is_some_and(|m| m.is_marker(path))
    }

    /// Every rule for one file of `listing`, which started at `listed_at`: name and age
    /// ([`Readiness::check`]), then the marker, then stability. Blocking: a file released by
    /// its marker is examined again.
    pub(crate) fn judge(
        &self,
        root: &Path,
        file: &ListedFile,
        seen: &Seen<'_>,
        listed_at: SystemTime,
        sightings: &mut Sightings,
    ) -> Result<(), NotReady> {
        match self.check(file, listed_at) {
            // A skewed clock: the age counts from the first listing that saw the file as it is.
            Err(NotReady::TooYoung { .. })
                if mtime(file.mtime_ns) > listed_at + self.max_clock_skew =>
            {
                let first = sightings.first_future_sighting(file, listed_at);
                let ready_at = first.checked_add(self.min_age).unwrap_or(first);
                if ready_at > listed_at {
                    return Err(NotReady::TooYoung { ready_at });
                }
            }
            other => other?,
        }
        if let Some(marker) = &self.marker {
            if !seen.contains(&marker.marker_of(file.path.as_bytes())) {
                return Err(NotReady::NoMarker);
            }
            // The walk may have examined the file before its last write and found the marker
            // after it: look again, now that the marker is known to exist.
            if !unchanged_since_listed(root, file) {
                return Err(NotReady::Unstable {
                    recheck_at: listed_at,
                });
            }
        }
        match self.stable_for {
            Some(window) => sightings.check_stable(file, listed_at, window),
            None => Ok(()),
        }
    }

    /// The rules that still hold once the writer is gone (`DrainMode::WriterGone`): only an
    /// in-progress name keeps a file waiting; its age, stability and marker no longer matter.
    pub(crate) fn judge_writer_gone(&self, file: &ListedFile) -> Result<(), NotReady> {
        if self.is_in_progress_name(file.path.as_bytes()) {
            Err(NotReady::InProgressName)
        } else {
            Ok(())
        }
    }

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

/// True if `file` still has the size and modification time the listing saw.
fn unchanged_since_listed(root: &Path, file: &ListedFile) -> bool {
    std::fs::symlink_metadata(crate::listing::absolute(root, &file.path)).is_ok_and(|meta| {
        meta.len() == file.size && crate::listing::mtime_ns(&meta) == file.mtime_ns
    })
}

/// What a listing saw of a file that is waiting to be stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sighting {
    size: u64,
    mtime_ns: i64,
    inode: u64,
    /// The listing that first saw the file like this.
    at: SystemTime,
}

impl Sighting {
    fn of(file: &ListedFile, at: SystemTime) -> Self {
        Self {
            size: file.size,
            mtime_ns: file.mtime_ns,
            inode: file.inode,
            at,
        }
    }

    fn same_as(&self, other: &Sighting) -> bool {
        (self.size, self.mtime_ns, self.inode) == (other.size, other.mtime_ns, other.inode)
    }
}

/// What listings saw of files still waiting: for stability ([`Readiness::stable_for`]), and
/// for modification times in the future ([`Readiness::max_clock_skew`]). Kept in memory only:
/// after a restart the waiting starts again.
#[derive(Debug, Default)]
pub(crate) struct Sightings {
    /// What earlier listings saw of the files waiting to be stable.
    stable: HashMap<RelPath, Sighting>,
    /// What the current listing saw of them.
    stable_now: HashMap<RelPath, Sighting>,
    /// Files with a modification time in the future, as first seen like this.
    future: HashMap<RelPath, Sighting>,
    /// What the current listing saw of them.
    future_now: HashMap<RelPath, Sighting>,
    /// Files the current listing saw with a future modification time for the first time.
    newly_future: Vec<RelPath>,
    /// The files the last listing found too young, which the next walk of a few directories
    /// takes as they were until they may be old enough.
    pub(crate) young: YoungFiles,
}

/// When a listing first saw `file` as it is now (`earlier` holds what earlier listings saw);
/// recorded in `now`. A file that changed since counts as first seen now.
fn first_sighting(
    earlier: &HashMap<RelPath, Sighting>,
    now: &mut HashMap<RelPath, Sighting>,
    file: &ListedFile,
    listed_at: SystemTime,
) -> Sighting {
    let sighting = Sighting::of(file, listed_at);
    let first = earlier
        .get(&file.path)
        .filter(|earlier| earlier.same_as(&sighting))
        .map_or(sighting, |earlier| *earlier);
    now.insert(file.path.clone(), first);
    first
}

impl Sightings {
    /// When a listing first saw `file`, whose modification time is in the future, as it is now.
    fn first_future_sighting(&mut self, file: &ListedFile, listed_at: SystemTime) -> SystemTime {
        let first = first_sighting(&self.future, &mut self.future_now, file, listed_at);
        if !self.future.contains_key(&file.path) {
            self.newly_future.push(file.path.clone());
        }
        first.at
    }

    /// Files of the current listing with a modification time beyond the clock-skew tolerance.
    pub(crate) fn future_files(&self) -> usize {
        self.future_now.len()
    }

    /// Files the current listing saw with a future modification time for the first time.
    pub(crate) fn take_newly_future(&mut self) -> Vec<RelPath> {
        std::mem::take(&mut self.newly_future)
    }

    /// Ready if an earlier listing saw `file` as it is now, at least `window` before
    /// `listed_at`; else when a listing can confirm it, if it does not change.
    fn check_stable(
        &mut self,
        file: &ListedFile,
        listed_at: SystemTime,
        window: Duration,
    ) -> Result<(), NotReady> {
        let first = first_sighting(&self.stable, &mut self.stable_now, file, listed_at);
        let at = first
            .at
            .checked_add(window)
            .unwrap_or(listed_at + Duration::from_secs(100 * 365 * 86_400));
        if first.at < listed_at && at <= listed_at {
            Ok(())
        } else {
            Err(NotReady::Unstable {
                recheck_at: at.max(listed_at),
            })
        }
    }

    /// Ends a listing of part of the tree: what it saw replaces what earlier listings saw of
    /// the files it `covers`; what they saw of other files is kept.
    pub(crate) fn end_partial_listing(&mut self, covers: impl Fn(&[u8]) -> bool) {
        self.stable.retain(|path, _| !covers(path.as_bytes()));
        self.stable.extend(self.stable_now.drain());
        self.future.retain(|path, _| !covers(path.as_bytes()));
        self.future.extend(self.future_now.drain());
        self.newly_future.clear();
    }

    /// Ends a listing: only what it saw is remembered (the other files are committed or gone).
    pub(crate) fn end_listing(&mut self) {
        self.stable = std::mem::take(&mut self.stable_now);
        self.future = std::mem::take(&mut self.future_now);
        self.newly_future.clear();
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
    fn a_future_mtime_beyond_the_skew_is_aged_from_its_first_sighting() {
        let rules = Readiness::default();
        let now = SystemTime::now();
        let dir = std::path::Path::new("/nonexistent");
        let (diff, state) = (crate::diff::Diff::default(), state_store::State::new());
        let seen = Seen::new(&diff, &state, &[]);
        let mut sightings = Sightings::default();
        // Stamped a year ahead (a clock far off): it would wait for a year.
        let skewed = file(
            "skewed.log",
            Duration::ZERO,
            now + Duration::from_secs(365 * 86_400),
        );
        // Ten seconds ahead: within the tolerance, it ages normally.
        let slight = file("slight.log", Duration::ZERO, now + Duration::from_secs(10));
        let judge = |sightings: &mut Sightings, f: &ListedFile, at| {
            rules.judge(dir, f, &seen, at, sightings)
        };
        assert_eq!(
            judge(&mut sightings, &skewed, now),
            Err(NotReady::TooYoung {
                ready_at: now + rules.min_age
            })
        );
        assert!(matches!(
            judge(&mut sightings, &slight, now),
            Err(NotReady::TooYoung { ready_at }) if ready_at > now + Duration::from_secs(14)
        ));
        assert_eq!(sightings.future_files(), 1);
        assert_eq!(sightings.take_newly_future(), [RelPath::from("skewed.log")]);
        sightings.end_listing();

        let later = now + rules.min_age;
        assert_eq!(judge(&mut sightings, &skewed, later), Ok(()));
        assert!(sightings.take_newly_future().is_empty(), "warned once");
        sightings.end_listing();
        // Changed since: its age counts again from this sighting.
        let rewritten = ListedFile { size: 2, ..skewed };
        assert!(judge(&mut sightings, &rewritten, later).is_err());
    }

    #[test]
    fn every_reason_has_its_metric_label() {
        let now = SystemTime::now();
        let labels: Vec<&str> = [
            NotReady::InProgressName,
            NotReady::TooYoung { ready_at: now },
            NotReady::NoMarker,
            NotReady::Unstable { recheck_at: now },
            NotReady::PartialLine,
            NotReady::Retrying { at: now },
        ]
        .iter()
        .map(NotReady::label)
        .collect();
        assert_eq!(labels, crate::telemetry::NOT_READY_REASONS);
    }

    #[test]
    fn mtimes_before_the_epoch_convert() {
        assert_eq!(mtime(-1_000_000_000), UNIX_EPOCH - Duration::from_secs(1));
    }

    #[test]
    fn include_and_exclude_globs() {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let filter =
            NameFilter::new(&strings(&["*.log", "audit/**"]), &strings(&["debug/*"])).unwrap();
        for (path, wanted) in [
            ("a.log", true),
            ("deep/er/a.log", true),
            ("a.txt", false),
            ("audit/x.bin", true),
            ("debug/a.log", false),
            ("debug/sub/a.log", false),
        ] {
            assert_eq!(filter.wants(path.as_bytes()), wanted, "{path}");
        }
        assert!(NameFilter::default().wants(b"anything"));
        // Either kind of glob alone is applied (without any, nothing is matched at all).
        let filter = NameFilter::new(&strings(&["*.log"]), &[]).unwrap();
        assert!(filter.wants(b"a/b.log") && !filter.wants(b"a/b.txt"));
        assert!(NameFilter::new(&strings(&["a[b"]), &[]).is_err());
        // Non-UTF-8 paths are matched as bytes.
        let filter = NameFilter::new(&[], &strings(&["*.tmpx"])).unwrap();
        assert!(filter.wants(b"caf\xff.log") && !filter.wants(b"caf\xff.tmpx"));
    }

    #[test]
    fn ready_markers_per_file_and_per_directory() {
        let per_file: ReadyMarker = "{name}.done".parse().unwrap();
        assert_eq!(per_file.marker_of(b"a/x.log"), b"a/x.log.done");
        assert_eq!(per_file.marker_of(b"x.log"), b"x.log.done");
        assert!(per_file.is_marker(b"a/x.log.done"));
        assert!(!per_file.is_marker(b"a/x.log") && !per_file.is_marker(b"a/.done"));

        let per_dir: ReadyMarker = "_SUCCESS".parse().unwrap();
        assert_eq!(per_dir.marker_of(b"a/b/part-0001"), b"a/b/_SUCCESS");
        assert_eq!(per_dir.marker_of(b"part-0001"), b"_SUCCESS");
        assert!(per_dir.is_marker(b"a/_SUCCESS") && !per_dir.is_marker(b"a/_SUCCESS.log"));

        let prefixed: ReadyMarker = "ok-{name}".parse().unwrap();
        assert_eq!(prefixed.marker_of(b"d/x"), b"d/ok-x");

        for bad in ["", "a/{name}", "{name}", "{name}.{name}"] {
            assert!(bad.parse::<ReadyMarker>().is_err(), "{bad:?}");
        }
    }
}
