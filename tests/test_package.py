"""The package's face: what it exports, its version, and how it picks its engine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import turbopipe

ROOT = Path(__file__).resolve().parents[1]


def python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_every_public_name_is_exported() -> None:
    for name in turbopipe.__all__:
        assert getattr(turbopipe, name) is not None, name
    assert {"pipe", "sync", "close", "VideoWriter"} <= set(turbopipe.__all__)


def test_version_is_the_one_the_project_declares() -> None:
    declared = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert declared is not None
    assert turbopipe.__version__ == declared.group(1)


@pytest.mark.parametrize(
    "module", ["turbopipe._api", "turbopipe.writer", "turbopipe.ffmpeg", "turbopipe.cli"]
)
def test_each_module_imports_first(module: str) -> None:
    """No import loop: any module can be the first of the package to be imported."""
    result = python(f"import {module}")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("choice", "engine"), [("native", "native"), ("python", "python"),
                                                ("auto", "native"), ("", "native"),
                                                (" Python ", "python")])  # fmt: skip
def test_the_engine_variable_picks_the_engine(choice: str, engine: str) -> None:
    code = "import turbopipe._api as api; print(api.ENGINE, api.ENGINE_REASON, sep='|')"
    result = python(code, TURBOPIPE_ENGINE=choice)
    assert result.returncode == 0, result.stderr
    chosen, reason = result.stdout.strip().split("|")
    assert chosen == engine
    assert f"TURBOPIPE_ENGINE={choice.strip().lower() or 'auto'}" in reason


def test_an_engine_variable_of_another_kind_raises() -> None:
    result = python("import turbopipe", TURBOPIPE_ENGINE="bogus")
    assert result.returncode != 0
    assert "TURBOPIPE_ENGINE must be auto, native or python, not 'bogus'" in result.stderr


def test_the_native_engine_asked_for_but_missing_raises(tmp_path: Path) -> None:
    """A copy of the package without its extension: native raises, auto takes python."""
    shutil.copytree(
        Path(turbopipe.__file__).parent,
        tmp_path / "turbopipe",
        ignore=shutil.ignore_patterns("*.so", "__pycache__"),
    )
    code = "import turbopipe; print(turbopipe.ENGINE)"
    native = python(code, TURBOPIPE_ENGINE="native", PYTHONPATH=str(tmp_path))
    assert native.returncode != 0
    assert "TURBOPIPE_ENGINE=native, but the native engine does not load" in native.stderr
    auto = python(code, TURBOPIPE_ENGINE="auto", PYTHONPATH=str(tmp_path))
    assert auto.returncode == 0, auto.stderr
    assert auto.stdout.strip() == "python"
    assert auto.stderr == ""  # missing is no surprise: no warning


@pytest.mark.parametrize("name", ["QUEUE_LIMIT", "IDLE_EXIT", "RELAY_MINIMUM", "SPLICE_REFUSED"])
def test_both_engines_share_their_constants(name: str) -> None:
    from turbopipe import _core, _python

    assert getattr(_core, name) == getattr(_python, name)
