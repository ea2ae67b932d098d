//! Batch outputs: one newline-delimited JSON object per generation.

use std::borrow::Cow;
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use object_store::path::{Path as ObjectPath, PathPart};
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use state_store::{Location, PlannedFile, RelPath, SourceId};

use crate::ScanError;
use crate::labels::{Label, Labels};
use crate::manifest::CommitManifest;
use crate::process::FileOutcome;

/// How output objects are compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// Plain `.ndjson`.
    #[default]
    None,
    /// Gzip, `.ndjson.gz`.
    Gzip,
}

impl Compression {
    fn extension(self) -> &'static str {
        match self {
            Compression::None => "ndjson",
            Compression::Gzip => "ndjson.gz",
        }
    }
}

/// Whether an output object may replace an existing one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// First attempt of a freshly planned batch: an existing object means another writer
    /// already used this generation, so fail instead of replacing its output.
    Create,
    /// Redo of an interrupted batch: replace what the interrupted attempt may have written.
    Replace,
}

/// The version of the output line's schema, written in every line (`"schema":1`). The JSON
/// Schema files in the repository's `schema/` folder describe it; a change to the meaning or
/// type of a field increments it, and new optional fields may appear within a version.
pub const OUTPUT_SCHEMA: u32 = 1;

/// One line of an output object: the result of one file.
#[derive(Debug, Serialize)]
pub struct OutputLine<'a> {
    /// [`OUTPUT_SCHEMA`].
    pub schema: u32,
    /// The instance that produced it.
    pub source_id: &'a str,
    /// The generation whose batch it belongs to.
    pub generation: u64,
    /// Present, and true, only in the lines of a replay (`gleaner state replay`): the file was
    /// processed before, by an earlier generation, and this is its result again, on purpose.
    /// A reader that wants one result per file takes the line of the highest generation.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
    /// Path relative to the watch root, one-to-one: a backslash is written `\\` and a byte
    /// that is not UTF-8 `\xNN` (see `RelPath`'s `Display`), so two
    /// files never share a `path`.
    pub path: Cow<'a, str>,
    /// The exact bytes of the path, present only when `path` is escaped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_bytes: Option<&'a [u8]>,
    /// Size when listed, in bytes.
    pub size: u64,
    /// `gzip` or `zstd` when the file was compressed (the result covers the decoded bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<&'static str>,
    /// Modification time when listed, RFC 3339 in UTC with microseconds.
    pub mtime: String,
    /// First byte processed, present only when not the start of the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
    /// The processor's name.
    pub processor: &'a str,
    /// The processor's result, when processing succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<&'a serde_json::value::RawValue>,
    /// Why processing failed, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    /// What shows that a file found later under `path` is still the file of this line (see
    /// [`LineIdentity`]). Lines of earlier versions have none.
    pub identity: LineIdentity,
    /// Where the result came from, as the operator labelled the source ([`crate::labels`]);
    /// absent without labels.
    #[serde(skip_serializing_if = "Labels::is_empty")]
    pub labels: &'a Labels,
}

/// What an output line records of its file's identity, beyond its size and modification time:
/// `gleaner state repair`, which commits a lost generation again from its output object, takes
/// a file in the watched directory for the one of the line only when these agree
/// ([`crate::repair`]); a look-alike (another file with the same size and modification time, as
/// `cp -p` or `rsync -t` leave) is processed again instead.
///
/// Times are RFC 3339 in UTC with nanoseconds, so that they compare exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LineIdentity {
    /// Inode when listed (absent where the platform has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inode: Option<u64>,
    /// Birth time when listed (absent where the file system does not record it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub btime: Option<String>,
    /// Status change time (ctime) when the file was opened for reading: any write, rename,
    /// `chmod` or `touch` since changes it (absent when the file was not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctime: Option<String>,
    /// Fingerprint of the file's first KiB, 16 hex digits: only where `--identity content` or
    /// `--on-change append` took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

