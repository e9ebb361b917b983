/* The "command": shows which pid namespace it runs in, and signals a host pid. */
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <unistd.h>
#include <errno.h>
#include <string.h>
int main(int argc, char **argv) {
    printf("probe: getpid()=%d getppid()=%d uid=%d\n", getpid(), getppid(), getuid());
    if (argc > 1) {
        int pid = atoi(argv[1]);
        int r = kill(pid, SIGTERM);
        printf("probe: kill(%d, SIGTERM) = %d (%s)\n", pid, r, r ? strerror(errno) : "ok");
    }
    return 0;
}
