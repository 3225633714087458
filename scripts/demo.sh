#!/usr/bin/env bash
# Sluice's main job end to end on a built-in default: two network namespaces, an ESP
# tunnel between them, traffic through it, ESP on the wire (decrypted by tshark with
# the same keys), and `sluice stats`. Everything it creates is removed at the end.
set -euo pipefail
source "$(dirname "$0")/as-root.sh"
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release
SLUICE_BIN="$PWD/.build/release/sluice" exec /usr/bin/python3 tests/e2e/demo.py "$@"
