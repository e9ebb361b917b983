/* Adaptation of attacks/stop-before-setsid/stopper.c, run as the init's helper in a default
 * container: it SIGSTOPs every new process the moment it sees it, and keeps it stopped if it
 * has not exec'd yet (its name, read once it is stopped, is still supd's); others get SIGCONT.
 * One line per held process goes to the report file argv[1]. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char seen[1 << 22];

static int name_is_supd(int pid) {
    char p[64], buf[64];
    snprintf(p, sizeof p, "/proc/%d/comm", pid);
    int fd = open(p, O_RDONLY);
    if (fd < 0) return 0;
    ssize_t r = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (r <= 0) return 0;
    buf[r] = 0;
    return strcmp(buf, "supd\n") == 0;
}

/* Waits (up to about a second) until the SIGSTOP took effect: a process in the middle of an
 * execve stops only once it returns, under its new name. */
static void wait_stopped(int pid) {
    for (int i = 0; i < 5000; i++) {
        char p[64], buf[512];
        snprintf(p, sizeof p, "/proc/%d/stat", pid);
        int fd = open(p, O_RDONLY);
        if (fd < 0) return;
        ssize_t r = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (r <= 0) return;
        buf[r] = 0;
        char *s = strrchr(buf, ')');
        if (!s || s[2] == 'T' || s[2] == 't' || s[2] == 'Z' || s[2] == 'X') return;
        usleep(200);
    }
}

int main(int argc, char **argv) {
    FILE *report = fopen(argc > 1 ? argv[1] : "/dev/stderr", "a");
    if (!report) return 1;
    setvbuf(report, 0, _IOLBF, 0);
    int self = getpid();
    fprintf(report, "ready\n");
    for (;;) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        while ((e = readdir(d))) {
            int pid = atoi(e->d_name);
            if (pid <= 1 || pid == self || pid >= (1 << 22) || seen[pid]) continue;
            seen[pid] = 1;
            kill(pid, SIGSTOP);
            wait_stopped(pid);
            if (name_is_supd(pid))
                fprintf(report, "held %d\n", pid);
            else
                kill(pid, SIGCONT);
        }
        closedir(d);
    }
}
