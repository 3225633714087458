#!/usr/bin/env bash
# The cost of the durable replay mark on the open path, in instructions per packet
# (valgrind's callgrind): unlike pkt/s on a shared VM, the same for the same binary and
# inputs whatever else the machine does. Two packet counts each way; the difference
# divided by the packets between them removes setup costs. The background writer's
# thread is counted too.
#   bench/replay-mark.sh [proposal] [size]
set -euo pipefail
cd "$(dirname "$0")/.."
proposal=${1:-aes128gcm16}; size=${2:-1400}
command -v valgrind >/dev/null || { echo "replay-mark: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
# No debug info: valgrind 3.19 cannot read Swift's; stripped, it counts the same code.
swift build -c release --product sluice-bench --scratch-path .build-cg -Xswiftc -gnone >/dev/null
bin=$(mktemp /tmp/sluice-bench-stripped.XXXXXX)
trap 'rm -f "$bin" /tmp/sluice-cg.$$.*' EXIT
strip -o "$bin" .build-cg/release/sluice-bench
small=8192; large=32768
ir() {  # mark packets
  valgrind --tool=callgrind --callgrind-out-file=/tmp/sluice-cg.$$.%p "$bin" open-count "$2" "$proposal" "$size" "$1" 2>&1 |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
off=$(( ($(ir 0 $large) - $(ir 0 $small)) / (large - small) ))
on=$(( ($(ir 1 $large) - $(ir 1 $small)) / (large - small) ))
printf 'open path, %s, %d-byte packets, instructions per packet (callgrind)\n' "$proposal" "$size"
printf '  replay mark off: %8d\n  replay mark on : %8d\n' "$off" "$on"
awk -v off="$off" -v on="$on" 'BEGIN { printf "  cost of the durable replay mark: %.2f%% (target <= 3%%)\n", (on - off) / off * 100 }'
