//! Decoding an object as its bytes arrive, without holding them all: how snapshots are read.
//!
//! A snapshot of a million entries is about 45 MB; read whole before decoding, it sat in memory
//! beside the state being built from it. Here the payload's values are decoded from a small
//! buffer refilled from the store, and the checksum is computed on the way. The checksum is only
//! known at the end, so the caller uses what was decoded only once [`StreamPayload::finish`]
//! succeeded; any error first reads the rest, so that damage is reported as such (a checksum
//! mismatch, a truncation) rather than as whatever the damaged bytes decoded to.

use bincode::Decode;
use bincode::error::DecodeError;
use bytes::Bytes;
use object_store::GetResultPayload;
use tokio::sync::mpsc;

use crate::StateError;
use crate::codec::{self, ObjectKind};

/// How many bytes are read from the source at a time.
pub(crate) const BUFFER_LEN: usize = 64 << 10;

/// Where the bytes of an object come from: a local file, chunks of a download, a slice.
pub(crate) trait ByteSource {
    /// Reads the next bytes into `buf`; `Ok(0)` at the end of the object.
    fn read_into(&mut self, buf: &mut [u8]) -> Result<usize, object_store::Error>;
}

impl ByteSource for &[u8] {
    fn read_into(&mut self, buf: &mut [u8]) -> Result<usize, object_store::Error> {
        let n = buf.len().min(self.len());
        buf[..n].copy_from_slice(&self[..n]);
        *self = &self[n..];
        Ok(n)
    }
}

impl ByteSource for std::fs::File {
    fn read_into(&mut self, buf: &mut [u8]) -> Result<usize, object_store::Error> {
        loop {
            match std::io::Read::read(self, buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                result => {
                    return result.map_err(|e| object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: Box::new(e),
                    });
                }
            }
        }
    }
}

/// An object being read: a local file, or a download's chunks.
pub(crate) enum ObjectSource {
    /// A file of a local store, read on the blocking thread.
    File(std::fs::File),
    /// The chunks of a download.
    Chunks(ChunkReceiver),
    /// An object read whole.
    Bytes(Bytes),
}

/// A download to drive (on the runtime) while its chunks are read ([`ObjectSource::Chunks`]).
pub(crate) type Download = futures::future::BoxFuture<'static, ()>;

impl ObjectSource {
    /// The source of an object being read: its file, or its download's chunks, whose download
    /// is put in `downloads` (to be driven while the source is read, on a blocking thread).
    pub(crate) fn new(payload: GetResultPayload, downloads: &mut Vec<Download>) -> Self {
        match payload {
            GetResultPayload::File(file, _) => ObjectSource::File(file),
            GetResultPayload::Stream(stream) => {
                let (sender, receiver) = mpsc::channel(4);
                downloads.push(futures::FutureExt::boxed(forward(stream, sender)));
                ObjectSource::Chunks(ChunkReceiver::new(receiver))
            }
        }
    }
}

impl ByteSource for ObjectSource {
    fn read_into(&mut self, buf: &mut [u8]) -> Result<usize, object_store::Error> {
        match self {
            ObjectSource::File(file) => file.read_into(buf),
            ObjectSource::Chunks(chunks) => chunks.read_into(buf),
            ObjectSource::Bytes(bytes) => {
                let n = (&bytes[..]).read_into(buf)?;
                bytes::Buf::advance(bytes, n);
                Ok(n)
            }
        }
    }
}

/// The chunks of a download, handed over by the task that drives it ([`forward`]): read on a
/// blocking thread.
pub(crate) struct ChunkReceiver {
    chunks: mpsc::Receiver<Result<Bytes, object_store::Error>>,
    current: Bytes,
}

impl ChunkReceiver {
    /// Reads the chunks `chunks` receives, in order, until its sender is gone.
    pub(crate) fn new(chunks: mpsc::Receiver<Result<Bytes, object_store::Error>>) -> Self {
        Self {
            chunks,
            current: Bytes::new(),
        }
    }
}

