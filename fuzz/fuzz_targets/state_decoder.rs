//! Any bytes given to the state decoders give a value or an error, never a panic, a hang or an
//! unbounded allocation; what decodes re-encodes to an object that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use state_store::codec::{self, ObjectKind};
use state_store::{Plan, decode_delta, decode_snapshot, encode_snapshot};

fuzz_target!(|data: &[u8]| {
    // Random bytes rarely pass the header's checksum: frame them as a payload too, so that the
    // payload decoders see them.
    let (kind, payload) = data.split_first().map_or((0, data), |(k, rest)| (*k, rest));
    let kind = match kind % 3 {
        0 => ObjectKind::Delta,
        1 => ObjectKind::Plan,
        _ => ObjectKind::Snapshot,
    };
    let framed = codec::encode_with(kind, |out| out.extend_from_slice(payload));
    decode_all(&framed);
    decode_all(data);
});

fn decode_all(data: &[u8]) {
    if let Ok(delta) = decode_delta(data, "fuzz.delta") {
        let again = codec::encode(ObjectKind::Delta, &delta);
        assert_eq!(decode_delta(&again, "again").unwrap(), delta);
    }
    if let Ok(plan) = codec::decode::<Plan>(ObjectKind::Plan, data, "fuzz.plan") {
        let again = codec::encode(ObjectKind::Plan, &plan);
        assert_eq!(
            codec::decode::<Plan>(ObjectKind::Plan, &again, "again").unwrap(),
            plan
        );
    }
    if let Ok((_, state)) = decode_snapshot(data, "fuzz.snapshot") {
        let again = encode_snapshot(&state, 1, 2);
        let (_, back) = decode_snapshot(&again, "again").unwrap();
        assert_eq!(back, state);
    }
}
