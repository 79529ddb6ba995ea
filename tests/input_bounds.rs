//! The extremes of every number a person or a program hands sockvisor.
//!
//! On the command line each value is either taken, or refused before
//! anything starts with exit status 2 and one error line naming the flag,
//! the value and what is allowed. On the control socket each is either
//! taken or answered with a `bad_request` naming the field, the value and
//! the allowed range, and the supervisor keeps serving. Nothing panics.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

/// Runs `sockvisor ARGS` to completion with its control socket in `dir`.
fn sockvisor(dir: &TestDir, args: &[&str]) -> Output {
    Command::new(sockvisor_bin())
        .env("SOCKVISOR_CONTROL", dir.join("control.sock"))
        .args(args)
        .output()
        .unwrap()
}

/// `what` is the command line, for the failure message.
fn assert_no_panic(what: &str, output: &Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(101), "{what}: {stderr}");
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    assert!(output.status.code().is_some(), "{what} killed: {stderr}");
}

/// Exit status 2 and one error line containing every needle; all clap adds
/// besides is its `For more information, try '--help'.` tip.
fn assert_usage_error(what: &str, output: &Output, needles: &[&str]) {
    assert_no_panic(what, output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{what}: {stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("For more information"))
        .collect();
    assert_eq!(lines.len(), 1, "{what}: one error line: {stderr:?}");
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "{what}: {needle:?} missing from {stderr:?}"
        );
    }
}

