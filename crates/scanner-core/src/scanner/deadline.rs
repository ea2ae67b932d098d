//! A deadline for storage requests: once shutdown is requested, no request may outlive the
//! drain's deadline.
//!
//! A store that refuses connections is retried by `object_store` for minutes
//! (`--storage-retry-timeout`), far beyond a Pod's grace period. Without a bound, one scan of
//! the drain would wait on it until the process is cut short at its deadline, and the files
//! still in the `emptyDir` would go unnamed and unshipped. Every request of the scanner's stores
//! goes through [`DeadlineStore`], which abandons it with an error once the deadline has
//! passed: the scan fails like any storage failure (what reached storage is read again
//! before the next batch), and the drain names what it leaves while there is still time.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};
use state_store::Location;
use tokio::sync::watch;

use super::Shutdown;
use super::shutdown::DrainDeadlines;

/// When storage requests must have ended, if ever; shared by every store it
/// [layers](StorageDeadline::layer).
#[derive(Clone, Debug)]
pub(crate) struct StorageDeadline(Arc<watch::Sender<Option<tokio::time::Instant>>>);

impl Default for StorageDeadline {
    fn default() -> Self {
        Self(Arc::new(watch::channel(None).0))
    }
}

impl StorageDeadline {
    /// From now on, requests end by `at` (`None`: no deadline).
    pub(crate) fn set(&self, at: Option<Instant>) {
        self.0.send_replace(at.map(tokio::time::Instant::from_std));
    }

    /// Sets the drain's deadline for scans ([`DrainDeadlines`]) as soon as `shutdown` is
    /// requested, until the returned guard is dropped.
    pub(crate) fn set_at_shutdown(
        &self,
        mut shutdown: Shutdown,
        timeout: Duration,
    ) -> SetAtShutdown {
        let deadline = self.clone();
        SetAtShutdown(tokio::spawn(async move {
            shutdown.requested().await;
            let requested_at = shutdown.requested_at().unwrap_or_else(Instant::now);
            deadline.set(Some(DrainDeadlines::new(requested_at, timeout).scans));
        }))
    }

    /// `location` with its requests bounded by this deadline.
    pub(crate) fn layer(&self, location: &Location) -> Location {
        location.with_store(Arc::new(DeadlineStore {
            inner: Arc::clone(location.store()),
            deadline: self.clone(),
        }))
    }

