//! A writer that hands its data to another thread in 1 MiB chunks, so that whoever produces
//! the data (walking a tree, reading files) never waits while a compressor is busy, and the
//! compressor never waits on the file system: the two sides of `tar | gzip`.

use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

const CHUNK: usize = 1 << 20;
/// Chunks in flight; bounds memory to about this many MiB.
const DEPTH: usize = 8;

pub struct ThreadedWriter<W: Write + Send + 'static> {
    buf: Vec<u8>,
    tx: Option<SyncSender<Vec<u8>>>,
    recycled: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> ThreadedWriter<W> {
    pub(crate) fn new(mut inner: W) -> io::Result<Self> {
        let (tx, rx) = sync_channel::<Vec<u8>>(DEPTH);
        let (back, recycled) = sync_channel::<Vec<u8>>(DEPTH + 2);
        let thread = std::thread::Builder::new()
            .name("rmach-encode".into())
            .spawn(move || {
                for mut chunk in rx {
                    inner.write_all(&chunk)?;
                    chunk.clear();
                    let _ = back.try_send(chunk);
                }
                Ok(inner)
            })?;
        Ok(ThreadedWriter {
            buf: Vec::with_capacity(CHUNK),
            tx: Some(tx),
            recycled,
            thread: Some(thread),
        })
    }

    fn send(&mut self) -> io::Result<()> {
        let fresh = self
            .recycled
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let chunk = std::mem::replace(&mut self.buf, fresh);
        let sent = self.tx.as_ref().map(|tx| tx.send(chunk));
        match sent {
            Some(Ok(())) => Ok(()),
            // The writing thread stopped: its error is the one to report.
            _ => Err(self
                .join()
                .err()
                .unwrap_or_else(|| io::Error::other("the writer thread stopped"))),
        }
    }

    fn join(&mut self) -> io::Result<W> {
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the writer thread panicked")),
            None => Err(io::Error::other("the writer thread is gone")),
        }
    }

    /// Sends what is buffered, waits for the thread and returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        self.join()
    }
}

/// The `write` of a writer that gathers its input into blocks of `size` bytes: appends to the
/// block `block(sink)` as much of `data` as fits, hands a full block to `full`, and returns
/// how much of `data` it took.
pub(super) fn gather<S>(
    sink: &mut S,
    data: &[u8],
    size: usize,
    block: impl Fn(&mut S) -> &mut Vec<u8>,
    full: impl FnOnce(&mut S) -> io::Result<()>,
) -> io::Result<usize> {
    let buf = block(sink);
    let n = data.len().min(size.saturating_sub(buf.len()));
    buf.extend_from_slice(&data[..n]);
    if buf.len() == size {
        full(sink)?;
    }
    Ok(n)
}

impl<W: Write + Send + 'static> Write for ThreadedWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        gather(self, data, CHUNK, |w| &mut w.buf, Self::send)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_arrives_in_order_and_errors_surface() {
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut w = ThreadedWriter::new(Vec::new()).unwrap();
        for c in data.chunks(77_777) {
            w.write_all(c).unwrap();
        }
        assert_eq!(w.finish().unwrap(), data);

        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(28))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = ThreadedWriter::new(Full).unwrap();
        let mut failed = None;
        for _ in 0..64 {
            if let Err(e) = w.write_all(&[0u8; 1 << 20]) {
                failed = Some(e);
                break;
            }
        }
        let err = failed.or_else(|| w.finish().err()).unwrap();
        assert_eq!(err.raw_os_error(), Some(28));
    }
}
