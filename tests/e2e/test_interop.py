"""Issue 4: what independent ESP implementations see. tshark and scapy decrypt Sluice's
packets; scapy acts as a peer that Sluice serves."""
import hashlib
import hmac
import json
import os
import subprocess
import sys

import pytest

from lab import TSHARK_NAMES, Daemon, SAPair, esp_packets, sluice_host_pair, tshark, two_hosts

ENC_LEN = {"aes128-sha256": 16, "aes256-sha256": 32}


def tunnel_pair(lab, proposal, mode="tunnel", esn=False):
    return sluice_host_pair(lab, mode, proposal, esn=esn)


@pytest.mark.parametrize("proposal", list(TSHARK_NAMES))
@pytest.mark.parametrize("mode", ["tunnel", "transport"])
def test_tshark_decrypts_sluice(lab, proposal, mode):
    a, b, pair, da, db, target, src = tunnel_pair(lab, proposal, mode)
    src = src if mode == "tunnel" else None
    cap = lab.capture(b, "vb", "wire")
    lab.ping(a, target, count=5, src=src)
    sent, got = lab.tcp_transfer(b, a, target, nbytes=200_000, src=src)
    pcap = cap.stop()
    assert sent == got
    rows = tshark(lab, pcap, pair, ["esp.spi", "ip.src", "icmp.type", "tcp.srcport", "esp.icv_good", "esp.icv_bad"])
    assert len(rows) >= 50
    inner = ({"198.51.100.1", "203.0.113.1"} if mode == "tunnel" else {"192.0.2.1", "192.0.2.2"})
    for spi, ips, icmp_type, tcp_port, good, bad in rows:
        # Decrypted, tshark dissects the payload: the inner header (tunnel) and ICMP or TCP.
        if mode == "tunnel":
            assert set(ips.split(",")) & inner, f"tshark could not decrypt SPI {spi}: {ips}"
        assert icmp_type or tcp_port, f"tshark found no ICMP or TCP inside SPI {spi}"
        if pair.proposal in ENC_LEN:
            assert good == "1" and bad != "1", f"tshark says the HMAC ICV of SPI {spi} is bad"


def scapy_sa(pair, direction, esn=None):
    from scapy.layers.inet import IP
    from scapy.layers.ipsec import ESP, SecurityAssociation
    spi, key, src, dst = ((pair.spi_ab, pair.key_ab, "192.0.2.1", "192.0.2.2") if direction == "ab"
                          else (pair.spi_ba, pair.key_ba, "192.0.2.2", "192.0.2.1"))
    algos = {"aes128gcm16": ("AES-GCM", None), "aes256gcm16": ("AES-GCM", None), "chacha20poly1305": ("CHACHA20-POLY1305", None),
             "aes128-sha256": ("AES-CBC", 16), "aes256-sha256": ("AES-CBC", 32)}
    crypt, n = algos[pair.proposal]
    k = bytes.fromhex(key)
    return SecurityAssociation(ESP, spi=spi, crypt_algo=crypt, crypt_key=k if n is None else k[:n],
                               auth_algo="NULL" if n is None else "SHA2-256-128", auth_key=None if n is None else k[n:],
                               tunnel_header=IP(src=src, dst=dst) if pair.mode == "tunnel" else None)


@pytest.mark.parametrize("proposal", ["aes128gcm16", "aes256gcm16", "chacha20poly1305", "aes128-sha256", "aes256-sha256"])
def test_scapy_decrypts_byte_for_byte(lab, proposal):
    """scapy opens every captured packet, and sealing the plaintext again with the same
    sequence number and IV gives back the very same bytes: padding, trailer, ICV."""
    from scapy.layers.inet import IP, ICMP
    from scapy.layers.ipsec import ESP
    a, b, pair, da, db, target, src = tunnel_pair(lab, proposal)
    cap = lab.capture(b, "vb", "wire")
    lab.ping(a, target, count=4, src=src, size=100)
    pcap = cap.stop()
    sa = scapy_sa(pair, "ab")
    checked = 0
    for p in esp_packets(pcap):
        if p[ESP].spi != pair.spi_ab:
            continue
        outer = p[IP]
        clear = sa.decrypt(outer.copy())
        assert clear.src == "198.51.100.1" and clear.dst == "203.0.113.1" and clear.haslayer(ICMP)
        esp = bytes(outer[ESP])
        iv = esp[8:8 + (16 if proposal in ENC_LEN else 8)]
        again = sa.encrypt(clear, seq_num=outer[ESP].seq, iv=iv)
        assert bytes(again[ESP]) == esp, "scapy's re-encryption differs from Sluice's bytes"
        checked += 1
    assert checked == 4


