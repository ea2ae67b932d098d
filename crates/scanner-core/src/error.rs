//! The errors of this crate: [`ScanError`] for what stops a scan or a start, and
//! [`ConfigError`] for a configuration that cannot work. [`ErrorChain`] prints either with its
//! causes, on one line.

use std::fmt;
use std::path::PathBuf;

use state_store::StateError;

/// Why a scan, or opening a [`Scanner`](crate::Scanner), failed.
///
/// Problems with single input files are not errors: they become failed files in the batch
/// (see [`FileOutcome`](crate::FileOutcome)) and the pipeline goes on.
///
/// Like every error of Gleaner's libraries, it displays its own message and returns its cause
/// as [`source`](std::error::Error::source); [`ErrorChain`] prints the whole chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// The watched directory is missing, not a directory, or unreadable.
    #[error("watch directory {}: {reason}", path.display())]
    WatchDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Reading or writing state failed (this includes losing the single-writer fence).
    #[error(transparent)]
    State(#[from] StateError),

    /// Writing an output object failed.
    #[error("cannot write output {object}")]
    Output {
        /// URL of the object.
        object: String,
        /// The backend's error.
        #[source]
        source: object_store::Error,
    },

    /// The output object of a freshly planned generation already exists: another writer used
    /// this generation. Replacing it could lose that writer's committed results.
    #[error(
        "another writer owns the output: {object} already exists for a generation this process \
         just planned (another gleaner process with the same --state and --source-id?); stopping"
    )]
    OutputFenced {
        /// URL of the object.
        object: String,
    },

    /// The configuration cannot work.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),

    /// A directory files are moved to (`--after move:DIR`, `--quarantine`) cannot be created.
    #[error("cleanup directory {} cannot be used", dir.display())]
    CleanupDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// Another watch root wrote the last generation of this source id: two roots under one
    /// source id would take turns, each forgetting the other's files.
    #[error(
        "source id {source_id} belongs to another watch root: generation {generation} was written \
         by {theirs}, and this is {ours}. Give each root its own --source-id (the default, the \
         host name, is the Pod's name); if the other root is gone for good, pass --adopt-source \
         once to take the source id over"
    )]
    AnotherRoot {
        /// The source id.
        source_id: String,
        /// The last generation that recorded its root.
        generation: u64,
        /// The root that wrote it.
        theirs: String,
        /// This root.
        ours: String,
    },

    /// This watch root was taken over by another one under the same source id (a new root in
    /// its place, or `--adopt-source`), and has come back: two live roots under one source id
    /// would take turns, each forgetting the other's files.
    #[error(
        "source id {source_id}: this watch root, {ours}, was taken over by {successor}, and is \
         still collecting: two Pods of one name in two clusters or namespaces, sharing a state \
         location? Give each its own --source-id (with the namespace or cluster in it); \
         --adopt-source takes the source id back"
    )]
    RootRetired {
        /// The source id.
        source_id: String,
        /// This root.
        ours: String,
        /// The root that took over, as recorded.
        successor: String,
    },

    /// The watch root is collected under other source ids (recorded in it): collecting it
    /// under this one too would process every file again.
    #[error(
        "{dir} is collected by source id {recorded} (recorded in {file}): collecting it as \
         {ours} too would process every file in it again. Use the same --source-id (set one \
         that survives the Pod, for a persistent volume), pass --adopt-source to take the \
         directory over (its files are processed again under {ours}), or --share-root if \
         several collectors divide it on purpose (with --include/--exclude)"
    )]
    RootCollected {
        /// The watch root.
        dir: PathBuf,
        /// The source ids recorded in it, comma-separated.
        recorded: String,
        /// The record.
        file: PathBuf,
        /// This source id.
        ours: String,
    },

    /// The outputs hold batches the state does not know (state deleted, or restored from an
    /// older copy): starting would process their files again and duplicate their results.
    #[error(
        "refusing to start: {what}. Starting would process those files again and duplicate \
         their results. If that is what you want, pass --allow-rescan"
    )]
    RescanRefused {
        /// What was found.
        what: String,
    },

    /// Another writer holds the source: its lease was live when this process started. Only
    /// what must not share a source with a live writer refuses so (a baseline, a replay); a run
    /// relies on the fence of its commits.
    #[error(
        "another gleaner holds source id {source_id:?}: the lease of {lease} is live; stop it \
         first (or wait until its lease is older than 5 minutes)"
    )]
    LiveWriter {
        /// The source id.
        source_id: String,
        /// The other writer's lease, as text.
        lease: String,
    },

    /// The process ran short of a resource (file descriptors, memory) while processing a batch.
    #[error(transparent)]
    Resources(#[from] crate::process::ResourceError),

    /// A worker thread failed outside of any single file (the runtime shutting down).
    #[error("the worker thread of {task} failed")]
    Worker {
        /// What the worker was doing.
        task: &'static str,
        /// How it ended.
        #[source]
        source: tokio::task::JoinError,
    },

    /// An output object cannot be read back to repair the state from it.
    #[error(
        "cannot repair the state from {object}: {reason}; restore the state from a copy instead"
    )]
    Unrepairable {
        /// URL of the output object.
        object: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Files named for a replay that cannot be replayed: nothing was replayed.
    #[error("cannot replay {}", describe_refused(files))]
    NotReplayable {
        /// Each named path that cannot be replayed, and why.
        files: Vec<(state_store::RelPath, String)>,
    },

    /// A replay's selection holds no file that can be replayed.
    #[error("nothing to replay: {reason}")]
    NothingToReplay {
        /// Why.
        reason: String,
    },

    /// An invariant of the batch loop broke: a bug. The state is reloaded before going on.
    #[error("internal error (a bug; please report it): {0}")]
    Internal(String),
}

