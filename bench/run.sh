#!/usr/bin/env bash
# Throughput and latency in network namespaces, side by side in one run:
# plain veth, the NFQUEUE redirect alone, Sluice ESP (each proposal, tunnel and
# transport), 1 vs 2 queues, and wireguard-go. Writes bench/results/{results.md,
# results.json,chart.png}. Every flow is bounded in time; the run takes about 10 min.
#   sudo bench/run.sh [rounds] [seconds-per-flow] [case ...]   (defaults: 3 rounds, 1.5 s, all cases)
# Naming cases runs only those (e.g. "sluice aes128gcm16 tunnel" wireguard-go) and writes
# bench/results/subset.{md,json} instead, for a longer, quieter look at a few.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
if ! dpkg-query -W -f='${Status}' wireguard-go python3-matplotlib 2>/dev/null | grep -q "ok installed.*ok installed"; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wireguard-go wireguard-tools python3-matplotlib >/dev/null
fi
swift build -c release
SLUICE_BIN="$PWD/.build/release/sluice" exec /usr/bin/python3 bench/netns.py "$@"
