//! The control protocol: one JSON object per line in each direction.
//!
//! A client sends one request, `{"version":1,"command":"upgrade"}`; the
//! server answers with any number of `{"type":"progress","message":…}`
//! lines and then exactly one `{"type":"result","ok":…}` line, and closes
//! the connection. Requests carry the protocol version so that a newer
//! client talking to an older sockvisor gets a clear refusal.
//!
//! Decoding also checks every number in a request against the rule the
//! command line applies to the same value, so that nothing the CLI refuses
//! reaches the supervisor through the socket.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::einhorn;
use crate::supervisor::parse_worker_count;

pub const PROTOCOL_VERSION: u32 = 1;

/// Longest request line the server reads.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Command {
    /// Start a new generation and retire the current one once it is ready.
    Upgrade,
    /// Report generations, listeners and the last upgrade.
    Status,
    /// Stop every generation, then sockvisor; answered when all have exited.
    Stop,
    /// Send a signal to the current generation.
    Signal { signal: String },
    /// Change the serving generation's worker count.
    Scale { workers: u32 },
    /// Replace sockvisor's own program, keeping its pid, children and
    /// sockets; `binary` defaults to the path it was started from.
    Reexec {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        binary: Option<String>,
    },
    /// einhorn's readiness message from a worker (`--fd-env einhorn`): sent
    /// without a protocol version, counted like READY=1.
    #[serde(rename = "worker:ack")]
    WorkerAck { pid: i32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    #[serde(flatten)]
    pub command: Command,
}

/// Why a request failed, for programs reading `--json` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request line was not a valid request.
    BadRequest,
    /// The client speaks another protocol version.
    UnsupportedVersion,
    /// The peer's user may not control this sockvisor.
    PermissionDenied,
    /// Another upgrade is starting, or sockvisor is stopping.
    Busy,
    /// The operation was attempted and failed.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Reply {
    Progress {
        message: String,
    },
    Result {
        ok: bool,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        error: Option<ErrorKind>,
        /// The status report, for `status`.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        status: Option<serde_json::Value>,
    },
}

impl Reply {
    /// The text a person reads: the progress line or the result's message.
    pub fn message(&self) -> &str {
        match self {
            Reply::Progress { message } | Reply::Result { message, .. } => message,
        }
    }

    pub fn success(message: impl Into<String>) -> Reply {
        Reply::Result {
            ok: true,
            message: message.into(),
            error: None,
            status: None,
        }
    }

    pub fn failure(kind: ErrorKind, message: impl Into<String>) -> Reply {
        Reply::Result {
            ok: false,
            message: message.into(),
            error: Some(kind),
            status: None,
        }
    }

    /// The reply as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// Decodes one request line (without its newline).
pub fn decode_request(line: &[u8]) -> Result<Request, Reply> {
    if let Err(e) = std::str::from_utf8(line) {
        return Err(Reply::failure(
            ErrorKind::BadRequest,
            format!(
                "the request is not UTF-8 text (byte {} is not): send one JSON object per line",
                e.valid_up_to()
            ),
        ));
    }
    // einhorn workers speak einhorn's protocol, which has no version.
    if let Some(message) = einhorn::decode(line) {
        return einhorn_request(message);
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err(Reply::failure(
            ErrorKind::BadRequest,
            format!(
                "empty request line: send one JSON object, e.g. {{\"version\":{PROTOCOL_VERSION},\"command\":\"status\"}}"
            ),
        ));
    }
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| Reply::failure(ErrorKind::BadRequest, format!("invalid JSON: {e}")))?;
    let version = value.get("version");
    if version.and_then(Value::as_u64) != Some(u64::from(PROTOCOL_VERSION)) {
        return Err(Reply::failure(
            ErrorKind::UnsupportedVersion,
            format!(
                "unsupported protocol version {}; this sockvisor speaks version {PROTOCOL_VERSION} (\"version\":{PROTOCOL_VERSION})",
                version.map_or("(none)".to_string(), printable_value)
            ),
        ));
    }
    check_fields(line, &value)?;
    check_values(&value)?;
    serde_json::from_value(value).map_err(|e| {
        Reply::failure(
            ErrorKind::BadRequest,
            format!(
                "invalid request: {e} (commands: upgrade, status, stop, signal, scale, reexec)"
            ),
        )
    })
}

