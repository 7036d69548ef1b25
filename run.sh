#!/usr/bin/env bash
# Entry point for a fresh machine: ./run.sh demo | test | benchmark [options]
# Each command makes ./.venv if needed and installs this package into it (building the
# native engine) with what the command needs, then runs it. The install is skipped when
# neither the sources nor the wanted extras changed since the last one: .venv/turbopipe.stamp
# holds a hash of src/, CMakeLists.txt and pyproject.toml, and the installs made with it.
set -euo pipefail
cd "$(dirname "$0")"

usage="usage: ./run.sh demo [--help] | test [pytest args] | benchmark [--help]"
command=${1:-}
shift || true
python=${PYTHON:-python3}

case "$command" in
  test) wanted=(".[test]" ruff mypy) ;;
  demo) wanted=(".[moderngl,ffmpeg,progress]") ;;
  benchmark) wanted=(".[moderngl,ffmpeg]" numpy) ;;
  -h | --help) echo "$usage"; exit 0 ;;
  *) echo "$usage" >&2; exit 2 ;;
esac

# A subcommand's --help needs no install: the sources print it (on the Python engine).
if [ "$command" != test ]; then
  for arg in "$@"; do
    if [ "$arg" = -h ] || [ "$arg" = --help ]; then
      export PYTHONPATH=src PYTHONDONTWRITEBYTECODE=1 TURBOPIPE_ENGINE=python
      exec "$python" -m turbopipe "$command" "$@"
    fi
  done
fi

sources_hash() {
  find src CMakeLists.txt pyproject.toml -type f \
    ! -path '*/__pycache__/*' ! -name '*.pyc' ! -name '*.so' -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
}

stamp=.venv/turbopipe.stamp
want="$(sources_hash) ${wanted[*]}"
installed() {  # this hash with these requirements is in the stamp, and the package is there
  [ -f "$stamp" ] && grep -qxF -- "$want" "$stamp" &&
    compgen -G '.venv/lib/python*/site-packages/turbopipe-*.dist-info' >/dev/null
}

[ -x .venv/bin/python ] || "$python" -m venv .venv
if ! installed; then
  .venv/bin/python -m pip --disable-pip-version-check -q install "${wanted[@]}"
  # Keep the other commands' lines only if they were installed from the same sources.
  { grep -F -- "${want%% *} " "$stamp" 2>/dev/null || true; echo "$want"; } | sort -u >"$stamp.new"
  mv "$stamp.new" "$stamp"
fi

case "$command" in
  test)
    .venv/bin/ruff check src tests
    .venv/bin/ruff format --check src tests
    .venv/bin/python -m mypy
    .venv/bin/python -m pytest "$@"
    ;;
  *)
    .venv/bin/python -m turbopipe "$command" "$@"
    ;;
esac
