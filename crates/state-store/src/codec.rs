//! The on-storage form of state objects: a fixed header, then a bincode 2 payload.
//!
//! ```text
//! offset size field
//!      0    4 magic           b"GLNR"
//!      4    2 format version  u16 little endian (this build writes 4, reads 1 to 4)
//!      6    1 codec id        1 = bincode 2.0, standard config
//!      7    1 object kind     1 = delta, 2 = plan, 3 = snapshot
//!      8    8 payload length  u64 little endian
//!     16    4 checksum        CRC-32 (IEEE) of bytes 0..16 followed by the payload
//!     20    … payload
//! ```
//!
//! The checksum covers the header too, so a flipped bit anywhere is detected. The codec id lets a
//! later build add another codec (bincode is unmaintained upstream) and still read old state.

use bincode::{Decode, Encode};

use crate::StateError;

const MAGIC: [u8; 4] = *b"GLNR";
/// The length of an object's header, before its payload.
pub(crate) const HEADER_LEN: usize = 20;
/// The format version this build writes and the newest it reads. Version 2 added
/// [`FileEntry::fingerprint`](crate::FileEntry::fingerprint), version 3 the
/// [`Origin`](crate::Origin) of deltas and snapshots, version 4 the `replay` mark of plans and
/// deltas and the outcome [`Outcome::Baselined`](crate::Outcome::Baselined) (an enum variant
/// added at the end: a version 3 entry decodes as it is; the version says to an older build that
/// an object may hold one, which it could not read). Objects of versions 1 to 3 are still read
/// (without fingerprints, without origins, not replays).
pub(crate) const FORMAT_VERSION: u16 = 4;
const CODEC_BINCODE2: u8 = 1;
/// Upper bound of what a decoder may allocate for one value, whatever a length prefix claims.
/// Values decode to at most a few times their encoded size; the bound follows the size of what
/// is left to decode, so a damaged length prefix in a small object cannot ask for gigabytes
/// (found by fuzzing: a 4-KiB payload asked for 4 GiB).
const DECODE_LIMIT_SMALL: usize = 64 << 20; // payloads up to 1 MiB
const DECODE_LIMIT_MEDIUM: usize = 1 << 30; // up to 16 MiB
const DECODE_LIMIT_LARGE: usize = 1 << 32;

/// What an object holds; stored in its header and checked when it is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    /// A [`Delta`](crate::Delta): the commit of one generation.
    Delta = 1,
    /// A [`Plan`](crate::Plan): the intent to process one batch.
    Plan = 2,
    /// A snapshot: the whole state folded at one generation.
    Snapshot = 3,
}

impl ObjectKind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(ObjectKind::Delta),
            2 => Some(ObjectKind::Plan),
            3 => Some(ObjectKind::Snapshot),
            _ => None,
        }
    }

    /// The lower-case name used in messages and file extensions.
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Delta => "delta",
            ObjectKind::Plan => "plan",
            ObjectKind::Snapshot => "snapshot",
        }
    }
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT_LARGE>()
}

/// Decodes one value from the front of `bytes`, with an allocation bound that follows its size.
fn decode_front<T: Decode<()>>(bytes: &[u8]) -> Result<(T, usize), bincode::error::DecodeError> {
    let standard = bincode::config::standard();
    if bytes.len() <= 1 << 20 {
        bincode::decode_from_slice(bytes, standard.with_limit::<DECODE_LIMIT_SMALL>())
    } else if bytes.len() <= 16 << 20 {
        bincode::decode_from_slice(bytes, standard.with_limit::<DECODE_LIMIT_MEDIUM>())
    } else {
        bincode::decode_from_slice(bytes, standard.with_limit::<DECODE_LIMIT_LARGE>())
    }
}

/// Decodes one value from `reader`, which has `remaining` bytes of payload left: the allocation
/// bound is the smallest of a few that is at least that (a value takes no more memory for its
/// strings than they take encoded), so a damaged length prefix read before the checksum is
/// known asks for at most 16 times what is left.
pub(crate) fn decode_bounded<T: Decode<()>>(
    reader: impl bincode::de::read::Reader,
    remaining: u64,
) -> Result<T, bincode::error::DecodeError> {
    let standard = bincode::config::standard();
    if remaining <= 1 << 20 {
        bincode::decode_from_reader(reader, standard.with_limit::<{ 1 << 20 }>())
    } else if remaining <= 16 << 20 {
        bincode::decode_from_reader(reader, standard.with_limit::<{ 16 << 20 }>())
    } else if remaining <= 256 << 20 {
        bincode::decode_from_reader(reader, standard.with_limit::<{ 256 << 20 }>())
    } else {
        bincode::decode_from_reader(reader, standard.with_limit::<DECODE_LIMIT_LARGE>())
    }
}

