"""IKEv2 with X.509 certificates (RFC 7296 §2.15, RFC 7427) between Sluice (gw-a, 192.0.2.1,
inner 198.51.100.1) and strongSwan 5.9.8 (gw-b, 192.0.2.2, inner 203.0.113.1). The CA and
the gateways' certificates are made here with strongSwan's pki; both ends verify the other's
certificate against the CA, identities are the subject DNs. Both directions of initiation,
with ECDSA and with RSA keys, traffic through the tunnel; a certificate from another CA is
refused with AUTHENTICATION_FAILED. With a small fragment_size on both ends, IKE_AUTH goes in
IKE fragments (RFC 7383) both ways, and no IP fragment is ever on the wire."""
import os
import subprocess
import time

import pytest

import lab as labmod
from ike_lab import connection as sluice_connection, control, ike_config, list_sas, wait_child
from lab import Daemon
from strongswan import StrongSwan, child, connection

NEEDS_STRONGSWAN = True

DN_A = "CN=gw-a, O=Sluice Test"
DN_B = "CN=gw-b, O=Sluice Test"
# pki's key types and sizes: with the default fragment_size (1280) both keep IKE_AUTH in one datagram.
KINDS = {"ecdsa": ("ecdsa", "256"), "rsa": ("rsa", "2048")}
# What charon logs for the RFC 7427 (AUTH method 14) signature each kind of key makes.
SCHEMES = {"ecdsa": "ECDSA_WITH_SHA256_DER", "rsa": "RSA_EMSA_PKCS1_SHA2_256"}


class PKI:
    """A CA made with pki in `directory`, and certificates it issues."""

    def __init__(self, directory, name, kind="ecdsa"):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key, self.cert = self.dir / f"{name}.key", self.dir / f"{name}.pem"
        self._key(self.key, kind)
        self._pki("--self", "--ca", "--in", str(self.key), "--type", "priv", "--lifetime", "30",
                  "--dn", f"O=Sluice Test, CN={name}", "--outform", "pem", out=self.cert)

    @staticmethod
    def _pki(*args, out=None, stdin=None):
        r = subprocess.run(["pki", *args], input=stdin, capture_output=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"pki {' '.join(args)}: exit {r.returncode}: {r.stderr.decode(errors='replace')[-1500:]}")
        if out is not None:
            out.write_bytes(r.stdout)
            os.chmod(out, 0o600)
        return r.stdout

    def _key(self, path, kind):
        t, size = KINDS[kind]
        self._pki("--gen", "--type", t, "--size", size, "--outform", "pem", out=path)

    def issue(self, name, dn, kind, sans=()):
        """A key and a certificate for `dn` (subjectAltNames `sans`): their paths."""
        key, cert = self.dir / f"{name}.key", self.dir / f"{name}.pem"
        self._key(key, kind)
        pub = self._pki("--pub", "--in", str(key), "--type", "priv")
        args = ["--issue", "--cacert", str(self.cert), "--cakey", str(self.key), "--dn", dn, "--lifetime", "30",
                "--outform", "pem"]
        for s in sans:
            args += ["--san", s]
        self._pki(*args, out=cert, stdin=pub)
        return cert, key


