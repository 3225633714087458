"""Transport mode and the path MTU: an ESP packet over the SA's `mtu` must not be answered
with ICMP "too big" to the local stack. In transport mode the inner destination is the
peer the ESP goes to, so that ICMP lowered the kernel's path MTU towards the peer below
what the ESP packets themselves need: the kernel then refused them (IpFragFails) and TCP
retransmitted into the hole. Now the kernel's route decides: IPv4 ESP leaves without DF,
IPv6 ESP is sent whole when it fits the route.

The situation is made without a reload: the SAs say `mtu = 1400` on a 1500-byte link,
the MSS clamp is off, and the receiver advertises an MSS whose segments fit the link
once sealed (ESP up to ~1480 bytes) but not the SA's 1400."""
import pytest

from lab import Daemon, SAPair, two_hosts


def nstat(lab, ns, *names):
    out = lab.sh(ns, "nstat -az " + " ".join(names)).stdout
    values = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in names:
            values[parts[0]] = int(parts[1])
    return values


@pytest.mark.parametrize("family", ["v4", "v6"])
@pytest.mark.parametrize("gso", [False, True])
def test_transport_esp_over_the_sa_mtu_is_no_black_hole(lab, family, gso):
    a, b = two_hosts(lab)
    if family == "v4":
        ia, ib, plen, ip = "192.0.2.1", "192.0.2.2", 32, "ip"
        # b advertises MSS 1400: 1440-byte inner packets, 1476-byte ESP.
        lab.sh(b, f"ip route replace {ia}/32 dev vb advmss 1400")
        frag_fails = "IpFragFails"
    else:
        ia, ib, plen, ip = "2001:db8::1", "2001:db8::2", 128, "ip -6"
        lab.sh(b, f"ip -6 route replace {ia}/128 dev vb advmss 1380")
        frag_fails = "Ip6FragFails"
    pair = SAPair("transport", "aes128gcm16", ia, ib, f"{ia}/{plen}", f"{ib}/{plen}", extra="mtu = 1400")
    header = f"mss_clamp = false\ngso = {'true' if gso else 'false'}\n"
    da = Daemon(lab, a, "a", pair.config("a", "@HEADER@"), extra_header=header).start()
    db = Daemon(lab, b, "b", pair.config("b", "@HEADER@"), extra_header=header).start()
    before = nstat(lab, a, frag_fails)[frag_fails]
    cap = lab.capture(b, "vb", "wire")

    sent, got = lab.tcp_transfer(b, a, ib, nbytes=8_000_000, timeout=30)

    pcap = cap.stop()
    assert sent == got, "the 8 MB did not arrive intact"
    proto = "ip proto 50" if family == "v4" else "ip6 proto 50"
    over = lab.sh(None, f"tcpdump -nr {pcap} '{proto} and src {ia} and greater {14 + 1401}' 2>/dev/null | wc -l").stdout
    if not gso:  # with gso, whole packets are cut to fit the SA: only stray single segments go over
        assert int(over) > 0, "no ESP packet over the SA's 1400 bytes: the test did not make the situation"
    assert nstat(lab, a, frag_fails)[frag_fails] == before, "the kernel refused ESP packets (path MTU black hole)"
    route = lab.sh(a, f"{ip} route get {ib}").stdout
    assert " mtu " not in route, f"the path MTU towards the peer was lowered: {route}"
    queues = da.stats()["queues"]
    assert sum(q.get("icmpSent") or 0 for q in queues) == 0, "transport mode must not send ICMP too big to its own stack"
    assert da.drops() == {} and db.drops() == {}, (da.drops(), db.drops())
