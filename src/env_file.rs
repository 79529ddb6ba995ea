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
//! read `PATH:LINE: what is wrong`, without the line's text: the file may
//! be one sockvisor, as root, can read and whoever chose the path cannot
//! (only a name sockvisor reserves, such as `LISTEN_FDS`, is ever named).
//! A value may hold no NUL byte and at most what the kernel passes for one
//! variable. This module reads files; it starts nothing.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Largest environment file read.
const MAX_FILE: u64 = 1024 * 1024;

/// The longest `KEY=VALUE` the kernel passes to a program
/// (`MAX_ARG_STRLEN`, its terminating NUL included).
const MAX_VARIABLE: usize = 128 * 1024;

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
    // A later value replaces an earlier one and goes last; found through
    // `at`, so that a file of many lines is not read in quadratic time.
    let mut slots: Vec<Option<(String, String)>> = Vec::new();
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut contents = Vec::new();
    for file in files {
        let Some(text) = read_one(file)? else {
            continue;
        };
        for (key, value) in parse(&text, &file.path)? {
            if let Some(earlier) = at.insert(key.clone(), slots.len()) {
                slots[earlier] = None;
            }
            slots.push(Some((key, value)));
        }
        contents.extend_from_slice(file.path.as_os_str().as_encoded_bytes());
        contents.push(0);
        contents.extend_from_slice(text.as_bytes());
        contents.push(0);
    }
    Ok(Environment {
        variables: slots.into_iter().flatten().collect(),
        digest: crate::digest::short(&contents),
        read_at: SystemTime::now(),
    })
}

/// One file's text. Opened without waiting (a FIFO or a device put in its
/// place is refused, never waited on) and read to at most one byte more
/// than the limit, whatever size the file claims (`/proc` files claim 0).
fn read_one(file: &EnvFile) -> Result<Option<String>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let path = file.path.display();
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&file.path);
    let opened = match opened {
        Ok(opened) => opened,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && file.optional => return Ok(None),
        Err(e) => return Err(format!("{path}: cannot read the environment file: {e}")),
    };
    let meta = opened
        .metadata()
        .map_err(|e| format!("{path}: cannot read the environment file: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{path}: not a regular file"));
    }
    let mut bytes = Vec::new();
    opened
        .take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => {
                format!("{path}: reading it would wait: not an ordinary file")
            }
            _ => format!("{path}: cannot read the environment file: {e}"),
        })?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(format!("{path}: larger than {MAX_FILE} bytes"));
    }
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
            return Err(fail(
                "expected KEY=VALUE, but the line has no '='".to_string(),
            ));
        };
        let key = key.trim_end();
        if !is_name(key) {
            return Err(fail(
                "what comes before '=' is not a variable name (letters, digits and '_', not starting with a digit)"
                    .to_string(),
            ));
        }
        if is_sockvisors_own(key) {
            return Err(fail(format!(
                "{key} is set by sockvisor itself and cannot be overridden"
            )));
        }
        let value = value(raw.trim_start()).map_err(fail)?;
        if value.contains('\0') {
            return Err(fail(
                "the value holds a NUL byte, which no variable can".to_string(),
            ));
        }
        if key.len() + 1 + value.len() + 1 > MAX_VARIABLE {
            return Err(fail(format!(
                "the variable is longer than the kernel passes to a program ({} KiB, KEY=VALUE)",
                MAX_VARIABLE / 1024
            )));
        }
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
        return Err("something other than white space follows the closing quote".into());
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
            "app.env:2: expected KEY=VALUE, but the line has no '='"
        );
        assert!(
            error("1A=x").starts_with("app.env:1: what comes before '=' is not a variable name")
        );
        assert_eq!(error("A='open"), "app.env:1: unterminated single quote");
        assert_eq!(error("A=\"open"), "app.env:1: unterminated double quote");
        assert!(error("A='x' y").contains("follows the closing quote"));
        assert!(error("A=x \\").contains("backslash continuation"));
        assert_eq!(
            error("\n\nLISTEN_FDS=9"),
            "app.env:3: LISTEN_FDS is set by sockvisor itself and cannot be overridden"
        );
        assert!(error("NOTIFY_SOCKET=/x").contains("set by sockvisor itself"));
    }

    #[test]
    fn no_error_quotes_the_text_of_the_file() {
        // As if the path named /etc/shadow.
        let secret = "root:$6$secrethash:19000:0:99999:7:::";
        for text in [
            secret.to_string(),
            format!("{secret}=x"),
            format!("A='x' {secret}"),
        ] {
            let why = error(&text);
            assert!(!why.contains("secrethash"), "{why}");
        }
    }

    #[test]
    fn a_nul_byte_or_a_value_the_kernel_cannot_pass_is_an_error() {
        assert_eq!(
            error("A=1\nB=x\0y\n"),
            "app.env:2: the value holds a NUL byte, which no variable can"
        );
        let long = format!("A={}", "x".repeat(MAX_VARIABLE));
        assert_eq!(
            error(&long),
            "app.env:1: the variable is longer than the kernel passes to a program (128 KiB, KEY=VALUE)"
        );
        let longest = format!("A={}", "x".repeat(MAX_VARIABLE - 3));
        assert_eq!(vars(&longest)[0].1.len(), MAX_VARIABLE - 3);
    }

    #[test]
    fn of_many_lines_with_the_same_keys_each_key_keeps_its_last_value() {
        let dir = crate::test_dir::TestDir::new("env-many");
        let text: String = (0..60_000)
            .map(|i| format!("K{}=v{i}\n", i % 30_000))
            .collect();
        std::fs::write(dir.join("many.env"), text).unwrap();
        let file = EnvFile::parse(&dir.join("many.env").display().to_string()).unwrap();
        let environment = read_all(&[file]).unwrap();
        assert_eq!(environment.variables.len(), 30_000);
        // Each key once, with its later value, in the order of those.
        assert_eq!(environment.variables[0], pair("K0", "v30000"));
        assert_eq!(environment.variables[29_999], pair("K29999", "v59999"));
    }

    #[test]
    fn a_file_that_would_make_the_reader_wait_is_refused_at_once() {
        let dir = crate::test_dir::TestDir::new("env-fifo");
        let fifo = dir.join("pipe.env");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let file = EnvFile::parse(&fifo.display().to_string()).unwrap();
        assert!(
            read_all(&[file])
                .unwrap_err()
                .ends_with("not a regular file")
        );
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
