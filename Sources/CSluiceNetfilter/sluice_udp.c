#define _GNU_SOURCE
#include "sluice_udp.h"
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static socklen_t fill(struct sockaddr_storage *ss, const uint8_t *addr, size_t addr_len, uint16_t port) {
    memset(ss, 0, sizeof *ss);
    if (addr_len == 4) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        memcpy(&a->sin_addr, addr, 4);
        return sizeof *a;
    }
    if (addr_len == 16) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        memcpy(&a->sin6_addr, addr, 16);
        return sizeof *a;
    }
    return 0;
}

int sluice_udp_open(const uint8_t *addr, size_t addr_len, uint16_t port) {
    struct sockaddr_storage ss;
    socklen_t len = fill(&ss, addr, addr_len, port);
    if (len == 0) return -EINVAL;
    int family = addr_len == 4 ? AF_INET : AF_INET6;
    int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    if (family == AF_INET6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        setsockopt(fd, IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof one);
    } else {
        setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof one);
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, len) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

long sluice_udp_send(int fd, const uint8_t *addr, size_t addr_len, uint16_t port, const uint8_t *buf, size_t len) {
    struct sockaddr_storage ss;
    socklen_t sl = fill(&ss, addr, addr_len, port);
    if (sl == 0) return -EINVAL;
    ssize_t n;
    do { n = sendto(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&ss, sl); } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

long sluice_udp_recv(int fd, uint8_t *buf, size_t cap, uint8_t *addr, size_t *addr_len, uint16_t *port) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    ssize_t n;
    do { n = recvfrom(fd, buf, cap, MSG_DONTWAIT | MSG_TRUNC, (struct sockaddr *)&ss, &sl); } while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    if ((size_t)n > cap) return -EMSGSIZE;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        memcpy(addr, &a->sin_addr, 4);
        *addr_len = 4;
        *port = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        memcpy(addr, &a->sin6_addr, 16);
        *addr_len = 16;
        *port = ntohs(a->sin6_port);
    } else {
        return -EAFNOSUPPORT;
    }
    return n;
}
