"""The network benchmark: see bench/run.sh."""
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from lab import Lab, sluice_host_pair, two_hosts  # noqa: E402

REPORT_ONLY = len(sys.argv) > 1 and sys.argv[1] == "--report"  # redraw from results.json
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 and not REPORT_ONLY else 3
SECS = float(sys.argv[2]) if len(sys.argv) > 2 and not REPORT_ONLY else 1.5
ONLY = sys.argv[3:] if not REPORT_ONLY else []  # case names: a subset, written to subset.md/json
OUT = Path(__file__).resolve().parent / "results"
DEADLINE = time.time() + 11 * 60  # a hard bound on the whole run


def setup_sluice(lab, mode, proposal, queues, passthrough=False, batch=None, busy_poll=None, gso=True):
    extra = ("passthrough = true\n" if passthrough else "") + (f"batch = {batch}\n" if batch else "")
    extra += f"busy_poll_us = {busy_poll}\n" if busy_poll else ""
    extra += "" if gso else "gso = false\n"
    a, b, _, _, _, target, src = sluice_host_pair(lab, mode, proposal, queues=queues, extra_header=extra)
    return a, b, target, src


def setup_veth(lab):
    a, b = two_hosts(lab)
    return a, b, "192.0.2.2", "192.0.2.1"


