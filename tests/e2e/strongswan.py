"""strongSwan 5.9 as an IKEv2 peer in a Lab namespace: the reference the Sluice agent is
proven against.

The kernel here has no XFRM ESP, so charon runs its kernel-libipsec plugin: ESP in user
space on a TUN device (ipsec0), always ESP-in-UDP on port 4500, tunnel mode only, no
acquires (start CHILD_SAs with initiate() or start_action). One charon per mount
namespace (its pid file is /run/charon.pid), so each one runs in a private mount
namespace with a tmpfs on /run, inside its host's network namespace. Everything it
writes is under the Lab's workdir and the process is the Lab's: both go when the Lab
closes, also when a test fails.

Connections are plain dicts rendered into swanctl.conf; connection() and child() build
the usual ones. PSKs are Secret values, which never print.
"""
import os
import re
import secrets as _random
import signal
import subprocess
import time
from dataclasses import dataclass, field

from lab import CommandFailed

CHARON = "/usr/lib/ipsec/charon"
SWANCTL = "swanctl"
# Order matters: openssl first (it provides most algorithms), kdf for PRF+ (5.9.8's openssl
# plugin does not register it), kernel-libipsec before kernel-netlink so that it is the
# IPsec backend and kernel-netlink only does addresses and routes (its own IPsec feature
# fails to load without XFRM, as expected). "!" marks the plugins charon must not start
# without, rather than failing later in a confusing way.
CHARON_PLUGINS = ("random! nonce! openssl! kdf! pem pkcs1 pkcs8 x509 revocation constraints pubkey "
                  "kernel-libipsec! kernel-netlink socket-default! vici! updown")
SWANCTL_PLUGINS = "random openssl pem pkcs1 pkcs8 x509 revocation constraints pubkey"
# Subsystems logged; level 2 at most: from 3 on charon prints key material.
DEFAULT_LOG_LEVELS = {"default": 1, "ike": 2, "cfg": 2, "knl": 2, "chd": 2, "esp": 1, "net": 1, "enc": 1}
MAX_LOG_LEVEL = 2
# Where swanctl --load-all looks for credentials (relative to SWANCTL_DIR).
CREDENTIAL_DIRS = ("x509", "x509ca", "x509ocsp", "x509aa", "x509ac", "x509crl", "pubkey", "private", "rsa",
                   "ecdsa", "bliss", "pkcs8", "pkcs12")


class Secret:
    """A pre-shared key. Its bytes reach swanctl.conf only; repr and str hide them."""

    def __init__(self, value):
        if isinstance(value, str):
            value = value.encode()
        if not value:
            raise ValueError("Secret: a PSK must not be empty")
        self._value = bytes(value)

    @classmethod
    def random(cls, n=32):
        return cls(_random.token_bytes(n))

    def config_value(self):
        """The form written into swanctl.conf (hex, so no quoting can go wrong)."""
        return "0x" + self._value.hex()

    def forms(self):
        """Every spelling of the secret that must never show in text handed back."""
        out = {self._value.hex(), self._value.hex().upper()}
        try:
            out.add(self._value.decode())
        except UnicodeDecodeError:
            pass
        return {f for f in out if len(f) >= 4}

    def __repr__(self):
        return "Secret(<hidden>)"

    __str__ = __repr__


# swanctl.conf / strongswan.conf rendering

_KEY = re.compile(r"^[A-Za-z0-9_.\-]+$")
_BARE = re.compile(r"^[A-Za-z0-9_.:/%@\-+=*]+$")


def _scalar(value, where):
    if isinstance(value, Secret):
        return value.config_value()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(_scalar(v, where) for v in value)
    if not isinstance(value, str):
        raise ValueError(f"{where}: cannot render a {type(value).__name__} into a strongSwan config")
    if "\n" in value or "\r" in value:
        raise ValueError(f"{where}: a value must be on one line")
    if _BARE.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(section, indent=0, where=""):
    """Nested dicts as strongSwan's settings syntax; None values are left out."""
    lines, pad = [], "  " * indent
    for key, value in section.items():
        path = f"{where}.{key}" if where else str(key)
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(f"{path}: not a valid strongSwan settings key")
        if value is None:
            continue
        if isinstance(value, dict):
            lines.append(f"{pad}{key} {{")
            lines.append(render(value, indent + 1, path))
            lines.append(f"{pad}}}")
        else:
            lines.append(f"{pad}{key} = {_scalar(value, path)}")
    return "\n".join(l for l in lines if l)


