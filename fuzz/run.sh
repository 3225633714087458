#!/usr/bin/env bash
# Builds the libFuzzer targets and runs them; prints libFuzzer's final stats.
#   fuzz/run.sh [seconds] [open|ike|agent|all]    default 600 (10 minutes) of `open`; `all` runs each
#   open:  the ESP open path and the TCP offload paths (fuzz/FuzzOpen.swift)
#   ike:   the IKEv2 message codec, decode and re-encode (fuzz/FuzzIKE.swift)
#   agent: the IKEv2 responder's state machine against an in-process initiator (fuzz/FuzzIKEAgent.swift)
# One job each; libFuzzer's -jobs/-workers are left at 1 (the build machine is shared).
set -euo pipefail
# Traps reach libFuzzer as signals (it writes the input); the backtracer would hold the pipe.
export SWIFT_BACKTRACE=enable=no
cd "$(dirname "$0")/.."
secs=${1:-600}
which=${2:-open}
case "$which" in open|ike|agent|all) ;; *) echo "usage: fuzz/run.sh [seconds] [open|ike|agent|all]" >&2; exit 2 ;; esac
out=.build/fuzz
mkdir -p "$out/module" "$out/corpus" "$out/crashes"
# The C shim, instrumented too, and a module map so the core's `import CSluiceCrypto` resolves.
for c in $(cd Sources/CSluiceCrypto && ls *.c | sed "s/\.c$//"); do
  clang -c -O1 -g -fsanitize=fuzzer-no-link,address -I Sources/CSluiceCrypto/include \
    "Sources/CSluiceCrypto/$c.c" -o "$out/$c.o"
done
cat > "$out/module/module.modulemap" <<MAP
module CSluiceCrypto {
    header "$PWD/Sources/CSluiceCrypto/include/sluice_crypto.h"
    header "$PWD/Sources/CSluiceCrypto/include/sluice_digest.h"
    link "crypto"
    export *
}
MAP

run_open() {
  swiftc -O -g -sanitize=fuzzer,address -parse-as-library -module-name SluiceFuzz \
    -I "$out/module" Sources/SluiceCore/*.swift fuzz/FuzzOpen.swift "$out/sluice_crypto.o" -lcrypto \
    -o "$out/fuzz-open"
  # A few seeds: one per mode byte, so every branch is reached from the start.
  for m in 0 1 2 3 4; do printf "\\x0$m\\x01\\x45\\x00\\x00\\x1c\\x00\\x00\\x00\\x00\\x40\\x11" > "$out/corpus/seed$m"; done
  "$out/fuzz-open" -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=4096 "$out/corpus" 2>&1 | tail -25
}

# SluiceCore as its own module (the IKE sources `import SluiceCore`), instrumented.
build_core() {
  local lib=$1
  mkdir -p "$lib"
  swiftc -O -g -sanitize=fuzzer,address -parse-as-library -module-name SluiceCore \
    -I "$out/module" -emit-module -emit-module-path "$lib/SluiceCore.swiftmodule" -emit-library -static \
    -o "$lib/libSluiceCore.a" Sources/SluiceCore/*.swift
}

run_ike() {
  # The core, then the codec, then the entry point; all instrumented (libFuzzer itself is
  # linked into the last one only).
  local lib="$out/ike-lib" corpus="$out/corpus-ike"
  mkdir -p "$corpus"
  build_core "$lib"
  swiftc -O -g -sanitize=fuzzer,address -parse-as-library -module-name SluiceIKE \
    -I "$out/module" -I "$lib" -emit-module -emit-module-path "$lib/SluiceIKE.swiftmodule" -emit-library -static \
    -o "$lib/libSluiceIKE.a" Sources/SluiceIKE/Wire/*.swift
  swiftc -O -g -sanitize=fuzzer,address -parse-as-library -module-name SluiceIKEFuzz \
    -I "$out/module" -I "$lib" fuzz/FuzzIKE.swift -L "$lib" -lSluiceIKE -lSluiceCore "$out"/sluice_*.o -lcrypto \
    -o "$out/fuzz-ike"
  # Seeds, each as a datagram (mode 0) and as its payload chain (mode 1, first type = header's):
  # strongSwan's IKE_SA_INIT and the messages of fuzz/ike-seeds (from the codec tests).
  local f name
  for f in tests/fixtures/ike/*.hex fuzz/ike-seeds/*.hex; do
    name=$(basename "$f" .hex)
    { printf '\x00'; xxd -r -p "$f"; } > "$corpus/seed-$name"
    { printf '\x01'; xxd -r -p "$f" | tail -c +17 | head -c 1; xxd -r -p "$f" | tail -c +29; } > "$corpus/seed-$name-chain"
  done
  "$out/fuzz-ike" -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=4096 "$corpus" 2>&1 | tail -25
}

run_agent() {
  # The whole of SluiceIKE (wire, crypto, agent) with -enable-testing: the harness reads the
  # responder's IKE SAs (their keys, message IDs, children) to seal messages for them and to
  # check its invariants.
  local lib="$out/agent-lib" corpus="$out/corpus-agent"
  mkdir -p "$corpus"
  build_core "$lib"
  swiftc -O -g -sanitize=fuzzer,address -parse-as-library -enable-testing -module-name SluiceIKE \
    -I "$out/module" -I "$lib" -emit-module -emit-module-path "$lib/SluiceIKE.swiftmodule" -emit-library -static \
    -o "$lib/libSluiceIKE.a" Sources/SluiceIKE/*/*.swift
  swiftc -O -g -sanitize=fuzzer,address -parse-as-library -module-name SluiceIKEAgentFuzz \
    -I "$out/module" -I "$lib" fuzz/FuzzIKEAgent.swift -L "$lib" -lSluiceIKE -lSluiceCore \
    "$out"/sluice_*.o -lcrypto -o "$out/fuzz-ike-agent"
  # Seeds: scripts of real exchanges (fuzz/agent-seeds/*.hex, one op script each; the op
  # encoding is in fuzz/FuzzIKEAgent.swift).
  local f
  for f in fuzz/agent-seeds/*.hex; do
    grep -v '^#' "$f" | xxd -r -p > "$corpus/seed-$(basename "$f" .hex)"
  done
  # The whole log in .build/fuzz/agent.log; here the last coverage line (edges, features),
  # any finding (the input is kept in .build/fuzz/crashes/) and the final stats.
  local rc=0
  "$out/fuzz-ike-agent" -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=4096 -max_len=512 -timeout=10 \
    -artifact_prefix="$out/crashes/agent-" "$corpus" > "$out/agent.log" 2>&1 || rc=$?
  grep -E '^#[0-9]+.*cov:' "$out/agent.log" | tail -1
  grep -E 'Fatal error|ERROR: libFuzzer|ERROR: AddressSanitizer|Test unit written|^stat::' "$out/agent.log" || true
  return $rc
}

case "$which" in
  open) run_open ;;
  ike) run_ike ;;
  agent) run_agent ;;
  all) run_open; run_ike; run_agent ;;
esac
