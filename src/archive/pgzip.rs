//! Parallel gzip in one member, as pigz writes it: the input is cut into blocks, each block is
//! deflated independently on a worker thread and ended with a sync flush (so it stops on a byte
//! boundary), and the blocks are written in order between one gzip header and one trailer, whose
//! CRC-32 is combined from the blocks' own. One member matters: systemd-import 252 (Debian 12's
//! `machinectl import-tar`) hangs on a stream of many concatenated members.
//!
//! Written here rather than taken from the `gzp` crate because `gzp` compresses through
//! zlib-ng-sys (C) or miniz_oxide and would pull a second deflate backend beside flate2's
//! `zlib-rs`, which is what makes a single member fast; this file is all we need of it.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

const BLOCK: usize = 1 << 20;

type Job = (u64, Vec<u8>);
/// A block's deflate data, its CRC-32 and length.
type Done = (u64, io::Result<(Vec<u8>, flate2::Crc)>);

/// gzip header: magic, deflate, no flags, no mtime, no extra flags, OS unix.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
/// An empty final block with fixed Huffman codes (BFINAL=1, BTYPE=01, end-of-block), valid
/// after a sync flush left the stream byte-aligned.
const LAST_BLOCK: [u8; 2] = [0x03, 0x00];

pub struct ParGzEncoder<W: Write> {
    out: W,
    crc: flate2::Crc,
    started: bool,
    block: Vec<u8>,
    next_seq: u64,
    next_write: u64,
    in_flight: usize,
    max_in_flight: usize,
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    pending: BTreeMap<u64, (Vec<u8>, flate2::Crc)>,
    workers: Vec<JoinHandle<()>>,
}

impl<W: Write> ParGzEncoder<W> {
    pub(crate) fn new(out: W, level: flate2::Compression, threads: usize) -> Self {
        let threads = threads.max(1);
        let (jobs, job_rx) = sync_channel::<Job>(threads);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done) = channel::<Done>();
        let workers = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&job_rx);
                let tx: Sender<Done> = done_tx.clone();
                std::thread::spawn(move || worker(rx, tx, level))
            })
            .collect();
        ParGzEncoder {
            out,
            crc: flate2::Crc::new(),
            started: false,
            block: Vec::with_capacity(BLOCK),
            next_seq: 0,
            next_write: 0,
            in_flight: 0,
            max_in_flight: threads * 2 + 1,
            jobs: Some(jobs),
            done,
            pending: BTreeMap::new(),
            workers,
        }
    }

    fn submit(&mut self) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        while self.in_flight >= self.max_in_flight {
            self.collect_one()?;
        }
        let block = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip encoder already finished"))?;
        jobs.send((self.next_seq, block))
            .map_err(|_| io::Error::other("gzip worker thread died"))?;
        self.next_seq += 1;
        self.in_flight += 1;
        Ok(())
    }

    /// Waits for one member and writes every member that is now next in order.
    fn collect_one(&mut self) -> io::Result<()> {
        let (seq, data) = self
            .done
            .recv()
            .map_err(|_| io::Error::other("gzip worker thread died"))?;
        self.pending.insert(seq, data?);
        while let Some((data, crc)) = self.pending.remove(&self.next_write) {
            self.crc.combine(&crc);
            self.out.write_all(&data)?;
            self.next_write += 1;
            self.in_flight -= 1;
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.start()?;
        self.submit()?;
        while self.in_flight > 0 {
            self.collect_one()?;
        }
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        self.out.write_all(&LAST_BLOCK)?;
        self.out.write_all(&self.crc.sum().to_le_bytes())?;
        self.out.write_all(&self.crc.amount().to_le_bytes())?;
        self.out.flush()?;
        // `self` has a Drop-free layout, so the writer can be moved out.
        let ParGzEncoder { out, .. } = self;
        Ok(out)
    }

    fn start(&mut self) -> io::Result<()> {
        if !self.started {
            self.out.write_all(&HEADER)?;
            self.started = true;
        }
        Ok(())
    }
}

fn worker(rx: Arc<Mutex<Receiver<Job>>>, tx: Sender<Done>, level: flate2::Compression) {
    loop {
        let job = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return,
        };
        let Ok((seq, data)) = job else { return };
        if tx.send((seq, deflate_block(&data, level))).is_err() {
            return;
        }
    }
}

/// One block as raw deflate ending in a sync flush (not final), with its CRC-32.
fn deflate_block(data: &[u8], level: flate2::Compression) -> io::Result<(Vec<u8>, flate2::Crc)> {
    let mut enc =
        flate2::write::DeflateEncoder::new(Vec::with_capacity(data.len() / 2 + 64), level);
    enc.write_all(data)?;
    // flush() is a sync flush: all input out, then an empty stored block to a byte boundary.
    enc.flush()?;
    let out = std::mem::take(enc.get_mut());
    let mut crc = flate2::Crc::new();
    crc.update(data);
    Ok((out, crc))
}

impl<W: Write> Write for ParGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.start()?;
        super::pipe::gather(self, buf, BLOCK, |e| &mut e.block, Self::submit)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn members_decode_in_order() {
        let data: Vec<u8> = (0..5_500_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let mut enc = ParGzEncoder::new(Vec::new(), flate2::Compression::new(6), 3);
        for chunk in data.chunks(70_001) {
            enc.write_all(chunk).unwrap();
        }
        let packed = enc.finish().unwrap();
        let mut out = Vec::new();
        // A single-member reader must see all of it: one member, not many.
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn empty_input_is_valid_gzip() {
        let packed = ParGzEncoder::new(Vec::new(), flate2::Compression::new(6), 2)
            .finish()
            .unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out.is_empty());
    }
}
