//! Starting one child process the way systemd starts a socket-activated
//! service.
//!
//! This module owns the rules of the hand-over:
//!
//! - the listeners are at fds 3, 4, … in `--listen` order, then the
//!   descriptors of the fd store (`fdstore`), and nothing else
//!   above stdio survives `exec` (everything else is close-on-exec);
//! - `LISTEN_FDS`, `LISTEN_FDNAMES`, and `LISTEN_PID` equal to the child's own
//!   pid. The environment is built before the child is created, with a
//!   fixed-size slot for `LISTEN_PID` that the child fills in with its pid
//!   before `exec`: no allocation in the child, no trampoline process;
//! - variables sockvisor itself inherited (`LISTEN_*`, `NOTIFY_SOCKET`,
//!   `WATCHDOG_*`, and einhorn's and Server::Starter's) are not passed on;
//! - empty signal mask and default dispositions (`SIGPIPE` included);
//! - its own process group; with `SpawnRequest::terminal`, that group is
//!   made the terminal's foreground group before `exec` (see `terminal`);
//! - with `--user`, the identity of [`RunAs`] (groups, then gid, then uid)
//!   and `HOME`/`USER`/`LOGNAME` to match;
//! - a parent-death signal (`SIGKILL`), so a child never outlives a killed
//!   sockvisor and the ports are free for the next one. It is armed after
//!   the identity changes, which would clear it.
//!
//! The child is created the way `posix_spawn` creates one, `vfork`-style
//! (`clone` with `CLONE_VM | CLONE_VFORK`, on a stack of its own): it borrows
//! sockvisor's memory until it execs, so nothing is copied and sockvisor's
//! pages are not made copy-on-write. A `fork` of sockvisor would cost page
//! tables and copy-on-write faults proportional to sockvisor's memory, for
//! each of N workers. sockvisor waits (suspended by the kernel) only until
//! the child has exec'd; it never waits for a child to exit: exits are the
//! reaper's business.
//!
//! The child shares sockvisor's descriptor table too (`CLONE_FILES`), and
//! its first call makes it a copy of only the descriptors it uses (below
//! the highest listener, stored descriptor or terminal): sockvisor holds a
//! pidfd per child, and copying them all would make every spawn O(N). If
//! the system refuses that call (a seccomp filter), the child exits before
//! touching anything and every later child is cloned with a full copy.

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::unistd::{AccessFlags, Pid, access};

use crate::credentials::RunAs;
use crate::listen::Listener;

/// The program to run and its arguments, as the operator gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub program: OsString,
    pub args: Vec<OsString>,
}

/// Why a child could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnError {
    NotFound {
        program: String,
        path_var: String,
    },
    /// A program named by a path (with a `/`) that is not there.
    NoSuchFile {
        path: PathBuf,
    },
    NotExecutable {
        path: PathBuf,
        reason: String,
    },
    Exec {
        path: PathBuf,
        errno: Errno,
    },
    /// The child failed before `exec`, at `step`.
    Prepare {
        step: ChildStep,
        errno: Errno,
    },
    Fork(Errno),
    /// An `--env-file` could not be read: `PATH:LINE: what is wrong`.
    Environment(String),
}

/// What a child was doing between `clone` and `exec` when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildStep {
    /// Placing the listeners and stored descriptors at 3.., or making its
    /// own descriptor table.
    Descriptors,
    /// Taking the `--user` identity.
    Identity,
    /// `exec` itself.
    Exec,
}

/// Exit status when the command is not found, as the shell's.
pub const EXIT_NOT_FOUND: i32 = 127;
/// Exit status when the command exists but cannot be executed, as the
/// shell's.
pub const EXIT_NOT_EXECUTABLE: i32 = 126;

