//! sockvisor in a real Docker engine, the way users run it: the static
//! (musl) sockvisor as a container's ENTRYPOINT and PID 1, in images built
//! here FROM scratch, and `packaging/docker/app.Dockerfile` itself built
//! from them.
//!
//! The engine. With `DOCKER_HOST` set (`.ci/run` starts a private dockerd
//! and sets it), that engine, which must run on this machine: containers
//! use `--network host` (loopback only) or `--network none`, and bind
//! mounts of this machine's directories. Without it, this test binary
//! starts a private dockerd of its own (as root, with docker.io
//! installed), with no bridge and no iptables, in a new directory under
//! the temporary directory. Either way a keeper process, started first
//! and holding no more than the read end of a pipe from this binary, sees
//! the pipe close when the binary exits, however it exits (a failed test,
//! Ctrl-C, SIGKILL), and then removes every container and image of this
//! run, stops the private dockerd by its pid and removes its directory.
//! An engine that cannot be reached or started fails every test here with
//! the reason; nothing is skipped.
//!
//! The images, built once per run of this binary with the legacy builder
//! (nothing is pulled, no registry is needed):
//! - `base`: busybox-static as `/bin/sh` and its applets, an `/etc/passwd`
//!   with `nobody`, a world-writable `/tmp`, and the static probe server
//!   (`examples/probe_server.rs`) as the application;
//! - `sockvisor`: the static sockvisor at `/sockvisor`, like the last
//!   stage of `packaging/docker/Dockerfile`;
//! - `app`: `packaging/docker/app.Dockerfile` as published, given those
//!   two as `BASE` and `SOCKVISOR`. The base has no python3, so its CMD
//!   (`python3 /app/server.py`) is replaced by the probe server where a
//!   server is needed; its ENTRYPOINT is the published one;
//! - `init`: `app` with `ENTRYPOINT ["sockvisor", "run", "--"]` and `CMD
//!   ["sh"]`, sockvisor as a tini-style init.
//!
//! The static builds come from `cargo build --release --target
//! x86_64-unknown-linux-musl --bin sockvisor --example probe_server`, run
//! here (a no-op when up to date). Each container has a unique name and a
//! label of this run, and is removed by a guard (`docker rm -f`) when its
//! test ends, passed or failed.
//!
//! Needs: `apt-get install -y docker.io busybox-static`, and `rustup
//! target add x86_64-unknown-linux-musl`.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

/// How long a docker command may take before the test fails: long enough
/// for `docker stop -t 40`, short enough that a wedged engine is reported.
const DOCKER_COMMAND_LIMIT: Duration = Duration::from_secs(90);
/// How long an image build or the musl build may take.
const BUILD_LIMIT: Duration = Duration::from_secs(600);
/// How long a private dockerd may take to answer.
const ENGINE_START_LIMIT: Duration = Duration::from_secs(60);

// ----- the engine and the images -----

/// The engine every test talks to, and this run's images.
struct Engine {
    /// `DOCKER_HOST` for every docker command.
    host: String,
    /// This run's directory: the docker client's configuration, the build
    /// contexts and, for a private engine, the engine's own state.
    dir: PathBuf,
    /// `sockvisor-test-<pid>`: the label value and name prefix of every
    /// container and image of this run.
    run: String,
    images: Images,
    /// Held until the binary exits: the keeper cleans up when it closes.
    _keeper: ChildStdin,
}

struct Images {
    base: String,
    sockvisor: String,
    app: String,
    init: String,
}

/// The engine, started and with its images built on first use; a failure
/// fails every test with the same reason.
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    match ENGINE.get_or_init(start_engine) {
        Ok(engine) => engine,
        Err(why) => panic!("no Docker engine for the tests: {why}"),
    }
}

fn start_engine() -> Result<Engine, String> {
    let run = format!("sockvisor-test-{}", std::process::id());
    let dir = std::env::temp_dir().join(&run);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("config"))
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let given = std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty());
    let private = given.is_none();
    // SAFETY: geteuid has no preconditions.
    if private && unsafe { libc::geteuid() } != 0 {
        return Err(
            "DOCKER_HOST is unset and a private dockerd needs root; set DOCKER_HOST to an \
             engine on this machine (e.g. unix:///var/run/docker.sock)"
                .into(),
        );
    }
    let host = given.unwrap_or_else(|| format!("unix://{}/docker.sock", dir.display()));
    let keeper = start_keeper(&dir, &host, &run, private)?;
    wait_for_engine(&host, &dir, private)?;
    let engine = Engine {
        host,
        dir,
        run: run.clone(),
        images: Images {
            base: format!("{run}-base"),
            sockvisor: format!("{run}-sockvisor"),
            app: format!("{run}-app"),
            init: format!("{run}-init"),
        },
        _keeper: keeper,
    };
    engine.build_images()?;
    Ok(engine)
}