impl LineIdentity {
    /// The identity of `file` as listed, with its ctime when read (`ctime_ns`) and its
    /// fingerprint (0: not taken).
    pub fn of(file: &PlannedFile, ctime_ns: Option<i64>, fingerprint: u64) -> Self {
        Self {
            inode: (file.inode != 0).then_some(file.inode),
            btime: exact_time(file.btime_ns),
            ctime: ctime_ns.and_then(exact_time),
            fingerprint: (fingerprint != 0).then(|| format!("{fingerprint:016x}")),
        }
    }

    /// The birth time, in nanoseconds since the Unix epoch, if recorded and well-formed.
    pub fn btime_ns(&self) -> Option<i64> {
        self.btime.as_deref().and_then(parse_exact_time)
    }

    /// The ctime, in nanoseconds since the Unix epoch, if recorded and well-formed.
    pub fn ctime_ns(&self) -> Option<i64> {
        self.ctime.as_deref().and_then(parse_exact_time)
    }

    /// The fingerprint, if recorded and well-formed.
    pub fn fingerprint(&self) -> Option<u64> {
        self.fingerprint
            .as_deref()
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .filter(|&f| f != 0)
    }
}

/// A time in nanoseconds since the Unix epoch as RFC 3339 with nanoseconds; `None` for 0 and
/// earlier (unknown, or a broken clock: not a time to compare).
fn exact_time(ns: i64) -> Option<String> {
    let ns = u64::try_from(ns).ok().filter(|&ns| ns > 0)?;
    Some(humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(ns)).to_string())
}

/// The nanoseconds since the Unix epoch of an [`exact_time`].
fn parse_exact_time(text: &str) -> Option<i64> {
    let since = humantime::parse_rfc3339(text)
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()?;
    i64::try_from(since.as_nanos()).ok()
}

/// A folder Gleaner writes objects into ([`OutputSink::written_folders`]).
#[derive(Clone, Debug)]
pub(crate) struct WrittenFolder {
    /// What is written there, for messages.
    pub(crate) what: &'static str,
    /// The folder.
    pub(crate) folder: Location,
    /// How many levels below it objects land (1: directly in it); `None`: at any depth.
    pub(crate) depth: Option<usize>,
}

impl WrittenFolder {
    /// Whether a walk of `watch_dir` (absolute, links resolved) would meet objects written
    /// here: the folder is inside it (or is it), or it lies inside the folder above the depth
    /// objects land at.
    pub(crate) fn collected_by(&self, watch_dir: &std::path::Path) -> Option<Overlap> {
        let dir = self.folder.local_dir()?;
        if dir.starts_with(watch_dir) {
            return Some(Overlap::FolderInsideWatch);
        }
        let below = watch_dir.strip_prefix(dir).ok()?.components().count();
        self.depth
            .is_none_or(|depth| below < depth)
            .then_some(Overlap::WatchInsideFolder)
    }
}

/// How a written folder and the watched directory overlap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Overlap {
    /// The folder is the watched directory, or inside it.
    FolderInsideWatch,
    /// The watched directory is inside the folder, where objects land.
    WatchInsideFolder,
}

/// How output keys are laid out below the output location.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputLayout {
    /// `<source-id>/<generation>.ndjson[.gz]`.
    #[default]
    Flat,
    /// `source=<source-id>/date=<YYYY-MM-DD>/<generation>.ndjson[.gz]`: Hive-style partitions,
    /// which engines (DuckDB, Spark, Trino, Athena) prune by path. The date is the UTC day the
    /// batch was planned; the key is stored in the plan, so a redone batch writes the same key
    /// whatever the day of the redo. Partition labels ([`OutputSink::with_partitions`]) come
    /// between the source and the date: `source=<id>/<key>=<value>/…/date=<day>/…`.
    Hive,
}

impl OutputLayout {
    /// The value of `--output-layout` that names it.
    pub fn flag_value(self) -> &'static str {
        match self {
            OutputLayout::Flat => "flat",
            OutputLayout::Hive => "hive",
        }
    }

    /// The other layout.
    pub(crate) fn other(self) -> OutputLayout {
        match self {
            OutputLayout::Flat => OutputLayout::Hive,
            OutputLayout::Hive => OutputLayout::Flat,
        }
    }
}

