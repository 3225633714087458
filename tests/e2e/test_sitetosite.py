"""Issue 4: site-to-site gateways (four namespaces) and every proposal in both modes:
ping, a TCP transfer of 8 MB compared by checksum, UDP datagrams of 64 to 1400 bytes."""
import subprocess
import time

import pytest

from lab import Daemon, SAPair, clear_packets_between, esp_packets, sluice_host_pair

NETS = {
    "v4": {"lan_a": "198.51.100.0/24", "lan_b": "203.0.113.0/24", "host_a": "198.51.100.10", "host_b": "203.0.113.10",
           "gw_a_lan": "198.51.100.1", "gw_b_lan": "203.0.113.1", "plen": 24},
    "v6": {"lan_a": "2001:db8:a::/64", "lan_b": "2001:db8:b::/64", "host_a": "2001:db8:a::10", "host_b": "2001:db8:b::10",
           "gw_a_lan": "2001:db8:a::1", "gw_b_lan": "2001:db8:b::1", "plen": 64},
}
WAN = {"v4": ("192.0.2.1", "192.0.2.2"), "v6": ("2001:db8::1", "2001:db8::2")}


def site_to_site(lab, inner, outer, proposal="aes128gcm16"):
    n = NETS[inner]
    hosta, gwa, gwb, hostb = lab.host("ha"), lab.host("ga"), lab.host("gb"), lab.host("hb")
    lab.link(hosta, "la", gwa, "lga")
    lab.link(gwa, "wa", gwb, "wb")
    lab.link(gwb, "lgb", hostb, "lb")
    six = "-6 " if inner == "v6" else ""
    lab.sh(hosta, f"ip {six}addr add {n['host_a']}/{n['plen']} dev la nodad; ip {six}route add default via {n['gw_a_lan']}")
    lab.sh(hostb, f"ip {six}addr add {n['host_b']}/{n['plen']} dev lb nodad; ip {six}route add default via {n['gw_b_lan']}")
    lab.sh(gwa, f"ip {six}addr add {n['gw_a_lan']}/{n['plen']} dev lga nodad")
    lab.sh(gwb, f"ip {six}addr add {n['gw_b_lan']}/{n['plen']} dev lgb nodad")
    wa, wb = WAN[outer]
    wplen = 24 if outer == "v4" else 64
    o6 = "-6 " if outer == "v6" else ""
    lab.sh(gwa, f"ip {o6}addr add {wa}/{wplen} dev wa nodad")
    lab.sh(gwb, f"ip {o6}addr add {wb}/{wplen} dev wb nodad")
    # The gateways route the other LAN towards the WAN; Sluice seals it before routing.
    if inner == outer:
        lab.sh(gwa, f"ip {six}route add {n['lan_b']} via {wb}")
        lab.sh(gwb, f"ip {six}route add {n['lan_a']} via {wa}")
    else:
        lab.sh(gwa, f"ip {six}route add {n['lan_b']} dev wa")
        lab.sh(gwb, f"ip {six}route add {n['lan_a']} dev wb")
    pair = SAPair("tunnel", proposal, wa, wb, n["lan_a"], n["lan_b"], esn=True)
    da = Daemon(lab, gwa, "ga", pair.config("a", "@HEADER@")).start()
    db = Daemon(lab, gwb, "gb", pair.config("b", "@HEADER@")).start()
    return hosta, gwa, gwb, hostb, n, da, db


def udp_sizes(lab, server_ns, client_ns, server, sizes, port=5300):
    """Sends one datagram per size and expects each echoed back unchanged. A datagram that
    no longer fits the path once ESP is added is refused with ICMP "too big"; like any
    application, the client then sends it again and the kernel, having learned the path
    MTU, fragments it."""
    fam = "socket.AF_INET6" if ":" in server else "socket.AF_INET"
    srv = lab.popen(server_ns, f"python3 -c \"import socket;s=socket.socket({fam},socket.SOCK_DGRAM);s.bind(('{server}',{port}));"
                               f"s.settimeout(20)\nwhile True:\n d,a=s.recvfrom(65535)\n s.sendto(d,a)\"",
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    r = lab.sh(client_ns, f"python3 -c \"import socket,os;c=socket.socket({fam},socket.SOCK_DGRAM);c.settimeout(3);ok=0\n"
                          f"for n in {sizes}:\n d=os.urandom(n);c.sendto(d,('{server}',{port}))\n"
                          f" for attempt in range(3):\n  try:\n   ok+=c.recvfrom(65535)[0]==d\n   break\n  except socket.timeout:\n   c.sendto(d,('{server}',{port}))\nprint(ok)\"")
    srv.kill()
    return int(r.stdout.strip())


@pytest.mark.parametrize("inner,outer", [("v4", "v4"), ("v6", "v6"), ("v4", "v6"), ("v6", "v4")])
def test_site_to_site(lab, inner, outer):
    hosta, gwa, gwb, hostb, n, da, db = site_to_site(lab, inner, outer)
    cap = lab.capture(gwb, "wb", "wan")
    lab.ping(hosta, n["host_b"], count=3)
    sent, got = lab.tcp_transfer(hostb, hosta, n["host_b"], nbytes=8_000_000)
    sizes = [64, 128, 256, 512, 1000, 1200, 1400]
    assert udp_sizes(lab, hostb, hosta, n["host_b"], sizes) == len(sizes)
    pcap = cap.stop()
    assert sent == got
    assert clear_packets_between(pcap, {n["host_a"], n["host_b"]}) == []
    assert len(esp_packets(pcap)) > 1000
    assert db.sa("a-to-b")["packets"] > 1000 and da.sa("b-to-a")["packets"] > 100
    # The only refusals allowed: datagrams too big for the path, answered with ICMP.
    assert set(da.drops()) <= {"too_big"} and set(db.drops()) <= {"too_big"}, (da.drops(), db.drops())
    if inner == "v6" or outer == "v6":
        assert da.drops().get("too_big", 0) >= 1, "1400 bytes + ESP + a v6 header exceed 1500: ICMP too big expected"
        assert sum(q["icmpSent"] for q in da.stats()["queues"]) >= 1


PROPOSALS = ["aes128gcm16", "aes256gcm16", "chacha20poly1305", "aes128-sha256"]


@pytest.mark.parametrize("proposal", PROPOSALS)
@pytest.mark.parametrize("mode", ["tunnel", "transport"])
def test_every_proposal(lab, proposal, mode):
    a, b, pair, da, db, target, src = sluice_host_pair(lab, mode, proposal)
    cap = lab.capture(b, "vb", "wire")
    lab.ping(a, target, count=3, src=src)
    sent, got = lab.tcp_transfer(b, a, target, nbytes=8_000_000, src=src)
    sizes = list(range(64, 1401, 96)) + [1400]
    ok = udp_sizes(lab, b, a, target, sizes) if mode == "tunnel" else None
    pcap = cap.stop()
    assert sent == got
    if ok is not None:
        assert ok == len(sizes)
    assert clear_packets_between(pcap, {src, target}) == []
    assert set(db.drops()) <= {"too_big"} and set(da.drops()) <= {"too_big"}