/// The keeper: starts the private dockerd if there is to be one, then
/// waits for end of file on its stdin, which comes when this binary
/// exits, and cleans up.
const KEEPER: &str = r#"
dir=$1 run=$2 private=$3
if [ "$private" = yes ]; then
    dockerd -H "$DOCKER_HOST" --data-root "$dir/root" --exec-root "$dir/exec" \
        --pidfile "$dir/dockerd.pid" --bridge=none --iptables=false --ip6tables=false \
        </dev/null >"$dir/dockerd.log" 2>&1 &
    dockerd=$!
fi
read -r _ || true
containers=$(docker ps -aq --filter "label=sockvisor-test-run=$run" 2>/dev/null)
[ -z "$containers" ] || docker rm -f $containers >/dev/null 2>&1
if [ "$private" = yes ]; then
    kill -TERM "$dockerd" 2>/dev/null
    i=0
    while kill -0 "$dockerd" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$dockerd" 2>/dev/null
    wait "$dockerd" 2>/dev/null
    grep " $dir/" /proc/mounts | cut -d' ' -f2 | sort -r | xargs -r umount -l
else
    images=$(docker images -q --filter "label=sockvisor-test-run=$run" 2>/dev/null)
    [ -z "$images" ] || docker rmi -f $images >/dev/null 2>&1
fi
rm -rf "$dir"
"#;

fn start_keeper(dir: &Path, host: &str, run: &str, private: bool) -> Result<ChildStdin, String> {
    let mut keeper = Command::new("sh")
        .args(["-c", KEEPER, "keeper"])
        .arg(dir)
        .arg(run)
        .arg(if private { "yes" } else { "no" })
        .env("DOCKER_HOST", host)
        .env("DOCKER_CONFIG", dir.join("config"))
        // Its own process group: a Ctrl-C of the test run ends this
        // binary, and the keeper then cleans up.
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the keeper shell: {e}"))?;
    keeper
        .stdin
        .take()
        .ok_or_else(|| "the keeper has no stdin".to_string())
}

