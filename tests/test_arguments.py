"""What pipe(), sync() and close() take: the keywords of both published generations; bad
arguments raise at the call, saying how when the mistake is a common one; the defaults of
the options come from environment variables, read as written or refused."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import turbopipe
from conftest import Pipe, md5


def test_keyword_spellings_of_both_published_generations(make_pipe: type[Pipe]) -> None:
    pipe = make_pipe()
    turbopipe.pipe(data=b"2.x ", file=pipe.fd)
    turbopipe.pipe(buffer=b"1.x", fileno=pipe.fd)
    turbopipe.sync(data=b"")
    turbopipe.sync(buffer=b"")
    turbopipe.sync()
    turbopipe.close(pipe.fd)  # 2.0's close(file)
    assert pipe.finish() == md5(b"2.x 1.x")
    with pytest.raises(TypeError):
        turbopipe.pipe(b"x")
    with pytest.raises(TypeError):
        turbopipe.pipe(file=pipe.fd)


@pytest.mark.parametrize(
    ("data", "file", "error"),
    [
        (42, 1, TypeError),
        ("text", 1, TypeError),
        (np.zeros((64, 64, 3), np.uint8)[:, ::2], 1, ValueError),  # not C-contiguous
        (np.zeros(8, "datetime64[s]"), 1, ValueError),  # no buffer format for it
        (b"x", -1, ValueError),
        (b"x", 1 << 64, ValueError),
        (b"x", "1", TypeError),
        (b"x", 1.0, TypeError),
    ],
)
def test_bad_arguments_raise_at_the_call(data: object, file: object, error: type) -> None:
    read_fd, write_fd = os.pipe()
    for known in (b"", np.zeros(0, np.uint8)):  # pipe() takes a shorter way for known types
        turbopipe.pipe(known, write_fd)
    turbopipe.sync()
    os.close(write_fd)
    os.close(read_fd)
    for _ in range(2):  # the first call of a type may take the longer way
        with pytest.raises(error):
            turbopipe.pipe(data, file)  # type: ignore[arg-type]


@pytest.mark.parametrize("option", ["chunk", "pipe_size"])
def test_negative_option_raises(option: str) -> None:
    with pytest.raises(ValueError, match=option):
        turbopipe.pipe(b"x", 1, **{option: -1})


def test_a_file_object_for_a_descriptor_gets_a_hint() -> None:
    with open(os.devnull, "wb") as file, pytest.raises(TypeError, match=r"\.fileno\(\)"):
        turbopipe.pipe(b"x", file)  # type: ignore[arg-type]


def test_sync_of_a_descriptor_number_says_how() -> None:
    with pytest.raises(TypeError, match=r"sync\(file=fd\)"):
        turbopipe.sync(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("yes", True), ("On", True), ("0", False), ("false", False), ("Auto", "auto"),
     (None, "auto")],
)  # fmt: skip
def test_flag_variables_read_as_written(text: str | None, expected: bool | str) -> None:
    env = {key: value for key, value in os.environ.items() if key != "TURBOPIPE_VMSPLICE"}
    if text is not None:
        env["TURBOPIPE_VMSPLICE"] = text
    result = subprocess.run(
        [sys.executable, "-c", "import turbopipe._api; print(turbopipe._api._VMSPLICE)"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.stdout.strip() == str(expected), result.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TURBOPIPE_CHUNK_SIZE": "8192"}, 8192),
        ({"TURBOPIPE_CHUNK": "4096", "TURBOPIPE_CHUNK_SIZE": "8192"}, 4096),
    ],
)
def test_the_chunk_variable_of_2x_is_read_too(env: dict[str, str], expected: int) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import turbopipe._api; print(turbopipe._api._DEFAULT_OPTIONS[0])"],
        env={**os.environ, **env}, capture_output=True, text=True,
    )  # fmt: skip
    assert result.stdout.strip() == str(expected), result.stderr


def test_a_flag_variable_of_another_kind_raises() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import turbopipe"],
        env={**os.environ, "TURBOPIPE_RELAY": "maybe"}, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode != 0
    assert "TURBOPIPE_RELAY must be" in result.stderr
