"""SA lifecycle and state continuity: replay protection survives a restart, a reload
never reuses a (SPI, sequence number) under one key, keys rotate without loss, a reload
either does what it says or changes nothing, and every config `check` accepts starts."""
import os
import random
import select
import signal
import subprocess
import threading
import time
from collections import Counter

import pytest

from lab import (Daemon, SAPair, clear_packets_between, esp_sequence_numbers, hexkey, inner_on_loopback,
                 sluice_binary, two_hosts)
from test_attacks import send_packets
from test_faults import tunnel
from test_interop import scapy_sa

HERE = os.path.dirname(__file__)
BLOCK = 65536            # sequence numbers reserved on disk at a time (outbound)
MARK_INTERVAL = 4096     # default replay_mark_interval (inbound): what a crash may refuse


# helpers

def log_since(daemon, offset):
    text = daemon.log.read_text()
    return text[offset:]


def log_size(daemon):
    return len(daemon.log.read_text()) if daemon.log.exists() else 0


def wait_reload(daemon, offset, timeout=20):
    """Waits until the daemon logged the outcome of a reload after `offset`; returns the new log."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        new = log_since(daemon, offset)
        if any(w in new for w in ("reloaded", "reload refused", "reload failed", "needs a restart")):
            time.sleep(0.2)
            return log_since(daemon, offset)
        time.sleep(0.05)
    raise AssertionError(f"no reload outcome logged within {timeout} s:\n{log_since(daemon, offset)}")


def reload(daemon, text, timeout=20):
    """Writes a config, sends SIGHUP, returns what the daemon logged about it."""
    offset = log_size(daemon)
    daemon.write_config(text)
    daemon.signal(signal.SIGHUP)
    return wait_reload(daemon, offset, timeout)


def names(daemon):
    return {a["name"] for a in daemon.stats()["associations"]}


def with_out_mtu(text, out_name, mtu):
    """The config with `mtu` set on one SA only (the other SAs stay unchanged)."""
    assert f'name = "{out_name}"\n' in text
    return text.replace(f'name = "{out_name}"\n', f'name = "{out_name}"\nmtu = {mtu}\n', 1)


def duplicates(pcap, spi):
    seqs = [q for s, q in esp_sequence_numbers(pcap) if s == spi]
    return seqs, sorted(q for q, n in Counter(seqs).items() if n > 1)


# A. replay protection across restarts

def scapy_peer_of_b(lab):
    """Sluice on b only; host a is a scapy peer (as in test_attacks)."""
    a, b = two_hosts(lab)
    lab.sh(b, "ip addr add 203.0.113.1/32 dev lo; ip route add 198.51.100.0/24 via 192.0.2.1 src 203.0.113.1")
    lab.sh(a, "ip addr add 198.51.100.1/32 dev lo; ip route add 203.0.113.0/24 via 192.0.2.2")
    # Host a runs no Sluice: keep its kernel from answering the ESP that b sends back.
    lab.sh(a, "nft add table inet peer; nft add chain inet peer in '{ type filter hook input priority 0; }';"
              " nft add rule inet peer in meta l4proto esp drop")
    pair = SAPair("tunnel", "aes128gcm16", "192.0.2.1", "192.0.2.2", "198.51.100.0/24", "203.0.113.0/24")
    db = Daemon(lab, b, "b", pair.config("b", "@HEADER@")).start()
    sa = scapy_sa(pair, "ab")

    def sealed(seqs):
        from scapy.layers.inet import ICMP, IP
        return [sa.encrypt(IP(src="198.51.100.1", dst="203.0.113.1") / ICMP(id=0x51, seq=q & 0xffff) / (b"r" * 32),
                           seq_num=q) for q in seqs]
    return a, b, db, sealed


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_replayed_packets_are_refused_after_a_restart(lab, how):
    """Packets accepted before a restart (clean or kill -9) are refused after it, each
    counted as a replay, and none is answered; fresh higher numbers are accepted (after
    a clean stop from the very next one, after a crash above the durable mark)."""
    n = 20
    a, b, db, sealed = scapy_peer_of_b(lab)
    captured = sealed(range(1, n + 1))
    send_packets(lab, a, captured)
    assert db.sa("a-to-b")["packets"] == n, f"the {n} fresh packets must all be accepted before the restart"
    assert db.sa("b-to-a")["packets"] == n, "every echo request was answered through the tunnel"
    if how == "sigterm":
        assert db.stop() == 0, "a clean stop exits 0"
    else:
        db.kill9()
    db.start()
    send_packets(lab, a, captured)
    accepted, answered = db.sa("a-to-b")["packets"], db.sa("b-to-a")["packets"]
    drops = db.drops()
    assert accepted == 0, f"{accepted} of {n} replayed packets were accepted after {how}: the replay window did not survive the restart"
    assert answered == 0, f"{answered} replayed echo requests were answered after {how}"
    if how == "sigterm":
        assert drops.get("replay", 0) == n, f"after a clean stop each replay counts as replay: {drops}"
        fresh = list(range(n + 1, n + 6))     # a clean stop recorded the exact mark
    else:
        refused = drops.get("replay", 0) + drops.get("replay_restart", 0)
        assert refused == n, f"after kill -9 each replay counts as replay or replay_restart: {drops}"
        fresh = []
    fresh += list(range(n + MARK_INTERVAL + 1, n + MARK_INTERVAL + 6))
    send_packets(lab, a, sealed(fresh))
    assert db.sa("a-to-b")["packets"] == len(fresh), \
        f"fresh sequence numbers {fresh[0]}..{fresh[-1]} must be accepted after {how}: {db.drops()}"
    assert db.proc.poll() is None


# B. no nonce reuse across reloads

def test_reloads_every_200ms_during_a_transfer_never_reuse_a_sequence_number(lab):
    """SIGHUP every 200 ms for 10 s, each time changing the out SA (mtu 1500 <-> 1400),
    during back-to-back TCP transfers: every (SPI, sequence number) is sent at most once
    and every transfer arrives intact."""
    a, b, pair, da, db = tunnel(lab)
    base = pair.config("a", "@HEADER@")
    cap = lab.capture(b, "vb", "reloads", snaplen=64, bpf="esp and src 192.0.2.1")
    stop, results, errors = threading.Event(), [], []

    def transfers():
        try:
            while not stop.is_set():
                results.append(lab.tcp_transfer(b, a, "203.0.113.1", nbytes=30_000_000, src="198.51.100.1", timeout=40))
        except Exception as e:  # noqa: BLE001 - reported by the assert below
            errors.append(repr(e))
    t = threading.Thread(target=transfers)
    t.start()
    offset, mtu = log_size(da), 1500
    try:
        end = time.time() + 10
        while time.time() < end:
            mtu = 1400 if mtu == 1500 else 1500
            da.write_config(with_out_mtu(base, "a-to-b", mtu))
            da.signal(signal.SIGHUP)
            time.sleep(0.2)
    finally:
        stop.set()
        t.join(timeout=60)
    wait_reload(da, offset)
    pcap = cap.stop()
    assert not t.is_alive(), "the transfers did not finish within 60 s"
    assert not errors, f"a transfer failed: {errors}"
    assert results and all(s == r for s, r in results), f"a transfer arrived corrupted: {results}"
    log = log_since(da, offset)
    assert log.count("reloaded") >= 2, f"the daemon must have reloaded (several times): {log[-1500:]}"
    seqs, dup = duplicates(pcap, pair.spi_ab)
    assert len(seqs) > 10_000, f"too few ESP packets captured ({len(seqs)}) to judge"
    assert not dup, f"{len(dup)} sequence numbers sent twice under SPI {pair.spi_ab:#x}: {dup[:10]}"


def test_reload_at_the_end_of_a_reservation_block_never_reuses_a_sequence_number(lab):
    """The race random reloads rarely hit: a reload changing the out SA lands just
    before its sequence number crosses a reserved block (65536 numbers), while the old
    SA object still serves packets. esp_trigger.py watches the wire on b and sends the
    SIGHUP within a millisecond of the crossing. No (SPI, sequence number) may repeat."""
    a, b, pair, da, db = tunnel(lab)
    base = pair.config("a", "@HEADER@")
    cap = lab.capture(b, "vb", "boundary", snaplen=64, bpf="esp and src 192.0.2.1")
    trigger = lab.popen(b, f"/usr/bin/python3 {HERE}/esp_trigger.py vb {pair.spi_ab} {da.proc.pid} {BLOCK}",
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    result = {}

    def transfer():
        try:
            result["sha"] = lab.tcp_transfer(b, a, "203.0.113.1", nbytes=300_000_000, src="198.51.100.1", timeout=60)
        except Exception as e:  # noqa: BLE001 - reported by the assert below
            result["error"] = repr(e)
    t = threading.Thread(target=transfer)
    t.start()
    fired, mtu, rng = [], 1500, random.Random(11)
    deadline = time.time() + 40
    while t.is_alive() and time.time() < deadline:
        mtu = 1400 if mtu == 1500 else 1500
        offset = log_size(da)
        da.write_config(with_out_mtu(base, "a-to-b", mtu))
        lead = rng.uniform(0.3, 2.5)          # ms before the crossing, as measured on the wire
        trigger.stdin.write(f"arm {lead:.2f}\n")
        trigger.stdin.flush()
        ready, _, _ = select.select([trigger.stdout], [], [], max(0.1, deadline - time.time()))
        if not ready:
            break
        fired.append(trigger.stdout.readline().strip())
        wait_reload(da, offset)
    t.join(timeout=60)
    trigger.stdin.close()
    pcap = cap.stop()
    assert "error" not in result and not t.is_alive(), f"the transfer failed: {result}"
    assert result["sha"][0] == result["sha"][1], "the transfer arrived corrupted"
    assert fired, "the trigger never fired: no block end was reached"
    assert "reloaded" in da.log.read_text(), "the daemon must have reloaded"
    seqs, dup = duplicates(pcap, pair.spi_ab)
    assert len(seqs) > BLOCK, f"only {len(seqs)} ESP packets captured: no block end crossed"
    assert not dup, (f"{len(dup)} sequence numbers sent twice under SPI {pair.spi_ab:#x} (reloads fired at {fired}): "
                     f"{dup[:5]}..{dup[-5:]}: the replaced SA and its successor both used them")


# C. key rotation, make-before-break

class Rotation:
    """Configs for the README's rotation recipe between a and b (tunnel mode):
    old SAs a-to-b / b-to-a, new ones a-to-b-2 / b-to-a-2 with new SPIs and keys."""

    def __init__(self, pair):
        self.pair = pair
        self.keys = {"a-to-b": pair.key_ab, "b-to-a": pair.key_ba, "a-to-b-2": hexkey(20), "b-to-a-2": hexkey(20)}
        self.spis = {"a-to-b": 0x1001, "b-to-a": 0x2001, "a-to-b-2": 0x1002, "b-to-a-2": 0x2002}

    def config(self, side, sas, out_sa, in_policies):
        """`sas`: names of the SAs to define; `in_policies`: the `sa = ...` values of the
        inbound policies (a name, or a list of names written as a TOML array)."""
        p = self.pair
        lo, ro = ("192.0.2.1", "192.0.2.2") if side == "a" else ("192.0.2.2", "192.0.2.1")
        li, ri = ("198.51.100.0/24", "203.0.113.0/24") if side == "a" else ("203.0.113.0/24", "198.51.100.0/24")
        mine = "a-to-b" if side == "a" else "b-to-a"
        text = "@HEADER@\n"
        for name in sas:
            direction = "out" if name.startswith(mine) else "in"
            text += p._sa(name, direction, self.spis[name], lo, ro, self.keys[name])
        text += SAPair._policy("out", li, ri, out_sa)
        for sa in in_policies:
            if isinstance(sa, list):
                names_ = ", ".join(f'"{n}"' for n in sa)
                text += (f'[[policy]]\ndirection = "in"\nsrc = "{ri}"\ndst = "{li}"\naction = "protect"\n'
                         f'sa = [{names_}]\n\n')
            else:
                text += SAPair._policy("in", ri, li, sa)
        return text


def reload_both(da, db, text_a, text_b, step):
    """Reloads both daemons at once; each must report "reloaded"."""
    oa, ob = log_size(da), log_size(db)
    da.write_config(text_a)
    db.write_config(text_b)
    da.signal(signal.SIGHUP)
    db.signal(signal.SIGHUP)
    for d, o in ((da, oa), (db, ob)):
        new = wait_reload(d, o)
        assert "reloaded" in new, f"step {step}: {d.name} did not take the rotation config:\n{new[-1500:]}"


@pytest.mark.parametrize("inbound", ["two-policies", "sa-set"])
def test_key_rotation_make_before_break_loses_nothing(lab, inbound):
    """The README's recipe during a 50 packet/s ping: add the new inbound SAs (and
    policies, or one policy naming both SAs), reload; move the out policies to new out
    SAs, reload; remove the old SAs, reload. 0% loss, and both the old and the new SAs
    carried packets before the old ones went."""
    a, b, pair, da, db = tunnel(lab)
    r = Rotation(pair)
    ping = lab.popen(a, "ping -i 0.02 -c 1000 -W 2 -I 198.51.100.1 203.0.113.1", stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        if inbound == "two-policies":
            ins = {"a": ["b-to-a", "b-to-a-2"], "b": ["a-to-b", "a-to-b-2"]}
        else:
            ins = {"a": [["b-to-a", "b-to-a-2"]], "b": [["a-to-b", "a-to-b-2"]]}
        # 1) make: the new inbound SAs, next to the old ones.
        reload_both(da, db, r.config("a", ["a-to-b", "b-to-a", "b-to-a-2"], "a-to-b", ins["a"]),
                    r.config("b", ["b-to-a", "a-to-b", "a-to-b-2"], "b-to-a", ins["b"]), 1)
        time.sleep(1)
        # 2) switch: the out policies name the new out SAs, which the peer already accepts.
        everything = ["a-to-b", "b-to-a", "a-to-b-2", "b-to-a-2"]
        reload_both(da, db, r.config("a", everything, "a-to-b-2", ins["a"]),
                    r.config("b", everything, "b-to-a-2", ins["b"]), 2)
        time.sleep(1.5)
        for d, old, new in ((db, "a-to-b", "a-to-b-2"), (da, "b-to-a", "b-to-a-2")):
            got = {x["name"]: x["packets"] for x in d.stats()["associations"]}
            assert got.get(old, 0) > 0 and got.get(new, 0) > 0, \
                f"{d.name}: before removal both inbound SAs must have carried packets: {got}"
        assert ping.poll() is None, "the ping ended before step 3: the reloads took too long to test step 3 under traffic"
        # 3) break: only the new SAs remain.
        only_new = {"a": [["b-to-a-2"]] if inbound == "sa-set" else ["b-to-a-2"],
                    "b": [["a-to-b-2"]] if inbound == "sa-set" else ["a-to-b-2"]}
        reload_both(da, db, r.config("a", ["a-to-b-2", "b-to-a-2"], "a-to-b-2", only_new["a"]),
                    r.config("b", ["b-to-a-2", "a-to-b-2"], "b-to-a-2", only_new["b"]), 3)
        out, _ = ping.communicate(timeout=45)
    finally:
        if ping.poll() is None:
            ping.kill()
    assert " 0% packet loss" in out, f"the rotation lost packets: {out[-300:]}"
    assert names(da) == {"a-to-b-2", "b-to-a-2"} and names(db) == {"a-to-b-2", "b-to-a-2"}, "the old SAs are gone"
    lab.ping(a, "203.0.113.1", count=3, src="198.51.100.1")
    assert db.sa("a-to-b-2")["packets"] > 0 and da.sa("b-to-a-2")["packets"] > 0


# D. honest reloads

def test_reload_that_needs_a_restart_is_refused_with_file_and_line(lab):
    """Toggling gso cannot be applied live: the reload is refused, naming the config
    FILE:LINE of the gso key; nothing changes and traffic keeps flowing."""
    a, b, pair, da, db = tunnel(lab)
    before = da.stats()["daemon"]["reloads"]
    text = da.config_path.read_text()
    assert text.startswith("[sluice]\n")
    lines = text.split("\n")
    at = next(i for i, l in enumerate(lines) if l.startswith("control_socket")) + 1
    lines.insert(at, "gso = false")
    new = reload(da, "\n".join(lines))
    line_no = at + 1
    assert "needs a restart" in new, f"the refusal must say the change needs a restart:\n{new}"
    assert f"sluice.toml:{line_no}:" in new, f"the refusal must name the gso key as sluice.toml:{line_no}:\n{new}"
    assert "reloaded" not in new, f"a refused reload must not report success:\n{new}"
    assert da.stats()["daemon"]["reloads"] == before, "a refused reload is not counted as a reload"
    lab.ping(a, "203.0.113.1", count=3, src="198.51.100.1")
    sent, got = lab.tcp_transfer(b, a, "203.0.113.1", nbytes=2_000_000, src="198.51.100.1")
    assert sent == got, "TCP (gso on, as before) must keep working after the refused reload"


NFT_WRAPPER = """#!/bin/sh
echo "$@" >> {calls}
if [ -e {flag} ]; then
    echo "nft: simulated failure (test flag {flag})" >&2
    exit 1
