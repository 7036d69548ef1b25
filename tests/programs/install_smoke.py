"""Smoke test of an installed turbopipe: python install_smoke.py native|python

Checks that the engine is the one named, then pipes 8 MiB of random bytes in 1 MiB items
into a real pipe and reads them back whole and in order. Run by tests/test_install.py in
fresh venvs and by cibuildwheel on each wheel (test-command in pyproject.toml). Prints one
line and exits 0 on success, else exits 1 saying what went wrong.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading

import turbopipe


def fail(reason: str) -> None:
    sys.exit(f"turbopipe smoke test failed: {reason}")


def main(engine: str) -> None:
    if engine != turbopipe.ENGINE:
        fail(f"the {turbopipe.ENGINE} engine, not {engine}: {turbopipe._api.ENGINE_REASON}")
    items = [os.urandom(1 << 20) for _ in range(8)]
    read_end, write_end = os.pipe()
    received = hashlib.sha256()

    def drain() -> None:
        while chunk := os.read(read_end, 1 << 16):
            received.update(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    for item in items:
        turbopipe.pipe(item, write_end)
    turbopipe.sync(file=write_end)
    turbopipe.close()
    os.close(write_end)
    reader.join(timeout=60)
    if reader.is_alive():
        fail("the reader never saw end of file")
    os.close(read_end)
    if received.digest() != hashlib.sha256(b"".join(items)).digest():
        fail("the bytes read back differ from those piped")
    print(f"turbopipe {turbopipe.__version__}: {turbopipe.ENGINE} engine, 8 MiB piped intact")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "native")
