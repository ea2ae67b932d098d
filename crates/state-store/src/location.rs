//! Storage locations given as URLs or local paths, resolved through `object_store`.

use std::path::{Component, Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, ObjectStoreScheme, RetryConfig};
use url::Url;

use crate::StateError;

/// How cloud stores are reached: retries, backoff and timeouts. Local stores ignore it.
///
/// Retries cover what `object_store` considers transient (connection errors, timeouts, 5xx,
/// throttling); each retry waits `init_backoff` × 2ⁿ (with jitter), at most `max_backoff`.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageOptions {
    /// Retries of one request (0: none).
    pub max_retries: usize,
    /// Give up retrying a request after this long since its first attempt.
    pub retry_timeout: Duration,
    /// The first backoff.
    pub init_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
    /// Timeout of one attempt of one request.
    pub request_timeout: Duration,
    /// Timeout of establishing a connection.
    pub connect_timeout: Duration,
}

impl Default for StorageOptions {
    /// 10 retries within 3 minutes, backoff 100 ms doubling up to 15 s, 30 s per attempt,
    /// 5 s to connect.
    fn default() -> Self {
        Self {
            max_retries: 10,
            retry_timeout: Duration::from_secs(180),
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl StorageOptions {
    fn retry(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: self.init_backoff,
                max_backoff: self.max_backoff,
                base: 2.0,
            },
            max_retries: self.max_retries,
            retry_timeout: self.retry_timeout,
        }
    }

    /// Client settings as configuration values, so that what the environment set (an endpoint,
    /// `*_ALLOW_HTTP`) is kept rather than replaced by a fresh set of client options.
    fn client_settings(&self) -> [(ClientConfigKey, String); 2] {
        [
            (
                ClientConfigKey::Timeout,
                humantime::format_duration(self.request_timeout).to_string(),
            ),
            (
                ClientConfigKey::ConnectTimeout,
                humantime::format_duration(self.connect_timeout).to_string(),
            ),
        ]
    }
}

/// The three cloud builders of `object_store` share no trait: this one gives them a single
/// build path (settings from the environment, the URL, client settings, retries).
trait CloudBuilder: Sized {
    /// Where this cloud's settings come from, for configuration errors.
    const SETTINGS: &'static str;
    fn from_env_with_url(url: &str) -> Self;
    fn with_client_setting(self, key: ClientConfigKey, value: String) -> Self;
    fn with_retry_config(self, retry: RetryConfig) -> Self;
    fn build_store(self) -> object_store::Result<Arc<dyn ObjectStore>>;
}

macro_rules! cloud_builder {
    ($builder:ty, $config_key:path, $settings:expr) => {
        impl CloudBuilder for $builder {
            const SETTINGS: &'static str = $settings;
            fn from_env_with_url(url: &str) -> Self {
                <$builder>::from_env().with_url(url)
            }
            fn with_client_setting(self, key: ClientConfigKey, value: String) -> Self {
                self.with_config($config_key(key), value)
            }
            fn with_retry_config(self, retry: RetryConfig) -> Self {
                self.with_retry(retry)
            }
            fn build_store(self) -> object_store::Result<Arc<dyn ObjectStore>> {
                Ok(Arc::new(self.build()?))
            }
        }
    };
}

cloud_builder!(
    AmazonS3Builder,
    AmazonS3ConfigKey::Client,
    "S3 settings come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT \
     and the other AWS_* variables"
);
cloud_builder!(
    GoogleCloudStorageBuilder,
    GoogleConfigKey::Client,
    "GCS credentials come from GOOGLE_SERVICE_ACCOUNT, GOOGLE_SERVICE_ACCOUNT_KEY or \
     GOOGLE_APPLICATION_CREDENTIALS"
);
cloud_builder!(
    MicrosoftAzureBuilder,
    AzureConfigKey::Client,
    "the Azure account and key come from AZURE_STORAGE_ACCOUNT_NAME and \
     AZURE_STORAGE_ACCOUNT_KEY, an emulator endpoint from AZURE_STORAGE_ENDPOINT"
);

/// Builds the store of a cloud URL (`input`, as the user gave it): settings from the
/// environment, then the URL's, then `options`. The error says where the settings come from.
fn build<B: CloudBuilder>(
    input: &str,
    url: &Url,
    options: &StorageOptions,
) -> Result<Arc<dyn ObjectStore>, StateError> {
    options
        .client_settings()
        .into_iter()
        .fold(
            B::from_env_with_url(url.as_str()),
            |builder, (key, value)| builder.with_client_setting(key, value),
        )
        .with_retry_config(options.retry())
        .build_store()
        .map_err(|e| StateError::invalid_location(input, format!("{e} ({})", B::SETTINGS)))
}

/// A place to keep objects: a store plus a prefix inside it, with the URL it was built from.
///
/// The same form serves Gleaner's `--state` and `--output`:
///
/// | input                                   | store                                  |
/// |-----------------------------------------|----------------------------------------|
/// | `/abs/path`, `./rel/path`               | local file system (relative: from cwd) |
/// | `file:///abs/path`                      | local file system                      |
/// | `s3://bucket/prefix`                    | Amazon S3 or an S3-compatible server   |
/// | `gs://bucket/prefix`                    | Google Cloud Storage                   |
/// | `az://container/prefix`, `abfs[s]://…`, `https://account.blob.core.windows.net/container/prefix` | Azure Blob Storage |
/// | `memory://`                             | a fresh in-process store (tests)       |
///
/// Cloud stores take credentials, region and endpoint from the usual environment variables
/// (`AWS_ACCESS_KEY_ID`, `AWS_REGION`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, …;
/// `GOOGLE_SERVICE_ACCOUNT`, `GOOGLE_APPLICATION_CREDENTIALS`, …; `AZURE_STORAGE_ACCOUNT_NAME`,
/// `AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_ENDPOINT`, …), read by `object_store`'s own
/// `from_env` builders; their requests are retried as [`StorageOptions`] says.
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
    /// Parses a user-supplied location (a URL or a local path) with default [`StorageOptions`].
    ///
    /// ```
    /// let loc = state_store::Location::parse("memory://").unwrap();
    /// assert_eq!(loc.to_string(), "memory://");
    /// assert!(state_store::Location::parse("ftp://example.com/x").is_err());
    /// ```
    pub fn parse(input: &str) -> Result<Self, StateError> {
        Self::parse_with(input, &StorageOptions::default())
    }

