//! The IMAP connection's bytes: TLS (or plain until STARTTLS), optionally with COMPRESS=DEFLATE
//! (RFC 4978) inside it. Reads are bounded by the caller's buffer, so a decompression bomb
//! inflates no further than the session's own limits allow.

use std::io;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net::Stream;

pub struct Io {
    pub stream: Stream,
    deflate: Option<Box<Deflate>>,
}

struct Deflate {
    compress: Compress,
    decompress: Decompress,
    /// Compressed bytes read from the network but not yet inflated.
    pending: Vec<u8>,
    /// Scratch space for the compressed output of one flush.
    output: Vec<u8>,
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
        self.deflate = Some(Box::new(Deflate {
            compress: Compress::new(Compression::new(6), false),
            decompress: Decompress::new(false),
            pending: Vec::new(),
            output: Vec::new(),
        }));
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
        match self.deflate.as_mut() {
            None => self.stream.write_all(data).await?,
            Some(deflate) => {
                deflate.output.clear();
                let mut input = data;
                loop {
                    deflate.output.reserve(input.len() / 2 + 64);
                    let before = deflate.compress.total_in();
                    deflate
                        .compress
                        .compress_vec(input, &mut deflate.output, FlushCompress::Sync)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    input = &input[(deflate.compress.total_in() - before) as usize..];
                    // A full output buffer may hold an unfinished flush: go round again.
                    if input.is_empty() && deflate.output.len() < deflate.output.capacity() {
                        break;
                    }
                }
                self.stream.write_all(&deflate.output).await?;
                deflate.output = Vec::new();
            }
        }
        self.stream.flush().await
    }
}