impl SpawnError {
    /// Exit status sockvisor uses for this error, following the shell's
    /// convention (see `run::EXIT_STATUS`).
    pub fn exit_code(&self) -> i32 {
        match self {
            SpawnError::NotFound { .. } | SpawnError::NoSuchFile { .. } => EXIT_NOT_FOUND,
            SpawnError::Exec {
                errno: Errno::ENOENT,
                path,
            } if !path.exists() => EXIT_NOT_FOUND,
            SpawnError::NotExecutable { .. } | SpawnError::Exec { .. } => EXIT_NOT_EXECUTABLE,
            SpawnError::Prepare { .. } | SpawnError::Fork(_) | SpawnError::Environment(_) => {
                crate::run::EXIT_SETUP
            }
        }
    }
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::NotFound { program, path_var } => write!(
                f,
                "command not found: '{program}' is not in PATH={path_var} (check the name or give a full path)"
            ),
            SpawnError::NoSuchFile { path } => write!(
                f,
                "command not found: '{}' does not exist (check the path)",
                path.display()
            ),
            SpawnError::NotExecutable { path, reason } => {
                write!(f, "cannot execute '{}': {reason}", path.display())
            }
            SpawnError::Exec {
                path,
                errno: Errno::ENOENT,
            } if path.exists() => write!(
                f,
                "cannot execute '{}': the interpreter its #! line names, or its dynamic loader, does not exist",
                path.display()
            ),
            SpawnError::Exec { path, errno } => {
                write!(
                    f,
                    "cannot execute '{}': {}",
                    path.display(),
                    describe(*errno)
                )?;
                match errno {
                    Errno::ENOEXEC => f.write_str(
                        " (not a program for this machine, or a script without a #! line)",
                    ),
                    Errno::EACCES => f.write_str(
                        " (check its permissions, and its directories', for the user it runs as)",
                    ),
                    Errno::E2BIG => f.write_str(
                        " (its arguments and environment, --env-file variables included, are over what the kernel passes to a program: make them smaller)",
                    ),
                    _ => Ok(()),
                }
            }
            SpawnError::Prepare { step, errno } => {
                let what = match step {
                    ChildStep::Exec => "execute the program",
                    ChildStep::Descriptors => "pass the child its sockets",
                    ChildStep::Identity => "switch the child to the --user identity",
                };
                write!(f, "cannot {what}: {}", describe(*errno))?;
                match (step, errno) {
                    (_, Errno::EMFILE) => f.write_str(" (raise the open-file limit, ulimit -n)"),
                    (ChildStep::Identity, Errno::EPERM) => f.write_str(
                        " (running the server as another user needs root, or CAP_SETUID and CAP_SETGID)",
                    ),
                    _ => Ok(()),
                }
            }
            SpawnError::Fork(errno) => {
                write!(f, "cannot start a child process: {}", describe(*errno))?;
                match errno {
                    Errno::EAGAIN => f.write_str(" (the process limit, ulimit -u, may be reached)"),
                    Errno::EMFILE => f.write_str(" (raise the open-file limit, ulimit -n)"),
                    _ => Ok(()),
                }
            }
            SpawnError::Environment(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for SpawnError {}

/// An errno as the C library says it, in lower case ("resource
/// temporarily unavailable", where nix says "try again").
fn describe(errno: Errno) -> String {
    let text = std::io::Error::from_raw_os_error(errno as i32).to_string();
    let text = text.split(" (os error").next().unwrap_or_default();
    text.to_lowercase()
}

/// PATH used when sockvisor itself has none, as `execvp` does.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Finds the program the way `execvp` does, but up front so a missing command
/// is reported clearly instead of as a child that exits 127.
pub fn resolve(program: &OsStr) -> Result<PathBuf, SpawnError> {
    let as_path = Path::new(program);
    if program.as_bytes().contains(&b'/') {
        return check_executable(as_path).map(|()| as_path.to_path_buf());
    }
    let path_var = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_string());
    let mut first_refusal = None;
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(as_path);
        if !candidate.exists() {
            continue;
        }
        match check_executable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(err) => {
                first_refusal.get_or_insert(err);
            }
        }
    }
    Err(first_refusal.unwrap_or(SpawnError::NotFound {
        program: program.to_string_lossy().into_owned(),
        path_var,
    }))
}

fn check_executable(path: &Path) -> Result<(), SpawnError> {
    let refuse = |reason: &str| SpawnError::NotExecutable {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    match std::fs::metadata(path) {
        Err(_) => Err(SpawnError::NoSuchFile {
            path: path.to_path_buf(),
        }),
        Ok(meta) if meta.is_dir() => Err(refuse(
            "is a directory (give the path of the program in it)",
        )),
        Ok(_) => access(path, AccessFlags::X_OK)
            .map_err(|_| refuse("permission denied (make it an executable file, e.g. chmod +x)")),
    }
}

/// What one spawn needs: the command, the sockets, and sockvisor's own
/// variables for the child.
pub struct SpawnRequest<'a> {
    pub command: &'a Command,
    pub listeners: &'a [Listener],
    /// Descriptors passed after the listeners, with their names: the fd
    /// store's, or for a re-exec check run the state and the answer pipe.
    pub stored: &'a [(RawFd, &'a str)],
    /// Extra variables (`SOCKVISOR_*`) given to the child.
    pub extra_env: &'a [(String, String)],
    /// A terminal whose foreground process group the child's group becomes.
    pub terminal: Option<RawFd>,
    /// `WATCHDOG_USEC` to give, with `WATCHDOG_PID` = the child's own pid.
    pub watchdog: Option<std::time::Duration>,
    /// Leave `LISTEN_PID` out (`--no-listen-pid`), for wrappers that fork.
    pub no_listen_pid: bool,
    /// `--user`/`--group`: the identity the child takes before `exec`.
    pub run_as: Option<&'a RunAs>,
    /// Variables from `--env-file`: they replace sockvisor's own of the
    /// same name, and never the ones sockvisor sets for the child.
    pub env_overrides: &'a [(String, String)],
    /// Ask for a pidfd of the child (see [`Spawned::pidfd`]).
    pub pidfd: bool,
}

