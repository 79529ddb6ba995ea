/* The fork/exec floor of the many-workers benchmark: what starting N
 * processes and hearing READY=1 from each costs with no supervisor logic
 * at all, measured on the same machine in the same run as sockvisor.
 *
 *     spawn_floor N CHILD
 *
 * It binds a datagram socket, starts N copies of CHILD (fork, then execve
 * with NOTIFY_SOCKET naming that socket) and reads datagrams until N have
 * arrived, then prints "ready". On each line "upgrade" read from stdin it
 * does what an all-at-once upgrade does: starts N new copies, prints
 * "upgrade ready" once their N datagrams are in, sends SIGQUIT to the N old
 * ones, reaps them, and prints "upgrade done". On "stop" (or end of input)
 * it sends SIGQUIT to the running copies, reaps them, prints "stopped" and
 * exits. Times are taken by whoever reads its output.
 *
 *     gcc -O2 -o spawn_floor bench/spawn_floor.c
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static void fail(const char *what) {
    perror(what);
    exit(1);
}

static void start(int count, pid_t *pids, const char *child, char **env) {
    char *argv[] = {(char *)child, NULL};
    for (int i = 0; i < count; i++) {
        pid_t pid = fork();
        if (pid < 0) fail("fork");
        if (pid == 0) {
            execve(child, argv, env);
            _exit(127);
        }
        pids[i] = pid;
    }
}

static void await_ready(int fd, int count) {
    char buffer[4096];
    for (int heard = 0; heard < count;) {
        ssize_t n = recv(fd, buffer, sizeof buffer - 1, 0);
        if (n < 0) fail("recv");
        buffer[n] = '\0';
        if (strstr(buffer, "READY=1") != NULL) heard++;
    }
}

static void stop(int count, const pid_t *pids) {
    for (int i = 0; i < count; i++) kill(pids[i], SIGQUIT);
    for (int i = 0; i < count; i++) waitpid(pids[i], NULL, 0);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: spawn_floor N CHILD\n");
        return 2;
    }
    int count = atoi(argv[1]);
    const char *child = argv[2];
    if (count <= 0) return 2;

    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    char path[64];
    snprintf(path, sizeof path, "/tmp/spawn-floor-%d.sock", (int)getpid());
    memcpy(addr.sun_path, path, strlen(path) + 1);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) fail("bind");
    int size = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);

    char variable[sizeof path + 16];
    snprintf(variable, sizeof variable, "NOTIFY_SOCKET=%s", path);
    char *env[] = {variable, NULL};
    pid_t *running = calloc((size_t)count, sizeof(pid_t));
    pid_t *next = calloc((size_t)count, sizeof(pid_t));
    if (running == NULL || next == NULL) fail("calloc");
    setvbuf(stdout, NULL, _IOLBF, 0);

    start(count, running, child, env);
    await_ready(fd, count);
    printf("ready\n");

    char line[64];
    while (fgets(line, sizeof line, stdin) != NULL && strncmp(line, "upgrade", 7) == 0) {
        start(count, next, child, env);
        await_ready(fd, count);
        printf("upgrade ready\n");
        stop(count, running);
        printf("upgrade done\n");
        pid_t *swap = running;
        running = next;
        next = swap;
    }
    stop(count, running);
    unlink(path);
    printf("stopped\n");
    return 0;
}
