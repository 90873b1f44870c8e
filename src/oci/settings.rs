//! What an OCI image's config says to run, kept beside the image in the store as a
//! systemd-nspawn settings file (`NAME.nspawn`, the file machinectl and systemd-nspawn read
//! for an image in /var/lib/machines), so `rmach run NAME` and `systemd-nspawn -M NAME` both
//! run what the image would: `Parameters=` (Entrypoint then Cmd), one `Environment=` per
//! variable, `WorkingDirectory=` and `User=`. Values are quoted as systemd unquotes them.

use super::spec::ExecConfig;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RunSettings {
    pub(crate) command: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) working_dir: Option<String>,
    pub(crate) user: Option<String>,
}

impl RunSettings {
    pub(crate) fn from_config(c: &ExecConfig) -> RunSettings {
        let mut command = c.entrypoint.clone().unwrap_or_default();
        command.extend(c.cmd.clone().unwrap_or_default());
        let env = c
            .env
            .iter()
            .flatten()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RunSettings {
            command,
            env,
            working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
            // nspawn and rmach take a user name or UID; a "uid:gid" keeps its user part.
            user: c
                .user
                .as_deref()
                .map(|u| u.split(':').next().unwrap_or(u).to_string())
                .filter(|u| !u.is_empty()),
        }
    }

    /// The ExecConfig these settings stand for (for an image pushed again).
    pub(crate) fn to_config(&self) -> ExecConfig {
        ExecConfig {
            user: self.user.clone(),
            env: (!self.env.is_empty())
                .then(|| self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            entrypoint: None,
            cmd: (!self.command.is_empty()).then(|| self.command.clone()),
            working_dir: self.working_dir.clone(),
        }
    }

    /// The settings file text; `origin` (the image's source) goes in a comment.
    pub(crate) fn to_nspawn(&self, origin: &str) -> String {
        let mut out = format!(
            "# Written by rmach from the OCI image config of {}\n[Exec]\n",
            origin.replace('\n', " ")
        );
        if !self.command.is_empty() {
            let words: Vec<String> = self.command.iter().map(|w| quote(w)).collect();
            out.push_str(&format!("Parameters={}\n", words.join(" ")));
        }
        for (k, v) in &self.env {
            out.push_str(&format!("Environment={}\n", quote(&format!("{k}={v}"))));
        }
        if let Some(w) = &self.working_dir {
            out.push_str(&format!("WorkingDirectory={}\n", quote(w)));
        }
        if let Some(u) = &self.user {
            out.push_str(&format!("User={}\n", quote(u)));
        }
        out
    }

    /// Reads the [Exec] keys rmach writes from a settings file; other keys are ignored.
    pub(crate) fn from_nspawn(text: &str) -> RunSettings {
        let mut s = RunSettings::default();
        let mut in_exec = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
                continue;
            }
            if line.starts_with('[') {
                in_exec = line == "[Exec]";
                continue;
            }
            let Some((key, value)) = line.split_once('=').filter(|_| in_exec) else {
                continue;
            };
            let words = unquote(value.trim());
            match key.trim() {
                "Parameters" => s.command = words,
                "Environment" => {
                    for w in words {
                        if let Some((k, v)) = w.split_once('=') {
                            s.env.push((k.into(), v.into()));
                        }
                    }
                }
                "WorkingDirectory" => s.working_dir = words.into_iter().next(),
                "User" => s.user = words.into_iter().next(),
                _ => {}
            }
        }
        s
    }
}

/// A word in double quotes when it needs them, with `\` before `"` and `\`.
fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"\"'\\".contains(&b));
    if plain {
        return word.to_string();
    }
    let mut out = String::from("\"");
    for c in word.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Splits on whitespace, honouring double and single quotes and backslash escapes.
fn unquote(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return words;
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            match (c, quote) {
                ('\\', _) => match chars.next() {
                    Some('n') => word.push('\n'),
                    Some('t') => word.push('\t'),
                    Some(other) => word.push(other),
                    None => {}
                },
                ('"' | '\'', None) => quote = Some(c),
                (c, Some(q)) if c == q => quote = None,
                (c, None) if c.is_whitespace() => break,
                (c, _) => word.push(c),
            }
        }
        words.push(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_nspawn_text() {
        let s = RunSettings {
            command: vec!["/bin/sh".into(), "-c".into(), "echo \"a b\" \\ $X".into()],
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("GREETING".into(), "hello world".into()),
            ],
            working_dir: Some("/srv/my app".into()),
            user: Some("1000".into()),
        };
        let text = s.to_nspawn("reg.test/x:1");
        assert!(
            text.contains("[Exec]\nParameters=/bin/sh -c \"echo"),
            "{text}"
        );
        assert_eq!(RunSettings::from_nspawn(&text), s);
    }

    #[test]
    fn from_config_joins_entrypoint_and_cmd() {
        let c = ExecConfig {
            entrypoint: Some(vec!["/entry".into()]),
            cmd: Some(vec!["arg".into()]),
            user: Some("app:app".into()),
            env: Some(vec!["A=1".into(), "broken".into()]),
            working_dir: Some(String::new()),
        };
        let s = RunSettings::from_config(&c);
        assert_eq!(s.command, vec!["/entry", "arg"]);
        assert_eq!(s.user.as_deref(), Some("app"));
        assert_eq!(s.env, vec![("A".into(), "1".into())]);
        assert_eq!(s.working_dir, None);
    }
}
