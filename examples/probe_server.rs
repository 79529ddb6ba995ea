//! A small server that reports exactly what it inherited, for sockvisor's
//! tests and benchmarks.
//!
//! After `--ready-delay-ms` (a slow start: nothing is accepted meanwhile) it
//! sends `READY=1` to `NOTIFY_SOCKET` (not with `--no-ready`) and serves.
//! The fault knobs (`--exit-code`, `--ignore`, `--no-ready`,
//! `--ready-delay-ms`) apply only to generations from `--faults-from` to
//! `--faults-until` (default: all). `--gen G` before any knob limits that
//! one knob to generation G, so old and new generations can misbehave
//! differently in one run.
//!
//! After READY=1 it writes `REPORT_DIR/<generation>.ready`: microseconds from
//! `main` to READY=1, its own start-up time.
//!
//! `--forge-ready-for G` and `--forge-ack-for G` play an attacker inside
//! this generation, for the tests of who may speak for a worker: once
//! generation G's report exists, it starts a process of its own that joins
//! G's process group (`setpgid`, allowed because every generation shares
//! sockvisor's session) and then claims readiness for G: `READY=1` on G's
//! notify socket, or einhorn's `worker:ack` naming G's pid on the control
//! socket. That process writes `REPORT_DIR/<generation>.forged` (its pid,
//! parent, process group, and the control reply if any) and stays alive
//! until it is killed, so that sockvisor can look at it.
//!
//! Files are named after the generation (`<generation>`), or for worker W > 0
//! of a generation run with `--workers` after both (`<generation>-<W>`).
//!
//! At start, before opening anything, it writes `REPORT_DIR/<generation>.json`
//! with its pid, its process group, the protocol variables, every open
//! descriptor (kind, local address, listening, blocking, close-on-exec) and
//! its signal mask. Then it serves every inherited
//! stream socket: each request gets `HTTP/1.1 200 OK` at once, then, after
//! `--request-delay-ms`, a body `pid=<pid> generation=<n>`. UDP sockets echo.
//! On SIGQUIT, SIGTERM or SIGINT it stops accepting, writes
//! `REPORT_DIR/<generation>.stopping` (`in_flight=N`, the requests it is
//! still answering), finishes the requests in flight, and exits 0. SIGUSR1, SIGUSR2, SIGHUP and SIGWINCH are appended by
//! name to `REPORT_DIR/<generation>.signals`.
//!
//! ```text
//! probe_server --report-dir DIR [--request-delay-ms N] [--exit-code N]
//!              [--ignore SIGNAL]... [--orphan] [--ready-delay-ms N]
//!              [--no-ready] [--status TEXT] [--faults-from G] [--faults-until G]
//!              [--crash-after-ready-ms N] [--crash-exit-code N] [--drain-delay-ms N] [--drain-exit-code N]
//!              [--flood N] [--ready-from-worker] [--gen G <knob>]...
//!              [--watchdog-stop-after-ms N] [--forge-ready-for G] [--forge-ack-for G]
//!              [--worker W <knob>]... [--gen G --worker W <knob>]...
//! ```

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{self, SockaddrLike, SockaddrStorage, sockopt};
use serde_json::{Value, json};

struct Options {
    report_dir: PathBuf,
    request_delay: Duration,
    exit_code: Option<i32>,
    /// The fault knobs apply to generations in this range only.
    faults_from: u32,
    faults_until: u32,
    ignore: Vec<i32>,
    orphan: bool,
    ready_delay: Duration,
    notify_ready: bool,
    status: Option<String>,
    /// Exit with status 9 this long after sending READY=1.
    crash_after_ready: Option<Duration>,
    /// The status of that exit (9 unless given).
    crash_exit_code: i32,
    /// With WATCHDOG_USEC set: stop sending WATCHDOG=1 this long after
    /// READY=1 (and go on serving, as a process whose watchdog thread hung).
    watchdog_stop_after: Option<Duration>,
    /// On a stop signal, wait this long before finishing.
    drain_delay: Duration,
    /// Exit status after a graceful stop.
    drain_exit_code: i32,
    /// Garbage datagrams sent to the notify socket before READY=1.
    flood: u32,
    /// READY=1 comes from a forked worker process instead.
    ready_from_worker: bool,
    /// Bind this TCP address itself instead of taking LISTEN_FDS (the
    /// "server bound directly" baseline of the benchmarks).
    bind: Option<String>,
    /// After READY=1, claim readiness for this generation from a process
    /// that joined its process group.
    forge: Option<(Forgery, u32)>,
}

