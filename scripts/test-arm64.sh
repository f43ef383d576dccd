#!/usr/bin/env bash
# Builds nasc for ARM64 with Debian's cross compiler and runs the plain suite (tests/run.sh) on
# it under QEMU's user-mode emulation: the check that the portable paths (no AVX-512; gemm's
# GNU C vector kernel on NEON) build cleanly and pass, as on an ARM board. Not part of `make
# test`: emulated, the test programs take about 4 minutes on 2 cores, the CLI scripts (which
# train networks) most of an hour. Usage: bash scripts/test-arm64.sh [--programs] [build folder]
# (--programs: the test programs only).
#
# On Debian 12 as root (or with sudo) it installs what is missing: the arm64 architecture for
# dpkg, the cross compiler, the arm64 libraries nasc links and qemu-user; and, when no handler
# runs aarch64 programs yet, registers QEMU with the kernel's binfmt_misc (so the suite runs
# the test programs as they are).
set -eu
cd "$(dirname "$0")/.."
if [ "${1:-}" = --programs ]; then
    export NASC_TESTS=programs
    shift
fi
B=${1:-build-arm64}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

dpkg --print-foreign-architectures | grep -qx arm64 || $SUDO dpkg --add-architecture arm64
# the host's tools (protoc-c and onnx.proto, Node.js for the CLI tests), then the cross compiler,
# QEMU and the arm64 libraries nasc links
bash scripts/install-deps.sh gcc-aarch64-linux-gnu qemu-user libc6:arm64 libgomp1:arm64 zlib1g-dev:arm64 \
    libstb-dev:arm64 libsqlite3-dev:arm64 libprotobuf-c-dev:arm64

BINFMT=/proc/sys/fs/binfmt_misc
if [ ! -e "$BINFMT/qemu-aarch64" ]; then
    [ -e "$BINFMT/register" ] || $SUDO mount binfmt_misc -t binfmt_misc "$BINFMT"
    # ELF, 64-bit, little-endian, executable or shared object, machine 0xb7 (AArch64); F: the
    # interpreter is opened now, so it also serves programs in other mount namespaces
    printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64:F' |
        $SUDO tee "$BINFMT/register" >/dev/null
fi

make CC=aarch64-linux-gnu-gcc BUILD="$B" -j"$(nproc)" all
readelf -h "$B/nasc" | grep -q AArch64 || { echo "nasc: $B/nasc is not an ARM64 program" >&2; exit 1; }
bash tests/run.sh "$B"
