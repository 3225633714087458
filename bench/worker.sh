#!/usr/bin/env bash
# In-process worker benchmark (no root, no netns): the worker loop of the daemon over an
# in-memory queue, 1 thread vs 2, and the cost of counting (stats compiled out), in one run.
#   bench/worker.sh [seconds] [proposal] [size]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}; proposal=${2:-aes128gcm16}; size=${3:-1400}
swift build -c release --product sluice-bench >/dev/null
swift build -c release --product sluice-bench --scratch-path .build-nostats -Xswiftc -DSLUICE_NO_STATS >/dev/null
with=.build/release/sluice-bench
without=.build-nostats/release/sluice-bench
pps() { sed -n 's/.* pps=\([0-9]*\).*/\1/p'; }
declare -A r
for round in 1 2 3; do   # alternate the order, keep the best of three for each
  for case in "with 1" "without 1" "with 2" "without 2"; do
    set -- $case
    bin=$with; [[ $1 == without ]] && bin=$without
    v=$($bin worker "$2" "$secs" "$proposal" "$size" | pps)
    key="$1-$2"
    [[ -z ${r[$key]:-} || $v -gt ${r[$key]} ]] && r[$key]=$v
  done
done
printf 'worker loop, %s, %d-byte packets, best of 3 runs of %ss each\n' "$proposal" "$size" "$secs"
printf '  1 thread,  stats on : %10d pkt/s\n' "${r[with-1]}"
printf '  1 thread,  stats off: %10d pkt/s\n' "${r[without-1]}"
printf '  2 threads, stats on : %10d pkt/s\n' "${r[with-2]}"
printf '  2 threads, stats off: %10d pkt/s\n' "${r[without-2]}"
# The open path with the durable replay mark (file store + background writer) vs none.
declare -A o
for round in 1 2 3 4 5; do   # alternate which goes first: this VM drifts between runs
  order="0 1"; (( round % 2 == 0 )) && order="1 0"
  for m in $order; do
    v=$($with open 1 "$secs" "$proposal" "$size" "$m" | pps)
    [[ -z ${o[$m]:-} || $v -gt ${o[$m]} ]] && o[$m]=$v
  done
done
printf '  open, 1 thread, best of 5, replay mark off: %10d pkt/s\n' "${o[0]}"
printf '  open, 1 thread, best of 5, replay mark on : %10d pkt/s\n' "${o[1]}"
awk -v off="${o[0]}" -v on="${o[1]}" 'BEGIN { printf "  cost of the durable replay mark: %.1f%% (target <= 3%%)\n", (off - on) / off * 100 }'
awk -v a="${r[with-1]}" -v b="${r[with-2]}" -v c="${r[without-1]}" 'BEGIN {
  printf "  scaling 2 threads / 1 thread: %.2fx (target >= 1.8)\n", b / a
  printf "  cost of stats (1 thread): %.1f%% (target < 2%%)\n", (c - a) / c * 100 }'
