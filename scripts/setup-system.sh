#!/usr/bin/env bash
# setup-system.sh: installs the Debian packages msgc builds and runs with (as root): the compiler and cmake for
# the native addon, oneDNN, and the Fashion-MNIST dataset the demo trains on. Skips what is already installed.
set -euo pipefail
packages=(cmake g++ make libdnnl-dev dataset-fashion-mnist)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup-system: need root to install: ${missing[*]} (run with sudo)" >&2
    exit 1
  fi
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
echo "setup-system: ${packages[*]} present"