def gateways(lab, kind, swan_pki=None, sluice_ike="", swan_settings=None):
    """Sluice on gw-a, strongSwan on gw-b, each with a `kind` certificate from one CA (or,
    for strongSwan, from `swan_pki`'s CA). `sluice_ike`: more [ike] keys for Sluice;
    `swan_settings`: charon settings. Returns (a, b, sluice daemon, strongSwan)."""
    a, b = lab.host("gwa"), lab.host("gwb")
    lab.link(a, "va", b, "vb")
    for ns, dev, outer, inner in ((a, "va", "192.0.2.1/24", "198.51.100.1/32"), (b, "vb", "192.0.2.2/24", "203.0.113.1/32")):
        lab.sh(ns, f"sysctl -qw net.ipv6.conf.{dev}.disable_ipv6=1; ip addr add {outer} dev {dev}; ip addr add {inner} dev lo")
    lab.sh(a, "ip route add 203.0.113.0/24 via 192.0.2.2 src 198.51.100.1")
    ca = PKI(lab.workdir / "pki", "Sluice Test CA", kind)
    cert_a, key_a = ca.issue("gw-a", DN_A, kind, sans=("gw-a.example", "192.0.2.1"))
    cert_b, key_b = (swan_pki or ca).issue("gw-b", DN_B, kind, sans=("gw-b.example", "192.0.2.2"))

    conf = sluice_connection("gw-b", "192.0.2.1", "192.0.2.2", "net", ["198.51.100.0/24"], ["203.0.113.0/24"],
                             remote_id=DN_B, pubkey=(cert_a, key_a, [ca.cert]))
    da = Daemon(lab, a, "sluice", ike_config(conf) + sluice_ike).start()

    swan_conn = connection("192.0.2.2", "192.0.2.1", auth="pubkey", local_id=DN_B, remote_id=DN_A,
                           local={"certs": "gw-b.pem"},
                           children={"net": child("203.0.113.0/24", "198.51.100.0/24", esp_proposals="aes128gcm16")})
    sw = StrongSwan(lab, b, "gw-b", connections={"gw": swan_conn}, settings=swan_settings)
    sw.add_credential("x509", "gw-b.pem", cert_b.read_bytes())
    sw.add_credential(KINDS[kind][0], "gw-b.key", key_b.read_bytes())
    sw.add_credential("x509ca", "ca.pem", ca.cert.read_bytes())
    sw.start()
    sw.load()
    return a, b, da, sw


def ike_datagrams(pcap):
    """(source, length of the UDP payload) of every IKE message in a capture."""
    from scapy.layers.inet import IP, UDP
    out = []
    for p in labmod.packets(pcap):
        if p.haslayer(UDP) and p[UDP].dport in (500, 4500):
            payload = bytes(p[UDP].payload)
            if p[UDP].dport == 500 or payload[:4] == b"\0\0\0\0":
                out.append((p[IP].src, len(payload)))
    return out


def both_views_agree(da, sw):
    ours = [s for s in list_sas(da) if s["state"] == "ESTABLISHED"]
    theirs = sw.list_sas()
    assert len(ours) == 1 and len(theirs) == 1, (ours, theirs)
    assert ours[0]["remoteID"] == DN_B and ours[0]["localID"] == DN_A, ours[0]
    assert theirs[0].remote_id == DN_A and theirs[0].local_id == DN_B, theirs[0]
    assert (ours[0]["spiI"], ours[0]["spiR"]) == (theirs[0].spi_i, theirs[0].spi_r)
    kid = [c for c in ours[0]["children"] if c["state"] == "INSTALLED"]
    assert len(kid) == 1 and int(kid[0]["spiIn"], 16) == theirs[0].child("net").spi_out


@pytest.mark.parametrize("kind", ["ecdsa", "rsa"])
def test_strongswan_initiates(lab, kind):
    a, b, da, sw = gateways(lab, kind)
    cap = lab.capture(a, "va", "wire")
    out = sw.initiate(child="net")
    assert "CHILD_SA net{1} established" in out, out
    wait_child(da, "net")
    both_views_agree(da, sw)
    lab.ping(b, "198.51.100.1", count=5, src="203.0.113.1")
    log = da.log.read_text()
    assert f"established with 192.0.2.2:4500 ({DN_B})" in log, log
    assert f"authentication of '{DN_A}' with {SCHEMES[kind]} successful" in sw.log(), sw.log()[-3000:]
    sizes = ike_datagrams(cap.stop())
    # For the note (pytest -s): the largest IKE datagram (RSA: fragments of the default 1280).
    print(f"{kind}: largest IKE message {max(n for _, n in sizes)} bytes")


@pytest.mark.parametrize("kind", ["ecdsa", "rsa"])
def test_sluice_initiates(lab, kind):
    a, b, da, sw = gateways(lab, kind)
    r = control(da, "initiate", "--child", "net")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_child(da, "net")
    both_views_agree(da, sw)
    lab.ping(a, "203.0.113.1", count=5, src="198.51.100.1")
    assert f"authentication of '{DN_A}' with {SCHEMES[kind]} successful" in sw.log(), sw.log()[-3000:]
    assert f"authentication of '{DN_B}' (myself) with {SCHEMES[kind]} successful" in sw.log()


