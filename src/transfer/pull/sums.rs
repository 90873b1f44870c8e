//! Checksum lists: `SHA256SUMS` (sha256sum's output, text or binary mode, one file a line) and
//! a single-file `FILE.sha256` (the digest, optionally followed by the name).

/// The SHA-256 the list gives for `file`, when it names it. A `.sha256` file with one bare
/// digest applies to its file; with `single` the one entry is taken whatever its name.
pub(crate) fn find(list: &str, file: &str, single: bool) -> Option<[u8; 32]> {
    let mut lines = list.lines().map(str::trim).filter(|l| !l.is_empty());
    if single {
        let first = lines.next()?;
        let digest = first.split_whitespace().next()?;
        return parse_hex(digest);
    }
    for line in lines {
        let Some((digest, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        // Text mode ("  name") or binary mode (" *name"); "./name" as some tools write it.
        let name = rest.trim_start().trim_start_matches('*');
        let name = name.strip_prefix("./").unwrap_or(name);
        if name == file {
            return parse_hex(digest);
        }
    }
    None
}

fn parse_hex(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn finds_text_and_binary_entries() {
        let list = format!("{D}  other.tar\n{D} *img.tar.zst\n");
        assert!(find(&list, "img.tar.zst", false).is_some());
        assert!(find(&list, "img.tar", false).is_none());
        let list = format!("{D}  ./img.tar\n");
        assert!(find(&list, "img.tar", false).is_some());
    }

    #[test]
    fn single_file_sums() {
        assert!(find(&format!("{D}\n"), "x", true).is_some());
        assert!(find(&format!("{D}  whatever\n"), "x", true).is_some());
        assert!(find("nothex  x\n", "x", true).is_none());
        assert!(find(&D[..60], "x", true).is_none());
    }
}