/// Taken: the run of `true` went its normal way and ended with its status.
fn assert_taken(what: &str, output: &Output) {
    assert_no_panic(what, output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{what}: {stderr}");
}

/// The maximum duration, the same in two units; and the values beyond it.
const DURATIONS_TAKEN: [&str; 5] = ["0", "1", "1ms", "8760h", "31536000"];
const DURATIONS_TOO_LONG: [&str; 5] = [
    "31536001",
    "8760.1h",
    "18446744073709551615",
    "9300000000000000000",
    "9300000000000000000h",
];
const NOT_DURATIONS: [&str; 4] = ["-1", "-1s", "soon", "1e3"];

/// Worker counts: the range is 1 to 1024 wherever one is given.
const COUNTS_TAKEN: [&str; 2] = ["1", "1024"];
const COUNTS_REFUSED: [&str; 7] = [
    "0",
    "1025",
    "100000",
    "18446744073709551615",
    "9300000000000000000",
    "-1",
    "abc",
];

/// `sockvisor run FLAGS -- true`: ends at once whatever the flags. Returns
/// the flags as one string, for failure messages, and the outcome.
fn run_true(dir: &TestDir, flags: &[&str]) -> (String, Output) {
    let mut args: Vec<&str> = vec!["run", "--restart", "never"];
    args.extend(flags);
    args.extend(["--", "true"]);
    (flags.join(" "), sockvisor(dir, &args))
}

#[test]
fn every_run_duration_up_to_one_year_is_taken_and_longer_is_a_usage_error() {
    let dir = TestDir::new("run-durations");
    for flag in [
        "--restart-delay",
        "--restart-delay-max",
        "--stop-timeout",
        "--ready-timeout",
        "--drain-timeout",
        "--watch-delay",
        "--watchdog",
    ] {
        for value in DURATIONS_TAKEN {
            let (what, output) = run_true(&dir, &[&format!("{flag}={value}")]);
            // A ready timeout of 0 would fail every generation, and a
            // watchdog is off (0) or at least 100ms: both are their own
            // usage errors.
            let refused = match flag {
                "--ready-timeout" => (value == "0").then_some("'0' is zero"),
                "--watchdog" => matches!(value, "1ms").then_some("is shorter than 100ms"),
                _ => None,
            };
            match refused {
                Some(said) => assert_usage_error(&what, &output, &[flag, said]),
                None => assert_taken(&what, &output),
            }
        }
        for value in DURATIONS_TOO_LONG {
            let (what, output) = run_true(&dir, &[&format!("{flag}={value}")]);
            assert_usage_error(
                &what,
                &output,
                &[flag, &format!("'{value}'"), "maximum, 8760h (one year)"],
            );
        }
        for value in NOT_DURATIONS {
            let (what, output) = run_true(&dir, &[&format!("{flag}={value}")]);
            assert_usage_error(
                &what,
                &output,
                &[flag, &format!("invalid duration '{value}'")],
            );
        }
    }
}

#[test]
fn a_ready_delay_up_to_one_year_is_taken_and_longer_is_a_usage_error() {
    let dir = TestDir::new("ready-delay");
    for value in DURATIONS_TAKEN {
        let (what, output) = run_true(&dir, &[&format!("--ready=delay={value}")]);
        assert_taken(&what, &output);
    }
    for value in DURATIONS_TOO_LONG {
        let (what, output) = run_true(&dir, &[&format!("--ready=delay={value}")]);
        assert_usage_error(
            &what,
            &output,
            &["--ready", &format!("'delay={value}'"), "8760h (one year)"],
        );
    }
    for value in NOT_DURATIONS {
        let (what, output) = run_true(&dir, &[&format!("--ready=delay={value}")]);
        assert_usage_error(
            &what,
            &output,
            &["--ready", &format!("invalid duration '{value}'")],
        );
    }
}

#[test]
fn a_client_timeout_up_to_one_year_is_taken_and_longer_is_a_usage_error() {
    // No sockvisor listens in this directory: a value that is taken ends
    // in "cannot reach" (exit 3), never in a wait.
    let dir = TestDir::new("client-timeouts");
    for command in ["upgrade", "stop", "scale 2", "reexec"] {
        let with_timeout = |value: &str| {
            let what = format!("{command} --timeout={value}");
            let output = sockvisor(&dir, &what.split(' ').collect::<Vec<_>>());
            (what, output)
        };
        for value in DURATIONS_TAKEN {
            let (what, output) = with_timeout(value);
            assert_no_panic(&what, &output);
            assert_eq!(output.status.code(), Some(3), "{what}: {output:?}");
        }
        for value in DURATIONS_TOO_LONG {
            let (what, output) = with_timeout(value);
            assert_usage_error(
                &what,
                &output,
                &["--timeout", &format!("'{value}'"), "8760h (one year)"],
            );
        }
        for value in NOT_DURATIONS {
            let (what, output) = with_timeout(value);
            assert_usage_error(&what, &output, &["--timeout", "invalid duration"]);
        }
    }
}

#[test]
fn worker_counts_from_1_to_1024_are_taken_and_others_are_usage_errors() {
    let dir = TestDir::new("worker-counts");
    // A command that does not exist ends the run before any fork, so 1024
    // workers cost nothing: exit 127 means the flags were taken.
    let missing = "sockvisor-no-such-server";
    for flag in ["--workers", "--max-surge"] {
        for value in COUNTS_TAKEN {
            let flag_value = format!("{flag}={value}");
            let args = ["run", &flag_value, "--", missing];
            let output = sockvisor(&dir, &args);
            assert_no_panic(&args.join(" "), &output);
            assert_eq!(output.status.code(), Some(127), "{args:?}: {output:?}");
        }
        for value in COUNTS_REFUSED {
            let flag_value = format!("{flag}={value}");
            let args = ["run", &flag_value, "--", missing];
            let output = sockvisor(&dir, &args);
            assert_usage_error(&args.join(" "), &output, &[flag, value, "1 to 1024"]);
        }
    }
    for value in COUNTS_TAKEN {
        let args = ["scale", value];
        let output = sockvisor(&dir, &args);
        assert_no_panic(&args.join(" "), &output);
        assert_eq!(output.status.code(), Some(3), "{args:?}: {output:?}");
    }
    for value in COUNTS_REFUSED {
        let args = ["scale", "--", value];
        let output = sockvisor(&dir, &args);
        assert_usage_error(&args.join(" "), &output, &["<N>", value, "1 to 1024"]);
    }
}

#[test]
fn fdstore_sizes_signals_backlogs_and_modes_are_taken_in_range_and_refused_beyond() {
    let dir = TestDir::new("other-numbers");
    for value in ["0", "1", "18446744073709551615"] {
        let (what, output) = run_true(&dir, &[&format!("--fdstore-max={value}")]);
        assert_taken(&what, &output);
    }
    for value in ["18446744073709551616", "-1", "abc"] {
        let (what, output) = run_true(&dir, &[&format!("--fdstore-max={value}")]);
        assert_usage_error(&what, &output, &["--fdstore-max", value]);
    }

    for value in ["1", "31", "TERM"] {
        let (what, output) = run_true(&dir, &[&format!("--stop-signal={value}")]);
        assert_taken(&what, &output);
    }
    let not_signals = [
        "0",
        "65",
        "-1",
        "18446744073709551615",
        "9300000000000000000",
        "SIGNOPE",
    ];
    for value in not_signals {
        let (what, output) = run_true(&dir, &[&format!("--stop-signal={value}")]);
        assert_usage_error(
            &what,
            &output,
            &["--stop-signal", &format!("unknown signal '{value}'")],
        );
        let args = ["signal", "--", value];
        let output = sockvisor(&dir, &args);
        assert_usage_error(
            &args.join(" "),
            &output,
            &[&format!("unknown signal '{value}'")],
        );
    }

    for value in ["1", "2147483647"] {
        let spec = format!("--listen=127.0.0.1:0,backlog={value}");
        let (what, output) = run_true(&dir, &[&spec, "--ready=now"]);
        assert_taken(&what, &output);
    }
    for value in ["0", "2147483648", "18446744073709551615", "-1", "abc"] {
        let spec = format!("--listen=127.0.0.1:0,backlog={value}");
        let (what, output) = run_true(&dir, &[&spec, "--ready=now"]);
        assert_usage_error(
            &what,
            &output,
            &[&format!("backlog '{value}'"), "1 to 2147483647"],
        );
    }

    let socket = dir.join("bounds.sock");
    for value in ["0", "0777", "0o660"] {
        let spec = format!("--listen=unix:{},mode={value}", socket.display());
        let (what, output) = run_true(&dir, &[&spec, "--ready=now"]);
        assert_taken(&what, &output);
    }
    for value in ["01000", "8", "-1", "18446744073709551615", "abc"] {
        let spec = format!("--listen=unix:{},mode={value}", socket.display());
        let (what, output) = run_true(&dir, &[&spec, "--ready=now"]);
        assert_usage_error(&what, &output, &[&format!("mode '{value}'"), "0 to 0777"]);
    }
}

/// Sends one raw request line and returns every reply until the server
/// closes the connection.
fn exchange(sockvisor: &Sockvisor, line: &str) -> Vec<Value> {
    let mut stream = UnixStream::connect(sockvisor.control_path()).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = stream.write_all(format!("{line}\n").as_bytes());
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn assert_refused(line: &str, replies: &[Value], kind: &str, needles: &[&str]) {
    assert_eq!(replies.len(), 1, "{line}: {replies:?}");
    assert_eq!(replies[0]["ok"], false, "{line}: {replies:?}");
    assert_eq!(replies[0]["error"], kind, "{line}: {replies:?}");
    let message = replies[0]["message"].as_str().unwrap_or_default();
    for needle in needles {
        assert!(
            message.contains(needle),
            "{line}: {needle:?} in {message:?}"
        );
    }
}

/// Serving: `status --check` says so, with one generation of one worker.
fn assert_serving(sockvisor: &Sockvisor, generation: u32) {
    let check = sockvisor.client(&["status", "--check"]);
    assert!(check.status.success(), "{check:?}");
    let status = status_json(sockvisor);
    assert_eq!(status["current"], generation, "{status}");
    assert_eq!(status["workers"], 1, "{status}");
    let serving: Vec<&Value> = status["generations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["generation"] == generation)
        .collect();
    assert_eq!(serving.len(), 1, "{status}");
    assert_eq!(serving[0]["workers"].as_array().map(Vec::len), Some(1));
}

#[test]
fn the_control_socket_refuses_numbers_out_of_range_and_keeps_serving() {
    let dir = TestDir::new("control-bounds");
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--listen", "127.0.0.1:0", "--"])
        .args(Sockvisor::probe_args(&dir.path));
    let mut sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.wait_for_log("is ready after");
    assert_serving(&sockvisor, 1);

    let workers = [
        "0",
        "1025",
        "100000",
        "18446744073709551615",
        "9300000000000000000",
        "-1",
        "1.5",
        "\"8\"",
        "null",
    ];
    for value in workers {
        let line = format!(r#"{{"version":1,"command":"scale","workers":{value}}}"#);
        let replies = exchange(&sockvisor, &line);
        assert_refused(
            &line,
            &replies,
            "bad_request",
            &["workers", value, "1 to 1024"],
        );
    }
    // Too large for any integer type: JSON has it as a float.
    let line = r#"{"version":1,"command":"scale","workers":18446744073709551616}"#;
    assert_refused(
        line,
        &exchange(&sockvisor, line),
        "bad_request",
        &["workers", "1 to 1024"],
    );

    for pid in ["0", "-1", "2147483648", "9300000000000000000", "\"1\""] {
        let line = format!(r#"{{"command":"worker:ack","pid":{pid}}}"#);
        let replies = exchange(&sockvisor, &line);
        assert_refused(&line, &replies, "bad_request", &[pid, "1 to 2147483647"]);
    }

    for version in ["0", "18446744073709551615", "-1", "1.5", "\"1\""] {
        let line = format!(r#"{{"version":{version},"command":"status"}}"#);
        let replies = exchange(&sockvisor, &line);
        assert_refused(&line, &replies, "unsupported_version", &["version"]);
    }

    for signal in ["\"0\"", "\"65\"", "\"-1\"", "\"18446744073709551615\"", "9"] {
        let line = format!(r#"{{"version":1,"command":"signal","signal":{signal}}}"#);
        let replies = exchange(&sockvisor, &line);
        assert_refused(&line, &replies, "bad_request", &[]);
    }
    assert_serving(&sockvisor, 1);

    // The command line refuses what the socket refuses, with the same words.
    for value in ["0", "1025"] {
        let output = sockvisor.client(&["scale", value]);
        assert_usage_error(
            &format!("scale {value}"),
            &output,
            &["<N>", value, "1 to 1024"],
        );
    }
    assert_serving(&sockvisor, 1);

    // The edges that are allowed work: a scale to the same count, and the
    // longest timeout for an upgrade and a stop.
    let line = r#"{"version":1,"command":"scale","workers":1}"#;
    let replies = exchange(&sockvisor, line);
    assert_eq!(replies.last().unwrap()["ok"], true, "{replies:?}");
    let upgrade = sockvisor.client(&["upgrade", "--timeout", "8760h"]);
    assert!(upgrade.status.success(), "{upgrade:?}");
    assert_serving(&sockvisor, 2);
    let stop = sockvisor.client(&["stop", "--timeout", "8760h"]);
    assert!(stop.status.success(), "{stop:?}");
    assert_eq!(sockvisor.wait_exit(), 0);
    assert!(
        !sockvisor.stderr().contains("panicked"),
        "{}",
        sockvisor.stderr()
    );
}

#[test]
fn recycle_limits_are_taken_in_range_and_refused_beyond() {
    let dir = TestDir::new("recycle-limits");
    for flags in [
        ["--worker-max-rss", "1"],
        ["--worker-max-rss", "512M"],
        ["--worker-max-rss", "2g"],
        ["--worker-max-rss", "8388607T"],
        // `true` exits long before this age: a shorter one could replace
        // it first (1ms is taken, but would race the exit here).
        ["--worker-max-age", "60s"],
        ["--worker-max-age", "8760h"],
    ] {
        let (what, output) = run_true(&dir, &flags);
        assert_taken(&what, &output);
    }
    let (what, output) = run_true(
        &dir,
        &["--worker-max-rss", "1G", "--worker-sample-interval", "1ms"],
    );
    assert_taken(&what, &output);
    for (flags, needles) in [
        (
            vec!["--worker-max-rss", "0"],
            vec!["--worker-max-rss", "'0' is zero"],
        ),
        (
            vec!["--worker-max-rss", "1.5G"],
            vec!["--worker-max-rss", "invalid size '1.5G'", "512M"],
        ),
        (
            vec!["--worker-max-rss", "8388608T"],
            vec!["--worker-max-rss", "'8388608T' is too large"],
        ),
        (
            vec!["--worker-max-rss", "18446744073709551616"],
            vec!["--worker-max-rss", "invalid size"],
        ),
        (
            vec!["--worker-max-age", "0"],
            vec!["--worker-max-age", "'0' is zero"],
        ),
        (
            vec!["--worker-max-age", "8760.1h"],
            vec!["--worker-max-age", "maximum, 8760h (one year)"],
        ),
        (
            vec!["--worker-max-rss", "1G", "--worker-sample-interval", "0"],
            vec!["--worker-sample-interval", "'0' is zero"],
        ),
    ] {
        let (what, output) = run_true(&dir, &flags);
        assert_usage_error(&what, &output, &needles);
    }
    // A sampling interval means nothing without a limit: clap names the
    // flag it needs.
    let (what, output) = run_true(&dir, &["--worker-sample-interval", "1s"]);
    assert_no_panic(&what, &output);
    assert_eq!(output.status.code(), Some(2), "{what}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("required arguments were not provided")
            && stderr.contains("--worker-max-rss"),
        "{what}: {stderr}"
    );
}
