//! A user of the machine as its own /etc/passwd and /etc/group describe them (read after
//! entering its mount namespace), for `shell`'s login environment.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
    pub groups: Vec<u32>,
}

/// Finds `want` (a name or a uid) in passwd; its groups from group. Only users the machine
/// knows: a shell session is a login, not a bare identity.
pub fn lookup(passwd: &str, group: &str, want: &str) -> Option<User> {
    let f: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && (f[0] == want || f[2] == want))?;
    let mut u = User {
        name: f[0].into(),
        uid: f[2].parse().ok()?,
        gid: f[3].parse().ok()?,
        home: if f[5].is_empty() {
            "/".into()
        } else {
            f[5].into()
        },
        shell: if f[6].is_empty() {
            "/bin/sh".into()
        } else {
            f[6].into()
        },
        groups: Vec::new(),
    };
    u.groups = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|g| g.len() >= 4 && g[3].split(',').any(|m| m == u.name))
        .filter_map(|g| g[2].parse().ok())
        .chain([u.gid])
        .collect();
    u.groups.sort_unstable();
    u.groups.dedup();
    Some(u)
}

/// Looks `want` up in the current root's files.
pub fn resolve(want: &str) -> Option<User> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    lookup(&passwd, &group, want).or_else(|| {
        (want == "root" || want == "0").then(|| User {
            name: "root".into(),
            uid: 0,
            gid: 0,
            home: "/root".into(),
            shell: "/bin/sh".into(),
            groups: vec![0],
        })
    })
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
