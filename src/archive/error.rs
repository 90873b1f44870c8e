//! The archive module's one error type.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the input is empty: give a tar archive (uncompressed, gzip, zstd, xz or bzip2)")]
    Empty,
    #[error("cannot read the archive at byte {offset} (corrupt or truncated input)")]
    Read {
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("the archive is corrupt at byte {offset}: {fault}")]
    Corrupt { offset: u64, fault: Fault },
    /// A PAX header or an ACL in it that cannot be read.
    #[error("the archive is corrupt at byte {offset}")]
    Malformed {
        offset: u64,
        #[source]
        what: Malformed,
    },
    #[error("the archive is truncated at byte {offset}: {cut}")]
    Truncated { offset: u64, cut: Cut },
    #[error("refusing archive member {member:?} at byte {offset}: {refusal}")]
    Unsafe {
        member: String,
        offset: u64,
        refusal: Refusal,
    },
    #[error("cannot {op} {path:?}")]
    Fs {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Restoring one member failed; `member` is its path in the tree (never the staging path,
    /// which means nothing to the user and is gone after the failure).
    #[error("cannot {op} {member}")]
    Member {
        op: &'static str,
        member: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the archive")]
    Write {
        #[source]
        source: io::Error,
    },
    #[error("the compression stream failed")]
    Codec {
        #[source]
        source: io::Error,
    },
}

/// What is wrong with the archive's framing or fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("this is not a tar archive (its first header's checksum is wrong)")]
    NotTar,
    #[error("a header's checksum is wrong")]
    BadChecksum,
    #[error("the {0} field is negative")]
    FieldNegative(&'static str),
    #[error("the {0} field overflows")]
    FieldOverflows(&'static str),
    #[error("the {0} field is not a number")]
    FieldNotNumber(&'static str),
    #[error("the {field} field {text:?} is not octal")]
    FieldNotOctal { field: &'static str, text: String },
    #[error("member {member} has unsupported type {typ:?}")]
    UnsupportedType { member: String, typ: char },
    #[error("PAX record {0} has an invalid value")]
    PaxValue(String),
    #[error("an extension header claims {0} bytes")]
    ExtensionTooBig(u64),
    #[error("extension headers exceed {0} bytes")]
    ExtensionsExceed(u64),
    #[error("an extension header describes no member")]
    OrphanExtension,
    #[error("a member's size overflows")]
    SizeOverflows,
    #[error("data after the end-of-archive marker is not a tar header")]
    GarbageAfterEnd,
    #[error("{0} runs past the member's data")]
    PastMemberData(&'static str),
    #[error("the sparse map lists more than {max} segments")]
    TooManySegments { max: usize },
    #[error("the sparse map is corrupt: {0}")]
    SparseMap(&'static str),
    #[error("the sparse map has segments out of order or past the file's end")]
    SparseOrder,
    #[error("the sparse map describes {described} bytes but the member stores {stored}")]
    SparseTotal { described: u64, stored: u64 },
    #[error("owner {uid}:{gid} is out of range")]
    OwnerOutOfRange { uid: u64, gid: u64 },
}

/// Why a member is refused outright; `part` says which name ("path", "hard-link target").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("its {part} is empty")]
    Empty { part: &'static str },
    #[error("its {part} is absolute")]
    Absolute { part: &'static str },
    #[error("its {part} contains a NUL byte")]
    Nul { part: &'static str },
    #[error("its {part} contains '..'")]
    DotDot { part: &'static str },
    #[error("it names the root directory but is not a directory")]
    RootNotDir,
    #[error("its hard-link target is the root directory")]
    LinkToRoot,
}

/// Where the input ended too early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Nothing but (part of) a first header.
    NoHeader,
    /// After a member, with no zero blocks.
    NoEndMarker,
    /// Inside the named part of the archive ("a header", "a member's data").
    Inside(&'static str),
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cut::NoHeader => f.write_str("the input holds no tar header"),
            Cut::NoEndMarker => f.write_str("the end-of-archive marker is missing"),
            Cut::Inside(what) => write!(f, "the input ends inside {what}"),
        }
    }
}

/// What is wrong in a PAX header's records or in an ACL's text.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    #[error("a PAX record has no length prefix")]
    PaxNoLength,
    #[error("a PAX record's length is not a number")]
    PaxLengthNotNumber,
    #[error("a PAX record's length {0} runs past the header")]
    PaxLengthPastEnd(usize),
    #[error("a PAX record does not end with a newline where its length says")]
    PaxNoNewline,
    #[error("a PAX record has no '='")]
    PaxNoEquals,
    #[error("an ACL is not valid text")]
    AclNotText,
    #[error("ACL entry {0:?} is not tag:qualifier:perms")]
    AclShape(String),
    #[error("ACL entry {0:?} has an unknown tag")]
    AclTag(String),
    #[error("ACL entry {entry:?} names an unknown {kind}")]
    AclUnknownId { entry: String, kind: &'static str },
    #[error("ACL entry {0:?} has bad permissions")]
    AclPerms(String),
}

impl ArchiveError {
    pub(crate) fn fs(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: impl Into<io::Error>,
    ) -> Self {
        ArchiveError::Fs {
            op,
            path: path.into(),
            source: source.into(),
        }
    }

    /// True when the failure came from a full disk or quota, so callers can say so plainly.
    pub(crate) fn is_no_space(&self) -> bool {
        let src = match self {
            ArchiveError::Fs { source, .. }
            | ArchiveError::Member { source, .. }
            | ArchiveError::Write { source } => source,
            _ => return false,
        };
        matches!(src.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
    }
}

/// Bytes from an archive (a name, a PAX keyword) as printable text: quoted, with control
/// characters (NUL, newline, escape sequences) escaped, so no message carries them raw.
pub(crate) fn shown(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}
