"""Every shape of policy the config allows compiles to a ruleset the kernel accepts.

Configs combine many policies each (protocol x ports x ICMP type/code x address family
x action x SA mode x direction), under several [sluice] headers (mss_clamp, gso,
discarding defaults, queues, fail open, passthrough), with NAT-T SAs and SA sets.
Each must pass `sluice check` (which itself loads the ruleset with `nft -c` in a
network namespace of its own), and its scripts for both backends are loaded with
`nft -c` here too, in a namespace of their own: nothing of the host is touched."""
import itertools
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from lab import KEY_LENGTH, hexkey, sluice_binary

# name, direction, spi, mode, local, remote, proposal, extra
SAS = [
    ("out-t4", "out", 0x1001, "tunnel", "192.0.2.1", "192.0.2.2", "aes128gcm16", ""),
    ("in-t4", "in", 0x2001, "tunnel", "192.0.2.1", "192.0.2.2", "aes128gcm16", ""),
    ("out-t4b", "out", 0x1002, "tunnel", "192.0.2.1", "192.0.2.2", "aes256-sha256", "mtu = 1300\n"),
    ("in-t4b", "in", 0x2002, "tunnel", "192.0.2.1", "192.0.2.2", "aes256-sha256", "mtu = 1300\n"),
    ("out-nat", "out", 0x1003, "tunnel", "192.0.2.1", "192.0.2.3", "chacha20poly1305", "nat_t = true\n"),
    ("in-nat", "in", 0x2003, "tunnel", "192.0.2.1", "192.0.2.3", "chacha20poly1305", "nat_t = true\n"),
    ("out-t6", "out", 0x1004, "tunnel", "2001:db8::1", "2001:db8::2", "aes256gcm16", "mtu = 1400\n"),
    ("in-t6", "in", 0x2004, "tunnel", "2001:db8::1", "2001:db8::2", "aes256gcm16", ""),
    ("out-x4", "out", 0x1005, "transport", "192.0.2.1", "192.0.2.2", "aes128-sha256", ""),
    ("in-x4", "in", 0x2005, "transport", "192.0.2.1", "192.0.2.2", "aes128-sha256", ""),
    ("out-x6", "out", 0x1006, "transport", "2001:db8::1", "2001:db8::2", "null-sha256", ""),
    ("in-x6", "in", 0x2006, "transport", "2001:db8::1", "2001:db8::2", "null-sha256", ""),
]

FAMILIES = {
    "v4": ('src = "198.51.100.0/24"\ndst = "203.0.113.0/24"\n', 'src = "203.0.113.0/24"\ndst = "198.51.100.0/24"\n'),
    "v4-dst": ('dst = "203.0.113.7/32"\n', 'src = "203.0.113.7"\n'),
    "v6": ('src = "2001:db8:1::/48"\ndst = "2001:db8:2::/48"\n', 'src = "2001:db8:2::/48"\ndst = "2001:db8:1::/48"\n'),
    "v6-src": ('src = "2001:db8:1::5/128"\ndst = "any"\n', 'dst = "2001:db8:1::5"\n'),
    "none": ("", ""),
}

PORTS = ["", "src_port = 5301\n", 'src_port = "1024-65535"\n', 'dst_port = "5301"\n', "dst_port = 22\n",
         'dst_port = "5000-5999"\n', 'src_port = 53\ndst_port = "1000-2000"\n']
ICMP = ["", "icmp_type = 8\n", "icmp_type = 3\nicmp_code = 4\n"]
V6ICMP = ["", "icmp_type = 128\n", "icmp_type = 1\nicmp_code = 4\n"]


def selectors():
    """(protocol line, extra lines) for every protocol / ports / ICMP shape."""
    yield "", ""
    yield 'protocol = "any"\n', ""
    for proto in ("tcp", "udp", "sctp"):
        for ports in PORTS:
            yield f'protocol = "{proto}"\n', ports
    yield "protocol = 6\n", "dst_port = 443\n"
    for icmp in ICMP:
        yield 'protocol = "icmp"\n', icmp
    for icmp in V6ICMP:
        yield 'protocol = "ipv6-icmp"\n', icmp
    yield 'protocol = "icmpv6"\n', ""
    yield 'protocol = "47"\n', ""
    yield "protocol = 47\n", ""
    yield 'protocol = "gre"\n', ""


def protect_sets(direction, family):
    """The SA sets a policy of this direction and family may name: tunnel SAs of either
    outer family, NAT-T, transport SAs of the same family (or of any, without prefixes),
    and sets of several."""
    d = direction
    sets = [f'"{d}-t4"', f'"{d}-t6"', f'"{d}-nat"', f'["{d}-t4", "{d}-t4b"]', f'["{d}-t4b", "{d}-t6", "{d}-nat"]']
    if not family.startswith("v6"):
        sets += [f'"{d}-x4"', f'["{d}-x4", "{d}-t4"]']
    if not family.startswith("v4"):
        sets += [f'"{d}-x6"']
    return sets


