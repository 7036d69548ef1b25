"""Keeps the sanitizer runtime of a tools/sanitize.sh run in Python processes only.

sanitize.sh copies this module into each sanitizer venv, with a .pth file that imports it
at the startup of every interpreter of that venv. Python is not instrumented, so the
runtime comes in through LD_PRELOAD; by the time this runs it is loaded, and then:

- LD_PRELOAD leaves the environment, so the programs that tests start (ffmpeg, head...)
  run without the runtime and its noise about code that was never built for it;
- sys.executable becomes a wrapper that preloads the runtime again, because the fresh
  interpreters that some tests start on purpose (conftest.run_with_engine) import the
  instrumented _core, which refuses to load into a process without its runtime. They are
  checked too, and their own children start clean in turn.

Does nothing unless TURBOPIPE_SANITIZER_RUNTIME names the preloaded runtime: pip and a
plain `python` of the venv are left alone.
"""

import os
import sys

_runtime = os.environ.get("TURBOPIPE_SANITIZER_RUNTIME")
if _runtime and os.environ.get("LD_PRELOAD") == _runtime:
    del os.environ["LD_PRELOAD"]  # unsetenv(): os.exec*, subprocess and fork+exec see it gone
    _wrapper = os.environ.get("TURBOPIPE_SANITIZER_PYTHON")
    if _wrapper:
        sys.executable = _wrapper
