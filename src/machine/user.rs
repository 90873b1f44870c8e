//! A user of the machine as its own /etc/passwd and /etc/group describe them (read after
//! entering its mount namespace), for `shell`'s login environment; the files are parsed as
//! the runner parses them for `run --user`.

use crate::runner::passwd;
pub(crate) use crate::runner::passwd::User;

/// Finds `want` (a name or a uid) in passwd; its groups from group. Only users the machine
/// knows: a shell session is a login, not a bare identity. An empty home is `/`, an empty
/// shell `/bin/sh`, as login(1) takes them.
pub(crate) fn lookup(passwd: &str, group: &str, want: &str) -> Option<User> {
    let mut u = passwd::with_groups(passwd::entry(passwd, want)?, group);
    if u.home.is_empty() {
        u.home = "/".into();
    }
    if u.shell.is_empty() {
        u.shell = "/bin/sh".into();
    }
    Some(u)
}

/// Looks `want` up in the current root's files.
pub(crate) fn resolve(want: &str) -> Option<User> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    lookup(&passwd, &group, want).or_else(|| (want == "root" || want == "0").then(passwd::root))
}

#[cfg(test)]
mod tests {
    #[test]
    fn lookups() {
        let p = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:\n";
        let g = "sudo:x:27:alice,bob\nalice:x:1000:\n";
        let a = super::lookup(p, g, "alice").unwrap();
        assert_eq!(
            (a.uid, a.groups.clone(), a.shell.as_str()),
            (1000, vec![27, 1000], "/bin/sh")
        );
        assert_eq!(super::lookup(p, g, "0").unwrap().name, "root");
        assert!(super::lookup(p, g, "4242").is_none());
    }
}
