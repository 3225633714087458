"""Issue 4: hostile packets are refused, each counted under its own reason, and the
daemon keeps serving. Policies: BYPASS in clear, DISCARD dropped, first match wins."""
import os
import time

from lab import Daemon, SAPair, clear_packets_between, inner_on_loopback, two_hosts
from test_interop import scapy_sa

HERE = os.path.dirname(__file__)


def send_packets(lab, ns, packets):
    path = lab.workdir / f"send-{time.time_ns()}.hex"
    path.write_text("\n".join(bytes(p).hex() for p in packets) + "\n")
    lab.sh(ns, f"/usr/bin/python3 {HERE}/send_raw.py {path}")
    time.sleep(0.5)


def test_attacks_are_refused_and_counted(lab):
    import random

    from scapy.layers.inet import ICMP, IP
    from scapy.layers.ipsec import ESP
    a, b = two_hosts(lab)
    lab.sh(b, "ip addr add 203.0.113.1/32 dev lo; ip route add 198.51.100.0/24 via 192.0.2.1 src 203.0.113.1")
    # Host a runs no Sluice here: scapy is the (hostile) peer, with a plain route for clear packets.
    lab.sh(a, "ip addr add 198.51.100.1/32 dev lo; ip route add 203.0.113.0/24 via 192.0.2.2")
    pair = SAPair("tunnel", "aes128gcm16", "192.0.2.1", "192.0.2.2", "198.51.100.0/24", "203.0.113.0/24")
    db = Daemon(lab, b, "b", pair.config("b", "@HEADER@")).start()
    sa = scapy_sa(pair, "ab")
    inner = IP(src="198.51.100.1", dst="203.0.113.1") / ICMP(id=7, seq=1) / (b"x" * 64)

    def good(seq):
        return sa.encrypt(inner, seq_num=seq)

    first = good(1)
    flipped = bytearray(bytes(good(2)))
    flipped[60] ^= 0x01
    unknown = good(3)
    unknown[ESP].spi = 0xdead
    truncated = bytearray(bytes(good(4))[:20 + 12])
    truncated[2:4] = len(truncated).to_bytes(2, "big")
    truncated = IP(bytes(truncated))
    truncated.chksum = None
    rng = random.Random(7)
    garbage = [IP(src="192.0.2.1", dst="192.0.2.2", proto=50) / bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
               for _ in range(10)]
    clear = IP(src="198.51.100.1", dst="203.0.113.1") / ICMP(id=9, seq=1)

    send_packets(lab, a, [first])
    assert db.sa("a-to-b")["packets"] == 1
    send_packets(lab, a, [first])                    # replay
    send_packets(lab, a, [IP(bytes(flipped))])       # flipped byte
    send_packets(lab, a, [unknown])                  # unknown SPI
    send_packets(lab, a, [truncated])                # truncated ESP
    send_packets(lab, a, garbage)                    # garbage of random length
    send_packets(lab, a, [clear])                    # clear, where PROTECT says encrypted
    drops = db.drops()
    assert drops.get("replay") == 1, drops
    assert drops.get("icv_mismatch", 0) >= 1, drops
    assert drops.get("unknown_spi", 0) >= 1, drops
    assert drops.get("truncated", 0) >= 1, drops
    assert drops.get("clear_protected") == 1, drops
    assert sum(drops.values()) >= 1 + 1 + 1 + 1 + 10 + 1, drops
    s = db.sa("a-to-b")
    assert s["replayDrops"] == 1 and s["icvFailures"] >= 1
    # Still serving: the next good packet is opened and answered through the tunnel.
    send_packets(lab, a, [good(5)])
    assert db.sa("a-to-b")["packets"] == 2
    assert db.sa("b-to-a")["packets"] == 2, "both echo requests were answered through the SA"
    assert db.proc.poll() is None


def test_policies_bypass_discard_first_match(lab):
    a, b = two_hosts(lab)
    inner_on_loopback(lab, a, b, "192.0.2.1", "192.0.2.2", "198.51.100.1/32", "203.0.113.1/32")
    lab.sh(b, "ip addr add 203.0.113.66/32 dev lo")
    lab.sh(a, "ip route add 203.0.113.66/32 via 192.0.2.2 src 198.51.100.1")
    pair = SAPair("tunnel", "aes128gcm16", "192.0.2.1", "192.0.2.2", "198.51.100.0/24", "203.0.113.0/24")
    # Before the protect policies: TCP port 5009 bypasses (first match wins), .66 is discarded.
    before = ('[[policy]]\ndirection = "out"\ndst = "203.0.113.1/32"\nprotocol = "tcp"\ndst_port = 5009\naction = "bypass"\n\n'
              '[[policy]]\ndirection = "in"\nsrc = "203.0.113.1/32"\nprotocol = "tcp"\nsrc_port = 5009\naction = "bypass"\n\n'
              '[[policy]]\ndirection = "out"\ndst = "203.0.113.66/32"\naction = "discard"\n\n')
    bypass_b = ('[[policy]]\ndirection = "out"\nsrc = "203.0.113.1/32"\nprotocol = "tcp"\nsrc_port = 5009\naction = "bypass"\n\n'
                '[[policy]]\ndirection = "in"\ndst = "203.0.113.1/32"\nprotocol = "tcp"\ndst_port = 5009\naction = "bypass"\n\n')
    da = Daemon(lab, a, "a", pair.config("a", "@HEADER@", before)).start()
    db = Daemon(lab, b, "b", pair.config("b", "@HEADER@", bypass_b)).start()
    # b needs a route back for the clear (bypassed) replies.
    cap = lab.capture(b, "vb", "wire")
    sent, got = lab.tcp_transfer(b, a, "203.0.113.1", nbytes=100_000, port=5009, src="198.51.100.1")
    assert sent == got
    lab.ping(a, "203.0.113.1", count=2, src="198.51.100.1")
    r = lab.ping(a, "203.0.113.66", count=2, src="198.51.100.1", check=False)
    pcap = cap.stop()
    assert r.returncode != 0, "DISCARD traffic must not get through"
    assert da.drops().get("policy_discard", 0) >= 2
    from lab import packets
    from scapy.layers.inet import TCP, ICMP
    clear = [p for p in packets(pcap) if p.haslayer(TCP) and 5009 in (p[TCP].sport, p[TCP].dport)]
    assert len(clear) > 10, "BYPASS traffic flows in clear"
    assert not [p for p in packets(pcap) if p.haslayer(ICMP) and p.haslayer("IP") and p["IP"].proto == 1
                and "203.0.113.1" in (p["IP"].src, p["IP"].dst)], "protected ping must not be in clear"
    assert not [p for p in packets(pcap) if p.haslayer("IP") and p["IP"].dst == "203.0.113.66"]
