#!/usr/bin/env bash
# Idle ping latency: veth, the redirect alone, Sluice with 2 and 1 queues, and busy
# polling, each 3 x 200 pings 5 ms apart; prints p50/p99 and what each adds over veth.
#   sudo bench/latency.sh        (about 2 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release
SLUICE_BIN="$PWD/.build/release/sluice" exec /usr/bin/python3 bench/latency.py
