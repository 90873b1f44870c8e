//! Parallel gzip: the input is cut into blocks, each block becomes a complete gzip member on a
//! worker thread, and the members are written in order. Concatenated members are one valid
//! gzip stream (RFC 1952 §2.2; gzip, zcat and GNU tar read them), at a small cost in ratio
//! against pigz's shared dictionaries.
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
type Done = (u64, io::Result<Vec<u8>>);

pub struct ParGzEncoder<W: Write> {
    out: W,
    level: flate2::Compression,
    block: Vec<u8>,
    next_seq: u64,
    next_write: u64,
    in_flight: usize,
    max_in_flight: usize,
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    pending: BTreeMap<u64, Vec<u8>>,
    workers: Vec<JoinHandle<()>>,
}

impl<W: Write> ParGzEncoder<W> {
    pub fn new(out: W, level: flate2::Compression, threads: usize) -> Self {
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
            level,
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
        while let Some(data) = self.pending.remove(&self.next_write) {
            self.out.write_all(&data)?;
            self.next_write += 1;
            self.in_flight -= 1;
        }
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<W> {
        if self.next_seq == 0 && self.block.is_empty() {
            // An empty input still needs one (empty) member to be a gzip file.
            let enc = flate2::write::GzEncoder::new(Vec::new(), self.level);
            self.out.write_all(&enc.finish()?)?;
        }
        self.submit()?;
        while self.in_flight > 0 {
            self.collect_one()?;
        }
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        self.out.flush()?;
        // `self` has a Drop-free layout, so the writer can be moved out.
        let ParGzEncoder { out, .. } = self;
        Ok(out)
    }
}

fn worker(rx: Arc<Mutex<Receiver<Job>>>, tx: Sender<Done>, level: flate2::Compression) {
    loop {
        let job = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return,
        };
        let Ok((seq, data)) = job else { return };
        let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 2), level);
        let result = enc.write_all(&data).and_then(|_| enc.finish());
        if tx.send((seq, result)).is_err() {
            return;
        }
    }
}

impl<W: Write> Write for ParGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == BLOCK {
            self.submit()?;
        }
        Ok(n)
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
        flate2::read::MultiGzDecoder::new(&packed[..])
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
        flate2::read::MultiGzDecoder::new(&packed[..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out.is_empty());
    }
}
