"""Network-namespace lab for Sluice: hosts, links, daemons, captures.

Used by the end-to-end tests and by scripts/demo.sh. Everything a Lab creates is
removed when the `with` block ends, also when a test fails. Only the documentation
ranges 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 and 2001:db8::/32 are used.
"""
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def sluice_binary():
    env = os.environ.get("SLUICE_BIN")
    if env:
        return env
    for build in ("release", "debug"):
        p = REPO / ".build" / build / "sluice"
        if p.exists():
            return str(p)
    raise RuntimeError("no sluice binary: run `swift build -c release` or set SLUICE_BIN")


class CommandFailed(RuntimeError):
    pass


class Lab:
    """A set of network namespaces named <prefix>-<host>, torn down on exit."""

    def __init__(self, name="lab"):
        self.prefix = f"sl{os.getpid() % 100000}{name}"[:12]
        self.namespaces = []
        self.processes = []
        self.workdir = Path(tempfile.mkdtemp(prefix=f"sluice-{name}-"))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        for p in reversed(self.processes):
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                    p.wait(timeout=8)
                except Exception:
                    p.kill()
                    p.wait(timeout=5)
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        self.namespaces = []
        if not os.environ.get("SLUICE_KEEP_WORKDIR"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    # hosts and links

    def host(self, short):
        ns = f"{self.prefix}-{short}"
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        self.run_host(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        self.sh(ns, "ip link set lo up")
        # Forwarding on for gateways; no kernel IPsec anywhere.
        self.sh(ns, "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1")
        self.sh(ns, "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0")
        return ns

    def link(self, ns1, if1, ns2, if2, mtu=1500):
        self.run_host(["ip", "link", "add", if1, "netns", ns1, "mtu", str(mtu), "type", "veth",
                       "peer", "name", if2, "netns", ns2, "mtu", str(mtu)])
        self.sh(ns1, f"ip link set {if1} up")
        self.sh(ns2, f"ip link set {if2} up")

    def run_host(self, argv, timeout=30):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise CommandFailed(f"{' '.join(argv)}: {r.stderr.strip()}")
        return r

    def sh(self, ns, cmd, check=True, timeout=60, input=None):
        """Runs a shell command inside a namespace (or on the host when ns is None)."""
        argv = (["ip", "netns", "exec", ns] if ns else []) + ["bash", "-c", cmd]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise CommandFailed(f"[{ns}] {cmd}: exit {r.returncode}: {r.stderr.strip()} {r.stdout.strip()[-500:]}")
        return r

    def popen(self, ns, cmd, **kw):
        argv = ["ip", "netns", "exec", ns, "bash", "-c", "exec " + cmd]
        p = subprocess.Popen(argv, **kw)
        self.processes.append(p)
        return p

    # traffic

    def capture(self, ns, dev, name, snaplen=0, bpf=""):
        """Starts tcpdump; returns a handle whose stop() gives the pcap path. `snaplen`
        (bytes kept per packet, 0 = all) and a `bpf` filter keep long captures small."""
        path = self.workdir / f"{name}.pcap"
        big = " -B 65536" if snaplen else ""
        p = self.popen(ns, f"tcpdump -n -U --immediate-mode{big} -s {snaplen} -i {dev} -w {path} {bpf}",
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Wait until tcpdump says it is listening.
        deadline = time.time() + 10
        line = b""
        while time.time() < deadline:
            line = p.stderr.readline()
            if b"listening" in line or not line:
                break
        return Capture(p, path)

    def ping(self, ns, dst, count=3, src=None, size=56, check=True):
        six = ":" in dst
        cmd = f"ping {'-6 ' if six else ''}-c {count} -i 0.2 -W 2 -s {size} {('-I ' + src) if src else ''} {dst}"
        return self.sh(ns, cmd, check=check, timeout=30)

    def tcp_transfer(self, server_ns, client_ns, server_addr, nbytes=8_000_000, port=5001, timeout=60, src=None):
        """Sends nbytes of random data over TCP; returns (sent_sha256, received_sha256)."""
        import hashlib
        blob = self.workdir / f"blob-{port}"
        recv = self.workdir / f"recv-{port}"
        blob.write_bytes(os.urandom(nbytes))
        fam = "6" if ":" in server_addr else "4"
        bind = f"[{server_addr}]" if fam == "6" else server_addr
        server = self.popen(server_ns, f"python3 -c \"import socket,sys;s=socket.socket(socket.AF_INET{'6' if fam == '6' else ''});"
                                       f"s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('{server_addr}',{port}));s.listen(1);"
                                       f"s.settimeout({timeout});c,_=s.accept();c.settimeout({timeout});f=open('{recv}','wb')\n"
                                       f"while True:\n d=c.recv(1<<20)\n if not d: break\n f.write(d)\nf.close()\"")
        time.sleep(0.3)
        srcopt = f", source_address=('{src}', 0)" if src else ""
        self.sh(client_ns, f"python3 -c \"import socket;c=socket.create_connection(('{server_addr}',{port}),timeout={timeout}{srcopt});"
                           f"c.sendall(open('{blob}','rb').read());c.shutdown(socket.SHUT_WR);c.recv(1);c.close()\"",
                timeout=timeout + 10)
        server.wait(timeout=timeout)
        sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None
        return sha(blob), sha(recv)


class Capture:
    def __init__(self, proc, path):
        self.proc = proc
        self.path = path

    def stop(self):
        time.sleep(0.3)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=10)
        return self.path


def hexkey(n):
    return secrets.token_bytes(n).hex()


KEY_LENGTH = {"aes128gcm16": 20, "aes256gcm16": 36, "chacha20poly1305": 36,
              "aes128-sha256": 48, "aes256-sha256": 64, "null-sha256": 32}


class SAPair:
    """Two SAs (one each way) between two peers, with matching keys and SPIs."""

    def __init__(self, mode, proposal, a_outer, b_outer, a_inner, b_inner, esn=False, spi_ab=0x1001, spi_ba=0x2001,
                 extra=""):
        self.mode, self.proposal, self.esn = mode, proposal, esn
        self.a_outer, self.b_outer, self.a_inner, self.b_inner = a_outer, b_outer, a_inner, b_inner
        self.spi_ab, self.spi_ba = spi_ab, spi_ba
        self.key_ab = hexkey(KEY_LENGTH[proposal])
        self.key_ba = hexkey(KEY_LENGTH[proposal])
        self.extra = extra

    def _sa(self, name, direction, spi, local, remote, key):
        return (f'[[sa]]\nname = "{name}"\ndirection = "{direction}"\nspi = {spi:#x}\nmode = "{self.mode}"\n'
                f'local = "{local}"\nremote = "{remote}"\nproposal = "{self.proposal}"\nkey = "0x{key}"\n'
                f'esn = {"true" if self.esn else "false"}\n{self.extra}\n')

    @staticmethod
    def _policy(direction, src, dst, sa, protocol=None):
        p = f'[[policy]]\ndirection = "{direction}"\nsrc = "{src}"\ndst = "{dst}"\n'
        if protocol:
            p += f'protocol = "{protocol}"\n'
        return p + f'action = "protect"\nsa = "{sa}"\n\n'

    def config(self, side, header, policies_before="", policies_after=""):
        a = side == "a"
        lo, ro = (self.a_outer, self.b_outer) if a else (self.b_outer, self.a_outer)
        li, ri = (self.a_inner, self.b_inner) if a else (self.b_inner, self.a_inner)
        out_name, in_name = ("a-to-b", "b-to-a") if a else ("b-to-a", "a-to-b")
        out_spi, in_spi = (self.spi_ab, self.spi_ba) if a else (self.spi_ba, self.spi_ab)
        out_key, in_key = (self.key_ab, self.key_ba) if a else (self.key_ba, self.key_ab)
        text = header + "\n"
        text += self._sa(out_name, "out", out_spi, lo, ro, out_key)
        text += self._sa(in_name, "in", in_spi, lo, ro, in_key)
        text += policies_before
        text += self._policy("out", li, ri, out_name)
        text += self._policy("in", ri, li, in_name)
        return text + policies_after


class Daemon:
    """One `sluice run` inside a namespace."""

    def __init__(self, lab, ns, name, config_text, queues=2, extra_header="", env=None):
        """`env`: variables added to the daemon's environment (it inherits the test's)."""
        self.lab, self.ns, self.name = lab, ns, name
        self.env = {**os.environ, **env} if env else None
        self.dir = lab.workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = str(self.dir / "control.sock")
        self.config_path = self.dir / "sluice.toml"
        self.header = (f'[sluice]\nqueues = {queues}\nstate_dir = "{self.dir}/state"\n'
                       f'control_socket = "{self.socket}"\n{extra_header}')
        self.write_config(config_text)
        self.proc = None
        self.log = self.dir / "sluice.log"

    def write_config(self, config_text):
        self.config_path.write_text(config_text.replace("@HEADER@", self.header))

    def start(self, timeout=15):
        logf = open(self.log, "ab")
        self.proc = self.lab.popen(self.ns, f"{sluice_binary()} run --config {self.config_path}", stdout=logf, stderr=logf,
                               env=self.env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sluice in {self.ns} exited with {self.proc.returncode}:\n{self.log.read_text()}")
            r = subprocess.run([sluice_binary(), "stats", "--json", "--socket", self.socket], capture_output=True, text=True)
            if r.returncode == 0:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"sluice in {self.ns} did not come up:\n{self.log.read_text()}")

    def stats(self):
        r = subprocess.run([sluice_binary(), "stats", "--json", "--socket", self.socket], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"stats failed: {r.stdout} {r.stderr}")
        return json.loads(r.stdout)

    def sa(self, name):
        return next(a for a in self.stats()["associations"] if a["name"] == name)

    def drops(self):
        return self.stats()["drops"]

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=15):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        return self.proc.returncode if self.proc else None

    def kill9(self):
        self.proc.kill()
        self.proc.wait(timeout=10)

    def ruleset(self):
        return self.lab.sh(self.ns, "nft list ruleset").stdout


def two_hosts(lab, v6=False):
    """a --veth-- b with outer addresses 192.0.2.1/.2 (or 2001:db8::1/::2)."""
    a, b = lab.host("a"), lab.host("b")
    lab.link(a, "va", b, "vb")
    lab.sh(a, "ip addr add 192.0.2.1/24 dev va; ip -6 addr add 2001:db8::1/64 dev va nodad")
    lab.sh(b, "ip addr add 192.0.2.2/24 dev vb; ip -6 addr add 2001:db8::2/64 dev vb nodad")
    return a, b


def inner_on_loopback(lab, a, b, via_a, via_b, inner_a, inner_b):
    """Tunnel-mode hosts: inner addresses on lo, routes to the peer's inner prefix via the peer."""
    six = lambda x: "-6 " if ":" in x else ""
    lab.sh(a, f"ip {six(inner_a)}addr add {inner_a} dev lo")
    lab.sh(b, f"ip {six(inner_b)}addr add {inner_b} dev lo")
    ia, ib = inner_a.split("/")[0], inner_b.split("/")[0]
    if six(inner_a) == six(via_a):
        lab.sh(a, f"ip {six(inner_b)}route add {inner_b} via {via_b} src {ia}")
        lab.sh(b, f"ip {six(inner_a)}route add {inner_a} via {via_a} src {ib}")
    else:
        # Inner and outer families differ: the sealed packet is re-routed by its outer
        # address after OUTPUT, so the inner route only has to pick the device.
        lab.sh(a, f"ip {six(inner_b)}route add {inner_b} dev va src {ia}")
        lab.sh(b, f"ip {six(inner_a)}route add {inner_a} dev vb src {ib}")


def sluice_host_pair(lab, mode, proposal, queues=2, esn=False, extra_header=""):
    """Two hosts with Sluice on both: tunnel mode between inner addresses on lo
    (198.51.100.1 -> 203.0.113.1), or transport mode between the outer ones.
    Returns a, b, pair, daemon a, daemon b, the address to reach and the source to use."""
    a, b = two_hosts(lab)
    if mode == "tunnel":
        inner_on_loopback(lab, a, b, "192.0.2.1", "192.0.2.2", "198.51.100.1/32", "203.0.113.1/32")
        pair = SAPair("tunnel", proposal, "192.0.2.1", "192.0.2.2", "198.51.100.0/24", "203.0.113.0/24", esn=esn)
        target, src = "203.0.113.1", "198.51.100.1"
    else:
        pair = SAPair("transport", proposal, "192.0.2.1", "192.0.2.2", "192.0.2.1/32", "192.0.2.2/32", esn=esn)
        target, src = "192.0.2.2", "192.0.2.1"
    da = Daemon(lab, a, "a", pair.config("a", "@HEADER@"), queues=queues, extra_header=extra_header).start()
    db = Daemon(lab, b, "b", pair.config("b", "@HEADER@"), queues=queues, extra_header=extra_header).start()
    return a, b, pair, da, db, target, src


TSHARK_NAMES = {"aes128gcm16": "AES-GCM with 16 octet ICV [RFC4106]", "aes256gcm16": "AES-GCM with 16 octet ICV [RFC4106]",
                "aes128-sha256": "AES-CBC [RFC3602]", "aes256-sha256": "AES-CBC [RFC3602]"}


def tshark(lab, pcap, pair, fields, options=()):
    """Decrypts a capture with tshark's own ESP code, given the SAs' keys (non-ESN GCM
    and CBC only: tshark 4.0 has neither ESN nor ChaCha20). Returns rows of `fields`."""
    rows = []
    for src, dst, spi, key in (("192.0.2.1", "192.0.2.2", pair.spi_ab, pair.key_ab),
                               ("192.0.2.2", "192.0.2.1", pair.spi_ba, pair.key_ba)):
        if pair.proposal in ("aes128-sha256", "aes256-sha256"):
            n = (16 if pair.proposal == "aes128-sha256" else 32) * 2
            enc, auth = key[:n], f'"HMAC-SHA-256-128 [RFC4868]","0x{key[n:]}"'
        else:
            enc, auth = key, '"NULL",""'
        rows.append(f'"IPv4","{src}","{dst}","{spi:#010x}","{TSHARK_NAMES[pair.proposal]}","0x{enc}",{auth}')
    conf = lab.workdir / "wireshark"
    conf.mkdir(exist_ok=True)
    (conf / "esp_sa").write_text("\n".join(rows) + "\n")
    r = subprocess.run(["tshark", "-r", str(pcap), "-o", "esp.enable_encryption_decode:TRUE",
                        "-o", "esp.enable_authentication_check:TRUE", *options, "-Y", "esp", "-T", "fields", "-E", "separator=|"]
                       + sum([["-e", f] for f in fields], []),
                       capture_output=True, text=True, env={**os.environ, "XDG_CONFIG_HOME": str(lab.workdir), "HOME": str(lab.workdir)})
    if r.returncode != 0:
        raise CommandFailed(f"tshark: {r.stderr.strip()}")
    return [l.split("|") for l in r.stdout.splitlines() if l.strip()]


def packets(pcap):
    """The packets of a capture, through scapy."""
    from scapy.all import rdpcap  # noqa: imported lazily (slow)
    return list(rdpcap(str(pcap)))


def clear_packets_between(pcap, addresses):
    """IP packets that are neither ESP nor UDP-encapsulated ESP and touch any of `addresses`."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    bad = []
    for p in packets(pcap):
        ip = p.getlayer(IP) or p.getlayer(IPv6)
        if ip is None:
            continue
        proto = ip.proto if p.haslayer(IP) else ip.nh
        if proto == 50 or (p.haslayer(UDP) and p[UDP].dport == 4500):
            continue
        if proto == 58 and p.haslayer(IPv6):  # neighbour discovery
            from scapy.layers.inet6 import ICMPv6ND_NS, ICMPv6ND_NA, ICMPv6ND_RS, ICMPv6ND_RA
            if any(p.haslayer(t) for t in (ICMPv6ND_NS, ICMPv6ND_NA, ICMPv6ND_RS, ICMPv6ND_RA)):
                continue
        if ip.src in addresses or ip.dst in addresses:
            bad.append(p.summary())
    return bad


def esp_sequence_numbers(pcap):
    """(SPI, sequence number) of every ESP packet (IPv4 or IPv6, Ethernet) of a capture,
    read straight from the pcap: scapy takes minutes for a few hundred thousand packets."""
    import struct
    data = Path(pcap).read_bytes()
    out, off = [], 24
    while off + 16 <= len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        p, off = data[off + 16:off + 16 + incl], off + 16 + incl
        if len(p) < 14 + 20:
            continue
        ethertype = struct.unpack_from("!H", p, 12)[0]
        if ethertype == 0x0800 and p[14 + 9] == 50:
            at = 14 + (p[14] & 15) * 4
        elif ethertype == 0x86DD and len(p) >= 14 + 48 and p[14 + 6] == 50:
            at = 14 + 40
        else:
            continue
        if len(p) >= at + 8:
            out.append(struct.unpack_from("!II", p, at))
    return out


def esp_packets(pcap):
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    out = []
    for p in packets(pcap):
        ip = p.getlayer(IP) or p.getlayer(IPv6)
        if ip is not None and (ip.proto if p.haslayer(IP) else ip.nh) == 50:
            out.append(p)
    return out
