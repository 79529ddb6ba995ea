//! sockvisor on a terminal, as `docker run -it` or an interactive shell runs
//! it, through a real pty: sockvisor is a session leader with the pty as its
//! controlling terminal and as its stdin, stdout and stderr.

mod common;

use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use common::*;

/// A sockvisor running on its own pty; killed (with every generation, by
/// their parent-death signal) if the test ends early.
struct OnPty {
    child: Child,
    master: File,
    output: Arc<Mutex<Vec<u8>>>,
    dir: TestDir,
}

impl OnPty {
    fn start(name: &str, args: &[&str]) -> OnPty {
        let dir = TestDir::new(name);
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let slave = |pty: &nix::pty::OpenptyResult| -> Stdio {
            Stdio::from(pty.slave.try_clone().unwrap())
        };
        let mut command = Command::new(sockvisor_bin());
        command
            .args(args)
            .env("SOCKVISOR_CONTROL", dir.join("control.sock"))
            .env("PS1", "sv$ ")
            .env("TERM", "dumb")
            .stdin(slave(&pty))
            .stdout(slave(&pty))
            .stderr(slave(&pty));
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
        let child = command.spawn().expect("cannot start sockvisor");
        // Only the child keeps the slave side: reads of the master end with
        // EIO once every process on the terminal has gone.
        drop(pty.slave);
        let master = File::from(pty.master);
        let output = record_terminal(&master);
        OnPty {
            child,
            master,
            output,
            dir,
        }
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until the terminal shows `needle` after position `from` and
    /// returns the position after it.
    fn wait_for_output(&self, needle: &str, from: usize) -> usize {
        wait_for(&format!("{needle:?} on the terminal"), || {
            let output = self.output();
            output
                .get(from..)
                .and_then(|rest| rest.find(needle))
                .map(|at| from + at + needle.len())
        })
        .max(from)
    }

    fn type_keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
    }

    fn wait_exit(&mut self) -> i32 {
        let status = wait_for("sockvisor to exit", || self.child.try_wait().unwrap());
        status
            .code()
            .unwrap_or_else(|| panic!("killed: {status:?}"))
    }
}

impl Drop for OnPty {
    fn drop(&mut self) {
        if self.child.try_wait().unwrap().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn a_python_repl_reads_the_terminal_and_survives_ctrl_c() {
    let mut tty = OnPty::start("repl", &["run", "--", "python3", "-q", "-i"]);
    let at = tty.wait_for_output(">>> ", 0);
    tty.type_keys("print(6*7)\n");
    let at = tty.wait_for_output("42", at);
    let at = tty.wait_for_output(">>> ", at);
    // Ctrl-C reaches the REPL, the foreground process group, not sockvisor.
    tty.type_keys("\x03");
    let at = tty.wait_for_output("KeyboardInterrupt", at);
    let at = tty.wait_for_output(">>> ", at);
    tty.type_keys("print(6*8)\n");
    tty.wait_for_output("48", at);
    tty.type_keys("exit()\n");
    assert_eq!(tty.wait_exit(), 0, "{}", tty.output());
}

#[test]
fn a_shell_reads_the_terminal_and_its_exit_ends_sockvisor() {
    let mut tty = OnPty::start("shell", &["run", "--", "sh"]);
    let at = tty.wait_for_output("sv$ ", 0);
    tty.type_keys("echo $((6*7))\n");
    let at = tty.wait_for_output("42", at);
    tty.wait_for_output("sv$ ", at);
    tty.type_keys("exit 0\n");
    assert_eq!(tty.wait_exit(), 0, "{}", tty.output());
}

#[test]
fn ctrl_c_that_kills_the_child_ends_sockvisor_with_130_not_a_restart() {
    let mut tty = OnPty::start(
        "interrupt",
        &[
            "run",
            "--restart",
            "always",
            "--",
            "sh",
            "-c",
            "echo started; exec sleep 100",
        ],
    );
    tty.wait_for_output("started\r\n", 0);
    // The child's group is the foreground once sh has printed.
    tty.type_keys("\x03");
    assert_eq!(tty.wait_exit(), 130, "{}", tty.output());
    let output = tty.output();
    assert_eq!(
        output.lines().filter(|l| l.trim() == "started").count(),
        1,
        "{output}"
    );
    assert!(!output.contains("generation 2"), "{output}");
}

#[test]
fn an_upgrade_hands_the_terminal_to_the_new_generation() {
    let mut tty = OnPty::start("handover", &["run", "--stop-signal", "SIGHUP", "--", "sh"]);
    let at = tty.wait_for_output("sv$ ", 0);
    tty.type_keys("echo gen=$SOCKVISOR_GENERATION\n");
    tty.wait_for_output("gen=1", at);
    let upgrade = Command::new(sockvisor_bin())
        .args(["upgrade", "--timeout", "20s"])
        .env("SOCKVISOR_CONTROL", tty.dir.join("control.sock"))
        .output()
        .unwrap();
    assert!(upgrade.status.success(), "{upgrade:?}");
    let at = tty.output().len();
    tty.type_keys("echo gen=$SOCKVISOR_GENERATION\n");
    tty.wait_for_output("gen=2", at);
    tty.type_keys("exit 0\n");
    assert_eq!(tty.wait_exit(), 0, "{}", tty.output());
}

#[test]
fn without_a_terminal_sigint_still_stops_gracefully() {
    // The usual server case: no terminal, `kill -INT` is a stop request.
    let dir = TestDir::new("no-tty");
    let mut command = Command::new(sockvisor_bin());
    command.args(["run", "--", "sleep", "100"]);
    let mut sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.wait_for_log("is ready after");
    sockvisor.signal(libc::SIGINT);
    assert_eq!(sockvisor.wait_exit(), 0, "{}", sockvisor.stderr());
    assert!(
        sockvisor
            .stderr()
            .contains("SIGINT received: sending SIGQUIT")
    );
}
