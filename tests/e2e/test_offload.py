"""Issue 7's fast path: TCP taken whole from a GSO queue, cut and sealed in user space,
and decrypted TCP merged before the kernel's stack on the receiving side. Proven on the
wire (tshark decrypts every segment and checks its TCP checksum), end to end (SHA-256
of the data), and in the counters (the path was really taken)."""
import pytest

from lab import Daemon, SAPair, clear_packets_between, sluice_host_pair, tshark, two_hosts


def queue_totals(daemon, key):
    return sum(q.get(key) or 0 for q in daemon.stats()["queues"])


@pytest.mark.parametrize("gso", [True, False])
def test_tcp_whole_packets_leave_as_checked_esp_segments(lab, gso):
    a, b, pair, da, db, target, src = sluice_host_pair(lab, "tunnel", "aes128gcm16",
                                                       extra_header=f"gso = {'true' if gso else 'false'}\n")
    cap = lab.capture(b, "vb", "wire")
    sent, got = lab.tcp_transfer(b, a, target, nbytes=4_000_000, src=src)
    pcap = cap.stop()
    assert sent == got, "TCP payload corrupted through the tunnel"
    assert clear_packets_between(pcap, {src, target}) == []
    rows = tshark(lab, pcap, pair, ["esp.spi", "esp.sequence", "ip.len", "tcp.len", "tcp.checksum.status"],
                  options=("-o", "tcp.check_checksum:TRUE"))
    data = [r for r in rows if r[0] == f"{pair.spi_ab:#010x}" and r[3] not in ("", "0")]
    assert len(data) > 2000, f"expected the 4 MB as ESP segments, found {len(data)}"
    seqs = [int(r[1]) for r in rows if r[0] == f"{pair.spi_ab:#010x}"]
    assert len(seqs) == len(set(seqs)), "an ESP sequence number was sent twice"
    for spi, seq, ip_len, tcp_len, status in data:
        outer, inner = (int(x) for x in ip_len.split(",")[:2])
        assert outer <= 1500, f"ESP packet {seq} is {outer} bytes, over the SA's MTU"
        assert status == "1", f"tshark finds the inner TCP checksum of ESP packet {seq} wrong (status {status})"
    # Segments never exceed what the receiver advertised (its SYN-ACK's MSS, clamped to
    # fit the SA, less the 12 bytes of timestamps).
    assert max(int(r[3]) for r in data) <= 1423 - 12
    whole, segments, merged = queue_totals(da, "wholePackets"), queue_totals(da, "segments"), queue_totals(db, "coalesced")
    if gso:
        assert whole > 0 and segments >= 5 * whole, f"GSO path not taken: {whole} whole packets, {segments} segments"
        assert merged > 1000, f"the receiver merged only {merged} segments"
    else:
        assert whole == 0 and segments == 0 and merged == 0
    assert da.drops() == {} and db.drops() == {}, (da.drops(), db.drops())


def test_ipv6_transport_whole_packets(lab):
    a, b = two_hosts(lab)
    pair = SAPair("transport", "chacha20poly1305", "2001:db8::1", "2001:db8::2", "2001:db8::1/128", "2001:db8::2/128")
    da = Daemon(lab, a, "a", pair.config("a", "@HEADER@"), queues=2).start()
    db = Daemon(lab, b, "b", pair.config("b", "@HEADER@"), queues=2).start()
    cap = lab.capture(b, "vb", "wire")
    sent, got = lab.tcp_transfer(b, a, "2001:db8::2", nbytes=4_000_000)
    pcap = cap.stop()
    assert sent == got
    assert clear_packets_between(pcap, {"2001:db8::1", "2001:db8::2"}) == []
    assert queue_totals(da, "wholePackets") > 0 and queue_totals(db, "coalesced") > 0
    assert da.drops() == {} and db.drops() == {}


def test_forwarded_tcp_is_not_merged_past_the_mtu(lab):
    """Site to site: the gateway cuts the LAN host's whole packets, but the peer gateway
    must not merge what it forwards (a merged packet would not fit the LAN link)."""
    from test_sitetosite import site_to_site  # the four-namespace lab
    hosta, gwa, gwb, hostb, n, da, db = site_to_site(lab, "v4", "v4")
    cap = lab.capture(hostb, "lb", "lan")
    sent, got = lab.tcp_transfer(hostb, hosta, n["host_b"], nbytes=4_000_000)
    pcap = cap.stop()
    assert sent == got
    from lab import packets
    sizes = [len(p) for p in packets(pcap)]
    assert sizes and max(sizes) <= 1514, f"a {max(sizes)}-byte frame on the 1500-byte LAN link"
    assert queue_totals(da, "wholePackets") > 0, "GRO'd / GSO packets from the LAN host are taken whole"
    assert queue_totals(db, "coalesced") == 0, "forwarded traffic must never be merged"
    assert da.drops() == {} and db.drops() == {}
