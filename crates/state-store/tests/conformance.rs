//! The state log behaves the same on every store: memory, a local directory, a real
//! S3-compatible server (moto) and the Azure emulator (Azurite).
//!
//! The S3 and Azure variants are `#[ignore]`d under plain `cargo test`; `tests/run.sh` installs
//! and starts both servers on 127.0.0.1, sets `GLEANER_TEST_S3` / `GLEANER_TEST_AZURE` and the
//! standard `AWS_*` / `AZURE_*` variables, and runs them. Each check uses a fresh random prefix,
//! so checks run concurrently against one server.
//!
//! No GCS emulator works with `object_store`'s GCS client (see `../shared/TOOLING.md`): GCS is
//! covered by configuration and URL tests only (`gcs_*` below and the unit tests of `Location`).

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use state_store::{
    Delta, DeltasRead, FileEntry, Location, ObjectKind, Outcome, Plan, PlannedFile, RelPath,
    SourceId, State, StateError, StateLog,
};

/// The log of source `id` under `location`.
fn open_log(location: &Location, id: &str) -> StateLog {
    StateLog::new(location, &SourceId::new(id).unwrap())
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::UNIX_EPOCH.elapsed().unwrap().as_millis() as u64
}

// ---------------------------------------------------------------------------------------------
// Backends

/// A fresh, empty location on the backend, and whatever must live as long as it.
type Fresh = (Location, Option<tempfile::TempDir>);

fn memory() -> Fresh {
    (Location::parse("memory://").unwrap(), None)
}

fn local() -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let location = Location::parse(dir.path().join("state").to_str().unwrap()).unwrap();
    (location, Some(dir))
}

fn from_env(var: &str) -> Fresh {
    let base = std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run tests/run.sh, which starts the server and sets it")
    });
    let url = format!("{base}/conformance-{:016x}", fastrand::u64(..));
    (
        Location::parse(&url).unwrap_or_else(|e| panic!("{url}: {e}")),
        None,
    )
}

fn s3() -> Fresh {
    from_env("GLEANER_TEST_S3")
}

async fn azure() -> Fresh {
    ensure_azure_container().await;
    from_env("GLEANER_TEST_AZURE")
}

/// `object_store` cannot create Azure containers: create the test container with a request
/// signed by its public `AzureAuthorizer`, once per test process (409 means it exists).
async fn ensure_azure_container() {
    static CREATED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    CREATED
        .get_or_init(|| async {
            use object_store::ClientOptions;
            use object_store::azure::{AzureAccessKey, AzureAuthorizer, AzureCredential};
            use object_store::client::{HttpConnector, HttpRequestBody, ReqwestConnector};
            let var = |name: &str| {
                std::env::var(name)
                    .unwrap_or_else(|_| panic!("{name} is not set: run tests/run.sh"))
            };
            let endpoint = var("AZURE_STORAGE_ENDPOINT");
            let account = var("AZURE_STORAGE_ACCOUNT_NAME");
            let key = AzureAccessKey::try_new(&var("AZURE_STORAGE_ACCOUNT_KEY")).unwrap();
            let container = var("GLEANER_TEST_AZURE")
                .trim_start_matches("az://")
                .to_string();
            let credential = AzureCredential::AccessKey(key);
            let mut request = http::Request::builder()
                .method("PUT")
                .uri(format!("{endpoint}/{container}?restype=container"))
                .header("content-length", "0")
                .body(HttpRequestBody::empty())
                .unwrap();
            AzureAuthorizer::new(&credential, &account)
                .try_authorize(&mut request)
                .unwrap();
            let client = ReqwestConnector::default()
                .connect(&ClientOptions::new().with_allow_http(true))
                .unwrap();
            let response = client.execute(request).await.expect("Azurite answers");
            let status = response.status().as_u16();
            assert!(
                status == 201 || status == 409,
                "creating container {container}: HTTP {status}"
            );
        })
        .await;
}