impl ByteSource for ChunkReceiver {
    fn read_into(&mut self, buf: &mut [u8]) -> Result<usize, object_store::Error> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Sends the chunks of `stream` to a [`ChunkReceiver`], a few at a time, until the stream ends,
/// fails (the error is sent too) or the receiver is gone.
pub(crate) async fn forward(
    mut stream: futures::stream::BoxStream<'static, Result<Bytes, object_store::Error>>,
    chunks: mpsc::Sender<Result<Bytes, object_store::Error>>,
) {
    use futures::StreamExt;
    while let Some(chunk) = stream.next().await {
        let failed = chunk.is_err();
        if chunks.send(chunk).await.is_err() || failed {
            return;
        }
    }
}

/// The payload of an object being read from a [`ByteSource`], decoded value by value.
pub(crate) struct StreamPayload<'a, S> {
    source: S,
    object: &'a str,
    version: u16,
    /// Payload bytes the header declares; checked against the object's size before reading.
    declared: u64,
    stored_crc: u32,
    crc: crc32fast::Hasher,
    /// Payload bytes read from the source so far (all of them hashed).
    received: u64,
    /// Payload bytes decoded so far.
    consumed: u64,
    buf: Box<[u8]>,
    /// The bytes of `buf` not decoded yet.
    start: usize,
    end: usize,
    /// The error of the source, if reading it failed (bincode's reader cannot return it).
    failure: Option<object_store::Error>,
}

impl<'a, S: ByteSource> StreamPayload<'a, S> {
    /// Reads and checks the header of an object of `size` bytes that must be of `kind`. The
    /// codec and kind are checked only once the checksum is known (a damaged header is
    /// reported as damage, as [`codec`] does for objects read whole).
    pub(crate) fn open(
        kind: ObjectKind,
        mut source: S,
        size: u64,
        object: &'a str,
    ) -> Result<Self, StateError> {
        let mut header = [0u8; codec::HEADER_LEN];
        let mut filled = 0;
        while filled < header.len() {
            let n = source
                .read_into(&mut header[filled..])
                .map_err(|source| storage(object, source))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        let parsed = codec::check_header_start(&header[..filled], size, object)?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header[..16]);
        let mut payload = Self {
            source,
            object,
            version: parsed.version,
            declared: parsed.declared,
            stored_crc: parsed.stored_crc,
            crc,
            received: 0,
            consumed: 0,
            buf: vec![0u8; BUFFER_LEN].into_boxed_slice(),
            start: 0,
            end: 0,
            failure: None,
        };
        if let Err(e) = codec::check_codec_and_kind(kind, &header, object) {
            return Err(payload.damage().unwrap_or(e));
        }
        Ok(payload)
    }

    /// The format version of the object (the payload's layout depends on it).
    pub(crate) fn version(&self) -> u16 {
        self.version
    }

    /// Payload bytes not decoded yet, as the header declares them.
    pub(crate) fn remaining(&self) -> u64 {
        self.declared.saturating_sub(self.consumed)
    }

    /// Decodes the next value. An error means the object is damaged (or could not be read).
    pub(crate) fn next_value<T: Decode<()>>(&mut self) -> Result<T, StateError> {
        let remaining = self.remaining();
        let decoded = codec::decode_bounded(&mut *self, remaining);
        match decoded {
            Ok(value) => Ok(value),
            Err(e) => {
                let reason = format!("payload does not decode: {e}");
                Err(self.fail(reason))
            }
        }
    }

    /// Decodes the next value as a path (as a [`crate::RelPath`] is encoded: its length, then
    /// its bytes) into `path`, replacing what it held: a snapshot of a million entries decoded
    /// with a [`crate::RelPath`] each spent a sixth of its load allocating and freeing them.
    pub(crate) fn next_path_into(&mut self, path: &mut Vec<u8>) -> Result<(), StateError> {
        let len: u64 = self.next_value()?;
        if len > self.remaining() {
            let reason = format!("payload does not decode: a path of {len} bytes");
            return Err(self.fail(reason));
        }
        path.clear();
        path.resize(usize::try_from(len).unwrap_or(usize::MAX), 0);
        if let Err(e) = bincode::de::read::Reader::read(self, path) {
            let reason = format!("payload does not decode: {e}");
            return Err(self.fail(reason));
        }
        Ok(())
    }

