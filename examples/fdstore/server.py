#!/usr/bin/python3
"""A server that keeps state across generations in sockvisor's fd store.

Generation 1 writes its state into a memfd and hands it to sockvisor with
FDSTORE=1 and FDNAME=state (as it would to systemd with
FileDescriptorStoreMax=); every later generation finds it among its
inherited descriptors, read with libsystemd's own sd_listen_fds_with_names
(Debian's python3-systemd), and reports what it found in REPORT_DIR.

    sockvisor run --fdstore-max 4 --listen 127.0.0.1:0,name=http -- /usr/bin/python3 examples/fdstore/server.py DIR
"""

import array
import json
import os
import signal
import socket
import sys

from systemd import daemon


def store(fd, name):
    """sd_pid_notify_with_fds(0, 0, "FDSTORE=1\\nFDNAME=name", [fd])."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        message = f"FDSTORE=1\nFDNAME={name}".encode()
        fds = array.array("i", [fd])
        s.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)],
                  0, os.environ["NOTIFY_SOCKET"])


def main():
    report_dir = sys.argv[1]
    generation = os.environ["SOCKVISOR_GENERATION"]
    names = daemon.listen_fds_with_names()  # {fd: name}
    found = {}
    for fd, name in names.items():
        if name == "state":
            os.lseek(fd, 0, os.SEEK_SET)
            found[name] = os.read(fd, 4096).decode()
    if generation == "1":
        memfd = os.memfd_create("state")
        os.write(memfd, b"written by generation 1")
        store(memfd, "state")
        os.close(memfd)
    report = {"names": sorted(names.values()), "found": found, "fds": sorted(names)}
    path = os.path.join(report_dir, f"fdstore-{generation}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(report, f)
    os.rename(path + ".tmp", path)
    daemon.notify("READY=1")
    signal.sigwait([signal.SIGQUIT, signal.SIGTERM])


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGQUIT, signal.SIGTERM])
    main()
