#!/usr/bin/env bash
# Builds the libFuzzer target for the ESP open path and the TCP offload paths, and runs it.
#   fuzz/run.sh [seconds]      default 600 (10 minutes); prints libFuzzer's final stats
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
out=.build/fuzz
mkdir -p "$out/module" "$out/corpus"
# The C shim, instrumented too, and a module map so the core's `import CSluiceCrypto` resolves.
clang -c -O1 -g -fsanitize=fuzzer-no-link,address -I Sources/CSluiceCrypto/include \
  Sources/CSluiceCrypto/sluice_crypto.c -o "$out/sluice_crypto.o"
cat > "$out/module/module.modulemap" <<MAP
module CSluiceCrypto {
    header "$PWD/Sources/CSluiceCrypto/include/sluice_crypto.h"
    link "crypto"
    export *
}
MAP
swiftc -O -g -sanitize=fuzzer,address -parse-as-library -module-name SluiceFuzz \
  -I "$out/module" Sources/SluiceCore/*.swift fuzz/FuzzOpen.swift "$out/sluice_crypto.o" -lcrypto \
  -o "$out/fuzz-open"
# A few seeds: one per mode byte, so every branch is reached from the start.
for m in 0 1 2 3 4; do printf "\\x0$m\\x01\\x45\\x00\\x00\\x1c\\x00\\x00\\x00\\x00\\x40\\x11" > "$out/corpus/seed$m"; done
"$out/fuzz-open" -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=4096 "$out/corpus" 2>&1 | tail -25
