#!/usr/bin/env bash
# Throughput and latency in network namespaces, side by side in one run:
# plain veth, the NFQUEUE redirect alone, Sluice ESP (each proposal, tunnel and
# transport), 1 vs 2 queues, and wireguard-go. Writes bench/results/{results.md,
# results.json,chart.png}. Every flow is bounded in time; the run takes about 10 min.
#   sudo bench/run.sh [rounds] [seconds-per-flow]      (defaults: 3 rounds, 1.5 s)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
if ! dpkg-query -W -f='${Status}' wireguard-go python3-matplotlib 2>/dev/null | grep -q "ok installed.*ok installed"; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wireguard-go wireguard-tools python3-matplotlib >/dev/null
fi
swift build -c release
SLUICE_BIN="$PWD/.build/release/sluice" exec /usr/bin/python3 bench/netns.py "$@"
