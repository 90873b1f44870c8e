//! The second stage, in debootstrap's order: the core packages one by one (base-passwd,
//! base-files, dpkg, libc6, perl-base, mawk, debconf), the rest of the required set unpacked and
//! configured, then the base set through dpkg's pre-dependency loop, all inside the image with
//! services blocked (policy-rc.d, a fake start-stop-daemon) and restored afterwards.
//!
//! Each unpack is rmach's, as `dpkg --unpack` of a new package does it: the preinsts run inside
//! the image (`install`, from a directory holding the package's control files, with dpkg's
//! environment), then the files go in place — the first stage's for the required set, a
//! parallel extraction for the base set, new conffiles as `NAME.dpkg-new` as dpkg leaves them —
//! and [`dpkg_db`] records each package as unpacked; the file triggers the new paths match and
//! the packages' `activate` directives are activated with `dpkg-trigger`. Configuring is dpkg's.
//! Why not let dpkg unpack the real .debs, as debootstrap does: it decompresses every package a
//! second time, replaces every file the first stage wrote with a new inode and forks three
//! programs per package; that was most of the bootstrap's time (docs/benchmarks.md).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use std::collections::HashMap;

use super::dpkg_db::{self, Control};
use super::extract::{extract_packages, FileLists};
use super::plan::{core_packages, deb_of, Plan};
use super::resolve::resolve_deps;
use super::{io_err, BootstrapError, Event, Options, Progress, Result};

use super::paths::{
    self, CONTROL_MEMBERS, DB_ENTRIES, DPKG_ADMIN, DPKG_INFO, DPKG_TMP_CI, DPKG_TRIGGERS, ISCHROOT,
    LOG, POLICY_RC_D, PREDEP, SCRATCH, SELECTIONS, START_STOP_DAEMON,
};
use super::stage_runner::Outcome;

/// The second stage's state: the shell commands waiting to run inside the image and the file
/// lists of the packages whose files are on disk.
struct Stage<'a> {
    opts: &'a Options,
    plan: &'a Plan,
    target: &'a Path,
    progress: Progress<'a>,
    script: String,
    lists: FileLists,
}

