//! The checked-in man pages are what the current command line generates. Regenerate them with
//! `scripts/gen-man` after changing the command line.

use std::path::Path;

/// clap_mangen's page with rmach's EXIT STATUS, EXAMPLES, FILES and SEE ALSO before VERSION.
fn render(cmd: &clap::Command, verb: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut out).unwrap();
    let page = String::from_utf8(out).unwrap();
    let extra = rmach::cli::man::extra_sections(verb);
    let at = page.find(".SH VERSION").unwrap_or(page.len());
    format!("{}{extra}{}", &page[..at], &page[at..]).into_bytes()
}

/// rmach.1 for the tool and rmach-VERB.1 for each verb.
fn pages() -> Vec<(String, Vec<u8>)> {
    let cmd = rmach::cli::command();
    let mut pages = vec![("rmach.1".to_string(), render(&cmd, None))];
    for sub in cmd.get_subcommands() {
        let sub_name = sub.get_name().to_string();
        let name = format!("rmach-{sub_name}");
        let sub = sub
            .clone()
            .name(name.clone())
            .version(cmd.get_version().unwrap_or_default().to_string());
        pages.push((format!("{name}.1"), render(&sub, Some(sub_name.as_str()))));
    }
    pages
}

#[test]
fn man_pages_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/man");
    let regenerate = std::env::var_os("RMACH_REGENERATE_DOCS").is_some();
    if regenerate {
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
    }
    let pages = pages();
    for (file, content) in &pages {
        let path = dir.join(file);
        if regenerate {
            std::fs::write(&path, content).unwrap();
        }
        let current = std::fs::read(&path).unwrap_or_default();
        assert!(
            current == *content,
            "{} is stale: run scripts/gen-man",
            path.display()
        );
    }
    let on_disk = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(
        on_disk,
        pages.len(),
        "docs/man holds pages of verbs that no longer exist"
    );
}