/// An einhorn message as a request: `worker:ack` with its pid; any other
/// einhorn command is answered with what sockvisor does instead.
fn einhorn_request(message: Result<einhorn::Message, String>) -> Result<Request, Reply> {
    let bad = |why: String| Reply::failure(ErrorKind::BadRequest, why);
    let message = message.map_err(bad)?;
    match message.command() {
        Some("worker:ack") => {}
        Some(other) => {
            return Err(bad(format!(
                "einhorn command '{other}' is not served here: sockvisor takes only worker:ack from einhorn clients (use sockvisor upgrade, status or stop)"
            )));
        }
        None => return Err(bad("einhorn message without a command".into())),
    }
    let pid = message.fields.get("pid");
    match pid
        .and_then(Value::as_i64)
        .and_then(|p| i32::try_from(p).ok())
        .filter(|p| *p > 0)
    {
        Some(pid) => Ok(Request {
            version: PROTOCOL_VERSION,
            command: Command::WorkerAck { pid },
        }),
        None => Err(bad(format!(
            "worker:ack needs a pid from 1 to {}, got {}",
            i32::MAX,
            pid.map_or("none".to_string(), Value::to_string)
        ))),
    }
}

/// A value as a message quotes it: at most 40 characters of it.
fn printable_value(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(40) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

/// The fields each command takes besides `version` and `command`.
fn fields_of(command: &str) -> Option<&'static [&'static str]> {
    Some(match command {
        "upgrade" | "status" | "stop" => &[],
        "signal" => &["signal"],
        "scale" => &["workers"],
        "reexec" => &["binary"],
        "worker:ack" => &["pid"],
        _ => return None,
    })
}

/// A request names each field once, and only fields its command takes: a
/// misspelt `binary` must not re-execute the default program, and
/// `"command":"status","command":"stop"` must not stop anything.
fn check_fields(line: &[u8], value: &Value) -> Result<(), Reply> {
    let bad = |why: String| Reply::failure(ErrorKind::BadRequest, why);
    let keys = top_level_keys(line).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    for (n, key) in keys.iter().enumerate() {
        if keys[..n].contains(key) {
            return Err(bad(format!(
                "invalid request: field '{}' is given twice",
                crate::output::printable(key)
            )));
        }
    }
    let Some(command) = value.get("command").and_then(Value::as_str) else {
        return Ok(()); // Said by the type check that follows.
    };
    let Some(fields) = fields_of(command) else {
        return Ok(()); // Unknown command: said by the type check.
    };
    if let Some(unknown) = keys
        .iter()
        .find(|k| !matches!(k.as_str(), "version" | "command") && !fields.contains(&k.as_str()))
    {
        let takes = if fields.is_empty() {
            "it takes no other field".to_string()
        } else {
            format!("its fields: {}", fields.join(", "))
        };
        return Err(bad(format!(
            "invalid request: unknown field '{}' for command {command} ({takes})",
            crate::output::printable(unknown)
        )));
    }
    Ok(())
}

/// The keys of the object on `line`, in order, duplicates kept. Nested
/// values are skipped, not built.
fn top_level_keys(line: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    struct Keys(Vec<String>);
    impl<'de> Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Keys, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some(key) = map.next_key::<String>()? {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        keys.push(key);
                    }
                    Ok(Keys(keys))
                }
            }
            deserializer.deserialize_map(Visitor)
        }
    }
    serde_json::from_slice::<Keys>(line).map(|keys| keys.0)
}