/// The refused files of a replay, each with its reason.
fn describe_refused(files: &[(state_store::RelPath, String)]) -> String {
    let lines: Vec<String> = files
        .iter()
        .map(|(path, why)| format!("{path}: {why}"))
        .collect();
    lines.join("; ")
}

impl ScanError {
    /// True for errors that retrying cannot fix: the process should stop.
    ///
    /// Losing the writer fence, damaged state, invalid configuration and broken invariants are
    /// fatal; storage outages and a temporarily missing watch directory are not.
    pub fn is_fatal(&self) -> bool {
        match self {
            ScanError::State(e) => !matches!(e, StateError::Storage { .. }),
            ScanError::OutputFenced { .. }
            | ScanError::Config(_)
            | ScanError::CleanupDir { .. }
            | ScanError::RescanRefused { .. }
            | ScanError::AnotherRoot { .. }
            | ScanError::RootRetired { .. }
            | ScanError::RootCollected { .. }
            | ScanError::LiveWriter { .. }
            | ScanError::Unrepairable { .. }
            | ScanError::NotReplayable { .. }
            | ScanError::NothingToReplay { .. }
            | ScanError::Internal(_) => true,
            ScanError::WatchDir { .. }
            | ScanError::Output { .. }
            | ScanError::Resources(_)
            | ScanError::Worker { .. } => false,
        }
    }

    /// True when another writer owns the state or output.
    pub fn is_fenced(&self) -> bool {
        matches!(
            self,
            ScanError::State(StateError::Fenced { .. })
                | ScanError::OutputFenced { .. }
                | ScanError::AnotherRoot { .. }
                | ScanError::RootRetired { .. }
                | ScanError::RootCollected { .. }
                | ScanError::LiveWriter { .. }
        )
    }

    /// The pipeline stage that failed, as the `stage` label of `gleaner_errors_total`.
    pub fn stage(&self) -> &'static str {
        match self {
            ScanError::WatchDir { .. } => "watch",
            ScanError::State(_)
            | ScanError::RescanRefused { .. }
            | ScanError::AnotherRoot { .. }
            | ScanError::RootRetired { .. }
            | ScanError::RootCollected { .. }
            | ScanError::LiveWriter { .. }
            | ScanError::Unrepairable { .. } => "state",
            ScanError::Output { .. } | ScanError::OutputFenced { .. } => "output",
            ScanError::Config(_)
            | ScanError::CleanupDir { .. }
            | ScanError::NotReplayable { .. }
            | ScanError::NothingToReplay { .. } => "config",
            ScanError::Resources(_) => "resources",
            ScanError::Worker { .. } => "worker",
            ScanError::Internal(_) => "internal",
        }
    }
}

