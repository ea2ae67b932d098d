//! The one error type of this crate.

use crate::model::RelPath;

/// Everything that can go wrong while locating, reading, verifying or writing state.
///
/// Every variant names the object or location it concerns, so that an operator reading a single
/// log line knows what to look at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A storage location string is not a supported URL or path.
    #[error("invalid storage location {input:?}: {reason}")]
    InvalidLocation {
        /// The string as given by the user, credentials redacted.
        input: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A source id cannot be used as a path segment.
    #[error("invalid source id {id:?}: {reason}")]
    InvalidSourceId {
        /// The rejected id.
        id: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// The storage backend failed an operation.
    #[error("storage error on {object}")]
    Storage {
        /// URL of the object or prefix the operation concerned.
        object: String,
        /// The backend's error.
        #[source]
        source: object_store::Error,
    },

    /// A location cannot be written (checked at start-up with a probe object).
    #[error("cannot write to {location}")]
    NotWritable {
        /// URL of the location.
        location: String,
        /// The backend's error.
        #[source]
        source: object_store::Error,
    },

    /// An object exists but cannot be decoded: truncated, bit-flipped, or not a state object.
    #[error("state object {object} is corrupt: {reason}")]
    Corrupt {
        /// URL of the object.
        object: String,
        /// What check failed.
        reason: String,
    },

    /// An object was written in a format version this build does not know.
    #[error(
        "state object {object} has format version {found}, this build reads version {supported}: \
         it was written by a newer Gleaner, or its header is corrupt"
    )]
    UnsupportedVersion {
        /// URL of the object.
        object: String,
        /// Version found in the header.
        found: u16,
        /// Highest version this build reads.
        supported: u16,
    },

    /// An object names a codec this build does not know.
    #[error("state object {object} uses codec id {codec}, which this build does not know")]
    UnknownCodec {
        /// URL of the object.
        object: String,
        /// Codec id found in the header.
        codec: u8,
    },

    /// Another writer created an object this writer needed to create: it owns the state now.
    ///
    /// This is the fence of the single-writer guarantee: the loser must stop.
    #[error(
        "another writer owns the state at {location}: {object} already exists \
         (generation {generation} was claimed by another gleaner process with the same \
         --state and --source-id); stopping"
    )]
    Fenced {
        /// URL of the state directory of this source.
        location: String,
        /// URL of the object that already existed.
        object: String,
        /// The generation that was contested.
        generation: u64,
    },

    /// A delta was applied to a state it does not follow (a bug, or a damaged log: loading
    /// reports it as [`StateError::Corrupt`], naming the object).
    #[error("a delta of generation {found} cannot follow generation {current}")]
    OutOfOrder {
        /// The generation the delta had to follow: the state's, or for a later delta of a
        /// group applied together ([`crate::State::apply_owned_many`]), the one before it.
        current: u64,
        /// The delta's generation.
        found: u64,
    },

    /// Snapshot entries were not sorted by path without duplicates.
    #[error("entries are not sorted by path: {before:?} comes before {after:?}")]
    Unsorted {
        /// The entry that came first.
        before: RelPath,
        /// The entry that came next and sorts before it, or equals it.
        after: RelPath,
    },

    /// The log is not contiguous, or holds an object that cannot belong where it is.
    #[error("state log at {location} is inconsistent: {reason}")]
    Inconsistent {
        /// URL of the state directory of this source.
        location: String,
        /// What is wrong.
        reason: String,
    },
}

impl StateError {
    /// An [`InvalidLocation`](StateError::InvalidLocation) error for `input`, shown with any
    /// credentials in it redacted.
    pub(crate) fn invalid_location(input: &str, reason: String) -> Self {
        StateError::InvalidLocation {
            input: crate::location::redacted(input),
            reason,
        }
    }

    /// True when an object that was expected to exist was not found.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            StateError::Storage {
                source: object_store::Error::NotFound { .. },
                ..
            }
        )
    }

    /// True for errors that another attempt may not hit (network, throttling, timeouts).
    ///
    /// Corruption, fencing and invalid configuration are never transient.
    pub fn is_transient(&self) -> bool {
        match self {
            StateError::Storage { source, .. } => !matches!(
                source,
                object_store::Error::NotFound { .. }
                    | object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. }
                    | object_store::Error::InvalidPath { .. }
                    | object_store::Error::NotSupported { .. }
                    | object_store::Error::NotImplemented { .. }
                    | object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
                    | object_store::Error::UnknownConfigurationKey { .. }
            ),
            _ => false,
        }
    }
}
