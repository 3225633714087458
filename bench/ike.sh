#!/usr/bin/env bash
# In-process IKEv2 benchmark (no root, no sockets): two agents back to back in memory.
# Establishments (IKE_SA_INIT + IKE_AUTH + one CHILD_SA) per second and CHILD_SA rekeys
# (CREATE_CHILD_SA with REKEY_SA, then the delete) per second on one IKE SA, for
# aes128gcm16-prfsha256-x25519 and aes128-sha256-modp2048, each with and without PFS; and
# in the same run the ratios: rekeys per establishment, PFS / no PFS, MODP / X25519.
#   bench/ike.sh [seconds-per-figure] [rounds]     (defaults 1 s, best of 3 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product sluice-bench >/dev/null
exec .build/release/sluice-bench ike "${1:-1}" "${2:-3}"
