#!/usr/bin/env bash
# Installs what building and testing Sluice needs, from Debian's packages.
# Idempotent: does nothing when everything is present. Needs root (apt-get).
set -euo pipefail

packages=(
  # C libraries behind the shim targets
  libssl-dev libnetfilter-queue-dev libnfnetlink-dev libmnl-dev
  # the redirector and the namespaces
  nftables iptables iproute2
  # traffic, captures and independent ESP implementations for the end-to-end suite
  iputils-ping tcpdump tshark python3 python3-scapy python3-pytest iperf3 procps
  # the service checks (systemd-analyze) and make install
  systemd make tmux util-linux
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing packages: ${missing[*]}; run as root (sudo) to install them" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; the default (no) is right.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v swift >/dev/null; then
  echo "install-deps: swift is not on PATH: install a Swift 6 toolchain (swift.org) first" >&2
  exit 1
fi