impl Stage<'_> {
    fn cmd(&mut self, line: &str) {
        self.script.push_str(line);
        self.script.push('\n');
    }

    /// Runs the waiting commands in one go.
    fn flush(&mut self, step: &str) -> Result<()> {
        if self.script.is_empty() {
            return Ok(());
        }
        let script = std::mem::take(&mut self.script);
        let started = std::time::Instant::now();
        let result = in_target(self.opts, self.target, self.plan.epoch, step, &script);
        (self.progress)(Event::Note(format!(
            "  {step}: {:.1} s",
            started.elapsed().as_secs_f64()
        )));
        result
    }

    /// [`Self::flush`] of a long step (dpkg configuring a whole set) while the files written
    /// so far are written back to disk beside it: the store syncs the image before it commits
    /// it, and most of the image is on disk by now, so that sync, which waits for all of it,
    /// is left little to write. (dpkg is busy with one core; the writeback uses the other.)
    fn flush_writing_back(&mut self, step: &str) -> Result<()> {
        let target = self.target.to_path_buf();
        let writeback = std::thread::spawn(move || {
            // Errors are the commit's syncfs to report; this one only starts the work early.
            if let Ok(dir) = fs::File::open(&target) {
                let _ = rustix::fs::syncfs(&dir);
            }
        });
        let result = self.flush(step);
        // After a failure (Ctrl-C) the error goes out at once; the sync ends with the process.
        if result.is_ok() {
            let _ = writeback.join();
        }
        result
    }

    /// `dpkg --unpack` of `names`, which are not installed: their preinsts, their files
    /// (already there for the required set), their records in dpkg's database, and the
    /// triggers the unpack activates. The packages are left unpacked for a `dpkg --configure`.
    fn unpack(&mut self, step: &str, names: &[String]) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let controls = names
            .iter()
            .map(|n| Control::read(&deb_of(self.plan, n)))
            .collect::<Result<Vec<_>>>()?;
        let admin = paths::rel(self.target, DPKG_ADMIN);
        self.queue_scripts(&controls)?;
        self.flush(step)?;
        let _ = fs::remove_dir_all(paths::rel(self.target, CONTROL_MEMBERS));

        let extracted: Vec<String> = names
            .iter()
            .filter(|n| !self.lists.contains_key(*n))
            .cloned()
            .collect();
        self.queue_conffile_copies(names, &controls, &extracted);
        // dpkg's diversions apply to what it unpacks: a path another package diverted goes to
        // the diverted name (noble's base-files diverts /bin to /bin.usr-is-merged, so a
        // package shipping the directory entry ./bin creates that).
        let diversions = dpkg_db::diversions(&paths::rel(self.target, DPKG_ADMIN))?;
        let divert: HashMap<String, HashMap<Vec<u8>, Vec<u8>>> = names
            .iter()
            .zip(&controls)
            .filter(|(name, _)| extracted.contains(name))
            .map(|(name, control)| {
                let mut map: HashMap<Vec<u8>, Vec<u8>> = diversions
                    .iter()
                    .filter(|d| d.package != control.package)
                    .map(|d| {
                        (
                            d.from.trim_start_matches('/').as_bytes().to_vec(),
                            d.to.trim_start_matches('/').as_bytes().to_vec(),
                        )
                    })
                    .collect();
                map.extend(control.conffiles().into_iter().map(|c| {
                    let rel = c.trim_start_matches('/').as_bytes().to_vec();
                    let mut new = rel.clone();
                    new.extend_from_slice(b".dpkg-new");
                    (rel, new)
                }));
                (name.clone(), map)
            })
            .collect();
        if !extracted.is_empty() {
            let started = std::time::Instant::now();
            let lists = extract_packages(self.plan, &extracted, self.target, &divert)?;
            (self.progress)(Event::Note(format!(
                "  extracting {} packages: {:.1} s",
                extracted.len(),
                started.elapsed().as_secs_f64()
            )));
            self.lists.extend(lists);
        }
        let packages: Vec<_> = names
            .iter()
            .zip(&controls)
            .map(|(name, control)| (control, self.lists[name].as_slice()))
            .collect();
        dpkg_db::record(&admin, &packages)?;
        for control in &controls {
            self.queue_activations(control);
        }
        let interests = dpkg_db::Interests::new(&admin).file_triggers().to_string();
        self.activate_file_triggers(names, &interests);
        Ok(())
    }

    /// debootstrap's core packages, each unpacked as [`Self::unpack`] does and then configured,
    /// one after the other, all in one step: what rmach records in dpkg's database between a
    /// package's preinst and its configuring is prepared on the host beforehand
    /// ([`dpkg_db::prepare`]) and moved into the database inside the step, the status stanza
    /// as an entry of dpkg's own journal (`updates/`), which the `dpkg --configure` that
    /// follows reads as if its own unpack had written it. A start of the runner per package
    /// fewer; dpkg and the maintainer scripts see what they saw with a step each.
    fn install_core(&mut self, core: &[&str]) -> Result<()> {
        let admin = paths::rel(self.target, DPKG_ADMIN);
        let entries = paths::rel(self.target, DB_ENTRIES);
        // Made as dpkg makes it on its first run, for the first journal entry to go in.
        let updates = admin.join("updates");
        fs::create_dir_all(&updates).map_err(io_err(&updates))?;
        fs::set_permissions(&updates, fs::Permissions::from_mode(0o755))
            .map_err(io_err(&updates))?;
        let mut interests = dpkg_db::Interests::new(&admin);
        for name in core {
            self.cmd(&format!("echo '+ installing {name}'"));
            if *name == "mawk" {
                self.cmd("rm /usr/bin/awk");
            }
            let names = [name.to_string()];
            let controls = [Control::read(&deb_of(self.plan, name))?];
            self.queue_scripts(&controls)?;
            self.queue_conffile_copies(&names, &controls, &[]);
            let dir = entries.join(name);
            dpkg_db::prepare(
                &admin,
                &controls[0],
                &self.lists[*name],
                &dir,
                &mut interests,
            )?;
            self.cmd(&format!(
                "mv {DB_ENTRIES}/{name}/info/* {DPKG_INFO}/\n\
                 if [ -d {DB_ENTRIES}/{name}/triggers ]; then mv {DB_ENTRIES}/{name}/triggers/* {DPKG_TRIGGERS}/; fi\n\
                 if [ -e {DPKG_ADMIN}/updates/0000 ]; then echo \"dpkg's journal in {DPKG_ADMIN}/updates is not empty\" >&2; exit 1; fi\n\
                 mv {DB_ENTRIES}/{name}/update {DPKG_ADMIN}/updates/0000"
            ));
            self.queue_activations(&controls[0]);
            let file_triggers = interests.file_triggers().to_string();
            self.activate_file_triggers(&names, &file_triggers);
            self.cmd(&format!("yes '' | dpkg --force-depends --configure {name}"));
            if *name == "dpkg" {
                self.cmd("[ -e /etc/localtime ] || ln -sf /usr/share/zoneinfo/UTC /etc/localtime");
            }
        }
        self.flush("installing the core packages")?;
        let _ = fs::remove_dir_all(paths::rel(self.target, CONTROL_MEMBERS));
        fs::remove_dir_all(&entries).map_err(io_err(&entries))
    }

    /// What `dpkg --unpack` runs before the files go in place, queued for each of `controls`:
    /// for a package configured already (the core packages, unpacked again with the rest of
    /// the required set as debootstrap does) dpkg's upgrade over itself, the old prerm and
    /// postrm around the new preinst, all with `upgrade VERSION`; the preinst with dpkg's
    /// environment from its control member, staged for it on the host.
    fn queue_scripts(&mut self, controls: &[Control]) -> Result<()> {
        let ci = paths::rel(self.target, CONTROL_MEMBERS);
        let admin = paths::rel(self.target, DPKG_ADMIN);
        let dpkg_version = self.plan.pkgs["dpkg"].version.clone();
        let installed = dpkg_db::installed_versions(&admin, controls)?;
        for (control, old) in controls.iter().zip(installed) {
            let env = |script: &str| {
                format!(
                    "DPKG_MAINTSCRIPT_PACKAGE={package} DPKG_MAINTSCRIPT_PACKAGE_REFCOUNT=1 \
                     DPKG_MAINTSCRIPT_ARCH={arch} DPKG_MAINTSCRIPT_NAME={script} \
                     DPKG_RUNNING_VERSION={dpkg_version} DPKG_ADMINDIR={DPKG_ADMIN} DPKG_ROOT=",
                    package = control.package,
                    arch = control.architecture,
                )
            };
            let old_script = |script: &str| {
                let path = format!("{DPKG_INFO}/{}.{script}", control.info_name());
                format!(
                    "if [ -x {path} ]; then {} {path} upgrade {}; fi",
                    env(script),
                    shell_quote(&control.version)
                )
            };
            if old.is_some() {
                self.cmd(&old_script("prerm"));
            }
            if control.file("preinst").is_some() {
                // dpkg runs a new preinst from DPKG_TMP_CI (tmp.ci), where it unpacked the
                // control member: debconf reads the package's name from tmp.ci/control and
                // its templates beside the script. Each package's member is staged and moved
                // there in turn.
                let dir = ci.join(&control.package);
                fs::create_dir_all(&dir).map_err(io_err(&dir))?;
                for (name, mode, data) in control.control_member() {
                    let path = dir.join(name);
                    fs::write(&path, data).map_err(io_err(&path))?;
                    fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                        .map_err(io_err(&path))?;
                }
                let args = match &old {
                    Some(version) => format!("upgrade {}", shell_quote(version)),
                    None => "install".to_string(),
                };
                self.cmd(&format!(
                    "rm -rf {DPKG_TMP_CI}; mv {CONTROL_MEMBERS}/{package} {DPKG_TMP_CI}\n\
                     {env} {DPKG_TMP_CI}/preinst {args}\n\
                     rm -rf {DPKG_TMP_CI}",
                    package = control.package,
                    env = env("preinst"),
                ));
            }
            if old.is_some() {
                self.cmd(&old_script("postrm"));
            }
        }
        Ok(())
    }

    /// Files already on disk (the required set, all of `names` but `extracted`): dpkg would
    /// have left each new conffile beside them as NAME.dpkg-new. Copied inside the image,
    /// where its paths resolve.
    fn queue_conffile_copies(
        &mut self,
        names: &[String],
        controls: &[Control],
        extracted: &[String],
    ) {
        for (name, control) in names.iter().zip(controls) {
            if extracted.contains(name) {
                continue;
            }
            for conffile in control.conffiles() {
                let path = shell_quote(&conffile);
                self.cmd(&format!(
                    "if [ -f {path} ] && [ ! -e {path}.dpkg-new ]; then cp -p {path} {path}.dpkg-new; fi"
                ));
            }
        }
    }

    /// The triggers the package's `activate` directives name, activated as its unpack does.
    fn queue_activations(&mut self, control: &Control) {
        for (directive, trigger) in control.triggers() {
            if directive.starts_with("activate") {
                self.cmd(&format!(
                    "dpkg-trigger --no-await {}",
                    shell_quote(&trigger)
                ));
            }
        }
    }

    /// What `dpkg --unpack` does for each file it writes: activate the file triggers whose
    /// interest path (in `interests`, dpkg's `triggers/File`) is that file or one of its
    /// directories. dpkg drops activations for packages not yet configured, as it would have.
    fn activate_file_triggers(&mut self, names: &[String], interests: &str) {
        let mut active = std::collections::BTreeSet::new();
        for interest in interests.lines().filter_map(|l| l.split(' ').next()) {
            let Some(dir) = interest.strip_prefix('/') else {
                continue;
            };
            let dir = dir.trim_end_matches('/').as_bytes();
            let hit = names.iter().flat_map(|n| &self.lists[n]).any(|p| {
                p.strip_prefix(dir)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
            });
            if hit {
                active.insert(interest.to_string());
            }
        }
        for interest in active {
            self.cmd(&format!("dpkg-trigger --no-await {interest}"));
        }
    }
}

