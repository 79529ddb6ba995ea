//! The client side of the control socket, behind `sockvisor upgrade`,
//! `status`, `stop` and `signal`: send one request, print progress as it
//! arrives, and turn the final result into an exit status.

use std::io::{BufRead, BufReader, ErrorKind as IoErrorKind, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::socket::{getsockopt, sockopt};
use nix::unistd::Uid;

use super::protocol::{Command, ErrorKind, PROTOCOL_VERSION, Reply, Request};
use crate::deadline;
use crate::duration::format_duration;
use crate::output::printable;

/// Exit statuses of the client commands: the numbers, and in [`exit::TABLE`]
/// what each means (the man pages and `docs/reference.md` are generated
/// from it).
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const UNREACHABLE: i32 = 3;
    pub const BUSY: i32 = 4;
    pub const TIMEOUT: i32 = 5;

    /// Every status and when it is used, in the order the reference lists
    /// them. Names are in backquotes; the man page drops them.
    pub const TABLE: [(i32, &str); 6] = [
        (OK, "Done."),
        (
            FAILED,
            "The operation was carried out and failed; the reason is printed (e.g. the new \
             generation of an `upgrade` crashed: the old one keeps serving).",
        ),
        (
            USAGE,
            "Invalid command line, or a request sockvisor did not understand.",
        ),
        (
            UNREACHABLE,
            "No sockvisor reachable at the control socket, or this user may not control it.",
        ),
        (
            BUSY,
            "Refused for now: an upgrade is starting a generation, a scale is in progress, \
             sockvisor is stopping, or it has no room for another client (too many waiting, or \
             out of file descriptors).",
        ),
        (
            TIMEOUT,
            "No result within `--timeout`; the operation goes on inside sockvisor. For `status` \
             and `signal` (10s by default): no answer at all.",
        ),
    ];
}

pub struct Call<'a> {
    pub path: &'a Path,
    pub command: Command,
    pub json: bool,
    pub timeout: Option<Duration>,
}

/// Runs one request and returns the exit status for the command.
pub fn call(call: &Call<'_>) -> i32 {
    let verb = verb(&call.command);
    let stream = match connect(call.path) {
        Ok(stream) => stream,
        Err(Connect::Untrusted(why)) => {
            crate::complain!("sockvisor: {why}");
            return exit::UNREACHABLE;
        }
        Err(Connect::Io(e)) => {
            let hint = match e.kind() {
                IoErrorKind::NotFound | IoErrorKind::ConnectionRefused => {
                    " (is sockvisor running? pass --name or --control to pick the instance)"
                }
                IoErrorKind::PermissionDenied => " (run as the user sockvisor runs as, or root)",
                _ => "",
            };
            crate::complain!(
                "sockvisor: cannot reach sockvisor at {}: {e}{hint}",
                call.path.display()
            );
            return exit::UNREACHABLE;
        }
    };
    let request = Request {
        version: PROTOCOL_VERSION,
        command: call.command.clone(),
    };
    let mut line = serde_json::to_vec(&request).unwrap_or_default();
    line.push(b'\n');
    // A refused peer is answered and closed before its request is read, so
    // a failed write may still be followed by a reply that says why.
    let sent = (&stream).write_all(&line);
    let asked = Instant::now();
    let give_up_at = call.timeout.map(|t| deadline::after(asked, t));
    // Whether the request was taken or refused is always waited for (a
    // moment at most), so that even `--timeout 0` tells a refusal (exit
    // 4) from an operation under way (exit 5).
    let first_line_by = deadline::after(asked, FIRST_LINE_WAIT);
    let mut heard = false;
    let mut reader = BufReader::new(&stream);
    loop {
        if let Some(give_up_at) = give_up_at {
            let answered_at_once = matches!(call.command, Command::Status | Command::Signal { .. });
            let give_up_at = if heard || answered_at_once {
                give_up_at
            } else {
                give_up_at.max(first_line_by)
            };
            let left = give_up_at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return timed_out(verb, call.timeout, heard.then_some(asked));
            }
            let _ = stream.set_read_timeout(Some(left));
        }
        let mut text = String::new();
        match reader.read_line(&mut text) {
            Ok(0) => {
                if let Err(e) = sent {
                    crate::complain!("sockvisor: cannot send the {verb} request: {e}");
                    return exit::UNREACHABLE;
                }
                crate::complain!(
                    "sockvisor: the connection closed before the {verb} result arrived"
                );
                return exit::FAILED;
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), IoErrorKind::WouldBlock | IoErrorKind::TimedOut) => {
                return timed_out(verb, call.timeout, heard.then_some(asked));
            }
            Err(e) => {
                crate::complain!("sockvisor: reading the {verb} result failed: {e}");
                return exit::FAILED;
            }
        }
        heard = true;
        if call.json {
            crate::say!("{text}");
        }
        let reply: Reply = match serde_json::from_str(&text) {
            Ok(reply) => reply,
            Err(e) => {
                crate::complain!("sockvisor: unreadable reply from sockvisor: {e}");
                return exit::FAILED;
            }
        };
        match reply {
            Reply::Progress { message } => {
                if !call.json {
                    crate::sayln!("{}", printable(&message));
                }
            }
            Reply::Result {
                ok,
                message,
                error,
                status,
            } => return finish(call, verb, ok, &message, error, status),
        }
    }
}

