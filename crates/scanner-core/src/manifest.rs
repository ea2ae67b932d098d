//! The commit manifest: one small JSON record per committed generation, beside the outputs, so
//! that a reader can tell committed output objects from the object of a batch still on its way
//! to its commit (or whose process died before it).
//!
//! An output object is written *before* its generation's commit (the delta): until the commit,
//! it may be rewritten by a redo, and a reader listing the output location sees it all the same.
//! The record of generation `g` is `<output>/.committed/<source-id>/<g, 20 digits>.json`:
//!
//! ```json
//! {"manifest":1,"source_id":"pod-7f9c","generation":12,"key":"pod-7f9c/00000000000000000012.ndjson","committed_at":"2026-11-24T10:15:04.123Z"}
//! ```
//!
//! * It is written only **after** the delta is created, so a reader that reads the objects the
//!   records name never sees an uncommitted object.
//! * A crash between the commit and the record loses no record: the records are written before
//!   a snapshot folds the deltas, and a start (or a reload after a failure) writes the records
//!   of the loaded deltas that have none. A record is a function of its delta, so writing it
//!   again writes the same bytes.
//! * `.committed/` starts with a dot: no source id does, so no source's outputs live there, and
//!   engines' partition discovery (Spark, Hive) skips it.

use object_store::{ObjectStoreExt, PutPayload};
use serde::Serialize;
use state_store::{CommittedOutput, Location, SourceId};

use crate::ScanError;

/// The version of the commit record's format, written in every record (`"manifest":1`).
pub const MANIFEST_FORMAT: u32 = 1;

/// The folder below the output location that holds the commit records, one folder per source.
pub const MANIFEST_FOLDER: &str = ".committed";

/// One commit record, as written.
#[derive(Debug, Serialize)]
struct CommitRecord<'a> {
    /// [`MANIFEST_FORMAT`].
    manifest: u32,
    source_id: &'a str,
    generation: u64,
    /// The output object, relative to the output location.
    key: &'a str,
    /// When the generation was committed: RFC 3339, UTC, milliseconds.
    committed_at: String,
}

/// The commit records of one source: `<output>/.committed/<source-id>/`.
#[derive(Clone, Debug)]
pub struct CommitManifest {
    folder: Location,
    source_id: SourceId,
}

impl CommitManifest {
    /// The records of `source_id` under the output location `output`.
    pub fn new(output: &Location, source_id: &SourceId) -> Self {
        Self {
            folder: output.child(MANIFEST_FOLDER).child(source_id.as_str()),
            source_id: source_id.clone(),
        }
    }

    /// The folder of the records.
    pub fn folder(&self) -> &Location {
        &self.folder
    }

    /// The bytes of the record of `commit`: a function of the commit alone.
    pub fn record(&self, commit: &CommittedOutput) -> Vec<u8> {
        let committed_at =
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(commit.committed_at_ms);
        let record = CommitRecord {
            manifest: MANIFEST_FORMAT,
            source_id: self.source_id.as_str(),
            generation: commit.generation,
            key: &commit.output_key,
            committed_at: humantime::format_rfc3339_millis(committed_at).to_string(),
        };
        let mut bytes = serde_json::to_vec(&record).expect("commit records always serialise");
        bytes.push(b'\n');
        bytes
    }

    /// Writes the record of `commit` (again, if it is there: the same bytes).
    pub async fn write(&self, commit: &CommittedOutput) -> Result<(), ScanError> {
        let path = self.folder.object(&record_name(commit.generation));
        self.folder
            .store()
            .put(&path, PutPayload::from(self.record(commit)))
            .await
            .map(|_| ())
            .map_err(|source| ScanError::Output {
                object: self.folder.describe(&path),
                source,
            })
    }

    /// The generations from `first` on that have a record: one listing from `first`'s name.
    pub async fn recorded_from(&self, first: u64) -> Result<Vec<u64>, ScanError> {
        use futures::TryStreamExt;
        let prefix = self.folder.prefix();
        // Names are zero-padded: listing after the name before `first`'s skips the history.
        let offset = self
            .folder
            .object(&format!("{:020}", first.saturating_sub(1)));
        let metas: Vec<_> = self
            .folder
            .store()
            .list_with_offset(Some(prefix), &offset)
            .try_collect()
            .await
            .map_err(|source| ScanError::Output {
                object: self.folder.to_string(),
                source,
            })?;
        let mut recorded: Vec<u64> = metas
            .iter()
            .filter_map(|meta| meta.location.filename().and_then(parse_record_name))
            .filter(|&generation| generation >= first)
            .collect();
        recorded.sort_unstable();
        Ok(recorded)
    }

    /// Of `commits` (in generation order), those whose records are not there: one listing.
    pub async fn unrecorded(
        &self,
        mut commits: Vec<CommittedOutput>,
    ) -> Result<Vec<CommittedOutput>, ScanError> {
        let Some(first) = commits.first() else {
            return Ok(commits);
        };
        let recorded = self.recorded_from(first.generation).await?;
        commits.retain(|commit| recorded.binary_search(&commit.generation).is_err());
        Ok(commits)
    }

    /// Removes the temporary files a killed process left among the records of a local output
    /// directory. Returns how many were removed.
    pub fn remove_orphaned_temporaries(&self) -> usize {
        self.folder
            .remove_orphaned_temporaries(|name| parse_record_name(name).is_some())
    }
}

/// The name of the record of `generation`.
fn record_name(generation: u64) -> String {
    format!("{generation:020}.json")
}

/// The generation a record's name holds (`<20 digits>.json`).
fn parse_record_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(generation: u64) -> CommittedOutput {
        CommittedOutput {
            generation,
            output_key: format!("pod/{generation:020}.ndjson"),
            committed_at_ms: 1_796_083_199_123,
        }
    }

    #[tokio::test]
    async fn records_are_json_named_by_generation_and_listed_from_a_generation() {
        let dir = tempfile::tempdir().unwrap();
        let output = Location::parse(dir.path().to_str().unwrap()).unwrap();
        let manifest = CommitManifest::new(&output, &"pod".parse().unwrap());
        for generation in [1, 2, 3, 10] {
            manifest.write(&commit(generation)).await.unwrap();
        }
        let written =
            std::fs::read(dir.path().join(".committed/pod/00000000000000000002.json")).unwrap();
        assert_eq!(written, manifest.record(&commit(2)));
        let record: serde_json::Value = serde_json::from_slice(&written).unwrap();
        assert_eq!(
            record,
            serde_json::json!({
                "manifest": 1, "source_id": "pod", "generation": 2,
                "key": "pod/00000000000000000002.ndjson",
                "committed_at": "2026-11-30T23:59:59.123Z",
            })
        );
        assert_eq!(manifest.recorded_from(1).await.unwrap(), [1, 2, 3, 10]);
        assert_eq!(manifest.recorded_from(3).await.unwrap(), [3, 10]);
        assert!(manifest.recorded_from(11).await.unwrap().is_empty());
        assert_eq!(parse_record_name("00000000000000000002.json"), Some(2));
        assert_eq!(parse_record_name("00000000000000000002.ndjson"), None);
    }
}
