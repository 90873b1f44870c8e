//! After the second stage: the finishing touches debootstrap's users rely on ([`finish`]: an
//! empty machine-id, the host name, no .debs or scratch left), then the settings people make
//! by hand after debootstrap, done before the image is committed: the root password, the
//! locale, the time zone, then the user's hooks (mmdebstrap's `--customize-hook`, but run
//! inside the image through the runner). Any failure fails the bootstrap, so a half-customized
//! image never appears under its name.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use super::paths::{self, SCRATCH};
use super::stage_runner::{self, Outcome};
use super::{io_err, BootstrapError, Options, Result};

/// What to set in the image; all optional.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The root password as read from `--root-password-file`: plain text, or a crypt(3) hash
    /// (starting with `$`) written as it is.
    pub(crate) root_password: Option<String>,
    pub(crate) locale: Option<String>,
    pub(crate) timezone: Option<String>,
    /// Shell commands run inside the image, in order.
    pub(crate) hooks: Vec<String>,
}

/// Applies `opts.settings` to the finished tree at `target`.
pub(crate) fn apply(opts: &Options, target: &Path, epoch: Option<i64>) -> Result<()> {
    let settings = &opts.settings;
    if let Some(password) = &settings.root_password {
        root_password(opts, target, epoch, password)?;
    }
    if let Some(locale) = &settings.locale {
        set_locale(opts, target, epoch, locale)?;
    }
    if let Some(zone) = &settings.timezone {
        set_timezone(target, zone)?;
    }
    if settings.hooks.is_empty() {
        return Ok(());
    }
    // A hook that installs a package (an SSH server, say) must not start its service in the
    // build, as during the second stage.
    super::second::block_services(target)?;
    for hook in &settings.hooks {
        let failure = run(opts, target, epoch, &format!("hook {hook:?}"), hook)?;
        if let Some(reason) = failure {
            return Err(BootstrapError::Hook {
                command: hook.clone(),
                reason,
            });
        }
    }
    super::second::restore_services(target)
}

/// Runs `script` inside the image with the scratch /run and /tmp the second stage used.
fn run(
    opts: &Options,
    target: &Path,
    epoch: Option<i64>,
    step: &str,
    script: &str,
) -> Result<Option<String>> {
    stage_runner::prepare_run_and_tmp(target).map_err(io_err(target.join("run")))?;
    let mut env = vec![(
        "PATH".to_string(),
        "/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
    )];
    if let Some(epoch) = epoch {
        env.push(("SOURCE_DATE_EPOCH".into(), epoch.to_string()));
    }
    let result = stage_runner::run_script(target, opts, &env, script).map_err(|source| {
        BootstrapError::Runner {
            step: step.to_string(),
            source,
        }
    });
    stage_runner::keep_run_and_tmp(target).map_err(io_err(target.join("run")))?;
    match result? {
        Outcome::Succeeded => Ok(None),
        Outcome::Failed(reason) => Ok(Some(reason)),
        Outcome::Interrupted => Err(BootstrapError::Interrupted {
            step: step.to_string(),
        }),
    }
}

fn setting(option: &str, value: &str, reason: impl Into<String>) -> BootstrapError {
    BootstrapError::Setting {
        option: format!("{option} {value}"),
        reason: reason.into(),
    }
}

/// chpasswd inside the image, so the hash is the one the image's PAM and login.defs choose;
/// the password travels in a root-only file of the scratch area, never on a command line.
fn root_password(opts: &Options, target: &Path, epoch: Option<i64>, password: &str) -> Result<()> {
    let scratch = paths::rel(target, SCRATCH);
    fs::create_dir_all(&scratch).map_err(io_err(&scratch))?;
    let file = scratch.join("root-password");
    fs::write(&file, format!("root:{password}\n")).map_err(io_err(&file))?;
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).map_err(io_err(&file))?;
    let encrypted = if password.starts_with('$') { " -e" } else { "" };
    let failure = run(
        opts,
        target,
        epoch,
        "setting the root password",
        &format!("chpasswd{encrypted} < {SCRATCH}/root-password"),
    );
    let _ = fs::remove_dir_all(&scratch);
    match failure? {
        None => Ok(()),
        Some(reason) => Err(setting(
            "--root-password-file",
            "",
            format!("chpasswd in the image failed: {reason}"),
        )),
    }
}

