/* Harmless adaptation of attacks/ptrace-exec-window/hunter.c, run as the init's helper in a
 * container started with --cap-add SYS_PTRACE. It watches the container's /proc and, for every
 * new process, at the first moment it can see it and again after seizing it with ptrace,
 * checks that the process holds nothing the container lacks: capabilities, a weaker seccomp
 * mode, or descriptors of supd's (sockets, anonymous inodes; before execve, anything but
 * stdio and the start pipe at 3). It never changes the process; it writes one line per
 * finding to the report file argv[1] ("BAD ..."), plus "seen"/"seized" counters. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

static char seen[1 << 22];
static FILE *report;

struct status {
    unsigned long long eff, prm, bnd;
    int seccomp;
    char name[32];
};

static unsigned long long field(const char *buf, const char *key) {
    const char *c = strstr(buf, key);
    return c ? strtoull(c + strlen(key), 0, 16) : 0;
}

static int read_status(int pid, struct status *st) {
    char p[64], buf[4096];
    snprintf(p, sizeof p, "/proc/%d/status", pid);
    int fd = open(p, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t r = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (r <= 0) return -1;
    buf[r] = 0;
    st->eff = field(buf, "CapEff:\t");
    st->prm = field(buf, "CapPrm:\t");
    st->bnd = field(buf, "CapBnd:\t");
    const char *s = strstr(buf, "Seccomp:\t");
    st->seccomp = s ? s[9] - '0' : -1;
    const char *n = strstr(buf, "Name:\t");
    st->name[0] = 0;
    if (n) sscanf(n + 6, "%31s", st->name);
    return 0;
}

static void check(int pid, const struct status *mine, const char *when) {
    struct status st;
    if (read_status(pid, &st)) return;
    if ((st.eff & ~mine->eff) || (st.prm & ~mine->prm) || (st.bnd & ~mine->bnd) ||
        st.seccomp < mine->seccomp)
        fprintf(report, "BAD %s: pid %d (%s) CapEff %llx CapPrm %llx CapBnd %llx Seccomp %d\n",
                when, pid, st.name, st.eff, st.prm, st.bnd, st.seccomp);
    int before_exec = strcmp(st.name, "supd") == 0;
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/fd", pid);
    DIR *d = opendir(p);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        int fd = atoi(e->d_name);
        char link[128] = "", path[128];
        snprintf(path, sizeof path, "/proc/%d/fd/%d", pid, fd);
        ssize_t n = readlink(path, link, sizeof link - 1);
        if (n < 0) continue;
        link[n] = 0;
        int foreign = !strncmp(link, "socket:", 7) || !strncmp(link, "anon_inode:", 11) ||
                      (before_exec && fd > 2 && !(fd == 3 && !strncmp(link, "pipe:", 5)));
        if (foreign)
            fprintf(report, "BAD %s: pid %d (%s) holds fd %d -> %s\n", when, pid, st.name, fd,
                    link);
    }
    closedir(d);
}

int main(int argc, char **argv) {
    report = fopen(argc > 1 ? argv[1] : "/dev/stderr", "a");
    if (!report) return 1;
    setvbuf(report, 0, _IOLBF, 0);
    struct status mine;
    if (read_status(getpid(), &mine)) return 1;
    int self = getpid();
    fprintf(report, "ready CapEff %llx Seccomp %d\n", mine.eff, mine.seccomp);
    for (;;) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        while ((e = readdir(d))) {
            int pid = atoi(e->d_name);
            if (pid <= 1 || pid == self || pid >= (1 << 22) || seen[pid]) continue;
            seen[pid] = 1;
            fprintf(report, "seen %d\n", pid);
            check(pid, &mine, "first sight");
            if (ptrace(PTRACE_SEIZE, pid, 0, 0) < 0) continue;
            ptrace(PTRACE_INTERRUPT, pid, 0, 0);
            int st;
            if (waitpid(pid, &st, __WALL) < 0) continue;
            if (WIFSTOPPED(st)) {
                fprintf(report, "seized %d\n", pid);
                check(pid, &mine, "seized");
                ptrace(PTRACE_DETACH, pid, 0, 0);
            }
        }
        closedir(d);
    }
}
