#define _GNU_SOURCE
/* Container entrypoint: no_new_privs + a seccomp filter that makes supd's
 * clone(CLONE_PARENT|CLONE_PARENT_SETTID|SIGCHLD) "return 0" without cloning
 * (SECCOMP_RET_ERRNO with errno 0). supd copies this filter into the exec
 * intermediate, which then believes it is the child and execs the command itself,
 * in the HOST pid namespace. Needs nothing beyond a default Docker container. */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/audit.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <stddef.h>
#include <stdio.h>
#include <unistd.h>
#include <signal.h>
#include <sched.h>
#define FLAGS (CLONE_PARENT | CLONE_PARENT_SETTID | SIGCHLD)
int main(void) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, FLAGS, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = { sizeof f / sizeof f[0], f };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) { perror("nnp"); return 1; }
    if (syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) { perror("seccomp"); return 1; }
    fprintf(stderr, "init: filter installed\n");
    for (;;) pause();
}
