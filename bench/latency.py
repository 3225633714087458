"""Idle ping latency through each path, and where it goes: see bench/latency.sh."""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.argv = sys.argv[:1]  # netns.py reads its own arguments
import netns  # noqa: E402
from lab import Lab  # noqa: E402

CASES = [("veth", netns.setup_veth),
         ("redirect alone (passthrough, 2 queues)", lambda l: netns.setup_sluice(l, "transport", "aes128gcm16", 2, passthrough=True)),
         ("sluice aes128gcm16 tunnel, 2 queues", lambda l: netns.setup_sluice(l, "tunnel", "aes128gcm16", 2)),
         ("sluice aes128gcm16 tunnel, 1 queue", lambda l: netns.setup_sluice(l, "tunnel", "aes128gcm16", 1)),
         ("sluice 1 queue, busy_poll_us = 300", lambda l: netns.setup_sluice(l, "tunnel", "aes128gcm16", 1, busy_poll=300)),
         # Longer than the 5 ms between pings: the workers never sleep (a core each, spinning).
         ("sluice 1 queue, busy_poll_us = 6000", lambda l: netns.setup_sluice(l, "tunnel", "aes128gcm16", 1, busy_poll=6000))]


def main():
    rows = []
    for name, setup in CASES:
        lab = Lab("lat")
        try:
            a, b, target, src = setup(lab)
            time.sleep(0.5)
            runs = [netns.ping_latency(lab, a, target, src, count=200) for _ in range(3)]
            p50 = sorted(r["p50_us"] for r in runs if r)[1]
            p99 = sorted(r["p99_us"] for r in runs if r)[1]
            rows.append((name, p50, p99))
            print(f"{name:42} p50 {p50:5.0f} us  p99 {p99:5.0f} us", flush=True)
        finally:
            lab.close()
    base = rows[0][1]
    print("\nadded over veth, p50 (median of 3 x 200 pings, 5 ms apart):")
    for name, p50, _ in rows[1:]:
        print(f"  {name:42} {p50 - base:5.0f} us")


if __name__ == "__main__":
    main()
