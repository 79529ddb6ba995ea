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
 * ones, reaps them, and prints "upgrade done". On "roll K" it does what a
 * rolling upgrade with a surge of K does, by the rule sockvisor and einhorn
 * share (at most N + K processes, draining ones included): it starts K new
 * copies; each READY=1 that arrives sends SIGQUIT to one old copy, and each
 * old copy reaped makes room for one more new one, until N new copies are
 * ready and the N old ones are reaped; then it prints "roll done". It
 * waits for both in one poll(2), on the datagram socket and a signalfd for
 * SIGCHLD, and needs no lookup: during the roll, only new copies speak and
 * only old ones exit. On "stop" (or end of input)
 * it sends SIGQUIT to the running copies, reaps them, prints "stopped" and
 * exits. Times are taken by whoever reads its output.
 *
 *     gcc -O2 -o spawn_floor bench/spawn_floor.c
 */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
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
            sigset_t none;
            sigemptyset(&none);
            sigprocmask(SIG_SETMASK, &none, NULL);
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

/* Every READY=1 waiting on `fd`, without blocking. */
static int take_ready(int fd) {
    char buffer[4096];
    int heard = 0;
    for (;;) {
        ssize_t n = recv(fd, buffer, sizeof buffer - 1, MSG_DONTWAIT);
        if (n < 0) return heard;
        buffer[n] = '\0';
        if (strstr(buffer, "READY=1") != NULL) heard++;
    }
}

static void roll(int fd, int exits, int count, int surge, const pid_t *running, pid_t *next,
                 const char *child, char **env) {
    int started = surge < count ? surge : count;
    start(started, next, child, env);
    int ready = 0, retired = 0, reaped = 0;
    struct pollfd watched[] = {{.fd = fd, .events = POLLIN}, {.fd = exits, .events = POLLIN}};
    while (ready < count || reaped < count) {
        if (poll(watched, 2, -1) < 0) fail("poll");
        if (watched[0].revents & POLLIN) {
            for (int heard = take_ready(fd); heard > 0; heard--, ready++) {
                if (retired < count) kill(running[retired++], SIGQUIT);
            }
        }
        if (watched[1].revents & POLLIN) {
            struct signalfd_siginfo info;
            while (read(exits, &info, sizeof info) == sizeof info) {}
            while (waitpid(-1, NULL, WNOHANG) > 0) {
                reaped++;
                if (started < count) {
                    start(1, next + started, child, env);
                    started++;
                }
            }
        }
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
    /* The worker's start-up, when the benchmark sets one. */
    char start_ms[64] = "";
    const char *given = getenv("WORKER_START_MS");
    if (given != NULL) snprintf(start_ms, sizeof start_ms, "WORKER_START_MS=%s", given);
    char *env[] = {variable, start_ms[0] ? start_ms : NULL, NULL};
    pid_t *running = calloc((size_t)count, sizeof(pid_t));
    pid_t *next = calloc((size_t)count, sizeof(pid_t));
    if (running == NULL || next == NULL) fail("calloc");
    setvbuf(stdout, NULL, _IOLBF, 0);

    start(count, running, child, env);
    await_ready(fd, count);
    printf("ready\n");

    /* SIGCHLD is taken from a signalfd during a roll; blocked, it still
     * leaves zombies for waitpid as before. */
    sigset_t child_exits;
    sigemptyset(&child_exits);
    sigaddset(&child_exits, SIGCHLD);
    sigprocmask(SIG_BLOCK, &child_exits, NULL);
    int exits = signalfd(-1, &child_exits, SFD_NONBLOCK | SFD_CLOEXEC);
    if (exits < 0) fail("signalfd");

    char line[64];
    while (fgets(line, sizeof line, stdin) != NULL) {
        if (strncmp(line, "upgrade", 7) == 0) {
            start(count, next, child, env);
            await_ready(fd, count);
            printf("upgrade ready\n");
            stop(count, running);
            printf("upgrade done\n");
        } else if (strncmp(line, "roll ", 5) == 0 && atoi(line + 5) > 0) {
            roll(fd, exits, count, atoi(line + 5), running, next, child, env);
            printf("roll done\n");
        } else {
            break;
        }
        pid_t *swap = running;
        running = next;
        next = swap;
    }
    stop(count, running);
    unlink(path);
    printf("stopped\n");
    return 0;
}
