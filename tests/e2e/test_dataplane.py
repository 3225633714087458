"""Issue 3: the daemon on real namespaces, real nftables, real NFQUEUE."""
import time

import pytest

from lab import Daemon, SAPair, clear_packets_between, esp_packets, inner_on_loopback, two_hosts

V4 = ("192.0.2.1", "192.0.2.2")
V6 = ("2001:db8::1", "2001:db8::2")


def start_pair(lab, pair, a, b, queues=2, extra_header="", before="", after=""):
    da = Daemon(lab, a, "a", pair.config("a", "@HEADER@", before, after), queues=queues, extra_header=extra_header).start()
    db = Daemon(lab, b, "b", pair.config("b", "@HEADER@", before, after), queues=queues, extra_header=extra_header).start()
    return da, db


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_transport_host_to_host(lab, family):
    a, b = two_hosts(lab)
    (oa, ob) = V4 if family == "v4" else V6
    plen = 32 if family == "v4" else 128
    pair = SAPair("transport", "aes128gcm16", oa, ob, f"{oa}/{plen}", f"{ob}/{plen}")
    da, db = start_pair(lab, pair, a, b)
    cap = lab.capture(b, "vb", "wire")
    lab.ping(a, ob, count=3)
    sent, got = lab.tcp_transfer(b, a, ob, nbytes=8_000_000)
    pcap = cap.stop()
    assert sent == got, "TCP payload corrupted through the tunnel"
    assert clear_packets_between(pcap, {oa, ob}) == []
    assert len(esp_packets(pcap)) > 1000
    assert da.sa("a-to-b")["packets"] > 1000 and db.sa("a-to-b")["packets"] > 1000
    assert db.drops() == {}, db.drops()


@pytest.mark.parametrize("outer,inner", [("v4", "v4"), ("v6", "v6"), ("v6", "v4"), ("v4", "v6")])
def test_tunnel_host_to_host(lab, outer, inner):
    a, b = two_hosts(lab)
    oa, ob = V4 if outer == "v4" else V6
    ia, ib = ("198.51.100.1/32", "203.0.113.1/32") if inner == "v4" else ("2001:db8:1::1/128", "2001:db8:2::1/128")
    pa, pb = ("198.51.100.0/24", "203.0.113.0/24") if inner == "v4" else ("2001:db8:1::/48", "2001:db8:2::/48")
    inner_on_loopback(lab, a, b, oa, ob, ia, ib)
    pair = SAPair("tunnel", "aes256gcm16", oa, ob, pa, pb, esn=True)
    start_pair(lab, pair, a, b)
    cap = lab.capture(b, "vb", "wire")
    a_in, b_in = ia.split("/")[0], ib.split("/")[0]
    lab.ping(a, b_in, count=3, src=a_in)
    sent, got = lab.tcp_transfer(b, a, b_in, nbytes=4_000_000, src=a_in)
    pcap = cap.stop()
    assert sent == got
    esp = esp_packets(pcap)
    assert len(esp) > 500
    assert clear_packets_between(pcap, {a_in, b_in}) == []
    assert all(p.haslayer("IP") == (outer == "v4") for p in esp), "outer family"


def test_rules_installed_and_removed(lab):
    a, b = two_hosts(lab)
    lab.sh(a, "nft add table inet admin; nft add chain inet admin input '{ type filter hook input priority 0; policy accept; }';"
              " nft add rule inet admin input tcp dport 9 counter")
    before = lab.sh(a, "nft list table inet admin").stdout
    pair = SAPair("transport", "chacha20poly1305", *V4, "192.0.2.1/32", "192.0.2.2/32")
    da, db = start_pair(lab, pair, a, b)
    rules = da.ruleset()
    assert "table inet sluice" in rules
    assert "NFQUEUE" in rules or "queue num" in rules
    lab.ping(a, "192.0.2.2")
    assert da.stop() == 0
    after = lab.sh(a, "nft list ruleset").stdout
    assert "sluice" not in after and "NFQUEUE" not in after and "queue num" not in after
    assert lab.sh(a, "nft list table inet admin").stdout == before, "the admin's table must be untouched"


def test_kernel_lacks_native_queue_so_fallback_is_used(lab):
    """On this kernel `queue` is missing; Sluice must notice and log the fallback once."""
    a, b = two_hosts(lab)
    native = lab.sh(a, "nft add table inet t; nft add chain inet t c '{ type filter hook prerouting priority 0; }';"
                       " nft add rule inet t c queue num 0", check=False)
    lab.sh(a, "nft delete table inet t")
    pair = SAPair("transport", "aes128gcm16", *V4, "192.0.2.1/32", "192.0.2.2/32")
    da, _ = start_pair(lab, pair, a, b)
    log = da.log.read_text()
    if native.returncode != 0:
        assert "No such file or directory" in native.stderr
        assert da.stats()["daemon"]["backend"] == "xtables"
        assert log.count("xt NFQUEUE target") == 1
    else:
        assert da.stats()["daemon"]["backend"] == "native"


def test_rules_parse_for_both_backends(lab):
    """`nft -c` accepts both generated rulesets (native: only the missing `queue` may fail here)."""
    import subprocess
    from lab import sluice_binary
    a, b = two_hosts(lab)
    pair = SAPair("tunnel", "aes128-sha256", *V4, "198.51.100.0/24", "203.0.113.0/24")
    d = Daemon(lab, a, "a", pair.config("a", "@HEADER@", policies_after='[[policy]]\ndirection = "out"\ndst = "203.0.113.9/32"\n'
                                                               'protocol = "tcp"\ndst_port = "22"\naction = "bypass"\n'))
    for backend in ("native", "xtables"):
        text = subprocess.run([sluice_binary(), "rules", "-c", str(d.config_path), "--backend", backend],
                              capture_output=True, text=True, check=True).stdout
        r = lab.sh(a, "nft -c -f -", input=text, check=False)
        errors = [l for l in r.stderr.splitlines() if "Error" in l]
        if backend == "xtables":
            assert r.returncode == 0, r.stderr
        else:
            assert all("No such file or directory" in e for e in errors), r.stderr