/// `text` as one single-quoted shell word.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

pub(crate) fn run(
    opts: &Options,
    plan: &Plan,
    target: &Path,
    lists: FileLists,
    progress: Progress<'_>,
) -> Result<()> {
    super::stage_runner::prepare_run_and_tmp(target).map_err(io_err(target.join("run")))?;
    let ischroot = fake_ischroot(target)?;
    let mut stage = Stage {
        opts,
        plan,
        target,
        progress,
        script: String::new(),
        lists,
    };
    stage.cmd("/bin/true");
    stage.flush("checking the image runs")?;

    // debootstrap's x_feign_install dpkg: dpkg must look installed to install itself.
    let admin = paths::rel(target, DPKG_ADMIN);
    dpkg_db::feign_installed(&admin, "dpkg", &plan.pkgs["dpkg"].version)?;

    // The core packages, each installed (unpacked and configured) on its own.
    stage.cmd("/sbin/ldconfig\nln -sf mawk /usr/bin/awk");
    stage.install_core(&core_packages(opts.variant))?;
    // The whole required set, the core packages again with it: debootstrap's `dpkg --unpack`
    // of every required package unpacks the core ones over themselves, so they are pending
    // again and dpkg's --configure --pending defers everything that depends on them (libc6,
    // perl-base ...) until they are configured once more. Without that the order differs and
    // real maintainer scripts break (jammy's usrmerge ran before debianutils made /etc/shells).
    stage.unpack("unpacking the required packages", &plan.set.required)?;

    block_services(target)?;
    dpkg_db::set_access_method(&admin, "apt")?;
    stage.cmd("yes '' | dpkg --configure --pending --force-configure-any --force-depends");
    stage.flush_writing_back("configuring the required packages")?;

    let mut all = plan.set.required.clone();
    all.extend(plan.set.base.iter().cloned());
    dpkg_db::write_available(&admin, &plan.index.stanzas(&all))?;
    let selections: String = all.iter().map(|p| format!("{p} install\n")).collect();
    let sel = paths::rel(target, SELECTIONS);
    fs::create_dir_all(paths::rel(target, SCRATCH)).map_err(io_err(target))?;
    fs::write(&sel, selections).map_err(io_err(&sel))?;
    stage.cmd(&format!("dpkg --set-selections < {SELECTIONS}"));

    let mut base = plan.set.base.clone();
    let required: std::collections::BTreeSet<String> = plan.set.required.iter().cloned().collect();
    let mut done = std::collections::BTreeSet::new();
    // What waits in the script before each question to dpkg: the selections, then the last
    // pre-dependency's configuring. Both run in the same step as the question (one start of
    // the runner fewer each), in the same order as on their own.
    let mut waiting = "setting selections".to_string();
    loop {
        stage.cmd(&format!("dpkg --predep-package > {PREDEP} || :"));
        stage.flush(&format!("{waiting}, asking dpkg for pre-dependencies"))?;
        let stanza = fs::read_to_string(paths::rel(target, PREDEP)).unwrap_or_default();
        let Some(predep) = stanza
            .lines()
            .find_map(|l| l.strip_prefix("Package:"))
            .map(|s| s.trim().to_string())
        else {
            break;
        };
        if done.contains(&predep) {
            return Err(stage_err(
                "installing pre-dependencies",
                format!("dpkg keeps asking for {predep}"),
            ));
        }
        let seeds = [predep.clone()].into_iter().collect();
        let closure: Vec<String> =
            resolve_deps(&plan.index, &seeds, &plan.rules.exclude_dependency)
                .into_iter()
                .filter(|p| !required.contains(p) && !done.contains(p) && plan.pkgs.contains_key(p))
                .collect();
        stage.unpack(&format!("unpacking pre-dependency {predep}"), &closure)?;
        stage.cmd(&format!(
            "yes '' | dpkg --force-confold --configure {}",
            closure.join(" ")
        ));
        waiting = format!("configuring pre-dependency {predep}");
        base.retain(|p| !closure.contains(p));
        done.extend(closure);
        done.insert(predep);
    }
    if !base.is_empty() {
        stage.unpack("unpacking the base packages", &base)?;
        stage.cmd(&retry5(
            "dpkg --force-confold --skip-same-version --configure -a",
        ));
        stage.flush_writing_back("configuring the base packages")?;
    }
    stage.flush("finishing")?;
    restore_services(target)?;
    if ischroot {
        let path = paths::rel(target, ISCHROOT);
        fs::rename(paths::rel(target, &format!("{ISCHROOT}.REAL")), &path)
            .map_err(io_err(&path))?;
    }
    super::stage_runner::keep_run_and_tmp(target).map_err(io_err(target.join("run")))
}