/// Where and how batch outputs are written: `<output>/<source-id>/<generation>.ndjson[.gz]`,
/// or in Hive-style partitions ([`OutputLayout`]).
#[derive(Clone, Debug)]
pub struct OutputSink {
    location: Location,
    source_id: SourceId,
    compression: Compression,
    layout: OutputLayout,
    /// Labels that are partition folders of the hive layout, in order.
    partitions: Vec<Label>,
    manifest: CommitManifest,
}

impl OutputSink {
    /// Outputs of `source_id` under `location`, flat.
    pub fn new(location: Location, source_id: &SourceId, compression: Compression) -> Self {
        Self {
            manifest: CommitManifest::new(&location, source_id),
            location,
            source_id: source_id.clone(),
            compression,
            layout: OutputLayout::Flat,
            partitions: Vec::new(),
        }
    }

    /// The same sink with `partitions` as folders of the hive layout, in this order, between
    /// the source and the date (the flat layout has no partitions: ignored there).
    pub fn with_partitions(mut self, partitions: Vec<Label>) -> Self {
        self.partitions = partitions;
        self
    }

    /// How many folders below the source folder objects land: the partitions and the date of
    /// the hive layout, none in the flat one.
    fn partition_depth(&self) -> usize {
        match self.layout {
            OutputLayout::Flat => 0,
            OutputLayout::Hive => self.partitions.len() + 1,
        }
    }

    /// The same sink with keys laid out as `layout` says.
    pub fn with_layout(mut self, layout: OutputLayout) -> Self {
        self.layout = layout;
        self
    }

    /// The folder below the output location that holds every object of this source.
    fn source_folder(&self) -> String {
        match self.layout {
            OutputLayout::Flat => self.source_id.to_string(),
            OutputLayout::Hive => format!("source={}", self.source_id),
        }
    }

    /// The commit records of this sink's source ([`crate::manifest`]).
    pub fn manifest(&self) -> &CommitManifest {
        &self.manifest
    }

    /// The output location.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Where this sink writes below its location: each folder, what lands there, and how deep
    /// below it objects land. Batch outputs land directly in `<source-id>/` (flat), or one
    /// level down, in a `date=` folder of `source=<source-id>/` (hive); the raw copies of
    /// leftovers (`shipping_leftovers`) at any depth below `.leftovers/<source-id>/`, since
    /// they keep their paths; commit records directly in `.committed/<source-id>/`. The start-up
    /// guard refuses a watched directory that would collect
    /// any of them.
    pub(crate) fn written_folders(&self, shipping_leftovers: bool) -> Vec<WrittenFolder> {
        let mut folders = vec![WrittenFolder {
            what: "the output location",
            folder: self.location.child(&self.source_folder()),
            depth: Some(self.partition_depth() + 1),
        }];
        folders.push(WrittenFolder {
            what: "the commit records",
            folder: self.manifest.folder().clone(),
            depth: Some(1),
        });
        if shipping_leftovers {
            folders.push(WrittenFolder {
                what: "the leftovers folder of --ship-leftovers",
                folder: self
                    .location
                    .child(".leftovers")
                    .child(self.source_id.as_str()),
                depth: None,
            });
        }
        folders
    }

    /// The key of generation `generation`'s object, planned at `planned_at`, relative to the
    /// output location.
    ///
    /// Computed once, when the batch is planned, and stored in its plan: a redone batch
    /// replaces its earlier output instead of adding one. Flat keys depend on the generation
    /// (and the compression) only; Hive keys on the UTC day of `planned_at` as well.
    pub fn key_for(&self, generation: u64, planned_at: std::time::SystemTime) -> String {
        let name = format!("{generation:020}.{}", self.compression.extension());
        match self.layout {
            OutputLayout::Flat => format!("{}/{name}", self.source_folder()),
            OutputLayout::Hive => {
                let day = &humantime::format_rfc3339_seconds(planned_at).to_string()[..10];
                let partitions: String = self
                    .partitions
                    .iter()
                    .map(|label| format!("{label}/"))
                    .collect();
                format!("{}/{partitions}date={day}/{name}", self.source_folder())
            }
        }
    }

    /// The URL of the object at `key`, for messages.
    pub fn describe(&self, key: &str) -> String {
        format!("{}/{key}", self.location.to_string().trim_end_matches('/'))
    }