fn finish(
    call: &Call<'_>,
    verb: &str,
    ok: bool,
    message: &str,
    error: Option<ErrorKind>,
    status: Option<serde_json::Value>,
) -> i32 {
    if ok {
        if !call.json {
            match status {
                Some(status) => crate::say!("{}", render_status(&status)),
                None => crate::sayln!("{}", printable(message)),
            }
        }
        return exit::OK;
    }
    if !call.json {
        crate::complain!("sockvisor: {verb} failed: {}", printable(message));
    }
    match error {
        Some(ErrorKind::Busy) => exit::BUSY,
        Some(ErrorKind::BadRequest | ErrorKind::UnsupportedVersion) => exit::USAGE,
        Some(ErrorKind::PermissionDenied) => exit::UNREACHABLE,
        Some(ErrorKind::Failed) | None => exit::FAILED,
    }
}

/// Why no trusted connection to sockvisor was made.
enum Connect {
    Io(std::io::Error),
    /// Something answers there, but it may not be the user's sockvisor.
    Untrusted(String),
}

/// Why a control socket at `path` cannot be believed because of the
/// directory it is in, if it cannot: the directory belongs to another user
/// than this one or root, or others can add files to it without it being
/// sticky (as `/tmp` is). `sockvisor run` asks this too, so that it never
/// serves where its clients would refuse it.
pub fn untrusted_directory(path: &Path) -> std::io::Result<Option<String>> {
    let own = Uid::effective().as_raw();
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let meta = std::fs::metadata(dir)?;
    if meta.uid() != own && meta.uid() != 0 {
        return Ok(Some(format!(
            "its directory {} belongs to uid {}, not to uid {own} or root (another user may have made it; remove it, or set XDG_RUNTIME_DIR)",
            dir.display(),
            meta.uid()
        )));
    }
    let sticky = meta.mode() & 0o1000 != 0;
    if meta.mode() & 0o022 != 0 && !sticky {
        return Ok(Some(format!(
            "its directory {} can be written by other users (mode {:o}; make it 0700 or 0755)",
            dir.display(),
            meta.mode() & 0o7777
        )));
    }
    Ok(None)
}

