#define _GNU_SOURCE
#include "sluice_arena.h"
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int sluice_arena_create(const char *name, size_t size) {
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return -errno;
    if (ftruncate(fd, (off_t)size) != 0 || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

void *sluice_arena_map(int fd, size_t size, int *err) {
    struct stat st;
    if (fstat(fd, &st) != 0) { *err = errno; return NULL; }
    if (st.st_size < 0 || (size_t)st.st_size < size) { *err = EINVAL; return NULL; }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) { *err = errno; return NULL; }
    return p;
}

void sluice_arena_unmap(void *p, size_t size) { munmap(p, size); }

int sluice_fd_set_inherit(int fd, int inherit) {
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0) return -errno;
    flags = inherit ? (flags & ~FD_CLOEXEC) : (flags | FD_CLOEXEC);
    return fcntl(fd, F_SETFD, flags) == 0 ? 0 : -errno;
}
