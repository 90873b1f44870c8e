//! Compression: detection by magic bytes, a decoder that runs on its own thread (so that
//! decompression and extraction overlap on two cores, as `zstd -dc | tar -x` does), and
//! encoders for every supported format, multi-threaded where the format allows.

use std::io::{self, Cursor, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use super::pgzip::ParGzEncoder;
use super::ArchiveError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

impl Compression {
    /// Detects the format from the first bytes of the input; anything unknown is taken as an
    /// uncompressed tar (the tar reader then rejects what is not one).
    pub(crate) fn detect(magic: &[u8]) -> Compression {
        let zstd_skippable =
            magic.len() >= 4 && magic[0] & 0xf0 == 0x50 && magic[1..4] == [0x2a, 0x4d, 0x18];
        if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) || zstd_skippable {
            Compression::Zstd
        } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Compression::Xz
        } else if magic.len() >= 4 && magic.starts_with(b"BZh") && magic[3].is_ascii_digit() {
            Compression::Bzip2
        } else {
            Compression::None
        }
    }

    /// The format a file name asks for, from its suffix.
    pub(crate) fn from_file_name(name: &[u8]) -> Option<Compression> {
        let ends = |s: &str| name.ends_with(s.as_bytes());
        if ends(".tar") {
            Some(Compression::None)
        } else if ends(".tar.gz") || ends(".tgz") {
            Some(Compression::Gzip)
        } else if ends(".tar.zst") || ends(".tzst") {
            Some(Compression::Zstd)
        } else if ends(".tar.xz") || ends(".txz") {
            Some(Compression::Xz)
        } else if ends(".tar.bz2") || ends(".tbz2") {
            Some(Compression::Bzip2)
        } else {
            None
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Bzip2 => "bzip2",
        }
    }
}

const CHUNK: usize = 1 << 20;
/// The most memory the xz decoder may use (liblzma refuses a stream that needs more).
const XZ_MEMLIMIT: u64 = 128 << 20;

type Chunk = Result<Vec<u8>, io::Error>;

/// The decompressed input, produced by a background thread. Read it to its end, then call
/// [`Decoder::finish`] to learn whether the compressed stream was complete and its SHA-256.
pub struct Decoder {
    compression: Compression,
    rx: Receiver<Chunk>,
    recycle: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
    thread: Option<JoinHandle<Result<Option<[u8; 32]>, io::Error>>>,
}

impl Decoder {
    /// Detects the compression of `input` and starts decoding it. With `sha256`, the raw
    /// input (every byte of it, also what follows the archive) is hashed as it is read.
    pub(crate) fn spawn<R: Read + Send + 'static>(
        mut input: R,
        sha256: bool,
    ) -> Result<Decoder, ArchiveError> {
        let mut magic = [0u8; 6];
        let got = super::reader::read_up_to(&mut input, &mut magic, 0)?;
        if got == 0 {
            return Err(ArchiveError::Empty);
        }
        let compression = Compression::detect(&magic[..got]);
        let raw = HashReader {
            inner: Cursor::new(magic[..got].to_vec()).chain(input),
            hash: sha256.then(Sha256::new),
        };
        let (tx, rx) = sync_channel::<Chunk>(4);
        let (recycle, recycled) = sync_channel::<Vec<u8>>(8);
        let thread = std::thread::Builder::new()
            .name("rmach-decode".into())
            .spawn(move || decode_thread(compression, raw, tx, recycled))
            .map_err(|e| ArchiveError::Codec { source: e })?;
        Ok(Decoder {
            compression,
            rx,
            recycle,
            current: Vec::new(),
            pos: 0,
            done: false,
            thread: Some(thread),
        })
    }

    pub(crate) fn compression(&self) -> Compression {
        self.compression
    }

    /// Waits for the decoder thread; returns the input's SHA-256 when it was asked for.
    pub(crate) fn finish(mut self) -> Result<Option<[u8; 32]>, ArchiveError> {
        // Dropping the receiver unblocks a thread still sending (when the caller stopped early).
        let thread = self.thread.take();
        drop(self);
        match thread.map(|t| t.join()) {
            Some(Ok(Ok(digest))) => Ok(digest),
            Some(Ok(Err(e))) => Err(ArchiveError::Codec { source: e }),
            Some(Err(_)) => Err(ArchiveError::Codec {
                source: io::Error::other("decoder thread panicked"),
            }),
            None => Ok(None),
        }
    }
}

