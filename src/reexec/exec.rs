//! Carrying a re-exec out, on both sides of `execve`.
//!
//! The old program writes the state to a memfd, lets exactly the described
//! descriptors (plus the memfd and a descriptor of its own executable)
//! survive the exec, blocks every signal so that none is lost or handled by
//! a default action while no handler exists (the mask survives `execve`;
//! the new program unblocks once its handlers are installed), and executes
//! the new binary with its own command line. Children that exit meanwhile
//! stay zombies until the new program reaps them.
//!
//! The new program reads the state; if it cannot restore it, it executes
//! the old program again from the descriptor of the old executable, which
//! works even when the file on disk was replaced, and the service goes on.
//!
//! Variables: `SOCKVISOR_REEXEC_STATE` and `SOCKVISOR_REEXEC_FALLBACK` (the
//! two descriptors), `SOCKVISOR_REEXEC_FAILED` (why a new program fell
//! back), `SOCKVISOR_REEXEC_CHECK` (check mode, see `check`: prove that
//! the state on fd 3 can be resumed, and exit).
//! `SOCKVISOR_TEST_RESTORE_FAILS_IN=<binary path>` makes the program at
//! that path refuse to restore (it still passes the check): a test-only
//! switch to exercise the fallback. None of them reaches a server child;
//! only the check run gets `SOCKVISOR_REEXEC_CHECK`.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};

use super::state::State;

pub const STATE_FD_VAR: &str = "SOCKVISOR_REEXEC_STATE";
pub const FALLBACK_FD_VAR: &str = "SOCKVISOR_REEXEC_FALLBACK";
pub const FAILED_VAR: &str = "SOCKVISOR_REEXEC_FAILED";
pub const CHECK_VAR: &str = "SOCKVISOR_REEXEC_CHECK";
pub const TEST_FAIL_VAR: &str = "SOCKVISOR_TEST_RESTORE_FAILS_IN";

static STARTED_FROM: OnceLock<PathBuf> = OnceLock::new();

/// Remembers where this sockvisor was first started from (the path, so
/// that a binary replaced there later is found), once.
pub fn remember_started_from(path: Option<PathBuf>) {
    let path = path
        .or_else(|| std::env::current_exe().ok())
        .unwrap_or_else(|| PathBuf::from("sockvisor"));
    let _ = STARTED_FROM.set(path);
}

pub fn started_from() -> PathBuf {
    STARTED_FROM
        .get()
        .cloned()
        .unwrap_or_else(|| PathBuf::from("sockvisor"))
}

/// True when this program was started by a re-exec.
pub fn is_restoring() -> bool {
    std::env::var_os(STATE_FD_VAR).is_some()
}

/// The hand-over descriptors and what they say about how we got here.
pub struct Handover {
    memfd: OwnedFd,
    fallback: Option<OwnedFd>,
    /// Set when this program is the old one, run again because the new one
    /// could not restore: the reason.
    pub failed: Option<String>,
}

/// What the previous program handed over.
pub struct Inherited {
    pub state: State,
    pub handover: Handover,
}

/// Reads the state a previous program handed over, if this is a re-exec.
/// A state this program cannot read sends it back to the previous program.
pub fn take_inherited() -> Option<Inherited> {
    let memfd = adopt_fd_var(STATE_FD_VAR)?;
    let handover = Handover {
        fallback: adopt_fd_var(FALLBACK_FD_VAR),
        failed: std::env::var(FAILED_VAR).ok(),
        memfd,
    };
    let mut bytes = Vec::new();
    let read = handover.memfd.try_clone().and_then(|fd| {
        let mut file = File::from(fd);
        file.seek(io::SeekFrom::Start(0))?;
        file.read_to_end(&mut bytes)
    });
    let state = match read {
        Ok(_) => State::decode(&bytes),
        Err(e) => Err(format!("cannot read the re-exec state: {e}")),
    };
    match state {
        Ok(state) => Some(Inherited { state, handover }),
        Err(why) => fall_back(handover, &why),
    }
}

impl Inherited {
    /// The test-only switch: true when this program must refuse.
    pub fn refused_for_test(&self) -> bool {
        names_this_program(TEST_FAIL_VAR)
    }
}

/// For the test-only switches: true when the variable `name` is the path
/// of this program's executable.
pub fn names_this_program(name: &str) -> bool {
    let Some(path) = std::env::var_os(name) else {
        return false;
    };
    std::env::current_exe().is_ok_and(|exe| exe == Path::new(&path))
}

impl Handover {
    /// The state is restored: the hand-over descriptors are not needed.
    pub fn done(self) {
        drop(self.memfd);
        drop(self.fallback);
    }
}

