// A narrow C seam over the netlink side of NFQUEUE (libmnl + libnetfilter_queue).
// It builds and parses netlink messages in caller-owned buffers with explicit
// capacities, and wraps the few socket calls whose types Swift cannot see
// (recvmmsg needs _GNU_SOURCE). All policy lives in Swift.
#ifndef SLUICE_NETFILTER_H
#define SLUICE_NETFILTER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    SLUICE_NF_DROP = 0,
    SLUICE_NF_ACCEPT = 1,
};

enum {
    SLUICE_NFQ_CMD_BIND = 1,
    SLUICE_NFQ_CMD_UNBIND = 2,
};

enum {
    SLUICE_NFQ_FLAG_FAIL_OPEN = 1 << 0,
    SLUICE_NFQ_FLAG_CONNTRACK = 1 << 1,
    SLUICE_NFQ_FLAG_GSO = 1 << 2,
};

/// NFQA_SKB_INFO bits (only sent on queues bound with SLUICE_NFQ_FLAG_GSO).
enum {
    /// The transport checksum is not finished (CHECKSUM_PARTIAL): the field holds only
    /// the pseudo-header sum. Whoever rewrites the packet must complete it.
    SLUICE_NFQ_SKB_CSUM_NOTREADY = 1 << 0,
    /// A GSO packet: one header for many segments' worth of payload.
    SLUICE_NFQ_SKB_GSO = 1 << 1,
};

/// One message the kernel sent on a queue socket.
typedef struct {
    int kind;               // 1 = packet, 2 = netlink error/ack, 0 = other (ignored)
    int error;              // for kind 2: the (positive) errno the kernel reported, 0 for an ack
    uint32_t packet_id;
    uint16_t hw_protocol;   // ETH_P_IP / ETH_P_IPV6, host order
    uint8_t hook;
    uint8_t has_mark;
    uint32_t mark;
    uint32_t payload_offset; // offset of the packet bytes inside the receive buffer
    uint32_t payload_len;
    uint32_t cap_len;        // original length when the kernel truncated the copy, else 0
    uint32_t skb_info;       // SLUICE_NFQ_SKB_* bits
    uint16_t queue;          // the queue number (nfgenmsg res_id): a socket may own several
} sluice_nfq_message;

/// Opens an AF_NETLINK/NETLINK_NETFILTER socket with the given receive buffer size
/// (SO_RCVBUFFORCE, falling back to SO_RCVBUF) and NETLINK_NO_ENOBUFS off so that
/// overruns are reported and counted. Returns the fd or -errno. *portid gets our id.
int sluice_nfq_socket_open(int rcvbuf_bytes, uint32_t *portid);

/// Sets SO_RCVTIMEO so a blocked receive returns EAGAIN now and then (shutdown checks).
int sluice_socket_set_rcvtimeo(int fd, int milliseconds);

/// Builds a config command (bind/unbind) message. Returns its length or -1 if cap is short.
int sluice_nfq_build_cmd(void *buf, size_t cap, uint16_t queue, uint8_t cmd, uint32_t seq);

/// Builds a config message with copy mode "packet" + range, queue max length and flags.
int sluice_nfq_build_params(void *buf, size_t cap, uint16_t queue, uint32_t copy_range,
                            uint32_t queue_maxlen, uint32_t flags, uint32_t seq);

/// Parses every netlink message in one datagram. Returns how many were written to out
/// (at most max), or -1 if the datagram is malformed.
int sluice_nfq_parse(const void *buf, size_t len, sluice_nfq_message *out, int max);

/// Appends one verdict message (optionally with a mark and a replacement payload).
/// Returns the bytes written, or -1 if it does not fit in cap.
int sluice_nfq_put_verdict(void *buf, size_t cap, uint16_t queue, uint32_t packet_id,
                           uint32_t verdict, int set_mark, uint32_t mark,
                           const void *payload, size_t payload_len);

/// recvmmsg over `count` buffers of `buf_len` bytes laid out back to back in `bufs`.
/// lens[i] gets each datagram's length, truncated[i] is 1 when MSG_TRUNC was set.
/// Blocks for the first datagram unless dont_wait. Returns the count or -errno.
int sluice_recv_batch(int fd, void *bufs, size_t buf_len, int count,
                      uint32_t *lens, uint8_t *truncated, int dont_wait);

/// Builds the NFQNL_MSG_PACKET message the kernel would send for `payload` (benchmarks
/// and tests use it as a fake kernel). Returns its length or -1 if cap is short.
int sluice_nfq_build_packet(void *buf, size_t cap, uint16_t queue, uint32_t packet_id, uint16_t hw_protocol,
                            uint8_t hook, uint32_t skb_info, const void *payload, size_t payload_len);

/// accept4 with SOCK_CLOEXEC; returns the fd or -errno.
int sluice_accept(int fd);

/// The uid of the process at the other end of a Unix socket (SO_PEERCRED). 0 or -errno.
int sluice_peer_uid(int fd, uint32_t *uid);

/// A raw IPPROTO_RAW socket (header included) of `family` (4 or 6) whose packets carry
/// `mark` (SO_MARK), for what a verdict cannot carry: ESP segments cut from whole TCP
/// packets, packets whose address family changed (4-in-6, 6-in-4 tunnels), IPv4 sealed
/// in prerouting. Returns the fd or -errno.
int sluice_raw_open(int family, uint32_t mark);

/// Sends `count` complete IP packets of one family, packet i at buf + offsets[i] with
/// lens[i] bytes, in as few sendmmsg calls as it takes (EINTR retried). Returns how many
/// were sent, or -errno if the first one failed.
int sluice_raw_send_batch(int fd, const uint8_t *buf, const uint32_t *offsets, const uint32_t *lens, int count);

/// send() returning -errno on failure.
ssize_t sluice_send(int fd, const void *buf, size_t len);

#ifdef __cplusplus
}
#endif
// The IKE agent's UDP sockets live in their own header.
#include "sluice_udp.h"

#endif
