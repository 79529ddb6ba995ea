/* The smallest worker the many-workers benchmark can run: it speaks the
 * protocol and nothing else.
 *
 * It sends READY=1 to $NOTIFY_SOCKET as soon as it runs; when
 * $WATCHDOG_USEC is set, it sends WATCHDOG=1 every second; on SIGQUIT,
 * SIGTERM or SIGINT it exits 0. Both sockvisor and the fork/exec floor
 * (spawn_floor.c) run this same program, so the difference between them
 * is the supervisor's own cost.
 *
 *     gcc -O2 -o worker_child bench/worker_child.c
 */
#include <signal.h>
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

int main(void) {
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGQUIT);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    /* Blocked before READY=1, so a stop that follows at once is seen. */
    sigprocmask(SIG_BLOCK, &stop, NULL);
    notify_open();
    notify("READY=1");
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
