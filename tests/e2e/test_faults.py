"""Issue 4: failure behaviour. Fail closed when the daemon dies, no nonce reuse across
restarts, the documented leak with fail = "open", and reload without loss."""
import signal
import subprocess
import time

from lab import Daemon, SAPair, clear_packets_between, esp_packets, inner_on_loopback, two_hosts


def tunnel(lab, proposal="aes128gcm16", extra_header=""):
    a, b = two_hosts(lab)
    inner_on_loopback(lab, a, b, "192.0.2.1", "192.0.2.2", "198.51.100.1/32", "203.0.113.1/32")
    pair = SAPair("tunnel", proposal, "192.0.2.1", "192.0.2.2", "198.51.100.0/24", "203.0.113.0/24")
    da = Daemon(lab, a, "a", pair.config("a", "@HEADER@"), extra_header=extra_header).start()
    db = Daemon(lab, b, "b", pair.config("b", "@HEADER@"), extra_header=extra_header).start()
    return a, b, pair, da, db


def seqs(pcap, spi):
    from scapy.layers.ipsec import ESP
    return [p[ESP].seq for p in esp_packets(pcap) if p[ESP].spi == spi]


def test_kill9_fails_closed_and_never_reuses_sequence_numbers(lab):
    a, b, pair, da, db = tunnel(lab)
    cap = lab.capture(b, "vb", "wire")
    # A steady stream of protected packets for the whole test (bounded: 12 s).
    flood = lab.popen(a, "ping -i 0.01 -w 12 -I 198.51.100.1 203.0.113.1", stdout=subprocess.DEVNULL)
    time.sleep(2)
    before = da.sa("a-to-b")["sequence"]
    assert before > 50
    da.kill9()
    time.sleep(2)                                   # the daemon is down: nothing may leak
    rules = lab.sh(a, "nft list ruleset").stdout
    assert "table inet sluice" in rules, "rules stay after kill -9, so traffic stays blocked"
    da.start()
    time.sleep(2)
    flood.wait(timeout=20)
    pcap = cap.stop()
    assert clear_packets_between(pcap, {"198.51.100.1", "203.0.113.1"}) == [], "no protected packet may leave in clear"
    s = seqs(pcap, pair.spi_ab)
    assert len(s) == len(set(s)), "a sequence number was sent twice under one key"
    restart_index = max(i for i in range(1, len(s)) if s[i] < s[i - 1]) if any(s[i] < s[i - 1] for i in range(1, len(s))) else None
    assert restart_index is None, f"sequence went backwards at {restart_index}: {s[restart_index - 2:restart_index + 2]}"
    after = da.sa("a-to-b")["sequence"]
    assert after > before
    assert max(s) > 65536, "after a crash the SA continues above its whole reserved block"
    assert db.sa("a-to-b")["packets"] > 100, "traffic resumed after the restart"
    assert db.drops().get("replay", 0) == 0


def test_restart_continues_above_every_number_sent(lab):
    a, b, pair, da, db = tunnel(lab)
    lab.ping(a, "203.0.113.1", count=3, src="198.51.100.1")
    first = da.sa("a-to-b")["sequence"]
    assert da.stop() == 0
    # Records are "MARK CONFIRMED [clean]": every number on disk covers what was sent.
    state = [w for w in lab.sh(a, f"cat {da.dir}/state/out-*.state").stdout.split() if w.isdigit()]
    assert state and all(int(x) >= first for x in state), state
    da.start()
    cap = lab.capture(b, "vb", "wire")
    lab.ping(a, "203.0.113.1", count=3, src="198.51.100.1")
    pcap = cap.stop()
    s = seqs(pcap, pair.spi_ab)
    assert len(s) == 3 and min(s) > first


def test_fail_open_leaks_as_documented(lab):
    a, b, pair, da, db = tunnel(lab, extra_header='fail = "open"\n')
    lab.ping(a, "203.0.113.1", count=2, src="198.51.100.1")
    da.kill9()
    cap = lab.capture(b, "vb", "wire")
    lab.ping(a, "203.0.113.1", count=3, src="198.51.100.1", check=False)
    pcap = cap.stop()
    leaked = clear_packets_between(pcap, {"198.51.100.1", "203.0.113.1"})
    assert leaked, "fail = open passes protected traffic in clear when no worker runs"