    /// Parses a user-supplied location: a URL or a local path.
    pub fn parse_with(input: &str, options: &StorageOptions) -> Result<Self, StateError> {
        let invalid = |reason: String| StateError::invalid_location(input, reason);
        if input.trim().is_empty() {
            return Err(invalid("the location is empty".into()));
        }
        match Url::parse(input) {
            Ok(url) if has_credentials(&url) => Err(invalid(
                "credentials in a storage URL are refused: they would be echoed in logs and \
                 errors, and are not used. Remove them and give them through the environment \
                 instead: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a role) for s3://, \
                 AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_KEY for az://, \
                 GOOGLE_APPLICATION_CREDENTIALS for gs://"
                    .into(),
            )),
            Ok(url) => Self::from_url(input, &url, options),
            Err(url::ParseError::RelativeUrlWithoutBase) => Self::local(input, FsPath::new(input)),
            Err(e) => Err(invalid(format!("not a valid URL ({e})"))),
        }
    }

    fn from_url(input: &str, url: &Url, options: &StorageOptions) -> Result<Self, StateError> {
        let invalid = |reason: String| StateError::invalid_location(input, reason);
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
            "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" | "adl" | "https" => {
                Self::cloud(input, url, options)
            }
            other => Err(invalid(format!(
                "unsupported scheme {other:?}; use a local path, file://, s3://, gs://, az:// \
                 or memory://"
            ))),
        }
    }

    fn cloud(input: &str, url: &Url, options: &StorageOptions) -> Result<Self, StateError> {
        let invalid = |reason: String| StateError::invalid_location(input, reason);
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid(format!(
                "a {}:// URL names a bucket or container, like {}://my-bucket/prefix",
                url.scheme(),
                url.scheme()
            )));
        }
        let (scheme, prefix) = ObjectStoreScheme::parse(url)
            .map_err(|e| invalid(format!("not a storage URL object_store understands: {e}")))?;
        refuse_endpoint_credentials(&scheme, utf8_environment()).map_err(invalid)?;
        let store = match scheme {
            ObjectStoreScheme::AmazonS3 => build::<AmazonS3Builder>(input, url, options),
            ObjectStoreScheme::GoogleCloudStorage => {
                build::<GoogleCloudStorageBuilder>(input, url, options)
            }
            ObjectStoreScheme::MicrosoftAzure => {
                build::<MicrosoftAzureBuilder>(input, url, options)
            }
            _ => {
                return Err(invalid(
                    "plain http(s) URLs are not storage locations; use s3://, gs:// or az://"
                        .into(),
                ));
            }
        }?;
        Ok(Self {
            store,
            prefix,
            url: url.as_str().trim_end_matches('/').to_string(),
            local_dir: None,
        })
    }

    fn local(input: &str, path: &FsPath) -> Result<Self, StateError> {
        let invalid = |reason: String| StateError::invalid_location(input, reason);
        let dir = resolve_local_dir(input, path)?;
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

    /// The same location over `store`, which must hold the same objects: a layer around
    /// [`Location::store`] (one that bounds, counts or logs requests). Local paths stay known.
    pub fn with_store(&self, store: Arc<dyn ObjectStore>) -> Location {
        Location {
            store,
            ..self.clone()
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

    /// Creates the object at `path` unless one exists: the conditional create that commits and
    /// fences. Returns `false` if another object was already there.
    ///
    /// An object that already holds exactly `bytes` counts as created: a create whose answer
    /// was lost (the store retries a request that failed with a 5xx after it had landed, and
    /// its second attempt then finds the object) must not be taken for another writer's. One
    /// that is gone by the time it is read was another writer's.
    pub async fn create(&self, path: &Path, bytes: bytes::Bytes) -> object_store::Result<bool> {
        use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(path, PutPayload::from(bytes.clone()), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => {
                match self.store.get(path).await {
                    Ok(existing) => Ok(existing.bytes().await? == bytes),
                    // Removed since: only its writer (done with the plan, or folding a snapshot
                    // that covers it) removes such an object, and this one has not got that far.
                    Err(object_store::Error::NotFound { .. }) => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Checks that objects can be written here and that conditional creates work: a probe
    /// object is written and removed, another created twice (the second create must fail) and
    /// removed. `probe_id` keeps the probes of concurrent processes apart.
    ///
    /// Run at start-up, so that an unwritable location, or a store that would not fence, fails
    /// the start rather than the first commit an hour later.
    pub async fn check_writable(&self, probe_id: u64) -> Result<(), StateError> {
        use object_store::{ObjectStoreExt, PutPayload};
        let path = self.object(&format!("_gleaner-probe-{probe_id:016x}"));
        let not_writable = |source| StateError::NotWritable {
            location: self.url.clone(),
            source,
        };
        self.store
            .put(&path, PutPayload::from_static(b"probe"))
            .await
            .map_err(not_writable)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(source) => return Err(not_writable(source)),
        }
        self.check_conditional_create(
            &self.object(&format!("_gleaner-fence-probe-{probe_id:016x}")),
        )
        .await
    }

    /// Checks that this store honours conditional creates, on which Gleaner's commit point and
    /// single-writer fence rest: a second create of one object must fail. Some S3-compatible
    /// servers ignore `If-None-Match` and would let two writers commit one generation.
    pub async fn check_conditional_create(&self, probe: &Path) -> Result<(), StateError> {
        use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
        let create = |content: &'static [u8]| {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            self.store
                .put_opts(probe, PutPayload::from_static(content), opts)
        };
        let unsupported = |reason: String| StateError::NotWritable {
            location: self.url.clone(),
            source: object_store::Error::NotSupported {
                source: reason.into(),
            },
        };
        let result = match create(b"first").await {
            Ok(_) => match create(b"second").await {
                Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
                Ok(_) => Err(unsupported(
                    "the store ignored a create-if-absent and replaced the object; Gleaner needs \
                     conditional creates (S3: If-None-Match) to commit safely"
                        .into(),
                )),
                Err(e) => Err(unsupported(format!(
                    "a second create-if-absent failed with an unexpected error: {e}"
                ))),
            },
            Err(object_store::Error::NotImplemented { operation, .. }) => {
                Err(unsupported(format!(
                    "the store does not implement {operation}; Gleaner needs conditional creates \
                 to commit safely (for S3, do not set AWS_CONDITIONAL_PUT=disabled)"
                )))
            }
            Err(source) => Err(StateError::NotWritable {
                location: self.url.clone(),
                source,
            }),
        };
        match self.store.delete(probe).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => result,
            Err(source) => result.and(Err(StateError::NotWritable {
                location: self.url.clone(),
                source,
            })),
        }
    }

    /// Removes the temporary files a killed process may leave next to objects in a local
    /// directory (`<name>#<n>`, written before the atomic rename into place, and invisible to
    /// listings). `keep` says which object names are ours to clean. Returns how many went.
    pub fn remove_orphaned_temporaries(&self, ours: impl Fn(&str) -> bool) -> usize {
        let Some(dir) = &self.local_dir else {
            return 0;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some((object, n)) = name.to_str().and_then(|n| n.rsplit_once('#')) else {
                continue;
            };
            if !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && ours(object)
                && std::fs::remove_file(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
        removed
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

/// True if `url` carries what may be a secret: user info (`s3://KEY:SECRET@bucket`), or a query
/// or fragment (an Azure SAS token is `?sv=…&sig=…`). No storage URL of Gleaner's uses them.
fn has_credentials(url: &Url) -> bool {
    !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
}

/// The environment as `object_store`'s `from_env` builders read it: variables whose name and
/// value are both UTF-8 (the others are skipped there too).
fn utf8_environment() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os()
        .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
}

/// What a variable of a cloud builder holds, as far as secrets go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setting {
    /// A URL of a service the client calls (an endpoint, a metadata or token service, an
    /// authority host): it needs no credentials of its own, and `object_store` shows it in the
    /// error of every request that fails.
    Endpoint,
    /// A proxy URL: its user info is the proxy's credentials (the client sends them), and it
    /// is not shown in errors.
    Proxy,
    /// Anything else.
    Other,
}

/// How the builder of `scheme` reads the environment variable `name`, if it reads it at all:
/// the same parsing of the lower-cased name as `from_env` does, so every alias is covered
/// (`AWS_ENDPOINT` and `AWS_ENDPOINT_URL`, `AZURE_STORAGE_ENDPOINT` and `AZURE_ENDPOINT`, …).
fn setting(scheme: &ObjectStoreScheme, name: &str) -> Option<Setting> {
    let key = name.to_ascii_lowercase();
    let client = |client: ClientConfigKey| match client {
        ClientConfigKey::ProxyUrl => Setting::Proxy,
        _ => Setting::Other,
    };
    match scheme {
        ObjectStoreScheme::AmazonS3 if name.starts_with("AWS_") => {
            Some(match key.parse::<AmazonS3ConfigKey>().ok()? {
                AmazonS3ConfigKey::Endpoint
                | AmazonS3ConfigKey::S3Endpoint
                | AmazonS3ConfigKey::StsEndpoint
                | AmazonS3ConfigKey::MetadataEndpoint
                | AmazonS3ConfigKey::ContainerCredentialsFullUri
                | AmazonS3ConfigKey::ContainerCredentialsRelativeUri => Setting::Endpoint,
                AmazonS3ConfigKey::Client(key) => client(key),
                _ => Setting::Other,
            })
        }
        ObjectStoreScheme::GoogleCloudStorage if name.starts_with("GOOGLE_") => {
            Some(match key.parse::<GoogleConfigKey>().ok()? {
                GoogleConfigKey::BaseUrl => Setting::Endpoint,
                GoogleConfigKey::Client(key) => client(key),
                _ => Setting::Other,
            })
        }
        // The managed identity endpoint is also read from IDENTITY_ENDPOINT, as App Service
        // and Functions set it.
        ObjectStoreScheme::MicrosoftAzure if name == "IDENTITY_ENDPOINT" => Some(Setting::Endpoint),
        ObjectStoreScheme::MicrosoftAzure if name.starts_with("AZURE_") => {
            Some(match key.parse::<AzureConfigKey>().ok()? {
                AzureConfigKey::Endpoint
                | AzureConfigKey::MsiEndpoint
                | AzureConfigKey::AuthorityHost
                | AzureConfigKey::FabricTokenServiceUrl
                | AzureConfigKey::FabricWorkloadHost => Setting::Endpoint,
                AzureConfigKey::Client(key) => client(key),
                _ => Setting::Other,
            })
        }
        _ => None,
    }
}

/// Refuses credentials in the endpoints the builder of `scheme` would read from `environment`
/// (user info, a query or a fragment, as in a storage URL): `object_store` puts the endpoint in
/// the message of every failed request, so the secret would reach standard error, the log and
/// `/readyz`; and no endpoint needs them (requests are signed with the keys of the usual
/// variables, and a query in an endpoint would not even make a valid request URL). The message
/// names the variable and shows its value redacted.
fn refuse_endpoint_credentials(
    scheme: &ObjectStoreScheme,
    environment: impl Iterator<Item = (String, String)>,
) -> Result<(), String> {
    let mut refused: Vec<(String, String)> = environment
        .filter(|(name, _)| setting(scheme, name) == Some(Setting::Endpoint))
        .filter_map(|(name, value)| {
            let shown = redacted_anywhere(&value);
            (shown != value).then_some((name, shown))
        })
        .collect();
    refused.sort();
    let Some((name, shown)) = refused.first() else {
        return Ok(());
    };
    let instead = match scheme {
        ObjectStoreScheme::AmazonS3 => {
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a role, web identity)"
        }
        ObjectStoreScheme::MicrosoftAzure => {
            "AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_KEY or a managed identity"
        }
        _ => "GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT_KEY",
    };
    let more = match refused.len() {
        1 => String::new(),
        n => format!(" (and {} more variable(s))", n - 1),
    };
    Err(format!(
        "{name} carries credentials ({shown:?}){more}: refused, since they would be echoed in \
         the error of every storage request, in logs and on /readyz; an endpoint needs none. \
         Remove them, and give credentials through {instead}"
    ))
}

/// [`redacted`] of a URL, or of a value without a scheme (`user:pass@host`, a relative URI
/// with a query), taken as an authority and path.
fn redacted_anywhere(value: &str) -> String {
    if value.contains("://") {
        return redacted(value);
    }
    redacted(&format!("x://{value}"))["x://".len()..].to_string()
}

/// `input` as it may be shown: the user info of a URL and everything from its `?` or `#` on
/// are replaced by `REDACTED`. Works on strings that do not parse as URLs too, since those are
/// shown in the error that says so.
pub(crate) fn redacted(input: &str) -> String {
    let Some(scheme_end) = input.find("://") else {
        return input.to_string();
    };
    let (scheme, rest) = input.split_at(scheme_end + 3);
    let mut out = String::from(scheme);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) => {
            out.push_str("REDACTED");
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    match path.find(['?', '#']) {
        Some(cut) => {
            out.push_str(&path[..cut]);
            out.push_str(&path[cut..cut + 1]);
            out.push_str("REDACTED");
        }
        None => out.push_str(path),
    }
    out
}

/// Makes `path` absolute and resolves symbolic links in the part of it that exists, so that two
/// spellings of one directory compare equal (Gleaner refuses to keep state inside the watched
/// directory, and must recognise it).
fn resolve_local_dir(input: &str, path: &FsPath) -> Result<PathBuf, StateError> {
    let invalid = |reason: String| StateError::invalid_location(input, reason);
    let absolute =
        std::path::absolute(path).map_err(|e| invalid(format!("cannot make it absolute: {e}")))?;
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
                _ => return Err(invalid("no part of the path exists".into())),
            },
        }
    };
    if absolute
        .components()
        .any(|c| matches!(c, Component::ParentDir))
        && !missing.is_empty()
    {
        return Err(invalid("'..' in a path that does not exist yet".into()));
    }
    let mut out = canonical;
    out.extend(missing.iter().rev());
    if out.exists() && !out.is_dir() {
        return Err(invalid(format!(
            "{} exists and is not a directory",
            out.display()
        )));
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
            "s3:///x",
            "https://example.com/x",
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
    fn credentials_in_urls_are_refused_and_never_shown() {
        for url in [
            "s3://AKIAPLANTED:SECRETPLANTED@bucket/state",
            "s3://SECRETPLANTED@bucket/state",
            "az://container/state?sv=2022-11-02&sig=SECRETPLANTED",
            "https://account.blob.core.windows.net/container/state?sig=SECRETPLANTED",
            "gs://bucket/state#SECRETPLANTED",
            // Not even a valid URL: shown redacted all the same.
            "s3://AKIA:SECRET PLANTED@bucket/x",
        ] {
            let err = Location::parse(url).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(
                !shown.contains("PLANTED") && !shown.contains("AKIA"),
                "{url}: {shown}"
            );
            assert!(matches!(err, StateError::InvalidLocation { .. }), "{shown}");
        }
        let err = Location::parse("s3://KEY:SECRET@bucket/state")
            .unwrap_err()
            .to_string();
        assert!(err.contains("s3://REDACTED@bucket/state"), "{err}");
        assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
        assert_eq!(redacted("/data/a?b"), "/data/a?b");
        assert_eq!(redacted("az://c/p?sv=1&sig=2#f"), "az://c/p?REDACTED");
    }

    #[test]
    fn credentials_in_endpoint_variables_are_refused_and_never_shown() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect::<Vec<_>>()
                .into_iter()
        };
        let (s3, gcs, azure) = (
            ObjectStoreScheme::AmazonS3,
            ObjectStoreScheme::GoogleCloudStorage,
            ObjectStoreScheme::MicrosoftAzure,
        );
        for (scheme, name) in [
            (&s3, "AWS_ENDPOINT"),
            (&s3, "AWS_ENDPOINT_URL"),
            (&s3, "AWS_ENDPOINT_URL_S3"),
            (&s3, "AWS_ENDPOINT_URL_STS"),
            (&s3, "AWS_METADATA_ENDPOINT"),
            (&s3, "AWS_CONTAINER_CREDENTIALS_FULL_URI"),
            (&s3, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
            (&gcs, "GOOGLE_BASE_URL"),
            (&azure, "AZURE_STORAGE_ENDPOINT"),
            (&azure, "AZURE_ENDPOINT"),
            (&azure, "AZURE_MSI_ENDPOINT"),
            (&azure, "AZURE_IDENTITY_ENDPOINT"),
            (&azure, "IDENTITY_ENDPOINT"),
            (&azure, "AZURE_STORAGE_AUTHORITY_HOST"),
            (&azure, "AZURE_AUTHORITY_HOST"),
            (&azure, "AZURE_FABRIC_TOKEN_SERVICE_URL"),
            (&azure, "AZURE_FABRIC_WORKLOAD_HOST"),
        ] {
            for value in [
                "http://user:SECRETPLANTED@127.0.0.1:9/",
                "http://127.0.0.1:9/x?sig=SECRETPLANTED",
                "user:SECRETPLANTED@127.0.0.1:9",
                "/v2/credentials?token=SECRETPLANTED",
            ] {
                let err = refuse_endpoint_credentials(scheme, env(&[(name, value)])).unwrap_err();
                assert!(
                    err.starts_with(&format!("{name} carries credentials"))
                        && err.contains("REDACTED")
                        && !err.contains("PLANTED"),
                    "{name}={value}: {err}"
                );
            }
            assert_eq!(
                refuse_endpoint_credentials(scheme, env(&[(name, "http://127.0.0.1:9/path")])),
                Ok(()),
                "{name}: a plain endpoint"
            );
        }
        // Proxies authenticate with their user info; other builders' variables, unknown
        // names and other settings are not endpoints.
        for (scheme, name) in [
            (&s3, "AWS_PROXY_URL"),
            (&gcs, "GOOGLE_PROXY_URL"),
            (&azure, "AZURE_PROXY_URL"),
            (&s3, "AZURE_STORAGE_ENDPOINT"),
            (&gcs, "AWS_ENDPOINT"),
            (&s3, "AWS_NOT_A_SETTING"),
            (&s3, "AWS_SECRET_ACCESS_KEY"),
            (&azure, "AZURE_STORAGE_SAS_KEY"),
        ] {
            assert_eq!(
                refuse_endpoint_credentials(scheme, env(&[(name, "http://u:p@host/?sig=x")])),
                Ok(()),
                "{name}"
            );
        }
        let err = refuse_endpoint_credentials(
            &s3,
            env(&[
                ("AWS_ENDPOINT", "http://a:b@h"),
                ("AWS_ENDPOINT_URL_STS", "http://c:d@h"),
            ]),
        )
        .unwrap_err();
        assert!(
            err.starts_with("AWS_ENDPOINT carries credentials (\"http://REDACTED@h\") (and 1 more"),
            "{err}"
        );
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
    fn cloud_urls_map_to_their_stores_and_prefixes() {
        // Building a cloud store reads configuration only; no request is made.
        for (url, prefix) in [
            ("s3://bucket/a/b", "a/b"),
            ("s3a://bucket", ""),
            ("gs://bucket/prefix/", "prefix"),
            (
                "https://account.blob.core.windows.net/container/logs",
                "logs",
            ),
        ] {
            let loc = Location::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(loc.prefix().as_ref(), prefix, "{url}");
            assert_eq!(loc.to_string(), url.trim_end_matches('/'));
            assert!(loc.local_dir().is_none());
        }
        let loc = Location::parse("gs://bucket/state").unwrap().child("pod-1");
        assert_eq!(
            loc.describe(&loc.object("00000000000000000001.delta")),
            "gs://bucket/state/pod-1/00000000000000000001.delta"
        );
    }

    #[test]
    fn cloud_configuration_errors_say_where_settings_come_from() {
        let err = Location::parse("s3://").unwrap_err().to_string();
        assert!(err.contains("names a bucket"), "{err}");
        // The container is in the URL, the account must come from the environment (unset in
        // the test environment, or set to the emulator's, in which case the URL works).
        if std::env::var_os("AZURE_STORAGE_ACCOUNT_NAME").is_none() {
            let err = Location::parse("az://container/prefix")
                .unwrap_err()
                .to_string();
            assert!(err.contains("AZURE_STORAGE_ACCOUNT_NAME"), "{err}");
        }
    }

    #[test]
    fn orphaned_temporaries_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::parse(dir.path().to_str().unwrap()).unwrap();
        for name in [
            "00000000000000000001.delta#3",
            "00000000000000000001.delta",
            "README#1",
            "x#",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let removed = loc.remove_orphaned_temporaries(|name| name.ends_with(".delta"));
        assert_eq!(removed, 1);
        assert!(!dir.path().join("00000000000000000001.delta#3").exists());
        for kept in ["00000000000000000001.delta", "README#1", "x#"] {
            assert!(dir.path().join(kept).exists(), "{kept}");
        }
        assert_eq!(
            Location::parse("memory://")
                .unwrap()
                .remove_orphaned_temporaries(|_| true),
            0
        );
    }

    #[test]
    fn describe_names_objects_by_url() {
        let loc = Location::parse("memory:///base").unwrap().child("src");
        let obj = loc.object("00001.delta");
        assert_eq!(loc.describe(&obj), "memory:///base/src/00001.delta");
    }

    /// A store on which another writer's object is in the way of every create, and already
    /// removed by the time it is read (the winner committed and removed its plan, or folded a
    /// snapshot that removed it).
    #[derive(Debug)]
    struct GoneAfterConflict(object_store::memory::InMemory);

    impl std::fmt::Display for GoneAfterConflict {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("gone after conflict")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for GoneAfterConflict {
        async fn put_opts(
            &self,
            location: &Path,
            payload: object_store::PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            if opts.mode == object_store::PutMode::Create {
                return Err(object_store::Error::AlreadyExists {
                    path: location.to_string(),
                    source: "another writer's object".into(),
                });
            }
            self.0.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.0.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &Path,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.0.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: futures::stream::BoxStream<'static, object_store::Result<Path>>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
            self.0.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            self.0.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.0.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.0.copy_opts(from, to, options).await
        }
    }

    /// The loser of a race for a generation must stop as fenced, even when the winner's object
    /// is gone by the time the loser looks at it: taken for a storage error, the loser reloaded
    /// and went on as a second writer (the e2e test `race::two_writers_on_local_disk` caught it
    /// about one race in nine).
    #[tokio::test]
    async fn a_create_that_meets_an_object_removed_since_is_fenced() {
        let store = Arc::new(GoneAfterConflict(object_store::memory::InMemory::new()));
        let location = Location::from_store(store, Path::from("state"), "memory:///state");
        let path = location.object("00000000000000000001.plan");
        let created = location
            .create(&path, bytes::Bytes::from_static(b"plan"))
            .await;
        assert!(
            matches!(created, Ok(false)),
            "fenced, not an error: {created:?}"
        );
    }
}