def child(local_ts, remote_ts, esp_proposals="aes128gcm16", mode="tunnel", start_action="none", dpd_action=None,
          rekey_time=None, **extra):
    """One CHILD_SA config (swanctl.conf's connections.<conn>.children.<name>)."""
    return {"local_ts": local_ts, "remote_ts": remote_ts, "esp_proposals": esp_proposals, "mode": mode,
            "start_action": start_action, "dpd_action": dpd_action, "rekey_time": rekey_time, **extra}


def connection(local_addrs, remote_addrs, children, local_id=None, remote_id=None,
               proposals="aes128gcm16-prfsha256-x25519", auth="psk", dpd_delay=None, rekey_time=None, version=2,
               local=None, remote=None, **extra):
    """One IKE connection. `local`/`remote` add to (or replace) the auth rounds' settings,
    e.g. local={"auth": "pubkey", "certs": "gw-a.pem"} with add_credential("x509", ...)."""
    return {"version": version, "local_addrs": local_addrs, "remote_addrs": remote_addrs, "proposals": proposals,
            "dpd_delay": dpd_delay, "rekey_time": rekey_time,
            "local": {"auth": auth, "id": local_id, **(local or {})},
            "remote": {"auth": auth, "id": remote_id, **(remote or {})},
            "children": children, **extra}


def psk(secret, *ids):
    """A secrets entry (name it "ike-<something>") for a PSK shared with `ids` (any peer if none)."""
    if not isinstance(secret, Secret):
        raise ValueError("psk: wrap the key in Secret so that it never prints")
    return {"secret": secret, **{f"id-{i}": v for i, v in enumerate(ids)}}


# list-sas parsing

def parse_pretty(text):
    """swanctl --pretty output (one item per line) as a list of (label, dict) messages."""
    messages, stack, lists = [], [], None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if lists is not None:
            if line == "]":
                lists = None
            else:
                lists.append(line)
            continue
        if line.endswith(" {") and "=" not in line.split(" {")[0]:
            new = {}
            name = line[:-2]
            if stack:
                stack[-1][name] = new
            else:
                messages.append((name, new))
            stack.append(new)
        elif line == "}":
            if not stack:
                raise ValueError(f"swanctl output line {lineno}: '}}' without a section")
            stack.pop()
        elif line.endswith(" = ["):
            if not stack:
                raise ValueError(f"swanctl output line {lineno}: list outside a message")
            lists = stack[-1][line[:-4]] = []
        elif " = " in line:
            if not stack:
                raise ValueError(f"swanctl output line {lineno}: value outside a message")
            key, value = line.split(" = ", 1)
            stack[-1][key] = value
        else:
            raise ValueError(f"swanctl output line {lineno}: cannot parse {line[:80]!r}")
    if stack or lists is not None:
        raise ValueError("swanctl output ends inside a section")
    return messages


def _int(d, key, default=0):
    v = d.get(key)
    return int(v) if v is not None and v.lstrip("-").isdigit() else default


@dataclass
class ChildSA:
    name: str
    unique_id: int
    reqid: int
    state: str
    mode: str
    protocol: str
    encap: bool
    spi_in: int
    spi_out: int
    encr_alg: str
    encr_keysize: int
    integ_alg: str
    esn: bool
    dh_group: str
    bytes_in: int
    packets_in: int
    bytes_out: int
    packets_out: int
    local_ts: list
    remote_ts: list
    raw: dict = field(repr=False)

    @classmethod
    def parse(cls, d):
        return cls(name=d.get("name", ""), unique_id=_int(d, "uniqueid"), reqid=_int(d, "reqid"),
                   state=d.get("state", ""), mode=d.get("mode", ""), protocol=d.get("protocol", ""),
                   encap=d.get("encap") == "yes", spi_in=int(d.get("spi-in", "0"), 16),
                   spi_out=int(d.get("spi-out", "0"), 16), encr_alg=d.get("encr-alg", ""),
                   encr_keysize=_int(d, "encr-keysize"), integ_alg=d.get("integ-alg", ""), esn=d.get("esn") == "1",
                   dh_group=d.get("dh-group", ""), bytes_in=_int(d, "bytes-in"), packets_in=_int(d, "packets-in"),
                   bytes_out=_int(d, "bytes-out"), packets_out=_int(d, "packets-out"),
                   local_ts=list(d.get("local-ts", [])), remote_ts=list(d.get("remote-ts", [])), raw=d)


