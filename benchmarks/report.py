"""The ratios and their targets, the machine, and the printed and JSON reports of a run.

To add a ratio, add a :class:`RatioDefinition` to :data:`RATIOS` (and the
section of any new stack row to :data:`STACK_ROW_SECTIONS`).
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convpipe_rows import package_folder
from convpipe_rows import version as convpipe_version
from results import Ratio, Results, Target

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RatioDefinition:
    """``t(numerator) / t(denominator)``, medians of two rows; "throughput" ratios put the peer on top."""

    name: str
    numerator: str
    denominator: str
    formula: str
    target: Target | None = None


RATIOS = (
    RatioDefinition(
        "convpipe / I/O floor (time)",
        "convpipe stride 1",
        "I/O floor (read, cast, write)",
        "t(convpipe s1) / t(floor)",
        Target(1.15, at_most=True),
    ),
    RatioDefinition(
        "convpipe / floor writing convpipe's bytes (time)",
        "convpipe stride 1",
        "I/O floor, convpipe's bytes (read input, write its output)",
        "t(convpipe s1) / t(same-bytes floor)",
        Target(0.90, at_most=True),
    ),
    RatioDefinition(
        "convpipe, zarr-python pipeline / I/O floor (time)",
        "convpipe stride 1, zarr-python pipeline",
        "I/O floor (read, cast, write)",
        "t(convpipe s1, zarr-python) / t(floor)",
    ),
    RatioDefinition(
        "convpipe zarrs / zarr-python pipeline (time)",
        "convpipe stride 1",
        "convpipe stride 1, zarr-python pipeline",
        "t(convpipe s1) / t(convpipe s1, zarr-python)",
    ),
    RatioDefinition(
        "I/O floor with zarrs / plain (time)",
        "I/O floor with zarrs (read, cast, write)",
        "I/O floor (read, cast, write)",
        "t(floor, zarrs) / t(floor)",
    ),
    RatioDefinition(
        "convpipe / I/O floor with zarrs (time)",
        "convpipe stride 1",
        "I/O floor with zarrs (read, cast, write)",
        "t(convpipe s1) / t(floor, zarrs)",
    ),
    RatioDefinition(
        "dask-image / convpipe (time)",
        "dask-image (2 x correlate, hypot)",
        "convpipe stride 1",
        "t(dask-image) / t(convpipe s1)",
        Target(1.8, at_most=False),
    ),
    RatioDefinition(
        "core / OpenCV (throughput)",
        "OpenCV filter2D x2 + magnitude",
        "convpipe core stride 1",
        "t(OpenCV) / t(core s1)",
        Target(2.5, at_most=False),
    ),
    RatioDefinition(
        "core stride 2 / stride 1 (time)",
        "convpipe core stride 2",
        "convpipe core stride 1",
        "t(core s2) / t(core s1)",
        Target(0.35, at_most=True),
    ),
    RatioDefinition(
        "core stride 2 / stride 1, stack dtype (time)",
        "convpipe core stride 2, uint16 frame",
        "convpipe core stride 1, uint16 frame",
        "t(core s2) / t(core s1), uint16",
        Target(0.35, at_most=True),
    ),
    RatioDefinition(
        "core / scipy.ndimage (throughput)",
        "scipy.ndimage.correlate x2 + hypot",
        "convpipe core stride 1",
        "t(scipy) / t(core s1)",
    ),
    RatioDefinition(
        "tiled TIFF / Zarr input (time)",
        "convpipe stride 1, tiled TIFF input",
        "convpipe stride 1, same data in Zarr",
        "t(TIFF input) / t(Zarr input)",
    ),
    RatioDefinition(
        "Sobel responses, exact integers / float32 (time)",
        "convpipe responses dtype auto",
        "convpipe responses dtype float32",
        "t(dtype auto) / t(float32), combine none",
    ),
    RatioDefinition(
        "sharded / unsharded output (time)",
        "convpipe stride 1, shards auto",
        "convpipe stride 1",
        "t(convpipe s1, shards) / t(convpipe s1)",
        Target(1.10, at_most=True),
    ),
    RatioDefinition(
        "convpipe stride 2 / stride 1 (time)",
        "convpipe stride 2",
        "convpipe stride 1",
        "t(convpipe s2) / t(convpipe s1)",
    ),
)

MEMORY_GROWTH_TARGET = Target(1.10, at_most=True)
"""Peak RSS of the largest stack over the smallest: memory must not grow with the stack."""
LARGEST_PEAK_GIB_TARGET = Target(1.5, at_most=True)

STACK_ROW_SECTIONS = {
    "I/O floor (read, cast, write)": "floor",
    "I/O floor with zarrs (read, cast, write)": "floor",
    "I/O floor, convpipe's bytes (read input, write its output)": "floor",
    "convpipe stride 1": "convpipe",
    "convpipe stride 1, zarr-python pipeline": "convpipe",
    "convpipe stride 2": "convpipe",
    "convpipe stride 1, shards auto": "convpipe",
    "dask-image (2 x correlate, hypot)": "daskimage",
    "convpipe stride 1, tiled TIFF input": "tiff",
    "convpipe stride 1, same data in Zarr": "tiff",
    "convpipe responses dtype float32": "dtypes",
    "convpipe responses dtype auto": "dtypes",
}
"""Section of each stack row; every other row belongs to ``core``."""


def compute_ratios(results: Results, sections: list[str]) -> None:
    """The ratios whose rows were both requested; ``n/a`` when a peer was not installed."""
    for ratio in RATIOS:
        rows = (ratio.numerator, ratio.denominator)
        if any(STACK_ROW_SECTIONS.get(row, "core") not in sections for row in rows):
            continue
        a, b = results.timing(ratio.numerator), results.timing(ratio.denominator)
        value = a.median / b.median if a and b and b.median > 0 else None
        results.ratios.append(Ratio(ratio.name, value, ratio.target, ratio.formula))
    if len(results.memory) >= 2:
        small, large = results.memory[0], results.memory[-1]
        results.ratios.append(
            Ratio(
                "peak RSS, large / small stack",
                large["peak_bytes"] / small["peak_bytes"],
                MEMORY_GROWTH_TARGET,
                f"peak({large['frames']} frames) / peak({small['frames']} frames)",
            )
        )
    if results.memory:
        results.ratios.append(
            Ratio(
                "peak RSS, largest run (GiB)",
                max(run["peak_bytes"] for run in results.memory) / 2**30,
                LARGEST_PEAK_GIB_TARGET,
                "max peak RSS of `convpipe run`",
            )
        )


# --------------------------------------------------------------------------- the machine


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, versions and the repository commit."""
    import dask
    import numba
    import zarr

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
        "load_average": load_average(),
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "dask": dask.__version__,
            "zarr": zarr.__version__,
            "numba": numba.__version__,
            "convpipe": convpipe_version(),
        },
        "convpipe_package": package_folder(),
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


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


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


