#!/usr/bin/env bash
# Builds the API reference (Doxygen) into build/docs/html. Fails on any
# warning: an undocumented public entity, a broken reference.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh doxygen
out=build/docs
rm -rf "$out" && mkdir -p "$out"
version=$(awk '/#define OTPP_VERSION_(MAJOR|MINOR|PATCH) /{v = v (v ? "." : "") $3} END {print v}' include/otpp/version.hpp)
OTPP_VERSION=$version OTPP_DOCS_OUT=$out doxygen docs/Doxyfile
echo "docs: $out/html/index.html (otpp $version)"
