# An application image with sockvisor as its ENTRYPOINT (PID 1): it binds
# the port, runs the server, reaps zombies, and upgrades without dropping a
# connection.
#
#   docker build -f packaging/docker/Dockerfile -t sockvisor .
#   docker build -f packaging/docker/app.Dockerfile -t myapp .
#   docker run -d --name myapp -p 8080:8080 myapp
#   docker exec myapp sockvisor upgrade      # new generation, old one drains
#   docker stop myapp                        # graceful: SIGTERM → stop signal → exit 0
#
# Both images it starts from are build arguments, so it also builds from
# local images without a registry: BASE needs python3 (and a user nobody),
# SOCKVISOR needs the static binary at /sockvisor:
#
#   docker build -f packaging/docker/app.Dockerfile \
#       --build-arg BASE=my-python --build-arg SOCKVISOR=my-sockvisor -t myapp .
#
# A shell in this image: `docker run -it myapp sh` would run sh as the
# server, and sockvisor would wait for a READY=1 that a shell never sends.
# Run sockvisor as a plain init instead (no --listen: ready at once):
#
#   docker run -it --entrypoint sockvisor myapp run -- sh
ARG BASE=python:3-slim
ARG SOCKVISOR=sockvisor
FROM ${SOCKVISOR} AS sockvisor

FROM ${BASE}
COPY --from=sockvisor /sockvisor /usr/local/bin/sockvisor
COPY examples/python/server.py /app/server.py
# docker stop sends STOPSIGNAL (default SIGTERM) to PID 1, waits its
# timeout (10 s by default; --time to change), then SIGKILL. Keep
# sockvisor's --stop-timeout below it.
STOPSIGNAL SIGTERM
# sockvisor binds as root; the server runs as nobody.
ENTRYPOINT ["sockvisor", "run", "--stop-timeout", "8s", "--listen", "0.0.0.0:8080", "--user", "nobody", "--"]
CMD ["python3", "/app/server.py"]
