"""The float64 reference every row is checked against, and the comparison itself.

The reference is written independently of convpipe: the Sobel bank is spelled
out here and the correlation is SciPy's (or plain NumPy slices without SciPy).
A row whose output disagrees raises :class:`BenchmarkError`, which aborts the
run with exit code 1: the speed of a wrong answer is worthless.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
SOBEL_Y = SOBEL_X.T.copy()
SOBEL_BANK = np.stack([SOBEL_X, SOBEL_Y])[:, None]
"""``(K=2, C=1, 3, 3)``: written out here, independently of ``convpipe.kernels``."""

RTOL = 1e-5
"""Relative tolerance of a float32 result against the float64 reference."""
ATOL_OF_PEAK = 1e-6
"""Absolute tolerance, as a fraction of the reference's largest value (for pixels near 0)."""


class BenchmarkError(Exception):
    """A pipeline failed or disagreed with the reference: the run is aborted."""


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
    """Reference magnitudes of the frames that every pipeline is checked on: the first and the last."""

    def __init__(self, input_path: Path) -> None:
        import zarr

        self.path = input_path
        self.array = zarr.open_array(str(input_path), mode="r")
        frames = self.array.shape[0]
        self.frames = sorted({0, frames - 1})
        self._magnitudes: dict[int, np.ndarray] = {}

    def magnitude(self, t: int) -> np.ndarray:
        if t not in self._magnitudes:
            self._magnitudes[t] = reference_magnitude(self.array[t])
        return self._magnitudes[t]

    @property
    def megapixels(self) -> float:
        """Pixels of the whole stack, in millions: what one run of a stack pipeline processes."""
        return math.prod(self.array.shape) / 1e6

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


def check_stack_output(label: str, written, reference: Reference, stride: int = 1) -> float:
    """Compare the checked frames of a written stack (subsampled by ``stride``); the worst relative error."""
    return max(
        compare(f"{label}, frame {t}", np.asarray(written[t]), reference.magnitude(t)[::stride, ::stride])
        for t in reference.frames
    )


METADATA_FILES = {"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"}


def stored_chunks_digest(array_folder: Path) -> str:
    """A hash of every stored chunk file (name and bytes) under a Zarr array's folder; metadata and
    convpipe's completion records left out, so that two writers of the same values can be compared."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(array_folder.rglob("*")):
        relative = path.relative_to(array_folder)
        if path.is_file() and path.name not in METADATA_FILES and ".convpipe-done" not in relative.parts:
            digest.update(str(relative).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


class SameBytes:
    """Rows that must store identical chunk bytes (e.g. one pipeline run with both codec pipelines)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.digests: dict[str, str] = {}

    def record(self, row: str, array_folder: Path) -> None:
        """Remember ``row``'s stored chunks; :class:`BenchmarkError` once two rows differ."""
        self.digests[row] = stored_chunks_digest(array_folder)
        if len(set(self.digests.values())) > 1:
            raise BenchmarkError(f"{self.label}: {' and '.join(self.digests)} stored different bytes")

    def text(self) -> str:
        return f"{self.label}: {' and '.join(self.digests)} stored identical chunk bytes"