/// debootstrap's `repeatn 5`.
fn retry5(cmd: &str) -> String {
    format!("n=0; until yes '' | {cmd}; do n=$((n+1)); [ $n -lt 5 ] || exit 1; done\n")
}

/// Services must not start while packages are installed into the image (debootstrap's
/// policy-rc.d and fake start-stop-daemon); also around the user's hooks.
pub(crate) fn block_services(target: &Path) -> Result<()> {
    let policy = paths::rel(target, POLICY_RC_D);
    fs::write(&policy, "#!/bin/sh\nexit 101\n").map_err(io_err(&policy))?;
    fs::set_permissions(&policy, fs::Permissions::from_mode(0o755)).map_err(io_err(&policy))?;
    let ssd = paths::rel(target, START_STOP_DAEMON);
    fs::rename(
        &ssd,
        paths::rel(target, &format!("{START_STOP_DAEMON}.REAL")),
    )
    .map_err(io_err(&ssd))?;
    fs::write(
        &ssd,
        "#!/bin/sh\necho\necho \"Warning: Fake start-stop-daemon called, doing nothing\"\n",
    )
    .map_err(io_err(&ssd))?;
    fs::set_permissions(&ssd, fs::Permissions::from_mode(0o755)).map_err(io_err(&ssd))
}

