#define _GNU_SOURCE
/* A hostile guest agent at argv[2] (a unix socket it binds), behaviour argv[1]:
 *   flood     answer the sync, then send endless bytes with no newline
 *   lines     answer the sync, then send endless short JSON lines ({"return":{}})


 *   sync      answer syncs; nothing else
 *   flap      answer the sync, then close the connection at once
 *   fill      answer every sync; after the first, send 4 MiB with no newline once, then idle
 * Static, single client at a time. */
#include <sys/socket.h>
#include <sys/un.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <signal.h>
#include <sys/stat.h>
static int answer_sync(int c, char *buf, ssize_t n) {
    char *p = memmem(buf, n, "\"id\":", 5);
    if (!p) return 0;
    long id = strtol(p + 5, 0, 10);
    char out[64];
    int len = snprintf(out, sizeof out, "\xff{\"return\": %ld}\n", id);
    return write(c, out, len) == len;
}
int main(int argc, char **argv) {
    const char *mode = argv[1], *path = argv[2];
    signal(SIGPIPE, SIG_IGN);
    mkdir("/run", 0755);
    mkdir("/run/supd-vm", 0755);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strncpy(a.sun_path, path, sizeof a.sun_path - 1);
    unlink(path);
    if (bind(s, (void *)&a, sizeof a) || listen(s, 8)) { perror("bind"); return 1; }
    static char buf[1 << 16], junk[1 << 16];
    memset(junk, 'A', sizeof junk);
    for (;;) {
        int c = accept(s, 0, 0);
        if (c < 0) continue;
        fprintf(stderr, "fakeagent: client\n");
        int synced = 0;
        for (;;) {
            ssize_t n = read(c, buf, sizeof buf);
            if (n <= 0) break;
            if (answer_sync(c, buf, n)) synced = 1;
            if (!synced) continue;
            if (!strcmp(mode, "flap")) break;
            if (!strcmp(mode, "fill")) {
                static int filled;
                if (!filled) {
                    filled = 1;
                    for (int k = 0; k < 64; k++)
                        if (write(c, junk, sizeof junk) < 0) break;
                }
                continue;
            }
            if (!strcmp(mode, "flood")) {
                while (write(c, junk, sizeof junk) > 0) {}
                break;
            } else if (!strcmp(mode, "lines")) {
                static char l[1 << 16];
                for (size_t i = 0; i + 14 <= sizeof l; i += 14) memcpy(l + i, "{\"return\":{}}\n", 14);
                while (write(c, l, sizeof l - sizeof l % 14) > 0) {}
                break;
            }
        }
        close(c);
    }
}
