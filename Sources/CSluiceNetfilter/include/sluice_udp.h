// UDP sockets for the IKE agent (ports 500 and 4500), with addresses as plain bytes so
// Swift never builds a sockaddr. Every function returns -errno on failure.
#ifndef SLUICE_UDP_H
#define SLUICE_UDP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// A non-blocking, close-on-exec UDP socket bound to `addr` (4 or 16 bytes) and `port`.
/// IP_FREEBIND: the daemon may start before the address is configured.
int sluice_udp_open(const uint8_t *addr, size_t addr_len, uint16_t port);

/// Sends one datagram to `addr`:`port`. Returns bytes sent or -errno.
long sluice_udp_send(int fd, const uint8_t *addr, size_t addr_len, uint16_t port, const uint8_t *buf, size_t len);

/// Receives one datagram (MSG_DONTWAIT): its bytes into `buf`, the sender into `addr` (16
/// bytes of room; *addr_len gets 4 or 16) and `port`. Returns the length, or -errno (-EAGAIN: none).
long sluice_udp_recv(int fd, uint8_t *buf, size_t cap, uint8_t *addr, size_t *addr_len, uint16_t *port);

#ifdef __cplusplus
}
#endif
#endif
