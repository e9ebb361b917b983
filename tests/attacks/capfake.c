/* The red team's attacks2/seccomp-fakes-capdrop init: with CAP_SYS_ADMIN it installs a
 * seccomp filter WITHOUT no_new_privs that answers capset, set*id, setgroups and
 * prctl(PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_SET_NO_NEW_PRIVS) with SECCOMP_RET_ERRNO|0
 * ("success", nothing done), then writes "ready" to argv[1] and waits. supd copies the
 * filter into its exec intermediate before the capability drop (the init lacks
 * no_new_privs), so the drop itself is faked. */
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/audit.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    enum { ALLOW = 16, FAKED = 17 };
    struct sock_filter f[] = {
        /*0*/ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        /*1*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, ALLOW - 2),
        /*2*/ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        /*3*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_capset, FAKED - 4, 0),
        /*4*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_setuid, FAKED - 5, 0),
        /*5*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_setgid, FAKED - 6, 0),
        /*6*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_setgroups, FAKED - 7, 0),
        /*7*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_setresuid, FAKED - 8, 0),
        /*8*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_setresgid, FAKED - 9, 0),
        /*9*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_prctl, 0, ALLOW - 10),
        /*10*/ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
        /*11*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PR_CAPBSET_DROP, FAKED - 12, 0),
        /*12*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PR_CAP_AMBIENT, FAKED - 13, 0),
        /*13*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PR_SET_NO_NEW_PRIVS, FAKED - 14, 0),
        /*14*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PR_SET_DUMPABLE, FAKED - 15, 0),
        /*15*/ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        /*16*/ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        /*17*/ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 0),
    };
    struct sock_fprog prog = { sizeof f / sizeof f[0], f };
    if (argc < 2) return 2;
    if (syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) { perror("seccomp"); return 1; }
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, "ready\n", 6) != 6) return 1;
    close(fd);
    for (;;) pause();
}
