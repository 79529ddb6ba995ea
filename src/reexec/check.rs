//! The re-exec check: the handshake by which a new binary proves, before
//! sockvisor executes it, that it is a sockvisor that can resume this
//! state. Exit statuses prove nothing (`/bin/true` exits 0), so the
//! candidate has to answer with something only a program that read and
//! understood the state can compute.
//!
//! The rules, on both sides:
//!
//! - The running sockvisor captures the state, writes it to a memfd, and
//!   runs the candidate once with its own command line,
//!   `SOCKVISOR_REEXEC_CHECK=<nonce>` (32 hex digits, fresh for every
//!   check), the state on fd 3 and the write end of an answer pipe on fd 4
//!   (placed by `spawn` as `LISTEN_FDS=2`, named `reexec-state` and
//!   `reexec-answer`, without `LISTEN_PID`, so a socket-activated program
//!   does not take them for its sockets).
//! - The candidate decodes the state with `State::decode`, the path resume
//!   takes (its version check included), and validates it as resume does
//!   before it touches a descriptor (`capture::validate_data`, which
//!   restores the supervisor onto a stand-in for the processes). Its
//!   command line must be `run`. It then writes one line to fd 4 and exits
//!   0: `sockvisor-reexec-ok <state version> <digest>`, the digest being 16
//!   hex digits of SipHash-2-4 keyed with the nonce over the state version
//!   (4 bytes, little-endian) followed by the state bytes exactly as read.
//!   If it cannot, it writes `sockvisor-reexec-refused <reason>` and exits 3.
//! - The running sockvisor accepts only exit status 0 together with exactly
//!   the line it computes itself, within [`CHECK_TIMEOUT`]. Anything else
//!   (another status, no line, a refusal, another state version, another
//!   digest, anything that is not that line) refuses the re-exec with the
//!   reason, and nothing changes. A candidate that overruns is killed with
//!   its process group; its exit is collected by the one reaper like any
//!   other and recognised by its pid.
//!
//! What the proof is, and is not: the candidate is given the nonce and the
//! state, so any program that implements this handshake can answer. It is
//! not authentication (which binary to run stays the operator's decision);
//! it shows that the candidate, in this very run, read the whole state it
//! was given and understood its version. SipHash-2-4 is used as a keyed
//! hash with a published specification, implemented here, so that an old
//! and a new binary compute the same digest whatever built them (the
//! algorithms behind std's hashers may change between Rust releases); no
//! cryptographic strength is claimed or needed.
//!
//! The state the candidate checks is captured when the check starts; the
//! one handed over at the exec is captured again then (processes may have
//! come and gone meanwhile). Both are the same format and version, and the
//! new program validates the handed-over one again before it takes any
//! descriptor over, falling back to the old program if it cannot.
//!
//! `SOCKVISOR_TEST_CLAIMS_OLD_VERSION_IN=<binary path>` makes the program
//! at that path, when checked, answer for the state version before the one
//! it read, with a digest to match: a test-only switch to exercise the
//! version rule of the checking side.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};

use super::state::{STATE_VERSION, State};
use crate::digest::siphash24;
use crate::reaper::ExitStatus;

/// How long a candidate may take to answer. A sockvisor answers in
/// milliseconds; this only bounds a program that never does.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the candidate finds the state and where it answers.
pub const STATE_FD: RawFd = 3;
pub const ANSWER_FD: RawFd = 4;

pub const TEST_OLD_VERSION_VAR: &str = "SOCKVISOR_TEST_CLAIMS_OLD_VERSION_IN";

const PROOF_WORD: &str = "sockvisor-reexec-ok";
const REFUSAL_WORD: &str = "sockvisor-reexec-refused";

/// More than any answer needs; the rest is not read.
const MAX_ANSWER: usize = 1024;

/// The exit status of a candidate that cannot resume the state.
const REFUSED_STATUS: i32 = 3;

/// The fresh value each check's digest is keyed with, so that no answer
/// recorded from an earlier check is right for this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nonce([u8; 16]);

impl Nonce {
    pub fn fresh() -> Nonce {
        let mut bytes = [0u8; 16];
        let read = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
        if read.is_err() {
            // No /dev (a bare chroot): std's hash keys, which it draws from
            // the kernel's random source, serve as well for freshness.
            use std::hash::{BuildHasher, Hasher};
            for (half, chunk) in bytes.chunks_exact_mut(8).enumerate() {
                let mut hasher = std::hash::RandomState::new().build_hasher();
                hasher.write_usize(half);
                chunk.copy_from_slice(&hasher.finish().to_le_bytes());
            }
        }
        Nonce(bytes)
    }

