"""Helpers for the IKEv2 end-to-end tests: Sluice connection configs and list-sas."""
import json
import subprocess
import time

from lab import sluice_binary

PSK = "0x" + "5a" * 32


def connection(name, local, remote, child, local_ts, remote_ts, *, proposals=("aes128gcm16-prfsha256-x25519",),
               esp=("aes128gcm16",), mode="tunnel", start_action="none", dpd_delay=0, dpd_action="clear",
               psk=PSK, local_id=None, remote_id=None, rekey_time=None, child_extra="", ike_rekey_time=None,
               pubkey=None):
    """`pubkey`: (local_cert, local_key, [ca_certs]) paths for auth = "pubkey" instead of the PSK.
    `rekey_time` is the child's, `ike_rekey_time` the connection's."""
    q = lambda xs: "[" + ", ".join(f'"{x}"' for x in xs) + "]"
    if pubkey:
        cert, key, cas = pubkey
        auth = f'auth = "pubkey"\nlocal_cert = "{cert}"\nlocal_key = "{key}"\nca_certs = {q(cas)}\n'
    else:
        auth = f'auth = "psk"\npsk = "{psk}"\n'
    text = (f'[[connection]]\nname = "{name}"\nlocal_addrs = ["{local}"]\nremote_addrs = ["{remote}"]\n'
            f'proposals = {q(proposals)}\n{auth}dpd_delay = {dpd_delay}\n')
    if ike_rekey_time is not None:
        text += f"rekey_time = {ike_rekey_time}\n"
    if local_id:
        text += f'local_id = "{local_id}"\n'
    if remote_id:
        text += f'remote_id = "{remote_id}"\n'
    text += (f'\n[[connection.child]]\nname = "{child}"\nlocal_ts = {q(local_ts)}\nremote_ts = {q(remote_ts)}\n'
             f'esp_proposals = {q(esp)}\nmode = "{mode}"\nstart_action = "{start_action}"\ndpd_action = "{dpd_action}"\n')
    if rekey_time is not None:
        text += f"rekey_time = {rekey_time}\n"
    return text + child_extra + "\n"


def ike_config(conn, fast_retransmit=True):
    text = "@HEADER@\n" + conn
    if fast_retransmit:
        text += "[ike]\nretransmit_timeout = 1.0\nretransmit_base = 1.5\nretransmit_tries = 3\n"
    return text


def list_sas(daemon):
    r = subprocess.run([sluice_binary(), "list-sas", "--json", "--socket", daemon.socket], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise RuntimeError(f"list-sas failed: {r.stdout} {r.stderr}")
    return json.loads(r.stdout)


def control(daemon, *args):
    return subprocess.run([sluice_binary(), *args, "--socket", daemon.socket], capture_output=True, text=True, timeout=10)


def wait_child(daemon, child, timeout=20, installed=True):
    """Waits until `child` has an installed CHILD_SA (or none, with installed=False)."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = list_sas(daemon)
        kids = [c for s in last if s["state"] == "ESTABLISHED" for c in s["children"]
                if c["name"] == child and c["state"] == "INSTALLED"]
        if bool(kids) == installed:
            return kids
        time.sleep(0.2)
    raise AssertionError(f"CHILD_SA {child} {'not up' if installed else 'still up'} after {timeout}s: {last}\n{daemon.log.read_text()[-3000:]}")
