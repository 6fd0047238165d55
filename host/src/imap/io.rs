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

struct Deflate {
    decompress: Decompress,
    /// Compressed bytes read from the network but not yet inflated.
    pending: Vec<u8>,
}

thread_local! {
    static COMPRESSOR: std::cell::RefCell<Compress> = std::cell::RefCell::new(Compress::new(Compression::new(6), false));
}

/// Compress one batch as a sequence of complete deflate blocks ending in a sync flush.
fn deflate_batch(data: &[u8]) -> io::Result<Vec<u8>> {
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
        self.deflate = Some(Box::new(Deflate { decompress: Decompress::new(false), pending: Vec::new() }));
    }

    /// Read some bytes (inflated when compression is on). Returns 0 at end of stream.
    /// Cancel-safe: nothing is lost if the future is dropped while it waits.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(deflate) = self.deflate.as_mut() else {
            return self.stream.read(buf).await;
        };
        loop {
            if !deflate.pending.is_empty() {
                let before_in = deflate.decompress.total_in();
                let before_out = deflate.decompress.total_out();
                let status = deflate
                    .decompress
                    .decompress(&deflate.pending, buf, FlushDecompress::None)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let consumed = (deflate.decompress.total_in() - before_in) as usize;
                let produced = (deflate.decompress.total_out() - before_out) as usize;
                deflate.pending.drain(..consumed);
                if deflate.pending.is_empty() {
                    // An idle session keeps no buffer.
                    deflate.pending = Vec::new();
                }
                if produced > 0 {
                    return Ok(produced);
                }
                if status == Status::StreamEnd {
                    return Ok(0);
                }
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
    /// the client can read each response as soon as it is sent).
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        if self.deflate.is_some() {
            let compressed = deflate_batch(data)?;
            self.stream.write_all(&compressed).await?;
        } else {
            self.stream.write_all(data).await?;
        }
        self.stream.flush().await
    }
}
