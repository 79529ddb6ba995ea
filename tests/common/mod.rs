//! Shared harness for the integration tests: runs the real `sockvisor`
//! binary with the `probe_server` example as its child, each test in its own
//! directory, and cleans up every process even when a test fails.
//!
//! Waiting is always for an event (a file appearing, a log line, an exit,
//! a connection) with a bounded deadline, never a guessed sleep.

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Upper bound for anything a test waits for.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The sockvisor under test: the one cargo built, or the binary named by
/// `SOCKVISOR_TEST_BIN` (CI runs some suites against the static musl build
/// that the Docker image ships).
pub fn sockvisor_bin() -> PathBuf {
    std::env::var_os("SOCKVISOR_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sockvisor")))
}

/// The test child, an example built next to the binary. `cargo test`
/// builds examples, but `cargo test --test NAME` does not, so build it once
/// per test binary (a no-op when it is up to date).
pub fn probe_bin() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_sockvisor"));
    let profile_dir = bin.parent().unwrap();
    BUILT.call_once(|| {
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "--quiet", "--example", "probe_server"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.ends_with("release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("cannot run cargo");
        assert!(status.success(), "building the probe server failed");
    });
    profile_dir.join("examples").join("probe_server")
}

/// A free loopback port: bound, then released for the test to hand out.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `condition` until it returns `Some`, failing the test with
/// `what` after [`DEADLINE`].
pub fn wait_for<T>(what: &str, mut condition: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Like [`wait_for`], polling every `pause`, with what `context` says (a
/// log) in the failure message.
pub fn wait_for_explained<T>(
    what: &str,
    pause: Duration,
    mut condition: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}; {}",
            context()
        );
        std::thread::sleep(pause);
    }
}

/// Everything the other side writes to a terminal's master end, collected
/// by a thread until the terminal goes away (reads end with EIO once every
/// process holding the slave side is gone).
pub fn record_terminal(master: &File) -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut reader = master.try_clone().unwrap();
    let sink = std::sync::Arc::clone(&output);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    output
}

/// A private directory removed at the end of the test.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "sockvisor-test-{}-{}-{name}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TestDir { path }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A running sockvisor under test.
pub struct Sockvisor {
    pub child: Child,
    pub dir: TestDir,
    stderr_path: PathBuf,
    status: Option<ExitStatus>,
}

impl Sockvisor {
    /// Starts `sockvisor <args>` with stderr captured in the test directory.
    pub fn start(name: &str, args: &[&str]) -> Sockvisor {
        Self::start_with(name, |_| {}, args)
    }

    /// Like `start`, with a chance to adjust the command (environment, …).
    pub fn start_with(name: &str, adjust: impl FnOnce(&mut Command), args: &[&str]) -> Sockvisor {
        let dir = TestDir::new(name);
        let mut command = Command::new(sockvisor_bin());
        command.args(args);
        adjust(&mut command);
        Self::spawn(dir, command)
    }

    /// Starts an arbitrary command line (e.g. sockvisor under unshare).
    pub fn spawn(dir: TestDir, command: Command) -> Sockvisor {
        let stderr = File::create(dir.join("sockvisor.stderr")).unwrap();
        Self::spawn_with_stderr(dir, command, stderr.into())
    }

    /// Like `spawn`, with sockvisor's stderr going to `stderr` instead of
    /// the file [`Sockvisor::stderr`] reads.
    pub fn spawn_with_stderr(dir: TestDir, mut command: Command, stderr: Stdio) -> Sockvisor {
        let stderr_path = dir.join("sockvisor.stderr");
        // Every sockvisor under test has its own control socket.
        command.env("SOCKVISOR_CONTROL", dir.join("control.sock"));
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(stderr)
            .spawn()
            .expect("cannot start sockvisor");
        Sockvisor {
            child,
            dir,
            stderr_path,
            status: None,
        }
    }

