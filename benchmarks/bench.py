#!/usr/bin/env python
"""Benchmark convpipe against the I/O floor, dask-image, SciPy and OpenCV; print ratios.

Every figure is relative to something timed in the same run, on the same
machine, the same data, the same chunks and the same output codec (Blosc
LZ4, convpipe's default), so the ratios mean something even where the
absolute seconds do not carry over to another machine:

* **I/O floor**: read the stack, cast it to float32, write it to Zarr; no
  arithmetic at all. convpipe cannot be faster than this.
* **convpipe**: ``execute(make_plan(parse_config(...)))``, Sobel bank,
  ``combine: magnitude``, stride 1 and stride 2.
* **dask-image**: the pipeline a user would write with
  ``dask_image.ndfilters.correlate``, cropped to the valid region.
* **one frame in memory, one thread**: ``scipy.ndimage.correlate``,
  OpenCV ``filter2D`` and the convpipe core alone.

Every pipeline's output is compared with an independent float64 reference
(``scipy.signal.correlate(mode="valid")``) before it is timed; a mismatch
aborts the run, because the speed of a wrong answer is worthless. After one
warm-up per row, the timed repetitions are interleaved (round-robin over the
rows) so that a change in background load hits every row alike.

``--memory`` measures the peak resident memory of ``convpipe run`` on 64 and
on 256 frames: it must not grow with the stack.

Run ``python benchmarks/bench.py --help`` for the options and see
``benchmarks/README.md`` for what each row means and the targets.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT / "bench-data"

SECTIONS = ("floor", "convpipe", "daskimage", "core")
"""Timed sections, as named by ``--only``."""

SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
SOBEL_Y = SOBEL_X.T.copy()
SOBEL_BANK = np.stack([SOBEL_X, SOBEL_Y])[:, None]
"""``(K=2, C=1, 3, 3)``: written out here, independently of ``convpipe.kernels``."""

RTOL = 1e-5
"""Relative tolerance of a float32 result against the float64 reference."""
ATOL_OF_PEAK = 1e-6
"""Absolute tolerance, as a fraction of the reference's largest value (for pixels near 0)."""

GENERATOR_VERSION = 1
"""Bump when :func:`scene_frame` changes, so cached stacks are regenerated."""

IN_MEMORY_MIN_SECONDS = 0.25
"""One in-memory repetition calls the function often enough to last about this long."""

MEMORY_POLL_SECONDS = 0.05


class BenchmarkError(Exception):
    """A pipeline failed or disagreed with the reference: the run is aborted."""


@dataclass(frozen=True)
class Target:
    """A ratio we aim for: ``value <= limit`` (``at_most``) or ``value >= limit``."""

    limit: float
    at_most: bool

    def text(self) -> str:
        return f"{'<=' if self.at_most else '>='} {self.limit:g}"

    def met(self, value: float) -> bool:
        return value <= self.limit if self.at_most else value >= self.limit


TARGETS = {
    "convpipe / I/O floor (time)": Target(1.15, at_most=True),
    "dask-image / convpipe (time)": Target(1.8, at_most=False),
    "core / OpenCV (throughput)": Target(2.5, at_most=False),
    "core stride 2 / stride 1 (time)": Target(0.35, at_most=True),
    "core stride 2 / stride 1, stack dtype (time)": Target(0.35, at_most=True),
    "peak RSS, large / small stack": Target(1.10, at_most=True),
    "peak RSS, largest run (GiB)": Target(1.5, at_most=True),
}


@dataclass
class Timing:
    """Seconds of each timed repetition of one row of the table."""

    name: str
    section: str
    seconds: list[float]
    megapixels: float
    """Input pixels processed by one repetition, in millions."""
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        return self.megapixels / self.median if self.median > 0 else math.inf


@dataclass
class Ratio:
    name: str
    value: float | None
    target: Target | None
    formula: str

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "n/a"
        if self.target is None:
            return ""
        return "PASS" if self.target.met(self.value) else "MISS"


@dataclass
class Results:
    """Everything a run measured (saved by ``--json``)."""

    machine: dict[str, Any]
    settings: dict[str, Any]
    checks: list[str] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def timing(self, name: str) -> Timing | None:
        return next((t for t in self.timings if t.name == name), None)

    def agree(self, line: str) -> None:
        self.checks.append(line)
        print(f"  agree: {line}", flush=True)

    def note(self, line: str) -> None:
        self.notes.append(line)
        print(f"  note: {line}", flush=True)


# --------------------------------------------------------------------------- the standard stack


