/* A hostile launcher's FUSE file system: mounted at argv[1], it answers INIT and then reads
 * every request and never answers it, so whoever looks something up under it waits forever
 * (uninterruptibly, once the request has been read). Static, no libfuse. */
#include <linux/fuse.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "/run/supd-vm";
    mkdir("/run", 0755); mkdir(dir, 0755);
    int fd = open("/dev/fuse", O_RDWR);
    if (fd < 0) { perror("open /dev/fuse"); return 1; }
    char opts[128];
    snprintf(opts, sizeof opts, "fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other", fd);
    if (mount("hang", dir, "fuse", MS_NOSUID | MS_NODEV, opts) < 0) { perror("mount"); return 1; }
    fprintf(stderr, "fusehang: mounted at %s\n", dir);
    static char buf[1 << 20];
    unsigned long reqs = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) { if (errno == EINTR || errno == ENOENT) continue; perror("read"); return 1; }
        struct fuse_in_header *in = (void *)buf;
        if (in->opcode == FUSE_INIT) {
            struct fuse_init_in *ii = (void *)(in + 1);
            struct { struct fuse_out_header h; struct fuse_init_out o; } out;
            memset(&out, 0, sizeof out);
            out.h.len = sizeof out; out.h.unique = in->unique;
            out.o.major = FUSE_KERNEL_VERSION; out.o.minor = ii->minor < FUSE_KERNEL_MINOR_VERSION ? ii->minor : FUSE_KERNEL_MINOR_VERSION;
            out.o.max_readahead = ii->max_readahead; out.o.max_write = 4096;
            if (write(fd, &out, sizeof out) < 0) perror("write init");
            continue;
        }
        /* Everything else: never answered (the INTERRUPT for it too). */
        reqs++;
        fprintf(stderr, "fusehang: request %u (opcode %u) left unanswered (%lu)\n", (unsigned)in->unique, in->opcode, reqs);
    }
}
