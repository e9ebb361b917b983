/* Container entrypoint (needs --cap-add SYS_ADMIN, which lets it install a seccomp filter
 * WITHOUT no_new_privs). supd then installs this filter in the exec intermediate BEFORE it
 * drops capabilities and changes ids; the filter answers prctl(PR_CAPBSET_DROP), capset,
 * prctl(PR_CAP_AMBIENT) and the set*id calls with SECCOMP_RET_ERRNO|0: "success", nothing done.
 * The command keeps supd's full capability sets. */
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/audit.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <stddef.h>
#include <stdio.h>
#include <unistd.h>
#define FAKE(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, n_fake_off, 0)
int main(void) {
    enum { ALLOW = 13, FAKED = 14 };
    struct sock_filter f[] = {
        /*0*/ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        /*1*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, ALLOW - 2),
        /*2*/ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        /*3*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_capset, FAKED - 4, 0),
        /*4*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_setuid, FAKED - 5, 0),
        /*5*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_setgid, FAKED - 6, 0),
        /*6*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_setgroups, FAKED - 7, 0),
        /*7*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_prctl, 0, ALLOW - 8),
        /*8*/ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
        /*9*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PR_CAPBSET_DROP, FAKED - 10, 0),
        /*10*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PR_CAP_AMBIENT, FAKED - 11, 0),
        /*11*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PR_SET_NO_NEW_PRIVS, FAKED - 12, 0),
        /*12*/ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        /*13*/ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        /*14*/ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 0),
    };
    struct sock_fprog prog = { sizeof f / sizeof f[0], f };
    if (syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) { perror("seccomp"); return 1; }
    fprintf(stderr, "init: filter installed without no_new_privs\n");
    for (;;) pause();
}