/// A child that has `exec`ed.
#[derive(Debug)]
pub struct Spawned {
    pub pid: Pid,
    /// A pidfd for it, when one was asked for and the kernel gave one
    /// (`CLONE_PIDFD`, Linux 5.2): for the reaper to wait on it alone.
    pub pidfd: Option<OwnedFd>,
}

/// Set once the kernel has refused `CLONE_PIDFD`: it will refuse it again.
static NO_CLONE_PIDFD: AtomicBool = AtomicBool::new(false);

/// Set once a child could not make its own copy of the descriptor table
/// it shared (`CLONE_FILES`): children are then cloned with a copy.
static NO_SHARED_FILES: AtomicBool = AtomicBool::new(false);

/// Test-only: a child behaves as if neither `close_range` nor `unshare`
/// were allowed, as under a seccomp filter that refuses both.
const TEST_NO_UNSHARE_VAR: &str = "SOCKVISOR_TEST_SPAWN_CANNOT_UNSHARE";

/// Whether [`TEST_NO_UNSHARE_VAR`] is set; read once, not at every spawn.
fn test_no_unshare() -> bool {
    static SET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SET.get_or_init(|| std::env::var_os(TEST_NO_UNSHARE_VAR).is_some())
}

/// Starts the child and returns it once it has successfully `exec`ed.
pub fn spawn(request: &SpawnRequest<'_>) -> Result<Spawned, SpawnError> {
    let path = resolve(&request.command.program)?;
    let mut plan = ExecPlan::new(&path, request);

    // Block every signal while the child exists without having exec'd, so
    // that sockvisor's handlers never run in it; the child resets
    // dispositions, then unblocks.
    let mut saved_mask = SigSet::empty();
    sigprocmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut saved_mask),
    )
    .map_err(SpawnError::Fork)?;
    let mut with_pidfd = request.pidfd && !NO_CLONE_PIDFD.load(Ordering::Relaxed);
    let cloned = loop {
        plan.shares_files = !NO_SHARED_FILES.load(Ordering::Relaxed);
        let cloned = clone_child(&mut plan, with_pidfd);
        match cloned {
            // Kernels before 5.2 do not know the flag (and a seccomp
            // filter may refuse it); with every descriptor in use, there
            // is none to give. Either way the child can still be started,
            // and reaped the old way.
            Err(Errno::EINVAL | Errno::EPERM | Errno::ENOSYS) if with_pidfd => {
                NO_CLONE_PIDFD.store(true, Ordering::Relaxed)
            }
            Err(Errno::EMFILE | Errno::ENFILE) if with_pidfd => {}
            // A filter that refuses a shared table: a copy, as fork makes.
            Err(Errno::EINVAL | Errno::EPERM) if plan.shares_files => {
                NO_SHARED_FILES.store(true, Ordering::Relaxed);
                continue;
            }
            // SAFETY: a plain read of a field of `plan`, which the child no
            // longer uses (volatile: the child wrote it).
            Ok(_) if unsafe { std::ptr::read_volatile(&plan.cannot_unshare) } => {
                // Neither close_range nor unshare may run here (a seccomp
                // filter): that child exited without touching anything,
                // and the reaper's sweep collects it. Children get a
                // copy of the whole table from now on.
                tracing::debug!(
                    "a child cannot unshare its descriptor table (errno {}); copying it at each spawn",
                    plan.exec_errno
                );
                NO_SHARED_FILES.store(true, Ordering::Relaxed);
                plan.cannot_unshare = false;
                plan.exec_errno = 0;
                continue;
            }
            _ => break cloned,
        }
        with_pidfd = false;
    };
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&saved_mask), None);
    let (pid, pidfd) = cloned.map_err(SpawnError::Fork)?;
    // `clone` returned, so the child has exec'd, or failed and exited
    // leaving the reason in the plan it shared. (It also made its own
    // process group before either.)
    // SAFETY: a plain read of a field of `plan`, which the child no longer
    // uses; volatile because the child wrote it behind the compiler's back.
    let (errno, step) = unsafe {
        (
            std::ptr::read_volatile(&plan.exec_errno),
            std::ptr::read_volatile(&plan.failed_step),
        )
    };
    if errno == 0 {
        return Ok(Spawned { pid, pidfd });
    }
    // The child has exited; its SIGCHLD brings the reaper's sweep to it
    // (closing its pidfd here leaves it to that).
    let errno = Errno::from_raw(errno);
    Err(match step {
        ChildStep::Exec => SpawnError::Exec { path, errno },
        step => SpawnError::Prepare { step, errno },
    })
}

