"""Runs inside a namespace: watches the ESP packets of one SPI arrive and sends SIGHUP
to a process just before the SA's sequence number reaches the end of a block.

argv: interface, SPI, pid, block size. Each line "arm LEAD_MS" on stdin arms it once:
it fires when the numbers left before the next multiple of the block, at the rate it
measures, would be used up within LEAD_MS, and prints "fired SEQ LEFT RATE". Reading
the wire instead of polling `sluice stats` times the reload to well under a millisecond.
"""
import os
import select
import signal
import socket
import struct
import sys
import time

iface, spi, pid, block = sys.argv[1], int(sys.argv[2], 0), int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
s.bind((iface, 0))
s.setblocking(False)
armed, lead = False, 0.0
history = []          # (time, seq) of recent packets, for the rate
while True:
    ready, _, _ = select.select([s, sys.stdin], [], [], 1.0)
    if sys.stdin in ready:
        line = sys.stdin.readline()
        if not line:
            break
        if line.startswith("arm"):
            armed, lead = True, float(line.split()[1]) / 1000
    if s not in ready:
        continue
    while True:
        try:
            p = s.recv(64)
        except BlockingIOError:
            break
        if len(p) < 28 or p[9] != 50:
            continue
        ihl = (p[0] & 15) * 4
        got_spi, seq = struct.unpack_from("!II", p, ihl)
        if got_spi != spi:
            continue
        now = time.monotonic()
        # One sample per 5 ms, the rate over the last 50 ms: packets come in bursts
        # (one GSO packet becomes dozens of ESP packets at once).
        if not history or now - history[-1][0] >= 0.005:
            history.append((now, seq))
            del history[:-11]
        if not armed or len(history) < 11:
            continue
        t0, s0 = history[0]
        rate = (seq - s0) / (now - t0) if now > t0 and seq > s0 else 0
        left = block - seq % block
        if rate > 0 and left / rate <= lead:
            os.kill(pid, signal.SIGHUP)
            armed = False
            print(f"fired {seq} {left} {rate:.0f}", flush=True)
