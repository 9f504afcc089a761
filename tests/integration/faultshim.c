/* An LD_PRELOAD shim that makes write(2), fsync(2) and fdatasync(2) fail on chosen
 * files, so that tests can give the real server disk errors without touching its
 * code. Built by tests/integration/test_faults.py with gcc.
 *
 * FAULT_CONTROL names a control file, read at every call on a regular file or a
 * directory (never on sockets or pipes). Each line is "CALL PREFIX SUFFIX ERRNO":
 * the call (write, fsync or fdatasync; fsync also covers fdatasync) fails with
 * ERRNO when the file's path starts with PREFIX and ends with SUFFIX. An empty
 * or missing control file: every call goes through.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static ssize_t (*real_write)(int, const void *, size_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* The errno to fail `call` on `fd` with, or 0. */
static int fault_for(const char *call, int fd)
{
    const char *control = getenv("FAULT_CONTROL");
    struct stat st;
    if (!control || fstat(fd, &st) != 0 || !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)))
        return 0;
    char link[64], path[4096], text[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0)
        return 0;
    path[n] = '\0';
    int cfd = open(control, O_RDONLY | O_CLOEXEC);
    if (cfd < 0)
        return 0;
    ssize_t got = read(cfd, text, sizeof text - 1);
    close(cfd);
    if (got <= 0)
        return 0;
    text[got] = '\0';
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char c[16], prefix[2048], suffix[256];
        int err;
        if (sscanf(line, "%15s %2047s %255s %d", c, prefix, suffix, &err) != 4)
            continue;
        if (strcmp(c, call) == 0 && strncmp(path, prefix, strlen(prefix)) == 0
                && ends_with(path, suffix))
            return err;
    }
    return 0;
}

ssize_t write(int fd, const void *buf, size_t count)
{
    if (!real_write)
        real_write = dlsym(RTLD_NEXT, "write");
    int err = fault_for("write", fd);
    if (err) {
        errno = err;
        return -1;
    }
    return real_write(fd, buf, count);
}

int fsync(int fd)
{
    if (!real_fsync)
        real_fsync = dlsym(RTLD_NEXT, "fsync");
    int err = fault_for("fsync", fd);
    if (err) {
        errno = err;
        return -1;
    }
    return real_fsync(fd);
}

int fdatasync(int fd)
{
    if (!real_fdatasync)
        real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    int err = fault_for("fsync", fd);
    if (err) {
        errno = err;
        return -1;
    }
    return real_fdatasync(fd);
}
