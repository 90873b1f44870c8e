/* Confinement probes run inside machines by tests/confine.rs (also under systemd-nspawn, the
 * reference). Each subcommand tries one thing and prints "ok" or the errno name it got. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/fanotify.h>
#include <linux/bpf.h>
#include <unistd.h>

static int report(long r) {
    if (r < 0) {
        printf("%s\n", strerrorname_np(errno));
        return 1;
    }
    printf("ok\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    const char *what = argv[1];
    if (!strcmp(what, "add_key"))
        return report(syscall(SYS_add_key, "user", "rmach-probe", "x", 1, -2 /* the process keyring: gone with the probe if it gets through */));
    if (!strcmp(what, "keyctl"))
        return report(syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -2, 0));
    if (!strcmp(what, "request_key"))
        return report(syscall(SYS_request_key, "user", "rmach-probe", NULL, 0));
    if (!strcmp(what, "getpid")) /* allowed: shows the program runs and its calls get through */
        return report(syscall(SYS_getpid));
    if (!strcmp(what, "fanotify_init"))
        return report(fanotify_init(FAN_CLASS_NOTIF, O_RDONLY));
    if (!strcmp(what, "bpf_detach") && argc == 3) {
        /* Detach any device program from the cgroup directory argv[2]. */
        int fd = open(argv[2], O_RDONLY | O_DIRECTORY);
        if (fd < 0)
            return report(fd);
        union bpf_attr attr;
        memset(&attr, 0, sizeof attr);
        attr.target_fd = fd;
        attr.attach_type = BPF_CGROUP_DEVICE;
        return report(syscall(SYS_bpf, BPF_PROG_DETACH, &attr, sizeof attr));
    }
    if (!strcmp(what, "tiocsti") && argc == 3) {
        char c = '#';
        return report(ioctl(atoi(argv[2]), TIOCSTI, &c));
    }
    if (!strcmp(what, "tioclinux") && argc == 3) {
        char sub = 12; /* TIOCL_GETSHIFTSTATE: harmless, but refused all the same */
        return report(ioctl(atoi(argv[2]), TIOCLINUX, &sub));
    }
    return 2;
}