/// Connects to the control socket at `path`, believing it only if it can
/// be the user's own sockvisor: the directory holding it belongs to this
/// user or root and nobody else can add files to it (or it is sticky, like
/// `/tmp`, where nobody can replace another's file), and the process
/// listening runs as this user or root (`SO_PEERCRED`). Otherwise another
/// user may have planted a server there to be believed.
fn connect(path: &Path) -> Result<UnixStream, Connect> {
    let own = Uid::effective().as_raw();
    let trusted = |uid: u32| uid == own || uid == 0;
    if let Some(why) = untrusted_directory(path).map_err(Connect::Io)? {
        return Err(Connect::Untrusted(format!(
            "refusing control socket {}: {why}",
            path.display()
        )));
    }
    // What is there, when it cannot be a sockvisor's socket, is named
    // rather than reported as a refused connection.
    if let Ok(found) = std::fs::metadata(path)
        && !std::os::unix::fs::FileTypeExt::is_socket(&found.file_type())
    {
        return Err(Connect::Untrusted(format!(
            "{} is not a control socket: it is {} (pass the control socket's path to --control, or pick the instance with --name)",
            path.display(),
            crate::socket_file::describe_type(&found.file_type())
        )));
    }
    let longest = std::mem::size_of::<libc::sockaddr_un>()
        - std::mem::offset_of!(libc::sockaddr_un, sun_path)
        - 1;
    if path.as_os_str().len() > longest {
        return Err(Connect::Untrusted(format!(
            "control socket path {} is {} bytes long; a Unix socket path holds at most {longest} (use a shorter --control path, or a shorter directory)",
            path.display(),
            path.as_os_str().len()
        )));
    }
    let stream = UnixStream::connect(path).map_err(Connect::Io)?;
    let peer = getsockopt(&stream, sockopt::PeerCredentials).map_err(|e| Connect::Io(e.into()))?;
    if !trusted(peer.uid()) {
        return Err(Connect::Untrusted(format!(
            "refusing control socket {}: the process listening there runs as uid {}, not as uid {own} or root (it is not your sockvisor)",
            path.display(),
            peer.uid()
        )));
    }
    Ok(stream)
}

/// How long a client waits, whatever its `--timeout`, for the first line
/// of the answer: whether sockvisor took the request or refused it.
const FIRST_LINE_WAIT: Duration = Duration::from_secs(1);

/// Gives up: `taken_at` is when the request was sent if sockvisor has
/// answered it at all (so it goes on), `None` if it has said nothing.
fn timed_out(verb: &str, timeout: Option<Duration>, taken_at: Option<Instant>) -> i32 {
    let within = format_duration(timeout.unwrap_or_default());
    if taken_at.is_some() {
        crate::complain!(
            "sockvisor: no {verb} result within {within}; sockvisor carries on with it (see `sockvisor status`)"
        );
    } else {
        let answered_at_once = matches!(verb, "status" | "signal");
        crate::complain!(
            "sockvisor: no answer to the {verb} request within {}: sockvisor is not answering its control socket (stopped with SIGSTOP, or overloaded?){}",
            if answered_at_once {
                within
            } else {
                format_duration(timeout.unwrap_or_default().max(FIRST_LINE_WAIT))
            },
            // A status changes nothing; anything else may still be done.
            if verb == "status" {
                ""
            } else {
                "; it may still carry the request out"
            }
        );
    }
    exit::TIMEOUT
}

fn verb(command: &Command) -> &'static str {
    match command {
        Command::Upgrade => "upgrade",
        Command::Status => "status",
        Command::Stop => "stop",
        Command::Signal { .. } => "signal",
        Command::Scale { .. } => "scale",
        Command::Reexec { .. } => "reexec",
        Command::WorkerAck { .. } => "worker:ack",
    }
}

