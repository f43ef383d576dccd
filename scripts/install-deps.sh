#!/usr/bin/env bash
# Installs what nasc needs to build, test and run on Debian 12, if it is missing. Idempotent:
# does nothing when every package is present. Needs root (or sudo) only when something is missing.
set -eu
# libopenmpi-dev and openmpi-bin: the MPI build (make MPI=1) that `make test` also builds and tests.
PKGS="build-essential zlib1g-dev libstb-dev libsqlite3-dev dataset-fashion-mnist libopenmpi-dev openmpi-bin"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "nasc: installing:$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
