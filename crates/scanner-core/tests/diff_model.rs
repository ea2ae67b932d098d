//! Property test of listing + diff: random file-system actions on a real directory, against a
//! model of what each path should be (new, replaced, grown, changed, unchanged, gone).
//!
//! Seeded (`GLEANER_TEST_SEED` replays a failure); `GLEANER_PROPERTY_CASES` sets how many random
//! histories are tried (default 300, each of 12 rounds of up to 25 actions). A hand-rolled
//! generator (with `fastrand`) keeps the dependency tree lean; a failure prints the seed and the
//! actions of the failing round.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use scanner_core::diff::{Change, diff};
use scanner_core::listing::list;
use state_store::{Delta, FileEntry, Outcome, RelPath, State};

/// What the model expects the diff to say about a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    New,
    Replaced,
    Grown,
    Changed,
    Unchanged,
}

/// What the model knows of a present path.
#[derive(Clone, Copy, Debug)]
enum Fact {
    /// Not in the state.
    New,
    /// In the state, but another file now has the path.
    Replaced,
    /// The committed file, now `size` bytes; `touched` once anything set its mtime.
    Same {
        committed: u64,
        size: u64,
        touched: bool,
    },
}

impl Fact {
    fn expect(self) -> Expect {
        match self {
            Fact::New => Expect::New,
            Fact::Replaced => Expect::Replaced,
            Fact::Same {
                committed, size, ..
            } if size > committed => Expect::Grown,
            Fact::Same {
                committed, size, ..
            } if size < committed => Expect::Changed,
            Fact::Same { touched: true, .. } => Expect::Changed,
            Fact::Same { .. } => Expect::Unchanged,
        }
    }
}

/// The model: each present path, and the tracked paths that left.
#[derive(Default)]
struct Model {
    present: BTreeMap<String, Fact>,
    gone: Vec<String>,
}

/// A unique, increasing modification time per write: file systems stamp writes with a coarse
/// clock, and two writes in one tick would otherwise look alike.
struct Clock(SystemTime);

impl Clock {
    fn next(&mut self) -> SystemTime {
        self.0 += Duration::from_millis(7);
        self.0
    }
}

fn set_mtime(path: &Path, at: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(at)
        .unwrap();
}

fn commit_listing(root: &Path, state: &mut State) {
    let listing = list(root).unwrap();
    let generation = state.generation() + 1;
    let delta = Delta {
        generation,
        upserts: listing
            .files
            .iter()
            .map(|f| {
                (
                    f.path.clone(),
                    FileEntry {
                        size: f.size,
                        mtime_ns: f.mtime_ns,
                        inode: f.inode,
                        btime_ns: f.btime_ns,
                        offset: f.size,
                        generation,
                        outcome: Outcome::Done,
                        fingerprint: 0,
                    },
                )
            })
            .collect(),
        ..Delta::default()
    };
    state.apply(&delta).unwrap();
    let gone: Vec<RelPath> = diff(&listing, state).gone;
    state.forget(&gone);
}

