/* Runs inside an ordinary container (default capabilities). Polls /proc; the moment a
 * process appears whose capability bounding set exceeds the container's (supd's exec child,
 * still holding supd's privileges and descriptors), it sends SIGSTOP, then reports whether
 * the process was caught before its setsid (session id != pid). */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char seen[1 << 22];

static unsigned long long capbnd(int pid) {
    char p[64], buf[4096];
    snprintf(p, sizeof p, "/proc/%d/status", pid);
    int fd = open(p, O_RDONLY);
    if (fd < 0) return 0;
    ssize_t r = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (r <= 0) return 0;
    buf[r] = 0;
    char *c = strstr(buf, "CapBnd:");
    return c ? strtoull(c + 8, 0, 16) : 0;
}

static int sid_of(int pid) {
    char p[64], buf[1024];
    snprintf(p, sizeof p, "/proc/%d/stat", pid);
    int fd = open(p, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t r = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (r <= 0) return -1;
    buf[r] = 0;
    char *s = strrchr(buf, ')');
    char st; int ppid, pgrp, sid;
    if (!s || sscanf(s + 2, "%c %d %d %d", &st, &ppid, &pgrp, &sid) != 4) return -1;
    return sid;
}

int main(void) {
    unsigned long long mine = capbnd(getpid());
    int self = getpid();
    fprintf(stderr, "stopper: watching\n");
    for (;;) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        while ((e = readdir(d))) {
            int pid = atoi(e->d_name);
            if (pid <= 1 || pid == self || pid >= (1 << 22) || seen[pid]) continue;
            seen[pid] = 1;
            unsigned long long bnd = capbnd(pid);
            if (!bnd || (bnd & ~mine) == 0) continue;
            kill(pid, SIGSTOP);
            usleep(1000);
            int sid = sid_of(pid);
            if (sid == pid) {
                fprintf(stderr, "stopper: pid %d stopped after its setsid: let it go\n", pid);
                kill(pid, SIGCONT);
            } else {
                fprintf(stderr, "stopper: pid %d stopped BEFORE setsid (sid %d): holding it\n", pid, sid);
            }
        }
        closedir(d);
    }
}
