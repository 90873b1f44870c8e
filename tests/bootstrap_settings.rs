//! `rmach bootstrap` with what people otherwise do by hand afterwards, against the real Debian
//! mirror of the host's apt sources (bookworm minbase, the quickest real suite): hooks run
//! inside the image before commit, the root password, host name, locale and time zone; each
//! refusal (a failing hook, an unreadable password file, an unknown time zone) leaves no image.
//! And reproducibility: two bootstraps with SOURCE_DATE_EPOCH export byte-identical tars.
//! Needs root and the network to the mirror; downloads are shared through /var/cache/rmach-test.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;

use common::bootstrap::{assert_store_empty, run, shared_cache_env, stderr};
use common::Env;

static SERIAL: Mutex<()> = Mutex::new(());

fn bootstrap(env: &Env, name: &str, extra: &[&str]) -> Output {
    let mut args = vec!["bootstrap", "bookworm", name, "--variant", "minbase"];
    args.extend_from_slice(extra);
    run(env, &args)
}

/// Nothing under the name, nothing hidden left behind.
fn assert_no_image(env: &Env, name: &str) {
    assert!(!env.store.join(name).exists());
    assert_store_empty(env, &format!("after {name} was refused"));
}

#[test]
fn hooks_and_first_boot_settings_are_applied_before_commit() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = shared_cache_env();
    let password = env.path("pw");
    // A ready hash is written as it is.
    let hash = "$6$rmachsalt$0aCvkUVJ7W4zQhD7e3ZkOyg3lE4nKhvGQp5k1r0nJ5iYQfYtD6q9d1x8vYxR2rKZ0mE7WJ0n9V4Qp1b8yZ1wz.";
    std::fs::write(&password, format!("{hash}\n")).unwrap();
    let out = bootstrap(
        &env,
        "set",
        &[
            "--root-password-file",
            password.to_str().unwrap(),
            "--hostname",
            "box.example",
            "--locale",
            "C.UTF-8",
            "--timezone",
            "Europe/Berlin",
            "--hook",
            "echo first > /etc/hook-order",
            "--hook",
            "test \"$(hostname)\" = box.example && echo second >> /etc/hook-order",
            // What people do by hand after debootstrap: an SSH server, with services held
            // back during the build as in the second stage.
            "--hook",
            "test -x /usr/sbin/policy-rc.d && apt-get update -qq && \
             DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server >/dev/null",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let root = env.store.join("set");
    let shadow = std::fs::read_to_string(root.join("etc/shadow")).unwrap();
    assert!(shadow.starts_with(&format!("root:{hash}:")), "{shadow}");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "box.example\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/default/locale")).unwrap(),
        "LANG=C.UTF-8\n"
    );
    assert_eq!(
        std::fs::read_link(root.join("etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/Europe/Berlin")
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/timezone")).unwrap(),
        "Europe/Berlin\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hook-order")).unwrap(),
        "first\nsecond\n"
    );
    assert!(root.join("usr/sbin/sshd").exists());
    assert!(!root.join("usr/sbin/policy-rc.d").exists());
    assert!(std::fs::read(root.join("sbin/start-stop-daemon"))
        .unwrap()
        .starts_with(b"\x7fELF"));
    // A plain password is hashed by the image's own chpasswd.
    std::fs::write(&password, "correct horse\n").unwrap();
    let out = bootstrap(
        &env,
        "set",
        &[
            "--force",
            "--root-password-file",
            password.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let shadow = std::fs::read_to_string(root.join("etc/shadow")).unwrap();
    let field = shadow.lines().next().unwrap().split(':').nth(1).unwrap();
    assert!(field.starts_with('$') && field.len() > 20, "{field}");
    assert!(!shadow.contains("correct horse"));
    assert!(!root.join("debootstrap").exists());
}

#[test]
fn refused_settings_and_failing_hooks_leave_no_image() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = shared_cache_env();
    // Checked before anything is downloaded or created.
    let out = bootstrap(&env, "img", &["--root-password-file", "/nonexistent/pw"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("/nonexistent/pw"), "{}", stderr(&out));
    assert_no_image(&env, "img");
    let out = bootstrap(&env, "img", &["--hostname", "bad_name!"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_no_image(&env, "img");

    // Known only once the image exists: a failing hook and a zone the image lacks.
    let out = bootstrap(
        &env,
        "img",
        &["--hook", "true", "--hook", "echo it broke >&2; exit 3"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("hook") && err.contains("exit status 3"),
        "{err}"
    );
    assert!(err.contains("it broke"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_no_image(&env, "img");

    let out = bootstrap(&env, "img", &["--timezone", "Mars/Olympus_Mons"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Mars/Olympus_Mons"),
        "{}",
        stderr(&out)
    );
    assert_no_image(&env, "img");
}

/// SOURCE_DATE_EPOCH: two bootstraps of the same suite from the same mirror state export the
/// same bytes; no file is newer than the epoch and the machine id is empty.
#[test]
fn two_reproducible_bootstraps_export_identical_tars() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = shared_cache_env();
    let epoch = "1700000000";
    let mut tars = Vec::new();
    for name in ["repro-a", "repro-b"] {
        let out = common::bootstrap::command(&env)
            .args(["bootstrap", "bookworm", name, "--variant", "minbase"])
            .args(["--hostname", "repro"])
            .env("SOURCE_DATE_EPOCH", epoch)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let tar = env.path(&format!("{name}.tar"));
        let out = run(&env, &["export-tar", name, tar.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        tars.push(tar);
    }
    let cmp = Command::new("cmp").args(&tars).output().unwrap();
    assert!(
        cmp.status.success(),
        "the two exports differ: {}",
        String::from_utf8_lossy(&cmp.stdout)
    );
    let root = env.store.join("repro-a");
    assert_eq!(std::fs::read(root.join("etc/machine-id")).unwrap(), b"");
    let newer = Command::new("find")
        .arg(&root)
        .args(["-newermt", "@1700000000", "-print", "-quit"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&newer.stdout), "");
}