def scene_frame(t: int, size: int, seed: int) -> np.ndarray:
    """Frame ``t`` of the benchmark stack: a smooth drifting scene plus Gaussian noise, uint16.

    Each frame depends only on ``(t, size, seed)``, so a stack can be written
    frame by frame and the first frames of a long stack equal a short one.
    """
    rng = np.random.default_rng([seed, t])
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    y, x = coords[:, None], coords[None, :]
    drift = np.float32(0.02 * t)
    scene = 16000 + 6000 * (np.sin(2 * np.pi * (2.5 * x + drift)) * np.cos(2 * np.pi * (1.5 * y - drift)))
    for cy, cx, radius, amplitude in (
        (0.3, 0.35, 0.08, 20000),
        (0.65, 0.6, 0.15, -9000),
        (0.8, 0.2, 0.04, 25000),
    ):
        gy = np.exp(-((y - (cy + drift / 4)) ** 2) / (2 * radius**2))
        gx = np.exp(-((x - cx) ** 2) / (2 * radius**2))
        scene += np.float32(amplitude) * gy * gx  # separable: an outer product, not a 2-D exp
    scene += rng.standard_normal((size, size), dtype=np.float32) * np.float32(300)
    return np.clip(np.rint(scene), 0, 65535).astype(np.uint16)


def stack_path(data_dir: Path, frames: int, size: int, chunk: int, seed: int) -> Path:
    return data_dir / f"stack-{frames}x{size}x{size}-chunk{chunk}-seed{seed}.zarr"


def ensure_stack(data_dir: Path, frames: int, size: int, chunk: int, seed: int) -> Path:
    """The benchmark stack as a Zarr v3 array, generated once (frame by frame) and cached.

    Written with Blosc LZ4 and chunks ``(1, chunk, chunk)``; an attribute
    written last marks it complete, so an interrupted generation is redone.
    """
    import zarr

    from convpipe.store import compressors_for

    path = stack_path(data_dir, frames, size, chunk, seed)
    wanted = {"frames": frames, "size": size, "chunk": chunk, "seed": seed, "generator": GENERATOR_VERSION}
    if path.exists():
        with contextlib.suppress(Exception):
            if dict(zarr.open_array(str(path), mode="r").attrs).get("convpipe_bench") == {
                **wanted,
                "complete": True,
            }:
                print(f"  using cached {_relative(path)}", flush=True)
                return path
        shutil.rmtree(path)
    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    chunks = (1, min(chunk, size), min(chunk, size))
    array = zarr.create_array(
        store=str(path),
        shape=(frames, size, size),
        chunks=chunks,
        dtype="uint16",
        compressors=compressors_for("blosc-lz4", 3),
        dimension_names=["t", "y", "x"],
        attributes={"convpipe_bench": {**wanted, "complete": False}},
    )
    for t in range(frames):
        array[t] = scene_frame(t, size, seed)
    array.attrs["convpipe_bench"] = {**wanted, "complete": True}
    print(f"  generated {_relative(path)} in {time.perf_counter() - started:.1f} s", flush=True)
    return path