    /// Exactly 32 hex digits.
    pub fn parse(text: &str) -> Option<Nonce> {
        let digits = text.as_bytes();
        if digits.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
        }
        Some(Nonce(bytes))
    }
}

impl std::fmt::Display for Nonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// The one line that proves reading `state` (of `version`) under `nonce`.
pub fn proof(nonce: &Nonce, version: u32, state: &[u8]) -> String {
    let mut message = Vec::with_capacity(4 + state.len());
    message.extend_from_slice(&version.to_le_bytes());
    message.extend_from_slice(state);
    format!(
        "{PROOF_WORD} {version} {:016x}\n",
        siphash24(&nonce.0, &message)
    )
}

/// The checking side's rule: `Ok` only for exit status 0 and exactly the
/// expected proof; otherwise what was wrong, as the end of a sentence that
/// starts with the binary's name.
pub fn verdict(
    status: ExitStatus,
    answer: &[u8],
    nonce: &Nonce,
    state: &[u8],
) -> Result<(), String> {
    if let Some(reason) = answer
        .strip_prefix(REFUSAL_WORD.as_bytes())
        .and_then(|rest| rest.strip_prefix(b" "))
    {
        let reason = String::from_utf8_lossy(reason);
        return Err(format!(
            "cannot resume this state: {}",
            one_line(reason.trim_end())
        ));
    }
    if !status.success() {
        return Err(format!(
            "{status} when asked to prove that it can resume this state (is it a sockvisor?)"
        ));
    }
    if answer.is_empty() {
        return Err(
            "exited with status 0 without proving that it read the state (is it a sockvisor?)"
                .into(),
        );
    }
    let not_a_proof = || {
        let preview: String = String::from_utf8_lossy(answer).chars().take(80).collect();
        format!("answered the check with {preview:?}, which is not a proof")
    };
    let Some(line) = answer.strip_suffix(b"\n") else {
        return Err(not_a_proof());
    };
    let fields: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
    let [word, version, _digest] = fields.as_slice() else {
        return Err(not_a_proof());
    };
    if *word != PROOF_WORD.as_bytes() {
        return Err(not_a_proof());
    }
    let Some(version) = std::str::from_utf8(version)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    else {
        return Err(not_a_proof());
    };
    if version != STATE_VERSION {
        return Err(format!(
            "answered for state version {version}, but this sockvisor hands over version {STATE_VERSION}"
        ));
    }
    if answer != proof(nonce, STATE_VERSION, state).as_bytes() {
        return Err("answered with a proof that does not match the state it was given".into());
    }
    Ok(())
}

/// One check in progress, on the checking side: what the candidate was
/// given, and where its answer arrives.
pub struct Challenge {
    nonce: Nonce,
    state: Vec<u8>,
    /// The candidate's ends: the state and the answer pipe's write end,
    /// closed here once the candidate has them.
    given: Option<(OwnedFd, OwnedFd)>,
    answer: OwnedFd,
}

