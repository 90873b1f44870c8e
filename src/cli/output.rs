//! How rmach talks to the person at the terminal: one-line errors, progress bars only on a
//! terminal, nothing but errors under `--quiet`, JSON documents on stdout.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A usage error found after parsing (a bad name, a conflicting option): exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub String);

/// A library error that means the command line was wrong (a bad reference, a bad size): exit
/// status 2, said as the error itself says it, its causes kept.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub(crate) struct InvalidArgument(pub Box<dyn std::error::Error + Send + Sync>);

/// `map_err(invalid)`: a library error that is a usage error.
pub(crate) fn invalid(err: impl std::error::Error + Send + Sync + 'static) -> InvalidArgument {
    InvalidArgument(Box::new(err))
}

pub(crate) fn is_usage_error(err: &anyhow::Error) -> bool {
    err.downcast_ref::<UsageError>().is_some()
        || err.downcast_ref::<InvalidArgument>().is_some()
        || matches!(
            err.downcast_ref::<crate::store::StoreError>(),
            Some(crate::store::StoreError::InvalidName { .. })
        )
}

/// Whether the error is a write to a closed pipe (`rmach list | head -1`): not a failure.
pub(crate) fn is_broken_pipe(err: &anyhow::Error) -> bool {
    let broken = Some(std::io::ErrorKind::BrokenPipe);
    err.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().map(|e| e.kind()) == broken
            || cause
                .downcast_ref::<serde_json::Error>()
                .and_then(|e| e.io_error_kind())
                == broken
    })
}

/// Whether the error comes from a full file system or quota (ENOSPC, EDQUOT).
pub(crate) fn is_no_space(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .and_then(|e| e.raw_os_error())
            .is_some_and(|n| n == libc::ENOSPC || n == libc::EDQUOT)
    })
}

/// clap's multi-line usage error as one line: the message, its hints, the verb's usage.
pub(crate) fn one_line_usage_error(err: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let text = err.to_string();
    // The verb's own usage line (clap's error shows the globals' defaults as required).
    let usage = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage: "))
        .map(|usage| {
            let verb = usage.split_whitespace().nth(1).unwrap_or_default();
            let mut cmd = super::command();
            cmd.build();
            match cmd.find_subcommand_mut(verb) {
                Some(sub) => sub.render_usage().to_string(),
                None => usage.to_string(),
            }
        })
        .map(|u| u.trim().trim_start_matches("Usage: ").to_string());
    let mut message = match (err.kind(), err.get(ContextKind::InvalidArg)) {
        (ErrorKind::MissingRequiredArgument, Some(ContextValue::Strings(missing))) => {
            format!("missing {}", missing.join(", "))
        }
        _ => text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| l.strip_prefix("error: ").unwrap_or(l).to_string())
            .unwrap_or_default(),
    };
    // A suggestion only for a near miss (`lsit` → `list`), not for any word that shares letters.
    if let (Some(ContextValue::String(typed)), Some(ContextValue::Strings(suggested))) = (
        err.get(ContextKind::InvalidSubcommand),
        err.get(ContextKind::SuggestedSubcommand),
    ) {
        if let Some(near) = suggested.iter().find(|s| edit_distance(typed, s) <= 2) {
            message.push_str(&format!(" (did you mean '{near}'?)"));
        }
    }
    if err.kind() == ErrorKind::InvalidSubcommand {
        message.push_str("; 'rmach --help' lists the verbs");
        return message;
    }
    match usage {
        Some(usage) => format!("{message}; usage: {usage}"),
        None => format!("{message} (see 'rmach --help')"),
    }
}

/// Levenshtein distance, for deciding whether a suggestion is a near miss.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// One cause's text: Rust's ` (os error N)` suffix dropped, the way a person says it.
fn cause_text(cause: &(dyn std::error::Error + 'static)) -> String {
    let text = cause.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_string(),
        _ => text,
    }
}

/// The error and its causes on one line, each cause once: `what failed: why`.
pub(crate) fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause_text(cause);
        if text.is_empty() {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

pub(crate) struct Output {
    quiet: bool,
    verbose: bool,
    stderr_is_terminal: bool,
}

impl Output {
    pub(crate) fn new(quiet: bool, verbose: bool) -> Output {
        Output {
            quiet,
            verbose,
            stderr_is_terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Prints the error and its causes on one line: `rmach: what failed: why`.
    pub(crate) fn error(&self, err: &anyhow::Error) {
        let _ = writeln!(std::io::stderr(), "rmach: {}", error_line(err));
    }

    /// A message for a person watching: only on a terminal and never under `--quiet`.
    pub(crate) fn info(&self, message: &str) {
        if !self.quiet && (self.stderr_is_terminal || self.verbose) {
            let _ = writeln!(std::io::stderr(), "{message}");
        }
    }

    /// A warning: printed unless `--quiet`, even when not on a terminal.
    pub(crate) fn warn(&self, message: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stderr(), "rmach: warning: {message}");
        }
    }

    pub(crate) fn verbose(&self, message: &str) {
        if self.verbose && !self.quiet {
            let _ = writeln!(std::io::stderr(), "{message}");
        }
    }

    /// A progress bar that draws only when stderr is a terminal and `--quiet` is off.
    pub(crate) fn progress(&self, total: Option<u64>, message: &str) -> ProgressBar {
        if self.quiet || !self.stderr_is_terminal {
            return ProgressBar::hidden();
        }
        let bar = match total {
            Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
                .with_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                    )
                    .expect("static template")
                    .progress_chars("=> "),
                ),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
                ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
                    .expect("static template"),
            ),
        };
        bar.set_message(message.to_string());
        bar
    }

    /// Prints one JSON document on stdout.
    pub(crate) fn json<T: serde::Serialize>(&self, value: &T) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut stdout, value)?;
        writeln!(stdout)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{path}")]
    struct AtPath {
        path: String,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn each_cause_once_without_os_error_numbers() {
        let io = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let err = anyhow::Error::new(AtPath {
            path: "/s/x".into(),
            source: io,
        })
        .context("cannot import x");
        assert_eq!(
            error_line(&err),
            "cannot import x: /s/x: No space left on device"
        );
    }

    #[test]
    fn near_misses_only() {
        assert_eq!(edit_distance("lsit", "list"), 2);
        assert!(edit_distance("login", "clone") > 2);
    }
}