/// One `clone` of the child, `vfork`-style and sharing sockvisor's
/// descriptor table until the child makes its own (`CLONE_FILES`, see
/// `ExecPlan::exec_in_child`), with a pidfd for it if `with_pidfd`.
/// Returns once the child has exec'd or exited.
fn clone_child(plan: &mut ExecPlan, with_pidfd: bool) -> Result<(Pid, Option<OwnedFd>), Errno> {
    CHILD_STACK.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(ChildStack::new()?);
        }
        let Some(stack) = cell.as_ref() else {
            return Err(Errno::ENOMEM);
        };
        let plan_ptr: *mut ExecPlan = plan;
        let mut pidfd: libc::c_int = -1;
        let mut flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
        if plan.shares_files {
            flags |= libc::CLONE_FILES;
        }
        if with_pidfd {
            flags |= libc::CLONE_PIDFD;
        }
        // SAFETY: sockvisor is single-threaded. The child shares this
        // memory (CLONE_VM) and runs `run_child` on `stack`, making only
        // async-signal-safe calls on the plan prepared above, which it
        // alone uses until it execs or exits: CLONE_VFORK suspends this
        // thread until then, so the plan and the stack outlive its use.
        // It shares the descriptor table too (CLONE_FILES) until its first
        // call makes it a copy of its own, before it changes any
        // descriptor. With CLONE_PIDFD the kernel writes the new pidfd to
        // `pidfd` (the parent-tid argument), which outlives the call.
        let pid = unsafe {
            libc::clone(
                run_child,
                stack.top(),
                flags,
                plan_ptr.cast(),
                &mut pidfd as *mut libc::c_int,
            )
        };
        if pid < 0 {
            return Err(Errno::last());
        }
        // SAFETY: with CLONE_PIDFD and success, the kernel made `pidfd` a
        // new descriptor (close-on-exec) that nothing else owns.
        let pidfd = (with_pidfd && pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
        Ok((Pid::from_raw(pid), pidfd))
    })
}

thread_local! {
    /// One stack serves every child: only one at a time runs on it, and
    /// sockvisor is suspended meanwhile. Mapped at the first spawn.
    static CHILD_STACK: std::cell::RefCell<Option<ChildStack>> =
        const { std::cell::RefCell::new(None) };
}

/// Where the child runs between `clone` and `exec`. It shares sockvisor's
/// memory, so it cannot use sockvisor's stack; a page below the stack is
/// left inaccessible so that an overflow faults instead of writing over
/// sockvisor's memory.
struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

impl ChildStack {
    /// Far more than the few calls before `exec` need, in any build.
    const SIZE: usize = 256 * 1024;

    fn new() -> Result<ChildStack, Errno> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = Self::SIZE + page;
        // SAFETY: an anonymous private mapping of `len` bytes, owned by the
        // returned value and unmapped when it drops.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        let stack = ChildStack { base, len };
        // The stack grows down: its lowest page is the guard.
        // SAFETY: the first page of the mapping just made.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(Errno::last());
        }
        Ok(stack)
    }

    /// The initial stack pointer: the top of the mapping (page-aligned, so
    /// aligned as every ABI wants).
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping, which is where a
        // downward-growing stack starts.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer used: the child that
        // ran on it has exec'd or exited before `clone` returned.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// The child's entry point, on its own stack.
extern "C" fn run_child(plan: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `plan` is the `ExecPlan` that `spawn` passed to `clone`;
    // sockvisor's thread is suspended until this child execs or exits, so
    // this is the only reference in use.
    let plan = unsafe { &mut *plan.cast::<ExecPlan>() };
    plan.exec_in_child()
}

