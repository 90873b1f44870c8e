//! POSIX ACLs between GNU tar's text (`SCHILY.acl.access`/`.default`: "user::rw-\nuser:bob:r--\n..."
//! or comma-separated, names or numeric ids, star's optional `:ID` fourth field) and the
//! kernel's binary `system.posix_acl_*` xattr (version 2, then {u16 tag, u16 perm, u32 id}).

use super::error::Malformed;

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
const UNDEFINED_ID: u32 = u32::MAX;

/// Text to binary. Names are resolved with `lookup(is_group, name)` (GNU tar resolves them on
/// the extracting host too).
pub(crate) fn text_to_xattr(
    text: &[u8],
    lookup: &dyn Fn(bool, &str) -> Option<u32>,
) -> Result<Vec<u8>, Malformed> {
    let text = std::str::from_utf8(text).map_err(|_| Malformed::AclNotText)?;
    let mut entries = Vec::new();
    for raw in text.split([',', '\n']) {
        let entry = raw.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let fields: Vec<&str> = entry.split(':').collect();
        if fields.len() < 3 || fields.len() > 4 {
            return Err(Malformed::AclShape(entry.into()));
        }
        let (tag_s, qual, perm_s) = (fields[0], fields[1], fields[2]);
        let is_group = matches!(tag_s, "g" | "group");
        let tag = match (tag_s, qual.is_empty()) {
            ("u" | "user", true) => USER_OBJ,
            ("u" | "user", false) => USER,
            ("g" | "group", true) => GROUP_OBJ,
            ("g" | "group", false) => GROUP,
            ("m" | "mask", _) => MASK,
            ("o" | "other", _) => OTHER,
            _ => return Err(Malformed::AclTag(entry.into())),
        };
        let id = if tag == USER || tag == GROUP {
            let numeric = fields
                .get(3)
                .and_then(|s| s.parse().ok())
                .or_else(|| qual.parse().ok());
            numeric
                .or_else(|| lookup(is_group, qual))
                .ok_or_else(|| Malformed::AclUnknownId {
                    entry: entry.into(),
                    kind: if is_group { "group" } else { "user" },
                })?
        } else {
            UNDEFINED_ID
        };
        let mut perm = 0u16;
        for c in perm_s.chars() {
            perm |= match c {
                'r' => 4,
                'w' => 2,
                'x' => 1,
                '-' => 0,
                _ => return Err(Malformed::AclPerms(entry.into())),
            };
        }
        entries.push((tag, id, perm));
    }
    entries.sort_by_key(|&(tag, id, _)| (tag, id));
    let mut out = Vec::with_capacity(4 + 8 * entries.len());
    out.extend_from_slice(&VERSION.to_le_bytes());
    for (tag, id, perm) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    Ok(out)
}

/// Binary to GNU tar's text, with numeric qualifiers (the image's ids are not the host's names).
pub(crate) fn xattr_to_text(bin: &[u8]) -> Option<Vec<u8>> {
    if bin.len() < 4
        || (bin.len() - 4) % 8 != 0
        || u32::from_le_bytes(bin[..4].try_into().ok()?) != VERSION
    {
        return None;
    }
    let mut out = String::new();
    for e in bin[4..].chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let head = match tag {
            USER_OBJ => "user:".to_string(),
            USER => format!("user:{id}"),
            GROUP_OBJ => "group:".to_string(),
            GROUP => format!("group:{id}"),
            MASK => "mask:".to_string(),
            OTHER => "other:".to_string(),
            _ => return None,
        };
        let p = |bit: u16, c: char| if perm & bit != 0 { c } else { '-' };
        out.push_str(&format!("{head}:{}{}{}\n", p(4, 'r'), p(2, 'w'), p(1, 'x')));
    }
    Some(out.into_bytes())
}

/// Looks names up in the host's /etc/passwd and /etc/group, as GNU tar's libacl would.
pub(crate) fn host_lookup(is_group: bool, name: &str) -> Option<u32> {
    let file = if is_group {
        "/etc/group"
    } else {
        "/etc/passwd"
    };
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gnu_text_round_trips() {
        let none = |_: bool, _: &str| None;
        let text = b"user::rw-\nuser:1000:r--\ngroup::r--\ngroup:50:rw-\nmask::rw-\nother::r--\n";
        let bin = text_to_xattr(text, &none).unwrap();
        assert_eq!(bin.len(), 4 + 6 * 8);
        assert_eq!(xattr_to_text(&bin).unwrap(), text.to_vec());
        let commas =
            text_to_xattr(b"u::rw-,g::r--,o::r--,u:1000:r--,g:50:rw-,m::rw-", &none).unwrap();
        assert_eq!(commas, bin);
        let star = text_to_xattr(
            b"user::rw-,user:bob:r--:1000,group::r--,group:staff:rw-:50,mask::rw-,other::r--",
            &none,
        )
        .unwrap();
        assert_eq!(star, bin);
    }

    #[test]
    fn names_resolve_through_lookup_or_fail() {
        let lookup = |g: bool, n: &str| (n == "bob" && !g).then_some(1000);
        assert!(text_to_xattr(b"user:bob:r--", &lookup).is_ok());
        assert!(text_to_xattr(b"user:nobody-here:r--", &lookup).is_err());
        assert!(text_to_xattr(b"bogus::r--", &lookup).is_err());
    }
}
