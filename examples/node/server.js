#!/usr/bin/env node
// A zero-downtime HTTP server for sockvisor, with no dependencies.
//
// It takes its listening socket from sockvisor (systemd's LISTEN_FDS
// protocol: fd 3, valid only when LISTEN_PID is our pid), reports READY=1,
// and on SIGQUIT or SIGTERM stops accepting, finishes the requests in
// flight, and exits 0.
//
//   sockvisor run --listen 127.0.0.1:8080 -- node examples/node/server.js
//
// Node's core has no unix datagram sockets, so READY=1 is sent with
// systemd-notify (Debian package systemd). Without it, run sockvisor with
// --ready delay=1s or --ready exec=... instead.
"use strict";

const http = require("http");
const { execFileSync } = require("child_process");

const SD_LISTEN_FDS_START = 3;

function inheritedFd() {
  if (process.env.LISTEN_PID !== String(process.pid)) return null;
  if (Number(process.env.LISTEN_FDS || 0) < 1) return null;
  return SD_LISTEN_FDS_START;
}

function notifyReady() {
  if (!process.env.NOTIFY_SOCKET) return;
  execFileSync("systemd-notify", ["--ready"], { stdio: "ignore" });
}

const fd = inheritedFd();
if (fd === null) {
  console.error("server.js: no socket from LISTEN_FDS; run it under sockvisor");
  process.exit(1);
}

const server = http.createServer((request, response) => {
  const body = `hello from pid ${process.pid}\n`;
  response.writeHead(200, {
    "Content-Type": "text/plain",
    "Content-Length": Buffer.byteLength(body),
  });
  response.end(body);
});

function drain() {
  // Stop accepting; in-flight requests finish, idle keep-alive
  // connections are closed, then the process exits.
  server.close(() => process.exit(0));
  server.closeIdleConnections();
}

process.on("SIGQUIT", drain);
process.on("SIGTERM", drain);
server.listen({ fd }, notifyReady);