/// Everything the child needs before `exec`, prepared in advance so the child
/// allocates nothing.
struct ExecPlan {
    path: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    /// `LISTEN_PID=` and `WATCHDOG_PID=`, each followed by room for the
    /// digits and the NUL; owned here, written only through `pid_slots`
    /// (also their envp entries).
    /// (The pointers stay valid: the vector's buffer does not move when
    /// the vector does, and nothing is pushed after they are taken.)
    _own_pid_slots: Vec<[u8; OWN_PID_SLOT_LEN]>,
    /// Each slot's start and the length of its `NAME=` prefix.
    pid_slots: Vec<(*mut u8, usize)>,
    listener_fds: Vec<RawFd>,
    /// Scratch space for the listeners' temporary copies.
    moved_fds: Vec<RawFd>,
    /// Written by the child when it cannot exec: why (0 until then).
    exec_errno: i32,
    /// Written with it: the step that failed.
    failed_step: ChildStep,
    /// The terminal to take as foreground group, or -1.
    terminal_fd: RawFd,
    /// One above the highest descriptor the child uses: its copy of the
    /// descriptor table need hold nothing from here up.
    keep_below: RawFd,
    /// The limit on open files sockvisor was started with, when it raised
    /// its own (`init::raise_open_file_limit`): the child's again.
    /// (The kernel's `struct rlimit64`: soft, then hard.)
    open_files: Option<[u64; 2]>,
    /// The child shares sockvisor's descriptor table (`CLONE_FILES`)
    /// until it makes its own copy.
    shares_files: bool,
    /// Written by the child when it could not make that copy.
    cannot_unshare: bool,
    /// [`TEST_NO_UNSHARE_VAR`] is set.
    test_no_unshare: bool,
    /// uid, gid and supplementary groups to take, with `--user`.
    identity: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    parent: libc::pid_t,
}

const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";
const WATCHDOG_PID_PREFIX: &[u8] = b"WATCHDOG_PID=";
const OWN_PID_SLOT_LEN: usize = 32;

/// Variables a parent may have set for sockvisor that describe sockvisor's
/// own sockets and watchdog, never the child's.
fn is_inherited_protocol_variable(key: &[u8]) -> bool {
    const PREFIXES: [&[u8]; 5] = [
        b"LISTEN_",
        b"WATCHDOG_",
        b"EINHORN_",
        b"SERVER_STARTER_",
        b"SOCKVISOR_REEXEC_",
    ];
    PREFIXES.iter().any(|p| key.starts_with(p)) || key == b"NOTIFY_SOCKET"
}

/// sockvisor's own environment minus the variables above, as every child
/// gets it. sockvisor never changes its environment, so it is built once
/// rather than for each of N workers.
fn passed_environment() -> &'static [CString] {
    static PASSED: std::sync::OnceLock<Vec<CString>> = std::sync::OnceLock::new();
    PASSED.get_or_init(|| {
        std::env::vars_os()
            .filter(|(key, _)| !is_inherited_protocol_variable(key.as_bytes()))
            .map(|(key, value)| {
                let mut entry = key.into_vec();
                entry.push(b'=');
                entry.extend(value.into_vec());
                cstring(entry)
            })
            .collect()
    })
}

fn cstring(bytes: Vec<u8>) -> CString {
    // Arguments and environment strings from the OS cannot contain NUL.
    CString::new(bytes).unwrap_or_default()
}

