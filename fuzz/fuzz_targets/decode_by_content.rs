//! A file's bytes go through decoding by content (gzip, zstd, or plain) and a processor, as the
//! batch loop reads them: any bytes end as a result or a failed file with a reason, never a
//! panic or a hang, and decoded output stays within the limit.
#![no_main]

use std::io::Write;
use std::os::unix::fs::MetadataExt;

use libfuzzer_sys::fuzz_target;
use scanner_core::process::{ReadLimits, UnitOutcome, process_unit};
use scanner_core::processor::{DynProcessor, Stats};
use state_store::PlannedFile;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(data)
        .unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    let file = PlannedFile {
        path: "input".into(),
        size: meta.len(),
        mtime_ns: 0,
        inode: meta.ino(),
        btime_ns: 0,
        start: 0,
    };
    let limits = ReadLimits {
        max_decoded_bytes: 1 << 20,
    };
    let processor = DynProcessor::splittable(Stats);
    match process_unit(dir.path(), &file, 0..file.size, &processor, limits).unwrap() {
        UnitOutcome::Reduced { bytes, .. } => assert!(bytes <= 1 << 20 || bytes == file.size),
        UnitOutcome::Failed { reason, .. } => assert!(!reason.is_empty()),
    }
});
