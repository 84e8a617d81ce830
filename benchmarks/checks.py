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

    def input_samples(self) -> list[tuple]:
        """Index tuples of the input that a copy of it (the I/O floor) is checked on: whole frames."""
        return [(t,) for t in self.frames]

    def check(self, label: str, written, stride: int = 1) -> float:
        """Compare the checked frames of a written output (subsampled by ``stride``); the worst relative error."""
        return max(
            compare(f"{label}, frame {t}", np.asarray(written[t]), self.magnitude(t)[::stride, ::stride])
            for t in self.frames
        )


SAMPLE_SIZE = 64
"""Side of a sampled output region of :class:`SampledReference`."""
MAX_EDGES_PER_AXIS = 12
"""Stored-chunk edges sampled along one axis at most (evenly spread, the first and last always)."""


class SampledReference:
    """Reference magnitudes of sampled regions, for outputs too large to check whole frames of.

    The input may be a stack ``(t, y, x)`` (its first and last frames are
    sampled) or one 2-D image. Regions of ``SAMPLE_SIZE`` squared output
    pixels sit at the four corners and astride the edges of the stored
    chunks (``chunk``), where convpipe's tiles and column bands also begin
    (they grow in whole stored chunks): the places a halo or a band edge
    could go wrong. Each region's reference is :func:`reference_magnitude`
    of the input region it depends on.
    """

    def __init__(self, input_path: Path, chunk: int) -> None:
        import zarr

        self.path = input_path
        self.array = zarr.open_array(str(input_path), mode="r")
        shape = self.array.shape
        self.frames = sorted({0, shape[0] - 1}) if len(shape) == 3 else [None]
        size = min(SAMPLE_SIZE, shape[-2] - 2, shape[-1] - 2)
        ys, xs = (_sample_starts(n - 2, chunk, size) for n in shape[-2:])
        self.regions = [
            (t, slice(y, y + size), slice(x, x + size)) for t in self.frames for y in ys for x in xs
        ]
        self._magnitudes: dict[int, np.ndarray] = {}

    @property
    def megapixels(self) -> float:
        return math.prod(self.array.shape) / 1e6

    def frames_text(self) -> str:
        where = "frame " + " and ".join(str(t) for t in self.frames) if self.frames != [None] else "the image"
        size = self.regions[0][1].stop - self.regions[0][1].start
        return (
            f"{len(self.regions)} regions of {size}x{size} outputs (corners, stored-chunk edges) of {where}"
        )

    @staticmethod
    def _index(t, ys: slice, xs: slice) -> tuple:
        return (ys, xs) if t is None else (t, ys, xs)

    def input_samples(self) -> list[tuple]:
        """The input under each region (its halo included)."""
        return [
            self._index(t, slice(ys.start, ys.stop + 2), slice(xs.start, xs.stop + 2))
            for t, ys, xs in self.regions
        ]

    def magnitude(self, i: int) -> np.ndarray:
        if i not in self._magnitudes:
            self._magnitudes[i] = reference_magnitude(self.array[self.input_samples()[i]])
        return self._magnitudes[i]

    def check(self, label: str, written, stride: int = 1) -> float:
        """Compare every sampled region of a stride-1 output; the worst relative error."""
        if stride != 1:
            raise ValueError(f"sampled regions are checked at stride 1 only, got stride {stride}")
        return max(
            compare(
                f"{label}, region {region[1:]} of frame {region[0]}",
                np.asarray(written[self._index(*region)]),
                self.magnitude(i),
            )
            for i, region in enumerate(self.regions)
        )


def _sample_starts(n: int, chunk: int, size: int) -> list[int]:
    """First output index of each sampled region along an axis of ``n`` outputs: both ends and
    astride the stored-chunk edges (at most :data:`MAX_EDGES_PER_AXIS` of them, evenly spread)."""
    edges = list(range(chunk, n, chunk))
    if len(edges) > MAX_EDGES_PER_AXIS:
        picks = np.linspace(0, len(edges) - 1, MAX_EDGES_PER_AXIS).round().astype(int)
        edges = [edges[i] for i in sorted(set(picks))]
    starts = {0, n - size} | {min(max(edge - size // 2, 0), n - size) for edge in edges}
    return sorted(starts)


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


def check_stack_output(
    label: str, written, reference: Reference | SampledReference, stride: int = 1
) -> float:
    """Compare what ``reference`` checks of a written output (frames or regions); the worst relative error."""
    return reference.check(label, written, stride)


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
