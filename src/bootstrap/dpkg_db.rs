//! Every write rmach makes to dpkg's database itself (the rest is dpkg's own, run inside the
//! image): the empty database of the first stage, debootstrap's feigned dpkg, the access
//! method, the available file, and above all what `dpkg --unpack` records, written in-process:
//! the control files in `/var/lib/dpkg/info`, the file list, the status stanza (`install ok
//! unpacked`, new conffiles), and the trigger interests of the package's `triggers` file. Its
//! preinst is run by the second stage before this (see `second.rs`), and configuring stays
//! dpkg's.
//!
//! Written by hand because dpkg offers no way to record a package whose files are already in
//! place: `dpkg --unpack` decompresses the package again and replaces every file with a new
//! inode, and for each package forks dpkg-split, dpkg-deb and tar. Together that was most of a
//! bootstrap's time. What is recorded here is what dpkg records; the end-to-end test compares
//! the whole database with debootstrap's.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{deb, io_err, BootstrapError, Result};

/// The control member of a .deb: the control stanza and every other file (scripts, conffiles,
/// md5sums, triggers, templates ...) with its mode.
pub(crate) struct Control {
    pub(crate) package: String,
    pub(crate) version: String,
    pub(crate) architecture: String,
    multi_arch_same: bool,
    stanza: String,
    /// The control file as shipped, with its mode.
    control_file: (u32, Vec<u8>),
    files: BTreeMap<String, (u32, Vec<u8>)>,
}

impl Control {
    pub(crate) fn read(deb_path: &Path) -> Result<Control> {
        let bad = |reason: String| BootstrapError::BadDeb {
            path: deb_path.into(),
            reason,
        };
        let read_err = |source| BootstrapError::DebRead {
            path: deb_path.into(),
            source,
        };
        let mut archive = tar::Archive::new(deb::control_tar(deb_path)?);
        let mut files = BTreeMap::new();
        let mut stanza = None;
        let mut control_file = (0o644, Vec::new());
        for entry in archive.entries().map_err(read_err)? {
            let mut entry = entry.map_err(read_err)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry.path().map_err(read_err)?;
            let name = path.to_string_lossy().trim_start_matches("./").to_string();
            if name.is_empty() || name.contains('/') {
                return Err(bad(format!("control member {name:?} is not a plain name")));
            }
            let mode = entry.header().mode().map_err(read_err)? & 0o7777;
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(read_err)?;
            if name == "control" {
                let text = String::from_utf8(data.clone())
                    .map_err(|_| bad("the control file is not UTF-8".into()))?;
                stanza = Some(text.trim_end().to_string());
                control_file = (mode, data);
            } else {
                files.insert(name, (mode, data));
            }
        }
        let stanza = stanza.ok_or_else(|| bad("no control file".into()))?;
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let package = field("Package");
        if package.is_empty() {
            return Err(bad("the control file names no package".into()));
        }
        Ok(Control {
            version: field("Version"),
            architecture: field("Architecture"),
            multi_arch_same: field("Multi-Arch") == "same",
            package,
            stanza,
            control_file,
            files,
        })
    }

    /// The name of its files in dpkg's info directory: `pkg:arch` for Multi-Arch: same.
    pub(crate) fn info_name(&self) -> String {
        if self.multi_arch_same {
            format!("{}:{}", self.package, self.architecture)
        } else {
            self.package.clone()
        }
    }

    pub(crate) fn file(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(|(_, data)| data.as_slice())
    }

    /// The control files dpkg keeps in its info directory, with their modes.
    pub(crate) fn files(&self) -> impl Iterator<Item = (&str, u32, &[u8])> {
        self.files
            .iter()
            .map(|(n, (mode, data))| (n.as_str(), *mode, data.as_slice()))
    }

    /// The whole control member as dpkg unpacks it to `tmp.ci` for the preinst: the files
    /// above and `control`, where debconf reads which package the preinst belongs to.
    pub(crate) fn control_member(&self) -> impl Iterator<Item = (&str, u32, &[u8])> {
        let (mode, data) = &self.control_file;
        self.files()
            .chain(std::iter::once(("control", *mode, data.as_slice())))
    }

