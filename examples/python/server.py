#!/usr/bin/env python3
"""A zero-downtime HTTP server for sockvisor, standard library only.

It takes its listening socket from sockvisor (systemd's LISTEN_FDS protocol:
fd 3, valid only when LISTEN_PID is our own pid), tells sockvisor it is ready
(READY=1 on NOTIFY_SOCKET, when set), and on SIGQUIT or SIGTERM stops
accepting, finishes the requests in flight, and exits 0.

    sockvisor run --listen 127.0.0.1:8080 -- python3 examples/python/server.py
"""

import http.server
import os
import signal
import socket
import sys

SD_LISTEN_FDS_START = 3


def inherited_socket():
    """The first socket passed by sockvisor, or None when run on its own."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    if int(os.environ.get("LISTEN_FDS", "0")) < 1:
        return None
    return socket.socket(fileno=SD_LISTEN_FDS_START)


def notify(message):
    """Sends one sd_notify datagram if a notify socket was given."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(path)
        sock.sendall(message.encode())


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from pid {os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    # Requests in flight are joined by server_close(): that is the drain.
    daemon_threads = False
    block_on_close = True
    # handle_request() waits at most this long, so a drain is noticed promptly.
    timeout = 0.1
    draining = False


def share_listener(sock):
    """Makes accept() on the inherited socket safe to share.

    Every generation accepts from the same socket, so a connection select()
    reported may be taken by another process first; a blocking accept() would
    then hang until the next connection, even after SIGQUIT. The descriptor is
    made non-blocking at the OS level (accept() then fails with EAGAIN and
    socketserver skips that wake-up) while Python keeps treating the socket as
    blocking, so handle_request() still waits in select() instead of spinning.
    """
    sock.settimeout(None)
    os.set_blocking(sock.fileno(), False)


def main():
    sock = inherited_socket()
    if sock is None:
        sys.exit("server.py: no socket from LISTEN_FDS; run it under sockvisor")
    share_listener(sock)
    server = Server(sock.getsockname(), Handler, bind_and_activate=False)
    server.socket = sock

    def drain(signum, frame):
        # Only set a flag: a signal handler that takes locks (starting a
        # thread, server.shutdown()) can deadlock against the code it interrupted.
        server.draining = True

    signal.signal(signal.SIGQUIT, drain)
    signal.signal(signal.SIGTERM, drain)
    notify("READY=1")
    while not server.draining:
        server.handle_request()
    server.server_close()


if __name__ == "__main__":
    main()
