/* The smallest worker the many-workers benchmark can run: it speaks the
 * protocol and nothing else.
 *
 * It sends READY=1 to $NOTIFY_SOCKET as soon as it runs; when
 * $WATCHDOG_USEC is set, it sends WATCHDOG=1 every second; on SIGQUIT,
 * SIGTERM or SIGINT it exits 0. Both sockvisor and the fork/exec floor
 * (spawn_floor.c) run this same program, so the difference between them
 * is the supervisor's own cost.
 *
 * With $WORKER_START_MS set it first sleeps that many milliseconds, a
 * start-up of known length (the rolling-upgrade benchmark uses it).
 *
 * Under einhorn ($EINHORN_SOCK_PATH set, einhorn run with `-m manual`) it
 * acks instead: it connects to that command socket and writes einhorn's
 * `worker:ack` request, one line of YAML with its newlines escaped as %0A,
 * as einhorn's own client does. It also exits 0 on SIGUSR2, the signal
 * einhorn sends old workers to ask them to finish.
 *
 *     gcc -O2 -o worker_child bench/worker_child.c
 */
#include <signal.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int notify_fd = -1;
static struct sockaddr_un notify_addr;
static socklen_t notify_len;

static void notify_open(void) {
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL) return;
    size_t length = strlen(path);
    if (length == 0 || length >= sizeof notify_addr.sun_path) return;
    notify_addr.sun_family = AF_UNIX;
    memcpy(notify_addr.sun_path, path, length);
    if (path[0] == '@') notify_addr.sun_path[0] = '\0'; /* abstract */
    notify_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + length);
    notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
}

static void notify(const char *message) {
    if (notify_fd < 0) return;
    sendto(notify_fd, message, strlen(message), MSG_NOSIGNAL,
           (struct sockaddr *)&notify_addr, notify_len);
}

/* einhorn's manual ack: `{command: worker:ack, pid: PID}` serialized the way
 * its client serializes messages (YAML, "%" and newlines percent-escaped,
 * one line), on a stream connection to its command socket. */
static void einhorn_ack(const char *path) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t length = strlen(path);
    if (length >= sizeof addr.sun_path) return;
    memcpy(addr.sun_path, path, length + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) {
        char line[96];
        int n = snprintf(line, sizeof line, "---%%0Acommand: worker:ack%%0Apid: %d%%0A\n",
                         (int)getpid());
        for (int sent = 0; sent < n;) {
            ssize_t wrote = send(fd, line + sent, (size_t)(n - sent), MSG_NOSIGNAL);
            if (wrote <= 0) break;
            sent += (int)wrote;
        }
    }
    close(fd);
}

int main(void) {
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGQUIT);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGUSR2);
    /* Blocked before READY=1, so a stop that follows at once is seen. */
    sigprocmask(SIG_BLOCK, &stop, NULL);
    const char *start_ms = getenv("WORKER_START_MS");
    if (start_ms != NULL) {
        long ms = atol(start_ms);
        struct timespec startup = {ms / 1000, (ms % 1000) * 1000000L};
        while (nanosleep(&startup, &startup) != 0) {}
    }
    const char *einhorn = getenv("EINHORN_SOCK_PATH");
    if (einhorn != NULL) {
        einhorn_ack(einhorn);
    } else {
        notify_open();
        notify("READY=1");
    }
    int watchdog = getenv("WATCHDOG_USEC") != NULL;
    const struct timespec every = {1, 0};
    for (;;) {
        if (watchdog) {
            if (sigtimedwait(&stop, NULL, &every) > 0) return 0;
            notify("WATCHDOG=1");
        } else {
            int signal_number;
            if (sigwait(&stop, &signal_number) == 0) return 0;
        }
    }
}