/// debootstrap runs the second stage in a chroot, where `ischroot` says so and maintainer
/// scripts leave the running system's init alone. In the runner's PID namespace the image's
/// root is PID 1's, so `ischroot` would say "not a chroot": libc6's postinst would then try
/// `telinit u` and sleep a second, and others would poke an init that is not there. So for the
/// second stage `ischroot` answers yes, as in debootstrap's chroot; the real one is put back
/// after. Returns whether the image has one.
fn fake_ischroot(target: &Path) -> Result<bool> {
    let path = paths::rel(target, ISCHROOT);
    if fs::symlink_metadata(&path).is_err() {
        return Ok(false);
    }
    fs::rename(&path, paths::rel(target, &format!("{ISCHROOT}.REAL"))).map_err(io_err(&path))?;
    fs::write(&path, "#!/bin/sh\nexit 0\n").map_err(io_err(&path))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).map_err(io_err(&path))?;
    Ok(true)
}

pub(crate) fn restore_services(target: &Path) -> Result<()> {
    let ssd = paths::rel(target, START_STOP_DAEMON);
    fs::rename(
        paths::rel(target, &format!("{START_STOP_DAEMON}.REAL")),
        &ssd,
    )
    .map_err(io_err(&ssd))?;
    let policy = paths::rel(target, POLICY_RC_D);
    fs::remove_file(&policy).map_err(io_err(&policy))
}

