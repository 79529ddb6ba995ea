#!/bin/sh
# A server that cannot send READY=1: the legacy case. Any program that
# accepts an inherited socket works; this one is the stdlib Python example
# with notification switched off, standing in for a server you cannot change.
#
# Tell sockvisor how to judge readiness instead:
#
#   sockvisor run --ready delay=1s --listen 127.0.0.1:8080 -- sh examples/shell/server.sh
#
# or probe something only the new process serves (never the shared port,
# which the old generation also answers):
#
#   sockvisor run --ready 'exec=kill -0 $SOCKVISOR_READY_PID' ...
#
# `exec` matters: without it the shell forks, the server's pid differs from
# LISTEN_PID, and the server must reject the socket.
unset NOTIFY_SOCKET
exec python3 "$(dirname "$0")/../python/server.py"
