//! The man pages' own sections (EXIT STATUS, EXAMPLES, FILES, SEE ALSO) in roff, added by
//! `scripts/gen-man` to what clap_mangen renders from the command line.

/// Examples by verb: (command, what it does).
const EXAMPLES: &[(&str, &[(&str, &str)])] = &[
    (
        "rmach",
        &[
            (
                "rmach bootstrap bookworm dev",
                "Build a Debian bookworm image called dev.",
            ),
            ("rmach boot dev", "Boot it on this terminal."),
            (
                "rmach export-tar dev /backup/dev.tar.zst",
                "Back it up; silent on success, as cron wants.",
            ),
            ("rmach list", "See the images and which are running."),
        ],
    ),
    (
        "list",
        &[
            ("rmach list", "A table of the images."),
            (
                "rmach list --names",
                "One name a line, for scripts (`for i in $(rmach list --names)`).",
            ),
            ("rmach list --json", "One JSON document."),
        ],
    ),
    (
        "show",
        &[
            ("rmach show dev", "Everything about dev."),
            (
                "rmach show dev -p ReadOnly --value",
                "Print yes or no: whether dev is read-only.",
            ),
            (
                "rmach show dev -p PRETTY_NAME,State",
                "Its OS and whether it runs, as NAME=VALUE lines.",
            ),
        ],
    ),
    (
        "remove",
        &[(
            "rmach remove old1 old2",
            "Remove two images; a typo removes neither.",
        )],
    ),
    (
        "rename",
        &[("rmach rename dev prod", "Rename dev to prod.")],
    ),
    (
        "clone",
        &[(
            "rmach clone --read-only dev dev-golden",
            "Keep a read-only copy (a snapshot on btrfs).",
        )],
    ),
    (
        "read-only",
        &[
            ("rmach read-only dev", "Mark dev read-only."),
            ("rmach read-only dev no", "Make it writable again."),
        ],
    ),
    (
        "clean",
        &[(
            "rmach clean",
            "Remove what interrupted operations left behind.",
        )],
    ),
    (
        "import-fs",
        &[(
            "rmach import-fs /srv/rootfs web",
            "Copy a directory tree in as the image web.",
        )],
    ),
    (
        "import-tar",
        &[
            (
                "rmach import-tar /backup/dev.tar.zst",
                "Import a tarball (any compression) as the image dev.",
            ),
            (
                "curl -s URL | rmach import-tar - dev",
                "Import from standard input; the name is then required.",
            ),
        ],
    ),
    (
        "export-tar",
        &[
            (
                "rmach export-tar dev /backup/dev-$(date +%F).tar.zst",
                "A compressed backup; the format follows the suffix.",
            ),
            (
                "rmach export-tar dev - | ssh host rmach import-tar - dev",
                "Copy an image to another host.",
            ),
        ],
    ),
    (
        "import-raw",
        &[
            (
                "rmach import-raw debian-12-genericcloud-amd64.qcow2 vm",
                "Import a qcow2 (or raw) disk, any compression, as the raw image vm.",
            ),
            (
                "xz -dc disk.img.xz | rmach import-raw - vm --sha256 HEX",
                "From standard input, checked against a SHA-256.",
            ),
        ],
    ),
    (
        "export-raw",
        &[
            (
                "rmach export-raw vm vm.qcow2",
                "Export as qcow2; .zst, .xz, .gz, .bz2 compress, anything else is raw.",
            ),
            (
                "rmach export-raw vm /backup/vm.raw",
                "The exact bytes, written sparse.",
            ),
        ],
    ),
    (
        "bootstrap",
        &[
            (
                "rmach bootstrap bookworm dev --variant minbase",
                "A minimal Debian bookworm from the host's mirror.",
            ),
            (
                "rmach bootstrap trixie ci --include git,build-essential",
                "Debian trixie with extra packages.",
            ),
        ],
    ),
    (
        "run",
        &[
            ("rmach run dev", "A login shell in dev."),
            (
                "rmach run dev -- apt-get update",
                "One command; rmach exits with its status.",
            ),
            (
                "echo hi | rmach run dev -- cat",
                "Off a terminal the machine gets rmach's own stdin and stdout.",
            ),
        ],
    ),
    (
        "boot",
        &[
            (
                "rmach boot dev",
                "Boot dev on this terminal; log in on its console, `poweroff` to end.",
            ),
            (
                "rmach boot dev </dev/null >boot.log",
                "Boot off a terminal: the whole boot log goes to boot.log; `kill -INT` halts it.",
            ),
        ],
    ),
    (
        "completions",
        &[(
            "rmach completions bash >/usr/share/bash-completion/completions/rmach",
            "Install bash completion (scripts/install does this for bash, zsh and fish).",
        )],
    ),
];

