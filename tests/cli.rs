//! The command line as a whole (issue #15, parts 6 and 7): rmach needs root and says so; a
//! missing store is an error naming it for every verb but those that create images; usage
//! errors are one line with the verb's usage and no far-fetched suggestion; a closed stdout
//! ends quietly; `read-only NAME [BOOL]` as machinectl; rename and clone onto a taken name give
//! no advice they cannot follow; `list` legend, names and "No images."; `show -p/--value`;
//! lock files go away; image names complete in bash, zsh and fish. Needs root.

mod common;

use std::process::{Command, Stdio};

use common::{command_line, on_terminal, wrapped, Env, RMACH};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An Env with one empty directory image `dev`.
fn with_dev() -> Env {
    let env = Env::new();
    let src = env.empty_dir("src");
    env.ok(&["import-fs", src.to_str().unwrap(), "dev"]);
    env
}

#[test]
fn rmach_needs_root_and_says_so() {
    let env = with_dev();
    for args in [vec!["list"], vec!["show", "dev"], vec!["remove", "dev"]] {
        let mut rmach = env.command();
        rmach.args(&args);
        let o = wrapped(
            &[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ],
            &rmach,
        )
        .output()
        .unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&o).starts_with("rmach: rmach needs root"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    assert!(env.store.join("dev").is_dir());
}

#[test]
fn a_missing_store_is_an_error_except_for_verbs_that_create_images() {
    let env = Env::new();
    let typo = env.path("typo");
    let t = typo.to_str().unwrap();
    let out = env.path("out.tar");
    for args in [
        vec!["list"],
        vec!["list", "--json"],
        vec!["show", "dev"],
        vec!["remove", "dev"],
        vec!["rename", "dev", "x"],
        vec!["clone", "dev", "x"],
        vec!["read-only", "dev"],
        vec!["clean"],
        vec!["export-tar", "dev", out.to_str().unwrap()],
        vec!["run", "dev"],
        vec!["boot", "dev"],
    ] {
        let mut full = vec!["--store", t];
        full.extend(&args);
        let err = env.fails(&full, 1);
        assert_eq!(
            err.trim(),
            format!(
                "rmach: no image store at {t}; give the right --store (or RMACH_STORE), or \
                 create the store with an import or bootstrap"
            ),
            "{args:?}"
        );
        assert!(!typo.exists(), "{args:?} created the store");
    }
    let src = env.empty_dir("src");
    env.ok(&["--store", t, "import-fs", src.to_str().unwrap(), "dev"]);
    assert!(typo.join("dev").is_dir());
}

#[test]
fn usage_errors_are_one_line_with_the_usage() {
    let env = Env::new();
    let err = env.fails(&["show"], 2);
    assert_eq!(
        err.trim(),
        "rmach: missing <NAME>; usage: rmach show [OPTIONS] <NAME>"
    );
    let err = env.fails(&["rename", "a"], 2);
    assert!(
        err.contains("missing <NEW>") && err.contains("usage: rmach rename"),
        "{err}"
    );
    // (`login` was the unknown verb here until it became a verb of its own.)
    let err = env.fails(&["frobnicate"], 2);
    assert!(!err.contains("clone"), "{err}");
    assert!(err.contains("'frobnicate'"), "{err}");
    // ("lsit" is now nearer to `set` by clap's measure.)
    let err = env.fails(&["lits"], 2);
    assert!(err.contains("did you mean 'list'"), "{err}");
    let err = env.fails(&["read-only", "dev", "maybe"], 2);
    assert!(err.contains("not a boolean"), "{err}");
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let env = with_dev();
    for args in [
        vec!["completions", "zsh"],
        vec!["completions", "bash"],
        vec!["list"],
        vec!["list", "--json"],
        vec!["show", "dev"],
    ] {
        // The reading end is closed before rmach writes a byte: every write is EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = env
            .command()
            .args(&args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o), "", "{args:?}");
    }
    // As people type it.
    let mut rmach = env.command();
    rmach.args(["completions", "zsh"]);
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{} | head -1 >/dev/null; echo ${{PIPESTATUS[0]}}",
            command_line(&rmach)
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "0");
    assert_eq!(stderr(&o), "");
}