/// How the attacker claims readiness for another generation.
#[derive(Clone, Copy)]
enum Forgery {
    /// `READY=1` on its notify socket.
    Ready,
    /// einhorn's `worker:ack` naming its pid, on the control socket.
    Ack,
}

/// When `main` began, to report the server's own start-up time.
static MAIN_STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn main() {
    MAIN_STARTED.get_or_init(std::time::Instant::now);
    if std::env::args().nth(1).as_deref() == Some("--forger") {
        forger();
        return;
    }
    // Facts first: nothing may be opened before the descriptors are listed.
    // listenfd removes LISTEN_* from the environment: read it first.
    let env = protocol_env();
    let mut listenfd = listenfd::ListenFd::from_env();
    let report = collect_report(env, &listenfd);
    let generation = std::env::var("SOCKVISOR_GENERATION").unwrap_or_else(|_| "0".into());
    let number: u32 = generation.parse().unwrap_or(0);
    let mut options = parse_options(number);
    // Worker 0 (or a single process) keeps the plain name.
    let generation = match std::env::var("SOCKVISOR_WORKER") {
        Ok(worker) if worker != "0" => format!("{generation}-{worker}"),
        _ => generation,
    };
    if !(options.faults_from..=options.faults_until).contains(&number) {
        options.exit_code = None;
        options.ignore.clear();
        options.notify_ready = true;
        options.ready_delay = Duration::ZERO;
    }
    for signal in &options.ignore {
        // SAFETY: setting a disposition to SIG_IGN has no preconditions.
        unsafe { libc::signal(*signal, libc::SIG_IGN) };
    }
    if options.ready_from_worker {
        // Forked while the probe is still single-threaded.
        ready_from_worker();
        options.notify_ready = false;
    }
    // Every signal disposition is in place before the report is written:
    // tests take the report as "this generation can be signalled now".
    let stop = install_signal_handling(&options, &generation);
    write_atomically(
        &options.report_dir.join(format!("{generation}.json")),
        &serde_json::to_vec_pretty(&report).unwrap(),
    );
    if options.orphan {
        spawn_orphan(&options.report_dir, &generation);
    }
    if let Some(code) = options.exit_code {
        std::process::exit(code);
    }
    let sockets = match &options.bind {
        Some(address) => vec![Socket::Tcp(TcpListener::bind(address).unwrap())],
        None => take_sockets(&mut listenfd),
    };
    serve(&options, &generation, sockets, stop);
}

