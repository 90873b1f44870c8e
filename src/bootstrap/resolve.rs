//! debootstrap's resolver, reproduced exactly: seeds by Priority (required, plus important for
//! the default variant) or `apt`/`build-essential`; Depends and Pre-Depends followed through
//! their first alternative with versions and arch qualifiers dropped; names no stanza provides
//! (virtual packages) dropped; `--exclude` applied to the seeds only; the suite's excluded
//! dependencies (usrmerge) dropped wherever they appear as a dependency.

use std::collections::BTreeSet;

use super::packages::Index;
use super::suites::{Rules, Variant};

/// The two lists debootstrap installs: `required` in the first stage, `base` after it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PackageSet {
    pub(crate) required: Vec<String>,
    pub(crate) base: Vec<String>,
}

impl PackageSet {
    pub(crate) fn all(&self) -> Vec<String> {
        let mut all: Vec<String> = self.required.iter().chain(&self.base).cloned().collect();
        all.sort();
        all
    }
}

/// The names a package's Depends/Pre-Depends values pull in, as debootstrap's pkgdetails does.
pub(crate) fn dep_names(field: &str) -> impl Iterator<Item = &str> {
    field.split(',').filter_map(|d| {
        let d = d.split('|').next().unwrap_or("");
        let d = match (d.find('('), d.rfind(')')) {
            (Some(a), Some(b)) if b > a => &d[..a],
            _ => d,
        };
        let d = d.split(':').next().unwrap_or("").trim();
        (!d.is_empty()).then_some(d)
    })
}

/// debootstrap's `resolve_deps`: the closure of `seeds`, unknown seeds kept.
pub(crate) fn resolve_deps(
    index: &Index,
    seeds: &BTreeSet<String>,
    exclude_dependency: &[&str],
) -> BTreeSet<String> {
    let mut all = seeds.clone();
    let mut frontier = seeds.clone();
    while !frontier.is_empty() {
        let mut candidates = frontier.clone();
        for pkg in &frontier {
            for field in index.dep_fields(pkg) {
                for dep in dep_names(field) {
                    if !exclude_dependency.contains(&dep) {
                        candidates.insert(dep.to_string());
                    }
                }
            }
        }
        frontier = candidates
            .into_iter()
            .filter(|p| index.contains(p) && !all.contains(p))
            .collect();
        all.extend(frontier.iter().cloned());
    }
    all
}

/// The full package set for a suite, variant, `--include` and `--exclude`. `https` adds
/// ca-certificates as debootstrap does for an https mirror.
pub fn resolve_set(
    index: &Index,
    rules: &Rules,
    variant: Variant,
    include: &[String],
    exclude: &[String],
    https: bool,
) -> PackageSet {
    let mut required = index.with_priority("required");
    required.extend(rules.extra_required.iter().map(|s| s.to_string()));
    let mut base: Vec<String> = match variant {
        Variant::Default => index.with_priority("important"),
        Variant::Buildd => vec!["apt".into(), "build-essential".into()],
        Variant::Minbase => vec!["apt".into()],
    };
    if https {
        base.push("ca-certificates".into());
    }
    base.extend(include.iter().cloned());
    let keep = |p: &String| !exclude.contains(p);
    let required_x: BTreeSet<String> = required.into_iter().filter(keep).collect();
    let base_x: BTreeSet<String> = base.into_iter().filter(keep).collect();
    let required = resolve_deps(index, &required_x, &rules.exclude_dependency);
    let base = resolve_deps(index, &base_x, &rules.exclude_dependency);
    PackageSet {
        base: base.difference(&required).cloned().collect(),
        required: required.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::suites::Distro;

    fn stanza(name: &str, prio: &str, deps: &str) -> String {
        format!("Package: {name}\nPriority: {prio}\nDepends: {deps}\nSize: 1\n\n")
    }

    #[test]
    fn first_alternative_versions_virtuals_and_excludes() {
        let text = [
            stanza(
                "a",
                "required",
                "b (>= 1) | c, virt, d:any (<< 3), usrmerge",
            ),
            stanza("b", "optional", "e"),
            stanza("c", "optional", ""),
            stanza("d", "optional", ""),
            stanza("e", "optional", ""),
            stanza("usrmerge", "optional", ""),
            stanza("x", "required", ""),
            stanza("i", "important", "a"),
            stanza("apt", "important", "b"),
        ]
        .concat();
        let index = Index::parse(text, "u").unwrap();
        let rules = Rules::new(Distro::Debian, "trixie", Variant::Default);
        let set = resolve_set(&index, &rules, Variant::Default, &[], &["x".into()], false);
        assert_eq!(set.required, ["a", "b", "d", "e"]);
        assert_eq!(set.base, ["apt", "i"]);
        let old = Rules::new(Distro::Debian, "bullseye", Variant::Minbase);
        let set = resolve_set(&index, &old, Variant::Minbase, &["c".into()], &[], false);
        assert_eq!(set.required, ["a", "b", "d", "e", "usrmerge", "x"]);
        assert_eq!(set.base, ["apt", "c"]);
    }
}
