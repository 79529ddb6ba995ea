#!/usr/bin/env python3
"""sockvisor's benchmark suite: one command runs every scenario.

    python3 bench/run.py [--smoke] [--write docs/BENCHMARKS.md] [--only NAME,...]

It builds the release binaries (sockvisor, the probe server, the load
generator), runs each scenario with its comparison side by side, prints the
results as Markdown, checks them against the targets, and with --write
stores the report. --smoke runs every scenario for a moment with debug
binaries, to prove the instruments work (used by CI); its figures mean
nothing. It does not need matplotlib; like every run it needs gcc, for the
C worker and floor of the many-workers scenario (bench/*.c, compiled into a
temporary directory). --only runs the named scenarios (e.g. --only
many_workers); with --write, the "Many workers" section is replaced on its
own, the "Results" section only when all of its scenarios ran. With
matplotlib installed, --write also draws docs/many_workers.svg, shown in the
report. --only many_workers_rolling runs rolling upgrades (--max-surge 32) of
many workers next to all-at-once ones, into a section of its own. With
--einhorn DIR (a checkout of einhorn's source; it needs ruby), the
many-workers scenario also runs einhorn on the same worker at every N;
without it, the report says einhorn was not measured. All traffic goes to 127.0.0.1. Every process it starts is stopped
before it returns, also on failure.
"""

import argparse
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STARTED = []  # every Popen, killed at exit


def build(profile):
    args = ["cargo", "build", "--quiet", "--bins", "--examples"]
    if profile == "release":
        args.append("--release")
    subprocess.run(args, cwd=ROOT, check=True)
    target = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), profile)
    return {
        "sockvisor": os.path.join(target, "sockvisor"),
        "probe": os.path.join(target, "examples", "probe_server"),
        "loadgen": os.path.join(target, "examples", "loadgen"),
    }


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.005)
    raise RuntimeError(f"timed out waiting for {what}")


def accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return b"pid=" in s.recv(4096) or True
    except OSError:
        return False


def start(args, log_path=None, env=None):
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, env=env)
    STARTED.append(process)
    return process


def stop_all():
    for process in STARTED:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for process in STARTED:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    STARTED.clear()


