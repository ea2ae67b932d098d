//! The one error type of this crate.

use std::path::PathBuf;

use state_store::StateError;

/// Why a scan, or opening a [`Scanner`](crate::Scanner), failed.
///
/// Problems with single input files are not errors: they become failed files in the batch
/// (see [`FileOutcome`](crate::FileOutcome)) and the pipeline goes on.
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
    #[error("cannot write output {object}: {source}")]
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
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The process ran short of a resource (file descriptors, memory) while processing a batch.
    #[error(transparent)]
    Resources(#[from] crate::process::ResourceError),

    /// A worker thread failed outside of any single file (a bug, or the runtime shutting down).
    #[error("worker failed: {0}")]
    Worker(String),
}

impl ScanError {
    /// True for errors that retrying cannot fix: the process should stop.
    ///
    /// Losing the writer fence, damaged state, and invalid configuration are fatal; storage
    /// outages and a temporarily missing watch directory are not.
    pub fn is_fatal(&self) -> bool {
        match self {
            ScanError::State(e) => !matches!(e, StateError::Storage { .. }),
            ScanError::OutputFenced { .. } | ScanError::Config(_) => true,
            ScanError::WatchDir { .. }
            | ScanError::Output { .. }
            | ScanError::Resources(_)
            | ScanError::Worker(_) => false,
        }
    }

    /// True when another writer owns the state or output.
    pub fn is_fenced(&self) -> bool {
        matches!(
            self,
            ScanError::State(StateError::Fenced { .. }) | ScanError::OutputFenced { .. }
        )
    }
}
