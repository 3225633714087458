"""Issue 5: the operator's view. Exact counts in `sluice stats --json` and Prometheus,
the control socket's permissions and robustness, the daemon-down view, --watch."""
import json
import os
import random
import re
import socket
import subprocess
import time
import urllib.request

from lab import Daemon, SAPair, inner_on_loopback, sluice_binary, two_hosts


def tunnel(lab, extra_header=""):
    a, b = two_hosts(lab)
    inner_on_loopback(lab, a, b, "192.0.2.1", "192.0.2.2", "198.51.100.1/32", "203.0.113.1/32")
    pair = SAPair("tunnel", "aes128gcm16", "192.0.2.1", "192.0.2.2", "198.51.100.0/24", "203.0.113.0/24")
    da = Daemon(lab, a, "a", pair.config("a", "@HEADER@"), extra_header=extra_header).start()
    db = Daemon(lab, b, "b", pair.config("b", "@HEADER@")).start()
    return a, b, pair, da, db


def test_exact_counts_in_stats_and_prometheus(lab):
    a, b, pair, da, db = tunnel(lab, extra_header='metrics_listen = "127.0.0.1:9816"\n')
    n = 25
    lab.ping(a, "203.0.113.1", count=n, src="198.51.100.1", size=100)
    s = da.stats()
    sa_out, sa_in = da.sa("a-to-b"), da.sa("b-to-a")
    assert sa_out["packets"] == n and sa_in["packets"] == n
    assert sa_out["sequence"] == n and sa_in["sequence"] == n
    assert sa_out["bytes"] == n * (20 + 8 + 100), "inner IPv4 + ICMP header + payload per packet"
    assert sum(q["sealed"] for q in s["queues"]) == n
    assert sum(q["opened"] for q in s["queues"]) == n
    assert sum(q["received"] for q in s["queues"]) == 2 * n
    assert all(q["dropped"] == 0 for q in s["queues"])
    assert {k["queue"] for k in s["kernel"]} == {0, 1, 2, 3}, "the kernel's view of both queues and their GSO twins"
    assert db.sa("a-to-b")["packets"] == n and db.sa("b-to-a")["packets"] == n
    # Prometheus, from inside the namespace.
    text = lab.sh(a, "python3 -c \"import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9816/metrics').read().decode())\"").stdout
    def metric(name, **labels):
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{name} {labels} not in metrics:\n{text[:2000]}")
    assert metric("sluice_sa_packets_total", sa="a-to-b") == n
    assert metric("sluice_sa_packets_total", sa="b-to-a") == n
    assert metric("sluice_sa_sequence", sa="a-to-b") == n
    assert sum(metric("sluice_queue_sealed_total", queue=q) for q in ("0", "1")) == n
    assert metric("sluice_drops_total", reason="replay") == 0
    assert "# TYPE sluice_queue_packets_total counter" in text
    # A second scrape after more traffic moves the counters by exactly that much.
    lab.ping(a, "203.0.113.1", count=5, src="198.51.100.1")
    text = lab.sh(a, "python3 -c \"import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9816/metrics').read().decode())\"").stdout
    assert metric("sluice_sa_packets_total", sa="a-to-b") == n + 5
    r = lab.sh(a, "python3 -c \"import urllib.request;urllib.request.urlopen('http://127.0.0.1:9816/nope')\"", check=False)
    assert "404" in r.stderr


def test_stats_table_and_sa_list_never_show_keys(lab):
    a, b, pair, da, db = tunnel(lab)
    lab.ping(a, "203.0.113.1", count=3, src="198.51.100.1")
    table = subprocess.run([sluice_binary(), "stats", "--socket", da.socket], capture_output=True, text=True).stdout
    assert "Queues" in table and "a-to-b" in table and "Kernel queues" in table
    sas = subprocess.run([sluice_binary(), "sa", "list", "--socket", da.socket, "--json"], capture_output=True, text=True).stdout
    doc = json.loads(sas)
    assert {x["name"] for x in doc} == {"a-to-b", "b-to-a"}
    everything = table + sas + json.dumps(da.stats()) + da.log.read_text()
    for key in (pair.key_ab, pair.key_ba):
        assert key not in everything and key[:16] not in everything, "a key leaked into stats or logs"


def test_control_socket_is_root_only_and_survives_garbage(lab):
    a, b, pair, da, db = tunnel(lab)
    mode = os.stat(da.socket).st_mode & 0o777
    assert mode == 0o600, oct(mode)
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sluice_binary(), "stats", "--json", "--socket", da.socket]
    os.chmod(os.path.dirname(da.socket), 0o755)
    os.chmod(lab.workdir, 0o755)
    r = subprocess.run(as_nobody, capture_output=True, text=True)
    assert r.returncode != 0 and "Permission denied" in r.stdout + r.stderr
    # Even if an admin loosens the file mode, the daemon checks the peer's uid itself.
    os.chmod(da.socket, 0o666)
    r = subprocess.run(as_nobody, capture_output=True, text=True)
    assert r.returncode != 0 and "root only" in r.stdout + r.stderr, r.stdout + r.stderr
    os.chmod(da.socket, 0o600)

    def raw(payload):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(3)
        s.connect(da.socket)
        s.sendall(payload)
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        return data
    rng = random.Random(5)
    cases = [b"\n", b"stats\n", b"{}\n", b'{"version":1}\n', b'{"version":2,"command":"stats"}\n',
             b'{"version":1,"command":"reboot"}\n', b"[1,2,3]\n", b"\xff\xfe\x00garbage\n", b"x" * 10000,
             b'{"version":"1","command":"stats"}\n'] + [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 600))) for _ in range(30)]
    for c in cases:
        reply = raw(c)
        assert b'"error"' in reply, (c[:40], reply[:200])
    assert b'"pong":true' in raw(b'{"version":1,"command":"ping"}\n')
    lab.ping(a, "203.0.113.1", count=2, src="198.51.100.1")
    assert da.proc.poll() is None and da.sa("a-to-b")["packets"] == 2


def test_stats_when_daemon_is_down(lab):
    a, b, pair, da, db = tunnel(lab)
    da.kill9()
    r = lab.sh(a, f"{sluice_binary()} stats --socket {da.socket}", check=False)
    assert r.returncode == 3
    assert "DOWN" in r.stdout and "Kernel queues" in r.stdout
    j = lab.sh(a, f"{sluice_binary()} stats --json --socket {da.socket}", check=False)
    doc = json.loads(j.stdout)
    assert doc["daemon"] is None and "not running" in doc["error"]


def test_watch_redraws_in_a_terminal_and_quits_on_q(lab):
    a, b, pair, da, db = tunnel(lab)
    session = f"sluicewatch{os.getpid()}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "150", "-y", "45",
                    f"{sluice_binary()} stats --watch --interval 0.5 --socket {da.socket}"], check=True)
    try:
        lab.ping(a, "203.0.113.1", count=10, src="198.51.100.1")
        time.sleep(1.5)
        screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout
        (lab.workdir.parent / "sluice-watch-screen.txt").write_text(screen)
        assert "Queues" in screen and "Security associations" in screen and "press q to quit" in screen
        assert re.search(r"a-to-b\s+out\s+0x1001", screen)
        assert screen.count("Queues") == 1, "redraws in place, not scrolling"
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        time.sleep(1)
        alive = subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode == 0
        assert not alive, "q quits"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