def _relative(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


# --------------------------------------------------------------------------- the reference


def reference_magnitude(frame: np.ndarray) -> np.ndarray:
    """Sobel magnitude of one frame in float64: ``hypot`` of two valid correlations.

    ``scipy.signal.correlate(mode="valid", method="direct")`` when SciPy is
    installed, else the same sum written out with NumPy slices.
    """
    x = frame.astype(np.float64)
    try:
        from scipy.signal import correlate
    except ImportError:
        responses = [_correlate_valid_numpy(x, kernel) for kernel in (SOBEL_X, SOBEL_Y)]
    else:
        responses = [correlate(x, kernel, mode="valid", method="direct") for kernel in (SOBEL_X, SOBEL_Y)]
    return np.hypot(*responses)


def _correlate_valid_numpy(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    kh, kw = kernel.shape
    ho, wo = x.shape[0] - kh + 1, x.shape[1] - kw + 1
    out = np.zeros((ho, wo))
    for u in range(kh):
        for v in range(kw):
            out += kernel[u, v] * x[u : u + ho, v : v + wo]
    return out


def reference_name() -> str:
    try:
        import scipy.signal  # noqa: F401
    except ImportError:
        return "a NumPy float64 valid correlation (SciPy not installed)"
    return "scipy.signal.correlate(valid, direct) in float64"


class Reference:
    """Reference magnitudes of the frames that every pipeline is checked on."""

    def __init__(self, input_path: Path) -> None:
        import zarr

        self.array = zarr.open_array(str(input_path), mode="r")
        frames = self.array.shape[0]
        self.frames = sorted({0, frames - 1})
        self._magnitudes: dict[int, np.ndarray] = {}

    def magnitude(self, t: int) -> np.ndarray:
        if t not in self._magnitudes:
            self._magnitudes[t] = reference_magnitude(self.array[t])
        return self._magnitudes[t]

    def frames_text(self) -> str:
        return "frame " + " and ".join(str(t) for t in self.frames)


def compare(label: str, got: np.ndarray, want: np.ndarray) -> float:
    """Largest relative error of ``got`` against ``want``; raise if beyond tolerance."""
    if got.shape != want.shape:
        raise BenchmarkError(f"{label}: output shape {got.shape} differs from the reference {want.shape}")
    got64 = got.astype(np.float64)
    atol = ATOL_OF_PEAK * max(1.0, float(np.abs(want).max()))
    bad = ~np.isclose(got64, want, rtol=RTOL, atol=atol)  # NaN (an unwritten chunk) is bad too
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise BenchmarkError(
            f"{label}: {int(bad.sum())} of {bad.size} pixels differ from the reference "
            f"(rtol {RTOL:g}); first at {first}: got {got64[first]!r}, expected {want[first]!r}"
        )
    scale = np.maximum(np.abs(want), atol)
    return float((np.abs(got64 - want) / scale).max())


# --------------------------------------------------------------------------- timing harnesses


@contextlib.contextmanager
def scratch_dir(parent: Path) -> Iterator[Path]:
    """A temporary folder beside the input (same disk), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="bench-out-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _settle() -> None:
    """Flush written outputs to disk and collect garbage, so one repetition does not pay for the last."""
    gc.collect()
    if hasattr(os, "sync"):
        os.sync()


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
        _settle()
        started = time.perf_counter()
        run(output)
        elapsed = time.perf_counter() - started
        shutil.rmtree(output, ignore_errors=True)
        return elapsed

    warm_up = scratch / "warm-up.zarr"
    run(warm_up)
    verify(warm_up)
    stored = sum(f.stat().st_size for f in warm_up.rglob("*") if f.is_file())
    shutil.rmtree(warm_up, ignore_errors=True)
    written = f"writes {stored / 1e6:.0f} MB"  # compressed: what the disk has to take
    return Case(name, section, megapixels, once, f"{note}, {written}" if note else written)


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
            Timing(case.name, case.section, seconds[case.name], case.megapixels, case.note)
        )


# --------------------------------------------------------------------------- stack pipelines


def _threads_scheduler():
    import dask

    return dask.config.set(scheduler="threads")


def create_output_array(path: Path, shape, chunks, dimension_names=("t", "y", "x")):
    """An empty float32 Zarr v3 array with convpipe's default codec."""
    import zarr

    from convpipe.store import compressors_for

    return zarr.create_array(
        store=str(path),
        shape=shape,
        chunks=chunks,
        dtype="float32",
        compressors=compressors_for("blosc-lz4", 3),
        fill_value=np.nan,
        dimension_names=list(dimension_names),
    )


def floor_case(input_path: Path, reference: Reference, results: Results, args, scratch: Path) -> Case:
    """Read, cast to float32, write with the input's chunks: the cost of the I/O alone."""
    import dask.array as da
    import zarr

    source = zarr.open_array(str(input_path), mode="r")

    def run(output: Path) -> None:
        stack = da.from_zarr(source)  # one Dask block per stored chunk
        target = create_output_array(output, stack.shape, source.chunks)
        with _threads_scheduler():
            if args.floor_writer == "to_zarr":
                da.to_zarr(stack.astype(np.float32), target)
            else:
                # Into an existing array, da.to_zarr first rechunks to "auto" blocks (8 frames,
                # 128 MiB here): another task layout. da.store writes blocks == chunks as they are.
                da.store(stack.astype(np.float32), target, lock=False)

    def verify(output: Path) -> None:
        written = zarr.open_array(str(output), mode="r")
        for t in reference.frames:
            if not np.array_equal(written[t], source[t].astype(np.float32)):
                raise BenchmarkError(f"I/O floor: frame {t} of the output is not the input cast to float32")
        results.agree(f"I/O floor: {reference.frames_text()} equal the input cast to float32")

    megapixels = _stack_megapixels(source)
    name = "I/O floor (read, cast, write)"
    return pipeline_case(name, "floor", megapixels, run, verify, scratch, f"da.{args.floor_writer}")


def convpipe_config_text(input_path: Path, output_path: Path, stride: int) -> str:
    """A convpipe YAML config for the Sobel magnitude of ``input_path``."""
    return "\n".join(
        [
            "input:",
            f"  path: {json.dumps(str(input_path))}",
            "kernels: sobel",
            f"stride: {stride}",
            "combine: magnitude",
            "output:",
            f"  path: {json.dumps(str(output_path))}",
            "  dtype: float32",
            "  codec: blosc-lz4",
            "compute:",
            "  scheduler: threads",
            "",
        ]
    )


def convpipe_cases(
    input_path: Path, reference: Reference, results: Results, args, scratch: Path
) -> list[Case]:
    """``execute(make_plan(parse_config(text)))``, Sobel magnitude, stride 1 and 2."""
    from convpipe.config import parse_config
    from convpipe.runner import execute, make_plan
    from convpipe.store import open_output_array

    megapixels = _stack_megapixels_of(input_path)
    cases = []
    for stride in (1, 2):
        plan = make_plan(parse_config(convpipe_config_text(input_path, scratch / "plan.zarr", stride)))
        g = plan.geometry
        results.note(
            f"convpipe stride {stride} plan: {g.n_tasks} tasks, processing chunks "
            f"{tuple(c[0] for c in g.input_chunks)}, output Zarr chunks {g.zarr_chunks}, "
            f"~{plan.task_memory() / 2**20:.0f} MiB per task"
        )

        def run(output: Path, stride: int = stride) -> None:
            execute(make_plan(parse_config(convpipe_config_text(input_path, output, stride))), progress=False)

        def verify(output: Path, stride: int = stride) -> None:
            written = open_output_array(str(output))
            worst = 0.0
            for t in reference.frames:
                want = reference.magnitude(t)[::stride, ::stride]
                worst = max(worst, compare(f"convpipe stride {stride}, frame {t}", written[t], want))
            results.agree(
                f"convpipe stride {stride}: {reference.frames_text()} vs the reference"
                + ("[::2, ::2]" if stride == 2 else "")
                + f" (max rel err {worst:.1e})"
            )

        cases.append(pipeline_case(f"convpipe stride {stride}", "convpipe", megapixels, run, verify, scratch))
    return cases


def daskimage_case(
    input_path: Path, reference: Reference, results: Results, args, scratch: Path
) -> Case | None:
    """The dask-image pipeline a user would write: correlate each kernel, crop, hypot, store."""
    try:
        from dask_image import ndfilters
    except ImportError:
        results.note("dask-image is not installed (pip install -e '.[bench]'): skipping its row")
        return None
    import dask.array as da
    import zarr

    source = zarr.open_array(str(input_path), mode="r")

    def pipeline():
        x = da.from_zarr(source).astype(np.float32)
        gx = ndfilters.correlate(x, SOBEL_X[None].astype(np.float32))
        gy = ndfilters.correlate(x, SOBEL_Y[None].astype(np.float32))
        magnitude = da.hypot(gx, gy)[..., 1:-1, 1:-1]  # crop to the valid region
        # Cropping makes the first and last blocks one pixel shorter; store with blocks == chunks.
        if any(len(set(c[:-1])) > 1 or c[-1] > c[0] for c in magnitude.chunks):
            magnitude = magnitude.rechunk(tuple(max(c) for c in magnitude.chunks))
        return magnitude

    def run(output: Path) -> None:
        magnitude = pipeline()
        target = create_output_array(output, magnitude.shape, tuple(c[0] for c in magnitude.chunks))
        with _threads_scheduler():
            da.store(magnitude, target, lock=False)

    def verify(output: Path) -> None:
        written = zarr.open_array(str(output), mode="r")
        worst = max(
            compare(f"dask-image, frame {t}", written[t], reference.magnitude(t)) for t in reference.frames
        )
        results.agree(f"dask-image: {reference.frames_text()} vs the reference (max rel err {worst:.1e})")

    chunks = tuple(c[0] for c in pipeline().chunks)
    name = "dask-image (2 x correlate, hypot)"
    return pipeline_case(
        name, "daskimage", _stack_megapixels(source), run, verify, scratch, f"chunks {chunks}"
    )


def _stack_megapixels(array) -> float:
    return math.prod(array.shape) / 1e6


def _stack_megapixels_of(path: Path) -> float:
    import zarr

    return _stack_megapixels(zarr.open_array(str(path), mode="r"))


# --------------------------------------------------------------------------- one frame in memory


def core_cases(input_path: Path, reference: Reference, results: Results) -> list[Case]:
    """One float32 frame, one thread: SciPy, OpenCV and the convpipe core."""
    import zarr

    from convpipe.core import correlate_block

    t = reference.frames[0]
    frame = np.ascontiguousarray(zarr.open_array(str(input_path), mode="r")[t], dtype=np.float32)
    want = reference.magnitude(t)
    megapixels = frame.size / 1e6
    kx, ky = SOBEL_X.astype(np.float32), SOBEL_Y.astype(np.float32)
    rows: list[tuple[str, Callable[[], np.ndarray], np.ndarray]] = []

    try:
        from scipy import ndimage
    except ImportError:
        results.note("SciPy is not installed: skipping the scipy.ndimage row")
    else:

        def scipy_sobel() -> np.ndarray:
            gx = ndimage.correlate(frame, kx, output=np.float32)[1:-1, 1:-1]
            gy = ndimage.correlate(frame, ky, output=np.float32)[1:-1, 1:-1]
            return np.hypot(gx, gy)

        rows.append(("scipy.ndimage.correlate x2 + hypot", scipy_sobel, want))

    try:
        import cv2
    except ImportError:
        results.note("OpenCV is not installed (pip install -e '.[bench]'): skipping its row")
    else:
        cv2.setNumThreads(1)

        def opencv_sobel() -> np.ndarray:
            gx = cv2.filter2D(frame, cv2.CV_32F, kx, borderType=cv2.BORDER_ISOLATED)
            gy = cv2.filter2D(frame, cv2.CV_32F, ky, borderType=cv2.BORDER_ISOLATED)
            return cv2.magnitude(gx, gy)[1:-1, 1:-1]

        rows.append(("OpenCV filter2D x2 + magnitude", opencv_sobel, want))

    block = frame[None]  # (C=1, H, W)
    rows.append(
        (
            "convpipe core stride 1",
            lambda: correlate_block(block, SOBEL_BANK, (1, 1), "magnitude", np.float32),
            want,
        )
    )
    rows.append(
        (
            "convpipe core stride 2",
            lambda: correlate_block(block, SOBEL_BANK, (2, 2), "magnitude", np.float32),
            want[::2, ::2],
        )
    )
    # The stack's own dtype, as the pipeline hands it to the core (converted tap by tap).
    raw = np.ascontiguousarray(zarr.open_array(str(input_path), mode="r")[t])[None]
    for stride in (1, 2):
        rows.append(
            (
                f"convpipe core stride {stride}, {raw.dtype} frame",
                lambda stride=stride: correlate_block(raw, SOBEL_BANK, (stride, stride), "magnitude", np.float32),
                want[::stride, ::stride],
            )
        )
    cases = []
    for name, function, expected in rows:
        error = compare(f"{name}, frame {t}", function(), expected)  # also the warm-up call
        results.agree(f"{name}: frame {t} vs the reference (max rel err {error:.1e})")
        cases.append(in_memory_case(name, megapixels, function))
    return cases


# --------------------------------------------------------------------------- peak memory of `convpipe run`


def peak_rss_of(command: list[str]) -> dict[str, Any]:
    """Run ``command``; its exit code, wall time and peak resident memory.

    Two measures, polled every ``MEMORY_POLL_SECONDS``: the process's own
    high-water mark (``VmHWM`` in ``/proc/PID/status``: exact, kept by the
    kernel, so polling late misses nothing but the last poll interval), and
    the largest sum of the RSS of the process and its children. Not
    ``ru_maxrss`` from ``wait4``: Python starts children with ``vfork``, and
    Linux then carries the parent's high-water mark (this benchmark's, after
    generating a stack) into the child's ``ru_maxrss``.
    """
    import psutil

    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:  # pipes could fill up
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr)
        sampled_peak = high_water = 0
        watched = psutil.Process(process.pid)
        status_file = Path(f"/proc/{process.pid}/status")
        while True:
            pid, status, _ = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            high_water = max(high_water, _high_water_mark(status_file))
            with contextlib.suppress(psutil.Error):
                rss = watched.memory_info().rss
                for child in watched.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        rss += child.memory_info().rss
                sampled_peak = max(sampled_peak, rss)
            time.sleep(MEMORY_POLL_SECONDS)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4 above
        stdout.seek(0)
        stderr.seek(0)
        out_text, err_text = stdout.read().decode(errors="replace"), stderr.read().decode(errors="replace")
    return {
        "returncode": process.returncode,
        "seconds": seconds,
        "high_water_bytes": high_water,
        "sampled_peak_bytes": sampled_peak,
        "stdout": out_text,
        "stderr": err_text,
    }


def _high_water_mark(status_file: Path) -> int:
    """``VmHWM`` of a live process in bytes (0 once it is gone or off Linux)."""
    try:
        for line in status_file.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError):
        pass
    return 0


