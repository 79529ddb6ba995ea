//! `--env-file PATH`: variables for the server, read again for every
//! worker sockvisor starts, so that `edit the file; sockvisor upgrade` is
//! the reload (as Server::Starter's `--envdir` and systemd's
//! `EnvironmentFile=`).
//!
//! The syntax is the part systemd's `EnvironmentFile=` and Docker's
//! `--env-file` share, with quotes as systemd reads them:
//!
//! - one `KEY=VALUE` a line; `KEY` is a shell name (`[A-Za-z_][A-Za-z0-9_]*`),
//!   an `export ` before it is allowed;
//! - blank lines and lines starting with `#` or `;` are ignored; leading
//!   white space is ignored;
//! - `VALUE` is taken to the end of the line, trailing white space removed
//!   (a `#` in it is part of the value); or quoted: `'…'` literally, `"…"`
//!   with `\"`, `\\`, `\$`, `` \` `` and `\n` (a newline); nothing but white
//!   space may follow the closing quote;
//! - not understood, and an error: a line without `=`, a bare `KEY`
//!   (Docker's "take it from my environment"), a backslash continuation, an
//!   unterminated quote, a variable sockvisor sets itself (`LISTEN_*`,
//!   `NOTIFY_SOCKET`, `SOCKVISOR_*`, `WATCHDOG_*`, einhorn's and
//!   Server::Starter's).
//!
//! Later files override earlier ones, and a file's variables override
//! sockvisor's own environment. A `-` before the path (`-/etc/app.env`)
//! makes the file optional, as in systemd: missing, it is skipped. Errors
//! read `PATH:LINE: what is wrong`. This module reads files; it starts
//! nothing.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Largest environment file read.
const MAX_FILE: u64 = 1024 * 1024;

/// One `--env-file` as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvFile {
    pub path: PathBuf,
    /// `-PATH`: a missing file is skipped.
    pub optional: bool,
}

impl EnvFile {
    /// Parses the flag's value: `PATH` or `-PATH`.
    pub fn parse(text: &str) -> Result<EnvFile, String> {
        let (optional, path) = match text.strip_prefix('-') {
            Some(path) => (true, path),
            None => (false, text),
        };
        if path.is_empty() {
            return Err("--env-file needs a path (a leading '-' makes it optional)".into());
        }
        Ok(EnvFile {
            path: PathBuf::from(path),
            optional,
        })
    }
}

/// What the files said when they were read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    /// In order; a later one with the same key wins.
    pub variables: Vec<(String, String)>,
    /// A digest of every file's bytes, in order: the same files give the
    /// same digest.
    pub digest: String,
    pub read_at: SystemTime,
}

/// Reads every file, in order.
pub fn read_all(files: &[EnvFile]) -> Result<Environment, String> {
    let mut variables: Vec<(String, String)> = Vec::new();
    let mut contents = Vec::new();
    for file in files {
        let Some(text) = read_one(file)? else {
            continue;
        };
        for (key, value) in parse(&text, &file.path)? {
            variables.retain(|(k, _)| *k != key);
            variables.push((key, value));
        }
        contents.extend_from_slice(file.path.as_os_str().as_encoded_bytes());
        contents.push(0);
        contents.extend_from_slice(text.as_bytes());
        contents.push(0);
    }
    Ok(Environment {
        variables,
        digest: crate::digest::short(&contents),
        read_at: SystemTime::now(),
    })
}

fn read_one(file: &EnvFile) -> Result<Option<String>, String> {
    let path = file.path.display();
    let meta = match std::fs::metadata(&file.path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && file.optional => return Ok(None),
        Err(e) => return Err(format!("{path}: cannot read the environment file: {e}")),
    };
    if !meta.is_file() {
        return Err(format!("{path}: not a regular file"));
    }
    if meta.len() > MAX_FILE {
        return Err(format!("{path}: larger than {MAX_FILE} bytes"));
    }
    let bytes = std::fs::read(&file.path)
        .map_err(|e| format!("{path}: cannot read the environment file: {e}"))?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| format!("{path}: not UTF-8 text"))
}

/// The variables of one file's text.
pub fn parse(text: &str, path: &Path) -> Result<Vec<(String, String)>, String> {
    let mut variables = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let fail = |why: String| format!("{}:{}: {why}", path.display(), number + 1);
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, raw)) = line.split_once('=') else {
            return Err(fail(format!(
                "expected KEY=VALUE, got {:?}",
                crate::output::printable(line)
            )));
        };
        let key = key.trim_end();
        if !is_name(key) {
            return Err(fail(format!(
                "{:?} is not a variable name (letters, digits and '_', not starting with a digit)",
                crate::output::printable(key)
            )));
        }
        if is_sockvisors_own(key) {
            return Err(fail(format!(
                "{key} is set by sockvisor itself and cannot be overridden"
            )));
        }
        let value = value(raw.trim_start()).map_err(fail)?;
        variables.push((key.to_string(), value));
    }
    Ok(variables)
}

