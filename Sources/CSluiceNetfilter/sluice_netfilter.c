#define _GNU_SOURCE
#include "sluice_netfilter.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <netinet/in.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

int sluice_nfq_socket_open(int rcvbuf_bytes, uint32_t *portid) {
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
    if (fd < 0) return -errno;
    if (rcvbuf_bytes > 0) {
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf_bytes, sizeof(rcvbuf_bytes)) != 0)
            (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf_bytes, sizeof(rcvbuf_bytes));
        // Verdicts for a whole batch (with payloads) go out in one send: room for them.
        int sndbuf = 4 << 20;
        if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)) != 0)
            (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    }
    struct sockaddr_nl addr;
    memset(&addr, 0, sizeof(addr));
    addr.nl_family = AF_NETLINK;
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    socklen_t alen = sizeof(addr);
    if (getsockname(fd, (struct sockaddr *)&addr, &alen) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (portid) *portid = addr.nl_pid;
    // Extended acks make the kernel's reason for a refused verdict readable.
    int one = 1;
    (void)setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
    return fd;
}

int sluice_socket_set_rcvtimeo(int fd, int milliseconds) {
    struct timeval tv = {.tv_sec = milliseconds / 1000, .tv_usec = (milliseconds % 1000) * 1000};
    return setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0 ? 0 : -errno;
}

// Room for the netlink + nfgen headers and a few small attributes.
#define SMALL_MSG_ROOM 256

int sluice_nfq_build_cmd(void *buf, size_t cap, uint16_t queue, uint8_t cmd, uint32_t seq) {
    if (buf == NULL || cap < SMALL_MSG_ROOM) return -1;
    memset(buf, 0, SMALL_MSG_ROOM);
    struct nlmsghdr *nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, queue);
    nlh->nlmsg_flags |= NLM_F_ACK;
    nlh->nlmsg_seq = seq;
    nfq_nlmsg_cfg_put_cmd(nlh, AF_UNSPEC, cmd);
    return (int)nlh->nlmsg_len;
}

int sluice_nfq_build_params(void *buf, size_t cap, uint16_t queue, uint32_t copy_range,
                            uint32_t queue_maxlen, uint32_t flags, uint32_t seq) {
    if (buf == NULL || cap < SMALL_MSG_ROOM) return -1;
    memset(buf, 0, SMALL_MSG_ROOM);
    struct nlmsghdr *nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, queue);
    nlh->nlmsg_flags |= NLM_F_ACK;
    nlh->nlmsg_seq = seq;
    nfq_nlmsg_cfg_put_params(nlh, NFQNL_COPY_PACKET, copy_range);
    mnl_attr_put_u32(nlh, NFQA_CFG_QUEUE_MAXLEN, htonl(queue_maxlen));
    uint32_t kflags = 0;
    if (flags & SLUICE_NFQ_FLAG_FAIL_OPEN) kflags |= NFQA_CFG_F_FAIL_OPEN;
    if (flags & SLUICE_NFQ_FLAG_CONNTRACK) kflags |= NFQA_CFG_F_CONNTRACK;
    if (flags & SLUICE_NFQ_FLAG_GSO) kflags |= NFQA_CFG_F_GSO;
    // The mask names every flag we decide, so unset ones are cleared explicitly.
    uint32_t mask = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_CONNTRACK | NFQA_CFG_F_GSO;
    mnl_attr_put_u32(nlh, NFQA_CFG_FLAGS, htonl(kflags));
    mnl_attr_put_u32(nlh, NFQA_CFG_MASK, htonl(mask));
    return (int)nlh->nlmsg_len;
}