impl ExecPlan {
    fn new(path: &Path, request: &SpawnRequest<'_>) -> ExecPlan {
        let argv: Vec<CString> = std::iter::once(&request.command.program)
            .chain(&request.command.args)
            .map(|a| cstring(a.as_bytes().to_vec()))
            .collect();
        // sockvisor's own variables that a child gets a value of its own
        // for: the login ones with `--user`, and those of an --env-file.
        let replaced = |entry: &CString| {
            let bytes = entry.as_bytes();
            let key = &bytes[..bytes.iter().position(|b| *b == b'=').unwrap_or(bytes.len())];
            (request.run_as.is_some() && matches!(key, b"HOME" | b"USER" | b"LOGNAME"))
                || request
                    .env_overrides
                    .iter()
                    .any(|(k, _)| k.as_bytes() == key)
        };
        let mut envp: Vec<CString> = Vec::new();
        for (key, value) in request.env_overrides {
            envp.push(cstring(format!("{key}={value}").into_bytes()));
        }
        let listeners = request.listeners;
        let mut own_pid_slots = Vec::new();
        let mut own_pid = |prefix: &[u8]| {
            let mut slot = [0u8; OWN_PID_SLOT_LEN];
            slot[..prefix.len()].copy_from_slice(prefix);
            own_pid_slots.push(slot);
        };
        let names: Vec<&str> = listeners
            .iter()
            .map(|l| l.spec.name.as_str())
            .chain(request.stored.iter().map(|(_, name)| *name))
            .collect();
        if !names.is_empty() {
            envp.push(cstring(format!("LISTEN_FDS={}", names.len()).into_bytes()));
            envp.push(cstring(
                format!("LISTEN_FDNAMES={}", names.join(":")).into_bytes(),
            ));
            if !request.no_listen_pid {
                own_pid(LISTEN_PID_PREFIX);
            }
        }
        if let Some(timeout) = request.watchdog {
            envp.push(cstring(
                format!("WATCHDOG_USEC={}", timeout.as_micros()).into_bytes(),
            ));
            own_pid(WATCHDOG_PID_PREFIX);
        }
        for (key, value) in request.extra_env {
            envp.push(cstring(format!("{key}={value}").into_bytes()));
        }
        if let Some(run_as) = request.run_as {
            // An --env-file's HOME (or USER) wins over the login one.
            for (key, value) in run_as.environment() {
                if !request.env_overrides.iter().any(|(k, _)| *k == key) {
                    envp.push(cstring(format!("{key}={value}").into_bytes()));
                }
            }
        }
        let mut envp_ptrs: Vec<*const libc::c_char> = passed_environment()
            .iter()
            .filter(|entry| !replaced(entry))
            .chain(&envp)
            .map(|s| s.as_ptr())
            .collect();
        let pid_slots: Vec<(*mut u8, usize)> = own_pid_slots
            .iter_mut()
            .map(|slot| {
                let prefix = slot.iter().position(|b| *b == b'=').map_or(0, |i| i + 1);
                (slot.as_mut_ptr(), prefix)
            })
            .collect();
        envp_ptrs.extend(pid_slots.iter().map(|(ptr, _)| ptr.cast_const().cast()));
        envp_ptrs.push(std::ptr::null());
        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let listener_fds: Vec<RawFd> = listeners
            .iter()
            .map(|l| l.fd().as_raw_fd())
            .chain(request.stored.iter().map(|(fd, _)| *fd))
            .collect();
        ExecPlan {
            path: cstring(path.as_os_str().as_bytes().to_vec()),
            _argv: argv,
            argv_ptrs,
            _envp: envp,
            envp_ptrs,
            _own_pid_slots: own_pid_slots,
            pid_slots,
            moved_fds: vec![-1; listener_fds.len()],
            keep_below: listener_fds
                .iter()
                .copied()
                .chain([libc::STDERR_FILENO, request.terminal.unwrap_or(-1)])
                .max()
                .unwrap_or(libc::STDERR_FILENO)
                + 1,
            listener_fds,
            open_files: crate::init::children_open_file_limits(),
            shares_files: false,
            cannot_unshare: false,
            test_no_unshare: test_no_unshare(),
            exec_errno: 0,
            failed_step: ChildStep::Exec,
            terminal_fd: request.terminal.unwrap_or(-1),
            identity: request.run_as.map(|r| (r.uid, r.gid, r.groups.clone())),
            // SAFETY: getpid has no preconditions.
            parent: unsafe { libc::getpid() },
        }
    }

    /// Runs in the child between `clone` and `exec`, in sockvisor's memory
    /// (see `spawn`). Only async-signal-safe calls and no allocation; it
    /// writes nothing but this plan, its own stack and `errno`. Never
    /// returns.
    fn exec_in_child(&mut self) -> ! {
        // SAFETY: every call below is an async-signal-safe system call on
        // descriptors and memory this process owns; the pointers come from
        // CStrings and slots that live in `self`, which outlives the exec.
        unsafe {
            let trimmed = self.own_descriptor_table();
            libc::setpgid(0, 0);
            if self.terminal_fd >= 0 {
                // Every signal is still blocked, so taking the terminal from
                // the background does not stop us with SIGTTOU. A failure
                // leaves the child in the background: it still runs.
                libc::tcsetpgrp(self.terminal_fd, libc::getpid());
            }
            if let Some((uid, gid, groups)) = &self.identity {
                // Groups while still root, then the gid, then the uid: in
                // this order no step needs a privilege an earlier one gave
                // up, and a failure leaves the child exiting, not running
                // half-dropped. Raw system calls: the C library's wrappers
                // would apply the change to every thread of the process
                // whose memory this child shares until it execs.
                if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0
                    || libc::syscall(libc::SYS_setresgid, *gid, *gid, *gid) != 0
                    || libc::syscall(libc::SYS_setresuid, *uid, *uid, *uid) != 0
                {
                    self.fail(ChildStep::Identity, Errno::last_raw());
                }
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != self.parent {
                // sockvisor died before the death signal was armed.
                libc::_exit(1);
            }
            let first_free = (3 + self.listener_fds.len()) as RawFd;
            // Move everything we still need above the target range first, so
            // that placing fd 3.. never overwrites a descriptor still to be
            // placed. This runs under sockvisor's own open-file limit, before
            // the child's is restored: the copies need free numbers, which a
            // lower limit may not leave.
            // A failed move (EMFILE) is reported as what it is, not as the
            // EBADF of a later dup2(-1).
            for (slot, fd) in self.moved_fds.iter_mut().zip(&self.listener_fds) {
                *slot = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, first_free);
                if *slot < 0 {
                    self.fail(ChildStep::Descriptors, Errno::last_raw());
                }
            }
            for (index, fd) in self.moved_fds.iter().enumerate() {
                // dup2 clears close-on-exec on the target.
                if libc::dup2(*fd, 3 + index as RawFd) < 0 {
                    self.fail(ChildStep::Descriptors, Errno::last_raw());
                }
            }
            // Descriptors that may lack close-on-exec from here up: with a
            // trimmed copy of the table, none from `keep_below` up (the
            // copies just made have it already; `keep_below` is at least
            // `first_free`); otherwise any, up to the children's open-file
            // limit.
            let held_below = if trimmed {
                Some(self.keep_below)
            } else {
                self.open_files.map(|[soft, _]| soft.min(1 << 20) as RawFd)
            };
            mark_close_on_exec_from(first_free, held_below);
            if let Some(limit) = &self.open_files {
                // Lowering a soft limit needs no privilege; a failure
                // leaves the child sockvisor's higher one, which is
                // harmless. Descriptors above it stay valid.
                libc::syscall(
                    libc::SYS_prlimit64,
                    0,
                    libc::RLIMIT_NOFILE,
                    limit.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                );
            }
            reset_signals();
            for (slot, prefix) in &self.pid_slots {
                let digits =
                    std::slice::from_raw_parts_mut(slot.add(*prefix), OWN_PID_SLOT_LEN - prefix);
                write_decimal(digits, libc::getpid() as u32);
            }
            libc::execve(
                self.path.as_ptr(),
                self.argv_ptrs.as_ptr(),
                self.envp_ptrs.as_ptr(),
            );
            self.fail(ChildStep::Exec, Errno::last_raw());
        }
    }

