"""Start-up time: whole ``convpipe`` processes on the repository's sample, warm, median of ``--repeats``.

    python benchmarks/startup.py [--repeats 5] [--json startup.json]

Times each command as a fresh process from start to exit (what a user
waits for), after one warm-up run of every row (the OS file cache, Python's
bytecode cache and the compiled kernel's disk cache are then warm); the
timed repetitions go round-robin over the rows so that a change in
background load hits every row alike. ``run`` works on a scratch copy of
``configs/sobel.yaml`` and ``data/sample.zarr`` with ``--overwrite``; its
output is checked on every frame against the float64 reference of
``checks.py`` after the warm-up and after the last repetition (a mismatch
exits with code 1). The floor rows import what a run cannot avoid: Dask's
array module, zarr and Numba, and the same plus the cached Sobel kernel
loaded from Numba's disk cache. Which of the optional packages that
``dask.array`` imports when present (xarray, pandas, scipy) are installed
is printed with the table: they set the floor.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import this_tree  # noqa: E402, F401  (this checkout's convpipe in every process started)

from checks import BenchmarkError, compare, reference_magnitude  # noqa: E402

PYTHON = sys.executable
CONVPIPE = str(Path(sys.executable).parent / "convpipe")  # the console script of this environment
KERNEL_FROM_CACHE = (
    "import numpy as np, dask.array, zarr; from convpipe.core.compiled import compiled_kernel; "
    "from convpipe.kernels import BUILTIN_BANKS; "
    "compiled_kernel(BUILTIN_BANKS['sobel'].weights.astype(np.float32), (1, 1), 'magnitude', np.dtype('uint8'))"
)
OPTIONAL = ("xarray", "pandas", "scipy")


def rows(scratch: Path) -> list[tuple[str, list[str], Path]]:
    """(label, command, working folder) of every timed row."""
    return [
        ("python -c pass (interpreter)", [PYTHON, "-c", "pass"], REPO),
        ("python -c 'import convpipe'", [PYTHON, "-c", "import convpipe"], REPO),
        ("convpipe --help", [CONVPIPE, "--help"], REPO),
        ("convpipe kernels", [CONVPIPE, "kernels"], REPO),
        ("convpipe validate configs/sobel.yaml", [CONVPIPE, "validate", "configs/sobel.yaml"], REPO),
        ("convpipe inspect data/sample.zarr", [CONVPIPE, "inspect", "data/sample.zarr"], REPO),
        ("convpipe run configs/sobel.yaml --overwrite", [CONVPIPE, "run", "configs/sobel.yaml", "--overwrite"], scratch),
        ("floor: import dask.array, zarr, numba", [PYTHON, "-c", "import dask.array, zarr, numba"], REPO),
        ("floor: the same + Sobel kernel from cache", [PYTHON, "-c", KERNEL_FROM_CACHE], REPO),
    ]


def scratch_copy(folder: Path) -> Path:
    """``configs/sobel.yaml`` and ``data/sample.zarr`` copied under ``folder`` (their relative paths kept)."""
    (folder / "configs").mkdir(parents=True)
    shutil.copy(REPO / "configs" / "sobel.yaml", folder / "configs" / "sobel.yaml")
    shutil.copytree(REPO / "data" / "sample.zarr", folder / "data" / "sample.zarr")
    return folder


def check_run_output(scratch: Path) -> float:
    """Compare every frame of the run's output with the float64 reference; the worst relative error."""
    import zarr

    stack = zarr.open_array(str(scratch / "data" / "sample.zarr" / "0"), mode="r")
    written = zarr.open_array(str(scratch / "out" / "sobel.zarr" / "0"), mode="r")
    if written.shape != (stack.shape[0], stack.shape[1] - 2, stack.shape[2] - 2):
        raise BenchmarkError(f"convpipe run: output shape {written.shape} for input {stack.shape}")
    return max(compare(f"convpipe run, frame {t}", written[t], reference_magnitude(stack[t])) for t in range(stack.shape[0]))


def run_once(command: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds of one process, and its CPU seconds (user + system, all threads)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise BenchmarkError(f"{' '.join(command)} exited with {done.returncode}: {done.stderr[-2000:]}")
    return seconds, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def measure(repeats: int, scratch: Path) -> tuple[dict[str, list[float]], dict[str, list[float]], float]:
    """Wall and CPU seconds of every row, ``repeats`` times after a warm-up; the run's worst relative error."""
    table = rows(scratch)
    for _, command, cwd in table:  # warm-up
        run_once(command, cwd)
    error = check_run_output(scratch)
    wall: dict[str, list[float]] = {label: [] for label, _, _ in table}
    cpu: dict[str, list[float]] = {label: [] for label, _, _ in table}
    for _ in range(repeats):
        for label, command, cwd in table:
            seconds, used = run_once(command, cwd)
            wall[label].append(seconds)
            cpu[label].append(used)
    return wall, cpu, max(error, check_run_output(scratch))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of every row (default 5)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="convpipe-startup-") as folder:
        try:
            seconds, cpu, error = measure(args.repeats, scratch_copy(Path(folder)))
        except BenchmarkError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    installed = {name: importlib.util.find_spec(name) is not None for name in OPTIONAL}
    print(f"start-up, whole process, warm: wall median (min-max) of {args.repeats}, and the median CPU time "
          f"(user + system; steadier on a busy machine); load average {os.getloadavg()[0]:.2f}")
    print("optional packages dask.array imports when installed: "
          + ", ".join(f"{name} {'yes' if present else 'no'}" for name, present in installed.items()))
    width = max(len(label) for label in seconds)
    for label, values in seconds.items():
        print(f"  {label:<{width}}  {statistics.median(values):6.3f} s  ({min(values):.3f}-{max(values):.3f})"
              f"   cpu {statistics.median(cpu[label]):6.3f} s")
    print(f"convpipe run output: every frame within rtol 1e-5 of the float64 reference (worst {error:.1e})")
    if args.json:
        record = {"repeats": args.repeats, "installed": installed, "seconds": seconds, "cpu_seconds": cpu,
                  "median": {label: statistics.median(values) for label, values in seconds.items()},
                  "worst_relative_error": error}
        args.json.write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
