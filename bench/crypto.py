"""Runs sluice-bench crypto and openssl speed in one go; prints a table and ratios."""
import subprocess
import sys

secs = float(sys.argv[1]) if len(sys.argv) > 1 else 0.5


def openssl(args, size=1400):
    out = subprocess.run(["openssl", "speed", "-mr", *args, "-bytes", str(size), "-seconds", "2"],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("+F:"):
            return float(line.split(":")[3]) / 1e6  # MB/s
    raise RuntimeError(f"openssl speed {' '.join(args)}: no result")


def combined(a, b):
    return 1 / (1 / a + 1 / b)  # encrypt then MAC, one after the other


rows = subprocess.run([".build/release/sluice-bench", "crypto", str(secs)], capture_output=True, text=True, check=True).stdout
data = [l.split(",") for l in rows.strip().splitlines()[1:]]
print(f"{'proposal':18} {'size':>5} {'seal pkt/s':>11} {'seal MB/s':>10} {'open pkt/s':>11} {'open MB/s':>10} {'crypto only MB/s':>17}")
for p, size, sp, sm, op, om, bare in data:
    print(f"{p:18} {size:>5} {float(sp):>11.0f} {float(sm):>10.1f} {float(op):>11.0f} {float(om):>10.1f} {float(bare):>17.1f}")

def baseline():
    hmac = openssl(["-hmac", "sha256"])
    return {
        "aes128gcm16": openssl(["-evp", "aes-128-gcm"]),
        "aes256gcm16": openssl(["-evp", "aes-256-gcm"]),
        "chacha20poly1305": openssl(["-evp", "chacha20-poly1305"]),
        "aes128-sha256": combined(openssl(["-evp", "aes-128-cbc"]), hmac),
        "aes256-sha256": combined(openssl(["-evp", "aes-256-cbc"]), hmac),
        "null-sha256": hmac,
    }


# The 1400-byte comparison: three rounds, openssl and Sluice alternating, best of each,
# because timings on a shared 2-core machine swing by tens of percent.
base, best = {}, {}
for rnd in range(3):
    for k, v in baseline().items():
        base[k] = max(base.get(k, 0), v)
    rows1400 = subprocess.run([".build/release/sluice-bench", "crypto", str(secs), "1400"], capture_output=True, text=True,
                              check=True).stdout.strip().splitlines()[1:]
    for row in rows1400:
        f = row.split(",")
        old = best.get(f[0])
        best[f[0]] = f if old is None else [f[0], f[1]] + [str(max(float(a), float(b))) for a, b in zip(old[2:], f[2:])]
data = list(best.values())
print("\nAt 1400 bytes, against openssl speed of the same primitives (CBC+HMAC: the two run back to back):")
print(f"{'proposal':18} {'openssl MB/s':>12} {'seal MB/s':>10} {'ratio':>6} {'open MB/s':>10} {'ratio':>6} {'crypto only':>11} {'ratio':>6}")
worst = 9.0
for p, size, sp, sm, op, om, bare in data:
    if size != "1400":
        continue
    b = base[p]
    rs, ro, rb = float(sm) / b, float(om) / b, float(bare) / b
    worst = min(worst, rs, ro)
    print(f"{p:18} {b:>12.1f} {float(sm):>10.1f} {rs:>6.2f} {float(om):>10.1f} {ro:>6.2f} {float(bare):>11.1f} {rb:>6.2f}")
print(f"\nworst ratio at 1400 B: {worst:.2f} (target >= 0.70), best of 3 alternating rounds each")
print("'crypto only' is Sluice's transform on a ready buffer: where it is itself far below openssl speed, the gap is")
print("the per-packet cost of OpenSSL's EVP sequence (init with the nonce, AAD, update, final, tag), which")
print("`openssl speed -evp` does not pay: it streams one context.")