fi
exec /usr/sbin/nft "$@"
"""


def test_reload_whose_nft_transaction_fails_keeps_the_old_sas_and_rules(lab):
    """SLUICE_NFT names the nft binary; a wrapper fails it on demand. A reload adding an
    SA pair whose transaction fails keeps everything as it was: the log says so, the
    table is unchanged, stats list only the old SAs, traffic flows."""
    a, b = two_hosts(lab)
    inner_on_loopback(lab, a, b, "192.0.2.1", "192.0.2.2", "198.51.100.1/32", "203.0.113.1/32")
    pair = SAPair("tunnel", "aes128gcm16", "192.0.2.1", "192.0.2.2", "198.51.100.0/24", "203.0.113.0/24")
    wrapper, flag, calls = lab.workdir / "nft-wrapper", lab.workdir / "nft-fail", lab.workdir / "nft-calls"
    wrapper.write_text(NFT_WRAPPER.format(flag=flag, calls=calls))
    wrapper.chmod(0o755)
    da = Daemon(lab, a, "a", pair.config("a", "@HEADER@"), env={"SLUICE_NFT": str(wrapper)}).start()
    Daemon(lab, b, "b", pair.config("b", "@HEADER@")).start()
    assert calls.exists(), "the daemon did not run the nft named by SLUICE_NFT"
    table = lab.sh(a, "/usr/sbin/nft list table inet sluice").stdout
    extra = SAPair("tunnel", "chacha20poly1305", "192.0.2.1", "192.0.2.2", "198.51.100.2/32", "203.0.113.2/32",
                   spi_ab=0x3001, spi_ba=0x4001)
    more = extra.config("a", "").replace('"a-to-b"', '"x-a-to-b"').replace('"b-to-a"', '"x-b-to-a"')
    flag.touch()
    try:
        new = reload(da, "@HEADER@\n" + more + pair.config("a", ""))
    finally:
        flag.unlink()
    assert "reload failed" in new and "keeping the running configuration" in new, \
        f"the log must say the reload failed and kept the running configuration:\n{new}"
    assert "reloaded" not in new, f"a failed reload must not report success:\n{new}"
    assert lab.sh(a, "/usr/sbin/nft list table inet sluice").stdout == table, "the failed reload changed the rules"
    assert names(da) == {"a-to-b", "b-to-a"}, f"stats must list only the old SAs after a failed reload: {names(da)}"
    assert da.stats()["daemon"]["reloads"] == 0, "a failed reload is not counted as a reload"
    lab.ping(a, "203.0.113.1", count=3, src="198.51.100.1")


# E. every config check accepts also starts

UDP_SERVER = ("import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('203.0.113.1',5301));"
              "s.settimeout(20)\nfor _ in range(3):\n d,p=s.recvfrom(2048);s.sendto(b'pong:'+d,p)")
UDP_CLIENT = ("import socket;c=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);c.bind(('198.51.100.1',0));c.settimeout(5)\n"
              "for i in range(3):\n c.sendto(b'ping%d'%i,('203.0.113.1',5301));print(c.recvfrom(2048)[0].decode())")


def test_udp_port_policies_that_check_accepts_also_start(lab):
    """PROTECT policies for UDP port 5301 (both directions, both hosts): `check`
    accepts the configs, the daemons start, and a UDP exchange crosses as ESP only."""
    a, b = two_hosts(lab)
    inner_on_loopback(lab, a, b, "192.0.2.1", "192.0.2.2", "198.51.100.1/32", "203.0.113.1/32")
    pair = SAPair("tunnel", "aes128gcm16", "192.0.2.1", "192.0.2.2", "198.51.100.0/24", "203.0.113.0/24")

    def config(side):
        text = pair.config(side, "@HEADER@")
        text = text[:text.index("[[policy]]")]          # the SAs only: UDP 5301 policies instead
        la, ra = ("198.51.100.0/24", "203.0.113.0/24") if side == "a" else ("203.0.113.0/24", "198.51.100.0/24")
        out_sa, in_sa = ("a-to-b", "b-to-a") if side == "a" else ("b-to-a", "a-to-b")
        for direction, src, dst, sa in (("out", la, ra, out_sa), ("in", ra, la, in_sa)):
            for port in ("dst_port", "src_port"):
                text += (f'[[policy]]\ndirection = "{direction}"\nsrc = "{src}"\ndst = "{dst}"\nprotocol = "udp"\n'
                         f'{port} = 5301\naction = "protect"\nsa = "{sa}"\n\n')
        return text
    daemons = {}
    for side, ns in (("a", a), ("b", b)):
        d = Daemon(lab, ns, side, config(side))
        r = subprocess.run([sluice_binary(), "check", "--config", str(d.config_path)], capture_output=True, text=True)
        assert r.returncode == 0, f"check must accept the UDP port policies: {r.stdout}{r.stderr}"
        try:
            daemons[side] = d.start()
        except RuntimeError as e:
            raise AssertionError(f"check accepted the config but the daemon on {side} did not start: {e}") from None
    cap = lab.capture(b, "vb", "udp")
    server = lab.popen(b, f'/usr/bin/python3 -c "{UDP_SERVER}"')
    time.sleep(0.3)
    r = lab.sh(a, f'/usr/bin/python3 -c "{UDP_CLIENT}"', timeout=30)
    server.wait(timeout=10)
    pcap = cap.stop()
    assert r.stdout.split() == ["pong:ping0", "pong:ping1", "pong:ping2"], f"UDP exchange failed: {r.stdout} {r.stderr}"
    assert daemons["b"].sa("a-to-b")["packets"] == 3 and daemons["a"].sa("b-to-a")["packets"] == 3, \
        "requests and answers must have gone through the SAs"
    assert clear_packets_between(pcap, {"198.51.100.1", "203.0.113.1"}) == [], "UDP 5301 must not cross in clear"


# F. hard lifetime: the SA goes, its traffic is dropped and counted, never sent in clear

def test_hard_lifetime_removes_the_sa_and_its_traffic_never_leaves_in_clear(lab):
    a, b = two_hosts(lab)
    inner_on_loopback(lab, a, b, "192.0.2.1", "192.0.2.2", "198.51.100.1/32", "203.0.113.1/32")
    pair = SAPair("tunnel", "aes128gcm16", "192.0.2.1", "192.0.2.2", "198.51.100.0/24", "203.0.113.0/24",
                  extra="hard_packets = 5\n")
    da = Daemon(lab, a, "a", pair.config("a", "@HEADER@")).start()
    Daemon(lab, b, "b", pair.config("b", "@HEADER@")).start()
    cap = lab.capture(b, "vb", "wire")
    lab.ping(a, "203.0.113.1", count=8, src="198.51.100.1", check=False)
    deadline = time.time() + 5      # the event thread removes the SA (it wakes at once, or within 1 s)
    while time.time() < deadline and any(s["name"] == "a-to-b" for s in da.stats()["associations"]):
        time.sleep(0.1)
    assert not any(s["name"] == "a-to-b" for s in da.stats()["associations"]), "a hard-expired SA is removed"
    lab.ping(a, "203.0.113.1", count=3, src="198.51.100.1", check=False)
    pcap = cap.stop()
    assert clear_packets_between(pcap, {"198.51.100.1", "203.0.113.1"}) == [], "nothing of the SA's traffic in clear"
    sent = [s for spi, s in esp_sequence_numbers(pcap) if spi == pair.spi_ab]
    assert len(sent) == 4, f"4 packets fit the hard limit of 5 (the 5th reaches it): {sent}"
    drops = da.drops()
    assert drops.get("no_sa", 0) >= 3, f"traffic after the removal is counted as no_sa: {drops}"
    log = da.log.read_text()
    assert "SA a-to-b: hard lifetime (packets) reached; SA removed" in log, log[-1500:]
    # A reload with the same key does not bring the expired key back.
    offset = log_size(da)
    da.signal(signal.SIGHUP)
    new = wait_reload(da, offset)
    assert "reloaded" in new and "SA a-to-b: not installed, its key reached the hard lifetime" in new, new
    assert not any(s["name"] == "a-to-b" for s in da.stats()["associations"])
