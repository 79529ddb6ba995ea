/* What the same piece of work costs on this machine done back to back, and
 * done alone after the CPU has been idle for a while.
 *
 * An all-at-once upgrade does every worker's share of sockvisor's work in
 * one burst; a rolling upgrade does each share alone, as each new worker
 * becomes ready, with the CPU idle in between. This program puts a figure
 * on the difference that owes nothing to sockvisor: a piece of work (it
 * reads and writes 256 KiB and makes 20 system calls) is done `rounds`
 * times, each after a byte arrives on a pipe from a child that writes one
 * every `gap` microseconds, and only the piece itself is timed, in the
 * thread's CPU time. It prints the gap and the median CPU microseconds per
 * piece; run it with a short gap and a long one and compare.
 *
 *     gcc -O2 -o spread_work bench/spread_work.c
 *     ./spread_work 0 2000 && ./spread_work 2000 500
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WORK_BYTES (256 * 1024)
#define WORK_CALLS 20

static unsigned char memory[WORK_BYTES];

static double thread_cpu_us(void) {
    struct timespec now;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    return now.tv_sec * 1e6 + now.tv_nsec / 1e3;
}

static int ascending(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: spread_work GAP_US ROUNDS\n");
        return 2;
    }
    long gap = atol(argv[1]);
    int rounds = atoi(argv[2]);
    if (gap < 0 || rounds <= 0) {
        fprintf(stderr, "spread_work: GAP_US must be >= 0 and ROUNDS > 0\n");
        return 2;
    }
    int pipe_fds[2];
    if (pipe(pipe_fds) != 0) {
        perror("spread_work: pipe");
        return 1;
    }
    pid_t writer = fork();
    if (writer < 0) {
        perror("spread_work: fork");
        return 1;
    }
    if (writer == 0) {
        close(pipe_fds[0]);
        for (int i = 0; i < rounds; i++) {
            if (gap > 0) usleep(gap);
            if (write(pipe_fds[1], "x", 1) != 1) _exit(1);
        }
        _exit(0);
    }
    close(pipe_fds[1]);
    double *costs = calloc(rounds, sizeof *costs);
    if (costs == NULL) return 1;
    volatile unsigned long sink = 0;
    struct pollfd readable = {.fd = pipe_fds[0], .events = POLLIN};
    for (int i = 0; i < rounds; i++) {
        char byte;
        if (poll(&readable, 1, -1) != 1 || read(pipe_fds[0], &byte, 1) != 1) {
            fprintf(stderr, "spread_work: the writer stopped early\n");
            return 1;
        }
        double began = thread_cpu_us();
        for (int at = 0; at < WORK_BYTES; at += 64) sink += memory[at]++;
        for (int call = 0; call < WORK_CALLS; call++) sink += (unsigned long)getppid();
        costs[i] = thread_cpu_us() - began;
    }
    waitpid(writer, NULL, 0);
    qsort(costs, rounds, sizeof *costs, ascending);
    printf("%ld %.2f\n", gap, costs[rounds / 2]);
    return 0;
}