@pytest.mark.parametrize("proposal", ["aes128gcm16", "aes128-sha256"])
def test_esn_on_the_wire(lab, proposal):
    """With ESN, seq-high is in the AAD (AEAD, checked by scapy) or appended to the HMAC
    input (checked here by hand: scapy 2.5 leaves it out of the ICV)."""
    from scapy.layers.inet import IP
    from scapy.layers.ipsec import ESP
    a, b, pair, da, db, target, src = tunnel_pair(lab, proposal, esn=True)
    cap = lab.capture(b, "vb", "wire")
    lab.ping(a, target, count=3, src=src)
    pcap = cap.stop()
    packets = [p for p in esp_packets(pcap) if p[ESP].spi == pair.spi_ab]
    assert len(packets) == 3
    for p in packets:
        esp = bytes(p[IP][ESP])
        if proposal in ENC_LEN:
            ikey = bytes.fromhex(pair.key_ab)[ENC_LEN[proposal]:]
            mac = hmac.new(ikey, esp[:-16] + (0).to_bytes(4, "big"), hashlib.sha256).digest()[:16]
            assert mac == esp[-16:], "ICV must cover SPI..ciphertext plus seq-high (RFC 4303 2.2.1)"
            without = hmac.new(ikey, esp[:-16], hashlib.sha256).digest()[:16]
            assert without != esp[-16:]
        else:
            clear = scapy_sa(pair, "ab").decrypt(p[IP].copy(), esn_en=True, esn=0)
            assert clear.dst == "203.0.113.1"


@pytest.mark.parametrize("proposal", ["aes128gcm16", "chacha20poly1305", "aes256-sha256"])
@pytest.mark.parametrize("mode", ["tunnel", "transport"])
def test_scapy_as_peer(lab, proposal, mode):
    """scapy seals requests; Sluice opens them and the host answers through Sluice;
    scapy opens the answers."""
    a, b = two_hosts(lab)
    if mode == "tunnel":
        lab.sh(b, "ip addr add 203.0.113.1/32 dev lo; ip route add 198.51.100.0/24 via 192.0.2.1 src 203.0.113.1")
        pair = SAPair("tunnel", proposal, "192.0.2.1", "192.0.2.2", "198.51.100.0/24", "203.0.113.0/24")
        inner_src, inner_dst = "198.51.100.1", "203.0.113.1"
    else:
        pair = SAPair("transport", proposal, "192.0.2.1", "192.0.2.2", "192.0.2.1/32", "192.0.2.2/32")
        inner_src, inner_dst = "192.0.2.1", "192.0.2.2"
    db = Daemon(lab, b, "b", pair.config("b", "@HEADER@")).start()
    spec = {"mode": mode, "proposal": proposal, "spi_out": pair.spi_ab, "key_out": pair.key_ab, "spi_in": pair.spi_ba,
            "key_in": pair.key_ba, "local": "192.0.2.1", "remote": "192.0.2.2", "inner_src": inner_src,
            "inner_dst": inner_dst, "iface": "va", "count": 5}
    # Host a has no Sluice: keep its kernel from answering the ESP it does not know.
    lab.sh(a, "nft add table inet peer; nft add chain inet peer in '{ type filter hook input priority 0; }';"
              " nft add rule inet peer in meta l4proto esp drop")
    r = lab.sh(a, f"/usr/bin/python3 {os.path.dirname(__file__)}/scapy_peer.py '{json.dumps(spec)}'", timeout=60)
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["errors"] == []
    assert report["replies"] == 5, report
    sa = db.sa("a-to-b")
    assert sa["packets"] == 5 and sa["sequence"] == 5
    assert db.drops() == {}
