# An application image with sockvisor as its ENTRYPOINT (PID 1): it binds
# the port, runs the server, reaps zombies, and upgrades without dropping a
# connection.
#
#   docker build -f packaging/docker/Dockerfile -t sockvisor .
#   docker build -f packaging/docker/app.Dockerfile -t myapp .
#   docker run -d --name myapp -p 8080:8080 myapp
#   docker exec myapp sockvisor upgrade      # new generation, old one drains
#   docker stop myapp                        # graceful: SIGTERM → stop signal → exit 0
FROM sockvisor AS sockvisor

FROM python:3-slim
COPY --from=sockvisor /sockvisor /usr/local/bin/sockvisor
COPY examples/python/server.py /app/server.py
# docker stop sends STOPSIGNAL (default SIGTERM) to PID 1, waits its
# timeout (10 s by default; --time to change), then SIGKILL. Keep
# sockvisor's --stop-timeout below it.
STOPSIGNAL SIGTERM
# sockvisor binds as root; the server runs as nobody.
ENTRYPOINT ["sockvisor", "run", "--stop-timeout", "8s", "--listen", "0.0.0.0:8080", "--user", "nobody", "--"]
CMD ["python3", "/app/server.py"]
