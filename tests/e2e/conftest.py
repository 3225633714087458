import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import lab as labmod  # noqa: E402


def pytest_sessionstart(session):
    # These tests need real namespaces, nftables and NFQUEUE: they fail loudly, never skip.
    problems = []
    if os.geteuid() != 0:
        problems.append("the end-to-end tests need root (network namespaces, nftables, NFQUEUE): run them with sudo")
    for tool in ("ip", "nft", "iptables-nft", "tcpdump", "tshark", "ping"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} is missing: scripts/test.sh installs it (apt-get)")
    try:
        import scapy  # noqa: F401
    except ImportError:
        problems.append("python3-scapy is missing: run the suite with /usr/bin/python3 (Debian's, with python3-scapy)")
    if problems:
        pytest.exit("cannot run the end-to-end suite:\n  " + "\n  ".join(problems), returncode=2)


def pytest_collection_finish(session):
    # What the collected tests need beyond the common tools: a module sets
    # NEEDS_SLUICE = False when it runs without Sluice, NEEDS_STRONGSWAN = True when it runs charon.
    modules = {item.module for item in session.items}
    problems = []
    if any(getattr(m, "NEEDS_SLUICE", True) for m in modules):
        try:
            labmod.sluice_binary()
        except RuntimeError as e:
            problems.append(str(e))
    if any(getattr(m, "NEEDS_STRONGSWAN", False) for m in modules):
        for tool in ("/usr/lib/ipsec/charon", "swanctl", "pki", "unshare"):
            if shutil.which(tool) is None:
                problems.append(f"{tool} is missing: scripts/install-deps.sh installs strongSwan (apt-get)")
    if problems:
        pytest.exit("cannot run the end-to-end suite:\n  " + "\n  ".join(problems), returncode=2)


@pytest.fixture
def lab(request):
    name = request.node.name.replace("[", "").replace("]", "").replace("-", "")[-6:]
    with labmod.Lab(name) as l:
        yield l
