#!/usr/bin/env python3
"""A server written for einhorn, unchanged: it reads its socket the way
einhorn's client library does and acknowledges startup with worker:ack,
byte for byte as einhorn's Ruby client (Einhorn::Worker.ack!) writes it.

    sockvisor run --fd-env einhorn --listen 127.0.0.1:8080 -- python3 examples/compat/einhorn_worker.py

sockvisor counts the ack as READY=1 (with the default --ready notify).
"""

import http.server
import os
import signal
import socket


def is_worker():
    return os.getppid() == int(os.environ.get("EINHORN_MASTER_PID", -1))


def get_socket(index=0):
    fileno = int(os.environ[f"EINHORN_FD_{index}"])
    family = getattr(socket, os.environ.get(f"EINHORN_FD_FAMILY_{index}", "AF_INET"))
    return socket.socket(family, socket.SOCK_STREAM, fileno=fileno)


def ack_startup():
    # einhorn's transport: the message as a YAML document (what Ruby's
    # YAML.dump writes for it), with "%" and newlines percent-escaped onto
    # one line.
    document = "---\ncommand: worker:ack\npid: %d\n" % os.getpid()
    line = document.replace("%", "%25").replace("\n", "%0A") + "\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as control:
        control.connect(os.environ["EINHORN_SOCK_PATH"])
        control.sendall(line.encode())


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from pid {os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


def main():
    assert is_worker(), "not started by an einhorn-compatible master"
    sock = get_socket(0)
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
    ack_startup()
    while not draining:
        server.handle_request()
    server.server_close()


if __name__ == "__main__":
    main()