/// Man pages that belong together, for SEE ALSO.
fn see_also(verb: Option<&str>) -> Vec<&'static str> {
    let mut pages = vec![];
    if verb.is_some() {
        pages.push("rmach(1)");
    }
    match verb {
        Some("run") => pages.push("rmach-boot(1)"),
        Some("boot") => pages.push("rmach-run(1)"),
        Some("import-tar") => pages.extend(["rmach-export-tar(1)", "tar(1)"]),
        Some("export-tar") => pages.extend(["rmach-import-tar(1)", "tar(1)"]),
        Some("import-raw") => pages.extend(["rmach-export-raw(1)", "qemu-img(1)"]),
        Some("export-raw") => pages.extend(["rmach-import-raw(1)", "qemu-img(1)"]),
        Some("bootstrap") => pages.push("debootstrap(8)"),
        Some("list") => pages.push("rmach-show(1)"),
        Some("show") => pages.push("rmach-list(1)"),
        _ => {}
    }
    pages.extend(["systemd-nspawn(1)", "machinectl(1)"]);
    pages
}

/// roff text: hyphens as `\-`, backslashes doubled, no line starting with a control character.
fn text(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

fn exit_status(verb: Option<&str>) -> String {
    let mut items = vec![("0", "Success.")];
    match verb {
        Some("run") | Some("boot") => items = vec![
            ("N", "The machine's payload (run) or init (boot) exited with status N; a payload killed by signal N gives 128+N (137: ^] pressed three times, or SIGKILL). A booted machine that powers off or halts gives 0."),
        ],
        Some("completions") => {}
        _ => {}
    }
    items.push((
        "1",
        "A failure; one line on standard error says what failed, on which path, and what to do.",
    ));
    items.push((
        "2",
        "A usage error: a bad option, a missing argument, an invalid image name.",
    ));
    if matches!(
        verb,
        None | Some(
            "clone"
                | "import-fs"
                | "import-tar"
                | "export-tar"
                | "import-raw"
                | "export-raw"
                | "bootstrap"
        )
    ) {
        items.push(("130", "Interrupted (Ctrl-C, SIGTERM, SIGHUP) while creating an image or an export: nothing was created."));
    }
    let mut out = String::from(".SH \"EXIT STATUS\"\n");
    for (code, meaning) in items {
        out.push_str(&format!(".TP\n\\fB{code}\\fR\n{}\n", text(meaning)));
    }
    out
}

const FILES: &[(&str, &str)] = &[
    ("/var/lib/machines", "The image store (--store, RMACH_STORE); shared with systemd-nspawn and machinectl."),
    ("/var/lib/machines/.#NAME.lck", "systemd's lock of image NAME, held by systemd-nspawn, machinectl and rmach alike while they use it."),
    ("/run/systemd/nspawn/locks", "systemd-nspawn's locks of images by device and inode; honoured where present."),
    ("/run/rmach/locks/NAME.lock", "rmach's lock of NAME (--state-dir, RMACH_STATE_DIR): the holder's PID and purpose."),
    ("/var/cache/rmach", "Downloaded packages and pulls (--cache-dir, RMACH_CACHE_DIR)."),
];

/// The extra sections of the page of `verb` (None: rmach(1)), in roff.
pub fn extra_sections(verb: Option<&str>) -> String {
    let mut out = exit_status(verb);
    let examples = EXAMPLES
        .iter()
        .find(|(v, _)| *v == verb.unwrap_or("rmach"))
        .map(|(_, e)| *e)
        .unwrap_or_default();
    if !examples.is_empty() {
        out.push_str(".SH EXAMPLES\n");
        for (command, what) in examples {
            out.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", text(command), text(what)));
        }
    }
    out.push_str(".SH FILES\n");
    for (path, what) in FILES {
        out.push_str(&format!(".TP\n\\fI{}\\fR\n{}\n", text(path), text(what)));
    }
    out.push_str(".SH \"SEE ALSO\"\n");
    let refs: Vec<String> = see_also(verb)
        .into_iter()
        .map(|r| {
            let (name, section) = r.trim_end_matches(')').split_once('(').unwrap_or((r, "1"));
            format!("\\fB{}\\fR({section})", text(name))
        })
        .collect();
    out.push_str(&refs.join(",\n"));
    out.push_str("\n.PP\ndocs/console.md, docs/store.md in rmach's sources.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_has_the_sections_and_no_stray_control_lines() {
        for verb in [None, Some("boot"), Some("list")] {
            let roff = extra_sections(verb);
            for section in [".SH \"EXIT STATUS\"", ".SH FILES", ".SH \"SEE ALSO\""] {
                assert!(roff.contains(section), "{verb:?}: {section}");
            }
            assert!(roff.contains(".SH EXAMPLES"));
            for line in roff.lines() {
                assert!(
                    !line.starts_with('.')
                        || line.starts_with(".SH")
                        || line.starts_with(".TP")
                        || line.starts_with(".PP"),
                    "{line}"
                );
            }
        }
        assert!(extra_sections(Some("boot")).contains("128+N"));
    }

    #[test]
    fn every_example_names_an_existing_verb() {
        let cmd = super::super::command();
        for (verb, _) in EXAMPLES {
            assert!(
                *verb == "rmach" || cmd.find_subcommand(verb).is_some(),
                "{verb}"
            );
        }
    }
}