/// Encodes `value` as an object of `kind`, header included.
pub(crate) fn encode<T: Encode>(kind: ObjectKind, value: &T) -> Vec<u8> {
    encode_with(kind, |out| {
        // Writing into a Vec cannot fail, and our types have no fallible encoders.
        bincode::encode_into_std_write(value, out, config())
            .expect("encoding state into memory cannot fail");
    })
}

/// Encodes an object of `kind` whose payload `write_payload` appends to the buffer it is given
/// (for payloads written piece by piece, like snapshots).
pub(crate) fn encode_with(kind: ObjectKind, write_payload: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN];
    write_payload(&mut out);
    let payload_len = (out.len() - HEADER_LEN) as u64;
    out[0..4].copy_from_slice(&MAGIC);
    out[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[6] = CODEC_BINCODE2;
    out[7] = kind as u8;
    out[8..16].copy_from_slice(&payload_len.to_le_bytes());
    let crc = checksum(&out[0..16], &out[HEADER_LEN..]);
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Rewrites an encoded object's format version (and its checksum): how tests make objects of
/// an earlier version.
#[cfg(test)]
pub(crate) fn set_version(bytes: &mut [u8], version: u16) {
    bytes[4..6].copy_from_slice(&version.to_le_bytes());
    let crc = checksum(&bytes[0..16], &bytes[HEADER_LEN..]);
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
}

/// Appends one value to a payload being written by [`encode_with`].
pub(crate) fn encode_value<T: Encode>(value: &T, out: &mut Vec<u8>) {
    bincode::encode_into_std_write(value, out, config())
        .expect("encoding state into memory cannot fail");
}

/// Decodes an object that must be of `kind`; `object` names it in errors. (Objects whose
/// layout changed between versions are decoded by `legacy`.)
#[cfg(test)]
pub(crate) fn decode<T: Decode<()>>(
    kind: ObjectKind,
    bytes: &[u8],
    object: &str,
) -> Result<T, StateError> {
    let mut payload = PayloadReader::open(kind, bytes, object)?;
    let value = payload.next_value()?;
    payload.finish()?;
    Ok(value)
}

/// Reads the values of a verified payload one after the other.
pub(crate) struct PayloadReader<'a> {
    rest: &'a [u8],
    object: &'a str,
    version: u16,
}

impl<'a> PayloadReader<'a> {
    /// Checks the header and checksum of an object that must be of `kind`.
    pub(crate) fn open(
        kind: ObjectKind,
        bytes: &'a [u8],
        object: &'a str,
    ) -> Result<Self, StateError> {
        Ok(Self {
            rest: verify(kind, bytes, object)?,
            object,
            version: u16::from_le_bytes([bytes[4], bytes[5]]),
        })
    }

    /// The format version of the object (the payload's layout depends on it).
    pub(crate) fn version(&self) -> u16 {
        self.version
    }

    /// Decodes the next value.
    pub(crate) fn next_value<T: Decode<()>>(&mut self) -> Result<T, StateError> {
        let (value, used) = decode_front(self.rest).map_err(|e| StateError::Corrupt {
            object: self.object.to_string(),
            reason: format!("payload does not decode: {e}"),
        })?;
        self.rest = &self.rest[used..];
        Ok(value)
    }

    /// Checks that the whole payload was decoded.
    pub(crate) fn finish(self) -> Result<(), StateError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(StateError::Corrupt {
                object: self.object.to_string(),
                reason: format!("payload has {} trailing bytes", self.rest.len()),
            })
        }
    }
}

/// Checks the header and checksum of an object that must be of `kind`; returns its payload.
fn verify<'a>(kind: ObjectKind, bytes: &'a [u8], object: &str) -> Result<&'a [u8], StateError> {
    let header = &bytes[..bytes.len().min(HEADER_LEN)];
    let start = check_header_start(header, bytes.len() as u64, object)?;
    let computed = checksum(&bytes[0..16], &bytes[HEADER_LEN..]);
    if start.stored_crc != computed {
        return Err(StateError::Corrupt {
            object: object.to_string(),
            reason: format!(
                "checksum mismatch (stored {:08x}, computed {computed:08x})",
                start.stored_crc
            ),
        });
    }
    check_codec_and_kind(kind, header, object)?;
    Ok(&bytes[HEADER_LEN..])
}

/// What [`check_header_start`] read from a header.
pub(crate) struct HeaderStart {
    /// The format version.
    pub(crate) version: u16,
    /// Payload bytes the header declares.
    pub(crate) declared: u64,
    /// The checksum stored in the header.
    pub(crate) stored_crc: u32,
}

