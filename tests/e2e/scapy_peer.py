"""Runs inside a namespace: scapy as an independent ESP peer of a Sluice host.

argv[1] is a JSON object: mode, proposal, keys, SPIs, addresses, count. Sends `count`
ICMP echo requests sealed by scapy's ESP code, captures what comes back, opens it with
scapy and prints a JSON report: how many replies decrypted and whether they were echo
replies from the expected host.
"""
import json
import sys
import time

from scapy.all import AsyncSniffer, conf, send
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation

ALGOS = {
    "aes128gcm16": ("AES-GCM", "NULL", None), "aes256gcm16": ("AES-GCM", "NULL", None),
    "chacha20poly1305": ("CHACHA20-POLY1305", "NULL", None),
    "aes128-sha256": ("AES-CBC", "SHA2-256-128", 16), "aes256-sha256": ("AES-CBC", "SHA2-256-128", 32),
}


def make_sa(spec, spi, key_hex, src, dst):
    crypt, auth, enc_len = ALGOS[spec["proposal"]]
    key = bytes.fromhex(key_hex)
    ck, ak = (key, None) if enc_len is None else (key[:enc_len], key[enc_len:])
    ip = IPv6 if ":" in src else IP
    tunnel = ip(src=src, dst=dst) if spec["mode"] == "tunnel" else None
    return SecurityAssociation(ESP, spi=spi, crypt_algo=crypt, crypt_key=ck, auth_algo=auth, auth_key=ak,
                               tunnel_header=tunnel)


def main():
    spec = json.loads(sys.argv[1])
    conf.verb = 0
    out_sa = make_sa(spec, spec["spi_out"], spec["key_out"], spec["local"], spec["remote"])
    in_sa = make_sa(spec, spec["spi_in"], spec["key_in"], spec["remote"], spec["local"])
    v6 = ":" in spec["inner_src"]
    sniffer = AsyncSniffer(iface=spec["iface"], filter="ip proto 50 or ip6 proto 50" if True else None, store=True)
    sniffer.start()
    time.sleep(0.5)
    for i in range(spec["count"]):
        if v6:
            inner = IPv6(src=spec["inner_src"], dst=spec["inner_dst"]) / ICMPv6EchoRequest(id=0x5c, seq=i + 1, data=b"sluice-interop")
        else:
            inner = IP(src=spec["inner_src"], dst=spec["inner_dst"]) / ICMP(id=0x5c, seq=i + 1) / b"sluice-interop"
        send(out_sa.encrypt(inner, seq_num=i + 1))
        time.sleep(0.1)
    time.sleep(1.0)
    captured = sniffer.stop()
    replies, errors = 0, []
    for p in captured:
        ip = p.getlayer(IPv6) if p.haslayer(IPv6) else p.getlayer(IP)
        if ip is None or ip.src != spec["remote"] or not p.haslayer(ESP) or p[ESP].spi != spec["spi_in"]:
            continue
        try:
            clear = in_sa.decrypt(ip)
        except Exception as e:  # noqa: BLE001 - report, do not hide
            errors.append(repr(e))
            continue
        ok = clear.haslayer(ICMPv6EchoReply) if v6 else (clear.haslayer(ICMP) and clear[ICMP].type == 0)
        if ok and clear.src == spec["inner_dst"] and bytes(clear).endswith(b"sluice-interop"):
            replies += 1
    print(json.dumps({"sent": spec["count"], "replies": replies, "errors": errors}))


main()