/// This program cannot restore the state: execute the old one again with
/// the same state. Does not return.
pub fn fall_back(handover: Handover, why: &str) -> ! {
    tracing::error!("cannot restore the re-exec state: {why}; running the previous program again");
    let Some(fallback) = &handover.fallback else {
        crate::complain!(
            "sockvisor: cannot restore the re-exec state ({why}) and no previous program to return to"
        );
        std::process::exit(1);
    };
    if let Some(first) = &handover.failed {
        crate::complain!(
            "sockvisor: the previous program cannot restore its own state either ({why}; first: {first})"
        );
        std::process::exit(1);
    }
    let mut env = environment();
    env.push(var(STATE_FD_VAR, &handover.memfd.as_raw_fd().to_string()));
    env.push(var(FALLBACK_FD_VAR, &fallback.as_raw_fd().to_string()));
    env.push(var(FAILED_VAR, why));
    crate::logging::flush();
    let errno = nix::unistd::fexecve(fallback, &arguments(), &env);
    crate::complain!("sockvisor: cannot run the previous program again: {errno:?}");
    std::process::exit(1)
}

/// Replaces this program with `binary`, handing `state` over. Returns only
/// if the exec failed, with everything as it was.
pub fn exec(binary: &Path, state: &State) -> io::Error {
    match try_exec(binary, state) {
        Ok(never) => match never {},
        Err(err) => err,
    }
}

enum Never {}

fn try_exec(binary: &Path, state: &State) -> io::Result<Never> {
    let memfd = memfd_create("sockvisor-reexec-state", MFdFlags::empty())?;
    File::from(memfd.try_clone()?).write_all(&state.encode())?;
    let fallback: OwnedFd = File::open("/proc/self/exe")?.into();
    let mut keep = state.descriptors();
    keep.push(memfd.as_raw_fd());
    keep.push(fallback.as_raw_fd());
    let path = CString::new(binary.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::other("the binary path contains a NUL byte"))?;
    let mut env = environment();
    env.push(var(STATE_FD_VAR, &memfd.as_raw_fd().to_string()));
    env.push(var(FALLBACK_FD_VAR, &fallback.as_raw_fd().to_string()));
    let argv = arguments();
    for fd in &keep {
        set_close_on_exec(*fd, false);
    }
    let mut saved = SigSet::empty();
    sigprocmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut saved),
    )?;
    // The new program starts with nothing held: what this one holds is
    // written before it goes.
    crate::logging::flush();
    let errno = nix::unistd::execve(&path, &argv, &env).unwrap_err();
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&saved), None);
    for fd in &keep {
        set_close_on_exec(*fd, true);
    }
    Err(io::Error::from(errno))
}

/// Makes every descriptor the state names close-on-exec again, now that
/// this program owns them.
pub fn own_descriptors(state: &State) {
    for fd in state.descriptors() {
        set_close_on_exec(fd, true);
    }
}

fn set_close_on_exec(fd: RawFd, on: bool) {
    let flag = if on { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: F_SETFD only changes a flag of this process's descriptor; a
    // descriptor that is not open fails with EBADF and nothing happens.
    unsafe { libc::fcntl(fd, libc::F_SETFD, flag) };
}

/// Takes ownership of the descriptor a variable names.
fn adopt_fd_var(name: &str) -> Option<OwnedFd> {
    let fd: RawFd = std::env::var(name).ok()?.parse().ok()?;
    // SAFETY: the previous program of this process put this descriptor
    // here for us and named it in the variable; nothing else owns it.
    (fd > 2).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// True when `fd` is an open descriptor above stdio.
pub fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads a flag; on a closed descriptor it fails
    // with EBADF.
    fd > 2 && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0
}

/// Takes ownership of a descriptor named in the state.
pub fn adopt_fd(fd: RawFd) -> Result<OwnedFd, String> {
    if !is_open(fd) {
        return Err(format!("descriptor {fd} of the re-exec state is not open"));
    }
    // SAFETY: the previous program handed this descriptor over and named it
    // in the state; each one is adopted exactly once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// This program's command line, for the next one.
fn arguments() -> Vec<CString> {
    std::env::args_os()
        .map(|a| CString::new(a.into_vec()).unwrap_or_default())
        .collect()
}

/// This program's environment without the hand-over variables.
fn environment() -> Vec<CString> {
    std::env::vars_os()
        .filter(|(key, _)| !is_handover_variable(&key.to_string_lossy()))
        .map(|(key, value)| {
            let mut entry: OsString = key;
            entry.push("=");
            entry.push(value);
            CString::new(entry.into_vec()).unwrap_or_default()
        })
        .collect()
}

fn var(key: &str, value: &str) -> CString {
    CString::new(format!("{key}={value}")).unwrap_or_default()
}

/// The variables of the hand-over itself, never passed on.
pub fn is_handover_variable(key: &str) -> bool {
    key.starts_with("SOCKVISOR_REEXEC_")
}