@dataclass
class IkeSA:
    name: str
    unique_id: int
    version: int
    state: str
    local_host: str
    local_port: int
    local_id: str
    remote_host: str
    remote_port: int
    remote_id: str
    initiator: bool
    spi_i: str
    spi_r: str
    nat_local: bool
    nat_remote: bool
    nat_fake: bool
    nat_any: bool
    encr_alg: str
    encr_keysize: int
    integ_alg: str
    prf_alg: str
    dh_group: str
    children: list
    raw: dict = field(repr=False)

    @classmethod
    def parse(cls, name, d):
        yes = lambda k: d.get(k) == "yes"
        return cls(name=name, unique_id=_int(d, "uniqueid"), version=_int(d, "version"), state=d.get("state", ""),
                   local_host=d.get("local-host", ""), local_port=_int(d, "local-port"), local_id=d.get("local-id", ""),
                   remote_host=d.get("remote-host", ""), remote_port=_int(d, "remote-port"),
                   remote_id=d.get("remote-id", ""), initiator=yes("initiator"), spi_i=d.get("initiator-spi", ""),
                   spi_r=d.get("responder-spi", ""), nat_local=yes("nat-local"), nat_remote=yes("nat-remote"),
                   nat_fake=yes("nat-fake"), nat_any=yes("nat-any"), encr_alg=d.get("encr-alg", ""),
                   encr_keysize=_int(d, "encr-keysize"), integ_alg=d.get("integ-alg", ""),
                   prf_alg=d.get("prf-alg", ""), dh_group=d.get("dh-group", ""),
                   children=[ChildSA.parse(c) for c in d.get("child-sas", {}).values()], raw=d)

    def child(self, name, state="INSTALLED"):
        """The one CHILD_SA `name` in `state`; an error if there is none or several."""
        found = [c for c in self.children if c.name == name and c.state == state]
        if len(found) != 1:
            raise LookupError(f"IKE_SA {self.name}: {len(found)} CHILD_SAs {name} in {state}: "
                              f"{[(c.name, c.state) for c in self.children]}")
        return found[0]


# the daemon