    /// Stops sharing sockvisor's descriptor table (`CLONE_FILES`): makes
    /// the child a table of its own holding only the descriptors below
    /// `keep_below`, the only ones it uses (everything above is
    /// close-on-exec, or made so before `exec`). Copying just those keeps
    /// a spawn's cost independent of how many descriptors sockvisor holds:
    /// a pidfd per worker would otherwise make every spawn O(N).
    ///
    /// True if the copy holds only those (`close_range`); false if it
    /// holds every descriptor (`unshare` before Linux 5.9, or a copy made
    /// by `clone` itself).
    ///
    /// # Safety
    /// Call only in the child, before it changes any descriptor.
    unsafe fn own_descriptor_table(&mut self) -> bool {
        if !self.shares_files {
            return false;
        }
        if self.test_no_unshare {
            self.cannot_unshare = true;
            self.fail(ChildStep::Descriptors, libc::EPERM);
        }
        // SAFETY: close_range and unshare change only this process's
        // descriptor table, which they first make its own.
        unsafe {
            let copied_up_to = libc::syscall(
                libc::SYS_close_range,
                self.keep_below as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_UNSHARE,
            );
            if copied_up_to == 0 {
                return true;
            }
            // Kernels before 5.9: a copy of the whole table.
            if libc::unshare(libc::CLONE_FILES) != 0 {
                // Nothing was changed: sockvisor clones again, with a copy.
                self.cannot_unshare = true;
                self.fail(ChildStep::Descriptors, Errno::last_raw());
            }
        }
        false
    }

    /// Leaves `errno` and the step that failed in the plan for sockvisor
    /// (whose memory this is) and exits.
    fn fail(&mut self, step: ChildStep, errno: i32) -> ! {
        // A reason sockvisor can tell from success even if errno were 0.
        self.exec_errno = if errno == 0 { libc::EIO } else { errno };
        self.failed_step = step;
        // SAFETY: _exit is async-signal-safe and ends only this child.
        unsafe { libc::_exit(127) }
    }
}

