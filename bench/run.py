#!/usr/bin/env python3
"""sockvisor's benchmark suite: one command runs every scenario.

    python3 bench/run.py [--smoke] [--write docs/BENCHMARKS.md]

It builds the release binaries (sockvisor, the probe server, the load
generator), runs each scenario with its comparison side by side, prints the
results as Markdown, checks them against the targets, and with --write
stores the report. --smoke runs every scenario for a moment with debug
binaries, to prove the instruments work (used by CI); its figures mean
nothing. All traffic goes to 127.0.0.1. Every process it starts is stopped
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
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STARTED = []  # every Popen, killed at exit


def build(profile):
    args = ["cargo", "build", "--quiet", "--bins", "--examples"]
    if profile == "release":
        args.append("--release")
    subprocess.run(args, cwd=ROOT, check=True)
    target = os.path.join(ROOT, "target", profile)
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


def write_results(path, text):
    """Replaces the "## Results" section of the report at `path`, keeping
    the prose before and after it; writes just the results to a new file."""
    head, tail = "", ""
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
        at = old.find("## Results\n")
        if at != -1:
            head = old[:at]
            after = old.find("\n## ", at + 1)
            tail = old[after + 1:] if after != -1 else ""
    with open(path, "w") as f:
        f.write(f"{head}## Results\n\n{text}\n" + (f"\n{tail}" if tail else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="run every scenario briefly (CI)")
    parser.add_argument("--write", metavar="PATH", help="write the Markdown report here")
    args = parser.parse_args()
    if args.smoke:
        scale = dict(rounds=1, seconds=0.3, upgrades=2, pause=0.1, slow_ms=300, timing_upgrades=3,
                     idle_seconds=0.5, sockets=20, leak_upgrades=3,
                     worker_start_ms=50, worker_seconds=2.5, worker_steady=0.4, worker_upgrades=2,
                     reexec_timing=3, reexec_under_load=3, reexec_load_seconds=1.5, reexec_pause=0.1)
    else:
        scale = dict(rounds=2, seconds=5, upgrades=10, pause=0.3, slow_ms=1500, timing_upgrades=21,
                     idle_seconds=10, sockets=1000, leak_upgrades=100,
                     worker_start_ms=300, worker_seconds=11, worker_steady=1.2, worker_upgrades=3,
                     reexec_timing=21, reexec_under_load=20, reexec_load_seconds=8, reexec_pause=0.3)
    bins = build("debug" if args.smoke else "release")
    results = {}
    try:
        for name, scenario in (("data_path", scenario_data_path), ("upgrades", scenario_upgrades),
                               ("slow_start", scenario_slow_start), ("timing", scenario_timing),
                               ("footprint", scenario_footprint), ("scale", scenario_scale),
                               ("workers", scenario_workers), ("reexec", scenario_reexec)):
            print(f"running {name} …", file=sys.stderr, flush=True)
            results[name] = scenario(bins, scale)
    finally:
        stop_all()
    text = report(results, args.smoke)
    print(text)
    if args.write:
        write_results(args.write, text)
    if args.smoke:
        problems = []
        if results["upgrades"]["sockvisor"]["failed"]:
            problems.append("requests failed during upgrades")
        if results["upgrades"]["upgrades_ok"] != results["upgrades"]["upgrades"]:
            problems.append("an upgrade failed")
        if results["reexec"]["failed"] or results["reexec"]["reexecs_failed"]:
            problems.append("requests or re-execs failed during re-execs")
        for name, mode in results["workers"]["modes"].items():
            if mode["failed"] or not mode["upgrade_ok"]:
                problems.append(f"4-worker upgrade {name}: {mode['failed']} failed requests")
        if problems:
            sys.exit("bench smoke: " + "; ".join(problems))


if __name__ == "__main__":
    main()
