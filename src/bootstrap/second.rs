//! The second stage, in debootstrap's order: the core packages one by one (base-passwd,
//! base-files, dpkg, libc6, perl-base, mawk, debconf), the rest of the required set unpacked and
//! configured, then the base set through dpkg's pre-dependency loop, all inside the image with
//! services blocked (policy-rc.d, a fake start-stop-daemon) and restored afterwards.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::install::{deb_of, Plan};
use super::resolve::resolve_deps;
use super::suites::Variant;
use super::{io_err, BootstrapError, Event, Options, Progress, Result};

const LOG: &str = "/var/log/bootstrap.log";
const ARCHIVES: &str = "var/cache/apt/archives";

/// The path of a package's .deb inside the image, where dpkg reads it.
fn inside(plan: &Plan, name: &str) -> String {
    let file = plan.pkgs[name]
        .filename
        .rsplit('/')
        .next()
        .unwrap_or(name)
        .to_string();
    format!("/{ARCHIVES}/{file}")
}

fn debs(plan: &Plan, names: &[String]) -> String {
    names
        .iter()
        .map(|n| inside(plan, n))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Places the .debs where dpkg inside finds them: hard links from the cache when it is on the
/// same filesystem, copies otherwise. `finish` removes them.
fn stage_debs(plan: &Plan, target: &Path) -> Result<()> {
    let dir = target.join(ARCHIVES);
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    for name in plan.set.all() {
        let src = deb_of(plan, &name);
        let dst = target.join(inside(plan, &name).trim_start_matches('/'));
        if fs::hard_link(&src, &dst).is_err() {
            fs::copy(&src, &dst).map_err(io_err(&dst))?;
        }
    }
    Ok(())
}

/// The packages the second stage installs by name must be in the set (`--exclude` can drop
/// them); checked before anything is downloaded.
pub fn check_core(
    opts: &Options,
    pkgs: &std::collections::HashMap<String, super::packages::Pkg>,
) -> Result<()> {
    let mut core = vec![
        "base-passwd",
        "base-files",
        "dpkg",
        "libc6",
        "perl-base",
        "mawk",
    ];
    if opts.variant == Variant::Default {
        core.push("debconf");
    }
    let missing: Vec<&str> = core
        .into_iter()
        .filter(|p| !pkgs.contains_key(*p))
        .collect();
    if !missing.is_empty() {
        return Err(stage_err(
            "checking the core packages",
            format!(
                "{} not in the package set (left out with --exclude?)",
                missing.join(" ")
            ),
        ));
    }
    Ok(())
}

pub fn run(opts: &Options, plan: &Plan, target: &Path, progress: Progress<'_>) -> Result<()> {
    stage_debs(plan, target)?;
    let sh = |step: &str, script: &str| {
        let started = std::time::Instant::now();
        let result = in_target(target, &opts.hostname, step, script);
        progress(Event::Note(format!(
            "  {step}: {:.1} s",
            started.elapsed().as_secs_f64()
        )));
        result
    };
    sh("checking the image runs", "/bin/true")?;

    // debootstrap's x_feign_install dpkg: dpkg must look installed to install itself.
    let dpkg_version = &plan.pkgs["dpkg"].version;
    let status = target.join("var/lib/dpkg/status");
    fs::write(&status, format!("Package: dpkg\nVersion: {dpkg_version}\nMaintainer: unknown\nStatus: install ok installed\n"))
        .map_err(io_err(&status))?;
    fs::create_dir_all(target.join("var/lib/dpkg/info")).map_err(io_err(target))?;
    fs::write(target.join("var/lib/dpkg/info/dpkg.list"), "").map_err(io_err(target))?;

    let core = |name: &str| {
        format!(
            "yes '' | dpkg --force-depends --install {}\n",
            inside(plan, name)
        )
    };
    let mut script = String::from("/sbin/ldconfig\nln -sf mawk /usr/bin/awk\n");
    script += &core("base-passwd");
    script += &core("base-files");
    script += &core("dpkg");
    script += "[ -e /etc/localtime ] || ln -sf /usr/share/zoneinfo/UTC /etc/localtime\n";
    script += &core("libc6");
    script += &core("perl-base");
    script += "rm /usr/bin/awk\n";
    script += &core("mawk");
    if opts.variant == Variant::Default {
        script += &core("debconf");
    }
    script += &retry5(&format!(
        "dpkg --force-depends --unpack {}",
        debs(plan, &plan.set.required)
    ));
    sh("installing the core packages", &script)?;

    block_services(target)?;
    let cmethopt = target.join("var/lib/dpkg/cmethopt");
    fs::write(&cmethopt, "apt apt\n").map_err(io_err(&cmethopt))?;
    sh(
        "configuring the required packages",
        "yes '' | dpkg --configure --pending --force-configure-any --force-depends",
    )?;

    let mut all = plan.set.required.clone();
    all.extend(plan.set.base.iter().cloned());
    let available = target.join("var/lib/dpkg/available");
    fs::write(&available, plan.index.stanzas(&all)).map_err(io_err(&available))?;
    let selections: String = all.iter().map(|p| format!("{p} install\n")).collect();
    let sel = target.join("debootstrap/selections");
    fs::create_dir_all(target.join("debootstrap")).map_err(io_err(target))?;
    fs::write(&sel, selections).map_err(io_err(&sel))?;
    sh(
        "setting selections",
        "dpkg --set-selections < /debootstrap/selections",
    )?;

    let mut base = plan.set.base.clone();
    let required: std::collections::BTreeSet<String> = plan.set.required.iter().cloned().collect();
    let mut done = std::collections::BTreeSet::new();
    loop {
        sh(
            "asking dpkg for pre-dependencies",
            "dpkg --predep-package > /debootstrap/predep || :",
        )?;
        let stanza = fs::read_to_string(target.join("debootstrap/predep")).unwrap_or_default();
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
        sh(
            &format!("installing pre-dependency {predep}"),
            &format!(
                "yes '' | dpkg --force-overwrite --force-confold --skip-same-version --install {}",
                debs(plan, &closure)
            ),
        )?;
        base.retain(|p| !closure.contains(p));
        done.extend(closure);
        done.insert(predep);
    }
    if !base.is_empty() {
        let unpack = format!(
            "dpkg --force-overwrite --force-confold --skip-same-version --unpack {}",
            debs(plan, &base)
        );
        sh("unpacking the base packages", &retry5(&unpack))?;
        sh(
            "configuring the base packages",
            &retry5("dpkg --force-confold --skip-same-version --configure -a"),
        )?;
    }
    restore_services(target)
}

/// debootstrap's `repeatn 5`.
fn retry5(cmd: &str) -> String {
    format!("n=0; until yes '' | {cmd}; do n=$((n+1)); [ $n -lt 5 ] || exit 1; done\n")
}

fn block_services(target: &Path) -> Result<()> {
    let policy = target.join("usr/sbin/policy-rc.d");
    fs::write(&policy, "#!/bin/sh\nexit 101\n").map_err(io_err(&policy))?;
    fs::set_permissions(&policy, fs::Permissions::from_mode(0o755)).map_err(io_err(&policy))?;
    let ssd = target.join("sbin/start-stop-daemon");
    fs::rename(&ssd, target.join("sbin/start-stop-daemon.REAL")).map_err(io_err(&ssd))?;
    fs::write(
        &ssd,
        "#!/bin/sh\necho\necho \"Warning: Fake start-stop-daemon called, doing nothing\"\n",
    )
    .map_err(io_err(&ssd))?;
    fs::set_permissions(&ssd, fs::Permissions::from_mode(0o755)).map_err(io_err(&ssd))
}

fn restore_services(target: &Path) -> Result<()> {
    let ssd = target.join("sbin/start-stop-daemon");
    fs::rename(target.join("sbin/start-stop-daemon.REAL"), &ssd).map_err(io_err(&ssd))?;
    let policy = target.join("usr/sbin/policy-rc.d");
    fs::remove_file(&policy).map_err(io_err(&policy))
}

fn stage_err(step: &str, reason: String) -> BootstrapError {
    BootstrapError::Stage {
        step: step.to_string(),
        reason,
        log: LOG.to_string(),
    }
}

/// Runs `script` with /bin/sh inside the image, its output appended to the image's
/// bootstrap log, with debootstrap's environment.
fn in_target(target: &Path, hostname: &str, step: &str, script: &str) -> Result<()> {
    let full = format!(
        "set -e\nexec >>{LOG} 2>&1 </dev/null\n\
         export DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true \
         PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8\n\
         dpkg() {{ command dpkg --force-unsafe-io \"$@\"; }}\n\
         echo '+ {step}'\n{script}\n"
    );
    super::stage_runner::run_script(target, hostname, &full).map_err(|reason| {
        // The image is thrown away on failure, so the log's last words go into the error.
        let log =
            std::fs::read_to_string(target.join(LOG.trim_start_matches('/'))).unwrap_or_default();
        let last = log
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        stage_err(
            step,
            if last.is_empty() {
                reason
            } else {
                format!("{reason}; {LOG} ends with: {last}")
            },
        )
    })
}