/// A configuration that cannot work: a value that is not one of the choices, or settings that
/// contradict each other. [`ScannerConfig::validate`](crate::ScannerConfig::validate) finds
/// the contradictions before anything is opened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value that is not one of the accepted ones.
    #[error("{value:?}: expected {expected}")]
    InvalidValue {
        /// The value as given.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },

    /// A ready-marker pattern that cannot work.
    #[error("ready marker {pattern:?}: {reason}")]
    ReadyMarker {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A label that cannot be used ([`crate::labels`]).
    #[error(transparent)]
    Label(#[from] crate::labels::LabelError),

    /// A partition label that cannot be one; the message says why.
    #[error("--partition-label {key}: {reason}")]
    PartitionLabel {
        /// The key named.
        key: String,
        /// Why it cannot be a partition.
        reason: &'static str,
    },

    /// A count that must be at least 1.
    #[error("{setting} must be at least 1")]
    Zero {
        /// The setting.
        setting: &'static str,
    },

    /// Two settings that contradict each other; the message says why.
    #[error("{0}")]
    Conflict(&'static str),

    /// `gleaner state repair` was named an output layout the outputs do not have, or cannot
    /// tell which one they have; the message names the flag that finds them.
    #[error("{0}")]
    OutputLayout(String),

    /// The watched directory lies inside a folder Gleaner writes objects into (a day of the
    /// hive layout, shipped leftovers): they would be collected as input.
    #[error("the watched directory {} is inside {what}; {consequence}", watch.display())]
    WatchDirInside {
        /// Where objects are written, with its location.
        what: String,
        /// The watched directory.
        watch: PathBuf,
        /// What would go wrong.
        consequence: &'static str,
    },

    /// Something Gleaner writes (state, outputs, moved files) would land inside the watched
    /// directory.
    #[error("{what} is inside the watched directory {}; {consequence}", watch.display())]
    InsideWatchDir {
        /// What would be written there, with its location.
        what: String,
        /// The watched directory.
        watch: PathBuf,
        /// What would go wrong.
        consequence: &'static str,
    },
}

impl ConfigError {
    /// The choice `value` names among `choices` (name, value), or an
    /// [`InvalidValue`](ConfigError::InvalidValue) error listing them as `expected`.
    pub(crate) fn choose<T: Clone>(
        value: &str,
        choices: &[(&str, T)],
        expected: &'static str,
    ) -> Result<T, ConfigError> {
        choices
            .iter()
            .find(|(name, _)| *name == value)
            .map(|(_, choice)| choice.clone())
            .ok_or_else(|| ConfigError::InvalidValue {
                value: value.to_string(),
                expected,
            })
    }
}

/// Shows an error and its causes on one line: `message: cause: root cause`.
///
/// Gleaner's own errors show only their own message and leave the cause to
/// [`source`](std::error::Error::source). Some errors of other crates (`object_store`'s, for
/// one) repeat their source's message in their own; a cause whose text is already shown is
/// skipped, so nothing is said twice. Line breaks become spaces: one error, one log line.
///
/// ```
/// use scanner_core::{ConfigError, ErrorChain, ScanError};
///
/// let e = ScanError::from(ConfigError::Zero { setting: "workers" });
/// assert_eq!(ErrorChain(&e).to_string(), "invalid configuration: workers must be at least 1");
/// ```
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = String::new();
        let mut cause = Some(self.0);
        while let Some(error) = cause {
            let text = error.to_string();
            if !shown.contains(&text) {
                if !shown.is_empty() {
                    shown.push_str(": ");
                }
                shown.push_str(&text);
            }
            cause = error.source();
        }
        f.write_str(&shown.replace('\n', " "))
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_shows_every_cause_once() {
        let io = std::io::Error::other("disk on fire");
        let e = ScanError::Output {
            object: "memory:///out/1.ndjson".into(),
            source: object_store::Error::Generic {
                store: "test",
                source: Box::new(io),
            },
        };
        assert_eq!(e.to_string(), "cannot write output memory:///out/1.ndjson");
        let line = ErrorChain(&e).to_string();
        // object_store repeats its source's message: shown once.
        assert_eq!(line.matches("disk on fire").count(), 1, "{line}");
        assert!(
            line.starts_with("cannot write output memory:///out/1.ndjson: "),
            "{line}"
        );
    }
}