fn stage_err(step: &str, reason: String) -> BootstrapError {
    BootstrapError::Stage {
        step: step.to_string(),
        reason,
    }
}

/// Runs `script` with /bin/sh inside the image, its output appended to the image's
/// bootstrap log, with debootstrap's environment.
fn in_target(
    opts: &Options,
    target: &Path,
    epoch: Option<i64>,
    step: &str,
    script: &str,
) -> Result<()> {
    // Maintainer scripts that stamp dates (shadow's last password change, ...) honour it;
    // Python's byte-compiled files keep sets in hash order, fixed by a fixed seed.
    let epoch = epoch.map_or(String::new(), |e| {
        format!(" SOURCE_DATE_EPOCH={e} PYTHONHASHSEED=0")
    });
    let full = format!(
        "set -e\nexec >>{LOG} 2>&1 </dev/null\n\
         export DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true \
         PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C{epoch}\n\
         unset LC_ALL LANGUAGE\n\
         dpkg() {{ command dpkg --force-unsafe-io \"$@\"; }}\n\
         echo '+ {step}'\n{script}\n"
    );
    let failure = super::stage_runner::run_script(target, opts, &[], &full).map_err(|source| {
        BootstrapError::Runner {
            step: step.to_string(),
            source,
        }
    })?;
    let reason = match failure {
        Outcome::Succeeded => return Ok(()),
        Outcome::Interrupted => {
            return Err(BootstrapError::Interrupted {
                step: step.to_string(),
            })
        }
        Outcome::Failed(reason) => reason,
    };
    // The image is thrown away on failure, so the log's last words go into the error.
    let log = std::fs::read_to_string(target.join(LOG.trim_start_matches('/'))).unwrap_or_default();
    let last = log
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    Err(stage_err(
        step,
        if last.is_empty() {
            reason
        } else {
            format!("{reason}; the image's {LOG} ends with: {last}")
        },
    ))
}
