"""Issue 16: what an admin reaches for in the first ten minutes. One version everywhere
(--version, stats, Prometheus, the .deb), man pages and shell completions that install and
load, a latency histogram Prometheus can aggregate whose buckets add up to the packets,
a dashboard and alert rules that name only exported metrics, and README commands that
run as written for root and for a sudo user."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from lab import REPO, Daemon, SAPair, inner_on_loopback, sluice_binary, two_hosts

VERSION = re.search(r'static let number = "(.*)"', (REPO / "Sources/SluiceCore/Version.swift").read_text()).group(1)
PROMTOOL = REPO / ".build/tools/promtool"
PORT = 9817


def tunnel(lab, sa_extra=""):
    a, b = two_hosts(lab)
    inner_on_loopback(lab, a, b, "192.0.2.1", "192.0.2.2", "198.51.100.1/32", "203.0.113.1/32")
    pair = SAPair("tunnel", "aes128gcm16", "192.0.2.1", "192.0.2.2", "198.51.100.0/24", "203.0.113.0/24", extra=sa_extra)
    da = Daemon(lab, a, "a", pair.config("a", "@HEADER@"), extra_header=f'metrics_listen = "127.0.0.1:{PORT}"\n').start()
    Daemon(lab, b, "b", pair.config("b", "@HEADER@")).start()
    return a, da


def scrape(lab, ns):
    return lab.sh(ns, f"python3 -c \"import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:{PORT}/metrics').read().decode())\"").stdout


def samples(text):
    """{(name, frozenset of label pairs): value} of every sample line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'([a-z_:][a-z0-9_:]*)(\{(.*)\})? (\S+)$', line)
        assert m, f"not a Prometheus sample: {line!r}"
        labels = frozenset(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def value(s, name, **labels):
    want = set(labels.items())
    found = [v for (n, l), v in s.items() if n == name and want <= set(l)]
    assert len(found) == 1, f"{name} {labels}: {len(found)} samples"
    return found[0]


def test_one_version_everywhere(lab, tmp_path):
    out = subprocess.run([sluice_binary(), "--version"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    m = re.fullmatch(rf"sluice {re.escape(VERSION)} \((OpenSSL [^)]+)\)", out.stdout.strip())
    assert m, out.stdout
    openssl = m.group(1)
    make = subprocess.run(["make", "-s", "print-version"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert make.stdout.strip() == VERSION
    subprocess.run(["make", "-s", "deb-control", f"DEBROOT={tmp_path}"], cwd=REPO, check=True, capture_output=True, timeout=30)
    assert f"Version: {VERSION}\n" in (tmp_path / "DEBIAN/control").read_text()
    a, da = tunnel(lab)
    info = da.stats()["daemon"]
    assert (info["version"], info["openssl"]) == (VERSION, openssl), info
    table = subprocess.run([sluice_binary(), "stats", "--socket", da.socket], capture_output=True, text=True, timeout=10).stdout
    assert table.startswith(f"sluice {VERSION} pid ") and openssl in table.splitlines()[0], table[:300]
    s = samples(scrape(lab, a))
    assert value(s, "sluice_build_info", version=VERSION, openssl=openssl) == 1


def test_latency_histogram_adds_up_to_the_packets(lab):
    a, da = tunnel(lab)
    lab.sh(a, "ping -c 30 -i 0.02 -W 2 -I 198.51.100.1 203.0.113.1")
    time.sleep(0.5)
    s = samples(scrape(lab, a))
    queues = sorted({dict(l)["queue"] for (n, l) in s if n == "sluice_queue_packets_total"})
    assert queues, "no queue in the metrics"
    total = 0
    for q in queues:
        packets = value(s, "sluice_queue_packets_total", queue=q)
        counts = {d: value(s, "sluice_queue_latency_seconds_count", queue=q, direction=d) for d in ("out", "in", "other")}
        assert sum(counts.values()) == packets, (q, counts, packets)
        assert counts["out"] == value(s, "sluice_queue_sealed_total", queue=q)
        assert counts["in"] == value(s, "sluice_queue_opened_total", queue=q)
        for d, n in counts.items():
            buckets = sorted(((float(dict(l)["le"]), v) for (name, l), v in s.items()
                              if name == "sluice_queue_latency_seconds_bucket" and dict(l)["queue"] == q and dict(l)["direction"] == d))
            assert len(buckets) == 17 and buckets[0][0] == 1e-06 and buckets[-2][0] == 0.1, buckets
            assert [v for _, v in buckets] == sorted(v for _, v in buckets), "cumulative buckets never decrease"
            assert buckets[-1][1] == n, "+Inf holds them all"
        total += packets
    assert total >= 60, "30 pings and their 30 replies went through the queues"
    for q in da.stats()["queues"]:
        if q["received"]:
            assert 0 < q["latencyP50Nanos"] <= q["latencyP99Nanos"] <= 100_000_000, q


def exported_names(text):
    """Every metric name a scrape carries, with the histogram's _bucket/_sum/_count series."""
    return {n for (n, _l) in samples(text)} | set(re.findall(r"^# TYPE (\S+)", text, re.M))


def test_dashboard_and_alert_rules_name_only_exported_metrics(lab):
    assert PROMTOOL.exists(), f"{PROMTOOL} missing: scripts/install-deps.sh unpacks it"
    r = subprocess.run([str(PROMTOOL), "check", "rules", str(REPO / "examples/prometheus-alerts.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "SUCCESS: 7 rules found" in r.stdout, r.stdout + r.stderr
    # An SA with hard lifetimes, so that the lifetime gauges are there too.
    a, da = tunnel(lab, sa_extra="soft_seconds = 3000\nhard_seconds = 3600\nhard_packets = 1000000\n")
    lab.ping(a, "203.0.113.1", count=3, src="198.51.100.1")
    exported = exported_names(scrape(lab, a))
    rules = (REPO / "examples/prometheus-alerts.yml").read_text()
    exprs = re.findall(r"^\s*expr: (.*)$", rules, re.M)
    dashboard = json.loads((REPO / "examples/grafana-dashboard.json").read_text())
    targets = [t for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(targets) >= 12 and len(exprs) == 7
    exprs += [t["expr"] for t in targets]
    exprs.append(dashboard["templating"]["list"][1]["definition"])
    used = {n for e in exprs for n in re.findall(r"\bsluice_[a-z0-9_]+", e)}
    assert {"sluice_queue_latency_seconds_bucket", "sluice_drops_total", "sluice_sa_lifetime_used_ratio",
            "sluice_queue_worker_up"} <= used
    assert used <= exported, f"named but not exported: {sorted(used - exported)}"


def test_man_pages_and_completions_install_and_load(tmp_path):
    dest = tmp_path / "root"
    r = subprocess.run(["make", "-s", "install-files", f"BIN={sluice_binary()}", f"DESTDIR={dest}", "PREFIX=/usr"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    env = {**os.environ, "MANWIDTH": "100", "MAN_KEEP_FORMATTING": "0"}
    for page, must in (("man8/sluice.8", ["SLUICE(8)", "list-sas", "--version"]),
                       ("man5/sluice.toml.5", ["SLUICE.TOML(5)", "fragment_size", "[[connection.child]]"])):
        m = subprocess.run(["man", "-P", "cat", "-l", str(dest / "usr/share/man" / page)], capture_output=True, text=True,
                           env=env, timeout=30)
        assert m.returncode == 0 and not m.stderr.strip(), m.stderr
        text = re.sub(r".\x08", "", m.stdout)   # groff's overstrike bold and underline
        for word in must:
            assert word in text, (page, word)
    bash = dest / "usr/share/bash-completion/completions/sluice"
    c = subprocess.run(["bash", "-c", f"source {bash} && complete -p sluice"], capture_output=True, text=True, timeout=10)
    assert c.returncode == 0 and c.stdout.strip().endswith(" sluice"), c.stdout + c.stderr
    assert (dest / "usr/share/zsh/vendor-completions/_sluice").read_text().startswith("#compdef sluice")
    assert "complete -c 'sluice'" in (dest / "usr/share/fish/vendor_completions.d/sluice.fish").read_text()
    assert (dest / "usr/share/sluice/examples/grafana-dashboard.json").exists()
    subprocess.run(["make", "-s", "uninstall", f"DESTDIR={dest}", "PREFIX=/usr"], cwd=REPO, check=True, capture_output=True, timeout=60)
    assert not (dest / "usr/share/man/man8/sluice.8").exists() and not bash.exists()


def test_readme_commands_run_for_root_and_for_a_sudo_user():
    readme = (REPO / "README.md").read_text()
    assert "\nscripts/demo.sh " in readme and "\nscripts/test.sh " in readme, "the two commands, without sudo in front"
    # A copy of the scripts that an unprivileged user can run, a fake sudo that records how
    # it was asked, and a PATH without any sudo.
    d = Path(tempfile.mkdtemp(prefix="sluice-sudo-"))
    try:
        shutil.copytree(REPO / "scripts", d / "scripts")
        (d / "bin").mkdir()
        (d / "nosudo").mkdir()
        record = d / "asked"
        (d / "bin/sudo").write_text(f"#!/bin/sh\necho \"$@\" > {record}\n")
        for tool in ("bash", "id", "env", "sh", "dirname"):
            os.symlink(shutil.which(tool), d / "nosudo" / tool)
        os.chmod(d / "bin/sudo", 0o755)
        for p in [d, *d.rglob("*")]:
            if not p.is_symlink():
                os.chmod(p, 0o777 if p.is_dir() else 0o755)
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        for script in ("test.sh", "demo.sh"):
            path = f"{d}/bin:/usr/bin:/bin"
            r = subprocess.run(nobody + ["env", f"PATH={path}", f"{d}/scripts/{script}", "-k", "x"], capture_output=True,
                               text=True, timeout=30)
            assert r.returncode == 0 and "running again as root (sudo)" in r.stderr, r.stderr
            assert record.read_text().split() == ["env", f"PATH={path}", f"{d}/scripts/{script}", "-k", "x"]
            record.unlink()
            r = subprocess.run(nobody + [shutil.which("env"), f"PATH={d}/nosudo", f"{d}/scripts/{script}"], capture_output=True,
                               text=True, timeout=30)
            assert r.returncode == 1 and "there is no sudo here: run it as root" in r.stderr, r.stderr
    finally:
        shutil.rmtree(d)
