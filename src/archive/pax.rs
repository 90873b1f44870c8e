//! PAX extended header records (`"%d %s=%s\n"`), parsed by their length prefix: values may
//! hold any byte, newlines included (binary xattrs, GNU's textual ACLs).

use super::error::Malformed;

/// (keyword, value) pairs, in order.
pub(crate) type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// Splits a PAX header body into (keyword, value) pairs, or says what is wrong.
pub(crate) fn parse(mut data: &[u8]) -> Result<Records, Malformed> {
    let mut out = Vec::new();
    while !data.is_empty() {
        // Some writers pad the body with NULs.
        if data.iter().all(|&b| b == 0) {
            break;
        }
        let space = data
            .iter()
            .take(20)
            .position(|&b| b == b' ')
            .ok_or(Malformed::PaxNoLength)?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or(Malformed::PaxLengthNotNumber)?;
        if len <= space + 1 || len > data.len() {
            return Err(Malformed::PaxLengthPastEnd(len));
        }
        let record = &data[space + 1..len];
        let Some((&b'\n', body)) = record.split_last() else {
            return Err(Malformed::PaxNoNewline);
        };
        let eq = body
            .iter()
            .position(|&b| b == b'=')
            .ok_or(Malformed::PaxNoEquals)?;
        out.push((body[..eq].to_vec(), body[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

/// Appends one record; the length prefix counts itself.
pub(crate) fn push(buf: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    buf.extend_from_slice(len.to_string().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(key);
    buf.push(b'=');
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

/// GNU tar escapes '%' and '=' in xattr names inside SCHILY.xattr keywords.
pub(crate) fn decode_xattr_name(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        if name[i..].starts_with(b"%25") {
            out.push(b'%');
            i += 3;
        } else if name[i..].starts_with(b"%3D") {
            out.push(b'=');
            i += 3;
        } else {
            out.push(name[i]);
            i += 1;
        }
    }
    out
}

pub(crate) fn encode_xattr_name(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    for &b in name {
        match b {
            b'%' => out.extend_from_slice(b"%25"),
            b'=' => out.extend_from_slice(b"%3D"),
            _ => out.push(b),
        }
    }
    out
}

/// Parses a PAX time ("1700000000.5", "-1.25") into seconds and nanoseconds.
pub(crate) fn parse_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let neg = int.starts_with('-');
    let secs: i64 = int.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nsec: u32 = digits.parse().ok()?;
    if neg && nsec > 0 {
        Some((secs - 1, 1_000_000_000 - nsec))
    } else {
        Some((secs, nsec))
    }
}

pub(crate) fn format_time(secs: i64, nsec: u32) -> String {
    if nsec == 0 {
        return secs.to_string();
    }
    let (s, n) = if secs < 0 {
        (secs + 1, 1_000_000_000 - nsec)
    } else {
        (secs, nsec)
    };
    let sign = if secs < 0 && s == 0 { "-" } else { "" };
    let frac = format!("{n:09}");
    format!("{sign}{s}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_with_newlines_and_nuls_survive() {
        let mut buf = Vec::new();
        push(&mut buf, b"SCHILY.xattr.user.x", b"a\nb\0c=d");
        push(&mut buf, b"path", b"x");
        let recs = parse(&buf).unwrap();
        assert_eq!(
            recs[0],
            (b"SCHILY.xattr.user.x".to_vec(), b"a\nb\0c=d".to_vec())
        );
        assert_eq!(recs[1], (b"path".to_vec(), b"x".to_vec()));
    }

    #[test]
    fn length_prefix_counts_itself() {
        for n in 0..300 {
            let mut buf = Vec::new();
            push(&mut buf, b"k", &vec![b'v'; n]);
            let (len, _) = std::str::from_utf8(&buf).unwrap().split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), buf.len());
        }
    }

    #[test]
    fn malformed_records_are_errors() {
        assert!(parse(b"99 path=x\n").is_err());
        assert!(parse(b"9 path=xy\n").is_err());
        assert!(parse(b"9 path=x\n").is_ok());
        assert!(parse(b"x path=x\n").is_err());
        assert!(parse(b"8 pathx\n").is_err());
        assert!(parse(b"3 \n").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(parse_time(b"1700000000.5"), Some((1700000000, 500_000_000)));
        assert_eq!(parse_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(format_time(1700000000, 500_000_000), "1700000000.5");
        assert_eq!(format_time(-2, 750_000_000), "-1.25");
        assert_eq!(format_time(-1, 500_000_000), "-0.5");
        assert_eq!(parse_time(b"-0.5"), Some((-1, 500_000_000)));
    }
}
