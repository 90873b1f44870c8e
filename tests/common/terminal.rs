//! A terminal for console tests: a command run under `script` (util-linux), which gives it a
//! pty as stdin, stdout and stderr, as a person's terminal would. The test types into it and
//! waits for text to appear, reading the output live.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Terminal {
    child: Child,
    input: Option<ChildStdin>,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Terminal {
    /// Starts `cmd` (with its environment) on a new terminal of 30 rows and 100 columns.
    pub fn spawn(cmd: &Command) -> Terminal {
        let mut child = super::on_terminal("stty rows 30 cols 100; ", cmd)
            .env("TERM", "xterm")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("script (util-linux) is needed for console tests");
        let input = child.stdin.take();
        let mut stdout = child.stdout.take().unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Terminal {
            child,
            input,
            output,
        }
    }

    /// Everything shown so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until `needle` appears after byte `from` of the output; returns where it ends.
    pub fn wait_for_after(&self, from: usize, needle: &str, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let text = self.text();
            if let Some(at) = text.get(from..).and_then(|t| t.find(needle)) {
                return from + at + needle.len();
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} did not appear within {limit:?}; the terminal shows:\n{}",
                tail(&text)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_for(&self, needle: &str, limit: Duration) -> usize {
        self.wait_for_after(0, needle, limit)
    }

    /// Types `keys`.
    pub fn type_keys(&mut self, keys: &[u8]) {
        let input = self.input.as_mut().expect("input open");
        input.write_all(keys).unwrap();
        input.flush().unwrap();
    }

    /// Waits for the command to end; the exit status of what ran on the terminal.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader collect the last bytes.
                std::thread::sleep(Duration::from_millis(200));
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {limit:?}; the terminal shows:\n{}",
                tail(&self.text())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn tail(text: &str) -> &str {
    let start = text.len().saturating_sub(3000);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    &text[start..]
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // What runs on the terminal first (rmach; its machine dies with it), then script.
            let pid = self.child.id();
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            for child in children.split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", child]).status();
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