fn parse_options(generation: u32) -> Options {
    let mut options = Options {
        report_dir: std::env::temp_dir(),
        request_delay: Duration::ZERO,
        exit_code: None,
        faults_from: 0,
        faults_until: u32::MAX,
        ignore: Vec::new(),
        orphan: false,
        ready_delay: Duration::ZERO,
        notify_ready: true,
        status: None,
        crash_after_ready: None,
        crash_exit_code: 9,
        watchdog_stop_after: None,
        drain_delay: Duration::ZERO,
        drain_exit_code: 0,
        flood: 0,
        ready_from_worker: false,
        bind: None,
        forge: None,
    };
    let mut args = std::env::args().skip(1);
    let mut scope: Option<u32> = None;
    let mut worker_scope: Option<u32> = None;
    let worker: u32 = std::env::var("SOCKVISOR_WORKER")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(0);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        if arg == "--gen" {
            scope = Some(value().parse().unwrap());
            continue;
        }
        if arg == "--worker" {
            worker_scope = Some(value().parse().unwrap());
            continue;
        }
        let other_generation = scope.take().is_some_and(|only| only != generation);
        let other_worker = worker_scope.take().is_some_and(|only| only != worker);
        if other_generation || other_worker {
            // A knob for another generation: consume its value, if any.
            if !matches!(
                arg.as_str(),
                "--orphan" | "--no-ready" | "--ready-from-worker"
            ) {
                value();
            }
            continue;
        }
        match arg.as_str() {
            "--report-dir" => options.report_dir = value().into(),
            "--request-delay-ms" => {
                options.request_delay = Duration::from_millis(value().parse().unwrap())
            }
            "--exit-code" => options.exit_code = Some(value().parse().unwrap()),
            "--faults-from" => options.faults_from = value().parse().unwrap(),
            "--faults-until" => options.faults_until = value().parse().unwrap(),
            "--ignore" => options.ignore.push(signal_number(&value())),
            "--orphan" => options.orphan = true,
            "--ready-delay-ms" => {
                options.ready_delay = Duration::from_millis(value().parse().unwrap())
            }
            "--no-ready" => options.notify_ready = false,
            "--status" => options.status = Some(value()),
            "--watchdog-stop-after-ms" => {
                options.watchdog_stop_after = Some(Duration::from_millis(value().parse().unwrap()))
            }
            "--crash-after-ready-ms" => {
                options.crash_after_ready = Some(Duration::from_millis(value().parse().unwrap()))
            }
            "--drain-delay-ms" => {
                options.drain_delay = Duration::from_millis(value().parse().unwrap())
            }
            "--crash-exit-code" => options.crash_exit_code = value().parse().unwrap(),
            "--drain-exit-code" => options.drain_exit_code = value().parse().unwrap(),
            "--flood" => options.flood = value().parse().unwrap(),
            "--ready-from-worker" => options.ready_from_worker = true,
            "--bind" => options.bind = Some(value()),
            "--forge-ready-for" => options.forge = Some((Forgery::Ready, value().parse().unwrap())),
            "--forge-ack-for" => options.forge = Some((Forgery::Ack, value().parse().unwrap())),
            other => panic!("unknown argument {other}"),
        }
    }
    options
}

fn signal_number(name: &str) -> i32 {
    let name = name.trim_start_matches("SIG");
    let signal: nix::sys::signal::Signal = format!("SIG{name}").parse().unwrap();
    signal as i32
}

fn protocol_env() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(key, _)| {
            key.starts_with("LISTEN_")
                || key.starts_with("WATCHDOG_")
                || key.starts_with("SOCKVISOR_")
                || key == "NOTIFY_SOCKET"
        })
        .collect()
}

fn collect_report(env: BTreeMap<String, String>, listenfd: &listenfd::ListenFd) -> Value {
    let pid = std::process::id();
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let status_field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    json!({
        "pid": pid,
        "ppid": nix::unistd::getppid().as_raw(),
        "pgid": nix::unistd::getpgrp().as_raw(),
        "env": env,
        "listenfd_count": listenfd.len(),
        "fds": open_fds(pid),
        "sig_blocked": status_field("SigBlk:"),
    })
}

/// Every open descriptor, except the one used to list them.
fn open_fds(pid: u32) -> Vec<Value> {
    let listing = format!("/proc/{pid}/fd");
    let mut fds: Vec<(RawFd, String)> = fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let fd: RawFd = entry.file_name().to_str()?.parse().ok()?;
            let target = fs::read_link(entry.path()).ok()?;
            let target = target.to_string_lossy().into_owned();
            (target != listing).then_some((fd, target))
        })
        .collect();
    fds.sort();
    fds.into_iter()
        .map(|(fd, target)| describe_fd(fd, target))
        .collect()
}

fn describe_fd(fd: RawFd, target: String) -> Value {
    // SAFETY: the descriptor was just listed as open, and is only borrowed
    // for the duration of this function.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    // SAFETY: F_GETFL and F_GETFD only read flags.
    let (status_flags, fd_flags) = unsafe {
        (
            libc::fcntl(fd, libc::F_GETFL),
            libc::fcntl(fd, libc::F_GETFD),
        )
    };
    let mut info = json!({
        "fd": fd,
        "target": target,
        "nonblocking": status_flags & libc::O_NONBLOCK != 0,
        "cloexec": fd_flags & libc::FD_CLOEXEC != 0,
    });
    if let Ok(kind) = socket::getsockopt(&borrowed, sockopt::SockType) {
        let local = socket::getsockname::<SockaddrStorage>(fd).ok();
        info["socket_type"] = json!(format!("{kind:?}"));
        info["family"] = json!(local.and_then(|l| l.family()).map(|f| format!("{f:?}")));
        info["local"] = json!(local.map(|l| l.to_string()));
        info["listening"] = json!(socket::getsockopt(&borrowed, sockopt::AcceptConn).ok());
    }
    info
}

