//! Reading a .deb in-process: the ar container, `debian-binary`, and the data member
//! decompressed as it streams (xz, zstd, gzip, bzip2 or none). The tar stream itself goes to
//! the archive module's safe extractor.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Take};
use std::path::Path;

use super::{BootstrapError, Result};

/// One member of a .deb's ar container: its name (without the trailing `/`), where its bytes
/// start, and how many there are.
struct ArMember {
    name: String,
    offset: u64,
    size: u64,
}

/// Walks the ar container of `path` after checking `debian-binary`, calling `visit` with each
/// later member until it returns `Some`; the file is positioned at the member's data.
fn find_member<T>(
    path: &Path,
    mut visit: impl FnMut(&ArMember, &mut File) -> Result<Option<T>>,
) -> Result<T> {
    let bad = |reason: String| BootstrapError::BadDeb {
        path: path.into(),
        reason,
    };
    let read_err = |source| BootstrapError::DebRead {
        path: path.into(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mut magic = [0u8; 8];
    if !read_unless_end(&mut file, &mut magic).map_err(read_err)? || &magic != b"!<arch>\n" {
        return Err(bad("not an ar archive".into()));
    }
    let mut first = true;
    loop {
        let offset = file.stream_position().map_err(read_err)?;
        let mut header = [0u8; 60];
        if !read_unless_end(&mut file, &mut header).map_err(read_err)? {
            return Err(bad(format!(
                "member not found (the file ends at offset {offset})"
            )));
        }
        if &header[58..60] != b"`\n" {
            return Err(bad(format!("bad ar member header at offset {offset}")));
        }
        let name = std::str::from_utf8(&header[..16])
            .unwrap_or("")
            .trim_end()
            .trim_end_matches('/')
            .to_string();
        let size: u64 = std::str::from_utf8(&header[48..58])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| bad(format!("bad member size at offset {offset}")))?;
        if first {
            if name != "debian-binary" {
                return Err(bad(format!("first member is {name:?}, not debian-binary")));
            }
            let mut version = String::new();
            (&mut file)
                .take(size)
                .read_to_string(&mut version)
                .map_err(read_err)?;
            if !version.starts_with("2.") {
                return Err(bad(format!(
                    "unsupported format version {:?}",
                    version.trim()
                )));
            }
            first = false;
        } else {
            let member = ArMember {
                name,
                offset: offset + 60,
                size,
            };
            if let Some(found) = visit(&member, &mut file)? {
                return Ok(found);
            }
            file.seek(SeekFrom::Start(member.offset + size))
                .map_err(read_err)?;
        }
        if size % 2 == 1 {
            file.seek(SeekFrom::Current(1)).map_err(read_err)?;
        }
    }
}

/// Fills `buf`: false when the file ends first (a short or truncated .deb, which is the
/// package's fault), an error when reading fails.
fn read_unless_end(file: &mut File, buf: &mut [u8]) -> std::io::Result<bool> {
    match file.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// The data.tar member of a .deb, decompressed.
pub(crate) fn data_tar(path: &Path) -> Result<Box<dyn Read + Send>> {
    tar_member(path, "data.tar", 256 << 10)
}

/// The control.tar member of a .deb, decompressed.
pub(crate) fn control_tar(path: &Path) -> Result<Box<dyn Read + Send>> {
    tar_member(path, "control.tar", 64 << 10)
}

/// The member named `prefix` plus a compression suffix, decompressed as it streams.
fn tar_member(path: &Path, prefix: &str, buffer: usize) -> Result<Box<dyn Read + Send>> {
    find_member(path, |m, file| {
        let Some(ext) = m.name.strip_prefix(prefix) else {
            return Ok(None);
        };
        let file = file.try_clone().map_err(|source| BootstrapError::DebRead {
            path: path.into(),
            source,
        })?;
        let member: Take<BufReader<File>> = BufReader::with_capacity(buffer, file).take(m.size);
        decoder(path, member, prefix, ext).map(Some)
    })
}

fn decoder(
    path: &Path,
    member: Take<BufReader<File>>,
    prefix: &str,
    ext: &str,
) -> Result<Box<dyn Read + Send>> {
    Ok(match ext {
        "" => Box::new(member),
        ".xz" => Box::new(liblzma::read::XzDecoder::new(member)),
        ".zst" => Box::new(zstd::stream::read::Decoder::new(member).map_err(|source| {
            BootstrapError::DebRead {
                path: path.into(),
                source,
            }
        })?),
        ".gz" => Box::new(flate2::read::GzDecoder::new(member)),
        ".bz2" => Box::new(bzip2::read::BzDecoder::new(member)),
        other => {
            return Err(BootstrapError::BadDeb {
                path: path.into(),
                reason: format!("unsupported member {prefix}{other}"),
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ar_header(name: &str, size: usize) -> Vec<u8> {
        format!(
            "{name:<16}{:<12}{:<6}{:<6}{:<8}{size:<10}`\n",
            0, 0, 0, 100644
        )
        .into_bytes()
    }

    fn member(name: &str, data: &[u8]) -> Vec<u8> {
        let mut h = ar_header(name, data.len());
        h.extend_from_slice(data);
        if data.len() % 2 == 1 {
            h.push(b'\n');
        }
        h
    }

    /// An ar archive of `members`, after the magic.
    fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut ar = b"!<arch>\n".to_vec();
        for (name, data) in members {
            ar.extend(member(name, data));
        }
        ar
    }

    fn read_all(mut reader: Box<dyn Read + Send>) -> String {
        let mut out = String::new();
        reader.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn reads_the_members_and_refuses_junk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.deb");
        let deb = ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar", b"odd control"),
            ("data.tar", b"payload"),
        ]);
        std::fs::write(&path, &deb).unwrap();
        assert_eq!(read_all(data_tar(&path).unwrap()), "payload");
        assert_eq!(read_all(control_tar(&path).unwrap()), "odd control");

        let refused = |bytes: &[u8], why: &str| {
            std::fs::write(&path, bytes).unwrap();
            let err = data_tar(&path).err().unwrap();
            assert!(matches!(err, BootstrapError::BadDeb { .. }), "{err:?}");
            assert!(err.to_string().contains(why), "{err}");
        };
        refused(b"PK\x03\x04 not a deb at all", "not an ar archive");
        refused(b"!<ar", "not an ar archive");
        refused(&ar(&[("debian-binary", b"3.0\n")]), "unsupported format");
        refused(&ar(&[("debian-binary", b"2.0\n")]), "member not found");
        refused(
            &ar(&[("debian-binary", b"2.0\n"), ("data.tar.lz4", b"x")]),
            "unsupported member data.tar.lz4",
        );
    }
}