# --------------------------------------------------------------------------- printed and saved


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
    print(f"convpipe  imported from {m.get('convpipe_package')}")
    if results.timings:
        _print_timings(results)
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
        width = max(50, *(len(r.name) for r in results.ratios))
        print(f"{'ratio':{width + 2}}{'value':>10}   {'target':10}{'':6}how")
        for r in results.ratios:
            value = "-" if r.value is None else f"{r.value:.2f}"
            target = r.target.text() if r.target else ""
            print(f"  {r.name:{width}}{value:>10}   {target:10}{r.verdict:6}{r.formula}")
    print("=" * 100)


def _print_timings(results: Results) -> None:
    """The timed rows under two headings: stack pipelines, then one frame in memory."""
    s = results.settings
    print()
    width = max(42, *(len(t.name) for t in results.timings))
    print(f"{'':{width + 2}}{'median s':>10}{'min s':>10}{'max s':>10}{'Mpx/s':>10}")
    headings = {
        "floor": f"stack pipelines, disk to disk ({s.get('frames')} frames, threads scheduler)",
        "core": f"one {s.get('size')}x{s.get('size')} float32 frame in memory, one thread (seconds per frame)",
    }
    for name, label in s.get("geometries", {}).items():
        headings[f"geometry {name}"] = f"geometry [{name}]: {label}, disk to disk, threads scheduler"
    shown = set()
    for timing in results.timings:
        group = timing.section if timing.section in ("core", *headings) else "floor"
        if group not in shown:
            shown.add(group)
            print(headings[group])
        print(
            f"  {timing.name:{width}}{timing.median:10.4g}{min(timing.seconds):10.4g}"
            f"{max(timing.seconds):10.4g}{timing.rate:10.1f}"
            + (f"   {timing.note}" if timing.note else "")
        )


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
        "geometry_peaks": results.geometry_peaks,
    }
