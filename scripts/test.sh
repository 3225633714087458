#!/usr/bin/env bash
# The whole test suite: the unit tests (no root needed) and the end-to-end suite on
# network namespaces with real nftables, NFQUEUE and independent ESP peers (root).
#   scripts/test.sh             everything (as root, or as a user with sudo)
#   scripts/test.sh -k tunnel   pass pytest options to the end-to-end part
set -euo pipefail
source "$(dirname "$0")/as-root.sh"
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== unit tests (swift test)"
mkdir -p .build   # a fresh clone has none yet, and tee needs the folder
swift test 2>&1 | tee .build/unit-tests.log | grep -vE "^(􀟈|◇) Test .* started|^Test Suite .* started" || true
grep -qE "Test run with [0-9]+ tests? .* passed" .build/unit-tests.log || { echo "unit tests failed"; exit 1; }

echo "== release build for the end-to-end suite"
swift build -c release

echo "== end-to-end tests (pytest, network namespaces)"
# Debian's python3 carries python3-scapy; a pyenv python on PATH would not.
SLUICE_BIN="$PWD/.build/release/sluice" /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/e2e "$@"