def bench_memory(results: Results, args) -> None:
    """Peak RSS of ``convpipe run`` (a fresh process each) on a small and a large stack."""
    import zarr

    from convpipe.store import open_output_array

    runs = []
    for frames in args.memory_frames:
        input_path = ensure_stack(args.data_dir, frames, args.memory_size, args.chunk, args.seed)
        with scratch_dir(args.data_dir) as scratch:
            output = scratch / "out.zarr"
            config = scratch / "config.yaml"
            config.write_text(convpipe_config_text(input_path, output, 1), encoding="utf-8")
            _settle()
            command = [sys.executable, "-m", "convpipe.cli", "run", str(config), "-q"]
            measured = peak_rss_of(command)
            if measured["returncode"] != 0:
                raise BenchmarkError(
                    f"convpipe run on {frames} frames exited with {measured['returncode']}:\n{measured['stderr']}"
                )
            source = zarr.open_array(str(input_path), mode="r")
            written = open_output_array(str(output))
            worst = 0.0
            for t in sorted({0, frames - 1}):
                want = reference_magnitude(source[t])
                worst = max(worst, compare(f"convpipe run ({frames} frames), frame {t}", written[t], want))
            results.agree(
                f"convpipe run on {frames} frames: frame 0 and {frames - 1} vs the reference (max rel err {worst:.1e})"
            )
        peak = max(measured["high_water_bytes"], measured["sampled_peak_bytes"])
        megapixels = frames * args.memory_size**2 / 1e6
        run = {
            "frames": frames,
            "size": args.memory_size,
            "seconds": measured["seconds"],
            "megapixels_per_second": megapixels / measured["seconds"],
            "high_water_bytes": measured["high_water_bytes"],
            "sampled_peak_bytes": measured["sampled_peak_bytes"],
            "peak_bytes": peak,
        }
        runs.append(run)
        print(
            f"  convpipe run, {frames} x {args.memory_size}^2: peak RSS {peak / 2**30:.3f} GiB "
            f"(VmHWM {measured['high_water_bytes'] / 2**30:.3f}, sampled {measured['sampled_peak_bytes'] / 2**30:.3f})"
            f", {measured['seconds']:.1f} s",
            flush=True,
        )
    results.memory = runs