def test_certificate_from_another_ca_is_refused(lab):
    rogue = PKI(lab.workdir / "rogue", "Rogue CA", "ecdsa")
    a, b, da, sw = gateways(lab, "ecdsa", swan_pki=rogue)
    # strongSwan must trust its own (rogue) CA too, or it refuses to use the certificate at all.
    sw.add_credential("x509ca", "rogue.pem", rogue.cert.read_bytes())
    sw.load()
    r = sw._swanctl(["--initiate", "--child", "net", "--timeout", "8"], check=False)
    assert r.returncode != 0
    deadline = time.time() + 5
    while time.time() < deadline and "AUTHENTICATION_FAILED" not in da.log.read_text():
        time.sleep(0.2)
    log = da.log.read_text()
    assert "is issued by \"O=Sluice Test, CN=Rogue CA\", an unknown CA (not in ca_certs) (AUTHENTICATION_FAILED)" in log, log
    assert list_sas(da) == []
    assert "AUTHENTICATION_FAILED" in sw.log()
    # And the other way: Sluice initiating refuses strongSwan's answer, and tells it.
    assert control(da, "initiate", "--child", "net").returncode == 0
    deadline = time.time() + 8
    while time.time() < deadline and log.count("unknown CA") == da.log.read_text().count("unknown CA"):
        time.sleep(0.2)
    assert da.log.read_text().count("an unknown CA (not in ca_certs) (AUTHENTICATION_FAILED)") == 2, da.log.read_text()
    assert list_sas(da) == []
    deadline = time.time() + 5
    while time.time() < deadline and sw.list_sas():
        time.sleep(0.2)
    assert sw.list_sas() == [], "strongSwan deleted its IKE SA on our AUTHENTICATION_FAILED"


def ike_on_the_wire(pcap):
    """(source, first payload type, UDP payload length, IP-fragmented) of every IKE datagram
    (port 500, or 4500 with the non-ESP marker), and the count of IP fragments seen at all."""
    from scapy.layers.inet import IP, UDP
    out, ip_fragments = [], 0
    for p in labmod.packets(pcap):
        if not p.haslayer(IP):
            continue
        if p[IP].flags.MF or p[IP].frag:
            ip_fragments += 1
        if p.haslayer(UDP) and p[UDP].dport in (500, 4500):
            payload = bytes(p[UDP].payload)
            ike = payload if p[UDP].dport == 500 else payload[4:] if payload[:4] == b"\0\0\0\0" else None
            if ike and len(ike) >= 28:
                out.append((p[IP].src, ike[16], len(payload)))
    return out, ip_fragments


@pytest.mark.parametrize("initiator", ["strongswan", "sluice"])
def test_ike_auth_goes_in_ike_fragments_both_ways(lab, initiator):
    # 576-byte datagrams (fragment_size on both ends): RSA IKE_AUTH needs several each way.
    a, b, da, sw = gateways(lab, "rsa", sluice_ike="fragment_size = 576\n", swan_settings={"fragment_size": 576})
    cap = lab.capture(a, "va", "wire")
    if initiator == "strongswan":
        out = sw.initiate(child="net")
        assert "CHILD_SA net{1} established" in out, out
    else:
        r = control(da, "initiate", "--child", "net")
        assert r.returncode == 0, r.stdout + r.stderr
    wait_child(da, "net")
    both_views_agree(da, sw)
    lab.ping(a, "203.0.113.1", count=3, src="198.51.100.1")
    wire, ip_fragments = ike_on_the_wire(cap.stop())
    assert ip_fragments == 0, "IKE fragmentation keeps IP fragments off the wire"
    for src in ("192.0.2.1", "192.0.2.2"):
        skf = [n for s, first, n in wire if s == src and first == 53]
        assert len(skf) >= 2, (src, wire)
        # IP header 20 + UDP 8 + this: within 576.
        assert max(skf) + 28 <= 576, (src, skf)
    log = sw.log()
    assert "splitting IKE message" in log and "reassembled fragmented IKE message" in log, log[-3000:]
    c = da.stats()["ikeCounters"]
    assert c["fragmentedMessages"] >= 1 and c["fragmentsSent"] >= 2 and c["fragmentsDropped"] == 0, c
