#!/usr/bin/env python3
"""A server written for Server::Starter, unchanged: it finds its socket in
SERVER_STARTER_PORT ("address=fd;..."). Server::Starter has no readiness
message, so tell sockvisor to wait a little, as start_server's --interval
does:

    sockvisor run --fd-env server-starter --ready delay=1s --listen 127.0.0.1:8080 -- python3 examples/compat/server_starter_worker.py
"""

import http.server
import os
import signal
import socket


def inherited_socket():
    first = os.environ["SERVER_STARTER_PORT"].split(";")[0]
    address, fd = first.rsplit("=", 1)
    family = socket.AF_UNIX if address.startswith("/") else (
        socket.AF_INET6 if address.startswith("[") else socket.AF_INET)
    return socket.socket(family, socket.SOCK_STREAM, fileno=int(fd))


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from pid {os.getpid()} (generation {os.environ['SERVER_STARTER_GENERATION']})\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


def main():
    sock = inherited_socket()
    # Shared with other generations: accept() must not block (EAGAIN is
    # skipped), and the drain handler only sets a flag.
    sock.settimeout(None)
    os.set_blocking(sock.fileno(), False)
    server = http.server.ThreadingHTTPServer(sock.getsockname(), Handler, bind_and_activate=False)
    server.socket = sock
    server.daemon_threads = False
    server.timeout = 0.05
    draining = []
    signal.signal(signal.SIGQUIT, lambda *_: draining.append(True))
    signal.signal(signal.SIGTERM, lambda *_: draining.append(True))
    while not draining:
        server.handle_request()
    server.server_close()


if __name__ == "__main__":
    main()