def test_fail_closed_blocks_when_daemon_is_down(lab):
    a, b, pair, da, db = tunnel(lab)
    da.kill9()
    cap = lab.capture(b, "vb", "wire")
    r = lab.ping(a, "203.0.113.1", count=3, src="198.51.100.1", check=False)
    pcap = cap.stop()
    assert r.returncode != 0
    assert clear_packets_between(pcap, {"198.51.100.1", "203.0.113.1"}) == []


def test_reload_keeps_unchanged_sas_flowing(lab):
    a, b, pair, da, db = tunnel(lab)
    # A second SA pair to add on reload, for a second inner network.
    lab.sh(a, "ip addr add 198.51.100.2/32 dev lo; ip route add 203.0.113.2/32 via 192.0.2.2 src 198.51.100.2")
    lab.sh(b, "ip addr add 203.0.113.2/32 dev lo; ip route add 198.51.100.2/32 via 192.0.2.1 src 203.0.113.2")
    extra = SAPair("tunnel", "chacha20poly1305", "192.0.2.1", "192.0.2.2", "198.51.100.2/32", "203.0.113.2/32",
                   spi_ab=0x3001, spi_ba=0x4001)
    def renamed(text, side):
        for old, new in (("a-to-b", "x-a-to-b"), ("b-to-a", "x-b-to-a")):
            text = text.replace(f'"{old}"', f'"{new}"')
        return text
    # Order matters: the new, narrower policies go before the /24 ones.
    flood = lab.popen(a, "ping -i 0.005 -c 1500 -I 198.51.100.1 203.0.113.1", stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    for d, side in ((db, "b"), (da, "a")):
        new = renamed(extra.config(side, ""), side)
        d.write_config("@HEADER@\n" + new.split("\n", 1)[1] + pair.config(side, ""))
        d.signal(signal.SIGHUP)
    out, _ = flood.communicate(timeout=30)
    assert " 0% packet loss" in out, out[-300:]
    assert "reloaded" in da.log.read_text() and "reloaded" in db.log.read_text()
    lab.ping(a, "203.0.113.2", count=3, src="198.51.100.2")
    assert db.sa("x-a-to-b")["packets"] == 3
    assert da.stats()["daemon"]["reloads"] == 1
    # The unchanged SA kept its state: its sequence continued, no restart from 1.
    assert da.sa("a-to-b")["sequence"] >= 1500


def test_bad_reload_keeps_running_config(lab):
    a, b, pair, da, db = tunnel(lab)
    da.write_config("@HEADER@\n[[sa]]\nname = 1\n")
    da.signal(signal.SIGHUP)
    time.sleep(1)
    assert "reload refused" in da.log.read_text()
    lab.ping(a, "203.0.113.1", count=2, src="198.51.100.1")


def test_readme_stop_safe_rule_blocks_clear_after_a_clean_stop(lab):
    """The README's recipe: a rule in the admin's own table, after Sluice's chains, that
    drops clear packets of the protected prefixes. Traffic flows while Sluice runs; after
    a clean stop (rules removed) nothing leaves in clear."""
    a, b, pair, da, db = tunnel(lab)
    lab.sh(a, "nft add table inet admin; nft add chain inet admin out '{ type filter hook output priority 200; }';"
              " nft add rule inet admin out ip daddr 203.0.113.0/24 meta l4proto != esp drop")
    lab.ping(a, "203.0.113.1", count=3, src="198.51.100.1")
    assert da.stop() == 0
    cap = lab.capture(b, "vb", "wire")
    r = lab.ping(a, "203.0.113.1", count=3, src="198.51.100.1", check=False)
    pcap = cap.stop()
    assert r.returncode != 0
    assert clear_packets_between(pcap, {"198.51.100.1", "203.0.113.1"}) == []