    /// `sockvisor run --listen 127.0.0.1:0 OPTIONS -- SERVER` in `dir`.
    pub fn listening_in(dir: TestDir, options: &[&str], server: &[String]) -> Sockvisor {
        let mut command = Command::new(sockvisor_bin());
        command
            .args(["run", "--listen", "127.0.0.1:0"])
            .args(options)
            .arg("--")
            .args(server);
        Self::spawn(dir, command)
    }

    /// [`Sockvisor::listening_in`] a directory of its own, running the
    /// probe server (reporting into that directory) with `probe_options`.
    pub fn listening_probe(name: &str, options: &[&str], probe_options: &[&str]) -> Sockvisor {
        let dir = TestDir::new(name);
        let mut server = Self::probe_args(&dir.path);
        server.extend(probe_options.iter().map(|o| o.to_string()));
        Self::listening_in(dir, options, &server)
    }

    /// Arguments that run the probe server writing its reports into this
    /// test's directory; append to a `run … --` command line.
    pub fn probe_args(dir: &Path) -> Vec<String> {
        vec![
            probe_bin().display().to_string(),
            "--report-dir".into(),
            dir.display().to_string(),
        ]
    }

    pub fn control_path(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// Runs a client command (`upgrade`, `status`, …) against this sockvisor.
    pub fn client(&self, args: &[&str]) -> std::process::Output {
        Command::new(sockvisor_bin())
            .args(args)
            .env("SOCKVISOR_CONTROL", self.control_path())
            .output()
            .expect("cannot run the sockvisor client")
    }

    /// Runs a client command in a thread, for tests that act while it
    /// waits for its result.
    pub fn client_in_background(
        &self,
        args: &[&str],
    ) -> std::thread::JoinHandle<std::process::Output> {
        let control = self.control_path();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        std::thread::spawn(move || {
            Command::new(sockvisor_bin())
                .args(&args)
                .env("SOCKVISOR_CONTROL", control)
                .output()
                .expect("cannot run the sockvisor client")
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn wait_for_log(&self, needle: &str) -> String {
        wait_for_explained(
            &format!("log line containing {needle:?}"),
            Duration::from_millis(5),
            || {
                let log = self.stderr();
                log.lines()
                    .find(|line| line.contains(needle))
                    .map(str::to_string)
            },
            || {
                let pid = self.pid();
                let children: Vec<String> = children_of(pid)
                    .iter()
                    .map(|child| {
                        fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default()
                    })
                    .collect();
                let state = fs::read_to_string(format!("/proc/{pid}/status"))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.starts_with("State") || l.starts_with("Sig"))
                    .collect::<Vec<_>>()
                    .join("; ");
                let wchan = fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
                let syscall =
                    fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
                format!(
                    "sockvisor's log so far:\n{}\nits children: {children:#?}\nits state: {state}; waiting in {wchan}; syscall {syscall}",
                    self.stderr()
                )
            },
        )
    }

    /// Waits for the first "listening on tcp://ADDRESS" log line and returns
    /// ADDRESS (with the real port when port 0 was asked for).
    pub fn logged_tcp_address(&self) -> String {
        let line = self.wait_for_log("listening on tcp://");
        let after = line.split("tcp://").nth(1).unwrap_or_default();
        after.split(' ').next().unwrap_or_default().to_string()
    }

    /// Waits for generation `n`'s report and returns it.
    pub fn report(&self, generation: u32) -> Value {
        let path = self.dir.join(&format!("{generation}.json"));
        self.wait_for(&format!("report of generation {generation}"), || {
            let text = fs::read_to_string(&path).ok()?;
            serde_json::from_str(&text).ok()
        })
    }

    /// Like [`wait_for`], with sockvisor's log in the failure message.
    pub fn wait_for<T>(&self, what: &str, condition: impl FnMut() -> Option<T>) -> T {
        wait_for_explained(what, Duration::from_millis(5), condition, || {
            format!("sockvisor's log:\n{}", self.stderr())
        })
    }

    /// Waits for the report of worker `worker` of generation `generation`
    /// (run with `--workers`) and returns it.
    pub fn worker_report(&self, generation: u32, worker: u32) -> Value {
        if worker == 0 {
            return self.report(generation);
        }
        let path = self.dir.join(&format!("{generation}-{worker}.json"));
        wait_for(
            &format!("report of generation {generation} worker {worker}"),
            || {
                let text = fs::read_to_string(&path).ok()?;
                serde_json::from_str(&text).ok()
            },
        )
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.pid(), signal) };
    }

    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
        }
        self.status
    }

    /// Waits for sockvisor to exit and returns its exit code.
    pub fn wait_exit(&mut self) -> i32 {
        let status = wait_for("sockvisor to exit", || self.try_status());
        use std::os::unix::process::ExitStatusExt;
        status
            .code()
            .unwrap_or_else(|| panic!("sockvisor was killed by signal {:?}", status.signal()))
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }
}