fn is_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Variables sockvisor sets for its children (or never passes on).
fn is_sockvisors_own(key: &str) -> bool {
    [
        "LISTEN_",
        "SOCKVISOR_",
        "WATCHDOG_",
        "EINHORN_",
        "SERVER_STARTER_",
    ]
    .iter()
    .any(|prefix| key.starts_with(prefix))
        || key == "NOTIFY_SOCKET"
}

fn value(raw: &str) -> Result<String, String> {
    let (value, rest) = match raw.chars().next() {
        Some('\'') => {
            let end = raw[1..].find('\'').ok_or("unterminated single quote")?;
            (raw[1..1 + end].to_string(), &raw[2 + end..])
        }
        Some('"') => double_quoted(&raw[1..])?,
        _ => {
            let value = raw.trim_end();
            if value.ends_with('\\') {
                return Err(
                    "a backslash continuation is not supported: put the value on one line".into(),
                );
            }
            return Ok(value.to_string());
        }
    };
    if !rest.trim().is_empty() {
        return Err(format!(
            "unexpected {:?} after the closing quote",
            crate::output::printable(rest.trim())
        ));
    }
    Ok(value)
}

/// The value of `"…"` (opening quote already taken) and what follows it.
fn double_quoted(raw: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut chars = raw.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &raw[at + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, escaped @ ('"' | '\\' | '$' | '`'))) => value.push(escaped),
                Some((_, other)) => {
                    value.push('\\');
                    value.push(other);
                }
                None => break,
            },
            other => value.push(other),
        }
    }
    Err("unterminated double quote".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(text: &str) -> Vec<(String, String)> {
        parse(text, Path::new("app.env")).unwrap()
    }

    fn error(text: &str) -> String {
        parse(text, Path::new("app.env")).unwrap_err()
    }

    fn pair(key: &str, value: &str) -> (String, String) {
        (key.to_string(), value.to_string())
    }

    #[test]
    fn plain_quoted_exported_and_commented_lines_are_read() {
        let text = "# a comment\n; another\n\nA=1\nexport B=two words  \nC='it is $HOME' \nD=\"say \\\"hi\\\"\\n\"\n  E = x#y\nF=\n";
        assert_eq!(
            vars(text),
            [
                pair("A", "1"),
                pair("B", "two words"),
                pair("C", "it is $HOME"),
                pair("D", "say \"hi\"\n"),
                pair("E", "x#y"),
                pair("F", ""),
            ]
        );
    }

    #[test]
    fn each_error_names_the_file_and_the_line() {
        assert_eq!(
            error("A=1\nnot a pair\n"),
            "app.env:2: expected KEY=VALUE, got \"not a pair\""
        );
        assert!(error("1A=x").starts_with("app.env:1: \"1A\" is not a variable name"));
        assert_eq!(error("A='open"), "app.env:1: unterminated single quote");
        assert_eq!(error("A=\"open"), "app.env:1: unterminated double quote");
        assert!(error("A='x' y").contains("after the closing quote"));
        assert!(error("A=x \\").contains("backslash continuation"));
        assert_eq!(
            error("\n\nLISTEN_FDS=9"),
            "app.env:3: LISTEN_FDS is set by sockvisor itself and cannot be overridden"
        );
        assert!(error("NOTIFY_SOCKET=/x").contains("set by sockvisor itself"));
    }

    #[test]
    fn a_later_file_overrides_an_earlier_one_and_a_missing_optional_one_is_skipped() {
        let dir = crate::test_dir::TestDir::new("env-files");
        std::fs::write(dir.join("a.env"), "A=1\nB=1\n").unwrap();
        std::fs::write(dir.join("b.env"), "B=2\n").unwrap();
        let files = [
            EnvFile::parse(&dir.join("a.env").display().to_string()).unwrap(),
            EnvFile::parse(&format!("-{}", dir.join("missing.env").display())).unwrap(),
            EnvFile::parse(&dir.join("b.env").display().to_string()).unwrap(),
        ];
        let environment = read_all(&files).unwrap();
        assert_eq!(environment.variables, [pair("A", "1"), pair("B", "2")]);
        std::fs::write(dir.join("b.env"), "B=3\n").unwrap();
        assert_ne!(read_all(&files).unwrap().digest, environment.digest);
        let required = EnvFile::parse(&dir.join("missing.env").display().to_string()).unwrap();
        assert!(
            read_all(&[required])
                .unwrap_err()
                .contains("missing.env: cannot read")
        );
    }
}
