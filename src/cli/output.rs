//! How rmach talks to the person at the terminal: one-line errors, progress bars only on a
//! terminal, nothing but errors under `--quiet`, JSON documents on stdout.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A usage error found after parsing (a bad name, a conflicting option): exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn is_usage_error(err: &anyhow::Error) -> bool {
    err.downcast_ref::<UsageError>().is_some()
        || matches!(
            err.downcast_ref::<crate::store::StoreError>(),
            Some(crate::store::StoreError::InvalidName { .. })
        )
}

/// clap's multi-line usage error as one line: the message, its hints, and where help is.
pub fn one_line_usage_error(err: &clap::Error) -> String {
    let text = err.to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information")
        })
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect();
    format!("{} (see 'rmach --help')", parts.join("; "))
}

pub struct Output {
    quiet: bool,
    verbose: bool,
    stderr_is_terminal: bool,
}

impl Output {
    pub fn new(quiet: bool, verbose: bool) -> Output {
        Output {
            quiet,
            verbose,
            stderr_is_terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Prints the error and its causes on one line: `rmach: what failed: why`.
    pub fn error(&self, err: &anyhow::Error) {
        let mut line = String::new();
        for (i, cause) in err.chain().enumerate() {
            let text = cause.to_string();
            // thiserror variants often repeat their source's text; print it once.
            if i > 0 && line.ends_with(&text) {
                continue;
            }
            if i > 0 {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        let _ = writeln!(std::io::stderr(), "rmach: {}", line.replace('\n', " "));
    }

    /// A message for a person watching: only on a terminal and never under `--quiet`.
    pub fn info(&self, message: &str) {
        if !self.quiet && (self.stderr_is_terminal || self.verbose) {
            let _ = writeln!(std::io::stderr(), "{message}");
        }
    }

    /// A warning: printed unless `--quiet`, even when not on a terminal.
    pub fn warn(&self, message: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stderr(), "rmach: warning: {message}");
        }
    }

    pub fn verbose(&self, message: &str) {
        if self.verbose && !self.quiet {
            let _ = writeln!(std::io::stderr(), "{message}");
        }
    }

    /// A progress bar that draws only when stderr is a terminal and `--quiet` is off.
    pub fn progress(&self, total: Option<u64>, message: &str) -> ProgressBar {
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
    pub fn json<T: serde::Serialize>(&self, value: &T) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut stdout, value)?;
        writeln!(stdout)?;
        Ok(())
    }
}