    /// Conffile paths (absolute); `remove-on-upgrade` ones are not shipped and left out.
    pub(crate) fn conffiles(&self) -> Vec<String> {
        self.conffile_entries()
            .into_iter()
            .filter(|(_, remove_on_upgrade)| !remove_on_upgrade)
            .map(|(path, _)| path)
            .collect()
    }

    /// Every entry of the conffiles file in its order, with whether it is `remove-on-upgrade`
    /// (dpkg lists those in the status too).
    fn conffile_entries(&self) -> Vec<(String, bool)> {
        let text = String::from_utf8_lossy(self.file("conffiles").unwrap_or_default());
        text.lines()
            .filter_map(|l| {
                let path = l.split_whitespace().next_back()?;
                let flag = l.trim_start().starts_with("remove-on-upgrade");
                path.starts_with('/').then(|| (path.to_string(), flag))
            })
            .collect()
    }

    /// The directives of its `triggers` file: (directive, trigger name).
    pub(crate) fn triggers(&self) -> Vec<(String, String)> {
        let text = String::from_utf8_lossy(self.file("triggers").unwrap_or_default());
        text.lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                Some((words.next()?.to_string(), words.next()?.to_string()))
            })
            .collect()
    }
}

/// One entry of dpkg's diversions file.
pub(crate) struct Diversion {
    pub(crate) from: String,
    pub(crate) to: String,
    /// The diverting package (`:` for a local diversion).
    pub(crate) package: String,
}

/// dpkg's diversions (`diversions`: three lines per entry), none when the file is absent.
pub(crate) fn diversions(admin: &Path) -> Result<Vec<Diversion>> {
    let path = admin.join("diversions");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(BootstrapError::Io { path, source }),
    };
    let lines: Vec<&str> = text.lines().collect();
    Ok(lines
        .chunks_exact(3)
        .map(|c| Diversion {
            from: c[0].to_string(),
            to: c[1].to_string(),
            package: c[2].to_string(),
        })
        .collect())
}