/// Checks the header of an object of `size` bytes read as it streams in (`header`: its first
/// bytes, up to [`HEADER_LEN`]): its length, magic bytes, version, and the payload length it
/// declares against the size. The checks that [`verify`] makes after the checksum are made by
/// [`check_codec_and_kind`].
pub(crate) fn check_header_start(
    header: &[u8],
    size: u64,
    object: &str,
) -> Result<HeaderStart, StateError> {
    let corrupt = |reason: String| StateError::Corrupt {
        object: object.to_string(),
        reason,
    };
    if header.len() < HEADER_LEN || size < HEADER_LEN as u64 {
        return Err(corrupt(format!(
            "truncated: {} bytes, shorter than the {HEADER_LEN}-byte header",
            size.min(header.len() as u64)
        )));
    }
    if header[0..4] != MAGIC {
        return Err(corrupt(
            "not a Gleaner state object (bad magic bytes)".into(),
        ));
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version == 0 || version > FORMAT_VERSION {
        return Err(StateError::UnsupportedVersion {
            object: object.to_string(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let declared = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let actual = size - HEADER_LEN as u64;
    if declared != actual {
        return Err(corrupt(format!(
            "truncated or extended: header declares {declared} payload bytes, object has {actual}"
        )));
    }
    Ok(HeaderStart {
        version,
        declared,
        stored_crc: u32::from_le_bytes(header[16..20].try_into().expect("4 bytes")),
    })
}

/// Checks the codec id and the kind in a header ([`HEADER_LEN`] bytes).
pub(crate) fn check_codec_and_kind(
    kind: ObjectKind,
    header: &[u8],
    object: &str,
) -> Result<(), StateError> {
    if header[6] != CODEC_BINCODE2 {
        return Err(StateError::UnknownCodec {
            object: object.to_string(),
            codec: header[6],
        });
    }
    match ObjectKind::from_byte(header[7]) {
        Some(found) if found == kind => Ok(()),
        Some(found) => Err(StateError::Corrupt {
            object: object.to_string(),
            reason: format!(
                "expected a {} object, found a {}",
                kind.name(),
                found.name()
            ),
        }),
        None => Err(StateError::Corrupt {
            object: object.to_string(),
            reason: format!("unknown object kind {}", header[7]),
        }),
    }
}

fn checksum(header: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header);
    hasher.update(payload);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Delta, FileEntry, Outcome, RelPath};

    fn sample() -> Delta {
        Delta {
            generation: 7,
            writer_id: 42,
            committed_at_ms: 1_700_000_000_000,
            output_key: Some("src/00000000000000000007.ndjson".into()),
            upserts: vec![(
                RelPath::new(&b"a/\xffb.log"[..]),
                FileEntry {
                    size: 10,
                    mtime_ns: -5,
                    inode: 99,
                    btime_ns: 12,
                    offset: 10,
                    generation: 7,
                    outcome: Outcome::Failed {
                        reason: "permission denied".into(),
                    },
                    fingerprint: 0x1234_5678_9abc_def0,
                },
            )],
            origin: Some(crate::Origin {
                root_id: 0xfeed,
                host: "pod-7".into(),
                watch_dir: "/data".into(),
            }),
            replay: true,
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(ObjectKind::Delta, &sample());
        let back: Delta = decode(ObjectKind::Delta, &bytes, "x").unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let bytes = encode(ObjectKind::Delta, &sample());
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut copy = bytes.clone();
                copy[i] ^= 1 << bit;
                let result: Result<Delta, _> = decode(ObjectKind::Delta, &copy, "obj");
                let err = result.expect_err("corruption must be detected");
                assert!(err.to_string().contains("obj"), "{err}");
            }
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = encode(ObjectKind::Delta, &sample());
        for len in 0..bytes.len() {
            let result: Result<Delta, _> = decode(ObjectKind::Delta, &bytes[..len], "obj");
            assert!(result.is_err(), "truncated to {len} bytes was accepted");
        }
    }

    #[test]
    fn kind_and_version_are_checked() {
        let bytes = encode(ObjectKind::Delta, &sample());
        let err = decode::<Delta>(ObjectKind::Plan, &bytes, "obj").unwrap_err();
        assert!(err.to_string().contains("expected a plan"), "{err}");

        let mut newer = bytes.clone();
        newer[4..6].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let err = decode::<Delta>(ObjectKind::Delta, &newer, "obj").unwrap_err();
        assert!(matches!(
            err,
            StateError::UnsupportedVersion { found, .. } if found == FORMAT_VERSION + 1
        ));
    }

    #[test]
    fn a_damaged_length_in_a_small_object_cannot_ask_for_gigabytes() {
        // A valid header around a delta payload whose list of files claims 2^40 entries.
        let mut payload = vec![1u8, 1, 1, 0, 0xfd];
        payload.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let bytes = encode_with(ObjectKind::Delta, |out| out.extend_from_slice(&payload));
        let err = decode::<Delta>(ObjectKind::Delta, &bytes, "obj").unwrap_err();
        assert!(err.to_string().contains("payload does not decode"), "{err}");
    }
}
