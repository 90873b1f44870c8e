//! The fixed fields of a ustar/GNU header: numbers in octal or GNU base-256, the checksum,
//! NUL-terminated strings, and the name/prefix split. Shared by the reader and the writer.

use super::error::Fault;
use super::ArchiveError;

pub(crate) const OCTAL_SIZE_MAX: u64 = 0o77777777777;
pub(crate) const OCTAL_ID_MAX: u64 = 0o7777777;

pub(crate) fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

pub(crate) fn check_sum(block: &[u8; 512], offset: u64) -> Result<(), ArchiveError> {
    let stored = num(&block[148..156], offset, "checksum").ok();
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += b as u64;
        signed += b as i8 as i64;
    }
    if stored.is_some_and(|v| v == unsigned || v as i64 == signed) {
        Ok(())
    } else if offset == 0 {
        Err(ArchiveError::Corrupt {
            offset,
            fault: Fault::NotTar,
        })
    } else {
        Err(ArchiveError::Corrupt {
            offset,
            fault: Fault::BadChecksum,
        })
    }
}

/// An octal field (spaces and NULs around it allowed) or GNU base-256.
pub(crate) fn num(field: &[u8], offset: u64, what: &'static str) -> Result<u64, ArchiveError> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        if field[0] == 0xff {
            return Err(ArchiveError::Corrupt {
                offset,
                fault: Fault::FieldNegative(what),
            });
        }
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for &b in &field[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(b as u64))
                .ok_or(ArchiveError::Corrupt {
                    offset,
                    fault: Fault::FieldOverflows(what),
                })?;
        }
        return Ok(v);
    }
    let s = cstr(field);
    let s = std::str::from_utf8(s).map_err(|_| ArchiveError::Corrupt {
        offset,
        fault: Fault::FieldNotNumber(what),
    })?;
    let s = s.trim_matches(|c| c == ' ' || c == '\0');
    if s.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(s, 8).map_err(|_| ArchiveError::Corrupt {
        offset,
        fault: Fault::FieldNotOctal {
            field: what,
            text: s.to_string(),
        },
    })
}

pub(crate) fn signed_num(field: &[u8], offset: u64) -> Result<i64, ArchiveError> {
    if field[0] == 0xff {
        let mut v: i64 = -1;
        for &b in &field[1..] {
            v = v.wrapping_shl(8) | b as i64;
        }
        return Ok(v);
    }
    Ok(num(field, offset, "mtime")? as i64)
}

/// Whether `name` fits the ustar name/prefix fields (ASCII only), and the split if so:
/// `Some(i)` means prefix = name[..i], name = name[i+1..].
pub(crate) fn split_name(name: &[u8]) -> (bool, Option<usize>) {
    if !name.is_ascii() {
        return (false, None);
    }
    if name.len() <= 100 {
        return (true, None);
    }
    let split = name
        .iter()
        .enumerate()
        .rev()
        .find(|&(i, &b)| b == b'/' && i <= 155 && name.len() - i - 1 <= 100 && i > 0);
    match split {
        Some((i, _)) if name.len() - i - 1 > 0 => (true, Some(i)),
        _ => (false, None),
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn fill(
    h: &mut [u8; 512],
    name: &[u8],
    split: &Option<usize>,
    typ: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: i64,
    link: &[u8],
    dev: (u32, u32),
) {
    let (prefix, name) = match split {
        Some(i) => (&name[..*i], &name[*i + 1..]),
        None => (&b""[..], name),
    };
    copy_field(&mut h[0..100], name);
    octal(&mut h[100..108], mode as u64);
    octal(&mut h[108..116], uid);
    octal(&mut h[116..124], gid);
    if size > OCTAL_SIZE_MAX {
        // GNU base-256; the PAX size record is what readers use.
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    } else {
        octal(&mut h[124..136], size);
    }
    octal(&mut h[136..148], mtime as u64);
    h[156] = typ;
    copy_field(&mut h[157..257], link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], dev.0 as u64);
    octal(&mut h[337..345], dev.1 as u64);
    copy_field(&mut h[345..500], prefix);
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| b as u64).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
}

fn copy_field(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

fn octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    let s = &s.as_bytes()[s.len().saturating_sub(digits)..];
    field[..digits].copy_from_slice(s);
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_beyond_octal_use_base_256_and_read_back() {
        let mut h = [0u8; 512];
        let big = 9 * (1u64 << 30) + 7;
        fill(
            &mut h,
            b"./big",
            &None,
            b'0',
            0o644,
            0,
            0,
            big,
            0,
            b"",
            (0, 0),
        );
        assert_eq!(h[124], 0x80);
        assert_eq!(num(&h[124..136], 0, "size").unwrap(), big);
        fill(
            &mut h,
            b"./small",
            &None,
            b'0',
            0o644,
            0,
            0,
            OCTAL_SIZE_MAX,
            0,
            b"",
            (0, 0),
        );
        assert_eq!(&h[124..136], b"77777777777\0");
    }

    #[test]
    fn long_names_split_into_prefix_or_need_pax() {
        let name = format!("./{}/{}", "a".repeat(120), "b".repeat(90));
        let (ok, split) = split_name(name.as_bytes());
        assert!(ok);
        let i = split.unwrap();
        assert!(i <= 155 && name.len() - i - 1 <= 100);
        assert_eq!(split_name("c".repeat(101).as_bytes()), (false, None));
        assert_eq!(split_name(b"./caf\xc3\xa9"), (false, None));
    }
}