#[test]
fn read_only_takes_a_boolean_as_machinectl() {
    let env = with_dev();
    let read_only = || env.ok(&["show", "dev", "-p", "ReadOnly", "--value"]);
    env.ok(&["read-only", "dev"]);
    assert_eq!(read_only(), "yes\n", "omitted means yes");
    for (word, want) in [
        ("no", "no"),
        ("true", "yes"),
        ("0", "no"),
        ("on", "yes"),
        ("FALSE", "no"),
        ("1", "yes"),
        ("n", "no"),
    ] {
        env.ok(&["read-only", "dev", word]);
        assert_eq!(read_only().trim(), want, "{word}");
    }
    env.ok(&["read-only", "dev", "no"]);
}

#[test]
fn taken_names_give_advice_that_exists() {
    let env = with_dev();
    let src = env.path("src");
    env.ok(&["import-fs", src.to_str().unwrap(), "other"]);
    for args in [
        vec!["rename", "dev", "other"],
        vec!["clone", "dev", "other"],
    ] {
        let err = env.fails(&args, 1);
        assert!(err.contains("already exists"), "{err}");
        assert!(!err.contains("--force"), "{args:?} has no --force: {err}");
    }
    let err = env.fails(&["import-fs", src.to_str().unwrap(), "other"], 1);
    assert!(err.contains("use --force"), "{err}");
}

#[test]
fn list_legend_names_and_no_images() {
    let env = Env::new();
    std::fs::create_dir(&env.store).unwrap();
    assert_eq!(
        env.ok(&["list"]),
        "",
        "off a terminal an empty list prints nothing"
    );
    let mut list = env.command();
    list.arg("list");
    let shown = on_terminal("", &list).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&shown.stdout).replace('\r', ""),
        "No images.\n"
    );
    let src = env.empty_dir("src");
    env.ok(&["import-fs", src.to_str().unwrap(), "b-img"]);
    env.ok(&["import-fs", src.to_str().unwrap(), "a-img"]);
    let list = env.ok(&["list"]);
    assert!(list.starts_with("NAME "), "{list}");
    assert_eq!(list.lines().count(), 3);
    let bare = env.ok(&["list", "--no-legend"]);
    assert_eq!(bare.lines().count(), 2);
    assert!(bare.starts_with("a-img "), "{bare}");
    assert_eq!(env.ok(&["list", "--names"]), "a-img\nb-img\n");
}

#[test]
fn show_prints_chosen_properties() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("usr/lib")).unwrap();
    std::fs::write(
        src.join("usr/lib/os-release"),
        "PRETTY_NAME=\"Probe 1\"\nVERSION_ID=1\n",
    )
    .unwrap();
    env.ok(&["import-fs", src.to_str().unwrap(), "dev"]);
    assert_eq!(
        env.ok(&["show", "dev", "-p", "Name,ReadOnly", "-p", "PRETTY_NAME"]),
        "Name=dev\nReadOnly=no\nPRETTY_NAME=Probe 1\n"
    );
    assert_eq!(
        env.ok(&["show", "dev", "-p", "State", "-p", "VERSION_ID", "--value"]),
        "stopped\n1\n"
    );
    let err = env.fails(&["show", "dev", "-p", "Colour"], 2);
    assert!(err.contains("unknown property \"Colour\""), "{err}");
    env.fails(&["show", "dev", "--value"], 2);
}

#[test]
fn lock_files_are_removed_when_released() {
    let env = with_dev();
    env.ok(&["clone", "dev", "copy"]);
    env.ok(&["rename", "copy", "copy2"]);
    env.ok(&["read-only", "copy2"]);
    let locks: Vec<_> = std::fs::read_dir(env.state.join("locks"))
        .unwrap()
        .collect();
    assert!(locks.is_empty(), "{locks:?}");
    assert_eq!(env.store_entries(), ["copy2", "dev"]);
}