    /// The error to report for a problem found in the payload (`reason`): a failure to read
    /// the source, or damage found by reading the rest, come first.
    pub(crate) fn fail(&mut self, reason: String) -> StateError {
        if let Some(source) = self.failure.take() {
            return storage(self.object, source);
        }
        self.damage()
            .unwrap_or_else(|| corrupt(self.object, reason))
    }

    /// Checks that the whole payload was decoded and that the object is intact: its length
    /// and checksum. Only then may what was decoded be used.
    pub(crate) fn finish(mut self) -> Result<(), StateError> {
        if let Some(e) = self.damage() {
            return Err(e);
        }
        if self.consumed != self.declared {
            let trailing = self.remaining();
            return Err(corrupt(
                self.object,
                format!("payload has {trailing} trailing bytes"),
            ));
        }
        Ok(())
    }

    /// Reads the rest of the object; the error that its length or checksum shows, if any.
    fn damage(&mut self) -> Option<StateError> {
        // What is left undecoded was hashed already: dropped, it leaves room to read the rest
        // (a buffer full of it would read nothing more, and the object would seem truncated).
        self.start = self.end;
        loop {
            match self.fill() {
                Ok(0) => break,
                Ok(_) => self.start = self.end,
                Err(source) => return Some(storage(self.object, source)),
            }
        }
        if self.received != self.declared {
            return Some(corrupt(
                self.object,
                format!(
                    "truncated or extended: header declares {} payload bytes, object has {}",
                    self.declared, self.received
                ),
            ));
        }
        let computed = self.crc.clone().finalize();
        (computed != self.stored_crc).then(|| {
            corrupt(
                self.object,
                format!(
                    "checksum mismatch (stored {:08x}, computed {computed:08x})",
                    self.stored_crc
                ),
            )
        })
    }

    /// Moves the undecoded bytes to the front of the buffer and reads more after them.
    /// Returns how many were read (0 at the end of the object).
    fn fill(&mut self) -> Result<usize, object_store::Error> {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        let n = self.source.read_into(&mut self.buf[self.end..])?;
        self.crc.update(&self.buf[self.end..self.end + n]);
        self.received += n as u64;
        self.end += n;
        Ok(n)
    }
}

impl<S: ByteSource> bincode::de::read::Reader for StreamPayload<'_, S> {
    fn read(&mut self, bytes: &mut [u8]) -> Result<(), DecodeError> {
        let mut done = 0;
        while done < bytes.len() {
            if self.start == self.end {
                match self.fill() {
                    Ok(0) => {
                        return Err(DecodeError::UnexpectedEnd {
                            additional: bytes.len() - done,
                        });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.failure = Some(e);
                        return Err(DecodeError::Other("the object could not be read"));
                    }
                }
            }
            let n = (bytes.len() - done).min(self.end - self.start);
            bytes[done..done + n].copy_from_slice(&self.buf[self.start..self.start + n]);
            self.consume(n);
            done += n;
        }
        Ok(())
    }

    fn peek_read(&mut self, n: usize) -> Option<&[u8]> {
        if self.end - self.start < n && n <= self.buf.len() {
            // At the end of the object, or on a failure (which `read` meets again), bincode
            // falls back to `read`.
            let _ = self.fill();
        }
        if self.end - self.start < n {
            return None;
        }
        Some(&self.buf[self.start..self.start + n])
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.consumed += n as u64;
    }
}

fn storage(object: &str, source: object_store::Error) -> StateError {
    StateError::Storage {
        object: object.to_string(),
        source,
    }
}

fn corrupt(object: &str, reason: String) -> StateError {
    StateError::Corrupt {
        object: object.to_string(),
        reason,
    }
}