impl Read for Decoder {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    let old = std::mem::replace(&mut self.current, chunk);
                    let _ = self.recycle.try_send(old);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => self.done = true,
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Every member of a gzip stream, in order, and then the end of input or zero bytes only
/// (tape and `dd` blocking pad a .tar.gz with zeros; gzip and GNU tar accept that). Anything
/// else after a member is refused, as `gzip -t` fails on it.
struct GzMembers<R: io::BufRead> {
    member: Option<flate2::bufread::GzDecoder<R>>,
}

impl<R: io::BufRead> GzMembers<R> {
    fn new(inner: R) -> Self {
        GzMembers {
            member: Some(flate2::bufread::GzDecoder::new(inner)),
        }
    }
}

impl<R: io::BufRead> Read for GzMembers<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(member) = &mut self.member else {
                return Ok(0);
            };
            let n = member.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            let mut inner = self
                .member
                .take()
                .map(|m| m.into_inner())
                .ok_or_else(|| io::Error::other("gzip reader gone"))?;
            let next = inner.fill_buf()?;
            if next.is_empty() {
                return Ok(0);
            }
            if next[0] == 0x1f {
                self.member = Some(flate2::bufread::GzDecoder::new(inner));
                continue;
            }
            loop {
                let rest = inner.fill_buf()?;
                if rest.is_empty() {
                    return Ok(0);
                }
                if rest.iter().any(|&b| b != 0) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the gzip stream is followed by data that is neither gzip nor zero padding",
                    ));
                }
                let k = rest.len();
                inner.consume(k);
            }
        }
    }
}

struct HashReader<R> {
    inner: R,
    hash: Option<Sha256>,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hash {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

fn decode_thread<R: Read>(
    compression: Compression,
    mut raw: HashReader<R>,
    tx: SyncSender<Chunk>,
    recycled: Receiver<Vec<u8>>,
) -> Result<Option<[u8; 32]>, io::Error> {
    let result = {
        let mut dec: Box<dyn Read + '_> = match compression {
            Compression::None => Box::new(&mut raw),
            Compression::Gzip => Box::new(GzMembers::new(io::BufReader::with_capacity(
                CHUNK, &mut raw,
            ))),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(&mut raw)?),
            Compression::Xz => {
                // A memory limit: an xz header may ask for a 1.5 GiB dictionary; xz -9's needs
                // 65 MiB to decode.
                let stream = liblzma::stream::Stream::new_stream_decoder(
                    XZ_MEMLIMIT,
                    liblzma::stream::CONCATENATED,
                )
                .map_err(io::Error::from)?;
                Box::new(liblzma::read::XzDecoder::new_stream(
                    io::BufReader::with_capacity(CHUNK, &mut raw),
                    stream,
                ))
            }
            Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(
                io::BufReader::with_capacity(CHUNK, &mut raw),
            )),
        };
        pump(&mut dec, &tx, &recycled)
    };
    match result {
        Ok(true) => {}
        // The reader hung up early; nothing more to report.
        Ok(false) => return Ok(None),
        Err(e) => {
            let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
            return Err(e);
        }
    }
    // Hash whatever follows the compressed stream too: --sha256 is about the whole file.
    io::copy(&mut raw, &mut io::sink())?;
    Ok(raw.hash.map(|h| h.finalize().into()))
}