    /// Renders a batch's lines, one per planned file with its outcome and the fingerprint of
    /// its first bytes (0: not taken), in the order given, each with `labels`, compressed as
    /// the key's extension says; the lines of a `replay` say so. CPU work: call it from a
    /// worker thread.
    pub fn render<'a>(
        source_id: &str,
        processor: &str,
        labels: &Labels,
        (generation, replay): (u64, bool),
        key: &str,
        lines: impl IntoIterator<Item = (&'a PlannedFile, &'a FileOutcome, u64)>,
    ) -> Vec<u8> {
        let lines = lines.into_iter();
        let mut body = Vec::with_capacity(lines.size_hint().0 * 300);
        for (file, outcome, fingerprint) in lines {
            let (result, error, encoding, ctime_ns) = match outcome {
                FileOutcome::Done {
                    result,
                    encoding,
                    ctime_ns,
                    ..
                } => (Some(&**result), None, encoding.name(), Some(*ctime_ns)),
                FileOutcome::Failed { reason, .. } => (None, Some(reason.as_str()), None, None),
            };
            let line = OutputLine {
                schema: OUTPUT_SCHEMA,
                source_id,
                generation,
                replay,
                path: match file.path.as_str() {
                    Some(s) if file.path.displays_as_is() => Cow::Borrowed(s),
                    _ => Cow::Owned(file.path.to_string()),
                },
                path_bytes: (!file.path.displays_as_is()).then(|| file.path.as_bytes()),
                size: file.size,
                encoding,
                mtime: rfc3339(file.mtime_ns),
                start: (file.start > 0).then_some(file.start),
                processor,
                result,
                error,
                identity: LineIdentity::of(file, ctime_ns, fingerprint),
                labels,
            };
            serde_json::to_writer(&mut body, &line).expect("output lines always serialise");
            body.push(b'\n');
        }
        if key.ends_with(".gz") {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder
                .write_all(&body)
                .and_then(|()| encoder.finish())
                .expect("compressing into memory cannot fail")
        } else {
            body
        }
    }

    /// Writes one batch's object at `key`.
    pub async fn write(&self, key: &str, body: Vec<u8>, mode: WriteMode) -> Result<(), ScanError> {
        let path = self.object_path(key);
        let result = match mode {
            // Identical content already there is our own earlier attempt, not another writer.
            WriteMode::Create => self.location.create(&path, body.into()).await,
            WriteMode::Replace => self
                .location
                .store()
                .put(&path, PutPayload::from(body))
                .await
                .map(|_| true),
        };
        match result {
            Ok(true) => Ok(()),
            Ok(false) => Err(ScanError::OutputFenced {
                object: self.describe(key),
            }),
            Err(source) => Err(ScanError::Output {
                object: self.describe(key),
                source,
            }),
        }
    }

    /// Where the raw bytes of a file left in the watched directory at shutdown go:
    /// `<output>/.leftovers/<source-id>/<generation>/<path>`, apart from the batch outputs (a
    /// source id never starts with `.`, so no source's outputs can be there). Every byte of the
    /// path is kept: bytes a store cannot take in a key (non-UTF-8, `%`, `#`, …) are
    /// percent-encoded, losslessly.
    pub fn leftover_object(&self, generation: u64, path: &RelPath) -> ObjectPath {
        let generation = format!("{generation:020}");
        let head = [".leftovers", self.source_id.as_str(), &generation]
            .into_iter()
            .map(|part| PathPart::from(part.as_bytes()));
        let tail = path.as_bytes().split(|&b| b == b'/').map(PathPart::from);
        head.chain(tail)
            .fold(self.location.prefix().clone(), ObjectPath::join)
    }

    /// Copies the local file `source` to `object` as it is, streaming (a multipart upload, in
    /// chunks read on a blocking thread). Returns the bytes copied.
    pub async fn ship_file(
        &self,
        source: std::path::PathBuf,
        object: &ObjectPath,
    ) -> Result<u64, ScanError> {
        use std::io::Read;
        const CHUNK: usize = 8 << 20;
        let url = self.location.describe(object);
        let failed = |source| ScanError::Output {
            object: url.clone(),
            source,
        };
        let io_failed = |e: std::io::Error| {
            failed(object_store::Error::Generic {
                store: "local file",
                source: Box::new(e),
            })
        };
        let upload = self
            .location
            .store()
            .put_multipart(object)
            .await
            .map_err(failed)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, CHUNK);
        let mut file = Some(crate::process::open(&source).map_err(io_failed)?);
        let mut copied = 0u64;
        loop {
            let mut reading = file.take().expect("the file comes back with each chunk");
            let read = tokio::task::spawn_blocking(move || {
                let mut chunk = Vec::with_capacity(CHUNK);
                let result = (&mut reading).take(CHUNK as u64).read_to_end(&mut chunk);
                (reading, chunk, result)
            })
            .await
            .map_err(|e| ScanError::Worker {
                task: "reading a leftover file",
                source: e,
            })?;
            let (reading, chunk, result) = read;
            if let Err(e) = result {
                writer.abort().await.ok();
                return Err(io_failed(e));
            }
            if chunk.is_empty() {
                break;
            }
            copied += chunk.len() as u64;
            writer.put(chunk.into());
            writer.wait_for_capacity(2).await.map_err(failed)?;
            file = Some(reading);
        }
        writer.finish().await.map_err(failed)?;
        Ok(copied)
    }

    /// The output objects of this source's generations after `generation`, in order: each
    /// generation with its key (relative to the output location; the plain object where a
    /// gzipped one exists too). One listing.
    pub async fn outputs_after(&self, generation: u64) -> Result<Vec<(u64, String)>, ScanError> {
        use futures::TryStreamExt;
        let folder = self.source_folder();
        let prefix = self.location.prefix().clone().join(folder.as_str());
        let listing = match self.layout {
            // Keys are zero-padded: listing from the next generation's key skips the history.
            OutputLayout::Flat => {
                let offset = prefix
                    .clone()
                    .join(format!("{:020}", generation.saturating_add(1)).as_str());
                self.location
                    .store()
                    .list_with_offset(Some(&prefix), &offset)
            }
            // The day comes first: every key of the source is listed (one request per
            // thousand batches).
            OutputLayout::Hive => self.location.store().list(Some(&prefix)),
        };
        let metas: Vec<_> = listing
            .try_collect()
            .await
            .map_err(|source| ScanError::Output {
                object: self.describe(&folder),
                source,
            })?;
        let mut found: Vec<(u64, String)> = metas
            .into_iter()
            .filter_map(|meta| {
                let found = meta.location.filename().and_then(parse_generation)?;
                let key: Vec<String> = meta
                    .location
                    .prefix_match(self.location.prefix())?
                    .map(|part| part.as_ref().to_string())
                    .collect();
                (found > generation).then(|| (found, key.join("/")))
            })
            .collect();
        // `.ndjson` sorts before `.ndjson.gz`: the plain object is kept.
        found.sort_unstable();
        found.dedup_by_key(|(found, _)| *found);
        Ok(found)
    }

    /// Whether any output object of this source is stored in this sink's layout: the first
    /// object of a listing of its folder that is named as an output (one request).
    pub async fn any_output(&self) -> Result<bool, ScanError> {
        use futures::TryStreamExt;
        let folder = self.source_folder();
        let prefix = self.location.prefix().clone().join(folder.as_str());
        let mut listing = self.location.store().list(Some(&prefix));
        while let Some(meta) = listing
            .try_next()
            .await
            .map_err(|source| ScanError::Output {
                object: self.describe(&folder),
                source,
            })?
        {
            if meta
                .location
                .filename()
                .and_then(parse_generation)
                .is_some()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The layout of this sink.
    pub fn layout(&self) -> OutputLayout {
        self.layout
    }

    /// The object at `key` (relative to the output location).
    pub fn object_path(&self, key: &str) -> object_store::path::Path {
        key.split('/')
            .fold(self.location.prefix().clone(), |path, part| path.join(part))
    }

    /// Removes temporary files of output objects that a killed process left in a local output
    /// directory, and the staging files of leftover copies it was shipping
    /// ([`OutputSink::ship_file`]). Returns how many were removed.
    pub fn remove_orphaned_temporaries(&self) -> usize {
        let source = self.location.child(&self.source_folder());
        let ours = |name: &str| parse_generation(name).is_some();
        let leftovers = self
            .location
            .child(".leftovers")
            .child(self.source_id.as_str())
            .local_dir()
            .map_or(0, remove_staging_files);
        leftovers
            + partition_folders(source)
                .iter()
                .map(|folder| folder.remove_orphaned_temporaries(ours))
                .sum::<usize>()
    }

    /// Checks that the output location is writable, and fences (see
    /// [`Location::check_writable`]).
    pub async fn check_writable(&self, probe_id: u64) -> Result<(), ScanError> {
        self.location
            .child(&self.source_folder())
            .check_writable(probe_id)
            .await
            .map_err(ScanError::from)
    }
}

/// The local folder `folder` and every partition folder (`key=value`) below it, at any depth:
/// objects of the partitions chosen by an earlier process may lie deeper or shallower than this
/// one's. Only `folder` for a store that is not local.
fn partition_folders(folder: Location) -> Vec<Location> {
    let names: Vec<String> = folder
        .local_dir()
        .and_then(|dir| std::fs::read_dir(dir).ok())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.contains('='))
        .collect();
    let below = names
        .iter()
        .flat_map(|name| partition_folders(folder.child(name)));
    std::iter::once(folder.clone()).chain(below).collect()
}

