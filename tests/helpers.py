"""Helpers shared by the test modules: the CLI in process, run configs, outputs read back, interrupted runs.

Test modules import from here (and the oracle from ``reference.py``), never
from one another. Shared tables of cases live in ``cases.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
import zarr
from cases import Bad
from typer.testing import CliRunner, Result

import convpipe
from convpipe.cli import app
from convpipe.completion import BlockRecorder
from convpipe.sample import write_sample

CONVPIPE = str(Path(sys.executable).parent / "convpipe")  # the installed console script
SPATIAL_CHUNKS = (32, 32)
SMALL_SHAPE = (2, 96, 128)  # 2 frames (slabs) x 12 blocks of 32 x 32
SUMMARY_RESUMED = re.compile(r"resumed: (\d+) of (\d+) blocks computed")


# --------------------------------------------------------------------------- the CLI in process


def invoke(*args: str | Path) -> Result:
    """``convpipe ARGS`` through ``typer.testing.CliRunner``."""
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result


def assert_user_error(result: Result, *fragments: str, exit_code: int = 2) -> str:
    """``exit_code``, exactly one ``error:`` line on stderr, no traceback; returns the message."""
    assert result.exit_code == exit_code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # not a crash caught by the runner
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "error:" not in result.stdout
    message = errors[0][len("error: ") :]
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from {message!r}"
    return message


def check_message(message: str, source: str, case: Bad) -> None:
    """The message names the file (and line), and holds every expected fragment."""
    prefix = f"{source}:{case.line}: " if case.line is not None else f"{source}: "
    assert message.startswith(prefix), f"{message!r} should start with {prefix!r}"
    for fragment in case.fragments:
        assert fragment in message, f"{fragment!r} missing from {message!r}"
    assert "\n" not in message


def resumed_counts(text: str) -> tuple[int, int]:
    """``(computed, total)`` from the summary line of a resumed run."""
    match = SUMMARY_RESUMED.search(text)
    assert match, f"no 'resumed: N of M blocks computed' in {text!r}"
    return int(match[1]), int(match[2])


# --------------------------------------------------------------------------- run configs


def run_config(
    input_path: str | Path,
    output_path: str | Path,
    *,
    kernels: Any = "sobel",
    stride: int | list[int] = 1,
    combine: str = "magnitude",
    dtype: str = "float32",
    scheduler: str = "threads",
    chunks: tuple[int, int] | None = SPATIAL_CHUNKS,
    **compute: Any,
) -> dict[str, Any]:
    """A run config as a mapping: sobel magnitude in (32, 32) tiles unless told otherwise.

    Extra keyword arguments are further ``compute`` keys (``workers``, ``retries``, ...).
    """
    return {
        "input": {"path": str(input_path)},
        "kernels": kernels,
        "stride": list(stride) if isinstance(stride, (tuple, list)) else stride,
        "combine": combine,
        "output": {"path": str(output_path), "dtype": dtype},
        "compute": {"chunks": None if chunks is None else list(chunks), "scheduler": scheduler, **compute},
    }


def write_yaml(path: Path, config: dict[str, Any]) -> Path:
    """Write a config mapping as a YAML file (for the CLI); returns its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def make_config(path: Path, input_path: str | Path, output_path: str | Path, **options: Any) -> Path:
    """:func:`run_config` written as a YAML file at ``path``."""
    return write_yaml(path, run_config(input_path, output_path, **options))


def run_in_process(input_path: str | Path, output_path: str | Path, **options: Any) -> convpipe.RunSummary:
    """Run :func:`run_config` through ``convpipe.run`` (threads unless told otherwise), no progress bar."""
    return convpipe.run(run_config(input_path, output_path, **options), progress=False)


# --------------------------------------------------------------------------- outputs read back


def read_output(path: str | Path) -> np.ndarray:
    """The result array ``0`` of an output group, read with zarr alone."""
    return zarr.open_group(str(path), mode="r")["0"][...]


def output_record(path: str | Path) -> dict:
    """The provenance record (``attrs["convpipe"]``) of an output."""
    return dict(zarr.open_group(str(path), mode="r")["0"].attrs["convpipe"])