impl Drop for Sockvisor {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            // A graceful stop kills every generation's whole process group,
            // workers included; SIGKILL only reaches direct children (via
            // their parent-death signal).
            self.signal(libc::SIGTERM);
            let start = Instant::now();
            while self.try_status().is_none() && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(5));
            }
            if self.try_status().is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        // Belt and braces: every generation that reported its pid (also its
        // process group) is killed too.
        if let Ok(entries) = fs::read_dir(&self.dir.path) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "json")
                    && let Ok(text) = fs::read_to_string(&path)
                    && let Ok(report) = serde_json::from_str::<Value>(&text)
                    && let Some(pid) = report["pid"].as_i64()
                {
                    // SAFETY: signalling process groups this test started.
                    unsafe { libc::killpg(pid as i32, libc::SIGKILL) };
                }
            }
        }
    }
}

/// The local address of the child's listener at `fd`, as it reported.
pub fn reported_address(report: &Value, fd: i64) -> String {
    report["fds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fd"].as_i64() == Some(fd))
        .and_then(|f| f["local"].as_str())
        .unwrap_or_else(|| panic!("fd {fd} has no address in {report}"))
        .to_string()
}

/// Sends one HTTP request and returns the whole response.
pub fn http_get<S: Read + Write>(mut stream: S) -> std::io::Result<String> {
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

pub fn http_get_tcp(address: &str) -> std::io::Result<String> {
    let stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(DEADLINE))?;
    http_get(stream)
}

/// `pid=N` for a 200 answer naming its pid, as the probe server
/// (`pid=N generation=G`) and the example servers (`hello from pid N`) do.
pub fn answering_pid(response: &str) -> Option<String> {
    if !response.starts_with("HTTP/1.") || !response.lines().next()?.contains(" 200 ") {
        return None;
    }
    let words: Vec<&str> = body(response).split_whitespace().collect();
    if let Some(pid) = words.iter().find(|w| w.starts_with("pid=")) {
        return Some(pid.to_string());
    }
    let index = words.iter().position(|w| *w == "pid")?;
    Some(format!("pid={}", words.get(index + 1)?))
}

/// The body line `pid=… generation=…` of a probe server response.
pub fn body(response: &str) -> &str {
    response
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .trim()
}

/// Reads the first line of a response: the request is then known to be in
/// flight at the server.
pub fn read_status_line<S: Read>(stream: S) -> (String, BufReader<S>) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    (line, reader)
}

/// True when process `pid` exists and is not a zombie.
pub fn process_alive(pid: i64) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => process_state(&stat) != Some('Z'),
        Err(_) => false,
    }
}

fn process_state(stat: &str) -> Option<char> {
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Host pids of every zombie whose parent is `parent`.
pub fn zombie_children(parent: i32) -> Vec<i32> {
    let mut zombies = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split(' ').collect();
        if fields.first() == Some(&"Z") && fields.get(1) == Some(&parent.to_string().as_str()) {
            zombies.push(pid);
        }
    }
    zombies
}