    /// Completes once a deadline is set and has passed.
    async fn passed(&self) {
        let mut changes = self.0.subscribe();
        loop {
            let at = *changes.borrow_and_update();
            match at {
                Some(at) => tokio::select! {
                    () = tokio::time::sleep_until(at) => return,
                    changed = changes.changed() => {
                        if changed.is_err() {
                            tokio::time::sleep_until(at).await;
                            return;
                        }
                    }
                },
                None => {
                    if changes.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }

    /// Runs `request` until it ends or the deadline passes, whichever comes first.
    async fn bound<T>(
        &self,
        request: impl Future<Output = object_store::Result<T>>,
    ) -> object_store::Result<T> {
        tokio::select! {
            biased;
            result = request => result,
            () = self.passed() => Err(passed()),
        }
    }

    /// `stream`, ended by an error once the deadline passes: a listing cut short must never
    /// look complete.
    fn bound_stream<T: Send + 'static>(
        &self,
        stream: BoxStream<'static, object_store::Result<T>>,
    ) -> BoxStream<'static, object_store::Result<T>> {
        futures::stream::unfold(Some((stream, self.clone())), |going| async move {
            let (mut stream, deadline) = going?;
            tokio::select! {
                biased;
                item = stream.next() => item.map(|item| (item, Some((stream, deadline)))),
                () = deadline.passed() => Some((Err(passed()), None)),
            }
        })
        .boxed()
    }
}

/// Stops [`StorageDeadline::set_at_shutdown`] from setting the deadline when dropped.
#[derive(Debug)]
pub(crate) struct SetAtShutdown(tokio::task::JoinHandle<()>);

impl Drop for SetAtShutdown {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The error of a request abandoned at the deadline.
#[derive(Debug, thiserror::Error)]
#[error("abandoned: the shutdown deadline passed (--shutdown-timeout)")]
struct DeadlinePassed;

fn passed() -> object_store::Error {
    object_store::Error::Generic {
        store: "storage",
        source: Box::new(DeadlinePassed),
    }
}

/// A store whose requests end by a [`StorageDeadline`].
#[derive(Debug)]
struct DeadlineStore {
    inner: Arc<dyn ObjectStore>,
    deadline: StorageDeadline,
}

impl fmt::Display for DeadlineStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

#[async_trait]
impl ObjectStore for DeadlineStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let request = self.inner.put_opts(location, payload, opts);
        self.deadline.bound(request).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let request = self.inner.put_multipart_opts(location, opts);
        let upload = self.deadline.bound(request).await?;
        Ok(Box::new(DeadlineUpload {
            inner: upload,
            deadline: self.deadline.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let mut result = self
            .deadline
            .bound(self.inner.get_opts(location, options))
            .await?;
        if let GetResultPayload::Stream(body) = result.payload {
            result.payload = GetResultPayload::Stream(self.deadline.bound_stream(body));
        }
        Ok(result)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        let request = self.inner.get_ranges(location, ranges);
        self.deadline.bound(request).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.deadline
            .bound_stream(self.inner.delete_stream(locations))
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.deadline.bound_stream(self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.deadline
            .bound_stream(self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let request = self.inner.list_with_delimiter(prefix);
        self.deadline.bound(request).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let request = self.inner.copy_opts(from, to, options);
        self.deadline.bound(request).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        let request = self.inner.rename_opts(from, to, options);
        self.deadline.bound(request).await
    }
}

/// A multipart upload whose parts, completion and abort end by a [`StorageDeadline`] (leftovers
/// are shipped in parts).
#[derive(Debug)]
struct DeadlineUpload {
    inner: Box<dyn MultipartUpload>,
    deadline: StorageDeadline,
}

#[async_trait]
impl MultipartUpload for DeadlineUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let part = self.inner.put_part(data);
        let deadline = self.deadline.clone();
        Box::pin(async move { deadline.bound(part).await })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let request = self.inner.complete();
        self.deadline.bound(request).await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        let request = self.inner.abort();
        self.deadline.bound(request).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    use super::*;

    /// A store whose every request hangs, like one behind a dropped connection.
    #[derive(Debug)]
    struct Hanging;

    impl fmt::Display for Hanging {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("hanging")
        }
    }

    #[async_trait]
    impl ObjectStore for Hanging {
        async fn put_opts(
            &self,
            _: &Path,
            _: PutPayload,
            _: PutOptions,
        ) -> object_store::Result<PutResult> {
            std::future::pending().await
        }
        async fn put_multipart_opts(
            &self,
            _: &Path,
            _: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            // Created at once; its parts never finish.
            Ok(Box::new(HangingUpload))
        }
        async fn get_opts(&self, _: &Path, _: GetOptions) -> object_store::Result<GetResult> {
            std::future::pending().await
        }
        fn delete_stream(
            &self,
            _: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            futures::stream::pending().boxed()
        }
        fn list(&self, _: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            futures::stream::pending().boxed()
        }
        async fn list_with_delimiter(&self, _: Option<&Path>) -> object_store::Result<ListResult> {
            std::future::pending().await
        }
        async fn copy_opts(&self, _: &Path, _: &Path, _: CopyOptions) -> object_store::Result<()> {
            std::future::pending().await
        }
    }

    #[derive(Debug)]
    struct HangingUpload;

    #[async_trait]
    impl MultipartUpload for HangingUpload {
        fn put_part(&mut self, _: PutPayload) -> UploadPart {
            Box::pin(std::future::pending())
        }
        async fn complete(&mut self) -> object_store::Result<PutResult> {
            std::future::pending().await
        }
        async fn abort(&mut self) -> object_store::Result<()> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn the_parts_of_a_multipart_upload_end_at_the_deadline_too() {
        let deadline = StorageDeadline::default();
        let hanging = Location::from_store(Arc::new(Hanging), Path::from("x"), "hanging://x");
        let store = Arc::clone(deadline.layer(&hanging).store());
        let mut upload = store
            .put_multipart_opts(&Path::from("x/big"), PutMultipartOptions::default())
            .await
            .unwrap();
        deadline.set(Some(Instant::now() + Duration::from_millis(100)));
        let started = Instant::now();
        assert!(
            upload
                .put_part(PutPayload::from_static(b"part"))
                .await
                .is_err()
        );
        assert!(upload.complete().await.is_err());
        assert!(upload.abort().await.is_err());
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn requests_end_at_the_deadline_and_not_before_one_is_set() {
        let deadline = StorageDeadline::default();
        let hanging = Location::from_store(Arc::new(Hanging), Path::from("x"), "hanging://x");
        let bounded = deadline.layer(&hanging);
        let store = Arc::clone(bounded.store());
        let path = Path::from("x/a");
        // No deadline: the request is still waiting.
        let waiting = tokio::time::timeout(Duration::from_millis(100), store.get(&path)).await;
        assert!(waiting.is_err(), "a request without a deadline waits");

        deadline.set(Some(Instant::now() + Duration::from_millis(200)));
        let started = Instant::now();
        let put = store.put(&path, PutPayload::from_static(b"x")).await;
        let listed: Vec<_> = store.list(None).collect().await;
        assert!(started.elapsed() < Duration::from_secs(2));
        let error = put.unwrap_err().to_string();
        assert!(error.contains("shutdown deadline passed"), "{error}");
        assert_eq!(listed.len(), 1, "a listing cut short ends with an error");
        assert!(listed[0].is_err());
    }

    #[tokio::test]
    async fn requests_before_the_deadline_go_through() {
        let deadline = StorageDeadline::default();
        let memory = Location::from_store(Arc::new(InMemory::new()), Path::from("p"), "memory://p");
        let bounded = deadline.layer(&memory);
        deadline.set(Some(Instant::now() + Duration::from_secs(60)));
        let path = Path::from("p/a");
        bounded
            .store()
            .put(&path, PutPayload::from_static(b"data"))
            .await
            .unwrap();
        let body = bounded
            .store()
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&body[..], b"data");
        assert_eq!(bounded.prefix(), memory.prefix());
        assert_eq!(bounded.to_string(), "memory://p");
    }
}
