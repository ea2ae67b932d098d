//! Trying again the files whose reading failed in a way that may pass.
//!
//! A file that cannot be read because permission is denied, or because of an IO error (`EIO`,
//! `ESTALE` on a network file system), may well be readable a moment later: an operator fixes
//! its mode, the server comes back. Such a failure is not committed at once: the file is held
//! back (in no output, in no delta), and tried again after a backoff that doubles, a few
//! times ([`RetryPolicy`]). Only when the last attempt fails is the failure committed, with its
//! reason, like any other. A file that changes meanwhile starts its attempts again.
//!
//! The attempts are kept in memory: after a restart a file gets its attempts again, which
//! delays its final failure and never loses it.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use state_store::{PlannedFile, RelPath};

use crate::diff::Seen;
use crate::listing::ListedFile;

/// How files whose reading failed in a way that may pass are tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts after the first one before the failure is final (0: final at once).
    pub retries: u32,
    /// The wait before the first retry; each next one waits twice as long.
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    /// Three retries, after 1 s, 2 s and 4 s: a failure is final about 7 s after the first.
    fn default() -> Self {
        Self {
            retries: 3,
            backoff: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// A policy of `retries` retries, the first after `backoff`.
    pub fn new(retries: u32, backoff: Duration) -> Self {
        Self { retries, backoff }
    }
}

/// A file held back for another attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Retry {
    /// Failed attempts so far.
    attempts: u32,
    /// Not tried again before this.
    after: SystemTime,
    /// The file as it was when it failed: a file that changed starts again.
    size: u64,
    mtime_ns: i64,
    inode: u64,
}

/// The files held back for another attempt, by path.
#[derive(Clone, Debug, Default)]
pub(crate) struct Retries {
    files: HashMap<RelPath, Retry>,
}

impl Retries {
    /// When `file`, listed at `listed_at`, may be tried again, if it must wait for that.
    pub(crate) fn wait(&self, file: &ListedFile, listed_at: SystemTime) -> Option<SystemTime> {
        let retry = self.files.get(&file.path)?;
        let same =
            (retry.size, retry.mtime_ns, retry.inode) == (file.size, file.mtime_ns, file.inode);
        (same && retry.after > listed_at).then_some(retry.after)
    }

    /// Decides on a failure that may pass, of `file` at `now`: the attempt it was and when the
    /// next one is, if the file is held back; `None` if the failure is final.
    pub(crate) fn hold(
        &mut self,
        file: &PlannedFile,
        policy: RetryPolicy,
        now: SystemTime,
    ) -> Option<(u32, SystemTime)> {
        let fresh = Retry {
            attempts: 0,
            after: now,
            size: file.size,
            mtime_ns: file.mtime_ns,
            inode: file.inode,
        };
        let retry = self.files.entry(file.path.clone()).or_insert(fresh);
        if (retry.size, retry.mtime_ns, retry.inode) != (fresh.size, fresh.mtime_ns, fresh.inode) {
            *retry = fresh;
        }
        if retry.attempts >= policy.retries {
            self.files.remove(&file.path);
            return None;
        }
        let wait = policy
            .backoff
            .checked_mul(2u32.saturating_pow(retry.attempts))
            .unwrap_or(Duration::MAX);
        retry.attempts += 1;
        retry.after = now.checked_add(wait).unwrap_or(now);
        Some((retry.attempts, retry.after))
    }

    /// Files held back.
    pub(crate) fn len(&self) -> usize {
        self.files.len()
    }

    /// When the first of them may be tried again.
    pub(crate) fn next_at(&self) -> Option<SystemTime> {
        self.files.values().map(|retry| retry.after).min()
    }

    /// The files held back, with when each is tried again.
    pub(crate) fn held(&self) -> impl Iterator<Item = (&RelPath, SystemTime)> {
        self.files.iter().map(|(path, retry)| (path, retry.after))
    }

    /// Forgets a file whose outcome is committed.
    pub(crate) fn forget(&mut self, path: &RelPath) {
        self.files.remove(path);
    }

    /// Forgets the files the walk did not find.
    pub(crate) fn keep_listed(&mut self, seen: &Seen<'_>) {
        self.files.retain(|path, _| seen.contains(path.as_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(size: u64) -> PlannedFile {
        PlannedFile {
            path: "a.log".into(),
            size,
            mtime_ns: 7,
            inode: 3,
            btime_ns: 0,
            start: 0,
        }
    }

    #[test]
    fn a_failure_that_may_pass_is_held_with_doubling_waits_then_final() {
        let policy = RetryPolicy::new(3, Duration::from_secs(1));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut retries = Retries::default();
        let file = planned(10);
        let listed = ListedFile {
            path: file.path.clone(),
            size: 10,
            mtime_ns: 7,
            inode: 3,
            btime_ns: 0,
        };
        let mut waits = Vec::new();
        while let Some((attempt, at)) = retries.hold(&file, policy, now) {
            waits.push((attempt, at.duration_since(now).unwrap().as_secs()));
            assert_eq!(retries.wait(&listed, now), Some(at));
            assert_eq!(retries.wait(&listed, at), None, "due at its time");
        }
        assert_eq!(waits, [(1, 1), (2, 2), (3, 4)]);
        assert_eq!(retries.wait(&listed, now), None, "final: forgotten");

        // A file that changed meanwhile starts again.
        retries.hold(&file, policy, now);
        retries.hold(&file, policy, now);
        assert_eq!(retries.hold(&planned(11), policy, now).unwrap().0, 1);
        let changed = ListedFile { size: 12, ..listed };
        assert_eq!(retries.wait(&changed, now), None, "tried at once");
        // No retries: final at once.
        assert!(
            Retries::default()
                .hold(&file, RetryPolicy::new(0, Duration::ZERO), now)
                .is_none()
        );
    }
}
