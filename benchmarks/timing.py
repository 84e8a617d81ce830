"""How rows are timed: one verified warm-up each, then repetitions interleaved over the rows.

A row is a :class:`Case`: a name, its section (as named by ``--only``), and a
``repetition()`` that runs once and returns its seconds. Disk-to-disk rows
come from :func:`pipeline_case`, one-frame rows from :func:`frame_case`; both
check the warm-up's output before anything is timed.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from checks import compare
from results import Results, Timing

IN_MEMORY_MIN_SECONDS = 0.25
"""One in-memory repetition calls the function often enough to last about this long."""


@dataclass
class Case:
    """One row of the table, warmed up and verified, ready to be timed.

    ``repetition()`` runs one timed repetition and returns its seconds
    (per call for in-memory rows).
    """

    name: str
    section: str
    megapixels: float
    repetition: Callable[[], float]
    note: str = ""
    stored_bytes: int | None = None
    """Bytes of the files a disk-to-disk row writes (measured on its warm-up output)."""


@dataclass
class FrameRow:
    """A one-frame, in-memory row before it is verified: ``function()`` must return ``expected``."""

    name: str
    function: Callable[[], np.ndarray]
    expected: np.ndarray


@contextlib.contextmanager
def scratch_dir(parent: Path) -> Iterator[Path]:
    """A temporary folder beside the input (same disk), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="bench-out-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def settle() -> None:
    """Flush written outputs to disk and collect garbage, so one repetition does not pay for the last."""
    gc.collect()
    if hasattr(os, "sync"):
        os.sync()


def pipeline_case(
    name: str,
    section: str,
    megapixels: float,
    run: Callable[[Path], None],
    verify: Callable[[Path], None],
    scratch: Path,
    note: str = "",
) -> Case:
    """A disk-to-disk row: ``run(output_path)`` into a fresh path each time, deleted afterwards.

    The warm-up run happens here and its output is the one verified.
    """
    counter = itertools.count()

    def once() -> float:
        output = scratch / f"run-{next(counter)}.zarr"
        settle()
        started = time.perf_counter()
        run(output)
        elapsed = time.perf_counter() - started
        shutil.rmtree(output, ignore_errors=True)
        return elapsed

    warm_up = scratch / "warm-up.zarr"
    run(warm_up)
    verify(warm_up)
    files = [f for f in warm_up.rglob("*") if f.is_file()]
    stored = sum(f.stat().st_size for f in files)
    shutil.rmtree(warm_up, ignore_errors=True)
    written = f"writes {stored / 1e6:.0f} MB in {len(files)} files"  # compressed: what the disk has to take
    return Case(name, section, megapixels, once, f"{note}, {written}" if note else written, stored)


def frame_case(row: FrameRow, t: int, megapixels: float, results: Results) -> Case:
    """A verified one-frame row; its first call is both the check of frame ``t`` and the warm-up."""
    error = compare(f"{row.name}, frame {t}", row.function(), row.expected)
    results.agree(f"{row.name}: frame {t} vs the reference (max rel err {error:.1e})")
    return in_memory_case(row.name, megapixels, row.function)


def in_memory_case(name: str, megapixels: float, function: Callable[[], Any]) -> Case:
    """A one-frame row: each repetition averages enough calls to last about 0.25 s.

    ``function`` has been called (warm-up, JIT compilation) and verified before.
    """
    started = time.perf_counter()
    function()
    once = max(time.perf_counter() - started, 1e-6)
    calls = max(1, min(1000, math.ceil(IN_MEMORY_MIN_SECONDS / once)))

    def repetition() -> float:
        gc.collect()
        started = time.perf_counter()
        for _ in range(calls):
            function()
        return (time.perf_counter() - started) / calls

    return Case(name, "core", megapixels, repetition, f"{calls} calls per repetition")


def time_cases(cases: list[Case], repeats: int, results: Results) -> None:
    """Time ``repeats`` rounds, each running every case once (round-robin).

    Interleaving spreads a change in the machine's background load over all
    rows instead of penalising whichever row ran during it.
    """
    seconds: dict[str, list[float]] = {case.name: [] for case in cases}
    for _ in range(repeats):
        for case in cases:
            seconds[case.name].append(case.repetition())
    for case in cases:
        results.timings.append(
            Timing(case.name, case.section, seconds[case.name], case.megapixels, case.note, case.stored_bytes)
        )