#[test]
fn random_file_system_histories_give_the_diff_the_model_predicts() {
    let cases: u64 = std::env::var("GLEANER_PROPERTY_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let seed = std::env::var("GLEANER_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("diff model: seed {seed} (replay with GLEANER_TEST_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut checked = 0usize;
    for case in 0..cases {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut clock = Clock(SystemTime::now() - Duration::from_secs(86_400));
        let mut state = State::new();
        let mut names = 0usize;
        let mut fresh = |rng: &mut fastrand::Rng| {
            names += 1;
            format!("d{}/f{names:04}.log", rng.u8(0..3))
        };
        for round in 0..12 {
            // Everything listed so far is committed: the model starts from "unchanged".
            commit_listing(root, &mut state);
            let mut model = Model::default();
            for entry in list(root).unwrap().files {
                model.present.insert(
                    entry.path.to_string(),
                    Fact::Same {
                        committed: entry.size,
                        size: entry.size,
                        touched: false,
                    },
                );
            }
            let mut actions = Vec::new();
            for _ in 0..rng.usize(0..25) {
                let existing: Vec<String> = model.present.keys().cloned().collect();
                let pick = |rng: &mut fastrand::Rng| existing[rng.usize(..existing.len())].clone();
                let action = if existing.is_empty() { 0 } else { rng.u8(0..7) };
                match action {
                    // Create a new file.
                    0 => {
                        let name = fresh(&mut rng);
                        let path = root.join(&name);
                        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                        std::fs::write(&path, vec![b'x'; rng.usize(0..300)]).unwrap();
                        set_mtime(&path, clock.next());
                        let was = model.present.insert(name.clone(), Fact::New);
                        assert!(was.is_none());
                        actions.push(format!("create {name}"));
                    }
                    // Append to a file.
                    1 => {
                        let name = pick(&mut rng);
                        let path = root.join(&name);
                        let more = rng.u64(1..100);
                        let mut file = std::fs::OpenOptions::new()
                            .append(true)
                            .open(&path)
                            .unwrap();
                        file.write_all(&vec![b'y'; more as usize]).unwrap();
                        drop(file);
                        set_mtime(&path, clock.next());
                        if let Some(Fact::Same { size, touched, .. }) = model.present.get_mut(&name)
                        {
                            *size += more;
                            *touched = true;
                        }
                        actions.push(format!("append {name}"));
                    }
                    // Truncate in place (same inode, smaller).
                    2 => {
                        let name = pick(&mut rng);
                        let path = root.join(&name);
                        let size = std::fs::metadata(&path).unwrap().len();
                        if size == 0 {
                            continue;
                        }
                        std::fs::OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .unwrap()
                            .set_len(size / 2)
                            .unwrap();
                        set_mtime(&path, clock.next());
                        if let Some(Fact::Same {
                            size: now, touched, ..
                        }) = model.present.get_mut(&name)
                        {
                            *now = size / 2;
                            *touched = true;
                        }
                        actions.push(format!("truncate {name}"));
                    }
                    // Touch: same content, another modification time.
                    3 => {
                        let name = pick(&mut rng);
                        set_mtime(&root.join(&name), clock.next());
                        if let Some(Fact::Same { touched, .. }) = model.present.get_mut(&name) {
                            *touched = true;
                        }
                        actions.push(format!("touch {name}"));
                    }
                    // Delete.
                    4 => {
                        let name = pick(&mut rng);
                        std::fs::remove_file(root.join(&name)).unwrap();
                        if !matches!(model.present.remove(&name).unwrap(), Fact::New) {
                            model.gone.push(name.clone());
                        }
                        actions.push(format!("delete {name}"));
                    }
                    // Rename to a fresh name: the old path is gone, the new one new.
                    5 => {
                        let name = pick(&mut rng);
                        let to = fresh(&mut rng);
                        std::fs::create_dir_all(root.join(&to).parent().unwrap()).unwrap();
                        std::fs::rename(root.join(&name), root.join(&to)).unwrap();
                        if !matches!(model.present.remove(&name).unwrap(), Fact::New) {
                            model.gone.push(name.clone());
                        }
                        model.present.insert(to.clone(), Fact::New);
                        actions.push(format!("rename {name} -> {to}"));
                    }
                    // Replace: another file renamed over it (a distinct inode, by construction).
                    _ => {
                        let name = pick(&mut rng);
                        let staged = root.join(format!("{name}.staged"));
                        std::fs::write(&staged, vec![b'z'; rng.usize(0..300)]).unwrap();
                        set_mtime(&staged, clock.next());
                        std::fs::rename(&staged, root.join(&name)).unwrap();
                        let fact = model.present.get_mut(&name).unwrap();
                        if !matches!(fact, Fact::New) {
                            *fact = Fact::Replaced;
                        }
                        actions.push(format!("replace {name}"));
                    }
                }
            }
            let listing = list(root).unwrap();
            let got = diff(&listing, &state);
            let mut reported: BTreeMap<String, Expect> = got
                .entries
                .iter()
                .map(|e| {
                    let expect = match e.change {
                        Change::New => Expect::New,
                        Change::Replaced => Expect::Replaced,
                        Change::Grown { .. } => Expect::Grown,
                        Change::Changed => Expect::Changed,
                    };
                    (e.file.path.to_string(), expect)
                })
                .collect();
            for path in model.present.keys() {
                reported.entry(path.clone()).or_insert(Expect::Unchanged);
            }
            let predicted: BTreeMap<String, Expect> = model
                .present
                .iter()
                .map(|(path, fact)| (path.clone(), fact.expect()))
                .collect();
            let mut gone: Vec<String> = got.gone.iter().map(|p| p.to_string()).collect();
            let mut expected_gone = model.gone.clone();
            gone.sort();
            expected_gone.sort();
            let context = || format!("seed {seed}, case {case}, round {round}: {actions:#?}");
            assert_eq!(reported, predicted, "{}", context());
            assert_eq!(gone, expected_gone, "{}", context());
            assert_eq!(
                got.unchanged,
                predicted
                    .values()
                    .filter(|e| **e == Expect::Unchanged)
                    .count(),
                "{}",
                context()
            );
            checked += model.present.len() + model.gone.len();
        }
    }
    eprintln!("diff model: {cases} histories, {checked} path verdicts checked");
}
