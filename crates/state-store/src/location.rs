//! Storage locations given as URLs or local paths, resolved through `object_store`.

use std::path::{Component, Path as FsPath, PathBuf};
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use url::Url;

use crate::StateError;

/// A place to keep objects: a store plus a prefix inside it, with the URL it was built from.
///
/// The same form serves Gleaner's `--state` and `--output`:
///
/// | input                      | store                                  |
/// |----------------------------|----------------------------------------|
/// | `/abs/path`, `./rel/path`  | local file system (relative: from cwd) |
/// | `file:///abs/path`         | local file system                      |
/// | `memory://`                | a fresh in-process store (tests)       |
///
/// Local stores fsync every object and its directory before a write returns, so a commit that
/// returned survives a power cut, not just a process kill.
#[derive(Clone)]
pub struct Location {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
    local_dir: Option<PathBuf>,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Location").field("url", &self.url).finish()
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl Location {
    /// Parses a user-supplied location: a URL (`file://`, `memory://`) or a local path.
    ///
    /// ```
    /// let loc = state_store::Location::parse("memory://").unwrap();
    /// assert_eq!(loc.to_string(), "memory://");
    /// assert!(state_store::Location::parse("ftp://example.com/x").is_err());
    /// ```
    pub fn parse(input: &str) -> Result<Self, StateError> {
        let invalid = |reason: String| StateError::InvalidLocation {
            input: input.to_string(),
            reason,
        };
        if input.trim().is_empty() {
            return Err(invalid("the location is empty".into()));
        }
        match Url::parse(input) {
            Ok(url) => Self::from_url(input, &url),
            Err(url::ParseError::RelativeUrlWithoutBase) => Self::local(input, FsPath::new(input)),
            Err(e) => Err(invalid(format!("not a valid URL ({e})"))),
        }
    }

    fn from_url(input: &str, url: &Url) -> Result<Self, StateError> {
        let invalid = |reason: String| StateError::InvalidLocation {
            input: input.to_string(),
            reason,
        };
        match url.scheme() {
            "file" => {
                if url
                    .host_str()
                    .is_some_and(|h| !h.is_empty() && h != "localhost")
                {
                    return Err(invalid(format!(
                        "file URLs name an absolute path and no host, like file:///var/lib/gleaner \
                         (this one has host {:?})",
                        url.host_str().unwrap_or_default()
                    )));
                }
                let path = url
                    .to_file_path()
                    .map_err(|()| invalid("not a valid local file path".into()))?;
                Self::local(input, &path)
            }
            "memory" => {
                let prefix = Path::from_url_path(url.path())
                    .map_err(|e| invalid(format!("invalid path in memory URL: {e}")))?;
                Ok(Self::from_store(
                    Arc::new(InMemory::new()),
                    prefix,
                    url.to_string(),
                ))
            }
            "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" | "adl" => {
                Err(invalid(format!(
                    "{}:// storage is not supported by this build yet; use a local path or file:// URL",
                    url.scheme()
                )))
            }
            other => Err(invalid(format!(
                "unsupported scheme {other:?}; use a local path, file://, or memory://"
            ))),
        }
    }

    fn local(input: &str, path: &FsPath) -> Result<Self, StateError> {
        let invalid = |reason: String| StateError::InvalidLocation {
            input: input.to_string(),
            reason,
        };
        let dir = resolve_local_dir(path).map_err(invalid)?;
        let prefix = Path::from_absolute_path(&dir)
            .map_err(|e| invalid(format!("cannot be used as an object path: {e}")))?;
        let url = Url::from_directory_path(&dir)
            .map(|u| u.to_string().trim_end_matches('/').to_string())
            .unwrap_or_else(|()| format!("file://{}", dir.display()));
        let store = LocalFileSystem::new().with_fsync(true);
        Ok(Self {
            store: Arc::new(store),
            prefix,
            url,
            local_dir: Some(dir),
        })
    }

    /// Wraps an existing store; `url` is only used in messages and must name `prefix` in it.
    ///
    /// This is how library users bring a store built with options of their own (a custom
    /// retry policy, credentials, a test double).
    pub fn from_store(store: Arc<dyn ObjectStore>, prefix: Path, url: impl Into<String>) -> Self {
        Self {
            store,
            prefix,
            url: url.into(),
            local_dir: None,
        }
    }

    /// The store objects are kept in.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The prefix of this location inside its store.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// The local directory behind this location, for local file system locations.
    pub fn local_dir(&self) -> Option<&FsPath> {
        self.local_dir.as_deref()
    }

    /// The location one path segment below this one.
    pub fn child(&self, segment: &str) -> Location {
        Location {
            store: Arc::clone(&self.store),
            prefix: self.prefix.clone().join(segment),
            url: format!("{}/{}", self.url.trim_end_matches('/'), segment),
            local_dir: self.local_dir.as_ref().map(|d| d.join(segment)),
        }
    }

    /// The object called `name` directly inside this location.
    pub fn object(&self, name: &str) -> Path {
        self.prefix.clone().join(name)
    }

    /// The URL of an object of this location's store, for messages.
    pub fn describe(&self, path: &Path) -> String {
        let rel = path
            .prefix_match(&self.prefix)
            .map(|parts| parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>());
        match rel {
            Some(parts) if !parts.is_empty() => {
                format!("{}/{}", self.url.trim_end_matches('/'), parts.join("/"))
            }
            _ => self.url.clone(),
        }
    }
}

/// Makes `path` absolute and resolves symbolic links in the part of it that exists, so that two
/// spellings of one directory compare equal (Gleaner refuses to keep state inside the watched
/// directory, and must recognise it).
fn resolve_local_dir(path: &FsPath) -> Result<PathBuf, String> {
    let absolute =
        std::path::absolute(path).map_err(|e| format!("cannot make it absolute: {e}"))?;
    let mut existing = absolute.as_path();
    let mut missing: Vec<&std::ffi::OsStr> = Vec::new();
    let canonical = loop {
        match std::fs::canonicalize(existing) {
            Ok(canonical) => break canonical,
            Err(_) => match (existing.file_name(), existing.parent()) {
                (Some(name), Some(parent)) => {
                    missing.push(name);
                    existing = parent;
                }
                _ => return Err("no part of the path exists".into()),
            },
        }
    };
    if absolute
        .components()
        .any(|c| matches!(c, Component::ParentDir))
        && !missing.is_empty()
    {
        return Err("'..' in a path that does not exist yet".into());
    }
    let mut out = canonical;
    out.extend(missing.iter().rev());
    if out.exists() && !out.is_dir() {
        return Err(format!("{} exists and is not a directory", out.display()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_and_file_urls_are_the_same_location() {
        let dir = tempfile::tempdir().unwrap();
        let as_path = Location::parse(dir.path().to_str().unwrap()).unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap();
        let as_url = Location::parse(url.as_str()).unwrap();
        assert_eq!(as_path.prefix(), as_url.prefix());
        assert_eq!(as_path.local_dir(), as_url.local_dir());
        assert!(as_path.to_string().starts_with("file:///"));
    }

    #[test]
    fn missing_directories_are_accepted_and_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a/b/c");
        let loc = Location::parse(target.to_str().unwrap()).unwrap();
        let canonical = std::fs::canonicalize(dir.path()).unwrap().join("a/b/c");
        assert_eq!(loc.local_dir(), Some(canonical.as_path()));
    }

    #[test]
    fn rejects_what_it_cannot_use() {
        for bad in [
            "",
            "ftp://host/x",
            "file://somehost/x",
            "s3://bucket/x",
            "http://[::1",
        ] {
            let err = Location::parse(bad).unwrap_err();
            assert!(
                matches!(err, StateError::InvalidLocation { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_file_is_not_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let err = Location::parse(file.to_str().unwrap()).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn describe_names_objects_by_url() {
        let loc = Location::parse("memory:///base").unwrap().child("src");
        let obj = loc.object("00001.delta");
        assert_eq!(loc.describe(&obj), "memory:///base/src/00001.delta");
    }
}