fn write_atomically(path: &Path, bytes: &[u8]) {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    fs::write(&temp, bytes).unwrap();
    fs::rename(&temp, path).unwrap();
}

/// Leaves behind a short-lived grandchild whose parent has already exited,
/// so it is re-parented to sockvisor, which must reap it.
fn spawn_orphan(dir: &Path, generation: &str) {
    let pid_file = dir.join(format!("{generation}.orphan"));
    let script = format!("sleep 0.2 & echo $! > {}", pid_file.display());
    std::process::Command::new("sh")
        .args(["-c", &script])
        .status()
        .unwrap();
}

enum Socket {
    Tcp(TcpListener),
    Unix(UnixListener),
    Udp(UdpSocket),
}

impl Socket {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Socket::Tcp(l) => l.as_fd(),
            Socket::Unix(l) => l.as_fd(),
            Socket::Udp(s) => s.as_fd(),
        }
    }
}

fn take_sockets(listenfd: &mut listenfd::ListenFd) -> Vec<Socket> {
    (0..listenfd.len())
        .filter_map(|index| {
            let fd = 3 + index as RawFd;
            // SAFETY: listenfd verified LISTEN_PID, so fds 3.. are ours.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            let family = socket::getsockname::<SockaddrStorage>(fd)
                .ok()
                .and_then(|a| a.family());
            let kind = socket::getsockopt(&borrowed, sockopt::SockType).ok()?;
            use nix::sys::socket::{AddressFamily, SockType};
            match (family, kind) {
                (Some(AddressFamily::Unix), SockType::Stream) => listenfd
                    .take_unix_listener(index)
                    .ok()
                    .flatten()
                    .map(Socket::Unix),
                (_, SockType::Stream) => listenfd
                    .take_tcp_listener(index)
                    .ok()
                    .flatten()
                    .map(Socket::Tcp),
                (_, SockType::Datagram) => listenfd
                    .take_udp_socket(index)
                    .ok()
                    .flatten()
                    .map(Socket::Udp),
                _ => None,
            }
        })
        .collect()
}

/// Stop signals (unless ignored) write to the returned socket; the notable
/// signals are logged by name to `<generation>.signals`.
fn install_signal_handling(options: &Options, generation: &str) -> UnixStream {
    let (stop_read, stop_write) = UnixStream::pair().unwrap();
    for signal in [libc::SIGQUIT, libc::SIGTERM, libc::SIGINT] {
        if !options.ignore.contains(&signal) {
            signal_hook::low_level::pipe::register(signal, stop_write.try_clone().unwrap())
                .unwrap();
        }
    }
    let signal_log = options.report_dir.join(format!("{generation}.signals"));
    let mut notable = signal_hook::iterator::Signals::new([
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGHUP,
        libc::SIGWINCH,
    ])
    .unwrap();
    thread::spawn(move || {
        for signal in notable.forever() {
            let name = nix::sys::signal::Signal::try_from(signal).unwrap();
            let mut log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&signal_log)
                .unwrap();
            writeln!(log, "{}", name.as_str()).unwrap();
        }
    });
    stop_read
}

