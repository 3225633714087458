"""The strongSwan harness on its own (no Sluice): two charons build a PSK tunnel between
gw-a (192.0.2.1, inner 198.51.100.1) and gw-b (192.0.2.2, inner 203.0.113.1). What they do
here is the reference behaviour the Sluice interop tests compare against."""
import os
import subprocess

import pytest

import lab as labmod
from strongswan import Secret, StrongSwan, child, connection, psk

NEEDS_SLUICE = False
NEEDS_STRONGSWAN = True

IKE_PROPOSAL = "aes128gcm16-prfsha256-x25519"
ESP_PROPOSAL = "aes128gcm16"


def gateways(lab):
    """gw-a and gw-b with charon running and the connection "gw" (child "net") loaded."""
    a, b = lab.host("gwa"), lab.host("gwb")
    lab.link(a, "va", b, "vb")
    for ns, dev, outer, inner in ((a, "va", "192.0.2.1/24", "198.51.100.1/32"), (b, "vb", "192.0.2.2/24", "203.0.113.1/32")):
        # IPv4 only on the link, so that every frame of the capture is accounted for.
        lab.sh(ns, f"sysctl -qw net.ipv6.conf.{dev}.disable_ipv6=1; ip addr add {outer} dev {dev}; ip addr add {inner} dev lo")
    key = Secret.random()

    def peer(ns, name, local, remote, local_net, remote_net, local_id, remote_id):
        conn = connection(local, remote, local_id=local_id, remote_id=remote_id, proposals=IKE_PROPOSAL,
                          children={"net": child(local_net, remote_net, esp_proposals=ESP_PROPOSAL)})
        s = StrongSwan(lab, ns, name, connections={"gw": conn}, secrets={"ike-gw": psk(key, local_id, remote_id)})
        s.start()
        s.load()
        return s

    sa = peer(a, "gw-a", "192.0.2.1", "192.0.2.2", "198.51.100.0/24", "203.0.113.0/24", "gw-a", "gw-b")
    sb = peer(b, "gw-b", "192.0.2.2", "192.0.2.1", "203.0.113.0/24", "198.51.100.0/24", "gw-b", "gw-a")
    return a, b, sa, sb, key


def one_ike(sas):
    assert len(sas) == 1, sas
    return sas[0]


def wire_summary(pcap):
    """Every IPv4 packet of the capture classified: ike500, ike4500, esp (with SPIs per
    direction), keepalive; anything else is returned in `other`."""
    from scapy.layers.inet import IP, UDP
    out = {"ike500": 0, "ike4500": 0, "keepalive": 0, "esp": {}, "other": []}
    for p in labmod.packets(pcap):
        if not p.haslayer(IP):
            continue
        ip = p[IP]
        if not p.haslayer(UDP) or (ip[UDP].sport, ip[UDP].dport) not in ((500, 500), (4500, 4500)):
            out["other"].append(p.summary())
            continue
        payload = bytes(ip[UDP].payload)
        if ip[UDP].dport == 500:
            out["ike500"] += 1
        elif payload == b"\xff":
            out["keepalive"] += 1
        elif payload[:4] == b"\0\0\0\0":
            out["ike4500"] += 1
        else:
            spis = out["esp"].setdefault((ip.src, ip.dst), {})
            spi = int.from_bytes(payload[:4], "big")
            spis[spi] = spis.get(spi, 0) + 1
    return out


def test_psk_tunnel_reference(lab):
    a, b, sa, sb, key = gateways(lab)
    cap = lab.capture(a, "va", "wire")
    progress = sa.initiate(child="net")
    assert "CHILD_SA net{1} established" in progress

    ia, ib = one_ike(sa.list_sas()), one_ike(sb.list_sas())
    for ike in (ia, ib):
        assert ike.state == "ESTABLISHED" and ike.version == 2
        assert (ike.encr_alg, ike.encr_keysize, ike.prf_alg, ike.dh_group) == ("AES_GCM_16", 128, "PRF_HMAC_SHA2_256",
                                                                               "CURVE_25519")
        # kernel-libipsec needs ESP-in-UDP, so each side fakes its NAT_DETECTION_SOURCE_IP:
        # each believes the other is behind a NAT, and IKE moved to port 4500.
        assert ike.nat_remote and not ike.nat_local
        assert ike.local_port == ike.remote_port == 4500
    assert ia.initiator and not ib.initiator
    assert (ia.spi_i, ia.spi_r) == (ib.spi_i, ib.spi_r)
    assert (ia.local_id, ia.remote_id, ib.local_id, ib.remote_id) == ("gw-a", "gw-b", "gw-b", "gw-a")

    ca, cb = ia.child("net"), ib.child("net")
    assert ca.spi_in == cb.spi_out and ca.spi_out == cb.spi_in and ca.spi_in != ca.spi_out
    for c in (ca, cb):
        assert (c.mode, c.protocol, c.encap, c.encr_alg, c.encr_keysize, c.esn) == ("TUNNEL", "ESP", True,
                                                                                  "AES_GCM_16", 128, False)
    assert (ca.local_ts, ca.remote_ts) == (["198.51.100.0/24"], ["203.0.113.0/24"])
    assert (cb.local_ts, cb.remote_ts) == (["203.0.113.0/24"], ["198.51.100.0/24"])

    r = lab.ping(a, "203.0.113.1", count=5, src="198.51.100.1")
    assert " 0% packet loss" in r.stdout
    wire = wire_summary(cap.stop())
    assert wire["other"] == [], f"clear traffic on the link: {wire['other'][:5]}"
    assert wire["ike500"] == 2, "IKE_SA_INIT request and response on 500, then 4500"
    assert wire["ike4500"] >= 2, "IKE_AUTH on 4500 with the non-ESP marker"
    # ESP-in-UDP both ways, each under the SPI the receiver chose.
    assert wire["esp"] == {("192.0.2.1", "192.0.2.2"): {ca.spi_out: 5}, ("192.0.2.2", "192.0.2.1"): {cb.spi_out: 5}}

    ca, cb = one_ike(sa.list_sas()).child("net"), one_ike(sb.list_sas()).child("net")
    assert ca.packets_out == cb.packets_in == 5 and cb.packets_out == ca.packets_in == 5
    assert ca.bytes_out == cb.bytes_in > 0

    # The PSK is in neither log (charon, level <= 2) nor repr.
    for s in (sa, sb):
        raw = s.log_path.read_text() + s.out_path.read_text()
        assert "authentication of 'gw-a'" in raw
        assert not any(form in raw for form in key.forms())
    # (a bool, so that a failing assert cannot print the key itself)
    leaked = key.config_value()[2:] in repr(sa.secrets) + repr(key)
    assert "hidden" in repr(key) and not leaked


