//! The IMAP connection's bytes: TLS (or plain until STARTTLS), optionally with COMPRESS=DEFLATE
//! (RFC 4978) inside it. Reads are bounded by the caller's buffer, so a decompression bomb
//! inflates no further than the session's own limits allow.
//!
//! A deflate compressor holds ~300 KiB of tables: far too much to keep per idle session. Each
//! batch of responses is compressed by the worker thread's compressor, reset first, and ends
//! with a sync flush. The client's inflater sees one continuous stream of blocks; they just
//! never refer back across batches.

use std::io;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net::Stream;

pub struct Io {
    pub stream: Stream,
    deflate: Option<Box<Deflate>>,
}

pub(crate) struct Deflate {
    decompress: Decompress,
    /// Compressed bytes read from the network but not yet inflated.
    pub(crate) pending: Vec<u8>,
}

impl Deflate {
    pub(crate) fn new() -> Deflate {
        Deflate { decompress: Decompress::new(false), pending: Vec::new() }
    }

    /// Inflate pending input into `buf`: `Some(n)` bytes (0 at the end of the stream), or
    /// `None` when more input is needed. At most `buf.len()` bytes come out per call, however
    /// much the input would inflate to. The inflater may hold output back when `buf` fills,
    /// even with all input consumed: so it is asked even when nothing is pending.
    pub(crate) fn inflate(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            let before_in = self.decompress.total_in();
            let before_out = self.decompress.total_out();
            let status = self
                .decompress
                .decompress(&self.pending, buf, FlushDecompress::None)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let consumed = (self.decompress.total_in() - before_in) as usize;
            let produced = (self.decompress.total_out() - before_out) as usize;
            self.pending.drain(..consumed);
            if self.pending.is_empty() {
                // An idle session keeps no buffer.
                self.pending = Vec::new();
            }
            if produced > 0 {
                return Ok(Some(produced));
            }
            if status == Status::StreamEnd {
                return Ok(Some(0));
            }
            if consumed == 0 {
                return Ok(None);
            }
        }
    }
}

/// Batches up to this size are compressed where they are written.
const DEFLATE_IN_PLACE: usize = 64 * 1024;

thread_local! {
    static COMPRESSOR: std::cell::RefCell<Compress> = std::cell::RefCell::new(Compress::new(Compression::new(6), false));
}

/// Compress one batch as a sequence of complete deflate blocks ending in a sync flush.
pub(crate) fn deflate_batch(data: &[u8]) -> io::Result<Vec<u8>> {
    COMPRESSOR.with(|compressor| {
        let mut compress = compressor.borrow_mut();
        compress.reset();
        let mut output = Vec::with_capacity(data.len() / 2 + 64);
        let mut input = data;
        loop {
            output.reserve(input.len() / 2 + 64);
            let before = compress.total_in();
            compress
                .compress_vec(input, &mut output, FlushCompress::Sync)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            input = &input[(compress.total_in() - before) as usize..];
            // A full output buffer may hold an unfinished flush: go round again.
            if input.is_empty() && output.len() < output.capacity() {
                return Ok(output);
            }
        }
    })
}

impl Io {
    pub fn new(stream: Stream) -> Io {
        Io { stream, deflate: None }
    }

    pub fn is_compressed(&self) -> bool {
        self.deflate.is_some()
    }

    /// From now on, both directions are raw deflate streams.
    pub fn start_compression(&mut self) {
        self.deflate = Some(Box::new(Deflate::new()));
    }

    /// Read some bytes (inflated when compression is on). Returns 0 at end of stream.
    /// Cancel-safe: nothing is lost if the future is dropped while it waits.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(deflate) = self.deflate.as_mut() else {
            return self.stream.read(buf).await;
        };
        loop {
            if let Some(n) = deflate.inflate(buf)? {
                return Ok(n);
            }
            let mut raw = [0u8; 4096];
            let n = self.stream.read(&mut raw).await?;
            if n == 0 {
                return Ok(0);
            }
            deflate.pending.extend_from_slice(&raw[..n]);
        }
    }

    /// Write everything and flush (a sync flush of the deflate stream when compressing, so
    /// the client can read each response as soon as it is sent). A large batch (a FETCH of
    /// whole messages) is compressed on the blocking pool: deflating megabytes takes longer
    /// than a session may hold a thread that serves others.
    pub async fn write_all(&mut self, data: Vec<u8>) -> io::Result<()> {
        if self.deflate.is_some() {
            let compressed = if data.len() <= DEFLATE_IN_PLACE {
                deflate_batch(&data)?
            } else {
                tokio::task::spawn_blocking(move || deflate_batch(&data)).await.map_err(io::Error::other)??
            };
            self.stream.write_all(&compressed).await?;
        } else {
            self.stream.write_all(&data).await?;
        }
        self.stream.flush().await
    }
}