#[test]
fn errors_carry_no_os_error_numbers() {
    let env = with_dev();
    let err = env.fails(&["--state-dir", "/proc/rmach-nonexistent", "list"], 1);
    assert!(!err.contains("os error"), "{err}");
    assert!(err.contains("/proc/rmach-nonexistent/locks"), "{err}");
}

/// Runs `script` in `shell` with the completion script of rmach sourced, RMACH_STORE and PATH
/// pointing at this store and binary.
fn complete_in(env: &Env, shell: &str, script: &str) -> String {
    let bin = std::path::Path::new(RMACH);
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new(shell)
        .arg("-c")
        .arg(script)
        .env("PATH", path)
        .envs(env.vars())
        .output()
        .unwrap();
    assert!(o.status.success(), "{shell}: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn image_names_complete_in_bash_zsh_and_fish() {
    let env = with_dev();
    let src = env.path("src");
    env.ok(&["import-fs", src.to_str().unwrap(), "devel"]);
    let bash = complete_in(
        &env,
        "bash",
        "source <(rmach completions bash)\n\
         COMP_WORDS=(rmach show de); COMP_CWORD=2; _rmach_with_images rmach de show\n\
         echo \"${COMPREPLY[@]}\"\n\
         COMP_WORDS=(rmach rename dev ''); COMP_CWORD=3; COMPREPLY=(); _rmach_with_images rmach '' dev\n\
         echo \"new:${COMPREPLY[*]}\"",
    );
    let mut lines = bash.lines();
    assert_eq!(lines.next(), Some("dev devel"), "{bash}");
    assert!(
        !lines.next().unwrap_or_default().contains("dev"),
        "rename's NEW is not an image: {bash}"
    );
    let fish = complete_in(
        &env,
        "fish",
        "rmach completions fish | source; complete -C 'rmach remove d'",
    );
    let names: Vec<&str> = fish
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(names, ["dev", "devel"], "{fish}");
    let zsh_script = env.ok(&["completions", "zsh"]);
    assert!(zsh_script.contains("':name -- The image:_rmach_images'"));
    assert!(zsh_script.contains("_rmach_images() {"));
    // The function gives the store's names when zsh's completion system calls it.
    let zsh = complete_in(
        &env,
        "zsh",
        "autoload -U compinit && compinit -u\n\
         source <(rmach completions zsh)\n\
         compadd() { shift; print -l -- \"${(@P)1}\"; }\n\
         _rmach_images",
    );
    assert_eq!(zsh, "dev\ndevel\n");
}

#[test]
fn scripts_install_puts_everything_under_destdir() {
    let dest = tempfile::tempdir().unwrap();
    let o = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install"))
        .env("DESTDIR", dest.path())
        .env("PREFIX", "/usr")
        .env("RMACH", RMACH)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let root = dest.path().join("usr");
    for file in [
        "bin/rmach",
        "share/man/man1/rmach.1",
        "share/man/man1/rmach-boot.1",
        "share/bash-completion/completions/rmach",
        "share/zsh/site-functions/_rmach",
        "share/fish/vendor_completions.d/rmach.fish",
    ] {
        assert!(root.join(file).is_file(), "{file} not installed");
    }
    let pages = std::fs::read_dir(root.join("share/man/man1"))
        .unwrap()
        .count();
    let sources = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/man"))
        .unwrap()
        .count();
    assert_eq!(pages, sources);
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/rmach@.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/rmach start --foreground %i"),
        "{unit}"
    );
    assert!(root
        .join("lib/systemd/system/rmach-machines.target")
        .is_file());
    let man = std::fs::read_to_string(root.join("share/man/man1/rmach-list.1")).unwrap();
    for section in ["EXIT STATUS", "EXAMPLES", "FILES", "SEE ALSO"] {
        assert!(man.contains(section), "{section}");
    }
    let installed = Command::new(root.join("bin/rmach"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(installed.status.success());
}