static int parse_one(const struct nlmsghdr *nlh, const uint8_t *base, sluice_nfq_message *m) {
    memset(m, 0, sizeof(*m));
    if (nlh->nlmsg_type == NLMSG_ERROR) {
        if (nlh->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr))) return -1;
        const struct nlmsgerr *err = mnl_nlmsg_get_payload(nlh);
        m->kind = 2;
        m->error = err->error < 0 ? -err->error : err->error;
        return 0;
    }
    if ((nlh->nlmsg_type >> 8) != NFNL_SUBSYS_QUEUE || (nlh->nlmsg_type & 0xff) != NFQNL_MSG_PACKET) {
        m->kind = 0;
        return 0;
    }
    if (nlh->nlmsg_len < NLMSG_LENGTH(sizeof(struct nfgenmsg))) return -1;
    struct nlattr *attr[NFQA_MAX + 1];
    memset(attr, 0, sizeof(attr));
    if (nfq_nlmsg_parse(nlh, attr) < 0) return -1;
    if (attr[NFQA_PACKET_HDR] == NULL ||
        mnl_attr_get_payload_len(attr[NFQA_PACKET_HDR]) < sizeof(struct nfqnl_msg_packet_hdr))
        return -1;
    const struct nfqnl_msg_packet_hdr *ph = mnl_attr_get_payload(attr[NFQA_PACKET_HDR]);
    const struct nfgenmsg *nfg = mnl_nlmsg_get_payload(nlh);
    m->kind = 1;
    m->queue = ntohs(nfg->res_id);
    m->packet_id = ntohl(ph->packet_id);
    m->hw_protocol = ntohs(ph->hw_protocol);
    m->hook = ph->hook;
    if (attr[NFQA_MARK] && mnl_attr_get_payload_len(attr[NFQA_MARK]) >= 4) {
        m->has_mark = 1;
        m->mark = ntohl(mnl_attr_get_u32(attr[NFQA_MARK]));
    }
    if (attr[NFQA_PAYLOAD]) {
        const uint8_t *p = mnl_attr_get_payload(attr[NFQA_PAYLOAD]);
        m->payload_offset = (uint32_t)(p - base);
        m->payload_len = mnl_attr_get_payload_len(attr[NFQA_PAYLOAD]);
    }
    if (attr[NFQA_CAP_LEN] && mnl_attr_get_payload_len(attr[NFQA_CAP_LEN]) >= 4)
        m->cap_len = ntohl(mnl_attr_get_u32(attr[NFQA_CAP_LEN]));
    if (attr[NFQA_SKB_INFO] && mnl_attr_get_payload_len(attr[NFQA_SKB_INFO]) >= 4) {
        uint32_t info = ntohl(mnl_attr_get_u32(attr[NFQA_SKB_INFO]));
        if (info & NFQA_SKB_CSUMNOTREADY) m->skb_info |= SLUICE_NFQ_SKB_CSUM_NOTREADY;
        if (info & NFQA_SKB_GSO) m->skb_info |= SLUICE_NFQ_SKB_GSO;
    }
    return 0;
}

int sluice_nfq_parse(const void *buf, size_t len, sluice_nfq_message *out, int max) {
    if (buf == NULL || out == NULL || max <= 0) return -1;
    const struct nlmsghdr *nlh = buf;
    int remaining = (int)len;
    int n = 0;
    while (mnl_nlmsg_ok(nlh, remaining) && n < max) {
        if (parse_one(nlh, buf, &out[n]) != 0) return -1;
        if (out[n].kind != 0) n++;
        nlh = mnl_nlmsg_next(nlh, &remaining);
    }
    return n;
}

int sluice_nfq_put_verdict(void *buf, size_t cap, uint16_t queue, uint32_t packet_id, uint32_t verdict,
                           int set_mark, uint32_t mark, const void *payload, size_t payload_len) {
    if (buf == NULL) return -1;
    if (payload_len > 0xFFFF) return -1;
    size_t need = MNL_ALIGN(sizeof(struct nlmsghdr)) + MNL_ALIGN(sizeof(struct nfgenmsg)) +
                  MNL_ATTR_HDRLEN + MNL_ALIGN(sizeof(struct nfqnl_msg_verdict_hdr)) +
                  MNL_ATTR_HDRLEN + MNL_ALIGN(sizeof(uint32_t)) +
                  (payload ? MNL_ATTR_HDRLEN + MNL_ALIGN(payload_len) : 0);
    if (need > cap) return -1;
    memset(buf, 0, MNL_ALIGN(sizeof(struct nlmsghdr)) + MNL_ALIGN(sizeof(struct nfgenmsg)));
    struct nlmsghdr *nlh = nfq_nlmsg_put(buf, NFQNL_MSG_VERDICT, queue);
    nfq_nlmsg_verdict_put(nlh, (int)packet_id, (int)verdict);
    if (set_mark) nfq_nlmsg_verdict_put_mark(nlh, mark);
    // mnl_attr_put sets nla_len to the exact length and pads after it.
    if (payload) nfq_nlmsg_verdict_put_pkt(nlh, payload, (uint32_t)payload_len);
    return (int)MNL_ALIGN(nlh->nlmsg_len);
}

int sluice_recv_batch(int fd, void *bufs, size_t buf_len, int count, uint32_t *lens, uint8_t *truncated,
                      int dont_wait) {
    enum { MAX_BATCH = 64 };
    if (count <= 0 || count > MAX_BATCH) return -EINVAL;
    struct mmsghdr msgs[MAX_BATCH];
    struct iovec iov[MAX_BATCH];
    struct sockaddr_nl from[MAX_BATCH];
    memset(msgs, 0, sizeof(struct mmsghdr) * (size_t)count);
    for (int i = 0; i < count; i++) {
        iov[i].iov_base = (uint8_t *)bufs + (size_t)i * buf_len;
        iov[i].iov_len = buf_len;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &from[i];
        msgs[i].msg_hdr.msg_namelen = sizeof(from[i]);
    }
    int flags = dont_wait ? MSG_DONTWAIT : MSG_WAITFORONE;
    int n = recvmmsg(fd, msgs, (unsigned)count, flags, NULL);
    if (n < 0) return -errno;
    for (int i = 0; i < n; i++) {
        lens[i] = msgs[i].msg_len;
        truncated[i] = (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) ? 1 : 0;
    }
    return n;
}