class Sockvisor:
    """A sockvisor running the probe server, with its own control socket."""

    def __init__(self, bins, workdir, listen, run_args=(), probe_args=()):
        self.bins = bins
        self.control = os.path.join(workdir, "control.sock")
        self.log = os.path.join(workdir, "sockvisor.log")
        self.env = dict(os.environ, SOCKVISOR_CONTROL=self.control)
        listens = []
        for spec in listen:
            listens += ["--listen", spec]
        args = [bins["sockvisor"], "run", *listens, *run_args, "--",
                bins["probe"], "--report-dir", workdir, *probe_args]
        self.process = start(args, self.log, self.env)
        wait_until("generation 1 to be ready",
                   lambda: "is ready after" in open(self.log).read())

    def upgrade(self):
        """Runs `sockvisor upgrade`; returns (ok, [(seconds since start, line)])."""
        began = time.monotonic()
        client = subprocess.Popen([self.bins["sockvisor"], "upgrade"], env=self.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = []
        for line in client.stdout:
            lines.append((time.monotonic() - began, line.strip()))
        client.wait()
        return client.returncode == 0, lines

    def upgrade_over_socket(self):
        """Speaks the control protocol directly, so that the client's own
        start-up is not counted; returns (ok, [(seconds since the request
        was sent, message)])."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.control)
            reader = s.makefile("r")
            began = time.monotonic()
            s.sendall(b'{"version":1,"command":"upgrade"}\n')
            lines = []
            for line in reader:
                at = time.monotonic() - began
                reply = json.loads(line)
                lines.append((at, reply["message"]))
                if reply["type"] == "result":
                    return reply["ok"], lines
        return False, lines

    def proc_status(self):
        fields = {}
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        with open(f"/proc/{self.process.pid}/stat") as f:
            stat = f.read().rsplit(")", 1)[1].split()
        return {
            "rss_kib": int(fields["VmRSS"].split()[0]),
            "voluntary_switches": int(fields["voluntary_ctxt_switches"]),
            "involuntary_switches": int(fields["nonvoluntary_ctxt_switches"]),
            "cpu_ticks": int(stat[11]) + int(stat[12]),
            "fds": len(os.listdir(f"/proc/{self.process.pid}/fd")),
        }

    def stop(self):
        subprocess.run([self.bins["sockvisor"], "stop", "--timeout", "30s"], env=self.env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.process.wait(timeout=30)


def loadgen(bins, port, clients, seconds, keep_alive=False):
    args = [bins["loadgen"], "--address", f"127.0.0.1:{port}", "--clients", str(clients),
            "--seconds", str(seconds)]
    if keep_alive:
        args.append("--keep-alive")
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True)


def finish(load):
    out, _ = load.communicate(timeout=600)
    return json.loads(out)


def direct_probe(bins, workdir, port, probe_args=()):
    process = start([bins["probe"], "--report-dir", workdir, "--bind", f"127.0.0.1:{port}",
                     *probe_args])
    wait_until("the directly bound server", lambda: accepts(port))
    return process


# ----- scenarios -----

def scenario_data_path(bins, scale):
    """1. Throughput and latency: server bound directly vs under sockvisor."""
    results = {}
    for mode, keep_alive in (("connection per request", False), ("keep-alive", True)):
        runs = {"direct": [], "sockvisor": []}
        for _ in range(scale["rounds"]):
            with tempfile.TemporaryDirectory() as workdir:
                port = free_port()
                server = direct_probe(bins, workdir, port)
                runs["direct"].append(finish(loadgen(bins, port, 16, scale["seconds"], keep_alive)))
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=30)
            with tempfile.TemporaryDirectory() as workdir:
                port = free_port()
                sv = Sockvisor(bins, workdir, [f"127.0.0.1:{port}"])
                runs["sockvisor"].append(finish(loadgen(bins, port, 16, scale["seconds"], keep_alive)))
                sv.stop()
        rps = {side: sum(r["requests_per_second"] for r in rs) / len(rs) for side, rs in runs.items()}
        results[mode] = {
            "direct_rps": rps["direct"],
            "sockvisor_rps": rps["sockvisor"],
            "ratio": rps["sockvisor"] / rps["direct"],
            "direct_p99_ms": max(r["latency_ms"]["p99"] for r in runs["direct"]),
            "sockvisor_p99_ms": max(r["latency_ms"]["p99"] for r in runs["sockvisor"]),
            "failed": sum(r["failed"] for rs in runs.values() for r in rs),
        }
    return results


def scenario_upgrades(bins, scale):
    """2. Repeated upgrades under load vs the naive stop-then-start."""
    upgrades, pause = scale["upgrades"], scale["pause"]
    seconds = upgrades * pause + 1.5
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        sv = Sockvisor(bins, workdir, [f"127.0.0.1:{port}"])
        load = loadgen(bins, port, 16, seconds)
        time.sleep(0.5)
        upgrade_ok = 0
        for _ in range(upgrades):
            ok, _ = sv.upgrade()
            upgrade_ok += ok
            time.sleep(pause)
        with_sockvisor = finish(load)
        sv.stop()
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        server = direct_probe(bins, workdir, port)
        load = loadgen(bins, port, 16, seconds, keep_alive=False)
        time.sleep(0.5)
        for _ in range(upgrades):
            # The naive way: ask the old server to stop, start the new one
            # on the same port once the old one has let go of it.
            server.send_signal(signal.SIGQUIT)
            server.wait(timeout=30)
            server = direct_probe(bins, workdir, port)
            time.sleep(pause)
        naive = finish(load)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    return {"upgrades": upgrades, "upgrades_ok": upgrade_ok, "sockvisor": with_sockvisor, "naive": naive}


def scenario_slow_start(bins, scale):
    """3. A new generation that takes 1.5 s to start: old one serves meanwhile."""
    delay_ms = scale["slow_ms"]
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        sv = Sockvisor(bins, workdir, [f"127.0.0.1:{port}"],
                       probe_args=["--faults-from", "2", "--ready-delay-ms", str(delay_ms)])
        baseline = finish(loadgen(bins, port, 16, delay_ms / 1000 + 1))
        load = loadgen(bins, port, 16, delay_ms / 1000 + 1)
        time.sleep(0.3)
        ok, _ = sv.upgrade()
        during = finish(load)
        sv.stop()
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        server = direct_probe(bins, workdir, port)
        load = loadgen(bins, port, 16, delay_ms / 1000 + 1)
        time.sleep(0.3)
        server.send_signal(signal.SIGQUIT)
        server.wait(timeout=30)
        # The new server is as slow to start, and binds only when it is up.
        time.sleep(delay_ms / 1000)
        server = direct_probe(bins, workdir, port)
        naive = finish(load)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    return {"startup_ms": delay_ms, "upgrade_ok": ok, "baseline": baseline, "during_upgrade": during, "naive": naive}


PROGRESS = [
    ("spawned", re.compile(r"^generation \d+ started")),
    ("ready", re.compile(r"is ready after")),
    ("old_signalled", re.compile(r"sent SIG\w+; draining")),
    ("old_exited", re.compile(r"\) (exited with|was killed by)")),
    ("done", re.compile(r"is serving$")),
]


def scenario_timing(bins, scale):
    """4. Where the time of one upgrade goes, from the request to the result."""
    samples = []
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        sv = Sockvisor(bins, workdir, [f"127.0.0.1:{port}"])
        for generation in range(2, scale["timing_upgrades"] + 2):
            ok, lines = sv.upgrade_over_socket()
            if not ok:
                continue
            marks = {}
            for at, line in lines:
                for name, pattern in PROGRESS:
                    if name not in marks and pattern.search(line):
                        marks[name] = at * 1000
            with open(os.path.join(workdir, f"{generation}.ready")) as f:
                marks["server_startup"] = int(f.read()) / 1000
            marks["overhead"] = marks["ready"] - marks["server_startup"]
            samples.append(marks)
        sv.stop()
    keys = [name for name, _ in PROGRESS] + ["server_startup", "overhead"]
    median = {k: sorted(s[k] for s in samples)[len(samples) // 2] for k in keys}
    return {"upgrades": len(samples), "median_ms": median,
            "max_overhead_ms": max(s["overhead"] for s in samples)}


def scenario_footprint(bins, scale):
    """5. RSS, and wake-ups and CPU while idle."""
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        sv = Sockvisor(bins, workdir, [f"127.0.0.1:{port}"])
        time.sleep(0.5)
        before = sv.proc_status()
        time.sleep(scale["idle_seconds"])
        after = sv.proc_status()
        sv.stop()
    return {
        "idle_seconds": scale["idle_seconds"],
        "rss_kib": after["rss_kib"],
        "voluntary_switches": after["voluntary_switches"] - before["voluntary_switches"],
        "involuntary_switches": after["involuntary_switches"] - before["involuntary_switches"],
        "cpu_ticks": after["cpu_ticks"] - before["cpu_ticks"],
    }


def scenario_scale(bins, scale):
    """6. 1,000 listening sockets; 100 consecutive upgrades without leaks."""
    sockets = scale["sockets"]
    with tempfile.TemporaryDirectory() as workdir:
        began = time.monotonic()
        sv = Sockvisor(bins, workdir, ["127.0.0.1:0"] * sockets)
        startup = time.monotonic() - began
        with_sockets = sv.proc_status()
        sv.stop()
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        sv = Sockvisor(bins, workdir, [f"127.0.0.1:{port}"])
        first = sv.proc_status()
        failed = 0
        samples = []
        # The first batch warms the allocator up (its high-water mark); a
        # leak then shows as growth over the two batches after it.
        for _ in range(3):
            for _ in range(scale["leak_upgrades"]):
                ok, _ = sv.upgrade_over_socket()
                failed += not ok
            # Let the last control connection close before counting fds.
            time.sleep(0.1)
            samples.append(sv.proc_status())
        sv.stop()
    before, after = samples[0], samples[-1]
    return {
        "sockets": sockets,
        "startup_to_ready_ms": startup * 1000,
        "rss_kib_with_sockets": with_sockets["rss_kib"],
        "fds_with_sockets": with_sockets["fds"],
        "upgrades": scale["leak_upgrades"],
        "upgrades_failed": failed,
        "fds_start": first["fds"],
        "rss_kib_start": first["rss_kib"],
        "fds_before": before["fds"],
        "fds_after": after["fds"],
        "rss_kib_before": before["rss_kib"],
        "rss_kib_after": after["rss_kib"],
    }


def tree_usage(root):
    """Number of sockvisor's child processes and their summed RSS (KiB)."""
    try:
        with open(f"/proc/{root}/task/{root}/children") as f:
            children = [int(p) for p in f.read().split()]
    except OSError:
        return 0, 0
    rss = 0
    for pid in children:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
        except OSError:
            pass
    return len(children), rss


def rate(per_100ms, start_s, end_s):
    """Requests per second over the whole 100 ms buckets inside [start, end)."""
    first, last = int(start_s * 10) + 1, int(end_s * 10)
    buckets = per_100ms[first:last]
    return sum(buckets) * 10 / len(buckets) if buckets else 0.0


def scenario_workers(bins, scale):
    """7. Four workers under load: all-at-once vs rolling (--max-surge 1).
    Each mode upgrades `worker_upgrades` times under one load run; each
    rollout's throughput is compared with the steady window just before it
    (the machine's own throughput drifts between runs)."""
    results = {}
    modes = (("all at once", ["--workers", "4"]),
             ("rolling, --max-surge 1", ["--workers", "4", "--max-surge", "1"]))
    rounds, steady = scale["worker_upgrades"], scale["worker_steady"]
    for name, run_args in modes:
        with tempfile.TemporaryDirectory() as workdir:
            port = free_port()
            sv = Sockvisor(bins, workdir, [f"127.0.0.1:{port}"], run_args,
                           ["--ready-delay-ms", str(scale["worker_start_ms"])])
            wait_until("four workers", lambda: tree_usage(sv.process.pid)[0] == 4)
            began = time.monotonic()
            load = loadgen(bins, port, 16, scale["worker_seconds"])
            windows, peak_processes, peak_rss, ok = [], 0, 0, True
            calm_from = 0.3
            for _ in range(rounds):
                time.sleep(max(0.0, calm_from + steady - (time.monotonic() - began)))
                upgrade_at = time.monotonic() - began
                client = subprocess.Popen([bins["sockvisor"], "upgrade"], env=sv.env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                while client.poll() is None:
                    processes, rss = tree_usage(sv.process.pid)
                    peak_processes, peak_rss = max(peak_processes, processes), max(peak_rss, rss)
                    time.sleep(0.01)
                ok = ok and client.returncode == 0
                done_at = time.monotonic() - began
                windows.append((calm_from, upgrade_at, done_at))
                # Let the old workers finish exiting before the next calm window.
                calm_from = done_at + 0.3
            rest_rss = tree_usage(sv.process.pid)[1]
            measured = finish(load)
            sv.stop()
        ratios, rollouts = [], []
        for calm, start, end in windows:
            before = rate(measured["per_100ms"], calm, start)
            during = rate(measured["per_100ms"], start, end)
            ratios.append(during / before if before else 0.0)
            rollouts.append(end - start)
        ratios.sort()
        rollouts.sort()
        results[name] = {
            "upgrade_ok": ok,
            "requests": measured["requests"],
            "failed": measured["failed"],
            "failures": measured["failures"],
            "rollout_s": rollouts[len(rollouts) // 2],
            "ratio": ratios[len(ratios) // 2],
            "ratio_min": ratios[0],
            "ratios": ratios,
            "rps": measured["requests_per_second"],
            "peak_processes": peak_processes,
            "peak_rss_kib": peak_rss,
            "steady_rss_kib": rest_rss,
            "p99_9_ms": measured["latency_ms"]["p99_9"],
        }
    return {"worker_start_ms": scale["worker_start_ms"], "upgrades": rounds, "modes": results}


def reexec_over_socket(control, binary):
    """One `reexec` request on the control socket; returns (ok, seconds from
    the request to the result, which the new program sends once it serves)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(control)
        reader = s.makefile("r")
        request = json.dumps({"version": 1, "command": "reexec", "binary": binary})
        began = time.monotonic()
        s.sendall(request.encode() + b"\n")
        for line in reader:
            reply = json.loads(line)
            if reply["type"] == "result":
                return reply["ok"], time.monotonic() - began
    return False, time.monotonic() - began


def scenario_reexec(bins, scale):
    """8. sockvisor replacing its own program: time to serve again, and
    failed requests across repeated re-execs under load."""
    with tempfile.TemporaryDirectory() as workdir:
        binary = os.path.join(workdir, "sockvisor-copy")
        with open(bins["sockvisor"], "rb") as src, open(binary, "wb") as dst:
            dst.write(src.read())
        os.chmod(binary, 0o755)
        port = free_port()
        sv = Sockvisor(bins, workdir, [f"127.0.0.1:{port}"], ["--workers", "2"])
        times = []
        failed_reexecs = 0
        for i in range(scale["reexec_timing"]):
            ok, seconds = reexec_over_socket(sv.control, binary if i % 2 == 0 else bins["sockvisor"])
            failed_reexecs += not ok
            times.append(seconds * 1000)
        load = loadgen(bins, port, 16, scale["reexec_load_seconds"])
        time.sleep(0.5)
        under_load = 0
        for i in range(scale["reexec_under_load"]):
            ok, _ = reexec_over_socket(sv.control, binary if i % 2 == 0 else bins["sockvisor"])
            failed_reexecs += not ok
            under_load += 1
            time.sleep(scale["reexec_pause"])
        measured = finish(load)
        fds = len(os.listdir(f"/proc/{sv.process.pid}/fd"))
        sv.stop()
    times.sort()
    return {
        "timed": len(times),
        "median_ms": times[len(times) // 2],
        "max_ms": times[-1],
        "under_load": under_load,
        "reexecs_failed": failed_reexecs,
        "requests": measured["requests"],
        "failed": measured["failed"],
        "failures": measured["failures"],
        "fds_after": fds,
    }


# ----- many workers -----

def compile_c(workdir):
    """Builds the C worker, the fork/exec floor and the spread-work probe
    (bench/*.c) into workdir."""
    programs = {}
    for name in ("worker_child", "spawn_floor", "spread_work"):
        path = os.path.join(workdir, name)
        subprocess.run(["gcc", "-O2", "-o", path, os.path.join(ROOT, "bench", f"{name}.c")],
                       check=True)
        programs[name] = path
    return programs


def cpu_seconds(pid):
    """CPU time `pid` has used: nanoseconds from schedstat where the kernel
    keeps it, clock ticks otherwise."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read().rsplit(")", 1)[1].split()
        return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0]), \
        int(fields["voluntary_ctxt_switches"]) + int(fields["nonvoluntary_ctxt_switches"])


def floor_run(programs, workers, upgrades):
    """The fork/exec floor: seconds to start `workers` and hear them all,
    then per upgrade seconds to the new ones' READY=1 and to the old ones
    reaped."""
    began = time.monotonic()
    process = subprocess.Popen([programs["spawn_floor"], str(workers), programs["worker_child"]],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    STARTED.append(process)

    def expect(line):
        got = process.stdout.readline().strip()
        if got != line:
            raise RuntimeError(f"spawn_floor said {got!r}, expected {line!r}")
        return time.monotonic()

    start = expect("ready") - began
    rounds = []
    for _ in range(upgrades):
        asked = time.monotonic()
        process.stdin.write("upgrade\n")
        process.stdin.flush()
        ready = expect("upgrade ready") - asked
        done = expect("upgrade done") - asked
        rounds.append((ready, done))
    asked = time.monotonic()
    process.stdin.write("stop\n")
    process.stdin.flush()
    stop = expect("stopped") - asked
    process.wait(timeout=60)
    return {"start_s": start, "upgrades": rounds, "stop_s": stop}


def floor_upgrade(programs, workers, command, start_ms=0):
    """One upgrade of the floor, all at once (`command` "upgrade") or
    rolling ("roll K"): seconds from the line written to its answer, and
    the floor's CPU seconds over the same span."""
    env = dict(os.environ, WORKER_START_MS=str(start_ms)) if start_ms else None
    process = subprocess.Popen([programs["spawn_floor"], str(workers), programs["worker_child"]],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    STARTED.append(process)
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError("spawn_floor did not start its workers")
    done = "roll done" if command.startswith("roll") else "upgrade done"
    cpu = cpu_seconds(process.pid)
    asked = time.monotonic()
    process.stdin.write(command + "\n")
    process.stdin.flush()
    for line in process.stdout:
        if line.strip() == done:
            break
    else:
        raise RuntimeError(f"spawn_floor ended before {done!r}")
    took = time.monotonic() - asked
    cpu = cpu_seconds(process.pid) - cpu
    process.stdin.write("stop\n")
    process.stdin.flush()
    process.wait(timeout=60)
    return {"done_s": took, "cpu_s": cpu}


class LogLines:
    """sockvisor's stderr, read as it comes, each line with its arrival time."""

    def __init__(self, stream):
        self.lines = []
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream):
        for line in stream:
            with self.changed:
                self.lines.append((time.monotonic(), line))
                self.changed.notify_all()

    def wait_for(self, pattern, timeout=120.0, count=1, since=0.0):
        """The arrival time of the `count`th line matching `pattern` among
        those that arrived after `since` (a time.monotonic() value)."""
        pattern = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        found = 0
        with self.changed:
            while True:
                for at, line in self.lines[seen:]:
                    if at >= since and pattern.search(line):
                        found += 1
                        if found == count:
                            return at
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"timed out waiting for a log line matching {pattern.pattern}")
                self.changed.wait(left)


def control_request(control, command):
    """One request on the control socket: returns (seconds from sending it to
    each reply, the replies, the bytes of the final one)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(control)
        reader = s.makefile("rb")
        began = time.monotonic()
        s.sendall(json.dumps(dict(version=1, command=command)).encode() + b"\n")
        replies = []
        for line in reader:
            reply = json.loads(line)
            replies.append((time.monotonic() - began, reply))
            if reply["type"] == "result":
                return replies, len(line)
    raise RuntimeError(f"{command}: the control socket closed without a result")


def sockvisor_workers(bins, programs, workdir, workers, upgrades, run_args=(), start_ms=0):
    """sockvisor running `workers` C workers (each sleeping `start_ms` before
    it is ready): start → all ready, then `upgrades` upgrades, each with
    sockvisor's CPU time, status latency and size, memory, and the stop."""
    control = os.path.join(workdir, "control.sock")
    env = dict(os.environ, SOCKVISOR_CONTROL=control)
    if start_ms:
        env["WORKER_START_MS"] = str(start_ms)
    args = [bins["sockvisor"], "run", "--listen", "127.0.0.1:0", "--workers", str(workers),
            *run_args, "--", programs["worker_child"]]
    began = time.monotonic()
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=env)
    STARTED.append(process)
    log = LogLines(process.stderr)
    start = log.wait_for(r"generation 1 \((?:\d+ workers?|pid \d+)\) is ready after") - began
    rounds = []
    for _ in range(upgrades):
        cpu = cpu_seconds(process.pid)
        replies, _ = control_request(control, "upgrade")
        cpu = cpu_seconds(process.pid) - cpu
        # A rolling upgrade has no moment when the whole generation becomes
        # ready at once: only its result is timed.
        ready = next((at for at, r in replies
                      if re.search(r"\((?:\d+ workers?|pid \d+)\) is ready after", r["message"])), None)
        done, result = replies[-1]
        if not result["ok"]:
            raise RuntimeError(f"upgrade failed: {result['message']}")
        rounds.append({"ready_s": ready, "done_s": done, "cpu_s": cpu})
    statuses = []
    for _ in range(5):
        replies, size = control_request(control, "status")
        statuses.append((replies[-1][0], size))
    rss, peak, _ = memory_kib(process.pid)
    asked = time.monotonic()
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(control)
        s.sendall(b'{"version":1,"command":"stop"}\n')
        process.wait(timeout=60)
    stop = time.monotonic() - asked
    return {"start_s": start, "upgrades": rounds, "status": statuses, "rss_kib": rss,
            "peak_rss_kib": peak, "stop_s": stop}


def sockvisor_at_rest(bins, programs, workdir, workers, seconds, run_args=()):
    """sockvisor's CPU share and wake-ups while `workers` workers serve,
    over `seconds` (after they are all ready and a moment's settling)."""
    control = os.path.join(workdir, "control.sock")
    env = dict(os.environ, SOCKVISOR_CONTROL=control)
    args = [bins["sockvisor"], "run", "--listen", "127.0.0.1:0", "--workers", str(workers),
            *run_args, "--", programs["worker_child"]]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=env)
    STARTED.append(process)
    log = LogLines(process.stderr)
    log.wait_for(r"generation 1 \((?:\d+ workers?|pid \d+)\) is ready after")
    time.sleep(min(2.0, seconds))
    cpu, (_, _, switches) = cpu_seconds(process.pid), memory_kib(process.pid)
    time.sleep(seconds)
    cpu, (_, _, after) = cpu_seconds(process.pid) - cpu, memory_kib(process.pid)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(control)
        s.sendall(b'{"version":1,"command":"stop"}\n')
        process.wait(timeout=60)
    return {"seconds": seconds, "cpu_share": cpu / seconds, "wakeups": after - switches}


def einhorn_workers(einhorn_dir, programs, workdir, workers):
    """einhorn (`-m manual`) running `workers` C workers, each acking on
    einhorn's command socket: start → all acked, then one `upgrade_fleet`
    (all new workers at once, as sockvisor's all-at-once upgrade), with the
    master's CPU time, then its stop. The master re-executes itself on an
    upgrade; RUBYLIB lets the new program find einhorn's code again."""
    command_socket = os.path.join(workdir, "einhorn.sock")
    lib = os.path.join(einhorn_dir, "lib")
    env = dict(os.environ, RUBYLIB=lib)
    args = ["ruby", "-I", lib, os.path.join(einhorn_dir, "bin", "einhorn"),
            "-b", "127.0.0.1:0", "-m", "manual", "-n", str(workers), "-d", command_socket,
            "-e", os.path.join(workdir, "einhorn.pid"), "--", programs["worker_child"]]
    began = time.monotonic()
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env, cwd=workdir)
    STARTED.append(process)
    log = LogLines(process.stdout)
    start = log.wait_for(rf"Up to {workers} / {workers} manual ACKs") - began
    cpu = cpu_seconds(process.pid)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(command_socket)
        reader = s.makefile("r")
        # einhorn's wire format: one YAML document per line, "%" and
        # newlines percent-escaped.
        asked = time.monotonic()
        s.sendall(b"---%0Aid: 1%0Acommand: upgrade_fleet%0Aargs: []%0A\n")
        ready = log.wait_for(r"Upgraded successfully to version 1", since=asked) - asked
        done = log.wait_for(r"===> Exited worker", count=workers, since=asked) - asked
        cpu = cpu_seconds(process.pid) - cpu
        for line in reader:
            if "Upgrade done" in line:
                break
    asked = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    stop = time.monotonic() - asked
    return {"start_s": start, "ready_s": ready, "done_s": done, "cpu_s": cpu, "stop_s": stop}


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def scenario_many_workers(bins, scale):
    """9. Many workers: start, all-at-once upgrade, status, stop, memory,
    watchdog pings and idle, against a fork/exec floor of the same C child.
    For each N the floor and sockvisor take turns, `many_rounds` times (one
    start and one upgrade each), so that a burst of other work on the
    machine falls on both sides; medians are kept."""
    results = {"sizes": [], "rounds": scale["many_rounds"], "einhorn": scale.get("einhorn")}
    with tempfile.TemporaryDirectory() as workdir:
        programs = compile_c(workdir)
        for workers in scale["many_sizes"]:
            floors, runs, einhorns = [], [], []
            for _ in range(scale["many_rounds"]):
                floors.append(floor_run(programs, workers, 1))
                with tempfile.TemporaryDirectory() as rundir:
                    runs.append(sockvisor_workers(bins, programs, rundir, workers, 1))
                if scale.get("einhorn"):
                    with tempfile.TemporaryDirectory() as rundir:
                        einhorns.append(einhorn_workers(scale["einhorn"], programs, rundir, workers))
            statuses = [status for run in runs for status in run["status"]]
            results["sizes"].append({
                "workers": workers,
                "floor_start_s": median(f["start_s"] for f in floors),
                "floor_upgrade_ready_s": median(f["upgrades"][0][0] for f in floors),
                "floor_upgrade_done_s": median(f["upgrades"][0][1] for f in floors),
                "floor_stop_s": median(f["stop_s"] for f in floors),
                "start_s": median(r["start_s"] for r in runs),
                "upgrade_ready_s": median(r["upgrades"][0]["ready_s"] for r in runs),
                "upgrade_done_s": median(r["upgrades"][0]["done_s"] for r in runs),
                "upgrade_cpu_s": median(r["upgrades"][0]["cpu_s"] for r in runs),
                "status_s": median(t for t, _ in statuses),
                "status_max_s": max(t for t, _ in statuses),
                "status_bytes": statuses[-1][1],
                "rss_kib": max(r["rss_kib"] for r in runs),
                "peak_rss_kib": max(r["peak_rss_kib"] for r in runs),
                "stop_s": median(r["stop_s"] for r in runs),
                "stop_max_s": max(r["stop_s"] for r in runs),
                "einhorn": {key: median(e[key] for e in einhorns)
                            for key in ("start_s", "ready_s", "done_s", "cpu_s", "stop_s")}
                           if einhorns else None,
            })
        largest = max(scale["many_sizes"])
        with tempfile.TemporaryDirectory() as rundir:
            results["watchdog"] = sockvisor_at_rest(bins, programs, rundir, largest,
                                                    scale["many_rest_seconds"], ["--watchdog", "5s"])
        with tempfile.TemporaryDirectory() as rundir:
            results["idle"] = sockvisor_at_rest(bins, programs, rundir, largest,
                                                scale["many_rest_seconds"])
        results["rest_workers"] = largest
    return results


def scenario_many_workers_rolling(bins, scale):
    """10. Rolling upgrades of many workers (`--max-surge K`, K = 32 capped
    at N) next to all-at-once upgrades of the same N, and the floor doing
    each (`spawn_floor`'s "roll K" and "upgrade"), taking turns
    `many_rounds` times, for each worker start-up in `rolling_start_ms`
    (0: READY=1 at once). For each start-up, one worker's start-up through
    sockvisor is measured too (a 1-worker generation upgraded `many_single`
    times: request → ready), the unit of the (N / K) × start-up estimate."""
    surge = scale["rolling_surge"]
    results = {"variants": [], "rounds": scale["many_rounds"], "surge": surge,
               "single_upgrades": scale["many_single"]}
    with tempfile.TemporaryDirectory() as workdir:
        programs = compile_c(workdir)
        for start_ms in scale["rolling_start_ms"]:
            with tempfile.TemporaryDirectory() as rundir:
                single = sockvisor_workers(bins, programs, rundir, 1, scale["many_single"],
                                           start_ms=start_ms)
            variant = {"start_ms": start_ms, "sizes": [],
                       "single_ready_s": median(r["ready_s"] for r in single["upgrades"]),
                       "single_done_s": median(r["done_s"] for r in single["upgrades"])}
            for workers in scale["rolling_sizes"]:
                k = min(surge, workers)
                at_once, rolling, floor_at_once, floor_rolling = [], [], [], []
                for _ in range(scale["many_rounds"]):
                    floor_at_once.append(floor_upgrade(programs, workers, "upgrade", start_ms))
                    floor_rolling.append(floor_upgrade(programs, workers, f"roll {k}", start_ms))
                    with tempfile.TemporaryDirectory() as rundir:
                        at_once.append(sockvisor_workers(bins, programs, rundir, workers, 1,
                                                         start_ms=start_ms)["upgrades"][0])
                    with tempfile.TemporaryDirectory() as rundir:
                        rolling.append(sockvisor_workers(bins, programs, rundir, workers, 1,
                                                         ["--max-surge", str(k)],
                                                         start_ms=start_ms)["upgrades"][0])
                variant["sizes"].append({
                    "workers": workers,
                    "surge": k,
                    "at_once_done_s": median(r["done_s"] for r in at_once),
                    "at_once_cpu_s": median(r["cpu_s"] for r in at_once),
                    "rolling_done_s": median(r["done_s"] for r in rolling),
                    "rolling_max_s": max(r["done_s"] for r in rolling),
                    "rolling_cpu_s": median(r["cpu_s"] for r in rolling),
                    "floor_at_once_done_s": median(r["done_s"] for r in floor_at_once),
                    "floor_at_once_cpu_s": median(r["cpu_s"] for r in floor_at_once),
                    "floor_rolling_done_s": median(r["done_s"] for r in floor_rolling),
                    "floor_rolling_cpu_s": median(r["cpu_s"] for r in floor_rolling),
                })
            results["variants"].append(variant)
        results["spread_work"] = spread_work(programs, scale["many_rounds"])
    return results


def spread_work(programs, rounds, gap_us=2000):
    """CPU microseconds of one fixed piece of work (bench/spread_work.c)
    done back to back, and done alone every `gap_us` with the CPU idle in
    between: the two take turns `rounds` times; medians."""
    together, alone = [], []
    for _ in range(rounds):
        for gap, count, into in ((0, 2000, together), (gap_us, 500, alone)):
            out = subprocess.run([programs["spread_work"], str(gap), str(count)], check=True,
                                 capture_output=True, text=True).stdout.split()
            into.append(float(out[1]))
    return {"gap_us": gap_us, "together_us": median(together), "alone_us": median(alone)}


def plot_many_workers(results, path, rolling=None):
    """Draws time against workers, log-log, sockvisor against the floor
    (and einhorn, and rolling upgrades, when they were measured). Returns
    False when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sizes = results["sizes"]
    n = [r["workers"] for r in sizes]
    fig, ax = plt.subplots(figsize=(8, 6))
    series = (("start_s", "sockvisor: start → all ready", "C0", "-"),
              ("floor_start_s", "floor: fork/exec N, N × READY=1", "C0", ":"),
              ("upgrade_done_s", "sockvisor: all-at-once upgrade (request → result)", "C1", "-"),
              ("floor_upgrade_done_s", "floor: N new ready, N old reaped", "C1", ":"),
              ("upgrade_cpu_s", "sockvisor CPU in one upgrade", "C2", "-"))
    for key, label, color, style in series:
        ax.plot(n, [r[key] * 1000 for r in sizes], style, marker="o", color=color, label=label)
    if all(r.get("einhorn") for r in sizes):
        for key, label, color in (("start_s", "einhorn: start → all acked", "C0"),
                                  ("done_s", "einhorn: upgrade_fleet (request → old exited)", "C1")):
            ax.plot(n, [r["einhorn"][key] * 1000 for r in sizes], "--", marker="s", color=color,
                    label=label)
    for v, color in zip(rolling["variants"] if rolling else [], ("C3", "C4")):
        start = f"{v['start_ms']} ms start-up" if v["start_ms"] else "no start-up"
        ax.plot([r["workers"] for r in v["sizes"]], [r["rolling_done_s"] * 1000 for r in v["sizes"]],
                "-", marker="^", color=color,
                label=f"sockvisor: rolling upgrade, --max-surge {rolling['surge']}, {start}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("workers (N)")
    ax.set_ylabel("milliseconds")
    ax.set_title("sockvisor with N workers, against a fork/exec floor"
                 + (" and einhorn" if all(r.get("einhorn") for r in sizes) else ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="x-small", loc="upper left")
    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None})
    plt.close(fig)
    return True


# ----- report -----

def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Linux {platform.release()}, {rustc}"


def check(ok):
    return "met" if ok else "**missed**"


def report(results, smoke):
    d, u, s, t, f, x, w, rx = (results[k] for k in ("data_path", "upgrades", "slow_start", "timing", "footprint", "scale", "workers", "reexec"))
    out = []
    add = out.append
    add(f"Machine: {machine()}.")
    add("")
    add("| target | measured | |")
    add("| --- | --- | --- |")
    worst_ratio = min(m["ratio"] for m in d.values())
    add(f"| data-path ratio >= 0.98 | {worst_ratio:.3f} (worst mode) | {check(worst_ratio >= 0.98)} |")
    add(f"| zero failed requests during upgrades (2) | {u['sockvisor']['failed']} of {u['sockvisor']['requests']} | {check(u['sockvisor']['failed'] == 0)} |")
    add(f"| zero failed requests, slow start (3) | {s['during_upgrade']['failed']} of {s['during_upgrade']['requests']} | {check(s['during_upgrade']['failed'] == 0)} |")
    overhead = t["median_ms"]["overhead"]
    add(f"| upgrade overhead beyond the server's start-up < 5 ms | {overhead:.2f} ms median, {t['max_overhead_ms']:.2f} ms max (request → ready, minus the server's main()→READY) | {check(overhead < 5)} |")
    add(f"| idle wake-ups 0 | {f['voluntary_switches'] + f['involuntary_switches']} in {f['idle_seconds']} s, {f['cpu_ticks']} CPU ticks | {check(f['voluntary_switches'] + f['involuntary_switches'] == 0)} |")
    add(f"| RSS < 4 MiB | {f['rss_kib']} KiB | {check(f['rss_kib'] < 4096)} |")
    growth = x['rss_kib_after'] - x['rss_kib_before']
    rolling = w["modes"]["rolling, --max-surge 1"]
    worker_failed = sum(m["failed"] for m in w["modes"].values())
    worker_requests = sum(m["requests"] for m in w["modes"].values())
    add(f"| zero failed requests, 4-worker upgrades (7) | {worker_failed} of {worker_requests} | {check(worker_failed == 0)} |")
    add(f"| rolling upgrade throughput >= 0.95 of steady state (7) | {rolling['ratio']:.3f} median of {w['upgrades']} rollouts (worst {rolling['ratio_min']:.3f}) | {check(rolling['ratio'] >= 0.95)} |")
    add(f"| rolling upgrade never above N + K = 5 processes (7) | peak {rolling['peak_processes']} | {check(rolling['peak_processes'] <= 5)} |")
    add(f"| re-exec: request to the new program serving the control socket < 50 ms (8) | {rx['median_ms']:.1f} ms median, {rx['max_ms']:.1f} ms max of {rx['timed']} | {check(rx['max_ms'] < 50)} |")
    add(f"| zero failed requests during {rx['under_load']} re-execs under load (8) | {rx['failed']} of {rx['requests']} ({rx['reexecs_failed']} re-execs failed) | {check(rx['failed'] == 0 and rx['reexecs_failed'] == 0)} |")
    add(f"| no fd or memory growth over {2 * x['upgrades']} upgrades (after {x['upgrades']} warm-up; RSS within one 4 KiB page) | fds {x['fds_before']} → {x['fds_after']}, RSS {x['rss_kib_before']} → {x['rss_kib_after']} KiB | {check(x['fds_after'] <= x['fds_before'] and growth <= 4)} |")
    add("")
    add("### 1. Data path: server bound directly vs under sockvisor (16 clients)")
    add("")
    add("| mode | direct req/s | sockvisor req/s | ratio | p99 direct | p99 sockvisor | failed |")
    add("| --- | --- | --- | --- | --- | --- | --- |")
    for mode, m in d.items():
        add(f"| {mode} | {m['direct_rps']:.0f} | {m['sockvisor_rps']:.0f} | {m['ratio']:.3f} | {m['direct_p99_ms']:.2f} ms | {m['sockvisor_p99_ms']:.2f} ms | {m['failed']} |")
    add("")
    add(f"### 2. {u['upgrades']} upgrades under load (16 clients, connection per request) vs naive restart")
    add("")
    add("| | requests | failed | failures by kind | p99 | p99.9 | max |")
    add("| --- | --- | --- | --- | --- | --- | --- |")
    for name in ("sockvisor", "naive"):
        r = u[name]
        add(f"| {name} | {r['requests']} | {r['failed']} | {json.dumps(r['failures'])} | {r['latency_ms']['p99']:.2f} ms | {r['latency_ms']['p99_9']:.2f} ms | {r['latency_ms']['max']:.2f} ms |")
    add(f"\nsockvisor upgrades that succeeded: {u['upgrades_ok']} of {u['upgrades']}; answering pids seen: {len(u['sockvisor']['pids'])}.")
    add("")
    add(f"### 3. New generation that needs {s['startup_ms']} ms to start")
    add("")
    add("| | requests | failed | p99 | p99.9 | max |")
    add("| --- | --- | --- | --- | --- | --- |")
    for name, r in (("no upgrade (baseline)", s["baseline"]), ("sockvisor upgrade", s["during_upgrade"]), ("naive restart", s["naive"])):
        add(f"| {name} | {r['requests']} | {r['failed']} | {r['latency_ms']['p99']:.2f} ms | {r['latency_ms']['p99_9']:.2f} ms | {r['latency_ms']['max']:.2f} ms |")
    add("")
    add(f"### 4. One upgrade, step by step (median of {t['upgrades']}, no load)")
    add("")
    add("Times from writing the upgrade request on the control socket to each progress line:")
    add("")
    add("| step | ms |")
    add("| --- | --- |")
    for name, _ in PROGRESS:
        add(f"| {name} | {t['median_ms'][name]:.2f} |")
    add(f"| (server's own start-up, main() → READY=1, measured inside it) | {t['median_ms']['server_startup']:.2f} |")
    add(f"| sockvisor overhead: ready − server start-up | {t['median_ms']['overhead']:.2f} |")
    add("")
    add("The overhead includes the control round trip, fork and exec of the new generation (and the")
    add("dynamic loading before its main()), and the READY=1 datagram's way back.")
    add("")
    add(f"### 5. Footprint (idle {f['idle_seconds']} s, one listener, one generation)")
    add("")
    add(f"RSS {f['rss_kib']} KiB; voluntary context switches {f['voluntary_switches']}, involuntary {f['involuntary_switches']}, CPU {f['cpu_ticks']} ticks while idle.")
    add("")
    add("### 6. Scale")
    add("")
    add(f"{x['sockets']} listening sockets: start to ready {x['startup_to_ready_ms']:.0f} ms, sockvisor RSS {x['rss_kib_with_sockets']} KiB, {x['fds_with_sockets']} fds.")
    add(f"3 × {x['upgrades']} consecutive upgrades ({x['upgrades_failed']} failed): at start fds {x['fds_start']}, RSS {x['rss_kib_start']} KiB;")
    add(f"after the first {x['upgrades']} (warm-up) fds {x['fds_before']}, RSS {x['rss_kib_before']} KiB; after {2 * x['upgrades']} more fds {x['fds_after']}, RSS {x['rss_kib_after']} KiB.")
    add("")
    add(f"### 7. Four workers under load (16 clients): all at once vs rolling")
    add("")
    add(f"Each worker needs {w['worker_start_ms']} ms from start to READY=1. Each mode upgrades {w['upgrades']} times under one")
    add("load run; a rollout's throughput counts the 100 ms intervals between the upgrade request and its")
    add("result, against the calm intervals just before it. Processes and RSS are sockvisor's children,")
    add("sampled every 10 ms.")
    add("")
    add("| mode | rollout (median) | throughput during rollout / before (median, all) | failed | peak processes | peak RSS of workers | RSS at rest | p99.9 |")
    add("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, m in w["modes"].items():
        all_ratios = ", ".join(f"{x:.3f}" for x in m["ratios"])
        add(f"| {name} | {m['rollout_s'] * 1000:.0f} ms | {m['ratio']:.3f} ({all_ratios}) | {m['failed']} of {m['requests']} | {m['peak_processes']} | {m['peak_rss_kib']} KiB | {m['steady_rss_kib']} KiB | {m['p99_9_ms']:.2f} ms |")
    add("")
    add("### 8. sockvisor re-executing itself (two workers, 16 clients during the second part)")
    add("")
    add(f"{rx['timed']} re-execs without load, alternating between two copies of the binary: from writing the")
    add(f"request on the control socket to the new program's result {rx['median_ms']:.1f} ms median, {rx['max_ms']:.1f} ms max.")
    add(f"{rx['under_load']} re-execs under load: {rx['failed']} of {rx['requests']} requests failed ({json.dumps(rx['failures'])}),")
    add(f"{rx['reexecs_failed']} re-execs failed; sockvisor had {rx['fds_after']} descriptors afterwards.")
    if smoke:
        add("")
        add("(smoke run: debug binaries and tiny durations; these figures mean nothing)")
    return "\n".join(out)


def report_many_workers(m, smoke):
    """The many-workers section: targets, one row per N, and the plot."""
    out = []
    add = out.append
    load_before, load_after = m["load"]
    command = " ".join(["python3", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    add(f"Measured by `{command}`.")
    add("")
    add(f"Machine: {machine()}. Load average (1 min) {load_before:.2f} when the scenario began, {load_after:.2f} when it ended")
    add("(the machine's two cores are shared: other work running meanwhile shows in these figures).")
    add("")
    add("Every worker is `bench/worker_child.c`: READY=1 at once, WATCHDOG=1 every second when")
    add("WATCHDOG_USEC is set, exit 0 on SIGQUIT (or SIGUSR2, for einhorn). The floor is `bench/spawn_floor.c`, which forks and")
    add("execs the same child N times and reads its N datagrams, with no supervision at all; an")
    add("upgrade of the floor starts N new copies, waits for their N READY=1, then sends SIGQUIT to the")
    add("N old ones and reaps them. Both are compiled with `gcc -O2` at run time. sockvisor runs")
    add("`sockvisor run --listen 127.0.0.1:0 --workers N -- worker_child` and is upgraded once over the")
    add("control socket; \"ready\" is the new generation's \"is ready\" progress line, \"done\" the result,")
    add(f"sent once the old generation has exited. For each N the floor and sockvisor take {m['rounds']} turns")
    add("each (start, one upgrade, stop); the tables show medians, and the largest RSS and status time.")
    add("Start is timed from launching the program to its line saying all are ready; the rest from the")
    add("request written on the control socket (or the line written to the floor) to each answer.")
    add("")
    sizes = {r["workers"]: r for r in m["sizes"]}
    rest_n = m["rest_workers"]
    add("| target | measured | |")
    add("| --- | --- | --- |")
    for n in (512, 1024):
        if n not in sizes:
            continue
        r = sizes[n]
        ratio = r["start_s"] / r["floor_start_s"]
        add(f"| start → all ready ≤ 2 × floor, {n} workers | {r['start_s'] * 1000:.0f} ms, floor {r['floor_start_s'] * 1000:.0f} ms ({ratio:.2f} ×) | {check(ratio <= 2)} |")
        ratio = r["upgrade_done_s"] / r["floor_upgrade_done_s"]
        add(f"| all-at-once upgrade ≤ 2 × floor, {n} workers | {r['upgrade_done_s'] * 1000:.0f} ms, floor {r['floor_upgrade_done_s'] * 1000:.0f} ms ({ratio:.2f} ×) | {check(ratio <= 2)} |")
    top = sizes[max(sizes)]
    n = top["workers"]
    per_worker = top["upgrade_cpu_s"] / n * 1e6
    add(f"| sockvisor CPU ≤ 100 µs per worker per upgrade, {n} workers | {per_worker:.0f} µs ({top['upgrade_cpu_s'] * 1000:.0f} ms per upgrade) | {check(per_worker <= 100)} |")
    add(f"| stop ≤ 2 s, {n} workers | {top['stop_s'] * 1000:.0f} ms median, {top['stop_max_s'] * 1000:.0f} ms max | {check(top['stop_max_s'] <= 2)} |")
    add(f"| status answers within 50 ms, {n} workers | {top['status_max_s'] * 1000:.1f} ms max of {5 * m['rounds']} ({top['status_bytes']} bytes) | {check(top['status_max_s'] <= 0.05)} |")
    add(f"| RSS ≤ 8 MiB, {n} workers | {top['rss_kib']} KiB after the upgrade, peak {top['peak_rss_kib']} KiB | {check(top['peak_rss_kib'] <= 8192)} |")
    wd, idle = m["watchdog"], m["idle"]
    add(f"| watchdog pings cost < 2% of a core, {rest_n} workers (`--watchdog 5s`, WATCHDOG=1 every second) | {wd['cpu_share'] * 100:.2f} % over {wd['seconds']:.0f} s ({wd['wakeups']} wake-ups) | {check(wd['cpu_share'] < 0.02)} |")
    add(f"| no idle wake-ups, {rest_n} workers serving | {idle['wakeups']} in {idle['seconds']:.0f} s, {idle['cpu_share'] * 100:.3f} % CPU | {check(idle['wakeups'] == 0)} |")
    add("")
    add("| N | floor start | sockvisor start | floor upgrade ready / done | sockvisor upgrade ready / done | sockvisor CPU per upgrade (per worker) | status median / max, size | RSS after / peak | stop (floor) |")
    add("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in m["sizes"]:
        ms = lambda key: r[key] * 1000
        add(f"| {r['workers']} | {ms('floor_start_s'):.1f} ms | {ms('start_s'):.1f} ms | {ms('floor_upgrade_ready_s'):.1f} / {ms('floor_upgrade_done_s'):.1f} ms | {ms('upgrade_ready_s'):.1f} / {ms('upgrade_done_s'):.1f} ms | {ms('upgrade_cpu_s'):.1f} ms ({r['upgrade_cpu_s'] / r['workers'] * 1e6:.0f} µs) | {ms('status_s'):.2f} / {ms('status_max_s'):.2f} ms, {r['status_bytes']} B | {r['rss_kib']} / {r['peak_rss_kib']} KiB | {ms('stop_s'):.0f} ms ({ms('floor_stop_s'):.0f} ms) |")
    add("")
    add("### einhorn, side by side")
    add("")
    if not m.get("einhorn"):
        add("einhorn: not measured (pass --einhorn DIR)")
    else:
        add(f"einhorn {einhorn_version(m['einhorn'])}, run from its source as `ruby -I DIR/lib DIR/bin/einhorn")
        add("-b 127.0.0.1:0 -m manual -n N -d SOCKET -e PIDFILE -- worker_child` under")
        add(f"{ruby_version()}, with RUBYLIB=DIR/lib so that the master finds its code again when it")
        add("re-executes itself on an upgrade. Each worker acks on `EINHORN_SOCK_PATH` (`worker:ack`) instead")
        add("of READY=1 and exits 0 on SIGUSR2, einhorn's request to old workers. It took its turn after")
        add("sockvisor in each round. Start runs from launching einhorn to its log line \"Up to N / N manual")
        add("ACKs\". The upgrade is `upgrade_fleet` (all N new workers at once, like sockvisor's; einhorn's")
        add("`upgrade` and SIGHUP roll instead, one worker per second by default) written on einhorn's command")
        add("socket; \"all acked\" is its line \"Upgraded successfully\", sent once the N new workers have")
        add("acked, after which it sends SIGUSR2 to the N old ones; \"done\" is the N-th \"Exited worker\" line")
        add("after the request. CPU is the master's (the short-lived state-passing process it forks is not")
        add("counted); stop is SIGTERM to the master until it has exited.")
        add("")
        add("| N | einhorn start | sockvisor start | einhorn upgrade all acked / done | sockvisor upgrade ready / done | einhorn master CPU per upgrade (per worker) | sockvisor CPU per upgrade (per worker) | einhorn stop |")
        add("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in m["sizes"]:
            e, n = r["einhorn"], r["workers"]
            add(f"| {n} | {e['start_s'] * 1000:.1f} ms | {r['start_s'] * 1000:.1f} ms | {e['ready_s'] * 1000:.1f} / {e['done_s'] * 1000:.1f} ms | {r['upgrade_ready_s'] * 1000:.1f} / {r['upgrade_done_s'] * 1000:.1f} ms | {e['cpu_s'] * 1000:.1f} ms ({e['cpu_s'] / n * 1e6:.0f} µs) | {r['upgrade_cpu_s'] * 1000:.1f} ms ({r['upgrade_cpu_s'] / n * 1e6:.0f} µs) | {e['stop_s'] * 1000:.0f} ms |")
    if m.get("plot"):
        add("")
        add(f"![time against N, log-log: sockvisor, the fork/exec floor, einhorn and rolling upgrades]({m['plot']})")
    if smoke:
        add("")
        add("(smoke run: debug binaries and tiny sizes; these figures mean nothing)")
    return "\n".join(out)


def einhorn_version(einhorn_dir):
    try:
        with open(os.path.join(einhorn_dir, "lib", "einhorn", "version.rb")) as f:
            found = re.search(r"VERSION\s*=\s*['\"]([^'\"]+)", f.read())
            return found.group(1) if found else "(unknown version)"
    except OSError:
        return "(unknown version)"


def ruby_version():
    out = subprocess.run(["ruby", "--version"], capture_output=True, text=True).stdout.split()
    return " ".join(out[:2]) if out else "ruby"


def report_many_workers_rolling(m, smoke):
    """Rolling upgrades of many workers next to all-at-once ones."""
    out = []
    add = out.append
    load_before, load_after = m["load"]
    command = " ".join(["python3", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    add(f"Measured by `{command}`.")
    add("")
    add(f"Machine: {machine()}. Load average (1 min) {load_before:.2f} when the scenario began, {load_after:.2f} when it ended.")
    add("")
    add("The same C worker and the same `sockvisor run --listen 127.0.0.1:0 --workers N -- worker_child` as")
    add(f"above, upgraded once over the control socket, rolling with `--max-surge K` (K = {m['surge']}, capped at N)")
    add(f"and all at once, taking turns {m['rounds']} times per N; medians. Times run from the request")
    add("written on the control socket to the result, which comes once the last old worker has exited;")
    add("CPU is sockvisor's over the same span. The worker's start-up is either none (READY=1 at once)")
    add("or made known by `WORKER_START_MS` (it sleeps that long first). One worker's start-up through")
    add(f"sockvisor, t1, is measured in the same run for each: a 1-worker sockvisor upgraded {m['single_upgrades']} times, from")
    add("the request to its \"is ready\" line, median. The estimate is (N / K) × t1: N / K waves of K")
    add("workers, each one start-up long. The floor (`bench/spawn_floor.c`) does the same two upgrades with")
    add("no supervision: all at once (\"upgrade\") and rolling by the same rule (\"roll K\": at most N + K")
    add("processes, draining ones included; each READY=1 sends SIGQUIT to one old copy, each old copy")
    add("reaped starts one new one), in one `poll` on its datagram socket and a signalfd; its CPU is")
    add("measured the same way, over the same span.")
    add("")
    add("| target | measured | |")
    add("| --- | --- | --- |")
    for v in m["variants"]:
        top = max(v["sizes"], key=lambda r: r["workers"])
        n, k = top["workers"], top["surge"]
        what = f"{v['start_ms']} ms start-ups" if v["start_ms"] else "workers ready at once"
        if v["start_ms"]:
            ratio = top["rolling_done_s"] / (n / k * v["single_ready_s"])
            add(f"| rolling time ≈ (N / K) × t1 (within 10 %), {n} workers, K = {k}, {what} | {top['rolling_done_s'] * 1000:.0f} ms, {ratio:.2f} × the estimate | {check(ratio <= 1.1)} |")
        rolling, at_once = top["rolling_cpu_s"] / n * 1e6, top["at_once_cpu_s"] / n * 1e6
        floor_rolling, floor_at_once = top["floor_rolling_cpu_s"] / n * 1e6, top["floor_at_once_cpu_s"] / n * 1e6
        add(f"| sockvisor CPU per worker rolling ≤ all at once, {n} workers, {what} | {rolling:.0f} against {at_once:.0f} µs ({rolling / at_once:.2f} ×); the floor: {floor_rolling:.0f} against {floor_at_once:.0f} µs ({floor_rolling / floor_at_once:.2f} ×) | {check(rolling <= at_once)} |")
    for v in m["variants"]:
        t1 = v["single_ready_s"]
        what = f"{v['start_ms']} ms start-up (`WORKER_START_MS={v['start_ms']}`)" if v["start_ms"] else "no start-up (READY=1 at once)"
        add("")
        add(f"Worker with {what}: t1 = {t1 * 1000:.2f} ms (request → result, once the old worker has exited: {v['single_done_s'] * 1000:.2f} ms).")
        add("")
        add("| N | K | rolling (max) | estimate (N / K) × t1 | rolling / estimate | all at once | rolling / all at once | floor rolling / all at once | CPU per worker, rolling / all at once | floor's CPU per worker, rolling / all at once |")
        add("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in v["sizes"]:
            n, k = r["workers"], r["surge"]
            estimate = n / k * t1
            add(f"| {n} | {k} | {r['rolling_done_s'] * 1000:.1f} ms ({r['rolling_max_s'] * 1000:.1f} ms) | {estimate * 1000:.1f} ms | {r['rolling_done_s'] / estimate:.2f} × | {r['at_once_done_s'] * 1000:.1f} ms | {r['rolling_done_s'] / r['at_once_done_s']:.2f} × | {r['floor_rolling_done_s'] * 1000:.1f} / {r['floor_at_once_done_s'] * 1000:.1f} ms | {r['rolling_cpu_s'] / n * 1e6:.0f} / {r['at_once_cpu_s'] / n * 1e6:.0f} µs | {r['floor_rolling_cpu_s'] / n * 1e6:.0f} / {r['floor_at_once_cpu_s'] / n * 1e6:.0f} µs |")
    if "spread_work" in m:
        w = m["spread_work"]
        add("")
        add(f"The machine's own price for spreading work out, in the same run (`bench/spread_work.c`, {m['rounds']} turns")
        add("each, medians): one fixed piece of work (256 KiB read and written, 20 system calls), timed in")
        add(f"the thread's CPU time, cost {w['together_us']:.1f} µs done back to back and {w['alone_us']:.1f} µs done alone, woken")
        add(f"every {w['gap_us'] / 1000:g} ms with the CPU idle in between: {w['alone_us'] / w['together_us']:.1f} ×. An all-at-once upgrade does every")
        add("worker's share of sockvisor's work in one burst; a rolling upgrade of workers that take 100 ms")
        add("to start does each share alone, as each new worker becomes ready.")
    if smoke:
        add("")
        add("(smoke run: debug binaries and tiny sizes; these figures mean nothing)")
    return "\n".join(out)


def write_section(path, heading, text):
    """Replaces the section `## heading` of the report at `path` (up to the
    next `## `), keeping everything else; appends it when it is missing."""
    old = ""
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
    start = old.find(f"## {heading}\n")
    if start == -1:
        new = (old.rstrip("\n") + "\n\n" if old else "") + f"## {heading}\n\n{text}\n"
    else:
        after = old.find("\n## ", start + 1)
        tail = old[after + 1:] if after != -1 else ""
        new = f"{old[:start]}## {heading}\n\n{text}\n" + (f"\n{tail}" if tail else "")
    with open(path, "w") as f:
        f.write(new)


SCENARIOS = (("data_path", scenario_data_path), ("upgrades", scenario_upgrades),
             ("slow_start", scenario_slow_start), ("timing", scenario_timing),
             ("footprint", scenario_footprint), ("scale", scenario_scale),
             ("workers", scenario_workers), ("reexec", scenario_reexec),
             ("many_workers", scenario_many_workers),
             ("many_workers_rolling", scenario_many_workers_rolling))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="run every scenario briefly (CI)")
    parser.add_argument("--write", metavar="PATH", help="write the Markdown report here")
    parser.add_argument("--only", metavar="NAMES",
                        help="comma-separated scenarios to run: " + ", ".join(n for n, _ in SCENARIOS))
    parser.add_argument("--sizes", metavar="N,...",
                        help="worker counts for the many-workers scenarios (default 16,64,256,512,1024; "
                             "rolling: 16,64,256,1024)")
    parser.add_argument("--sockvisor", metavar="PATH",
                        help="measure this sockvisor binary instead of the one built (e.g. an older "
                             "build, to compare); its report is printed, not written")
    parser.add_argument("--einhorn", metavar="DIR",
                        help="also measure einhorn in the many-workers scenario, run from a checkout "
                             "of its source in DIR (as `ruby -I DIR/lib DIR/bin/einhorn`)")
    args = parser.parse_args()
    names = [n for n, _ in SCENARIOS]
    chosen = args.only.split(",") if args.only else names
    unknown = [n for n in chosen if n not in names]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)} (choose from {', '.join(names)})")
    if args.smoke:
        scale = dict(rounds=1, seconds=0.3, upgrades=2, pause=0.1, slow_ms=300, timing_upgrades=3,
                     idle_seconds=0.5, sockets=20, leak_upgrades=3,
                     worker_start_ms=50, worker_seconds=2.5, worker_steady=0.4, worker_upgrades=2,
                     reexec_timing=3, reexec_under_load=3, reexec_load_seconds=1.5, reexec_pause=0.1,
                     many_sizes=[4, 16], many_rounds=1, many_rest_seconds=0.5,
                     rolling_sizes=[4, 16], rolling_surge=32, many_single=3,
                     rolling_start_ms=[0, 20])
    else:
        scale = dict(rounds=2, seconds=5, upgrades=10, pause=0.3, slow_ms=1500, timing_upgrades=21,
                     idle_seconds=10, sockets=1000, leak_upgrades=100,
                     worker_start_ms=300, worker_seconds=11, worker_steady=1.2, worker_upgrades=3,
                     reexec_timing=21, reexec_under_load=20, reexec_load_seconds=8, reexec_pause=0.3,
                     many_sizes=[16, 64, 256, 512, 1024], many_rounds=3, many_rest_seconds=10,
                     rolling_sizes=[16, 64, 256, 1024], rolling_surge=32, many_single=11,
                     rolling_start_ms=[0, 100])
    if args.sizes:
        scale["many_sizes"] = scale["rolling_sizes"] = [int(n) for n in args.sizes.split(",")]
    if args.einhorn:
        scale["einhorn"] = os.path.abspath(args.einhorn)
    if args.sockvisor and args.write:
        parser.error("--sockvisor measures another binary: its figures are not written")
    bins = build("debug" if args.smoke else "release")
    if args.sockvisor:
        bins["sockvisor"] = os.path.abspath(args.sockvisor)
    results = {}
    try:
        for name, scenario in SCENARIOS:
            if name not in chosen:
                continue
            print(f"running {name} …", file=sys.stderr, flush=True)
            load_before = os.getloadavg()[0]
            results[name] = scenario(bins, scale)
            if name.startswith("many_workers"):
                results[name]["load"] = (load_before, os.getloadavg()[0])
    finally:
        stop_all()
    sections = []
    if all(n in results for n in names if not n.startswith("many_workers")):
        sections.append(("Results", report(results, args.smoke)))
    if "many_workers" in results:
        m = results["many_workers"]
        if args.write and not args.smoke:
            plot = os.path.join(os.path.dirname(os.path.abspath(args.write)), "many_workers.svg")
            if plot_many_workers(m, plot, results.get("many_workers_rolling")):
                m["plot"] = os.path.basename(plot)
            else:
                print("matplotlib is not installed: no plot drawn (pip install matplotlib)",
                      file=sys.stderr)
        sections.append(("Many workers", report_many_workers(m, args.smoke)))
    if "many_workers_rolling" in results:
        sections.append(("Many workers, rolling", report_many_workers_rolling(
            results["many_workers_rolling"], args.smoke)))
    for heading, text in sections:
        print(f"## {heading}\n\n{text}\n")
        if args.write:
            write_section(args.write, heading, text)
    if args.smoke:
        problems = []
        if "upgrades" in results:
            if results["upgrades"]["sockvisor"]["failed"]:
                problems.append("requests failed during upgrades")
            if results["upgrades"]["upgrades_ok"] != results["upgrades"]["upgrades"]:
                problems.append("an upgrade failed")
        if "reexec" in results and (results["reexec"]["failed"] or results["reexec"]["reexecs_failed"]):
            problems.append("requests or re-execs failed during re-execs")
        for name, mode in results.get("workers", {}).get("modes", {}).items():
            if mode["failed"] or not mode["upgrade_ok"]:
                problems.append(f"4-worker upgrade {name}: {mode['failed']} failed requests")
        if problems:
            sys.exit("bench smoke: " + "; ".join(problems))


if __name__ == "__main__":
    main()
