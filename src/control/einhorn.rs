//! einhorn's control-socket wire format, for apps written for einhorn
//! (`--fd-env einhorn`): what `Einhorn::Worker.ack!` writes.
//!
//! einhorn's client serializes each message as a YAML document and
//! percent-escapes it onto one line (`%` as `%25`, newline as `%0A`), so
//! the ack of pid 12345 arrives as
//! `---%0Acommand: worker:ack%0Apid: 12345%0A` and a newline. JSON is YAML
//! too, and other einhorn clients send `{"command":"worker:ack","pid":…}`.
//! Neither carries sockvisor's protocol version: that, and a command that
//! is not one of sockvisor's own, is how the dialect is told apart. Only flat mappings of scalars are read (all einhorn's
//! commands are), within the control socket's line limit.

use serde_json::Value;

/// An einhorn message: its command and its fields, as JSON values.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub fields: serde_json::Map<String, Value>,
}

impl Message {
    pub fn command(&self) -> Option<&str> {
        self.fields.get("command").and_then(Value::as_str)
    }
}

/// Reads `line` as an einhorn message, if it is one: a percent-escaped
/// YAML document (`---` first) or a JSON object without a `version`.
/// `None` means the line is not in einhorn's format; `Some(Err)` that it
/// is, but malformed.
pub fn decode(line: &[u8]) -> Option<Result<Message, String>> {
    let text = std::str::from_utf8(line).ok()?;
    let text = unescape(text.trim_end_matches(['\n', '\r']));
    let trimmed = text.trim_start();
    if trimmed.starts_with("---") {
        return Some(parse_yaml_mapping(trimmed));
    }
    let value: Value = serde_json::from_str(trimmed).ok()?;
    let object = value.as_object()?;
    // A JSON line naming one of sockvisor's own commands without a version
    // is a sockvisor client of another version, not einhorn.
    let own = matches!(
        object.get("command").and_then(Value::as_str),
        Some("upgrade" | "status" | "stop" | "signal" | "scale" | "reexec") | None
    );
    if object.contains_key("version") || own {
        return None;
    }
    Some(Ok(Message {
        fields: object.clone(),
    }))
}

/// einhorn's line escaping, undone: `%0A` is a newline, `%25` a percent.
fn unescape(text: &str) -> String {
    text.replace("%0A", "\n")
        .replace("%0a", "\n")
        .replace("%25", "%")
}

/// A YAML document holding one flat mapping of scalars: `key: value`
/// lines after `---`, values plain, quoted, or integers.
fn parse_yaml_mapping(document: &str) -> Result<Message, String> {
    let mut lines = document.lines();
    let start = lines.next().unwrap_or_default().trim();
    let mut fields = serde_json::Map::new();
    // `--- {command: …}` and `--- key: value` put the mapping on the
    // document line itself; only the block form is einhorn's.
    if start != "---" {
        return Err(format!(
            "einhorn message: expected a YAML mapping after '---', got {start:?}"
        ));
    }
    for line in lines {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if line.trim() == "..." {
            break;
        }
        let Some((key, value)) = line
            .split_once(": ")
            .or_else(|| line.strip_suffix(':').map(|key| (key, "")))
        else {
            return Err(format!(
                "einhorn message: not a 'key: value' line: {line:?}"
            ));
        };
        if key.starts_with([' ', '-']) {
            return Err(format!(
                "einhorn message: only flat mappings are understood, got {line:?}"
            ));
        }
        fields.insert(unquote(key.trim()), scalar(without_comment(value).trim()));
    }
    Ok(Message { fields })
}

/// A plain (unquoted) value without the comment YAML allows after it
/// (`worker:ack # from the app`): a `#` that follows a space or a tab.
fn without_comment(value: &str) -> &str {
    if value.trim_start().starts_with(['\'', '"']) {
        return value;
    }
    let cut = value
        .char_indices()
        .find(|&(at, c)| c == '#' && value[..at].ends_with([' ', '\t']))
        .map_or(value.len(), |(at, _)| at);
    &value[..cut]
}

/// A YAML scalar as JSON: integers stay numbers, quotes are removed.
fn scalar(text: &str) -> Value {
    if let Ok(number) = text.parse::<i64>() {
        return Value::from(number);
    }
    match text {
        "~" | "null" | "" => Value::Null,
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(unquote(text)),
    }
}

fn unquote(text: &str) -> String {
    let quoted = |q: char| text.len() >= 2 && text.starts_with(q) && text.ends_with(q);
    if quoted('\'') {
        text[1..text.len() - 1].replace("''", "'")
    } else if quoted('"') {
        serde_json::from_str(text).unwrap_or_else(|_| text[1..text.len() - 1].to_string())
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(line: &str) -> Message {
        decode(line.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn the_ack_einhorns_ruby_client_writes_is_read_byte_for_byte() {
        let ack = decoded("---%0Acommand: worker:ack%0Apid: 12345%0A\n");
        assert_eq!(ack.command(), Some("worker:ack"));
        assert_eq!(ack.fields["pid"], 12345);
    }

    #[test]
    fn comments_after_plain_values_are_comments_as_in_yaml() {
        let ack = decoded("---%0Acommand: worker:ack # from the app%0Apid: 12\t# its pid%0A\n");
        assert_eq!(ack.command(), Some("worker:ack"));
        assert_eq!(ack.fields["pid"], 12);
        // Inside quotes, or without a space before it, '#' is the value's.
        let quoted = decoded("---%0Acommand: 'a # b'%0Anote: x#y%0A\n");
        assert_eq!(quoted.command(), Some("a # b"));
        assert_eq!(quoted.fields["note"], "x#y");
    }

    #[test]
    fn the_json_form_without_a_version_is_einhorns_too() {
        let ack = decoded("{\"command\":\"worker:ack\",\"pid\":77}\n");
        assert_eq!(ack.command(), Some("worker:ack"));
        assert_eq!(ack.fields["pid"], 77);
    }

    #[test]
    fn sockvisors_own_requests_are_not_einhorns() {
        assert!(decode(b"{\"version\":1,\"command\":\"status\"}\n").is_none());
        assert!(decode(b"{\"command\":\"status\"}\n").is_none());
        assert!(decode(b"not json at all\n").is_none());
        assert!(decode(b"[1,2]\n").is_none());
    }

    #[test]
    fn quoted_values_escaped_percents_and_extra_fields_are_read() {
        let message = decoded("---%0Acommand: 'ehlo'%0Auser: \"a%25b\"%0Arequest_id: 3%0A");
        assert_eq!(message.command(), Some("ehlo"));
        assert_eq!(message.fields["user"], "a%b");
        assert_eq!(message.fields["request_id"], 3);
    }

    #[test]
    fn a_nested_or_garbled_document_is_an_error_not_a_guess() {
        for bad in [
            "---%0Acommand: worker:ack%0Apid:%0A  - 1%0A",
            "---%0Ajust text%0A",
            "--- {command: worker:ack}%0A",
        ] {
            assert!(decode(bad.as_bytes()).unwrap().is_err(), "{bad}");
        }
    }
}