ssize_t sluice_send(int fd, const void *buf, size_t len) {
    ssize_t n = send(fd, buf, len, 0);
    return n < 0 ? -errno : n;
}

int sluice_accept(int fd) {
    int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
    return c < 0 ? -errno : c;
}

int sluice_peer_uid(int fd, uint32_t *uid) {
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -errno;
    *uid = cred.uid;
    return 0;
}

int sluice_raw_open(int family, uint32_t mark) {
    int fd = socket(family == 6 ? AF_INET6 : AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
    if (fd < 0) return -errno;
    // A GSO packet becomes up to ~45 ESP packets sent at once: room for a few of them.
    int sndbuf = 4 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)) != 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int sluice_raw_send_batch(int fd, const uint8_t *buf, const uint32_t *offsets, const uint32_t *lens, int count) {
    enum { MAX_BATCH = 64 };
    if (buf == NULL || offsets == NULL || lens == NULL || count < 0) return -EINVAL;
    int sent = 0;
    while (sent < count) {
        int n = count - sent < MAX_BATCH ? count - sent : MAX_BATCH;
        struct mmsghdr msgs[MAX_BATCH];
        struct iovec iov[MAX_BATCH];
        union { struct sockaddr_in v4; struct sockaddr_in6 v6; } dst[MAX_BATCH];
        memset(msgs, 0, sizeof(struct mmsghdr) * (size_t)n);
        memset(dst, 0, sizeof(dst[0]) * (size_t)n);
        for (int i = 0; i < n; i++) {
            const uint8_t *p = buf + offsets[sent + i];
            uint32_t len = lens[sent + i];
            if (len >= 20 && (p[0] >> 4) == 4) {
                dst[i].v4.sin_family = AF_INET;
                memcpy(&dst[i].v4.sin_addr, p + 16, 4);
                msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
            } else if (len >= 40 && (p[0] >> 4) == 6) {
                dst[i].v6.sin6_family = AF_INET6;
                memcpy(&dst[i].v6.sin6_addr, p + 24, 16);
                msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in6);
            } else {
                return sent > 0 ? sent : -EINVAL;
            }
            iov[i].iov_base = (void *)p;
            iov[i].iov_len = len;
            msgs[i].msg_hdr.msg_name = &dst[i];
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int r = sendmmsg(fd, msgs, (unsigned)n, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            return sent > 0 ? sent : -errno;
        }
        sent += r;
    }
    return sent;
}

int sluice_nfq_build_packet(void *buf, size_t cap, uint16_t queue, uint32_t packet_id, uint16_t hw_protocol,
                            uint8_t hook, uint32_t skb_info, const void *payload, size_t payload_len) {
    size_t need = MNL_ALIGN(sizeof(struct nlmsghdr)) + MNL_ALIGN(sizeof(struct nfgenmsg)) +
                  MNL_ATTR_HDRLEN + MNL_ALIGN(sizeof(struct nfqnl_msg_packet_hdr)) +
                  MNL_ATTR_HDRLEN + MNL_ALIGN(sizeof(uint32_t)) +
                  MNL_ATTR_HDRLEN + MNL_ALIGN(payload_len);
    if (buf == NULL || need > cap || payload_len > 0xFFFF) return -1;
    memset(buf, 0, MNL_ALIGN(sizeof(struct nlmsghdr)) + MNL_ALIGN(sizeof(struct nfgenmsg)));
    struct nlmsghdr *nlh = nfq_nlmsg_put(buf, NFQNL_MSG_PACKET, queue);
    struct nfqnl_msg_packet_hdr ph = {.packet_id = htonl(packet_id), .hw_protocol = htons(hw_protocol), .hook = hook};
    mnl_attr_put(nlh, NFQA_PACKET_HDR, sizeof(ph), &ph);
    if (skb_info) {
        uint32_t info = 0;
        if (skb_info & SLUICE_NFQ_SKB_CSUM_NOTREADY) info |= NFQA_SKB_CSUMNOTREADY;
        if (skb_info & SLUICE_NFQ_SKB_GSO) info |= NFQA_SKB_GSO;
        mnl_attr_put_u32(nlh, NFQA_SKB_INFO, htonl(info));
    }
    mnl_attr_put(nlh, NFQA_PAYLOAD, payload_len, payload);
    return (int)nlh->nlmsg_len;
}