fn serve(options: &Options, generation: &str, sockets: Vec<Socket>, stop_read: UnixStream) {
    for socket in &sockets {
        // SAFETY: toggling O_NONBLOCK on our own descriptor.
        unsafe {
            let fd = socket.fd().as_raw_fd();
            libc::fcntl(
                fd,
                libc::F_SETFL,
                libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK,
            );
        }
    }
    // The generation's number, whichever worker answers.
    let number = generation.split('-').next().unwrap_or(generation);
    let body = format!("pid={} generation={number}\n", std::process::id());
    // A slow start: like a real server loading, accept nothing meanwhile.
    thread::sleep(options.ready_delay);
    if let Some(text) = &options.status {
        notify(&format!("STATUS={text}"));
    }
    for i in 0..options.flood {
        notify(if i % 2 == 0 {
            "garbage without an equals sign"
        } else {
            "STATUS=flooding"
        });
    }
    if options.notify_ready {
        // The server's own start-up, from main() to READY=1, for the
        // benchmarks to tell it apart from sockvisor's overhead. Written
        // (atomically) before READY=1, so it exists once the upgrade is done.
        let startup = MAIN_STARTED.get().map_or(0, |t| t.elapsed().as_micros());
        let path = options.report_dir.join(format!("{generation}.ready"));
        write_atomically(&path, format!("{startup}\n").as_bytes());
        notify("READY=1");
    }
    if let Some((forgery, target)) = options.forge {
        let dir = options.report_dir.clone();
        let generation = generation.to_string();
        thread::spawn(move || start_forger(forgery, target, &dir, &generation));
    }
    if let Some(after) = options.crash_after_ready {
        let code = options.crash_exit_code;
        thread::spawn(move || {
            thread::sleep(after);
            std::process::exit(code);
        });
    }
    // WATCHDOG=1 at a third of the interval, as sd_watchdog_enabled users
    // do; until --watchdog-stop-after-ms, if given.
    let watchdog = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|usec| usec.parse::<u64>().ok())
        .filter(|_| std::env::var("WATCHDOG_PID").ok() == Some(std::process::id().to_string()));
    if let Some(usec) = watchdog {
        let every = Duration::from_micros(usec / 3);
        let stop_after = options.watchdog_stop_after;
        thread::spawn(move || {
            let started = std::time::Instant::now();
            while stop_after.is_none_or(|limit| started.elapsed() < limit) {
                notify("WATCHDOG=1");
                thread::sleep(every);
            }
        });
    }
    let mut in_flight: Vec<thread::JoinHandle<()>> = Vec::new();
    loop {
        let mut fds: Vec<PollFd> = sockets
            .iter()
            .map(|s| PollFd::new(s.fd(), PollFlags::POLLIN))
            .collect();
        fds.push(PollFd::new(stop_read.as_fd(), PollFlags::POLLIN));
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        let stop = fds
            .last()
            .and_then(|f| f.revents())
            .is_some_and(|r| !r.is_empty());
        if stop {
            STOPPING.store(true, Ordering::SeqCst);
            let busy = in_flight.iter().filter(|h| !h.is_finished()).count();
            let path = options.report_dir.join(format!("{generation}.stopping"));
            write_atomically(&path, format!("in_flight={busy}\n").as_bytes());
            break;
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        for (socket, ready) in sockets.iter().zip(ready) {
            if ready && let Some(handle) = accept_one(socket, &body, options.request_delay) {
                in_flight.push(handle);
            }
        }
        in_flight.retain(|h: &thread::JoinHandle<()>| !h.is_finished());
    }
    thread::sleep(options.drain_delay);
    for handle in in_flight {
        let _ = handle.join();
    }
    std::process::exit(options.drain_exit_code);
}

/// Forks a worker (in the same process group) that reports readiness for
/// the whole generation, as pre-forking servers do, then idles.
fn ready_from_worker() {
    // SAFETY: the probe is single-threaded here; the child only sends one
    // datagram and sleeps.
    match unsafe { libc::fork() } {
        0 => {
            notify(&format!(
                "READY=1\nSTATUS=ready from worker {}",
                std::process::id()
            ));
            loop {
                thread::sleep(Duration::from_secs(3600));
            }
        }
        -1 => panic!("fork failed"),
        _ => {}
    }
}

fn accept_one(socket: &Socket, body: &str, delay: Duration) -> Option<thread::JoinHandle<()>> {
    let body = body.to_string();
    match socket {
        Socket::Tcp(listener) => {
            let (stream, _) = listener.accept().ok()?;
            stream.set_nonblocking(false).ok()?;
            let _ = stream.set_nodelay(true);
            let reader = stream.try_clone().ok()?;
            Some(thread::spawn(move || answer(reader, stream, &body, delay)))
        }
        Socket::Unix(listener) => {
            let (stream, _) = listener.accept().ok()?;
            stream.set_nonblocking(false).ok()?;
            let reader = stream.try_clone().ok()?;
            Some(thread::spawn(move || answer(reader, stream, &body, delay)))
        }
        Socket::Udp(udp) => {
            let mut buf = [0u8; 2048];
            if let Ok((n, peer)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], peer);
            }
            None
        }
    }
}