impl Challenge {
    pub fn new(state: &State) -> io::Result<Challenge> {
        let state = state.encode();
        let memfd = memfd_create("sockvisor-reexec-check", MFdFlags::MFD_CLOEXEC)?;
        File::from(memfd.try_clone()?).write_all(&state)?;
        let (answer, answer_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        // Non-blocking on our end only: the answer is read once the
        // candidate has exited, and what it left in the pipe is all there is.
        fcntl(&answer, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        Ok(Challenge {
            nonce: Nonce::fresh(),
            state,
            given: Some((memfd, answer_end)),
            answer,
        })
    }

    /// The candidate's descriptors, in order for fds 3 and 4, with names.
    pub fn descriptors(&self) -> Vec<(RawFd, &'static str)> {
        self.given
            .as_ref()
            .map(|(state, answer)| {
                vec![
                    (state.as_raw_fd(), "reexec-state"),
                    (answer.as_raw_fd(), "reexec-answer"),
                ]
            })
            .unwrap_or_default()
    }

    /// `SOCKVISOR_REEXEC_CHECK` and its value.
    pub fn variable(&self) -> (String, String) {
        (super::exec::CHECK_VAR.to_string(), self.nonce.to_string())
    }

    /// The candidate runs with its copies: ours are closed, so that the
    /// pipe's end is the candidate's alone.
    pub fn given(&mut self) {
        self.given = None;
    }

    /// Judges the candidate that exited with `status`.
    pub fn verdict(&self, status: ExitStatus) -> Result<(), String> {
        verdict(status, &self.read_answer(), &self.nonce, &self.state)
    }

    fn read_answer(&self) -> Vec<u8> {
        let mut answer = vec![0u8; MAX_ANSWER];
        let mut len = 0;
        while len < answer.len() {
            match nix::unistd::read(&self.answer, &mut answer[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(nix::errno::Errno::EINTR) => continue,
                // EAGAIN: nothing more (a descendant may hold the write end).
                Err(_) => break,
            }
        }
        answer.truncate(len);
        answer
    }
}

/// Check mode, the candidate's side: answers on fd 4 and returns the exit
/// status. `takes_command_line` says whether the command line is `run`.
pub fn answer(nonce: &str, takes_command_line: bool) -> i32 {
    let outcome = prove(nonce, takes_command_line);
    let line = match &outcome {
        Ok(proof) => proof.clone(),
        Err(why) => format!("{REFUSAL_WORD} {}\n", one_line(why)),
    };
    let written = adopt(ANSWER_FD)
        .ok_or_else(|| io::Error::other(format!("descriptor {ANSWER_FD} is not open")))
        .and_then(|fd| File::from(fd).write_all(line.as_bytes()));
    if let Err(err) = written {
        crate::complain!(
            "sockvisor: re-exec check: cannot answer ({err}): {}",
            line.trim_end()
        );
    }
    match outcome {
        Ok(_) => 0,
        Err(_) => REFUSED_STATUS,
    }
}

fn prove(nonce: &str, takes_command_line: bool) -> Result<String, String> {
    if !takes_command_line {
        return Err("not a `run` command line".into());
    }
    let nonce = Nonce::parse(nonce).ok_or_else(|| {
        format!(
            "{} is not a nonce of 32 hex digits (the checking sockvisor speaks another version of the check)",
            super::exec::CHECK_VAR
        )
    })?;
    let fd = adopt(STATE_FD).ok_or_else(|| {
        format!("descriptor {STATE_FD}, the state to check, is not open (run by hand?)")
    })?;
    let mut bytes = Vec::new();
    let mut file = File::from(fd);
    file.seek(io::SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read the re-exec state: {e}"))?;
    prove_state(&nonce, &bytes)
}

/// Decodes and validates `bytes` as resume would, and proves it.
fn prove_state(nonce: &Nonce, bytes: &[u8]) -> Result<String, String> {
    let state = State::decode(bytes)?;
    super::capture::validate_data(&state)?;
    let version = if super::exec::names_this_program(TEST_OLD_VERSION_VAR) {
        state.version.saturating_sub(1)
    } else {
        state.version
    };
    Ok(proof(nonce, version, bytes))
}

/// Takes ownership of a descriptor the checking sockvisor placed.
fn adopt(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: in check mode fds 3 and 4 are the ones the checking sockvisor
    // placed for this program; nothing else in it owns them, and each is
    // adopted once. A descriptor that is not open is not adopted.
    super::exec::is_open(fd).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A reason as one line of printable text.
fn one_line(text: &str) -> String {
    text.chars()
        .take(MAX_ANSWER / 2)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    const NONCE: Nonce = Nonce([7; 16]);
    const STATE: &[u8] = br#"{"version":1}"#;

    fn expected() -> String {
        proof(&NONCE, STATE_VERSION, STATE)
    }

    #[test]
    fn a_proof_names_the_state_version_and_ends_the_line() {
        let line = expected();
        let fields: Vec<&str> = line.trim_end().split(' ').collect();
        assert_eq!(fields[..2], ["sockvisor-reexec-ok", "1"]);
        assert_eq!(fields[2].len(), 16);
        assert!(line.ends_with('\n'));
    }

    #[test]
    fn a_proof_depends_on_the_nonce_the_version_and_every_byte_of_the_state() {
        let line = expected();
        assert_ne!(proof(&Nonce([8; 16]), STATE_VERSION, STATE), line);
        let digest = |l: &str| l.split(' ').nth(2).map(str::to_string);
        assert_ne!(digest(&proof(&NONCE, 2, STATE)), digest(&line));
        assert_ne!(proof(&NONCE, STATE_VERSION, br#"{"version":1} "#), line);
        assert_ne!(proof(&NONCE, STATE_VERSION, br#"{"version":2}"#), line);
    }

    #[test]
    fn exit_0_with_the_exact_proof_is_accepted() {
        let answer = expected();
        assert_eq!(
            verdict(ExitStatus::Code(0), answer.as_bytes(), &NONCE, STATE),
            Ok(())
        );
    }

    #[test]
    fn exit_0_without_a_proof_is_refused() {
        let why = verdict(ExitStatus::Code(0), b"", &NONCE, STATE).unwrap_err();
        assert!(why.contains("without proving"), "{why}");
    }

    #[test]
    fn the_exact_proof_with_another_exit_status_is_refused() {
        let answer = expected();
        let why = verdict(ExitStatus::Code(1), answer.as_bytes(), &NONCE, STATE).unwrap_err();
        assert!(why.starts_with("exited with status 1 when asked"), "{why}");
        let killed = ExitStatus::Signal(Signal::SIGKILL);
        let why = verdict(killed, answer.as_bytes(), &NONCE, STATE).unwrap_err();
        assert!(why.starts_with("was killed by SIGKILL"), "{why}");
    }

    #[test]
    fn a_proof_for_another_nonce_or_state_is_refused() {
        for answer in [
            proof(&Nonce([8; 16]), STATE_VERSION, STATE),
            proof(&NONCE, STATE_VERSION, b"{}"),
            "sockvisor-reexec-ok 1 0000000000000000\n".to_string(),
        ] {
            let why = verdict(ExitStatus::Code(0), answer.as_bytes(), &NONCE, STATE).unwrap_err();
            assert!(why.contains("does not match the state"), "{why}");
        }
    }

    #[test]
    fn a_proof_for_another_state_version_is_refused_naming_both() {
        for version in [0, 2] {
            let answer = proof(&NONCE, version, STATE);
            let why = verdict(ExitStatus::Code(0), answer.as_bytes(), &NONCE, STATE).unwrap_err();
            assert!(
                why.contains(&format!("state version {version}"))
                    && why.contains(&format!("hands over version {STATE_VERSION}")),
                "{why}"
            );
        }
    }

    #[test]
    fn anything_but_the_proof_line_is_refused() {
        let proof = expected();
        let trimmed = proof.trim_end().to_string();
        for answer in [
            format!("{proof}{proof}"),
            trimmed.clone(),
            format!("{trimmed} \n"),
            format!(" {proof}"),
            proof.replace(' ', "  "),
            proof.to_uppercase(),
            "sockvisor-reexec-ok one 0000000000000000\n".into(),
            "hello\n".into(),
            "\u{0}\u{ff}garbage".into(),
        ] {
            assert!(
                verdict(ExitStatus::Code(0), answer.as_bytes(), &NONCE, STATE).is_err(),
                "{answer:?}"
            );
        }
        let why = verdict(ExitStatus::Code(0), &[0xff, 0xfe, b'\n'], &NONCE, STATE).unwrap_err();
        assert!(why.contains("not a proof"), "{why}");
    }

    #[test]
    fn a_refusal_is_reported_with_its_reason() {
        let answer = b"sockvisor-reexec-refused re-exec state version 1 is not supported\n";
        let why = verdict(ExitStatus::Code(3), answer, &NONCE, STATE).unwrap_err();
        assert_eq!(
            why,
            "cannot resume this state: re-exec state version 1 is not supported"
        );
    }

    #[test]
    fn a_nonce_is_32_hex_digits_and_reads_back() {
        let nonce = Nonce::fresh();
        let text = nonce.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(Nonce::parse(&text), Some(nonce));
        assert_eq!(Nonce::parse(&text.to_uppercase()), Some(nonce));
        assert_ne!(Nonce::fresh(), nonce);
        for bad in ["", "1", &text[..31], &format!("{text}0"), &"g".repeat(32)] {
            assert_eq!(Nonce::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Nonce::parse(&"é".repeat(16)), None);
    }

    #[test]
    fn the_candidate_refuses_another_command_line_or_check() {
        // Both are refused before descriptor 3 is looked at.
        let why = prove(&NONCE.to_string(), false).unwrap_err();
        assert!(why.contains("not a `run` command line"), "{why}");
        let why = prove("1", true).unwrap_err();
        assert!(why.contains("not a nonce"), "{why}");
    }

    #[test]
    fn the_candidate_refuses_a_state_it_cannot_read() {
        let why = prove_state(&NONCE, b"garbage").unwrap_err();
        assert!(why.contains("not readable"), "{why}");
        let why = prove_state(&NONCE, br#"{"version":2}"#).unwrap_err();
        assert!(why.contains("version 2 is not supported"), "{why}");
        let why = prove_state(&NONCE, STATE).unwrap_err();
        assert!(why.contains("not readable"), "{why}");
    }

    #[test]
    fn a_reason_is_one_printable_line() {
        assert_eq!(one_line("a\nb\tc"), "a b c");
    }
}
