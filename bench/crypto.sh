#!/usr/bin/env bash
# Issue 2 micro-benchmark: Sluice's seal and open per algorithm and packet size, beside
# `openssl speed` of the same primitives run by the same script, and the ratio at 1400 B.
#   bench/crypto.sh [seconds-per-case]     (default 0.5)
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product sluice-bench >/dev/null
exec python3 bench/crypto.py "${1:-0.5}"
