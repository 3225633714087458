# Sourced by demo.sh and test.sh: they need root (network namespaces, nftables, NFQUEUE,
# apt-get). Run by a user, they run again under sudo, keeping PATH: the Swift toolchain
# is often in a folder that sudo's secure_path leaves out. Run by root, nothing happens.
if [[ $(id -u) -ne 0 ]]; then
  if ! command -v sudo >/dev/null; then
    echo "$0 needs root (network namespaces, nftables, apt-get) and there is no sudo here: run it as root" >&2
    exit 1
  fi
  echo "$0: running again as root (sudo)" >&2
  exec sudo env "PATH=$PATH" "$0" "$@"
fi
