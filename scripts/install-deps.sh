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
  # the service checks (systemd-analyze), make install, and rendering the man pages
  systemd make tmux util-linux man-db
  # strongSwan, the IKEv2 peer of the interop tests: charon runs in the tests' namespaces only
  strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins strongswan-pki
)

# The host's own charon and starter (pid files in the host's /run; the tests' charons keep
# theirs in a private /run and never show here).
charon_pids() {
  local f
  for f in /run/charon.pid /run/starter.charon.pid; do
    [[ -s $f ]] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"
  done
  return 0
}

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
  # strongswan-charon pulls in strongswan-starter, whose postinst starts and enables a system
  # charon ("ipsec"). The tests start their own; the host must not get one. A policy-rc.d
  # that says "no" (101) keeps invoke-rc.d and deb-systemd-invoke from starting it.
  starter_before=$(dpkg-query -W -f='${Status}' strongswan-starter 2>/dev/null | grep -c "ok installed" || true)
  charon_before=$(charon_pids | tr "\n" " ")
  policy=/usr/sbin/policy-rc.d
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# install-deps.sh: no services started while it installs\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [[ $(trap -p EXIT) ]]; then rm -f "$policy"; trap - EXIT; fi
  if [[ $starter_before == 0 ]] && dpkg-query -W -f='${Status}' strongswan-starter 2>/dev/null | grep -q "ok installed"; then
    # Undo the boot-time start the package enabled (it was not there before).
    if [[ -d /run/systemd/system ]]; then
      systemctl disable --now strongswan-starter.service >/dev/null 2>&1 || true
    else
      update-rc.d ipsec disable >/dev/null 2>&1 || true
    fi
  fi
  # Should a system charon have started anyway, stop it: only one that was not running before.
  for pid in $(charon_pids); do
    if [[ " $charon_before " != *" $pid "* ]]; then
      echo "install-deps: stopping the system charon ($pid) the strongSwan install started" >&2
      if [[ -x /usr/sbin/ipsec ]]; then /usr/sbin/ipsec stop >/dev/null 2>&1 || true; fi
      kill "$pid" 2>/dev/null || true
    fi
  done
fi

# promtool checks examples/prometheus-alerts.yml in the end-to-end suite. It comes from
# Debian's prometheus package, unpacked into .build/tools rather than installed, so that
# no Prometheus server is installed and enabled on the host for a test.
tools="$(cd "$(dirname "$0")/.." && pwd)/.build/tools"
if [[ ! -x $tools/promtool ]]; then
  work=$(mktemp -d)
  if ! (cd "$work" && apt-get download -qq prometheus 2>/dev/null); then
    [[ $(id -u) -eq 0 ]] && apt-get update -qq
    (cd "$work" && apt-get download -qq prometheus 2>/dev/null) || { rm -rf "$work"; echo "install-deps: cannot download Debian's prometheus package (for promtool)" >&2; exit 1; }
  fi
  dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
  install -D -m 0755 "$work/root/usr/bin/promtool" "$tools/promtool"
  rm -rf "$work"
  echo "install-deps: promtool unpacked into $tools"
fi

if ! command -v swift >/dev/null; then
  echo "install-deps: swift is not on PATH: install a Swift 6 toolchain (swift.org) first" >&2
  exit 1
fi
