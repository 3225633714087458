"""Runs inside a namespace: sends each hex-encoded IP packet of a file on a raw socket."""
import socket
import sys
import time

for line in open(sys.argv[1]):
    pkt = bytes.fromhex(line.strip())
    if not pkt:
        continue
    v6 = pkt[0] >> 4 == 6
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    dst = socket.inet_ntop(socket.AF_INET6, pkt[24:40]) if v6 else socket.inet_ntop(socket.AF_INET, pkt[16:20])
    s.sendto(pkt, (dst, 0))
    s.close()
    time.sleep(0.02)
