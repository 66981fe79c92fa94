#!/usr/bin/env bash
# Installs the Debian packages otpp needs to build, test and benchmark, if missing.
# (elixir brings the BEAM: the distribution tests and the cluster example run
# against real Elixir nodes.)
set -euo pipefail
need=()
for pkg in g++ cmake make libfmt-dev catch2 python3 libasio-dev elixir "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
