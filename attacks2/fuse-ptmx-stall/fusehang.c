/* Container entrypoint (needs --cap-add SYS_ADMIN --device /dev/fuse): mounts a FUSE file
 * system over /dev/pts that answers INIT and GETATTR but never answers a LOOKUP. supd's
 * exec-interactive with tty=true resolves dev/pts/ptmx in the container's root on its one
 * loop thread (openat2 O_PATH), which waits for the FUSE answer forever. */
#define _GNU_SOURCE
#include <linux/fuse.h>
#include <sys/mount.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>
static int fd;
static void reply(uint64_t unique, int error, const void *body, size_t n) {
    char buf[4096]; struct fuse_out_header h = { sizeof h + n, error, unique };
    memcpy(buf, &h, sizeof h); if (n) memcpy(buf + sizeof h, body, n);
    if (write(fd, buf, sizeof h + n) < 0) perror("write");
}
int main(void) {
    static char buf[1 << 20];
    fd = open("/dev/fuse", O_RDWR);
    if (fd < 0) { perror("open /dev/fuse"); return 1; }
    char opts[128]; snprintf(opts, sizeof opts, "fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other", fd);
    if (mount("hang", "/dev/pts", "fuse", MS_NOSUID | MS_NODEV, opts)) { perror("mount"); return 1; }
    fprintf(stderr, "fusehang: mounted over /dev/pts\n");
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) { if (errno == EINTR) continue; perror("read"); return 1; }
        struct fuse_in_header *in = (void *)buf;
        if (in->opcode == FUSE_INIT) {
            struct fuse_init_in *ii = (void *)(in + 1);
            struct fuse_init_out o = { .major = 7, .minor = ii->minor < 31 ? ii->minor : 31,
                .max_readahead = 4096, .max_write = 4096, .max_background = 16,
                .congestion_threshold = 12 };
            reply(in->unique, 0, &o, sizeof o);
        } else if (in->opcode == FUSE_GETATTR) {
            struct fuse_attr_out a = { .attr_valid = 1, .attr = { .ino = 1, .mode = 040755, .nlink = 2 } };
            reply(in->unique, 0, &a, sizeof a);
        } else if (in->opcode == FUSE_LOOKUP) {
            fprintf(stderr, "fusehang: LOOKUP %s from pid %u: never answered\n", (char *)(in + 1), in->pid);
        } else if (in->opcode == FUSE_FORGET || in->opcode == FUSE_BATCH_FORGET) {
        } else {
            reply(in->unique, -ENOSYS, 0, 0);
        }
    }
}
