//! `rmach completions SHELL`: clap's completion script, plus completion of image names (from
//! `rmach list --names`, so it follows `RMACH_STORE`) where a verb takes an existing image.

use std::io::Write;

/// Verbs whose first argument is an existing image (`remove`: every argument).
const IMAGE_VERBS: &[&str] = &[
    "show",
    "remove",
    "rename",
    "clone",
    "read-only",
    "export-tar",
    "export-raw",
    "export-oci",
    "push-oci",
    "run",
    "boot",
    "start",
    "stop",
    "kill",
    "reboot",
    "status",
    "shell",
    "login",
    "set",
    "enable",
    "disable",
    "copy-to",
    "copy-from",
    "bind",
];

/// The verbs of `cmd` that take an image.
fn image_verbs(cmd: &clap::Command) -> Vec<&'static str> {
    IMAGE_VERBS
        .iter()
        .copied()
        .filter(|v| cmd.find_subcommand(v).is_some())
        .collect()
}

/// The completion script for `shell`.
pub(crate) fn script(shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = super::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "rmach", &mut out);
    let verbs = image_verbs(&cmd);
    match shell {
        clap_complete::Shell::Bash => bash(&mut out, &verbs),
        clap_complete::Shell::Zsh => return zsh(&out),
        clap_complete::Shell::Fish => fish(&mut out, &verbs),
        _ => {}
    }
    out
}

fn bash(out: &mut Vec<u8>, verbs: &[&str]) {
    let _ = write!(
        out,
        r#"
# Image names where a verb takes an existing image.
_rmach_with_images() {{
    _rmach "$@"
    local cur="${{COMP_WORDS[COMP_CWORD]}}" verb="" n=0 i
    [[ $cur == -* ]] && return 0
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            --store|--state-dir|--cache-dir) ((i++)) ;;
            -*) ;;
            *) if [[ -z $verb ]]; then verb=${{COMP_WORDS[i]}}; else ((n++)); fi ;;
        esac
    done
    case "$verb" in
        remove) ;;
        {}) [[ $n -eq 0 ]] || return 0 ;;
        *) return 0 ;;
    esac
    COMPREPLY=( $(compgen -W "$(rmach list --names 2>/dev/null)" -- "$cur") )
}}
complete -F _rmach_with_images -o bashdefault -o default rmach
"#,
        verbs.join("|")
    );
}

/// zsh: the image arguments' action becomes `_rmach_images`.
fn zsh(generated: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(generated);
    let mut out = String::new();
    let function = "_rmach_images() {\n    local -a images\n    images=(${(f)\"$(rmach list --names 2>/dev/null)\"})\n    compadd -a images\n}\n\n";
    let mut inserted = false;
    for line in text.lines() {
        let image_arg = [
            "':name -- The image",
            "'*::names -- The images",
            "':old -- The image",
            "':source -- The image",
        ]
        .iter()
        .any(|p| line.starts_with(p));
        if !inserted && line.starts_with("if [ \"$funcstack[1]\" = \"_rmach\" ]") {
            out.push_str(function);
            inserted = true;
        }
        if image_arg {
            out.push_str(&line.replacen(":_default'", ":_rmach_images'", 1));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    if !inserted {
        out.push_str(function);
    }
    out.into_bytes()
}

fn fish(out: &mut Vec<u8>, verbs: &[&str]) {
    let _ = writeln!(out, "\n# Image names where a verb takes an existing image.");
    for verb in verbs {
        let _ = writeln!(
            out,
            "complete -c rmach -n \"__fish_rmach_using_subcommand {verb}\" -f -a \"(rmach list --names 2>/dev/null)\" -d image"
        );
    }
}