class StrongSwan:
    """One charon in `ns` (a Lab host), controlled through its own vici socket."""

    def __init__(self, lab, ns, name, connections=None, secrets=None, log_levels=None, settings=None):
        """`connections`: {name: connection(...)}; `secrets`: {"ike-x": psk(...)};
        `settings`: extra charon settings (strongswan.conf's charon section), e.g.
        {"retransmit_tries": 2} or {"plugins": {"kernel-libipsec": {"allow_peer_ts": True}}}."""
        self.lab, self.ns, self.name = lab, ns, name
        self.dir = lab.workdir / f"strongswan-{name}"
        self.swanctl_dir = self.dir / "swanctl"
        for d in CREDENTIAL_DIRS:
            (self.swanctl_dir / d).mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.conf = self.dir / "strongswan.conf"
        self.vici = self.dir / "charon.vici"
        self.log_path = self.dir / "charon.log"
        self.out_path = self.dir / "charon.out"
        self.connections = dict(connections or {})
        self.secrets = dict(secrets or {})
        self.proc = None
        levels = {**DEFAULT_LOG_LEVELS, **(log_levels or {})}
        for subsystem, level in levels.items():
            if not isinstance(level, int) or level > MAX_LOG_LEVEL:
                raise ValueError(f"StrongSwan {name}: log level {subsystem}={level!r}: at most {MAX_LOG_LEVEL} "
                                 "(higher levels print keys)")
        self._write_strongswan_conf(levels, settings or {})
        self.write_swanctl_conf()

    def __repr__(self):
        return f"StrongSwan({self.name} in {self.ns})"

    # configuration

    def _write_strongswan_conf(self, levels, settings):
        log = {"path": str(self.log_path), "time_format": "%H:%M:%S", "ike_name": True, "append": False,
               "flush_line": True, **levels}
        charon = {"load_modular": False, "load": CHARON_PLUGINS,
                  # Configured loggers replace charon's defaults: nothing goes to the host's syslog.
                  "filelog": {"charon": log},
                  "plugins": {"vici": {"socket": f"unix://{self.vici}"}}}
        for key, value in settings.items():
            if isinstance(value, dict) and isinstance(charon.get(key), dict):
                charon[key] = {**charon[key], **value}
            else:
                charon[key] = value
        text = render({"charon": charon, "swanctl": {"load": SWANCTL_PLUGINS}}) + "\n"
        self.conf.write_text(text)

    def write_swanctl_conf(self):
        """Writes swanctl.conf from self.connections and self.secrets (load() sends it)."""
        path = self.swanctl_dir / "swanctl.conf"
        text = render({"connections": self.connections, "secrets": self.secrets}) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)

    def add_credential(self, kind, filename, data):
        """A certificate or key file for load(): `kind` is a swanctl directory (x509, x509ca,
        private, pubkey, ...), `filename` the name connections refer to (e.g. certs = ...)."""
        if kind not in CREDENTIAL_DIRS:
            raise ValueError(f"StrongSwan {self.name}: unknown credential directory {kind!r}")
        if "/" in filename or filename.startswith("."):
            raise ValueError(f"StrongSwan {self.name}: credential file name {filename!r} must be a plain name")
        path = self.swanctl_dir / kind / filename
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
        return path

    # process

    def start(self, timeout=15):
        """Starts charon and waits until its vici socket answers."""
        if self.proc and self.proc.poll() is None:
            raise RuntimeError(f"{self}: already running")
        self.vici.unlink(missing_ok=True)
        out = open(self.out_path, "ab")
        # unshare (without --fork) and sh both exec: the Lab's process is charon itself.
        cmd = f"unshare -m --propagation private sh -c 'mount -t tmpfs -o mode=755 tmpfs /run && exec {CHARON}'"
        self.proc = self.lab.popen(self.ns, cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                   env={**os.environ, "STRONGSWAN_CONF": str(self.conf)})
        out.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self}: charon exited with {self.proc.returncode}:\n{self.log()}")
            if self.vici.exists() and self._swanctl(["--stats"], check=False, timeout=5).returncode == 0:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"{self}: vici socket did not answer within {timeout}s:\n{self.log()}")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10):
        """Clean stop (SIGTERM: charon deletes its SAs' state and closes); returns the exit code."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
                raise RuntimeError(f"{self}: charon ignored SIGTERM for {timeout}s (killed)")
        return self.proc.returncode if self.proc else None

    def kill9(self):
        """Kills charon without a word to its peer (its TUN device goes with it)."""
        if self.running():
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self):
        """charon's log and output, with any configured secret blanked out."""
        text = ""
        for path in (self.log_path, self.out_path):
            if path.exists():
                text += path.read_text(errors="replace")
        return self._redact(text)

    def _redact(self, text):
        for entry in self.secrets.values():
            for value in (entry.values() if isinstance(entry, dict) else ()):
                if isinstance(value, Secret):
                    for form in value.forms():
                        text = text.replace(form, "<secret>")
        return text

    # control (swanctl over the vici socket)

    def _swanctl(self, args, check=True, timeout=30):
        argv = [SWANCTL, *args, "--uri", f"unix://{self.vici}"]
        env = {**os.environ, "STRONGSWAN_CONF": str(self.conf), "SWANCTL_DIR": str(self.swanctl_dir)}
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise CommandFailed(f"{self}: swanctl {' '.join(args)}: no answer within {timeout}s") from None
        if check and r.returncode != 0:
            raise CommandFailed(f"{self}: swanctl {' '.join(args)}: exit {r.returncode}: "
                                f"{self._redact((r.stdout + r.stderr).strip())[-2000:]}")
        return r

    @staticmethod
    def _which(child, ike):
        if child is None and ike is None:
            raise ValueError("name a child= or an ike= (or both)")
        return (["--child", child] if child else []) + (["--ike", ike] if ike else [])

    def load(self):
        """Writes swanctl.conf and loads connections, secrets and credentials (swanctl --load-all)."""
        self.write_swanctl_conf()
        return self._swanctl(["--load-all", "--noprompt"]).stdout

    def initiate(self, child=None, ike=None, timeout=10):
        """Establishes a CHILD_SA (and its IKE_SA); returns swanctl's progress log."""
        return self._swanctl(["--initiate", *self._which(child, ike), "--timeout", str(timeout)],
                             timeout=timeout + 10).stdout

    def terminate(self, child=None, ike=None, timeout=10, force=False):
        """Deletes a CHILD_SA or an IKE_SA (with INFORMATIONAL DELETE to the peer)."""
        args = ["--terminate", *self._which(child, ike), "--timeout", str(timeout)] + (["--force"] if force else [])
        return self._swanctl(args, timeout=timeout + 10).stdout

    def rekey(self, child=None, ike=None, reauth=False):
        """Starts a rekey (CREATE_CHILD_SA); it completes in the background: wait_sas() for it."""
        return self._swanctl(["--rekey", *self._which(child, ike)] + (["--reauth"] if reauth else [])).stdout

    def list_sas(self, ike=None):
        """The IKE_SAs charon has now, with their CHILD_SAs."""
        r = self._swanctl(["--list-sas", "--pretty"] + (["--ike", ike] if ike else []))
        return [IkeSA.parse(name, body) for label, msg in parse_pretty(r.stdout) if label == "list-sa event"
                for name, body in msg.items()]

    def wait_sas(self, predicate, timeout=10, what="the SAs to settle"):
        """Polls list_sas() until predicate(sas) is true; returns those SAs."""
        deadline = time.time() + timeout
        while True:
            sas = self.list_sas()
            if predicate(sas):
                return sas
            if time.time() > deadline:
                raise TimeoutError(f"{self}: waited {timeout}s for {what}; now: {sas}")
            time.sleep(0.1)