/// LANG in /etc/default/locale; a locale other than C, C.UTF-8 and POSIX must be one the
/// image's `locales` package supports, and is generated.
fn set_locale(opts: &Options, target: &Path, epoch: Option<i64>, locale: &str) -> Result<()> {
    let builtin = ["C", "C.UTF-8", "C.utf8", "POSIX"].contains(&locale);
    if !builtin {
        if locale.is_empty() || !locale.chars().all(|c| c.is_ascii_graphic() && c != '\'') {
            return Err(setting("--locale", locale, "not a locale name"));
        }
        let supported =
            fs::read_to_string(target.join("usr/share/i18n/SUPPORTED")).unwrap_or_default();
        let Some(line) = supported
            .lines()
            .find(|l| l.split_whitespace().next() == Some(locale))
        else {
            return Err(setting(
                "--locale",
                locale,
                "not available in the image: add --include locales (and check the name in its /usr/share/i18n/SUPPORTED)",
            ));
        };
        let gen = target.join("etc/locale.gen");
        let mut text = fs::read_to_string(&gen).unwrap_or_default();
        text.push_str(line);
        text.push('\n');
        fs::write(&gen, text).map_err(io_err(&gen))?;
        if let Some(reason) = run(opts, target, epoch, "generating the locale", "locale-gen")? {
            return Err(setting(
                "--locale",
                locale,
                format!("locale-gen failed: {reason}"),
            ));
        }
    }
    let path = target.join("etc/default/locale");
    fs::create_dir_all(target.join("etc/default")).map_err(io_err(&path))?;
    fs::write(&path, format!("LANG={locale}\n")).map_err(io_err(&path))
}

/// /etc/localtime as a link into the image's zoneinfo (and /etc/timezone where tzdata keeps it).
fn set_timezone(target: &Path, zone: &str) -> Result<()> {
    let valid = !zone.is_empty()
        && !zone.starts_with('/')
        && zone
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && zone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c));
    if !valid {
        return Err(setting("--timezone", zone, "not a time zone name"));
    }
    let data = target.join("usr/share/zoneinfo").join(zone);
    if !fs::symlink_metadata(&data).is_ok_and(|m| !m.is_dir()) {
        return Err(setting(
            "--timezone",
            zone,
            format!(
                "/usr/share/zoneinfo/{zone} is not in the image: check the name, or add --include tzdata"
            ),
        ));
    }
    let localtime = target.join("etc/localtime");
    let _ = fs::remove_file(&localtime);
    symlink(format!("/usr/share/zoneinfo/{zone}"), &localtime).map_err(io_err(&localtime))?;
    let timezone = target.join("etc/timezone");
    if timezone.exists() {
        fs::write(&timezone, format!("{zone}\n")).map_err(io_err(&timezone))?;
    }
    Ok(())
}

/// After the second stage: an empty machine-id for first boot, the hostname, and no packages
/// or bootstrap scratch left behind.
pub(crate) fn finish(target: &Path, hostname: &str) -> Result<()> {
    write(&paths::rel(target, paths::MACHINE_ID), "", 0o444)?;
    write(
        &paths::rel(target, paths::HOSTNAME),
        &format!("{hostname}\n"),
        0o644,
    )?;
    let archives = target.join("var/cache/apt/archives");
    if let Ok(dir) = fs::read_dir(&archives) {
        for entry in dir.flatten() {
            if entry.path().extension().is_some_and(|e| e == "deb") {
                fs::remove_file(entry.path()).map_err(io_err(entry.path()))?;
            }
        }
    }
    let scratch = paths::rel(target, SCRATCH);
    if scratch.exists() {
        fs::remove_dir_all(&scratch).map_err(io_err(&scratch))?;
    }
    Ok(())
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    fs::write(path, text).map_err(io_err(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))
}