/// The empty database debootstrap's first stage leaves: `status` and `available`.
pub(crate) fn create_empty(admin: &Path) -> Result<()> {
    fs::create_dir_all(admin).map_err(io_err(admin))?;
    for name in ["status", "available"] {
        let path = admin.join(name);
        fs::write(&path, "").map_err(io_err(&path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).map_err(io_err(&path))?;
    }
    Ok(())
}

/// debootstrap's `x_feign_install`: `package` looks installed (dpkg must, to install itself).
pub(crate) fn feign_installed(admin: &Path, package: &str, version: &str) -> Result<()> {
    let status = admin.join("status");
    fs::write(
        &status,
        format!("Package: {package}\nVersion: {version}\nMaintainer: unknown\nStatus: install ok installed\n"),
    )
    .map_err(io_err(&status))?;
    let info = admin.join("info");
    fs::create_dir_all(&info).map_err(io_err(&info))?;
    let list = info.join(format!("{package}.list"));
    fs::write(&list, "").map_err(io_err(&list))
}

/// dselect's access method (`cmethopt`), as debootstrap's `setup_dselect_method` sets it.
pub(crate) fn set_access_method(admin: &Path, method: &str) -> Result<()> {
    let path = admin.join("cmethopt");
    fs::write(&path, format!("{method} {method}\n")).map_err(io_err(&path))
}

/// The available file: the stanzas of the whole set, in the plan's order.
pub(crate) fn write_available(admin: &Path, stanzas: &str) -> Result<()> {
    let path = admin.join("available");
    fs::write(&path, stanzas).map_err(io_err(&path))
}

/// Records each of `packages` (a control member and the member paths of its data, relative,
/// in archive order) as unpacked in the dpkg database under `admin` (the image's
/// `/var/lib/dpkg`), as `dpkg --unpack` of them in order would: the status file is read and
/// written once for all of them.
pub(crate) fn record(admin: &Path, packages: &[(&Control, &[Vec<u8>])]) -> Result<()> {
    let Some((first, _)) = packages.first() else {
        return Ok(());
    };
    let updates = admin.join("updates");
    if fs::read_dir(&updates)
        .map(|mut d| d.any(|e| e.is_ok_and(|e| e.file_name() != "tmp.i")))
        .unwrap_or(false)
    {
        return Err(BootstrapError::Stage {
            step: format!("recording {}", first.package),
            reason: "dpkg's journal in /var/lib/dpkg/updates is not empty".into(),
        });
    }
    let status_path = admin.join("status");
    let mut stanzas =
        parse_status(&fs::read_to_string(&status_path).map_err(io_err(&status_path))?);
    let triggers = admin.join("triggers");
    fs::create_dir_all(&triggers).map_err(io_err(&triggers))?;
    let mut interests = Interests::new(admin);
    for (control, paths) in packages {
        let stanza = status_stanza(&stanzas, control);
        write_info(&admin.join("info"), control, paths)?;
        // A stanza for the package already there (debootstrap's feigned dpkg, a core package
        // unpacked again) is replaced.
        stanzas.retain(|f| !is_stanza_of(f, control));
        stanzas.push(stanza);
        interests.add(control);
    }
    // Written as dpkg writes it, since dpkg keeps it as status-old at its next checkpoint.
    fs::write(&status_path, status_file(stanzas)).map_err(io_err(&status_path))?;
    interests.write_changed(&triggers)
}

/// Prepares in `dir` what [`record`] would write, for a script inside the image to move into
/// the database between the package's preinst and its configuring, so that several packages
/// are unpacked and configured one after the other in one step: `dir/info/` holds the files
/// for dpkg's info directory, `dir/update` the status stanza as an entry of dpkg's journal
/// (`updates/NNNN`, which the next dpkg run reads over the status file and folds into it), and
/// `dir/triggers/` the trigger interest files that changed, with the interests of the
/// packages prepared before. The status stanza is made from the status file as it is now, so
/// the packages prepared together must be different packages.
pub(crate) fn prepare(
    admin: &Path,
    control: &Control,
    paths: &[Vec<u8>],
    dir: &Path,
    interests: &mut Interests,
) -> Result<()> {
    let status_path = admin.join("status");
    let status = fs::read_to_string(&status_path).map_err(io_err(&status_path))?;
    let stanza = status_stanza(&parse_status(&status), control);
    write_info(&dir.join("info"), control, paths)?;
    let update = dir.join("update");
    fs::write(&update, status_file(vec![stanza])).map_err(io_err(&update))?;
    interests.add(control);
    interests.write_changed(&dir.join("triggers"))
}

/// The control files and the file list, into `info` (dpkg's info directory or a staging one).
fn write_info(info: &Path, control: &Control, paths: &[Vec<u8>]) -> Result<()> {
    fs::create_dir_all(info).map_err(io_err(info))?;
    let name = control.info_name();
    for (member, mode, data) in control.files() {
        let path = info.join(format!("{name}.{member}"));
        fs::write(&path, data).map_err(io_err(&path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(io_err(&path))?;
    }
    let mut list = Vec::new();
    for path in paths {
        list.push(b'/');
        list.extend_from_slice(if path.is_empty() { b"." } else { path });
        list.push(b'\n');
    }
    let list_path = info.join(format!("{name}.list"));
    fs::write(&list_path, list).map_err(io_err(&list_path))
}

/// The package's status stanza as `dpkg --unpack` leaves it: the control fields, the state,
/// and new conffiles without checksums (dpkg computes them when it installs the conffiles at
/// configure time); over a configured version in `status`, that version as Config-Version and
/// the checksums dpkg knew.
fn status_stanza(status: &[Vec<(String, String)>], control: &Control) -> Vec<(String, String)> {
    let previous = status.iter().find(|f| is_stanza_of(f, control));
    let mut new = parse_stanza(&control.stanza);
    new.push(("Status".into(), "install ok unpacked".into()));
    // Unpacked over a configured version (debootstrap unpacks the core packages again with
    // the rest of the required set): dpkg keeps that version as Config-Version, for the
    // postinst's `configure VERSION`, and the checksums it knew for the conffiles.
    let previous = previous.filter(|f| field(f, "Status") == Some("install ok installed"));
    let mut known = BTreeMap::new();
    if let Some(old) = &previous {
        if let Some(version) = field(old, "Version") {
            new.push(("Config-Version".into(), version.to_string()));
        }
        for line in field(old, "Conffiles").unwrap_or("").lines() {
            let mut words = line.split_whitespace();
            if let (Some(path), Some(sum)) = (words.next(), words.next()) {
                known.insert(path.to_string(), sum.to_string());
            }
        }
    }
    // In the conffiles file's order; `remove-on-upgrade` ones stay `newconffile` with that
    // flag, as dpkg keeps them.
    let conffiles = control.conffile_entries();
    if !conffiles.is_empty() {
        let lines: String = conffiles
            .iter()
            .map(|(c, remove_on_upgrade)| {
                let sum = known.get(c).map_or("newconffile", String::as_str);
                let flag = if *remove_on_upgrade {
                    " remove-on-upgrade"
                } else {
                    ""
                };
                format!("\n {c} {sum}{flag}")
            })
            .collect();
        new.push(("Conffiles".into(), lines));
    }
    new
}

/// dpkg's trigger interests as they stand with the packages recorded or prepared so far: file
/// triggers in `triggers/File` ("path package[/noawait]"), named ones in `triggers/NAME`
/// ("package[/noawait]"), each file read from the database the first time it is needed.
pub(crate) struct Interests {
    dir: PathBuf,
    files: BTreeMap<String, String>,
    changed: BTreeSet<String>,
}

impl Interests {
    /// The interests of the database under `admin`.
    pub(crate) fn new(admin: &Path) -> Interests {
        Interests {
            dir: admin.join("triggers"),
            files: BTreeMap::new(),
            changed: BTreeSet::new(),
        }
    }

    fn file(&mut self, name: &str) -> &mut String {
        let dir = &self.dir;
        self.files
            .entry(name.to_string())
            .or_insert_with(|| fs::read_to_string(dir.join(name)).unwrap_or_default())
    }

    /// The file triggers' interest paths ("path package" lines).
    pub(crate) fn file_triggers(&mut self) -> &str {
        self.file("File")
    }

    /// Adds the interests of `control`'s `triggers` file, naming a Multi-Arch: same package
    /// `pkg:arch` as dpkg does.
    fn add(&mut self, control: &Control) {
        let name = control.info_name();
        for (directive, trigger) in control.triggers() {
            let suffix = match directive.as_str() {
                "interest" | "interest-await" => "",
                "interest-noawait" => "/noawait",
                _ => continue,
            };
            let (file, line) = if trigger.starts_with('/') {
                ("File".to_string(), format!("{trigger} {name}{suffix}"))
            } else {
                (trigger, format!("{name}{suffix}"))
            };
            let text = self.file(&file);
            if !text.lines().any(|l| l == line) {
                text.push_str(&line);
                text.push('\n');
                self.changed.insert(file);
            }
        }
    }

    /// Writes the files changed since the last call into `dir`.
    fn write_changed(&mut self, dir: &Path) -> Result<()> {
        for name in std::mem::take(&mut self.changed) {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
            let path = dir.join(&name);
            fs::write(&path, &self.files[&name]).map_err(io_err(&path))?;
        }
        Ok(())
    }
}

/// Whether `fields` is the status stanza of the package `control` describes (for Multi-Arch:
/// same, of its architecture).
fn is_stanza_of(fields: &[(String, String)], control: &Control) -> bool {
    field(fields, "Package") == Some(control.package.as_str())
        && (!control.multi_arch_same
            || field(fields, "Architecture") == Some(control.architecture.as_str()))
}

/// For each of `controls`, the version of its package (for Multi-Arch: same, of its
/// architecture) that dpkg's database under `admin` has configured (`install ok installed`),
/// if any: unpacking it again is then dpkg's upgrade over that version.
pub(crate) fn installed_versions(
    admin: &Path,
    controls: &[Control],
) -> Result<Vec<Option<String>>> {
    let status_path = admin.join("status");
    let status = parse_status(&fs::read_to_string(&status_path).map_err(io_err(&status_path))?);
    Ok(controls
        .iter()
        .map(|control| {
            status
                .iter()
                .find(|f| is_stanza_of(f, control))
                .filter(|f| field(f, "Status") == Some("install ok installed"))
                .and_then(|f| field(f, "Version").map(String::from))
        })
        .collect())
}

/// The stanzas of a status file.
fn parse_status(text: &str) -> Vec<Vec<(String, String)>> {
    text.split("\n\n")
        .map(parse_stanza)
        .filter(|f| !f.is_empty())
        .collect()
}

/// A deb822 stanza as (field, value) pairs; a value keeps its continuation lines ("\n ...")
/// and, as dpkg does, loses white space only at its very start and end.
fn parse_stanza(text: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push('\n');
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.to_string(), value.trim_start().to_string()));
        }
    }
    for (_, value) in &mut fields {
        value.truncate(value.trim_end().len());
    }
    fields
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The fields dpkg knows, in the order it writes them; others follow in their own order.
const DPKG_FIELD_ORDER: &[&str] = &[
    "Package",
    "Essential",
    "Protected",
    "Status",
    "Priority",
    "Section",
    "Installed-Size",
    "Origin",
    "Maintainer",
    "Bugs",
    "Architecture",
    "Multi-Arch",
    "Source",
    "Version",
    "Config-Version",
    "Replaces",
    "Provides",
    "Depends",
    "Pre-Depends",
    "Recommends",
    "Suggests",
    "Breaks",
    "Conflicts",
    "Enhances",
    "Conffiles",
    "Filename",
    "Size",
    "MD5sum",
    "MSDOS-Filename",
    "Description",
    "Triggers-Pending",
    "Triggers-Awaited",
];