def setup_wireguard(lab):
    a, b = two_hosts(lab)
    keys = {}
    for ns in (a, b):
        priv = lab.sh(ns, "wg genkey").stdout.strip()
        pub = lab.sh(ns, f"echo {priv} | wg pubkey").stdout.strip()
        keys[ns] = (priv, pub)
    env = "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 WG_PROCESS_FOREGROUND=1"
    # wireguard-go's UAPI socket (/var/run/wireguard/IFACE.sock) is shared by every
    # namespace: each side needs an interface name of its own.
    tag = os.getpid() % 10000
    for ns, side, peer, inner, other, port, port_peer in ((a, "a", "192.0.2.2", "198.51.100.1", "203.0.113.0/24", 51820, 51821),
                                                          (b, "b", "192.0.2.1", "203.0.113.1", "198.51.100.0/24", 51821, 51820)):
        dev = f"wg{tag}{side}"
        lab.popen(ns, f"env {env} wireguard-go -f {dev}", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if lab.sh(ns, f"ip link show {dev}", check=False).returncode == 0:
                break
            time.sleep(0.1)
        keyfile = lab.workdir / f"wg-{side}.key"
        keyfile.write_text(keys[ns][0] + "\n")
        os.chmod(keyfile, 0o600)
        peer_ns = b if ns == a else a
        lab.sh(ns, f"wg set {dev} private-key {keyfile} listen-port {port} "
                   f"peer {keys[peer_ns][1]} allowed-ips {other} endpoint {peer}:{port_peer}")
        lab.sh(ns, f"ip addr add {inner}/32 dev {dev}; ip link set {dev} mtu 1420 up; ip route add {other} dev {dev} src {inner}")
    return a, b, "203.0.113.1", "198.51.100.1"


def iperf(lab, a, b, target, src, args):
    srv = lab.popen(b, f"iperf3 -s -1 -B {target}", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    try:
        r = lab.sh(a, f"iperf3 -c {target} -B {src} -t {SECS} --connect-timeout 3000 -J {args}", check=False, timeout=SECS + 20)
    except subprocess.TimeoutExpired:
        srv.kill()
        return {"mbps": 0.0, "loss": None, "error": "timed out"}
    try:
        srv.wait(timeout=10)
    except subprocess.TimeoutExpired:
        srv.kill()
    try:
        j = json.loads(r.stdout)
    except json.JSONDecodeError:
        return {"mbps": 0.0, "loss": None, "error": r.stderr[-200:]}
    end = j.get("end", {})
    if "-u" not in args:
        return {"mbps": end.get("sum_received", {}).get("bits_per_second", 0) / 1e6, "loss": None}
    s = end.get("sum", {})
    return {"mbps": s.get("bits_per_second", 0) * (1 - s.get("lost_percent", 0) / 100) / 1e6,
            "loss": s.get("lost_percent")}


def ping_latency(lab, a, target, src, count=200):
    r = lab.sh(a, f"ping -c {count} -i 0.005 -W 1 -I {src} {target}", check=False, timeout=30)
    rtts = sorted(float(x) for x in re.findall(r"time=([0-9.]+) ms", r.stdout))
    if not rtts:
        return None
    q = lambda p: rtts[min(len(rtts) - 1, int(p * len(rtts)))] * 1000  # microseconds
    return {"p50_us": q(0.50), "p99_us": q(0.99)}


def measure(lab, a, b, target, src):
    res = {}
    res["latency_idle"] = ping_latency(lab, a, target, src, count=100)
    res["tcp1"] = iperf(lab, a, b, target, src, "")
    res["tcp2"] = iperf(lab, a, b, target, src, "-P 2")
    res["udp1400"] = iperf(lab, a, b, target, src, "-u -b 0 -l 1372")
    res["udp64"] = iperf(lab, a, b, target, src, "-u -b 0 -l 36")
    # Latency under load: a TCP stream runs while we ping.
    srv = lab.popen(b, f"iperf3 -s -1 -B {target}", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    load = lab.popen(a, f"iperf3 -c {target} -B {src} -t {SECS + 1}", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    res["latency_loaded"] = ping_latency(lab, a, target, src, count=int(SECS * 100))
    load.wait(timeout=SECS + 20)
    srv.wait(timeout=10)
    return res


CASES = [("veth", lambda l: setup_veth(l)),
         ("redirect (passthrough)", lambda l: setup_sluice(l, "transport", "aes128gcm16", 2, passthrough=True)),
         ("redirect naive (batch 1, no GSO)", lambda l: setup_sluice(l, "transport", "aes128gcm16", 2, passthrough=True, batch=1, gso=False))]
for p in ("aes128gcm16", "aes256gcm16", "chacha20poly1305", "aes128-sha256"):
    for m in ("tunnel", "transport"):
        CASES.append((f"sluice {p} {m}", (lambda p, m: lambda l: setup_sluice(l, m, p, 2))(p, m)))
CASES.append(("sluice aes128gcm16 tunnel 1 queue", lambda l: setup_sluice(l, "tunnel", "aes128gcm16", 1)))
CASES.append(("sluice aes128gcm16 tunnel, GSO off", lambda l: setup_sluice(l, "tunnel", "aes128gcm16", 2, gso=False)))
CASES.append(("wireguard-go", setup_wireguard))


def cpu_seconds():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) / os.sysconf("SC_CLK_TCK"), (v[3] + v[4]) / os.sysconf("SC_CLK_TCK")


def main():
    global CASES
    if ONLY:
        unknown = [n for n in ONLY if n not in dict(CASES)]
        if unknown:
            sys.exit(f"unknown case(s) {unknown}; the cases are: {[n for n, _ in CASES]}")
        CASES = [(n, s) for n, s in CASES if n in ONLY]
    # Every case gets its namespaces and daemons once, up front (idle daemons cost
    # nothing); then three rounds run over all of them in alternating order, so slow
    # drift of the machine spreads over every case instead of favouring one.
    results = {name: [] for name, _ in CASES}
    labs = []
    try:
        ready = []
        for name, setup in CASES:
            lab = Lab(f"b{len(labs)}")
            labs.append(lab)
            ready.append((name, lab, setup(lab)))
            print(f"set up {name}", flush=True)
        for rnd in range(ROUNDS):
            order = ready[rnd % len(ready):] + ready[:rnd % len(ready)]
            if rnd % 2:
                order = list(reversed(order))
            for name, lab, (a, b, target, src) in order:
                if time.time() > DEADLINE:
                    print("time bound reached; stopping early", flush=True)
                    break
                t0, idle0 = cpu_seconds()
                r = measure(lab, a, b, target, src)
                t1, idle1 = cpu_seconds()
                r["cpu_busy_fraction"] = 1 - (idle1 - idle0) / max(1e-9, (t1 - t0))
                results[name].append(r)
                lat = r["latency_idle"]["p50_us"] if r["latency_idle"] else float("nan")
                print(f"round {rnd + 1} {name:42} tcp1 {r['tcp1']['mbps']:7.0f} Mbit/s  tcp2 {r['tcp2']['mbps']:7.0f}  "
                      f"udp1400 {r['udp1400']['mbps']:6.0f}  udp64 {r['udp64']['mbps']:5.1f}  ping p50 {lat:.0f} us", flush=True)
    finally:
        for lab in labs:
            lab.close()
    report(results)


def stat(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"min": min(v), "median": statistics.median(v), "max": max(v), "n": len(v)}


def report(results):
    OUT.mkdir(exist_ok=True)
    summary = {}
    for name, runs in results.items():
        s = {}
        for k in ("tcp1", "tcp2", "udp1400", "udp64"):
            s[k] = stat([r[k]["mbps"] for r in runs])
            s[k + "_loss"] = stat([r[k].get("loss") for r in runs])
        for k in ("latency_idle", "latency_loaded"):
            s[k + "_p50_us"] = stat([r[k]["p50_us"] for r in runs if r[k]])
            s[k + "_p99_us"] = stat([r[k]["p99_us"] for r in runs if r[k]])
        s["cpu_busy"] = stat([r["cpu_busy_fraction"] for r in runs])
        summary[name] = s
    stem = "subset" if ONLY else "results"
    (OUT / f"{stem}.json").write_text(json.dumps({"rounds": ROUNDS, "seconds": SECS, "raw": results, "summary": summary}, indent=1))
    med = lambda n, k: (summary.get(n, {}).get(k) or {}).get("median") or 0.0
    veth = med("veth", "tcp1")
    wg = med("wireguard-go", "tcp1")
    lines = ["| case | TCP 1 stream Mbit/s (min/med/max) | TCP 2 streams | UDP 1400 Mbit/s (loss %) | UDP 64 Mbit/s (loss %) | ping idle p50/p99 us | ping loaded p50/p99 us | vs veth (TCP 1) |",
             "|---|---|---|---|---|---|---|---|"]
    f = lambda s: "-" if not s else f"{s['min']:.0f}/{s['median']:.0f}/{s['max']:.0f}"
    for name, s in summary.items():
        loss = lambda k: "-" if not s[k + "_loss"] else f"{s[k + '_loss']['median']:.1f}"
        lat = lambda k: "-" if not s[k + "_p50_us"] else f"{s[k + '_p50_us']['median']:.0f}/{s[k + '_p99_us']['median']:.0f}"
        ratio = med(name, "tcp1") / veth if veth else 0
        lines.append(f"| {name} | {f(s['tcp1'])} | {f(s['tcp2'])} | {med(name, 'udp1400'):.0f} ({loss('udp1400')}) | "
                     f"{med(name, 'udp64'):.1f} ({loss('udp64')}) | {lat('latency_idle')} | {lat('latency_loaded')} | {ratio:.2f} |")
    gcm = med("sluice aes128gcm16 tunnel", "tcp1")
    redirect = med("redirect (passthrough)", "tcp1")
    naive = med("redirect naive (batch 1, no GSO)", "tcp1")
    nogso = med("sluice aes128gcm16 tunnel, GSO off", "tcp1")
    ratios = [f"Sluice aes128gcm16 tunnel / wireguard-go, TCP 1 stream: {gcm / wg:.2f}x (target >= 2)" if wg else "",
              f"Sluice aes128gcm16 tunnel / redirect alone (batched), TCP 1 stream: {gcm / redirect:.2f}" if redirect else "",
              f"Sluice aes128gcm16 tunnel / naive redirect (one recv, verdict, syscall per packet), TCP 1 stream: {gcm / naive:.2f} (target >= 1)" if naive else "",
              f"Sluice aes128gcm16 tunnel, GSO on / off (whole packets vs one crossing per segment), TCP 1 stream: {gcm / nogso:.2f}" if nogso else "",
              f"2 queues / 1 queue, TCP 2 streams: {med('sluice aes128gcm16 tunnel', 'tcp2') / max(1e-9, med('sluice aes128gcm16 tunnel 1 queue', 'tcp2')):.2f}"
              if med('sluice aes128gcm16 tunnel 1 queue', 'tcp2') else "",
              f"added idle latency over veth, p50: {med('sluice aes128gcm16 tunnel', 'latency_idle_p50_us') - med('veth', 'latency_idle_p50_us'):.0f} us (target < 100)"
              if med('veth', 'latency_idle_p50_us') else ""]
    lines += [""] + [r for r in ratios if r]
    text = "\n".join(lines) + "\n"
    (OUT / f"{stem}.md").write_text(text)
    print("\n" + text)
    if ONLY:
        return
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        names = list(summary)
        fig, ax = plt.subplots(figsize=(12, 6))
        width = 0.2
        for i, k in enumerate(("tcp1", "tcp2", "udp1400", "udp64")):
            medians = [med(n, k) for n in names]
            lo = [max(0, med(n, k) - (summary[n][k] or {}).get("min", 0)) for n in names]
            hi = [max(0, (summary[n][k] or {}).get("max", 0) - med(n, k)) for n in names]
            ax.bar([x + i * width for x in range(len(names))], medians, width, yerr=[lo, hi], capsize=2, label=k)
        ax.set_xticks([x + 1.5 * width for x in range(len(names))])
        ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("Mbit/s, log scale (median, min-max bars)")
        ax.set_title(f"Sluice vs veth, the redirect alone and wireguard-go ({ROUNDS} rounds, {SECS:g} s flows, 2 cores)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(OUT / "chart.png", dpi=110)
    except ImportError:
        print("python3-matplotlib missing: no chart")


if __name__ == "__main__":
    if REPORT_ONLY:
        saved = json.loads((OUT / "results.json").read_text())
        ROUNDS, SECS = saved["rounds"], saved["seconds"]
        report(saved["raw"])
    else:
        main()