/// Makes every descriptor from `first` up close-on-exec, so only stdio and
/// the listeners survive `exec`. Where the kernel cannot do that in one
/// call, each descriptor below `held_below` is marked (by default, below
/// the open-file limit): none from there up may lack the flag.
///
/// # Safety
/// Call only in the child before `exec`.
unsafe fn mark_close_on_exec_from(first: RawFd, held_below: Option<RawFd>) {
    // SAFETY: close_range only changes flags of this process's descriptors.
    let done = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if done == 0 {
        return;
    }
    // Kernels before 5.11: walk the descriptor table.
    // SAFETY: getrlimit writes into the struct we pass; fcntl on a closed
    // descriptor fails harmlessly with EBADF.
    unsafe {
        let last = held_below.unwrap_or_else(|| {
            let mut limit: libc::rlimit = std::mem::zeroed();
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            limit.rlim_cur.min(1 << 20) as RawFd
        });
        for fd in first..last {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
}

/// Default disposition for every signal, then an empty mask.
///
/// Uses the raw `rt_sigaction` system call: glibc's `sigaction` refuses the
/// two real-time signals it reserves, and an inherited "ignore" on those
/// would otherwise survive `exec`.
///
/// # Safety
/// Call only in the child before `exec`, with all signals blocked.
unsafe fn reset_signals() {
    // The kernel's struct sigaction: handler, flags, restorer, mask. All
    // zero is SIG_DFL with no flags and an empty mask on every layout.
    let default = [0u64; 4];
    const KERNEL_SIGSET_SIZE: usize = 8;
    // SAFETY: rt_sigaction and sigprocmask are async-signal-safe; the
    // structs are fully initialised and large enough for the kernel's.
    unsafe {
        for signal in 1..=libc::SIGRTMAX() {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    signal,
                    default.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    KERNEL_SIGSET_SIZE,
                );
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

/// Writes `value` in decimal followed by a NUL into `out` without allocating.
fn write_decimal(out: &mut [u8], mut value: u32) {
    let mut digits = [0u8; 10];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (value % 10) as u8;
        len += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for (i, digit) in digits[..len].iter().rev().enumerate() {
        out[i] = *digit;
    }
    out[len] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_decimal_writes_digits_and_nul() {
        let mut out = [b'x'; 12];
        write_decimal(&mut out, 4194304);
        assert_eq!(&out[..8], b"4194304\0");
        write_decimal(&mut out, 0);
        assert_eq!(&out[..2], b"0\0");
        write_decimal(&mut out, u32::MAX);
        assert_eq!(&out[..11], b"4294967295\0");
    }

    #[test]
    fn inherited_protocol_variables_are_recognised() {
        for key in [
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
        ] {
            assert!(is_inherited_protocol_variable(key.as_bytes()), "{key}");
        }
        for key in ["PATH", "LISTEN", "NOTIFY_SOCKET_X", "HOME"] {
            assert!(!is_inherited_protocol_variable(key.as_bytes()), "{key}");
        }
    }

    #[test]
    fn a_missing_path_is_said_not_to_exist_not_to_be_missing_from_path() {
        let err = resolve(OsStr::new("/does/not/exist")).unwrap_err();
        assert_eq!(err.exit_code(), 127);
        assert_eq!(
            err.to_string(),
            "command not found: '/does/not/exist' does not exist (check the path)"
        );
    }

    #[test]
    fn missing_command_is_not_found_with_exit_127() {
        let err = resolve(OsStr::new("sockvisor-no-such-command")).unwrap_err();
        assert!(matches!(err, SpawnError::NotFound { .. }));
        assert_eq!(err.exit_code(), 127);
        assert!(
            err.to_string()
                .starts_with("command not found: 'sockvisor-no-such-command'")
        );
    }

    #[test]
    fn directory_is_not_executable_with_exit_126() {
        let err = resolve(OsStr::new("/")).unwrap_err();
        assert_eq!(err.exit_code(), 126);
        assert!(err.to_string().contains("is a directory"));
    }

    #[test]
    fn command_is_found_in_path() {
        assert!(resolve(OsStr::new("sh")).unwrap().is_absolute());
    }

    #[test]
    fn a_failure_before_exec_names_the_step_and_the_limit_to_raise() {
        let err = SpawnError::Prepare {
            step: ChildStep::Descriptors,
            errno: Errno::EMFILE,
        };
        assert_eq!(
            err.to_string(),
            "cannot pass the child its sockets: too many open files (raise the open-file limit, ulimit -n)"
        );
        assert_eq!(err.exit_code(), crate::run::EXIT_SETUP);
        assert_eq!(
            SpawnError::Fork(Errno::EAGAIN).to_string(),
            "cannot start a child process: resource temporarily unavailable (the process limit, ulimit -u, may be reached)"
        );
        assert_eq!(
            SpawnError::Prepare {
                step: ChildStep::Identity,
                errno: Errno::EPERM
            }
            .to_string(),
            "cannot switch the child to the --user identity: operation not permitted (running the server as another user needs root, or CAP_SETUID and CAP_SETGID)"
        );
        assert_eq!(
            SpawnError::Exec {
                path: PathBuf::from("/bin/true"),
                errno: Errno::E2BIG
            }
            .to_string(),
            "cannot execute '/bin/true': argument list too long (its arguments and environment, --env-file variables included, are over what the kernel passes to a program: make them smaller)"
        );
    }
}