macro_rules! conformance {
    ($backend:ident, $fresh:expr $(, #[$attr:meta])*) => {
        mod $backend {
            use super::*;

            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_empty_location_is_generation_zero() {
                let (location, _keep) = $fresh;
                checks::empty(location).await;
            }

            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn commits_fold_and_plans_are_pending_or_stale() {
                let (location, _keep) = $fresh;
                checks::commits_and_plans(location).await;
            }

            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redos_of_a_pending_plan_are_counted_and_go_with_it() {
                let (location, _keep) = $fresh;
                checks::redos(location).await;
            }

            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_second_writer_is_fenced() {
                let (location, _keep) = $fresh;
                checks::fencing(location).await;
            }

            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_create_that_landed_counts_as_created() {
                let (location, _keep) = $fresh;
                checks::landed_creates(location).await;
            }

            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_commits_have_exactly_one_winner() {
                let (location, _keep) = $fresh;
                checks::concurrent_commits(location).await;
            }

            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn snapshots_fold_the_log_and_remove_what_they_supersede() {
                let (location, _keep) = $fresh;
                checks::snapshots(location).await;
            }

            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_crash_while_snapshotting_loses_nothing() {
                let (location, _keep) = $fresh;
                checks::interrupted_snapshots(location).await;
            }

            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn damaged_objects_are_named_errors() {
                let (location, _keep) = $fresh;
                checks::corruption(location).await;
            }

            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn gaps_are_errors() {
                let (location, _keep) = $fresh;
                checks::gaps(location).await;
            }

            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn unrelated_objects_are_ignored_and_sources_listed() {
                let (location, _keep) = $fresh;
                checks::neighbours(location).await;
            }

            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn deltas_after_a_snapshot_load_as_they_apply_one_by_one() {
                let (location, _keep) = $fresh;
                checks::deltas_after_a_snapshot(location).await;
            }

            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn large_deltas_are_merged_from_the_spool_directory_or_folded() {
                let (location, _keep) = $fresh;
                checks::large_deltas(location).await;
            }

            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_large_state_round_trips() {
                let (location, _keep) = $fresh;
                checks::large_state(location).await;
            }
        }
    };
}

conformance!(memory_store, memory());
conformance!(local_directory, local());
conformance!(s3_moto, s3(), #[ignore = "needs moto (S3): run tests/run.sh"]);
conformance!(azure_azurite, azure().await, #[ignore = "needs Azurite: run tests/run.sh"]);

// ---------------------------------------------------------------------------------------------
// GCS: configuration and URL handling only.

#[test]
fn gcs_urls_resolve_to_bucket_and_prefix() {
    let location = Location::parse("gs://my-bucket/gleaner/state").unwrap();
    assert_eq!(location.prefix().as_ref(), "gleaner/state");
    let log = open_log(&location, "pod-1");
    assert_eq!(
        log.location()
            .describe(&log.object_path(7, ObjectKind::Delta)),
        "gs://my-bucket/gleaner/state/pod-1/00000000000000000007.delta"
    );
}

#[tokio::test]
async fn gcs_without_credentials_fails_with_an_error_naming_the_location() {
    // No credentials and no metadata server here: the first request fails, fast with retries
    // off, naming the object it tried.
    let options = state_store::StorageOptions {
        max_retries: 0,
        request_timeout: std::time::Duration::from_secs(3),
        connect_timeout: std::time::Duration::from_secs(2),
        ..state_store::StorageOptions::default()
    };
    let location = Location::parse_with("gs://gleaner-no-such-bucket/state", &options).unwrap();
    let log = open_log(&location, "pod-1");
    let started = std::time::Instant::now();
    let err = log.load().await.expect_err("no credentials");
    assert!(matches!(err, StateError::Storage { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("gs://gleaner-no-such-bucket/state/pod-1"),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

// ---------------------------------------------------------------------------------------------
// The checks

mod checks {
    use super::*;

    fn entry(generation: u64, size: u64) -> FileEntry {
        FileEntry {
            size,
            mtime_ns: 1_700_000_000_000_000_000 + size as i64,
            inode: 100 + size,
            btime_ns: 0,
            offset: size,
            generation,
            outcome: Outcome::Done,
            fingerprint: size * 31 + 1,
        }
    }

    fn delta(generation: u64, paths: &[&str]) -> Delta {
        Delta {
            generation,
            writer_id: 1,
            committed_at_ms: now_ms(),
            output_key: Some(format!("s/{generation:020}.ndjson")),
            upserts: paths
                .iter()
                .map(|p| (RelPath::from(*p), entry(generation, p.len() as u64)))
                .collect(),
            origin: None,
            replay: false,
        }
    }

    fn plan(generation: u64) -> Plan {
        Plan {
            generation,
            writer_id: 1,
            created_at_ms: now_ms(),
            output_key: format!("s/{generation:020}.ndjson"),
            files: vec![PlannedFile {
                path: "x".into(),
                size: 1,
                mtime_ns: 1,
                inode: 1,
                btime_ns: 0,
                start: 0,
            }],
            replay: false,
        }
    }

    fn paths(state: &State) -> Vec<String> {
        state.entries().map(|(p, _)| p.to_string()).collect()
    }

    async fn kinds(log: &StateLog) -> Vec<(u64, &'static str)> {
        log.objects()
            .await
            .unwrap()
            .into_iter()
            .map(|o| (o.generation, o.kind.name()))
            .collect()
    }

    /// Flips one byte in the middle of an object, through the store itself.
    async fn damage(location: &Location, path: &object_store::path::Path, truncate: bool) {
        let store = location.store();
        let mut bytes = store
            .get(path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        if truncate {
            bytes.truncate(bytes.len() - 3);
        } else {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x20;
        }
        store.put(path, PutPayload::from(bytes)).await.unwrap();
    }

    pub(crate) async fn empty(location: Location) {
        let log = open_log(&location, "empty");
        let loaded = log.load().await.unwrap();
        assert_eq!(loaded.state.generation(), 0);
        assert!(loaded.pending.is_none() && loaded.stale.is_empty());
        assert!(log.objects().await.unwrap().is_empty());
        log.location()
            .check_writable(log.writer_id())
            .await
            .unwrap();
        assert!(
            log.objects().await.unwrap().is_empty(),
            "the probe is removed"
        );
    }

    pub(crate) async fn redos(location: Location) {
        let log = open_log(&location, "pod-1");
        log.create_plan(&plan(1)).await.unwrap();
        assert_eq!(log.load().await.unwrap().pending_redos, 0);
        log.record_redo(1, 1).await.unwrap();
        log.record_redo(1, 2).await.unwrap();
        // Recording the same attempt twice (a retried request) is fine.
        log.record_redo(1, 2).await.unwrap();
        let loaded = log.load().await.unwrap();
        assert_eq!(loaded.pending.as_ref().map(|p| p.generation), Some(1));
        assert_eq!(loaded.pending_redos, 2);
        assert!(loaded.stale.is_empty(), "{:?}", loaded.stale);
        assert_eq!(
            kinds(&log).await,
            [(1, "plan")],
            "markers are not log objects"
        );
        // A redo that ended in its process takes its marker back.
        log.record_redo(1, 3).await.unwrap();
        assert_eq!(log.load().await.unwrap().pending_redos, 3);
        log.remove_redo(1, 3).await.unwrap();
        log.remove_redo(1, 3).await.unwrap(); // gone already: fine
        assert_eq!(log.load().await.unwrap().pending_redos, 2);

        // Committed: the plan and its markers go.
        log.commit(&delta(1, &["a"])).await.unwrap();
        log.remove_plan(1, 2).await.unwrap();
        let loaded = log.load().await.unwrap();
        assert!(loaded.pending.is_none() && loaded.stale.is_empty());
        assert_eq!(loaded.pending_redos, 0);

        // Markers left by a process that stopped after its commit are stale at the next load.
        log.create_plan(&plan(2)).await.unwrap();
        log.record_redo(2, 1).await.unwrap();
        log.commit(&delta(2, &["b"])).await.unwrap();
        let loaded = log.load().await.unwrap();
        assert_eq!(loaded.pending_redos, 0);
        assert_eq!(
            loaded.stale.len(),
            2,
            "the plan and its marker: {:?}",
            loaded.stale
        );
        log.remove(loaded.stale).await.unwrap();
        assert!(log.load().await.unwrap().stale.is_empty());

        // A snapshot removes the markers it supersedes with the plans.
        log.create_plan(&plan(3)).await.unwrap();
        log.record_redo(3, 1).await.unwrap();
        log.commit(&delta(3, &["c"])).await.unwrap();
        let state = log.load().await.unwrap().state;
        log.store_snapshot(&state).await.unwrap();
        let loaded = log.load().await.unwrap();
        assert!(loaded.stale.is_empty(), "{:?}", loaded.stale);
        assert_eq!(kinds(&log).await, [(3, "snapshot")]);
    }

    pub(crate) async fn commits_and_plans(location: Location) {
        let log = open_log(&location, "pod-1");
        log.create_plan(&plan(1)).await.unwrap();
        log.commit(&delta(1, &["a", "b"])).await.unwrap();
        log.create_plan(&plan(2)).await.unwrap();

        let loaded = log.load().await.unwrap();
        assert_eq!(loaded.state.generation(), 1);
        assert_eq!(paths(&loaded.state), ["a", "b"]);
        let pending = loaded.pending.as_ref().expect("plan 2 is pending");
        assert_eq!((pending.generation, &pending.files), (2, &plan(2).files));
        assert_eq!(loaded.stale, vec![log.object_path(1, ObjectKind::Plan)]);

        log.remove(loaded.stale).await.unwrap();
        log.remove_plan(1, 0).await.unwrap(); // already gone: fine
        log.commit(&delta(2, &["b", "c"])).await.unwrap();
        log.remove_plan(2, 0).await.unwrap();
        let loaded = log.load().await.unwrap();
        assert_eq!(loaded.state.generation(), 2);
        assert_eq!(paths(&loaded.state), ["a", "b", "c"]);
        assert_eq!(loaded.state.get(&"b".into()).unwrap().generation, 2);
        assert!(loaded.pending.is_none());
        assert_eq!(kinds(&log).await, [(1, "delta"), (2, "delta")]);
    }

    pub(crate) async fn fencing(location: Location) {
        let first = open_log(&location, "pod-1");
        let second = open_log(&location, "pod-1");
        // Every writer stamps its plans with its own random id, so two plans never match.
        let plan_of = |log: &StateLog| Plan {
            writer_id: log.writer_id(),
            ..plan(1)
        };
        first.create_plan(&plan_of(&first)).await.unwrap();
        let err = second.create_plan(&plan_of(&second)).await.unwrap_err();
        assert!(
            matches!(err, StateError::Fenced { generation: 1, .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("another writer owns the state"),
            "{err}"
        );

        second.ensure_uncommitted(1).await.unwrap();
        first.commit(&delta(1, &["a"])).await.unwrap();
        let err = second.commit(&delta(1, &["b"])).await.unwrap_err();
        assert!(
            matches!(err, StateError::Fenced { generation: 1, .. }),
            "{err}"
        );
        let err = second.ensure_uncommitted(1).await.unwrap_err();
        assert!(
            err.to_string().contains("00000000000000000001.delta"),
            "{err}"
        );
        second.ensure_uncommitted(2).await.unwrap();
        assert_eq!(paths(&first.load().await.unwrap().state), ["a"]);

        // A snapshot deletes the deltas it covers, which frees their names: a writer that
        // passed its checks and stalled must still lose when it finally commits.
        second.ensure_uncommitted(2).await.unwrap();
        let mut state = first.load().await.unwrap().state;
        for g in 2..=3 {
            let d = delta(g, &["c"]);
            first.commit(&d).await.unwrap();
            state.apply(&d).unwrap();
        }
        first.store_snapshot(&state).await.unwrap();
        let err = second.commit(&delta(2, &["stale"])).await.unwrap_err();
        assert!(
            matches!(err, StateError::Fenced { generation: 2, .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("00000000000000000003.snapshot"),
            "{err}"
        );
        let loaded = first.load().await.unwrap();
        assert_eq!(loaded.state, state, "the stale delta changes nothing");
        assert_eq!(loaded.stale.len(), 1);
    }

    pub(crate) async fn landed_creates(location: Location) {
        // A create whose answer was lost and that is tried again finds its own object: that is
        // success. Another content under the name is not.
        let path = location.object("landed");
        assert!(location.create(&path, "one".into()).await.unwrap());
        assert!(location.create(&path, "one".into()).await.unwrap());
        assert!(!location.create(&path, "two".into()).await.unwrap());
        location
            .check_conditional_create(&location.object("probe"))
            .await
            .unwrap();
    }

    pub(crate) async fn concurrent_commits(location: Location) {
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let log = open_log(&location, "contested");
                tokio::spawn(async move {
                    let name = format!("writer-{i}");
                    log.commit(&delta(1, &[name.as_str()])).await.map(|()| name)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for writer in writers {
            match writer.await.unwrap() {
                Ok(name) => winners.push(name),
                Err(StateError::Fenced { .. }) => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "exactly one of 8 concurrent commits wins: {winners:?}"
        );
        let log = open_log(&location, "contested");
        assert_eq!(paths(&log.load().await.unwrap().state), winners);
    }

    pub(crate) async fn snapshots(location: Location) {
        let log = open_log(&location, "snap");
        let mut expected = State::new();
        for g in 1..=5 {
            let names: Vec<String> = (0..3).map(|i| format!("g{g}/f{i}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let d = delta(g, &refs);
            log.create_plan(&plan(g)).await.unwrap();
            log.commit(&d).await.unwrap();
            expected.apply(&d).unwrap();
        }
        // Files of generation 1 are gone from the directory: the snapshot drops them.
        let gone: Vec<RelPath> = (0..3)
            .map(|i| RelPath::from(format!("g1/f{i}").as_str()))
            .collect();
        assert_eq!(expected.forget(&gone), 3);
        assert_eq!(expected.generation(), 5);
        let stored = log.store_snapshot(&expected).await.unwrap();
        assert_eq!(stored.removed, 10, "5 deltas and 5 plans are superseded");
        assert_eq!(stored.generation, 5);
        assert!(stored.bytes > 0);
        assert_eq!(kinds(&log).await, [(5, "snapshot")]);

        for g in 6..=7 {
            let d = delta(g, &["g1/f0", "late"]);
            log.commit(&d).await.unwrap();
            expected.apply(&d).unwrap();
        }
        let loaded = log.load().await.unwrap();
        assert_eq!(loaded.snapshot_generation, Some(5));
        assert_eq!(loaded.state, expected);
        assert_eq!(loaded.objects_read, 3);
        assert!(loaded.stale.is_empty());

        // A second snapshot supersedes the first.
        log.store_snapshot(&expected).await.unwrap();
        assert_eq!(kinds(&log).await, [(7, "snapshot")]);
        assert_eq!(log.load().await.unwrap().state, expected);
        let report = log.verify().await.unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.generation, Some(7));
    }

    pub(crate) async fn interrupted_snapshots(location: Location) {
        // A crash after the snapshot landed but before the superseded objects were removed:
        // loading gives the same state, and reports the leftovers as stale.
        let log = open_log(&location, "crashy");
        let mut expected = State::new();
        for g in 1..=4 {
            let d = delta(g, &[format!("f{g}").as_str()]);
            log.commit(&d).await.unwrap();
            expected.apply(&d).unwrap();
        }
        let mut at_3 = State::new();
        for g in 1..=3 {
            at_3.apply(&delta(g, &[format!("f{g}").as_str()])).unwrap();
        }
        // Write the snapshot of generation 3 directly, as if the process died right after: made
        // by a log elsewhere, copied over.
        let elsewhere = open_log(&Location::parse("memory://").unwrap(), "crashy");
        elsewhere.store_snapshot(&at_3).await.unwrap();
        let snapshot = elsewhere.object_path(3, ObjectKind::Snapshot);
        let bytes = elsewhere.location().store().get(&snapshot).await.unwrap();
        log.location()
            .store()
            .put(
                &log.object_path(3, ObjectKind::Snapshot),
                PutPayload::from(bytes.bytes().await.unwrap()),
            )
            .await
            .unwrap();
        let loaded = log.load().await.unwrap();
        assert_eq!(paths(&loaded.state), paths(&expected));
        assert_eq!(loaded.state.generation(), 4);
        assert_eq!(loaded.snapshot_generation, Some(3));
        assert_eq!(loaded.stale.len(), 3, "deltas 1 to 3");
        log.remove(loaded.stale).await.unwrap();
        assert_eq!(kinds(&log).await, [(3, "snapshot"), (4, "delta")]);
        assert_eq!(paths(&log.load().await.unwrap().state), paths(&expected));
    }

    pub(crate) async fn corruption(location: Location) {
        for (kind, truncate) in [
            (ObjectKind::Delta, false),
            (ObjectKind::Delta, true),
            (ObjectKind::Plan, false),
            (ObjectKind::Snapshot, false),
            (ObjectKind::Snapshot, true),
        ] {
            let source = format!("damaged-{}-{truncate}", kind.name());
            let log = open_log(&location, &source);
            let mut state = State::new();
            state.apply(&delta(1, &["a"])).unwrap();
            log.commit(&delta(1, &["a"])).await.unwrap();
            log.store_snapshot(&state).await.unwrap();
            log.commit(&delta(2, &["b"])).await.unwrap();
            log.create_plan(&plan(3)).await.unwrap();
            let generation = match kind {
                ObjectKind::Snapshot => 1,
                ObjectKind::Delta => 2,
                ObjectKind::Plan => 3,
            };
            let path = log.object_path(generation, kind);
            damage(&location, &path, truncate).await;

            let err = log
                .load()
                .await
                .expect_err("a damaged object must not load");
            assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
            assert!(
                err.to_string()
                    .contains(log.object_path(generation, kind).filename().unwrap()),
                "the error names the object: {err}"
            );
            let report = log.verify().await.unwrap();
            assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
            assert!(report.generation.is_none());
        }
        misplaced_delta(&location).await;
    }

    /// A delta found under the name of a later generation is named, also where a load applies
    /// many deltas together: a snapshot of 1,000 files, then 19 deltas of one file each.
    async fn misplaced_delta(location: &Location) {
        let log = open_log(location, "misplaced");
        let names: Vec<String> = (0..1000).map(|i| format!("f{i:04}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut state = State::new();
        state.apply(&delta(1, &refs)).unwrap();
        log.commit(&delta(1, &refs)).await.unwrap();
        log.store_snapshot(&state).await.unwrap();
        for generation in 2..=20 {
            let path = format!("g{generation:02}");
            log.commit(&delta(generation, &[&path])).await.unwrap();
        }
        assert_eq!(log.load().await.unwrap().state.len(), 1019);
        let store = location.store();
        let second = store
            .get(&log.object_path(2, ObjectKind::Delta))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let fifth = log.object_path(5, ObjectKind::Delta);
        store.put(&fifth, PutPayload::from(second)).await.unwrap();
        let err = log
            .load()
            .await
            .expect_err("a misplaced delta must not load");
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        assert!(
            err.to_string().contains(fifth.filename().unwrap()),
            "the error names the object: {err}"
        );
    }

    pub(crate) async fn gaps(location: Location) {
        let log = open_log(&location, "gappy");
        log.commit(&delta(1, &["a"])).await.unwrap();
        log.commit(&delta(3, &["c"])).await.unwrap();
        let err = log.load().await.unwrap_err();
        assert!(matches!(err, StateError::Inconsistent { .. }), "{err}");
        assert!(err.to_string().contains("generation 2 is missing"), "{err}");
        let report = log.verify().await.unwrap();
        assert_eq!(report.problems.len(), 1);
    }

    pub(crate) async fn neighbours(location: Location) {
        let log = open_log(&location, "pod-a");
        log.commit(&delta(1, &["a"])).await.unwrap();
        open_log(&location, "pod-b")
            .commit(&delta(1, &["b"]))
            .await
            .unwrap();
        let store = location.store();
        store
            .put(
                &log.location().object("README"),
                PutPayload::from_static(b"hi"),
            )
            .await
            .unwrap();
        store
            .put(
                &log.location()
                    .child("nested")
                    .object(log.object_path(2, ObjectKind::Delta).filename().unwrap()),
                PutPayload::from_static(b"not a delta"),
            )
            .await
            .unwrap();
        assert_eq!(log.load().await.unwrap().state.generation(), 1);
        let sources = StateLog::sources(&location).await.unwrap();
        assert_eq!(
            sources.iter().map(SourceId::as_str).collect::<Vec<_>>(),
            ["pod-a", "pod-b"]
        );
        let all: Vec<_> = store
            .list(Some(location.prefix()))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(all.len(), 4);
    }

    /// A snapshot, then deltas that change some of its files, add files among them and at
    /// both ends, commit the same file again, record failures (with their reasons) and
    /// origins: loading gives the state that applying the deltas one by one gives, with their
    /// outputs in order. Also with one delta not sorted by path, which a load accepts.
    pub(crate) async fn deltas_after_a_snapshot(location: Location) {
        for (source, unsorted) in [("merged", None), ("one-unsorted", Some(7))] {
            let log = open_log(&location, source);
            let names: Vec<String> = (0..2_000).map(|i| format!("d{}/f{i:05}", i % 13)).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let mut expected = State::new();
            expected.apply(&delta(1, &refs)).unwrap();
            log.commit(&delta(1, &refs)).await.unwrap();
            log.store_snapshot(&expected).await.unwrap();
            let mut outputs = Vec::new();
            let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
            for generation in 2..=40 {
                let mut d = delta(generation, &[]);
                let count = if generation == 20 { 0 } else { 1 + seed % 90 };
                for _ in 0..count {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let path = match seed % 4 {
                        0 => format!("d{}/f{:05}", seed % 13, seed % 2_000),
                        1 => format!("d{}/f{:05}-new{}", seed % 13, seed % 2_000, seed % 3),
                        2 => format!("a{}", seed % 50),
                        _ => format!("z{}", seed % 50),
                    };
                    let mut entry = entry(generation, seed % 10_000);
                    if seed % 5 == 0 {
                        entry.outcome = Outcome::Failed {
                            reason: format!("reason {seed}").into(),
                        };
                    }
                    d.upserts.push((RelPath::from(path.as_str()), entry));
                }
                d.upserts.sort_by(|a, b| a.0.cmp(&b.0));
                d.upserts.dedup_by(|a, b| a.0 == b.0);
                if Some(generation) == unsorted {
                    d.upserts.reverse();
                }
                if generation % 3 == 0 {
                    d.origin = Some(state_store::Origin {
                        root_id: generation,
                        host: format!("pod-{generation}"),
                        watch_dir: "/data".into(),
                    });
                }
                d.output_key = (generation % 4 != 0).then(|| format!("s/{generation}"));
                log.commit(&d).await.unwrap();
                expected.apply(&d).unwrap();
                outputs.extend(state_store::CommittedOutput::of(&d));
            }
            let loaded = log.load().await.unwrap();
            assert_eq!(loaded.snapshot_generation, Some(1), "{source}");
            assert_eq!(loaded.objects_read, 40, "{source}");
            assert_eq!(loaded.committed_outputs, outputs, "{source}");
            assert_eq!(loaded.state.generation(), 40);
            assert_eq!(
                loaded.state.last_origin(),
                expected.last_origin(),
                "{source}"
            );
            let entries = |state: &State| -> Vec<(String, FileEntry)> {
                state.entries().map(|(p, e)| (p.to_string(), e)).collect()
            };
            assert_eq!(entries(&loaded.state), entries(&expected), "{source}");
            assert_eq!(loaded.state, expected, "{source}");
        }
    }

    /// Deltas after a snapshot that are too large to hold whole beside it (over 4 MiB, and
    /// over an eighth of the snapshot): a local store merges them from their files; an object
    /// store merges them from copies in the spool directory, and folds them without one, or
    /// with one it cannot use. The state is the same every way.
    pub(crate) async fn large_deltas(location: Location) {
        let log = open_log(&location, "large-deltas");
        let mut expected = State::new();
        let first = delta(1, &["a/first.log"]);
        log.commit(&first).await.unwrap();
        expected.apply(&first).unwrap();
        log.store_snapshot(&expected).await.unwrap();
        let mut outputs = Vec::new();
        for generation in 2..=7 {
            let names: Vec<String> = (0..20_000)
                .map(|i| format!("dir-{}/file-{generation}-{i:06}.log", i % 50))
                .collect();
            let mut refs: Vec<&str> = names.iter().map(String::as_str).collect();
            refs.sort_unstable();
            let d = delta(generation, &refs);
            log.commit(&d).await.unwrap();
            expected.apply(&d).unwrap();
            outputs.extend(state_store::CommittedOutput::of(&d));
        }
        let objects = log.objects().await.unwrap();
        let delta_bytes: u64 = objects
            .iter()
            .filter(|o| o.kind == ObjectKind::Delta && o.generation > 1)
            .map(|o| o.size)
            .sum();
        assert!(delta_bytes > 4 << 20, "the deltas are {delta_bytes} bytes");
        let local = location.local_dir().is_some();

        let spool = tempfile::tempdir().unwrap();
        let missing = spool.path().join("missing");
        let cases = [
            (Some(spool.path()), DeltasRead::Spooled, None),
            (None, DeltasRead::Folded, Some("no spool directory")),
            (Some(missing.as_path()), DeltasRead::Folded, Some("missing")),
        ];
        for (dir, remote, refused) in cases {
            let mut log = open_log(&location, "large-deltas");
            if let Some(dir) = dir {
                log = log.with_spool_dir(dir);
            }
            let loaded = log.load().await.unwrap();
            let case = format!("spool directory {dir:?}");
            if local {
                assert_eq!(loaded.deltas, DeltasRead::Merged, "{case}");
                assert_eq!(loaded.spool_refused, None, "{case}");
            } else {
                assert_eq!(loaded.deltas, remote, "{case}");
                match refused {
                    Some(reason) => {
                        let said = loaded.spool_refused.as_deref().unwrap_or("");
                        assert!(said.contains(reason), "{case}: {said:?}");
                    }
                    None => assert_eq!(loaded.spool_refused, None, "{case}"),
                }
            }
            assert_eq!(loaded.objects_read, 7, "{case}");
            assert_eq!(loaded.committed_outputs, outputs, "{case}");
            assert_eq!(loaded.state, expected, "{case}");
            // The copies have no names, and are gone with the load.
            assert_eq!(
                std::fs::read_dir(spool.path()).unwrap().count(),
                0,
                "{case}"
            );
        }
    }

    pub(crate) async fn large_state(location: Location) {
        let log = Arc::new(open_log(&location, "large"));
        let names: Vec<String> = (0..20_000)
            .map(|i| format!("dir-{}/file-{i:06}.log", i % 50))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let d = delta(1, &refs);
        log.commit(&d).await.unwrap();
        let mut state = State::new();
        state.apply(&d).unwrap();
        log.store_snapshot(&state).await.unwrap();
        let loaded = log.load().await.unwrap();
        assert_eq!(loaded.state.len(), 20_000);
        assert_eq!(loaded.state, state);
    }
}