/// Human-readable `sockvisor status`.
pub fn render_status(status: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sockvisor pid {}{}",
        status["pid"],
        if status["stopping"] == true {
            " (stopping)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "listeners:");
    for listener in status["listeners"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  fd {}  {}  {}",
            listener["fd"],
            printable(listener["name"].as_str().unwrap_or_default()),
            printable(listener["address"].as_str().unwrap_or_default())
        );
    }
    // The store, once something is in it (`--fdstore-max` alone says
    // nothing worth a line).
    let stored = status["fdstore"]["descriptors"].as_array();
    if let Some(stored) = stored.filter(|s| !s.is_empty()) {
        let _ = writeln!(
            out,
            "stored descriptors ({} of at most {}):",
            stored.len(),
            status["fdstore"]["max"]
        );
        for entry in stored {
            let _ = writeln!(
                out,
                "  {}  {}",
                printable(entry["name"].as_str().unwrap_or_default()),
                printable(entry["type"].as_str().unwrap_or_default())
            );
        }
    }
    let _ = writeln!(out, "generations:");
    for generation in status["generations"].as_array().into_iter().flatten() {
        let number = &generation["generation"];
        let _ = writeln!(
            out,
            "  {number}  pid {}  {:<8}  {}{}{}{}",
            shown_pid(&generation["pid"]),
            generation["state"].as_str().unwrap_or_default(),
            shown_ms(&generation["age_ms"]),
            generation["environment"]["digest"]
                .as_str()
                .map(|d| format!("  env {}", printable(d)))
                .unwrap_or_default(),
            generation["status"]
                .as_str()
                .map(|s| format!("  \"{}\"", printable(s)))
                .unwrap_or_default(),
            if &status["current"] == number {
                "  (current)"
            } else {
                ""
            }
        );
        let workers = generation["workers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let empty = generation["empty_slots"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        // Every slot once there is more than one, in slot order (a slot's
        // second process, while it recycles, right after its first).
        let mut lines: Vec<(u64, String)> = Vec::new();
        for worker in &workers {
            lines.push((
                worker["index"].as_u64().unwrap_or_default(),
                format!(
                    "     worker {}  pid {}  {:<8}  {}  restarts {}{}{}",
                    worker["index"],
                    worker["pid"],
                    worker["state"].as_str().unwrap_or_default(),
                    shown_ms(&worker["age_ms"]),
                    worker["restarts"],
                    if worker["recycling"] == true {
                        "  (recycling)"
                    } else {
                        ""
                    },
                    worker["status"]
                        .as_str()
                        .map(|s| format!("  \"{}\"", printable(s)))
                        .unwrap_or_default(),
                ),
            ));
        }
        for slot in &empty {
            let state = match slot["restart_in_ms"].as_u64() {
                Some(ms) => format!(
                    "restarting in {}",
                    format_duration(Duration::from_millis(ms))
                ),
                None => slot["state"].as_str().unwrap_or_default().to_string(),
            };
            lines.push((
                slot["index"].as_u64().unwrap_or_default(),
                format!(
                    "     worker {}  no process  {state}  restarts {}",
                    slot["index"], slot["restarts"],
                ),
            ));
        }
        if lines.len() > 1 || !empty.is_empty() {
            lines.sort_by_key(|(index, _)| *index);
            for (_, line) in lines {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    if let Some(ms) = status["restart_in_ms"].as_u64() {
        let _ = writeln!(
            out,
            "  every worker has ended: a new generation starts in {}",
            format_duration(Duration::from_millis(ms))
        );
    }
    if let Some(last) = status["last_upgrade"].as_object() {
        let _ = writeln!(
            out,
            "last upgrade: generation {} {}: {} ({} ago)",
            last["generation"],
            if last["ok"] == true {
                "succeeded"
            } else {
                "failed"
            },
            printable(last["message"].as_str().unwrap_or_default()),
            shown_ms(&last["ago_ms"])
        );
    }
    out
}

/// A JSON milliseconds field as a person reads a duration.
/// A pid, or `-` where there is none.
fn shown_pid(value: &serde_json::Value) -> String {
    value
        .as_i64()
        .map_or_else(|| "-".to_string(), |pid| pid.to_string())
}

fn shown_ms(value: &serde_json::Value) -> String {
    format_duration(Duration::from_millis(value.as_u64().unwrap_or_default()))
}

/// `sockvisor status --check`: exit 0 when a generation is ready and
/// serving and sockvisor is not stopping, 1 when it is not serving or
/// cannot be reached, 4 when it answered that it is busy (every control
/// slot holds a client waiting for a result; idle clients never cause
/// this), printing nothing unless `verbose`. For exec probes (Kubernetes,
/// Nomad, Docker HEALTHCHECK).
pub fn check(path: &Path, verbose: bool) -> i32 {
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let verdict = loop {
        match fetch_status(path, deadline.saturating_duration_since(Instant::now())) {
            Err(Fetch::Busy(_)) if Instant::now() + CHECK_RETRY < deadline => {
                std::thread::sleep(CHECK_RETRY);
            }
            other => break other.and_then(|status| serving(&status).map_err(Fetch::NotServing)),
        }
    };
    let (code, line) = match verdict {
        Ok(line) => (exit::OK, line),
        Err(Fetch::NotServing(why)) => (exit::FAILED, format!("not serving: {why}")),
        Err(Fetch::Busy(why)) => (exit::BUSY, format!("busy, serving unknown: {why}")),
    };
    if verbose {
        crate::sayln!("{line}");
    }
    code
}

/// How long `status --check` waits for an answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `status --check` waits before asking a busy sockvisor again.
const CHECK_RETRY: Duration = Duration::from_millis(50);

/// Why a status request gave no status.
enum Fetch {
    /// sockvisor is unreachable, or it answered that it does not serve.
    NotServing(String),
    /// sockvisor answered, but had no room for the request.
    Busy(String),
}

fn serving(status: &serde_json::Value) -> Result<String, String> {
    if status["stopping"] == true {
        return Err("sockvisor is stopping".into());
    }
    let Some(current) = status["current"].as_u64() else {
        return Err("no generation is serving".into());
    };
    let generation = status["generations"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["generation"].as_u64() == Some(current)))
        .ok_or("the serving generation is gone")?;
    if generation["state"] != "ready" {
        return Err(format!("generation {current} is not ready"));
    }
    Ok(format!("generation {current} serving"))
}

/// One status request, without printing anything.
fn fetch_status(path: &Path, timeout: Duration) -> Result<serde_json::Value, Fetch> {
    let failed = Fetch::NotServing;
    let stream = connect(path).map_err(|e| match e {
        Connect::Io(e) => failed(format!("cannot reach sockvisor at {}: {e}", path.display())),
        Connect::Untrusted(why) => failed(why),
    })?;
    stream
        .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
        .map_err(|e| failed(e.to_string()))?;
    let request = Request {
        version: PROTOCOL_VERSION,
        command: Command::Status,
    };
    let mut line = serde_json::to_vec(&request).map_err(|e| failed(e.to_string()))?;
    line.push(b'\n');
    // A write refused because sockvisor already answered (and closed) is
    // followed by that answer: read it all the same.
    let _ = (&stream).write_all(&line);
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .map_err(|e| match e.kind() {
            IoErrorKind::WouldBlock | IoErrorKind::TimedOut => failed(format!(
                "no status answer within {}",
                format_duration(CHECK_TIMEOUT)
            )),
            _ => failed(format!("no status answer: {e}")),
        })?;
    let reply: serde_json::Value =
        serde_json::from_str(&reply).map_err(|e| failed(format!("garbled status answer: {e}")))?;
    if reply["ok"] != true {
        let message = reply["message"].as_str().unwrap_or("refused").to_string();
        return Err(if reply["error"] == "busy" {
            Fetch::Busy(message)
        } else {
            failed(message)
        });
    }
    Ok(reply["status"].clone())
}

#[cfg(test)]
mod tests {
    use super::exit;

    #[test]
    fn the_exit_status_table_lists_every_status_once() {
        let codes: Vec<i32> = exit::TABLE.iter().map(|(code, _)| *code).collect();
        assert_eq!(
            codes,
            [
                exit::OK,
                exit::FAILED,
                exit::USAGE,
                exit::UNREACHABLE,
                exit::BUSY,
                exit::TIMEOUT
            ]
        );
    }
}