def assert_same_bytes(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert actual.tobytes() == expected.tobytes()


def tree_digest(root: Path) -> str:
    """A hash of every file name and byte under ``root`` (and of the folder layout)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(b"F" + path.read_bytes() if path.is_file() else b"D")
    return digest.hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Staging, backup or lock files a run may have left next to its output."""
    return sorted(p.name for p in folder.iterdir() if ".convpipe-" in p.name)


def file_stamps(root: Path) -> dict[str, int]:
    """Modification time of every file under ``root``: unchanged stamps mean nothing was rewritten."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- shared inputs


@dataclass(frozen=True)
class Stack:
    """A generated input and the threaded result of :func:`run_config` on it."""

    input: Path
    reference: np.ndarray
    blocks: int


def make_stack(folder: Path, shape: tuple[int, int, int]) -> Stack:
    """A sample input in ``folder`` and its threaded reference output."""
    source, reference = folder / "in.zarr", folder / "reference.zarr"
    write_sample(str(source), *shape)
    run_in_process(source, reference)
    return Stack(source, read_output(reference), output_record(reference)["blocks"])


def shared_stack(tmp_path_factory: pytest.TempPathFactory, shape: tuple[int, int, int]) -> Stack:
    """Input + threaded reference, built once per test session (shared by the test modules)."""
    folder = tmp_path_factory.getbasetemp() / "shared-stacks" / "x".join(map(str, shape))
    source, reference = folder / "in.zarr", folder / "reference.zarr"
    if not (folder / "ready").exists():
        folder.mkdir(parents=True, exist_ok=True)
        make_stack(folder, shape)
        (folder / "ready").touch()
    return Stack(source, read_output(reference), output_record(reference)["blocks"])


# --------------------------------------------------------------------------- real runs in subprocesses


def start_convpipe(args: list[str | Path], logs: Path) -> subprocess.Popen:
    """Start the installed ``convpipe`` console script; stdout/stderr go to files in ``logs``."""
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "stdout", "wb") as out, open(logs / "stderr", "wb") as err:
        return subprocess.Popen([CONVPIPE, *map(str, args)], stdout=out, stderr=err, cwd=logs)


def stderr_of(logs: Path) -> str:
    return (logs / "stderr").read_text(encoding="utf-8", errors="replace").replace("\r", "\n")


@contextlib.contextmanager
def running(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """Make sure a subprocess never outlives the test."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def wait_for_markers(output: str | Path, at_least: int, proc: subprocess.Popen, timeout: float = 60) -> int:
    """Poll the completion markers of a running ``proc`` until ``at_least`` blocks are recorded."""
    recorder = BlockRecorder(str(output))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(recorder.folder) and len(recorder.done()) >= at_least:
            return len(recorder.done())
        if proc.poll() is not None:
            raise AssertionError(f"the run exited ({proc.returncode}) before {at_least} blocks were recorded")
        time.sleep(0.02)
    raise AssertionError(f"fewer than {at_least} blocks recorded after {timeout} s")


def wait_until_settled(output: str | Path, quiet_for: float = 1.0, timeout: float = 20) -> set:
    """The recorded blocks once no new marker has appeared for ``quiet_for`` seconds."""
    recorder = BlockRecorder(str(output))
    done, last_change = recorder.done(), time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() - last_change < quiet_for:
        assert time.monotonic() < deadline, "markers are still appearing"
        time.sleep(0.1)
        now = recorder.done()
        if now != done:
            done, last_change = now, time.monotonic()
    return done


# --------------------------------------------------------------------------- crashes injected in process


class InjectedCrash(Exception):
    """Raised by the patched recorder: the run dies before recording a block."""


@contextlib.contextmanager
def crash_after(recorded: int) -> Iterator[None]:
    """Let ``recorded`` blocks be recorded, then crash every write task (after its block is stored)."""
    original = BlockRecorder.__call__
    calls = itertools.count()
    lock = threading.Lock()

    def record_or_crash(self, index):
        with lock:
            n = next(calls)
        if n >= recorded:
            raise InjectedCrash(f"injected crash before recording block {index}")
        return original(self, index)

    BlockRecorder.__call__ = record_or_crash
    try:
        yield
    finally:
        BlockRecorder.__call__ = original


def interrupted_run(input_path, output_path, recorded: int, overwrite: bool = False, **options: Any) -> None:
    """An in-process run on the synchronous scheduler that crashes after ``recorded`` blocks."""
    config = run_config(input_path, output_path, scheduler="synchronous", **options)
    with crash_after(recorded), pytest.raises(InjectedCrash):
        convpipe.run(config, overwrite=overwrite, progress=False)
