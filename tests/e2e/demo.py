"""The default demo: two hosts, one ESP tunnel, traffic, ESP on the wire, stats."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from lab import Daemon, Lab, SAPair, esp_packets, inner_on_loopback, sluice_binary, tshark, two_hosts  # noqa: E402


def step(text):
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def main():
    with Lab("demo") as lab:
        step("two namespaces joined by a veth: a 192.0.2.1 <-> b 192.0.2.2; inner networks 198.51.100.0/24 and 203.0.113.0/24")
        a, b = two_hosts(lab)
        inner_on_loopback(lab, a, b, "192.0.2.1", "192.0.2.2", "198.51.100.1/32", "203.0.113.1/32")
        pair = SAPair("tunnel", "aes128gcm16", "192.0.2.1", "192.0.2.2", "198.51.100.0/24", "203.0.113.0/24", esn=False)
        da = Daemon(lab, a, "a", pair.config("a", "@HEADER@"))
        db = Daemon(lab, b, "b", pair.config("b", "@HEADER@"))
        print(f"config of host a ({da.config_path}):\n")
        print("\n".join(l if not l.startswith("key =") else 'key = "0x…(redacted in this printout)"'
                        for l in da.config_path.read_text().splitlines()[:24]))
        step("sluice run in both namespaces")
        da.start()
        db.start()
        print(da.log.read_text().strip())
        step("the ruleset Sluice installed in host a")
        print(lab.sh(a, "nft list table inet sluice").stdout[:1800], "...")

        cap = lab.capture(b, "vb", "demo")
        step("ping 203.0.113.1 from 198.51.100.1 through the tunnel")
        print(lab.ping(a, "203.0.113.1", count=4, src="198.51.100.1").stdout.strip())
        step("8 MB over TCP through the tunnel, compared by SHA-256")
        sent, got = lab.tcp_transfer(b, a, "203.0.113.1", nbytes=8_000_000, src="198.51.100.1")
        print(f"sent {sent[:16]}…  received {got[:16]}…  {'MATCH' if sent == got else 'MISMATCH'}")
        step("iperf3 for 3 seconds through the tunnel")
        srv = lab.popen(b, "iperf3 -s -1 -B 203.0.113.1", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        out = lab.sh(a, "iperf3 -c 203.0.113.1 -B 198.51.100.1 -t 3 -f m").stdout
        print("\n".join(l for l in out.splitlines() if "sender" in l or "receiver" in l))
        srv.wait(timeout=10)
        pcap = cap.stop()

        step("on the wire between the hosts (tcpdump): only ESP")
        print(subprocess.run(["tcpdump", "-nr", str(pcap), "-c", "6", "not arp"], capture_output=True, text=True).stdout.strip())
        esp = esp_packets(pcap)
        print(f"... {len(esp)} ESP packets captured")
        step("tshark, an independent ESP implementation, decrypts them with the configured keys")
        # TCP analysis off: tcpdump misses some of a 3 s flood, and tshark's reassembly of
        # "lost" segments then takes minutes; decryption is what we show here.
        rows = tshark(lab, pcap, pair, ["frame.number", "esp.spi", "esp.sequence", "ip.src", "ip.dst", "_ws.col.Info"],
                      options=("-o", "tcp.desegment_tcp_streams:FALSE", "-o", "tcp.analyze_sequence_numbers:FALSE"))
        decrypted = [r for r in rows if r[3].count(",") >= 1]  # outer and inner header: decrypted
        for r in decrypted[:8]:
            outer_src, inner_src = r[3].split(",")[:2]
            outer_dst, inner_dst = r[4].split(",")[:2]
            print(f"frame {r[0]:>6}  ESP spi {r[1]} seq {r[2]:>6}  {outer_src} > {outer_dst}  carries  {inner_src} > {inner_dst}  {r[5][:60]}")
        print(f"... tshark decrypted {len(decrypted)} of {len(rows)} ESP packets")
        step("sluice stats (host a)")
        print(subprocess.run([sluice_binary(), "stats", "--socket", da.socket], capture_output=True, text=True).stdout)
        step("stop: rules removed, namespaces deleted")
        da.stop()
        db.stop()
        left = lab.sh(a, "nft list ruleset").stdout
        print("host a ruleset after stop:", "(empty)" if not left.strip() else left)
    print("\ndemo done")


if __name__ == "__main__":
    main()