fn wait_for_engine(host: &str, dir: &Path, private: bool) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let mut info = Command::new("docker");
        info.args(["info", "--format", "{{.ServerVersion}}"])
            .env("DOCKER_HOST", host)
            .env("DOCKER_CONFIG", dir.join("config"));
        let answer = output_within(info, Duration::from_secs(20)).map_err(|why| {
            format!("{why} (install the client: apt-get install -y docker.io busybox-static)")
        })?;
        if answer.status.success() {
            return Ok(());
        }
        if start.elapsed() > ENGINE_START_LIMIT || !private {
            let log = if private {
                let log = fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("; dockerd's log:\n{}", tail.join("\n"))
            } else {
                String::new()
            };
            return Err(format!(
                "the engine at DOCKER_HOST={host} does not answer: {}{log}",
                String::from_utf8_lossy(&answer.stderr).trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Engine {
    fn docker(&self) -> Command {
        let mut command = Command::new("docker");
        command
            .env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", self.dir.join("config"))
            // The builder that needs nothing but the engine (BuildKit
            // would need the buildx plugin with some clients).
            .env("DOCKER_BUILDKIT", "0");
        command
    }

    /// Runs `docker ARGS` and returns what it did, failing the test if it
    /// could not run or took too long.
    fn run_docker(&self, args: &[&str]) -> Output {
        let mut command = self.docker();
        command.args(args);
        output_within(command, DOCKER_COMMAND_LIMIT).unwrap_or_else(|why| panic!("{why}"))
    }

    fn build(&self, tag: &str, args: &[&str], context: &Path) -> Result<(), String> {
        let mut command = self.docker();
        command
            .args(["build", "--quiet", "--label"])
            .arg(format!("sockvisor-test-run={}", self.run))
            .args(["--tag", tag])
            .args(args)
            .arg(context);
        let output = output_within(command, BUILD_LIMIT)?;
        if !output.status.success() {
            return Err(format!(
                "docker build of {tag} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(())
    }

    fn build_images(&self) -> Result<(), String> {
        let (sockvisor, probe) = musl_binaries()?;
        let base = self.dir.join("base");
        lay_out_base(&base, &probe)?;
        self.build(&self.images.base, &[], &base)?;

        let only_sockvisor = self.dir.join("sockvisor");
        fs::create_dir_all(&only_sockvisor).map_err(|e| e.to_string())?;
        fs::copy(&sockvisor, only_sockvisor.join("sockvisor")).map_err(|e| e.to_string())?;
        write_file(
            &only_sockvisor.join("Dockerfile"),
            "FROM scratch\nCOPY sockvisor /sockvisor\nENTRYPOINT [\"/sockvisor\"]\n",
        )?;
        self.build(&self.images.sockvisor, &[], &only_sockvisor)?;

        // The published application image, from the repository as context.
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dockerfile = repo.join("packaging/docker/app.Dockerfile");
        let base_arg = format!("BASE={}", self.images.base);
        let sockvisor_arg = format!("SOCKVISOR={}", self.images.sockvisor);
        self.build(
            &self.images.app,
            &[
                "--file",
                &dockerfile.display().to_string(),
                "--build-arg",
                &base_arg,
                "--build-arg",
                &sockvisor_arg,
            ],
            repo,
        )?;

        let init = self.dir.join("init");
        fs::create_dir_all(&init).map_err(|e| e.to_string())?;
        write_file(
            &init.join("Dockerfile"),
            &format!(
                "FROM {}\nENTRYPOINT [\"sockvisor\", \"run\", \"--\"]\nCMD [\"sh\"]\n",
                self.images.app
            ),
        )?;
        self.build(&self.images.init, &[], &init)
    }
}

/// The static sockvisor and probe server, built for musl.
fn musl_binaries() -> Result<(PathBuf, PathBuf), String> {
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args([
            "build",
            "--release",
            "--target",
            "x86_64-unknown-linux-musl",
            "--bin",
            "sockvisor",
            "--example",
            "probe_server",
            "--message-format",
            "json-render-diagnostics",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    let output = output_within(cargo, BUILD_LIMIT)?;
    if !output.status.success() {
        return Err(format!(
            "the musl build failed (rustup target add x86_64-unknown-linux-musl): {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let mut found = (None, None);
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(executable) = message["executable"].as_str() else {
            continue;
        };
        match message["target"]["name"].as_str() {
            Some("sockvisor") => found.0 = Some(PathBuf::from(executable)),
            Some("probe_server") => found.1 = Some(PathBuf::from(executable)),
            _ => {}
        }
    }
    match found {
        (Some(sockvisor), Some(probe)) => Ok((sockvisor, probe)),
        _ => Err("cargo named no sockvisor and probe_server executables".into()),
    }
}

/// The build context of the base image: busybox as `/bin/sh` with a link
/// for each applet (COPY only: FROM scratch there is no shell for RUN),
/// users and groups for `--user nobody`, `/tmp`, and the probe server.
fn lay_out_base(context: &Path, probe: &Path) -> Result<(), String> {
    let io = |e: std::io::Error| format!("cannot lay out {}: {e}", context.display());
    let root = context.join("rootfs");
    for dir in ["bin", "etc", "tmp", "usr/local/bin"] {
        fs::create_dir_all(root.join(dir)).map_err(io)?;
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).map_err(io)?;
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or("busybox not found: apt-get install -y busybox-static")?;
    fs::copy(&busybox, root.join("bin/busybox")).map_err(io)?;
    let list = Command::new(&busybox)
        .arg("--list")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", busybox.display()))?;
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if !applet.contains('/') && applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).map_err(io)?;
        }
    }
    fs::copy(probe, root.join("usr/local/bin/probe_server")).map_err(io)?;
    write_file(
        &root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    write_file(&root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    write_file(
        &context.join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\n\
         ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
    )
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Runs `command` to its end, or kills it after `limit`.
fn output_within(mut command: Command, limit: Duration) -> Result<Output, String> {
    let shown = format!("{command:?}");
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{shown} did not finish within {limit:?}"));
            }
        }
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

// ----- containers -----

/// One container of a test, removed (`docker rm -f`) when dropped.
struct Container {
    name: String,
}

impl Container {
    /// A unique name, and a guard for it, before anything is started.
    fn named(case: &str) -> Container {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        Container {
            name: format!(
                "{}-{}-{case}",
                engine().run,
                COUNTER.fetch_add(1, Ordering::SeqCst)
            ),
        }
    }

    /// The options every container of this run gets.
    fn run_options(&self) -> Vec<String> {
        vec![
            "--name".into(),
            self.name.clone(),
            "--label".into(),
            format!("sockvisor-test-run={}", engine().run),
        ]
    }

    /// `docker run -d OPTIONS… IMAGE ARGS…`, started.
    fn start(case: &str, options: &[&str], image: &str, args: &[&str]) -> Container {
        let container = Container::named(case);
        let mut all: Vec<String> = vec!["run".into(), "-d".into()];
        all.extend(container.run_options());
        all.extend(options.iter().map(|s| s.to_string()));
        all.push(image.into());
        all.extend(args.iter().map(|s| s.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let output = engine().run_docker(&all);
        assert!(output.status.success(), "docker {all:?}: {output:?}");
        container
    }

    fn logs(&self) -> String {
        let output = engine().run_docker(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    /// Polls `condition` until it gives a value, failing the test with
    /// the container's log after [`DEADLINE`].
    fn wait_for<T>(&self, what: &str, condition: impl FnMut() -> Option<T>) -> T {
        // Each look runs a docker command: no need to look more often.
        wait_for_explained(what, Duration::from_millis(50), condition, || {
            format!("the container's log:\n{}", self.logs())
        })
    }

    /// Waits for a log line (sockvisor's or the child's) containing
    /// `needle`, and returns it.
    fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for(&format!("a log line containing {needle:?}"), || {
            self.logs()
                .lines()
                .find(|line| line.contains(needle))
                .map(str::to_string)
        })
    }

    /// The address sockvisor logged for its first TCP listener.
    fn tcp_address(&self) -> String {
        let line = self.wait_for_log("listening on tcp://");
        let after = line.split("tcp://").nth(1).unwrap_or_default();
        after.split(' ').next().unwrap_or_default().to_string()
    }

    /// `docker exec CONTAINER ARGS…`.
    fn exec(&self, args: &[&str]) -> Output {
        let mut all = vec!["exec", self.name.as_str()];
        all.extend_from_slice(args);
        engine().run_docker(&all)
    }

    /// `docker stop -t SECONDS`, and how long it took.
    fn stop(&self, seconds: u64) -> Duration {
        let started = Instant::now();
        let output = engine().run_docker(&["stop", "-t", &seconds.to_string(), &self.name]);
        assert!(output.status.success(), "{output:?}");
        started.elapsed()
    }

    /// The exit code Docker recorded, once the container has exited.
    fn exit_code(&self) -> i64 {
        self.wait_for("the container to exit", || {
            let output = engine().run_docker(&[
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.ExitCode}}",
                &self.name,
            ]);
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            let (status, code) = text.trim().split_once(' ')?;
            (status == "exited").then(|| code.parse().ok()).flatten()
        })
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let mut rm = engine().docker();
        rm.args(["rm", "-f", &self.name]);
        let _ = output_within(rm, DOCKER_COMMAND_LIMIT);
    }
}

/// `-v DIR:/reports`, where the probe server writes its reports.
fn reports_mount(dir: &TestDir) -> String {
    format!("{}:/reports", dir.path.display())
}

/// Waits for the probe server's report `NAME.json` (`1`, `1-1`, …).
fn report(dir: &TestDir, name: &str) -> Value {
    let path = dir.join(&format!("{name}.json"));
    wait_for(&format!("report {name}"), || {
        serde_json::from_str(&fs::read_to_string(&path).ok()?).ok()
    })
}

/// The command line after the image that runs the probe server under
/// `sockvisor run SOCKVISOR_ARGS`, as `--entrypoint sockvisor` gives it.
fn probe_under_sockvisor<'a>(sockvisor_args: &[&'a str], probe_args: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run"];
    args.extend_from_slice(sockvisor_args);
    args.extend_from_slice(&["--", "probe_server", "--report-dir", "/reports"]);
    args.extend_from_slice(probe_args);
    args
}

/// A server container: the app image with sockvisor as ENTRYPOINT on the
/// host's network, listening on a free loopback port, the probe server as
/// the command.
fn serving(case: &str, dir: &TestDir, sockvisor_args: &[&str], probe_args: &[&str]) -> Container {
    let mount = reports_mount(dir);
    let mut sockvisor = vec!["--listen", "127.0.0.1:0"];
    sockvisor.extend_from_slice(sockvisor_args);
    Container::start(
        case,
        &[
            "--network",
            "host",
            "-v",
            &mount,
            "--entrypoint",
            "sockvisor",
        ],
        &engine().images.app,
        &probe_under_sockvisor(&sockvisor, probe_args),
    )
}

fn pid_answering(address: &str) -> String {
    let response = http_get_tcp(address).unwrap_or_else(|e| panic!("{address}: {e}"));
    answering_pid(&response).unwrap_or_else(|| panic!("bad answer: {response:?}"))
}

// ----- upgrades -----

#[test]
fn the_musl_sockvisor_as_entrypoint_upgrades_three_times_under_load_without_a_failed_request() {
    let dir = TestDir::new("docker-upgrade");
    let container = serving("upgrade", &dir, &[], &[]);
    let address = container.tcp_address();
    container.wait_for_log("is ready after");
    let load = Load::start(&address, 2);
    load.wait_for_answers(20);
    let mut pid = pid_answering(&address);
    for generation in 2..=4 {
        let upgrade = container.exec(&["sockvisor", "upgrade", "--timeout", "20s"]);
        assert!(upgrade.status.success(), "{upgrade:?}");
        // The old generation has exited: the new one answers.
        let response = http_get_tcp(&address).unwrap();
        assert!(
            body(&response).ends_with(&format!("generation={generation}")),
            "{response}"
        );
        let now = pid_answering(&address);
        assert_ne!(now, pid, "generation {generation} answers with a new pid");
        pid = now;
        load.wait_for_answers(20);
    }
    let result = load.stop();
    assert!(result.failures.is_empty(), "{:?}", result.failures);
    assert!(result.pids.len() >= 4, "{:?}", result.pids);
}

// ----- docker stop -----

#[test]
fn docker_stop_drains_an_in_flight_request_and_the_container_exits_0() {
    let dir = TestDir::new("docker-drain");
    let container = serving("drain", &dir, &[], &["--request-delay-ms", "3000"]);
    let address = container.tcp_address();
    container.wait_for_log("is ready after");
    let mut stream = TcpStream::connect(&address).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let (status, mut rest) = read_status_line(stream);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let name = container.name.clone();
    let stopping = std::thread::spawn(move || engine().run_docker(&["stop", "-t", "20", &name]));
    // The server was asked to stop while it still answered the request.
    let stopped = dir.join("1.stopping");
    let seen = wait_for("the server to see its stop signal", || {
        fs::read_to_string(&stopped).ok()
    });
    assert_eq!(seen.trim(), "in_flight=1");
    let mut response = String::new();
    rest.read_to_string(&mut response).unwrap();
    assert!(response.contains("generation=1"), "{response:?}");
    let output = stopping.join().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(container.exit_code(), 0, "{}", container.logs());
    let logs = container.logs();
    assert!(
        logs.contains("SIGTERM received: sending SIGQUIT to every generation"),
        "{logs}"
    );
}

#[test]
fn a_server_ignoring_its_stop_signal_is_killed_at_sockvisors_stop_timeout_before_dockers() {
    let dir = TestDir::new("docker-ignore");
    let container = serving(
        "ignore",
        &dir,
        &["--stop-timeout", "2s"],
        &["--ignore", "SIGQUIT"],
    );
    // Its dispositions are in place once it has reported.
    report(&dir, "1");
    container.wait_for_log("is ready after");
    let took = container.stop(20);
    assert_eq!(container.exit_code(), 137, "{}", container.logs());
    assert!(
        took < Duration::from_secs(15),
        "docker stop took {took:?}: Docker's SIGKILL, not sockvisor's"
    );
    container.wait_for_log("not every generation stopped within 2s; killing what is left");
}

// ----- SIGHUP -----

#[test]
fn docker_kill_hup_starts_an_upgrade_when_there_are_sockets() {
    let dir = TestDir::new("docker-hup");
    let container = serving("hup", &dir, &[], &[]);
    let address = container.tcp_address();
    container.wait_for_log("is ready after");
    let kill = engine().run_docker(&["kill", "-s", "HUP", &container.name]);
    assert!(kill.status.success(), "{kill:?}");
    container.wait_for_log("SIGHUP received: upgrade started");
    container.wait_for("generation 2 to answer", || {
        let response = http_get_tcp(&address).ok()?;
        body(&response).ends_with("generation=2").then_some(())
    });
}

#[test]
fn in_init_mode_docker_kill_hup_reaches_the_child() {
    let container = Container::start(
        "init-hup",
        &["--network", "none"],
        &engine().images.init,
        &[
            "sh",
            "-c",
            "trap 'echo got HUP; exit 0' HUP; echo waiting; sleep 60 & wait $!",
        ],
    );
    container.wait_for_log("waiting");
    let kill = engine().run_docker(&["kill", "-s", "HUP", &container.name]);
    assert!(kill.status.success(), "{kill:?}");
    container.wait_for("the child to get SIGHUP", || {
        let logs = container.logs();
        assert!(
            !logs.contains("upgrade started"),
            "without sockets SIGHUP is the child's, yet sockvisor started an upgrade:\n{logs}"
        );
        logs.contains("got HUP").then_some(())
    });
    assert_eq!(container.exit_code(), 0, "{}", container.logs());
    let logs = container.logs();
    assert_eq!(logs.matches("waiting").count(), 1, "{logs}");
}

// ----- init -----

#[test]
fn in_init_mode_the_container_exits_with_the_childs_status() {
    let container = Container::named("exit3");
    let mut args: Vec<String> = vec!["run".into()];
    args.extend(container.run_options());
    args.extend(
        [
            "--network",
            "none",
            engine().images.init.as_str(),
            "sh",
            "-c",
            "exit 3",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = engine().run_docker(&args);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert_eq!(container.exit_code(), 3);
}

/// Processes in a zombie state, from a listing of `/proc/*/stat`.
fn zombies(stat_lines: &str) -> Vec<String> {
    stat_lines
        .lines()
        .filter(|line| {
            line.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn in_init_mode_500_orphans_leave_no_zombie() {
    // Each `(sleep 0 &)` is a subshell that exits at once: its sleep is
    // re-parented to PID 1, sockvisor, which must reap it.
    let script = "i=0; while [ $i -lt 500 ]; do (sleep 0 &); i=$((i+1)); done; \
                  echo spawned; exec sleep 60";
    let container = Container::start(
        "orphans",
        &["--network", "none", "--entrypoint", "sockvisor"],
        &engine().images.init,
        &["run", "--log-level", "debug", "--", "sh", "-c", script],
    );
    container.wait_for_log("spawned");
    container.wait_for("500 orphans reaped by sockvisor", || {
        (container.logs().matches("reaped orphan pid").count() >= 500).then_some(())
    });
    let stat = container.exec(&["sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null"]);
    let stat = String::from_utf8_lossy(&stat.stdout);
    assert!(
        stat.contains("(sleep)"),
        "the listing shows processes: {stat}"
    );
    assert_eq!(zombies(&stat), Vec::<String>::new());
}

// ----- a terminal -----

/// A docker client on a pty of its own: its controlling terminal, stdin,
/// stdout and stderr, as an interactive shell runs `docker run -it`.
struct DockerOnPty {
    client: Child,
    master: fs::File,
    output: Arc<Mutex<Vec<u8>>>,
    container: Container,
}

impl DockerOnPty {
    fn run(case: &str, options: &[&str], image: &str, args: &[&str]) -> DockerOnPty {
        let container = Container::named(case);
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let slave = || Stdio::from(pty.slave.try_clone().unwrap());
        let mut command = engine().docker();
        command
            .args(["run", "-it"])
            .args(container.run_options())
            .args(options)
            .arg(image)
            .args(args)
            .stdin(slave())
            .stdout(slave())
            .stderr(slave());
        // SAFETY: setsid and ioctl are async-signal-safe and touch only the
        // new process; fd 0 is the pty's slave side.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let client = command.spawn().expect("cannot start the docker client");
        drop(pty.slave);
        let master = fs::File::from(pty.master);
        let output = record_terminal(&master);
        DockerOnPty {
            client,
            master,
            output,
            container,
        }
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until the terminal shows `needle` after position `from`, and
    /// returns the position after it.
    fn wait_for_output(&self, needle: &str, from: usize) -> usize {
        let start = Instant::now();
        loop {
            let output = self.output();
            if let Some(at) = output.get(from..).and_then(|rest| rest.find(needle)) {
                return from + at + needle.len();
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {needle:?} on the terminal:\n{output}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn type_keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
    }

    fn wait_exit(&mut self) -> i32 {
        let status = wait_for("the docker client to exit", || {
            self.client.try_wait().unwrap()
        });
        status
            .code()
            .unwrap_or_else(|| panic!("killed: {status:?}"))
    }
}

impl Drop for DockerOnPty {
    fn drop(&mut self) {
        if self.client.try_wait().unwrap_or(None).is_none() {
            let _ = self.client.kill();
            let _ = self.client.wait();
        }
    }
}

/// Whether a `sleep` runs in the container.
fn sleep_runs(container: &Container) -> bool {
    container.exec(&["pidof", "sleep"]).status.success()
}

#[test]
fn docker_run_it_gives_the_shell_the_terminal_ctrl_c_stops_only_its_job_and_exit_4_ends_it() {
    let mut tty = DockerOnPty::run(
        "tty",
        &["--network", "none", "-e", "PS1=sv$ ", "-e", "TERM=dumb"],
        &engine().images.init,
        &["sh"],
    );
    let at = tty.wait_for_output("sv$ ", 0);
    tty.type_keys("sleep 100\n");
    tty.container.wait_for("sleep 100 to run", || {
        sleep_runs(&tty.container).then_some(())
    });
    // Ctrl-C goes to the foreground job, not to the shell or to sockvisor.
    tty.type_keys("\x03");
    let at = tty.wait_for_output("sv$ ", at);
    tty.container.wait_for("sleep 100 to be interrupted", || {
        (!sleep_runs(&tty.container)).then_some(())
    });
    tty.type_keys("echo \"al\"ive\n");
    tty.wait_for_output("alive\r\n", at);
    tty.type_keys("exit 4\n");
    assert_eq!(tty.wait_exit(), 4, "{}", tty.output());
    assert_eq!(tty.container.exit_code(), 4);
}

// ----- health probe and workers -----

#[test]
fn status_check_in_the_container_is_0_while_serving_and_1_while_nothing_serves() {
    let serving_dir = TestDir::new("docker-check");
    let never_ready_dir = TestDir::new("docker-check-never");
    let serving_container = serving("check", &serving_dir, &[], &[]);
    let never_ready = serving("check-never", &never_ready_dir, &[], &["--no-ready"]);
    serving_container.wait_for_log("is ready after");
    let check = serving_container.exec(&["sockvisor", "status", "--check"]);
    assert_eq!(check.status.code(), Some(0), "{check:?}");
    assert!(check.stdout.is_empty() && check.stderr.is_empty(), "silent");
    // Started, never READY=1: nothing serves.
    report(&never_ready_dir, "1");
    let check = never_ready.exec(&["sockvisor", "status", "--check"]);
    assert_eq!(check.status.code(), Some(1), "{check:?}");
}

#[test]
fn a_worker_killed_with_kill_9_in_the_container_is_replaced_and_requests_keep_being_answered() {
    let dir = TestDir::new("docker-workers");
    let container = serving("workers", &dir, &["--workers", "2"], &[]);
    let address = container.tcp_address();
    container.wait_for_log("generation 1 (2 workers) is ready after");
    let victim = report(&dir, "1-1")["pid"].as_i64().unwrap();
    let load = Load::start(&address, 2);
    load.wait_for_answers(20);
    let kill = container.exec(&["kill", "-9", &victim.to_string()]);
    assert!(kill.status.success(), "{kill:?}");
    let replacement = wait_for("a replacement in slot 1", || {
        let pid = report(&dir, "1-1")["pid"].as_i64()?;
        (pid != victim).then_some(pid)
    });
    container.wait_for(
        &format!("the replacement (pid {replacement}) to answer"),
        || (pid_answering(&address) == format!("pid={replacement}")).then_some(()),
    );
    load.wait_for_answers(20);
    let result = load.stop();
    // Only requests the killed worker had accepted may fail: at most one
    // per client.
    assert!(result.failures.len() <= 2, "{:?}", result.failures);
    assert!(result.ok >= 40, "{result:?}");
}

// ----- the Kubernetes example -----

fn deployment_container() -> Yaml {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/kubernetes/deployment.yaml");
    let text = fs::read_to_string(path).unwrap();
    let doc = YamlLoader::load_from_str(&text).unwrap().remove(0);
    doc["spec"]["template"]["spec"].clone()
}

fn strings(list: &Yaml) -> Vec<String> {
    list.as_vec()
        .unwrap_or_else(|| panic!("not a list: {list:?}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_kubernetes_deployments_command_probe_and_grace_period_work_in_a_container() {
    let pod = deployment_container();
    let spec = &pod["containers"][0];
    let command = strings(&spec["command"]);
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap() as u64;
    let probe = strings(&spec["readinessProbe"]["exec"]["command"]);
    let pre_stop = strings(&spec["lifecycle"]["preStop"]["exec"]["command"]);
    // The deployment's sockvisor command line as it is (in a network
    // namespace of its own, like a pod's); only the server differs: the
    // test image has the probe server, not python3.
    let separator = command.iter().position(|a| a == "--").unwrap();
    let dir = TestDir::new("docker-k8s");
    let mount = reports_mount(&dir);
    let mut args: Vec<&str> = command[1..=separator].iter().map(String::as_str).collect();
    args.extend_from_slice(&["probe_server", "--report-dir", "/reports"]);
    let container = Container::start(
        "k8s",
        &[
            "--network",
            "none",
            "-v",
            &mount,
            "--entrypoint",
            &command[0],
        ],
        &engine().images.app,
        &args,
    );
    let probe: Vec<&str> = probe.iter().map(String::as_str).collect();
    container.wait_for("the readiness probe to pass", || {
        container.exec(&probe).status.success().then_some(())
    });
    let port = spec["ports"][0]["containerPort"].as_i64().unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    let answer = container.exec(&["wget", "-qO-", &url]);
    assert!(
        String::from_utf8_lossy(&answer.stdout).contains("generation=1"),
        "{answer:?}"
    );
    let pre_stop: Vec<&str> = pre_stop.iter().map(String::as_str).collect();
    let hook = container.exec(&pre_stop);
    assert!(hook.status.success(), "{hook:?}");
    let took = container.stop(grace);
    assert_eq!(container.exit_code(), 0, "{}", container.logs());
    assert!(took < Duration::from_secs(grace), "stopping took {took:?}");
    let stop_timeout = &command[command.iter().position(|a| a == "--stop-timeout").unwrap() + 1];
    container.wait_for_log(&format!(
        "SIGTERM received: sending SIGQUIT to every generation, waiting up to {stop_timeout}"
    ));
}

// ----- the published application image -----

#[test]
fn the_published_app_image_serves_as_nobody_and_upgrades_through_docker_exec() {
    // The ENTRYPOINT of app.Dockerfile as published (0.0.0.0:8080, --user
    // nobody), in a network namespace of its own; the probe server as CMD.
    let container = Container::start(
        "app",
        &["--network", "none"],
        &engine().images.app,
        &["probe_server", "--report-dir", "/tmp"],
    );
    container.wait_for_log("is ready after");
    let owner = container.exec(&["stat", "-c", "%u", "/tmp/1.json"]);
    assert_eq!(String::from_utf8_lossy(&owner.stdout).trim(), "65534");
    let answer = container.exec(&["wget", "-qO-", "http://127.0.0.1:8080/"]);
    assert!(
        String::from_utf8_lossy(&answer.stdout).contains("generation=1"),
        "{answer:?}"
    );
    let upgrade = container.exec(&["sockvisor", "upgrade", "--timeout", "20s"]);
    assert!(upgrade.status.success(), "{upgrade:?}");
    let answer = container.exec(&["wget", "-qO-", "http://127.0.0.1:8080/"]);
    assert!(
        String::from_utf8_lossy(&answer.stdout).contains("generation=2"),
        "{answer:?}"
    );
    container.stop(20);
    assert_eq!(container.exit_code(), 0, "{}", container.logs());
}

#[test]
fn a_shell_replacing_the_apps_cmd_is_never_ready_but_under_entrypoint_sockvisor_it_is() {
    // `docker run myapp sh`: the shell replaces CMD, but the ENTRYPOINT
    // still has --listen, so sockvisor waits for a READY=1 that a shell
    // never sends (and would stop it at the ready timeout).
    let trapped = Container::start(
        "shell-trap",
        &["--network", "none"],
        &engine().images.app,
        &["sh", "-c", "echo shell started; exec sleep 60"],
    );
    trapped.wait_for_log("shell started");
    let check = trapped.exec(&["sockvisor", "status", "--check"]);
    assert_eq!(check.status.code(), Some(1), "{check:?}");
    // As docs/recipes.md says: `--entrypoint sockvisor myapp run -- sh`, sockvisor
    // as a plain init, ready as soon as the shell runs.
    let shell = Container::start(
        "shell",
        &["--network", "none", "--entrypoint", "sockvisor"],
        &engine().images.app,
        &["run", "--", "sh", "-c", "echo shell started; exec sleep 60"],
    );
    shell.wait_for_log("shell started");
    shell.wait_for("the shell to count as serving", || {
        shell
            .exec(&["sockvisor", "status", "--check"])
            .status
            .success()
            .then_some(())
    });
}