/// Moves decoded chunks to the reader; false when the reader went away.
fn pump(
    dec: &mut dyn Read,
    tx: &SyncSender<Chunk>,
    recycled: &Receiver<Vec<u8>>,
) -> io::Result<bool> {
    loop {
        let mut buf = recycled
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        buf.resize(CHUNK, 0);
        let mut filled = 0;
        while filled < CHUNK {
            match dec.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(filled);
        if filled == 0 {
            return Ok(true);
        }
        if tx.send(Ok(buf)).is_err() {
            return Ok(false);
        }
    }
}

/// A compressing writer for any supported format. Call [`Encoder::finish`] to write the
/// trailer; dropping it unfinished leaves a truncated stream.
pub enum Encoder<W: Write + Send + 'static> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    ParGzip(ParGzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    /// zstd with worker threads of its own (`threads` above 1).
    ZstdWorkers(zstd::stream::write::Encoder<'static, W>),
    Xz(liblzma::write::XzEncoder<W>),
    Bzip2(bzip2::write::BzEncoder<W>),
}

impl<W: Write + Send + 'static> Encoder<W> {
    /// `level` None takes each tool's default (gzip 6, zstd 3, xz 6, bzip2 9); `threads` 0
    /// means all cores.
    pub(crate) fn new(
        out: W,
        c: Compression,
        level: Option<i32>,
        threads: u32,
    ) -> Result<Self, ArchiveError> {
        let threads = if threads == 0 {
            crate::parallel::cpu_workers() as u32
        } else {
            threads
        };
        let codec = |e: io::Error| ArchiveError::Codec { source: e };
        Ok(match c {
            Compression::None => Encoder::None(out),
            Compression::Gzip => {
                let lvl = flate2::Compression::new(level.unwrap_or(6).clamp(0, 9) as u32);
                if threads > 1 {
                    Encoder::ParGzip(ParGzEncoder::new(out, lvl, threads as usize))
                } else {
                    Encoder::Gzip(flate2::write::GzEncoder::new(out, lvl))
                }
            }
            Compression::Zstd => {
                let mut enc =
                    zstd::stream::write::Encoder::new(out, level.unwrap_or(3)).map_err(codec)?;
                // A content checksum, as the zstd tool writes by default: a lost bit in a
                // backup must fail its restore.
                enc.include_checksum(true).map_err(codec)?;
                if threads > 1 {
                    enc.multithread(threads).map_err(codec)?;
                    Encoder::ZstdWorkers(enc)
                } else {
                    Encoder::Zstd(enc)
                }
            }
            Compression::Xz => {
                let stream = liblzma::stream::MtStreamBuilder::new()
                    .threads(threads)
                    .preset(level.unwrap_or(6).clamp(0, 9) as u32)
                    .check(liblzma::stream::Check::Crc64)
                    .encoder()
                    .map_err(|e| codec(e.into()))?;
                Encoder::Xz(liblzma::write::XzEncoder::new_stream(out, stream))
            }
            Compression::Bzip2 => {
                let lvl = bzip2::Compression::new(level.unwrap_or(9).clamp(1, 9) as u32);
                Encoder::Bzip2(bzip2::write::BzEncoder::new(out, lvl))
            }
        })
    }

    /// Whether the encoder copies what it is given into buffers of its own and compresses them
    /// on worker threads of its own (multithreaded zstd), so that its writer returns at once
    /// while the workers have room: a thread that hands it the input gains no overlap, only a
    /// copy of every byte.
    pub(crate) fn has_own_workers(&self) -> bool {
        matches!(self, Encoder::ZstdWorkers(_))
    }

    /// Writes the format's trailer and hands back the inner writer.
    pub(crate) fn finish(self) -> Result<W, ArchiveError> {
        let r = match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::ParGzip(e) => e.finish(),
            Encoder::Zstd(e) | Encoder::ZstdWorkers(e) => e.finish(),
            Encoder::Xz(e) => e.finish(),
            Encoder::Bzip2(e) => e.finish(),
        };
        r.map_err(|source| ArchiveError::Write { source })
    }

    fn inner(&mut self) -> &mut dyn Write {
        match self {
            Encoder::None(w) => w,
            Encoder::Gzip(e) => e,
            Encoder::ParGzip(e) => e,
            Encoder::Zstd(e) | Encoder::ZstdWorkers(e) => e,
            Encoder::Xz(e) => e,
            Encoder::Bzip2(e) => e,
        }
    }
}

impl<W: Write + Send + 'static> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(c: Compression, threads: u32) {
        let data: Vec<u8> = (0..1_200_000u32)
            .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
            .collect();
        let mut enc = Encoder::new(Vec::new(), c, None, threads).unwrap();
        enc.write_all(&data).unwrap();
        let mut packed = enc.finish().unwrap();
        // A second, concatenated stream must be decoded too (multi-member gzip, zstd frames...).
        if c != Compression::None {
            let mut enc = Encoder::new(Vec::new(), c, None, 1).unwrap();
            enc.write_all(b"tail").unwrap();
            packed.extend(enc.finish().unwrap());
        }
        let mut dec = Decoder::spawn(Cursor::new(packed.clone()), true).unwrap();
        assert_eq!(dec.compression(), c);
        let mut out = Vec::new();
        dec.read_to_end(&mut out).unwrap();
        let digest = dec.finish().unwrap().unwrap();
        assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(&packed)));
        assert_eq!(&out[..data.len()], &data[..]);
        if c != Compression::None {
            assert_eq!(&out[data.len()..], b"tail");
        }
    }

    #[test]
    fn every_format_round_trips_with_concatenation() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Zstd,
            Compression::Xz,
            Compression::Bzip2,
        ] {
            roundtrip(c, 1);
            roundtrip(c, 2);
        }
    }

    #[test]
    fn corrupt_stream_fails() {
        let mut enc = Encoder::new(Vec::new(), Compression::Gzip, None, 1).unwrap();
        enc.write_all(&[7u8; 100_000]).unwrap();
        let mut packed = enc.finish().unwrap();
        let n = packed.len();
        packed[n - 6] ^= 0xff; // the CRC
        let mut dec = Decoder::spawn(Cursor::new(packed), false).unwrap();
        let mut out = Vec::new();
        assert!(dec.read_to_end(&mut out).is_err());
        assert!(dec.finish().is_err());
    }

    #[test]
    fn empty_input_is_an_error() {
        assert!(matches!(
            Decoder::spawn(Cursor::new(Vec::new()), false),
            Err(ArchiveError::Empty)
        ));
    }
}
