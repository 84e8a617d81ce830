"""Time the compiled core against the NumPy core, OpenCV and an older compiled core, one frame, one thread.

    python benchmarks/kernels.py [--size 2048] [--rounds 11] [--old 91dac41 | --old none]

For each bank (Sobel magnitude, a 3-channel bank, a 5x5 4-kernel bank), pixel
dtype (float32, uint16) and stride (1, 2), on one ``size x size`` frame:

* ``new``: ``convpipe.core.correlate_block(..., backend="compiled")``;
* ``numpy``: the same with ``backend="numpy"`` (the reference);
* ``old``: the compiled core of git commit ``--old`` (default 91dac41, the
  last one with SIMD blocks), extracted from this repository into a
  temporary package ``convpipe_old`` and imported in this process;
* ``opencv``: for the Sobel pair at stride 1, ``cv2.filter2D`` twice and
  ``cv2.magnitude`` (one thread), cropped to the valid part.

Bits are checked first (new, numpy and old identical; OpenCV close), then
the calls are timed in interleaved rounds (every call once per round, in
turn), so that a busy machine slows all of them alike. The ratios are the
median over rounds of the per-round ratio; times are per-call medians.
Exits 1 if any two cores differ.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import io
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

import this_tree  # noqa: F401  (before convpipe: this checkout's package)
from convpipe.core import correlate_block

REPO = Path(__file__).resolve().parent.parent
SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
SOBEL = np.stack([SOBEL_X, SOBEL_X.T])[:, None]


def banks() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "Sobel magnitude": SOBEL,
        "3 channels, 3x3, 2 kernels, magnitude": rng.integers(-3, 4, (2, 3, 3, 3)).astype(np.float64),
        "5x5, 4 kernels, magnitude": rng.integers(-3, 4, (4, 1, 5, 5)).astype(np.float64),
    }


def old_core(commit: str, folder: Path):
    """``correlate_block_compiled`` of the core at ``commit``, as package ``convpipe_old`` under ``folder``."""
    files = ["convpipe/core.py", "convpipe/compiled.py", "convpipe/simd.py"]
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, *files], check=True, capture_output=True)
    package = folder / "convpipe_old"
    package.mkdir()
    (package / "__init__.py").write_text("")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        for member in tar.getmembers():
            if not member.isfile():  # pax headers, the convpipe/ folder
                continue
            text = tar.extractfile(member).read().decode()
            (package / Path(member.name).name).write_text(re.sub(r"\bconvpipe\b", "convpipe_old", text))
    sys.path.insert(0, str(folder))
    return importlib.import_module("convpipe_old.compiled").correlate_block_compiled


def opencv_sobel_magnitude(frame: np.ndarray) -> np.ndarray:
    import cv2

    gx = cv2.filter2D(frame, cv2.CV_32F, SOBEL_X.astype(np.float32), borderType=cv2.BORDER_REPLICATE)
    gy = cv2.filter2D(frame, cv2.CV_32F, SOBEL_X.T.astype(np.float32), borderType=cv2.BORDER_REPLICATE)
    return cv2.magnitude(gx, gy)[1:-1, 1:-1]


def time_interleaved(calls: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each entry, once per round, round-robin (after one untimed warm-up call each)."""
    for call in calls.values():
        call()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - started)
    return seconds


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def run(size: int, rounds: int, old) -> int:
    columns = ["new ms", "old ms", "numpy ms", "opencv ms", "new/old time", "opencv/new time"]
    print(f"one {size}x{size} frame, one thread; medians of {rounds} interleaved rounds")
    print(f"{'bank':40}{'pixels':>8}{'stride':>7}" + "".join(f"{c:>16}" for c in columns))
    rng = np.random.default_rng(0)
    status = 0
    for name, bank in banks().items():
        for dtype in (np.float32, np.uint16):
            frame = (rng.random((bank.shape[1], size, size)) * 4000).astype(dtype)
            for stride in (1, 2):
                calls = {
                    "new": lambda: correlate_block(frame, bank, (stride, stride), "magnitude", backend="compiled"),
                    "numpy": lambda: correlate_block(frame, bank, (stride, stride), "magnitude", backend="numpy"),
                }
                if old is not None:
                    calls["old"] = lambda: old(frame, bank, (stride, stride), "magnitude")
                results = {key: call() for key, call in calls.items()}
                if any(result.tobytes() != results["numpy"].tobytes() for result in results.values()):
                    print(f"{name}, {np.dtype(dtype).name}, stride {stride}: the cores differ", file=sys.stderr)
                    status = 1
                if bank is SOBEL and stride == 1 and importlib.util.find_spec("cv2") is not None:
                    calls["opencv"] = lambda: opencv_sobel_magnitude(frame[0])
                    np.testing.assert_allclose(calls["opencv"](), results["numpy"], rtol=1e-4, atol=1e-2)
                seconds = time_interleaved(calls, rounds)
                cells = [
                    *(f"{statistics.median(seconds[key]) * 1e3:.3f}" if key in seconds else "-" for key in ("new", "old", "numpy", "opencv")),
                    f"{median_ratio(seconds['new'], seconds['old']):.2f}" if "old" in seconds else "-",
                    f"{median_ratio(seconds['opencv'], seconds['new']):.2f}" if "opencv" in seconds else "-",
                ]
                print(f"{name:40}{np.dtype(dtype).name:>8}{stride:>7}" + "".join(f"{c:>16}" for c in cells))
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2048, help="height = width of the frame (default 2048)")
    parser.add_argument("--rounds", type=int, default=11, help="interleaved rounds (default 11)")
    parser.add_argument("--old", default="91dac41", help="git commit of the older core to compare, or 'none'")
    args = parser.parse_args()
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    with tempfile.TemporaryDirectory() as folder:
        old = None if args.old == "none" else old_core(args.old, Path(folder))
        return run(args.size, args.rounds, old)


if __name__ == "__main__":
    sys.exit(main())