def test_rekey_and_terminate(lab):
    a, b, sa, sb, _ = gateways(lab)
    sa.initiate(child="net")
    old_a = one_ike(sa.list_sas()).child("net")
    old_b = one_ike(sb.list_sas()).child("net")

    sa.rekey(child="net")

    def rekeyed(sas, old):
        live = [c for ike in sas for c in ike.children if c.name == "net" and c.state == "INSTALLED"]
        return len(live) == 1 and live[0].spi_in != old.spi_in and live[0].spi_out != old.spi_out

    new_a = one_ike(sa.wait_sas(lambda s: rekeyed(s, old_a), what="the rekeyed CHILD_SA")).child("net")
    new_b = one_ike(sb.wait_sas(lambda s: rekeyed(s, old_b), what="the rekeyed CHILD_SA")).child("net")
    assert new_a.spi_in == new_b.spi_out and new_a.spi_out == new_b.spi_in
    assert {new_a.spi_in, new_a.spi_out}.isdisjoint({old_a.spi_in, old_a.spi_out})
    lab.ping(a, "203.0.113.1", count=3, src="198.51.100.1")
    assert one_ike(sb.list_sas()).child("net").packets_in == 3

    # Rekeying the IKE_SA gives new IKE SPIs on both sides and keeps the CHILD_SA.
    old_ike = one_ike(sa.list_sas())
    sa.rekey(ike="gw")
    moved = lambda s: (len(s) == 1 and s[0].state == "ESTABLISHED" and s[0].spi_i != old_ike.spi_i
                       and any(c.state == "INSTALLED" for c in s[0].children))
    ia = one_ike(sa.wait_sas(moved, what="the rekeyed IKE_SA"))
    ib = one_ike(sb.wait_sas(moved, what="the rekeyed IKE_SA"))
    assert (ia.spi_i, ia.spi_r) == (ib.spi_i, ib.spi_r)
    assert ia.child("net").spi_in == new_a.spi_in

    sa.terminate(child="net")
    no_child = lambda s: len(s) == 1 and not [c for c in s[0].children if c.state == "INSTALLED"]
    sa.wait_sas(no_child, what="the CHILD_SA to go")
    sb.wait_sas(no_child, what="the CHILD_SA to go (peer's DELETE)")
    assert lab.ping(a, "203.0.113.1", count=1, src="198.51.100.1", check=False).returncode != 0

    sa.terminate(ike="gw")
    sa.wait_sas(lambda s: s == [], what="the IKE_SA to go")
    sb.wait_sas(lambda s: s == [], what="the IKE_SA to go (peer's DELETE)")


def test_lab_removes_charon_even_when_the_test_fails(monkeypatch):
    monkeypatch.delenv("SLUICE_KEEP_WORKDIR", raising=False)
    with pytest.raises(RuntimeError, match="failing on purpose"):
        with labmod.Lab("sscln") as l:
            ns = l.host("gw")
            s = StrongSwan(l, ns, "gw").start()
            first = s.proc.pid
            assert "ipsec0" in l.sh(ns, "ip -o link").stdout, "kernel-libipsec makes its TUN device"
            s.kill9()
            assert not s.running() and "ipsec0" not in l.sh(ns, "ip -o link").stdout
            s.start()
            assert s.list_sas() == [] and s.stop() == 0, "SIGTERM is a clean stop"
            s.start()
            pid, workdir, prefix = s.proc.pid, l.workdir, l.prefix
            assert pid != first and s.running()
            raise RuntimeError("failing on purpose")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert prefix not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not workdir.exists()