/// Waits for generation `target`'s report, then starts this program as the
/// forger (see `forger`) inside `target`'s process group.
fn start_forger(forgery: Forgery, target: u32, dir: &Path, generation: &str) {
    let report = dir.join(format!("{target}.json"));
    let report: Value = loop {
        if let Some(report) = fs::read(&report)
            .ok()
            .and_then(|text| serde_json::from_slice(&text).ok())
        {
            break report;
        }
        thread::sleep(Duration::from_millis(5));
    };
    let pid = report["pid"].as_i64().unwrap_or(0) as i32;
    let (kind, path) = match forgery {
        Forgery::Ready => ("ready", report["env"]["NOTIFY_SOCKET"].as_str()),
        Forgery::Ack => ("ack", report["env"]["SOCKVISOR_CONTROL"].as_str()),
    };
    let out = dir.join(format!("{generation}.forged"));
    use std::os::unix::process::CommandExt;
    let started = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--forger", kind, &pid.to_string(), path.unwrap_or_default()])
        .arg(&out)
        // setpgid(0, pid): into the other generation's group.
        .process_group(pid)
        .spawn();
    if let Err(err) = started {
        let failed = json!({"error": format!("cannot join process group {pid}: {err}")});
        write_atomically(&out, &serde_json::to_vec(&failed).unwrap());
    }
}

/// `--forger ready|ack PID PATH OUT`: claims readiness for the generation
/// whose worker is PID, reports what it did in OUT, and waits to be killed.
fn forger() {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let [kind, pid, path, out] = args.as_slice() else {
        panic!("--forger needs: ready|ack PID PATH OUT");
    };
    let mut reply = Value::Null;
    if kind == "ready" {
        let socket = std::os::unix::net::UnixDatagram::unbound().unwrap();
        socket.send_to(b"READY=1", path).unwrap();
    } else {
        let mut control = UnixStream::connect(path).unwrap();
        writeln!(control, r#"{{"command":"worker:ack","pid":{pid}}}"#).unwrap();
        let mut line = String::new();
        BufReader::new(control).read_line(&mut line).unwrap();
        reply = serde_json::from_str(&line).unwrap_or(Value::String(line));
    }
    let report = json!({
        "pid": std::process::id(),
        "ppid": nix::unistd::getppid().as_raw(),
        "pgid": nix::unistd::getpgrp().as_raw(),
        "reply": reply,
    });
    write_atomically(Path::new(out), &serde_json::to_vec(&report).unwrap());
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

/// Sends one sd_notify datagram, if sockvisor gave a notify socket.
fn notify(message: &str) {
    let Ok(path) = std::env::var("NOTIFY_SOCKET") else {
        return;
    };
    let socket = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let _ = socket.send_to(message.as_bytes(), path);
}

/// Set once a stop signal arrived: kept-alive connections are closed after
/// their current request, idle ones at once.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Serves the requests of one connection. Each answer starts with the status
/// line at once (so a client knows its request is in flight); the rest
/// follows after `delay`. HTTP/1.1 connections are kept alive unless the
/// client says `Connection: close` or the server is stopping.
fn answer<R: Read + AsFd, W: Write>(reader: R, mut writer: W, body: &str, delay: Duration) {
    let mut reader = BufReader::new(reader);
    loop {
        // Wait for the next request, but notice a stop while idle.
        while reader.buffer().is_empty() {
            let mut fds = [PollFd::new(reader.get_ref().as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::from(100u16)).unwrap_or(0) > 0 {
                break;
            }
            if STOPPING.load(Ordering::SeqCst) {
                return;
            }
        }
        let mut keep_alive = false;
        let mut first = true;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if first {
                keep_alive = line.contains("HTTP/1.1");
                first = false;
            } else if line.to_ascii_lowercase().starts_with("connection: close") {
                keep_alive = false;
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
        }
        let _ = writer.write_all(b"HTTP/1.1 200 OK\r\n");
        let _ = writer.flush();
        thread::sleep(delay);
        let keep_alive = keep_alive && !STOPPING.load(Ordering::SeqCst);
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let rest = format!(
            "Content-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(rest.as_bytes()).is_err() || !keep_alive {
            return;
        }
    }
}