def config_text(header):
    text = "[sluice]\n" + header + "\n"
    for name, direction, spi, mode, local, remote, proposal, extra in SAS:
        text += (f'[[sa]]\nname = "{name}"\ndirection = "{direction}"\nspi = {spi:#x}\nmode = "{mode}"\n'
                 f'local = "{local}"\nremote = "{remote}"\nproposal = "{proposal}"\n'
                 f'key = "0x{hexkey(KEY_LENGTH[proposal])}"\nesn = true\n{extra}\n')
    count = 0
    # Rotate through the SA sets so every set meets every selector shape over the families.
    rotation = itertools.count()
    for family, (out_addr, in_addr) in FAMILIES.items():
        for proto, extra in selectors():
            for direction in ("out", "in"):
                addr = out_addr if direction == "out" else in_addr
                sets = protect_sets(direction, family)
                actions = [f'action = "protect"\nsa = {sets[next(rotation) % len(sets)]}\n',
                           'action = "bypass"\n', 'action = "discard"\n']
                for action in actions:
                    text += f'[[policy]]\ndirection = "{direction}"\n{addr}{proto}{extra}{action}\n'
                    count += 1
    # Every SA of every set in a policy of its own as well, so each is used.
    for name, direction, *_ in SAS:
        fam = FAMILIES["v6" if "6" in name else "v4"][0 if direction == "out" else 1]
        text += f'[[policy]]\ndirection = "{direction}"\n{fam}action = "protect"\nsa = "{name}"\n\n'
        count += 1
    return text, count


HEADERS = {
    "defaults": "",
    "clamp-gso-2q": 'queues = 2\nmss_clamp = true\ngso = true\n',
    "noclamp-nogso-discard": 'queues = 1\nmss_clamp = false\ngso = false\ndefault_out = "discard"\ndefault_in = "discard"\n',
    "clamp-nogso-open": 'queues = 3\nqueue_base = 100\nmss_clamp = true\ngso = false\nfail = "open"\ndefault_out = "discard"\n',
    "noclamp-gso-passthrough": 'queues = 2\nmss_clamp = false\npassthrough = true\nmark_shift = 0\ndefault_in = "discard"\n',
}


def write_config(directory, header=""):
    text, count = config_text(header + f'state_dir = "{directory}/state"\ncontrol_socket = "{directory}/control.sock"\n')
    path = directory / "sluice.toml"
    path.write_text(text)
    return path, count


def nft_check(script):
    """`nft -c` in a network namespace of its own: returns nft's exit status and errors."""
    r = subprocess.run(["unshare", "-n", "nft", "-c", "-f", "-"], input=script, capture_output=True, text=True, timeout=60)
    return r.returncode, r.stderr


@pytest.mark.parametrize("variant", HEADERS)
def test_every_policy_shape_loads(tmp_path, variant):
    header = HEADERS[variant]
    path, count = write_config(tmp_path, header)
    assert count > 300

    r = subprocess.run([sluice_binary(), "check", "-c", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"sluice check {variant}: {r.stdout}\n{r.stderr}"
    assert f"OK: {len(SAS)} SA(s), {count} policies" in r.stdout, r.stdout
    assert "skipped" not in r.stdout, f"as root, sluice check must load the ruleset: {r.stdout}"

    # The xtables backend's script (marks, no `queue`) loads on every kernel.
    xt = subprocess.run([sluice_binary(), "rules", "-c", str(path), "--backend", "xtables"],
                        capture_output=True, text=True, check=True, timeout=60).stdout
    clamps = [l for l in xt.splitlines() if "maxseg size set" in l]
    assert bool(clamps) == ("mss_clamp = false" not in header), variant
    for l in clamps:
        assert not any(w in l for w in ("udp", "sctp", "icmp", "l4proto 47", "l4proto gre")), f"clamp off TCP: {l}"
    status, errors = nft_check(xt)
    assert status == 0, f"{variant}, xtables backend:\n{errors[:4000]}"
    # The native one too, except for `queue` itself where the kernel lacks nft_queue.
    native = subprocess.run([sluice_binary(), "rules", "-c", str(path), "--backend", "native"],
                            capture_output=True, text=True, check=True, timeout=60).stdout
    status, errors = nft_check(native)
    refused = [l for l in errors.splitlines() if "Error" in l and "No such file or directory" not in l]
    assert not refused, f"{variant}, native backend:\n{errors[:4000]}"


@pytest.mark.parametrize("how", ["not root", "no namespace"])
def test_check_says_when_the_kernel_check_is_skipped(how):
    """Without root, or where no namespace can be made (systemd's RestrictNamespaces=,
    no CAP_SYS_ADMIN), `sluice check` still validates, notes the skip and succeeds."""
    directory = Path(tempfile.mkdtemp(prefix="sluice-rulesets-"))
    try:
        directory.chmod(0o755)  # readable by nobody, unlike pytest's tmp_path
        path, _ = write_config(directory)
        path.chmod(0o644)
        check_as(how, path)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def check_as(how, path):
    drop = (["--reuid=65534", "--regid=65534", "--clear-groups"] if how == "not root"
            else ["--bounding-set=-sys_admin", "--inh-caps=-sys_admin"])
    r = subprocess.run(["setpriv", *drop, sluice_binary(), "check", "-c", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "the kernel check of the generated nftables ruleset was skipped" in r.stdout, r.stdout
    assert ("not running as root" if how == "not root" else "no network namespace") in r.stdout, r.stdout
