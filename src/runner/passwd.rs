//! Resolving `--user` inside the machine, from its own /etc/passwd and /etc/group.

use super::channel::{SetupError, Step};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) home: String,
    pub(crate) shell: String,
    pub(crate) groups: Vec<u32>,
}

/// Finds `user` (a name or a number; None: root) in the passwd text.
pub(crate) fn lookup(passwd: &str, group: &str, user: Option<&str>) -> Option<User> {
    let want = user.unwrap_or("root");
    let u = match entry(passwd, want) {
        Some(u) => u,
        None if user.is_none() || want == "0" => root(),
        None => {
            // A bare number not in passwd is still a valid identity, as with nspawn.
            let uid: u32 = want.parse().ok()?;
            User {
                name: want.into(),
                uid,
                gid: uid,
                home: "/".into(),
                shell: "/bin/sh".into(),
                groups: vec![],
            }
        }
    };
    Some(with_groups(u, group))
}

/// The user `want` (a name or a uid) as passwd lists it, home and shell as written (possibly
/// empty), no groups yet; None for a user passwd does not list.
pub(crate) fn entry(passwd: &str, want: &str) -> Option<User> {
    let f = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && (f[0] == want || f[2] == want))?;
    Some(User {
        name: f[0].into(),
        uid: f[2].parse().ok()?,
        gid: f[3].parse().ok()?,
        home: f[5].into(),
        shell: f[6].into(),
        groups: Vec::new(),
    })
}

/// The user's groups: those the group text lists it in, and its own.
pub(crate) fn with_groups(mut u: User, group: &str) -> User {
    u.groups = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4 && f[3].split(',').any(|m| m == u.name))
        .filter_map(|f| f[2].parse().ok())
        .collect();
    u.groups.push(u.gid);
    u.groups.sort_unstable();
    u.groups.dedup();
    u
}

pub(crate) fn root() -> User {
    User {
        name: "root".into(),
        uid: 0,
        gid: 0,
        home: "/root".into(),
        shell: "/bin/sh".into(),
        groups: vec![0],
    }
}

/// Resolves in the current root (the machine's, after pivot_root).
pub(crate) fn resolve(user: Option<&str>) -> Step<User> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let mut u = lookup(&passwd, &group, user).ok_or_else(|| {
        let what = format!(
            "no user {} in the machine's /etc/passwd",
            user.unwrap_or("root")
        );
        SetupError::new(what, std::io::ErrorKind::NotFound)
    })?;
    if !std::path::Path::new(&u.shell).exists() {
        u.shell = "/bin/sh".into();
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nsudo:x:27:alice,bob\nalice:x:1000:\n";

    #[test]
    fn lookups() {
        let a = lookup(PASSWD, GROUP, Some("alice")).unwrap();
        assert_eq!(
            (a.uid, a.gid, a.groups.clone()),
            (1000, 1000, vec![27, 1000])
        );
        assert_eq!(lookup(PASSWD, GROUP, Some("1000")).unwrap().name, "alice");
        assert_eq!(lookup(PASSWD, GROUP, None).unwrap().shell, "/bin/bash");
        assert_eq!(lookup("", "", None).unwrap().uid, 0);
        assert_eq!(lookup(PASSWD, GROUP, Some("4242")).unwrap().uid, 4242);
        assert!(lookup(PASSWD, GROUP, Some("mallory")).is_none());
    }
}