/// Removes every staging file (`<name>#<digits>`, what a local store writes before it renames
/// a finished copy into place) below `dir`: under `.leftovers/` every object is a copy, so any
/// staging file there is an interrupted one. Returns how many went.
fn remove_staging_files(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            removed += remove_staging_files(&entry.path());
            continue;
        }
        let name = entry.file_name();
        let staging = name
            .as_encoded_bytes()
            .rsplit(|&b| b == b'#')
            .next()
            .is_some_and(|n| {
                !n.is_empty() && n.len() < name.len() && n.iter().all(u8::is_ascii_digit)
            });
        if staging && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The generation an output object's file name holds (`<20 digits>.ndjson[.gz]`).
fn parse_generation(name: &str) -> Option<u64> {
    let digits = name
        .strip_suffix(".ndjson")
        .or_else(|| name.strip_suffix(".ndjson.gz"))?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Formats a modification time as RFC 3339 (UTC, microseconds). Times before 1970 show as the
/// epoch (the format has no negative years; such mtimes come from broken clocks).
pub fn rfc3339(mtime_ns: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_nanos(mtime_ns.max(0) as u64);
    humantime::format_rfc3339_micros(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use state_store::RelPath;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn written_folders_are_collected_by_a_watch_over_them_or_inside_them_where_objects_land() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let out = Location::parse(root.join("out").to_str().unwrap()).unwrap();
        let id: SourceId = "s".parse().unwrap();
        let folders = |layout| {
            OutputSink::new(out.clone(), &id, Compression::None)
                .with_layout(layout)
                .written_folders(true)
        };
        let collected = |layout, watch: &str| -> Vec<Option<Overlap>> {
            folders(layout)
                .iter()
                .map(|f| f.collected_by(&root.join(watch)))
                .collect()
        };
        let (inside, holds) = (
            Some(Overlap::FolderInsideWatch),
            Some(Overlap::WatchInsideFolder),
        );
        assert_eq!(
            collected(OutputLayout::Flat, "out"),
            [inside, inside, inside]
        );
        assert_eq!(collected(OutputLayout::Flat, "out/s"), [inside, None, None]);
        assert_eq!(
            collected(OutputLayout::Flat, "out/.committed/s"),
            [None, inside, None]
        );
        assert_eq!(
            collected(OutputLayout::Flat, "out/s/sub"),
            [None, None, None]
        );
        assert_eq!(
            collected(OutputLayout::Hive, "out/source=s"),
            [inside, None, None]
        );
        assert_eq!(
            collected(OutputLayout::Hive, "out/source=s/date=2026-01-01"),
            [holds, None, None]
        );
        assert_eq!(
            collected(OutputLayout::Hive, "out/source=s/date=2026-01-01/x"),
            [None, None, None]
        );
        assert_eq!(
            collected(
                OutputLayout::Flat,
                "out/.leftovers/s/00000000000000000001/a"
            ),
            [None, None, holds]
        );
        assert_eq!(
            collected(OutputLayout::Flat, "elsewhere"),
            [None, None, None]
        );
        let memory = Location::parse("memory://").unwrap();
        let sink = OutputSink::new(memory, &id, Compression::None);
        assert!(
            sink.written_folders(true)
                .iter()
                .all(|f| f.collected_by(&root).is_none()),
            "a store that is not a local directory collects nothing"
        );
    }

    #[test]
    fn lines_are_json_with_result_or_error() {
        let files = [
            PlannedFile {
                path: "a.log".into(),
                size: 3,
                mtime_ns: 1_700_000_000_123_456_789,
                inode: 1,
                btime_ns: 0,
                start: 0,
            },
            PlannedFile {
                path: RelPath::new(&b"b\xff.log"[..]),
                size: 9,
                mtime_ns: 0,
                inode: 2,
                btime_ns: 0,
                start: 4,
            },
        ];
        let outcomes = [
            FileOutcome::Done {
                result: serde_json::value::to_raw_value(&serde_json::json!({"lines": 1})).unwrap(),
                bytes: 3,
                encoding: crate::process::Encoding::Gzip,
                ctime_ns: 1_700_000_001_000_000_007,
            },
            FileOutcome::Failed {
                kind: crate::process::FailureKind::Vanished,
                reason: "vanished".into(),
            },
        ];
        let body = OutputSink::render(
            "pod",
            "stats",
            &Labels::default(),
            (7, false),
            "pod/7.ndjson",
            files
                .iter()
                .zip(&outcomes)
                .zip([0xabc, 0])
                .map(|((file, outcome), fingerprint)| (file, outcome, fingerprint)),
        );
        let text = String::from_utf8(body).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|line| line["schema"] == OUTPUT_SCHEMA));
        assert!(lines.iter().all(|line| line.get("replay").is_none()));
        assert_eq!(lines[0]["path"], "a.log");
        assert_eq!(lines[0]["mtime"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(lines[0]["result"]["lines"], 1);
        assert_eq!(lines[0]["generation"], 7);
        assert_eq!(lines[0]["encoding"], "gzip");
        assert!(lines[0].get("error").is_none() && lines[0].get("start").is_none());
        assert_eq!(lines[1]["path"], "b\\xff.log");
        assert_eq!(
            lines[1]["path_bytes"],
            serde_json::json!([98, 255, 46, 108, 111, 103])
        );
        assert_eq!(lines[1]["error"], "vanished");
        assert_eq!(lines[1]["start"], 4);
        // The identity: as listed, the ctime of a file read, the fingerprint where taken.
        assert_eq!(
            lines[0]["identity"],
            serde_json::json!({
                "inode": 1,
                "ctime": "2023-11-14T22:13:21.000000007Z",
                "fingerprint": "0000000000000abc",
            })
        );
        let identity: LineIdentity = serde_json::from_value(lines[0]["identity"].clone()).unwrap();
        assert_eq!(identity.ctime_ns(), Some(1_700_000_001_000_000_007));
        assert_eq!(
            (identity.fingerprint(), identity.btime_ns()),
            (Some(0xabc), None)
        );
        assert_eq!(lines[1]["identity"], serde_json::json!({"inode": 2}));
    }

    #[test]
    fn gzip_keys_get_gzip_bodies() {
        let body = OutputSink::render(
            "p",
            "stats",
            &Labels::default(),
            (1, false),
            "p/1.ndjson.gz",
            [],
        );
        assert_eq!(&body[..2], &[0x1f, 0x8b]);
    }

    #[tokio::test]
    async fn hive_keys_are_partitioned_by_source_and_planned_day_and_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::parse(dir.path().to_str().unwrap()).unwrap();
        let source = SourceId::new("pod-1").unwrap();
        let flat = OutputSink::new(location.clone(), &source, Compression::None);
        let hive =
            OutputSink::new(location, &source, Compression::Gzip).with_layout(OutputLayout::Hive);
        // 2026-11-30T23:59:59Z, and one second later the next day.
        let evening = UNIX_EPOCH + Duration::from_secs(1_796_083_199);
        let midnight = evening + Duration::from_secs(1);
        assert_eq!(
            flat.key_for(7, evening),
            "pod-1/00000000000000000007.ndjson"
        );
        assert_eq!(
            hive.key_for(7, evening),
            "source=pod-1/date=2026-11-30/00000000000000000007.ndjson.gz"
        );
        assert_eq!(
            hive.key_for(8, midnight),
            "source=pod-1/date=2026-12-01/00000000000000000008.ndjson.gz"
        );
        for (generation, at) in [(7, evening), (8, midnight), (9, midnight)] {
            let key = hive.key_for(generation, at);
            hive.write(&key, b"{}\n".to_vec(), WriteMode::Create)
                .await
                .unwrap();
        }
        // Across days: the generations after a committed one, with their keys.
        assert_eq!(
            hive.outputs_after(6).await.unwrap(),
            [
                (
                    7,
                    "source=pod-1/date=2026-11-30/00000000000000000007.ndjson.gz"
                ),
                (
                    8,
                    "source=pod-1/date=2026-12-01/00000000000000000008.ndjson.gz"
                ),
                (
                    9,
                    "source=pod-1/date=2026-12-01/00000000000000000009.ndjson.gz"
                ),
            ]
            .map(|(generation, key)| (generation, key.to_string()))
        );
        assert!(hive.outputs_after(9).await.unwrap().is_empty());
        // The flat layout of the same source sees none of them.
        assert!(flat.outputs_after(0).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn partition_labels_are_folders_between_source_and_date_and_labels_are_in_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::parse(dir.path().to_str().unwrap()).unwrap();
        let source = SourceId::new("pod-1").unwrap();
        let labels =
            Labels::new(["namespace=shop", "app=web"].map(|l| l.parse::<Label>().unwrap()))
                .unwrap();
        let namespace: Label = "namespace=shop".parse().unwrap();
        let hive = OutputSink::new(location, &source, Compression::None)
            .with_layout(OutputLayout::Hive)
            .with_partitions(vec![namespace]);
        let evening = UNIX_EPOCH + Duration::from_secs(1_796_083_199);
        let key = hive.key_for(7, evening);
        assert_eq!(
            key,
            "source=pod-1/namespace=shop/date=2026-11-30/00000000000000000007.ndjson"
        );
        let file = PlannedFile {
            path: "a.log".into(),
            size: 3,
            mtime_ns: 1,
            inode: 1,
            btime_ns: 0,
            start: 0,
        };
        let outcome = FileOutcome::Failed {
            kind: crate::process::FailureKind::Vanished,
            reason: "vanished".into(),
        };
        let body = OutputSink::render(
            "pod-1",
            "stats",
            &labels,
            (7, false),
            &key,
            [(&file, &outcome, 0)],
        );
        let line: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            line["labels"],
            serde_json::json!({"app": "web", "namespace": "shop"})
        );
        hive.write(&key, body, WriteMode::Create).await.unwrap();
        assert_eq!(hive.outputs_after(0).await.unwrap(), [(7, key.clone())]);
        // Where objects land, a staging file of a killed write is found and removed.
        let day = dir
            .path()
            .join("source=pod-1/namespace=shop/date=2026-11-30");
        std::fs::write(day.join("00000000000000000008.ndjson#12"), b"{}").unwrap();
        assert_eq!(hive.remove_orphaned_temporaries(), 1);
        // A watched directory where objects land would collect them.
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let overlaps: Vec<_> = hive
            .written_folders(false)
            .iter()
            .map(|f| f.collected_by(&root.join("source=pod-1/namespace=shop/date=2026-11-30")))
            .collect();
        assert_eq!(overlaps, [Some(Overlap::WatchInsideFolder), None]);
    }

    #[test]
    fn extreme_mtimes_are_clamped() {
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00.000000Z");
        assert!(rfc3339(i64::MAX).starts_with("2262-04-11T23:47:16"));
    }
}
