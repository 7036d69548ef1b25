#!/usr/bin/env bash
# Entry point for a fresh machine: ./run.sh demo | test | benchmark [options]
# Each command makes ./.venv if needed, installs this package (building the native engine)
# with what the command needs, then runs it.
set -euo pipefail
cd "$(dirname "$0")"

command=${1:-}
shift || true
python=${PYTHON:-python3}

[ -x .venv/bin/python ] || "$python" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }

case "$command" in
  test)
    pip install '.[test]' ruff mypy
    .venv/bin/ruff check src tests
    .venv/bin/ruff format --check src tests
    .venv/bin/python -m mypy
    .venv/bin/python -m pytest "$@"
    ;;
  demo)
    pip install '.[moderngl,ffmpeg,progress]'
    .venv/bin/python -m turbopipe demo "$@"
    ;;
  benchmark)
    pip install '.[moderngl,ffmpeg]' numpy
    .venv/bin/python -m turbopipe benchmark "$@"
    ;;
  *)
    echo "usage: ./run.sh demo [--help] | test [pytest args] | benchmark [--help]" >&2
    exit 2
    ;;
esac