# --------------------------------------------------------------------------- report


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, versions and the repository commit."""
    import dask
    import numba
    import zarr

    import convpipe

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "dask": dask.__version__,
            "zarr": zarr.__version__,
            "numba": numba.__version__,
            "convpipe": convpipe.__version__,
        },
        "commit": _git_commit(),
    }
    with contextlib.suppress(ImportError):
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    for module, name in (("scipy", "scipy"), ("dask_image", "dask-image"), ("cv2", "opencv")):
        version = _optional_version(module, name)
        if version:
            info["versions"][name] = version
    return info


def _optional_version(module: str, distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        __import__(module)
    except ImportError:
        return None
    for name in (distribution, "opencv-python-headless", "opencv-python"):
        with contextlib.suppress(PackageNotFoundError):
            return version(name)
    return "?"


def _git_commit() -> str | None:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


RATIOS = (
    # name, numerator row, denominator row, formula
    (
        "convpipe / I/O floor (time)",
        "convpipe stride 1",
        "I/O floor (read, cast, write)",
        "t(convpipe s1) / t(floor)",
    ),
    (
        "dask-image / convpipe (time)",
        "dask-image (2 x correlate, hypot)",
        "convpipe stride 1",
        "t(dask-image) / t(convpipe s1)",
    ),
    (
        "core / OpenCV (throughput)",
        "OpenCV filter2D x2 + magnitude",
        "convpipe core stride 1",
        "t(OpenCV) / t(core s1)",
    ),
    (
        "core stride 2 / stride 1 (time)",
        "convpipe core stride 2",
        "convpipe core stride 1",
        "t(core s2) / t(core s1)",
    ),
    (
        "core stride 2 / stride 1, stack dtype (time)",
        "convpipe core stride 2, uint16 frame",
        "convpipe core stride 1, uint16 frame",
        "t(core s2) / t(core s1), uint16",
    ),
    (
        "core / scipy.ndimage (throughput)",
        "scipy.ndimage.correlate x2 + hypot",
        "convpipe core stride 1",
        "t(scipy) / t(core s1)",
    ),
    (
        "convpipe stride 2 / stride 1 (time)",
        "convpipe stride 2",
        "convpipe stride 1",
        "t(convpipe s2) / t(convpipe s1)",
    ),
)
"""Ratios of median times; "throughput" ratios are the inverse ratio of times."""

ROW_SECTIONS = {
    "I/O floor (read, cast, write)": "floor",
    "convpipe stride 1": "convpipe",
    "convpipe stride 2": "convpipe",
    "dask-image (2 x correlate, hypot)": "daskimage",
}
"""Section of each stack row; every other row belongs to ``core``."""


def compute_ratios(results: Results, sections: list[str]) -> None:
    """The ratios whose rows were both requested; ``n/a`` when a peer was not installed."""
    for name, numerator, denominator, formula in RATIOS:
        if any(ROW_SECTIONS.get(row, "core") not in sections for row in (numerator, denominator)):
            continue
        a, b = results.timing(numerator), results.timing(denominator)
        value = a.median / b.median if a and b and b.median > 0 else None
        results.ratios.append(Ratio(name, value, TARGETS.get(name), formula))
    if len(results.memory) >= 2:
        small, large = results.memory[0], results.memory[-1]
        results.ratios.append(
            Ratio(
                "peak RSS, large / small stack",
                large["peak_bytes"] / small["peak_bytes"],
                TARGETS["peak RSS, large / small stack"],
                f"peak({large['frames']} frames) / peak({small['frames']} frames)",
            )
        )
    if results.memory:
        results.ratios.append(
            Ratio(
                "peak RSS, largest run (GiB)",
                max(run["peak_bytes"] for run in results.memory) / 2**30,
                TARGETS["peak RSS, largest run (GiB)"],
                "max peak RSS of `convpipe run`",
            )
        )


def print_report(results: Results) -> None:
    m, s = results.machine, results.settings
    print()
    print("=" * 100)
    if s.get("frames"):
        print(
            f"stack     {s['frames']} x {s['size']} x {s['size']} uint16, chunks {tuple(s['input_chunks'])}, "
            f"Blosc LZ4 output, median of {s['repeats']} interleaved rounds after a warm-up"
        )
    print(
        f"machine   {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), {m.get('memory_gib', '?')} GiB"
    )
    print(
        f"          load average {_load_text(m.get('load_average'))} at start, {_load_text(s.get('load_average_end'))} at end"
    )
    print(
        "versions  " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + f"; commit {m.get('commit')}"
    )
    if results.timings:
        print()
        print(f"{'':44}{'median s':>10}{'min s':>10}{'max s':>10}{'Mpx/s':>10}")
        headings = {
            "floor": f"stack pipelines, disk to disk ({s.get('frames')} frames, threads scheduler)",
            "core": f"one {s.get('size')}x{s.get('size')} float32 frame in memory, one thread (seconds per frame)",
        }
        shown = set()
        for timing in results.timings:
            group = "core" if timing.section == "core" else "floor"
            if group not in shown:
                shown.add(group)
                print(headings[group])
            print(
                f"  {timing.name:42}{timing.median:10.4g}{min(timing.seconds):10.4g}"
                f"{max(timing.seconds):10.4g}{timing.rate:10.1f}"
                + (f"   {timing.note}" if timing.note else "")
            )
    if results.memory:
        print()
        print("peak memory of `convpipe run` (fresh process per run)")
        for run in results.memory:
            print(
                f"  {run['frames']:4d} x {run['size']}^2: {run['peak_bytes'] / 2**30:.3f} GiB peak RSS, "
                f"{run['seconds']:.1f} s, {run['megapixels_per_second']:.1f} Mpx/s"
            )
    if results.ratios:
        print()
        print(f"{'ratio':44}{'value':>10}   {'target':10}{'':6}how")
        for r in results.ratios:
            value = "-" if r.value is None else f"{r.value:.2f}"
            target = r.target.text() if r.target else ""
            print(f"  {r.name:42}{value:>10}   {target:10}{r.verdict:6}{r.formula}")
    print("=" * 100)


def _load_text(load) -> str:
    return "?" if not load else " ".join(f"{x:.2f}" for x in load)


def to_json(results: Results) -> dict[str, Any]:
    return {
        "machine": results.machine,
        "settings": results.settings,
        "checks": results.checks,
        "notes": results.notes,
        "timings": [
            {**asdict(t), "median_seconds": t.median, "megapixels_per_second": t.rate}
            for t in results.timings
        ],
        "ratios": [
            {
                "name": r.name,
                "value": r.value,
                "target": None if r.target is None else r.target.text(),
                "verdict": r.verdict,
                "formula": r.formula,
            }
            for r in results.ratios
        ],
        "memory": results.memory,
    }


# --------------------------------------------------------------------------- command line


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _sections(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {','.join(SECTIONS)}, got {text!r}"
        )
    return names


def _frame_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if len(counts) < 1 or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected frame counts such as 64,256, got {text!r}")
    return counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time convpipe against the I/O floor, dask-image, SciPy and OpenCV, and print the ratios.",
        epilog="Targets and the meaning of each row: benchmarks/README.md",
    )
    parser.add_argument("--frames", type=_positive, help="frames of the stack (default 32)")
    parser.add_argument("--size", type=_positive, help="height = width of a frame (default 2048)")
    parser.add_argument(
        "--chunk", type=_positive, default=1024, help="stored chunk (1, CHUNK, CHUNK) (default 1024)"
    )
    parser.add_argument("--repeats", type=_positive, help="timed repetitions after the warm-up (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated noise (default 0)")
    parser.add_argument(
        "--quick", action="store_true", help="small run: --frames 4 --size 512 --repeats 1 unless given"
    )
    parser.add_argument(
        "--only", type=_sections, default=None, help=f"comma-separated sections to time: {','.join(SECTIONS)}"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="where the generated stacks are cached and outputs written (default: bench-data/ in the repository)",
    )
    parser.add_argument(
        "--memory",
        action="store_true",
        help="measure the peak RSS of `convpipe run` on --memory-frames stacks (only this, unless --only is given)",
    )
    parser.add_argument(
        "--memory-frames",
        type=_frame_counts,
        default=[64, 256],
        help="frame counts of --memory (default 64,256)",
    )
    parser.add_argument(
        "--memory-size", type=_positive, default=2048, help="frame size of --memory (default 2048)"
    )
    parser.add_argument(
        "--floor-writer",
        choices=("store", "to_zarr"),
        default="store",
        help="how the I/O floor writes: da.store (blocks == stored chunks, default) or da.to_zarr "
        "(which rechunks to dask's 'auto' blocks first)",
    )
    parser.add_argument("--json", type=Path, help="also save the results to this JSON file")
    args = parser.parse_args(argv)
    quick = {"frames": 4, "size": 512, "repeats": 1} if args.quick else {}
    for name, default in (("frames", 32), ("size", 2048), ("repeats", 3)):
        if getattr(args, name) is None:
            setattr(args, name, quick.get(name, default))
    if args.size < 3 or args.memory_size < 3:
        parser.error("frames must be at least 3 x 3 pixels for a 3 x 3 kernel")
    if args.only is None:
        args.only = [] if args.memory else list(SECTIONS)
    args.data_dir = args.data_dir.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chunk = min(args.chunk, args.size)
    settings: dict[str, Any] = {
        "sections": args.only,
        "memory": args.memory,
        "data_dir": str(args.data_dir),
    }
    if args.only:
        settings.update(
            frames=args.frames,
            size=args.size,
            input_chunks=[1, chunk, chunk],
            repeats=args.repeats,
            seed=args.seed,
            floor_writer=args.floor_writer,
        )
    results = Results(machine_info(), settings)
    try:
        if args.only:
            print("data", flush=True)
            input_path = ensure_stack(args.data_dir, args.frames, args.size, args.chunk, args.seed)
            reference = Reference(input_path)
            print(f"checks (reference: {reference_name()}; rtol {RTOL:g})", flush=True)
            with scratch_dir(args.data_dir) as scratch:
                cases: list[Case] = []
                if "floor" in args.only:
                    cases.append(floor_case(input_path, reference, results, args, scratch))
                if "convpipe" in args.only:
                    cases += convpipe_cases(input_path, reference, results, args, scratch)
                if "daskimage" in args.only:
                    cases += filter(None, [daskimage_case(input_path, reference, results, args, scratch)])
                if cases:
                    print(f"timing {len(cases)} stack pipeline(s), {args.repeats} round(s)", flush=True)
                    time_cases(cases, args.repeats, results)
            if "core" in args.only:
                cases = core_cases(input_path, reference, results)
                print(f"timing {len(cases)} one-frame row(s), {args.repeats} round(s)", flush=True)
                time_cases(cases, args.repeats, results)
        if args.memory:
            print("memory", flush=True)
            bench_memory(results, args)
    except BenchmarkError as exc:
        print(f"\nMISMATCH, benchmark aborted: {exc}", file=sys.stderr)
        return 1
    settings["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    compute_ratios(results, args.only)
    print_report(results)
    if args.json:
        args.json.write_text(json.dumps(to_json(results), indent=2) + "\n", encoding="utf-8")
        print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
