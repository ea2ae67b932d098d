//! Any bytes given to the state decoders give a value or an error, never a panic, a hang or an
//! unbounded allocation; what decodes re-encodes to an object that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use state_store::ObjectKind;
use state_store::internals::{
    decode_delta, decode_plan, decode_snapshot, encode_delta, encode_plan, encode_snapshot, frame,
};

fuzz_target!(|data: &[u8]| {
    // Random bytes rarely pass the header's checksum: frame them as a payload too, so that the
    // payload decoders see them.
    let (kind, payload) = data.split_first().map_or((0, data), |(k, rest)| (*k, rest));
    let kind = match kind % 3 {
        0 => ObjectKind::Delta,
        1 => ObjectKind::Plan,
        _ => ObjectKind::Snapshot,
    };
    decode_all(&frame(kind, payload));
    decode_all(data);
});

fn decode_all(data: &[u8]) {
    if let Ok(delta) = decode_delta(data) {
        assert_eq!(decode_delta(&encode_delta(&delta)).unwrap(), delta);
    }
    if let Ok(plan) = decode_plan(data) {
        assert_eq!(decode_plan(&encode_plan(&plan)).unwrap(), plan);
    }
    if let Ok(state) = decode_snapshot(data) {
        assert_eq!(decode_snapshot(&encode_snapshot(&state)).unwrap(), state);
    }
}