/// The descriptor numbers a probe server's report lists, in its order.
pub fn fd_numbers(report: &Value) -> Vec<i64> {
    report["fds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["fd"].as_i64().unwrap())
        .collect()
}

/// Starts `command` under `ulimit -n` `soft` (and `-Hn` `hard`).
pub fn limit_open_files(command: &mut Command, soft: u64, hard: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe and changes only the child's
    // own limits.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// How many of `pid`'s descriptors are pidfds.
pub fn pidfds_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|target| target.to_string_lossy() == "anon_inode:[pidfd]")
                })
                .count()
        })
        .unwrap_or(0)
}

/// Host pids of the children of `parent`.
pub fn children_of(parent: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Loopback clients doing connect / request / read in a loop, bounded in
/// count and time, recording every failure and which pid answered.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Successful requests so far, across all clients.
    answered: std::sync::Arc<std::sync::atomic::AtomicU64>,
    threads: Vec<std::thread::JoinHandle<LoadResult>>,
}

#[derive(Debug, Default)]
pub struct LoadResult {
    pub ok: u64,
    pub failures: Vec<String>,
    /// Answering pids in the order first seen.
    pub pids: Vec<String>,
    /// The pid of the last answer.
    pub last_pid: Option<String>,
}

/// Hard limits of one load thread.
const LOAD_MAX_REQUESTS: u64 = 200_000;
const LOAD_MAX_TIME: Duration = Duration::from_secs(120);

impl Load {
    pub fn start(address: &str, clients: usize) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let threads = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                let answered = answered.clone();
                let address = address.to_string();
                std::thread::spawn(move || {
                    let mut result = LoadResult::default();
                    let started = Instant::now();
                    while !stop.load(Ordering::SeqCst)
                        && result.ok + (result.failures.len() as u64) < LOAD_MAX_REQUESTS
                        && started.elapsed() < LOAD_MAX_TIME
                    {
                        match http_get_tcp(&address) {
                            Ok(response) if answering_pid(&response).is_some() => {
                                result.ok += 1;
                                answered.fetch_add(1, Ordering::SeqCst);
                                let pid = answering_pid(&response).unwrap_or_default();
                                if !result.pids.contains(&pid) {
                                    result.pids.push(pid.clone());
                                }
                                result.last_pid = Some(pid);
                            }
                            Ok(response) => {
                                result.failures.push(format!("bad answer: {response:?}"))
                            }
                            Err(e) => result.failures.push(e.to_string()),
                        }
                    }
                    result
                })
            })
            .collect();
        Load {
            stop,
            answered,
            threads,
        }
    }

    /// Waits until `n` more requests have been answered, so that traffic is
    /// known to flow at this point of the test.
    pub fn wait_for_answers(&self, n: u64) {
        let target = self.answered.load(Ordering::SeqCst) + n;
        wait_for(&format!("{n} more answered requests"), || {
            (self.answered.load(Ordering::SeqCst) >= target).then_some(())
        });
    }

    /// Stops the clients and adds up what they saw.
    pub fn stop(mut self) -> LoadResult {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = LoadResult::default();
        for thread in std::mem::take(&mut self.threads) {
            let result = thread.join().expect("load thread panicked");
            total.ok += result.ok;
            total.failures.extend(result.failures);
            for pid in result.pids {
                if !total.pids.contains(&pid) {
                    total.pids.push(pid);
                }
            }
            total.last_pid = result.last_pid.or(total.last_pid);
        }
        total
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Parses `sockvisor status --json` output.
pub fn status_json(sockvisor: &Sockvisor) -> Value {
    let output = sockvisor.client(&["status", "--json"]);
    assert!(output.status.success(), "{output:?}");
    let line = String::from_utf8_lossy(&output.stdout);
    let reply: Value = serde_json::from_str(line.trim()).unwrap();
    reply["status"].clone()
}

/// CPU time (user + system) a process has used, in clock ticks.
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}
