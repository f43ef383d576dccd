#!/usr/bin/env bash
# Installs what nasc needs to build, test and run on Debian 12, if it is missing, and the packages
# named as arguments (scripts/test-arm64.sh's). Idempotent: does nothing when every package is
# present. Needs root (or sudo) only when something is missing.
set -eu
# libopenmpi-dev and openmpi-bin: the MPI build (make MPI=1) that `make test` also builds and tests.
# protobuf-c, libonnx-dev (onnx.proto, the C++ checker): ONNX export and import. nodejs/npm: the tests
# run exported models in ONNX Runtime (onnxruntime-node from the npm registry). gnuplot-nox: report plots.
PKGS="build-essential zlib1g-dev libstb-dev libsqlite3-dev dataset-fashion-mnist libopenmpi-dev openmpi-bin
      libprotobuf-c-dev protobuf-c-compiler libonnx-dev libprotobuf-dev gnuplot-nox $*"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# Node.js may come from elsewhere (e.g. NodeSource, whose nodejs bundles npm): only the commands matter.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then missing="$missing nodejs npm"; fi
[ -z "$missing" ] && exit 0
echo "nasc: installing:$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
