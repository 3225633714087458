"""Issue 12: Sluice's IKEv2 agent against itself: negotiation on the first packet (trap),
traffic through the negotiated SAs, rekey, terminate, dead peer detection, refusals with
the named notify."""
import time

import pytest

from ike_lab import connection, control, ike_config, list_sas, wait_child
from lab import Daemon, clear_packets_between, esp_packets, inner_on_loopback, two_hosts


def ike_pair(lab, mode="tunnel", a_kw=None, b_kw=None, v6=False):
    a, b = two_hosts(lab)
    wa, wb = ("2001:db8::1", "2001:db8::2") if v6 else ("192.0.2.1", "192.0.2.2")
    if mode == "tunnel":
        inner_on_loopback(lab, a, b, wa, wb, "198.51.100.1/32", "203.0.113.1/32")
        lts, rts, target, src = ["198.51.100.0/24"], ["203.0.113.0/24"], "203.0.113.1", "198.51.100.1"
    else:
        lts, rts, target, src = [f"{wa}/{128 if v6 else 32}"], [f"{wb}/{128 if v6 else 32}"], wb, wa
    ca = connection("to-b", wa, wb, "net-a", lts, rts, mode=mode, **({"start_action": "trap"} | (a_kw or {})))
    cb = connection("to-a", wb, wa, "net-b", rts, lts, mode=mode, **(b_kw or {}))
    da = Daemon(lab, a, "a", ike_config(ca)).start()
    db = Daemon(lab, b, "b", ike_config(cb)).start()
    return a, b, da, db, target, src


def held(daemon):
    return sum(q.get("heldSent") or 0 for q in daemon.stats()["queues"])


@pytest.mark.parametrize("mode,v6", [("tunnel", False), ("transport", False), ("tunnel", True), ("transport", True)])
def test_trap_negotiates_and_carries_traffic(lab, mode, v6):
    a, b, da, db, target, src = ike_pair(lab, mode, v6=v6)
    cap = lab.capture(a, "va", "wire")
    # The first packet finds no SA: it raises an acquire, waits for the negotiation and is answered.
    lab.ping(a, target, count=1, src=src)
    assert held(da) >= 1
    kids_a = wait_child(da, "net-a")
    kids_b = wait_child(db, "net-b")
    assert kids_a[0]["spiOut"] == kids_b[0]["spiIn"] and kids_a[0]["spiIn"] == kids_b[0]["spiOut"]
    assert kids_a[0]["mode"] == mode.upper()
    lab.ping(a, target, count=5, src=src)
    sent, got = lab.tcp_transfer(b, a, target, nbytes=2_000_000, src=src)
    assert sent == got
    pcap = cap.stop()
    assert len(esp_packets(pcap)) > 100
    # Nothing between the protected addresses in clear: only IKE (UDP 500) and ESP on the wire.
    clear = [p for p in clear_packets_between(pcap, (src, target)) if "isakmp" not in p]
    assert clear == []
    sa_out = list_sas(da)[0]["children"][0]
    assert sa_out["packetsOut"] > 0 and sa_out["packetsIn"] > 0


def test_rekey_terminate_and_refusals(lab):
    a, b, da, db, target, src = ike_pair(lab, "tunnel")
    control(da, "initiate", "--child", "net-a")
    old = wait_child(da, "net-a")[0]
    # Rekey under a steady ping: no echo lost.
    pinger = lab.popen(a, f"ping -c 60 -i 0.05 -I {src} {target}", stdout=open(lab.workdir / "ping.txt", "w"))
    time.sleep(0.5)
    r = control(da, "rekey", "--child", "net-a")
    assert r.returncode == 0, r.stderr
    pinger.wait(timeout=30)
    out = (lab.workdir / "ping.txt").read_text()
    assert " 0% packet loss" in out, out
    new = wait_child(da, "net-a")
    assert all(k["spiIn"] != old["spiIn"] for k in new)
    # Terminate: both sides lose the CHILD_SA; the trap stays, so traffic is not clear.
    assert control(db, "terminate", "--ike", "to-a").returncode == 0
    wait_child(da, "net-a", installed=False)
    wait_child(db, "net-b", installed=False)
    # The next packet meets the trap again: held (never clear), negotiated anew, answered.
    lab.ping(a, target, count=1, src=src)
    assert held(da) >= 1
    wait_child(da, "net-a")
    lab.ping(a, target, count=2, src=src)
    # Unknown names are refused by name.
    r = control(da, "initiate", "--child", "nope")
    assert r.returncode != 0 and "nope" in r.stderr


def test_wrong_psk_and_proposal_mismatch_fail_with_the_notify(lab):
    a, b, da, db, target, src = ike_pair(lab, "tunnel", a_kw={"start_action": "none"}, b_kw={"psk": "0x" + "77" * 32})
    control(da, "initiate", "--child", "net-a")
    deadline = time.time() + 10
    while time.time() < deadline and "AUTHENTICATION_FAILED" not in da.log.read_text():
        time.sleep(0.2)
    assert "AUTHENTICATION_FAILED" in da.log.read_text()
    assert "AUTHENTICATION_FAILED" in db.log.read_text()
    assert list_sas(da) == [] or all(not s["children"] for s in list_sas(da))
    # Nothing leaked: the trap policy holds the child's traffic, then drops it as no_sa.
    lab.ping(a, target, count=2, src=src, check=False)
    deadline = time.time() + 15
    while time.time() < deadline and da.drops().get("no_sa", 0) < 1:
        time.sleep(0.5)
    assert da.drops().get("no_sa", 0) >= 1


def test_dead_peer_is_detected(lab):
    a, b, da, db, target, src = ike_pair(lab, "tunnel", a_kw={"dpd_delay": 1, "dpd_action": "clear"})
    control(da, "initiate", "--child", "net-a")
    wait_child(da, "net-a")
    db.kill9()
    # dpd_delay 1 s, then 1 + 1.5 + 2.25 + 3.4 s of retransmissions ([ike] in ike_config).
    wait_child(da, "net-a", installed=False, timeout=25)
    assert "peer not responding" in da.log.read_text()