/// The numbers of a request, by the command line's rules. Checked on the
/// JSON value, before serde's type check, so that `-1`, `1.5` or `100000`
/// is answered with the field, the value and the allowed range rather than
/// a type error.
fn check_values(request: &Value) -> Result<(), Reply> {
    let command = request.get("command").and_then(Value::as_str);
    if command == Some("scale")
        && let Some(workers) = request.get("workers")
    {
        parse_worker_count(&workers.to_string()).map_err(|why| {
            Reply::failure(
                ErrorKind::BadRequest,
                format!("invalid scale request: workers: {why}"),
            )
        })?;
    }
    if command == Some("worker:ack") {
        let pid = request.get("pid");
        if pid
            .and_then(Value::as_i64)
            .and_then(|p| i32::try_from(p).ok())
            .is_none_or(|p| p <= 0)
        {
            return Err(Reply::failure(
                ErrorKind::BadRequest,
                format!(
                    "worker:ack needs a pid from 1 to {}, got {}",
                    i32::MAX,
                    pid.map_or("none".to_string(), printable_value)
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for command in [
            Command::Upgrade,
            Command::Status,
            Command::Stop,
            Command::Signal {
                signal: "SIGUSR1".into(),
            },
            Command::Scale { workers: 8 },
            Command::Reexec { binary: None },
            Command::Reexec {
                binary: Some("/usr/bin/sockvisor".into()),
            },
        ] {
            let request = Request {
                version: PROTOCOL_VERSION,
                command,
            };
            let line = serde_json::to_vec(&request).unwrap();
            assert_eq!(decode_request(&line), Ok(request));
        }
    }

    #[test]
    fn request_wire_format_is_flat() {
        let line = br#"{"version":1,"command":"signal","signal":"HUP"}"#;
        let request = decode_request(line).unwrap();
        assert_eq!(
            request.command,
            Command::Signal {
                signal: "HUP".into()
            }
        );
    }

    fn error_kind(line: &[u8]) -> Option<ErrorKind> {
        match decode_request(line) {
            Err(Reply::Result { error, .. }) => error,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_and_repeated_fields_are_refused_not_ignored() {
        let (kind, message) = refusal(br#"{"version":1,"command":"reexec","bianry":"/usr/bin/x"}"#);
        assert_eq!(kind, Some(ErrorKind::BadRequest));
        assert_eq!(
            message,
            "invalid request: unknown field 'bianry' for command reexec (its fields: binary)"
        );
        let (_, message) = refusal(br#"{"version":1,"command":"status","command":"stop"}"#);
        assert_eq!(message, "invalid request: field 'command' is given twice");
        let (_, message) = refusal(br#"{"version":1,"command":"stop","force":true}"#);
        assert!(message.contains("it takes no other field"), "{message}");
        // A nested object is not looked into.
        assert!(decode_request(br#"{"version":1,"command":"status"}"#).is_ok());
    }

    #[test]
    fn a_versioned_worker_ack_needs_a_real_pid() {
        for pid in ["-1", "0", "-2147483648", "2147483648", "1.5", "\"12\""] {
            let line = format!(r#"{{"version":1,"command":"worker:ack","pid":{pid}}}"#);
            assert_eq!(
                refusal(line.as_bytes()),
                (
                    Some(ErrorKind::BadRequest),
                    format!("worker:ack needs a pid from 1 to 2147483647, got {pid}")
                )
            );
        }
    }

    #[test]
    fn a_request_that_is_not_text_is_named_as_such() {
        let (kind, message) = refusal(b"---%0Apid: \xff%0A");
        assert_eq!(kind, Some(ErrorKind::BadRequest));
        assert!(
            message.starts_with("the request is not UTF-8 text (byte 11 is not)"),
            "{message}"
        );
    }

    #[test]
    fn a_wrong_version_is_quoted_and_an_empty_line_named() {
        let (_, message) = refusal(br#"{"version":"1","command":"status"}"#);
        assert!(
            message.starts_with(r#"unsupported protocol version "1";"#),
            "{message}"
        );
        let (_, message) = refusal(br#"{"version":1.0,"command":"status"}"#);
        assert!(
            message.starts_with("unsupported protocol version 1.0;"),
            "{message}"
        );
        assert!(refusal(b"").1.starts_with("empty request line"));
        assert!(refusal(b"  \r").1.starts_with("empty request line"));
    }

    #[test]
    fn garbage_is_a_bad_request() {
        assert_eq!(error_kind(b"hello"), Some(ErrorKind::BadRequest));
        assert_eq!(error_kind(b"[1,2]"), Some(ErrorKind::UnsupportedVersion));
    }

    #[test]
    fn unknown_command_is_a_bad_request() {
        assert_eq!(
            error_kind(br#"{"version":1,"command":"explode"}"#),
            Some(ErrorKind::BadRequest)
        );
    }

    #[test]
    fn another_version_is_refused_clearly() {
        assert_eq!(
            error_kind(br#"{"version":2,"command":"status"}"#),
            Some(ErrorKind::UnsupportedVersion)
        );
        assert_eq!(
            error_kind(br#"{"command":"status"}"#),
            Some(ErrorKind::UnsupportedVersion)
        );
    }

    // Inputs the fuzzer (fuzz/fuzz_targets/control_request.rs) found worth
    // keeping, each pinned to the rule it exercises.

    #[test]
    fn json_that_is_not_an_object_has_no_version() {
        for line in [&b"[[]]"[..], b"7e7", b"\"\\\"\"", b"1   "] {
            assert_eq!(
                error_kind(line),
                Some(ErrorKind::UnsupportedVersion),
                "{line:?}"
            );
        }
    }

    #[test]
    fn truncated_or_binary_json_is_a_bad_request() {
        for line in [
            &b"{\"\":"[..],
            b"[1,3",
            b"fal\x02",
            b"\"\x81\\f",
            b"{\"\"\xef",
        ] {
            assert_eq!(error_kind(line), Some(ErrorKind::BadRequest), "{line:?}");
        }
    }

    #[test]
    fn a_signal_request_without_its_signal_is_a_bad_request() {
        assert_eq!(
            error_kind(br#"{"version":1,"command":"signal"}"#),
            Some(ErrorKind::BadRequest)
        );
    }

    #[test]
    fn einhorns_worker_ack_is_understood_without_a_version() {
        let request = decode_request(br#"{"command":"worker:ack","pid":4242}"#).unwrap();
        assert_eq!(request.command, Command::WorkerAck { pid: 4242 });
        assert_eq!(
            error_kind(br#"{"command":"worker:ack"}"#),
            Some(ErrorKind::BadRequest)
        );
    }

    fn refusal(line: &[u8]) -> (Option<ErrorKind>, String) {
        match decode_request(line) {
            Err(Reply::Result { error, message, .. }) => (error, message),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn a_scale_request_takes_the_worker_counts_the_command_line_takes() {
        for workers in [1, 2, 1024] {
            let line = format!(r#"{{"version":1,"command":"scale","workers":{workers}}}"#);
            assert_eq!(
                decode_request(line.as_bytes()).map(|r| r.command),
                Ok(Command::Scale { workers })
            );
        }
    }

    #[test]
    fn a_scale_request_out_of_range_is_a_bad_request_naming_field_value_and_range() {
        for workers in [
            "0",
            "1025",
            "100000",
            "-1",
            "1.5",
            "18446744073709551615",
            "9300000000000000000",
            "\"8\"",
            "null",
        ] {
            let line = format!(r#"{{"version":1,"command":"scale","workers":{workers}}}"#);
            let (kind, message) = refusal(line.as_bytes());
            assert_eq!(kind, Some(ErrorKind::BadRequest), "{message}");
            assert!(message.contains("workers"), "{message}");
            assert!(message.contains(workers), "{message}");
            assert!(message.contains("1 to 1024"), "{message}");
        }
    }

    #[test]
    fn a_worker_ack_needs_a_positive_pid() {
        for pid in ["0", "-1", "2147483648", "1.5", "\"42\""] {
            let line = format!(r#"{{"command":"worker:ack","pid":{pid}}}"#);
            let (kind, message) = refusal(line.as_bytes());
            assert_eq!(kind, Some(ErrorKind::BadRequest), "{message}");
            assert!(message.contains(pid), "{message}");
            assert!(message.contains("1 to 2147483647"), "{message}");
        }
    }

    #[test]
    fn replies_are_single_lines() {
        let line = Reply::failure(ErrorKind::Busy, "a\nb").to_line();
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        assert!(line.ends_with(b"\n"));
    }
}