/// The status file as dpkg writes it: packages by name, then architecture; known fields in
/// dpkg's order; a blank line after each stanza.
fn status_file(mut stanzas: Vec<Vec<(String, String)>>) -> String {
    stanzas.sort_by(|a, b| {
        let key = |f: &[(String, String)]| {
            (
                field(f, "Package").unwrap_or("").to_string(),
                field(f, "Architecture").unwrap_or("").to_string(),
            )
        };
        key(a).cmp(&key(b))
    });
    let mut out = String::new();
    for mut fields in stanzas {
        let rank = |name: &str| {
            DPKG_FIELD_ORDER
                .iter()
                .position(|k| k.eq_ignore_ascii_case(name))
                .unwrap_or(DPKG_FIELD_ORDER.len())
        };
        // A stable sort keeps the other fields in the order they came.
        fields.sort_by_key(|(name, _)| rank(name));
        for (name, value) in fields {
            if value.starts_with('\n') || value.is_empty() {
                out.push_str(&format!("{name}:{value}\n"));
            } else {
                out.push_str(&format!("{name}: {value}\n"));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_file_is_written_in_dpkgs_order() {
        let stanzas = vec![
            parse_stanza("Package: zlib1g\nVersion: 1\nStatus: install ok installed\nHomepage: h\nDescription: z\n more\nPriority: optional"),
            parse_stanza("Package: apt\nStatus: install ok unpacked\nConffiles:\n /etc/a newconffile\nArchitecture: amd64"),
        ];
        assert_eq!(
            status_file(stanzas),
            "Package: apt\nStatus: install ok unpacked\nArchitecture: amd64\nConffiles:\n /etc/a newconffile\n\n\
             Package: zlib1g\nStatus: install ok installed\nPriority: optional\nVersion: 1\nDescription: z\n more\nHomepage: h\n\n"
        );
    }
}
