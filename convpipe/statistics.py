"""Value statistics of the written output, gathered block by block, for the viewers' display windows.

Each write task measures the block it has just written (:class:`BlockMeasure`):
per channel, the exact minimum and maximum of its finite values and a
histogram of its values sampled on a lattice fixed in output coordinates.
A histogram bin is the top 14 bits of a value's float32 representation (sign,
exponent and 5 mantissa bits: 32 bins per octave, each under 3.2 % of its
value wide), so merging is summing counts: one output gives the same merged
statistics whatever its chunking, its slabs or its resumes, without a second
pass over it. :func:`display_window` turns them into an OME ``omero`` window
whose start and end enclose the 0.1th and 99.9th percentiles.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

KEY_SHIFT = 18
"""float32 bits dropped from a value to make its bin (the lowest 18 of 23 mantissa bits)."""
N_BINS = 1 << (32 - KEY_SHIFT)
SIGN_BIT = N_BINS >> 1
FINITE_LIMIT = 0xFF << (23 - KEY_SHIFT)
"""Bins at or above this (sign bit cleared) hold inf and NaN, which windows ignore."""
LOW_PERCENTILE, HIGH_PERCENTILE = 0.1, 99.9
SAMPLE_TARGET = 1 << 22
"""About how many values per channel of the whole output the histograms sample."""
PIECE = 1 << 20
"""Values binned at a time (bounds the temporary memory of a measure)."""


def sample_step(output_shape: tuple[int, ...], channels: int) -> int:
    """The lattice step along y and x that samples about :data:`SAMPLE_TARGET` values per channel.

    Examples
    --------
    >>> sample_step((4, 512, 512), 1), sample_step((100, 8192, 8192), 2)
    (1, 29)
    """
    per_channel = math.prod(output_shape) / max(1, channels)
    return max(1, math.ceil(math.sqrt(per_channel / SAMPLE_TARGET)))


@dataclass(frozen=True)
class BlockMeasure:
    """Measures a written block: per channel min, max and a histogram of a fixed lattice (picklable).

    ``channel_axis`` is the output axis whose indices are channels (None: one
    channel, ``"0"``); ``step`` the lattice step on the two spatial (last)
    axes, counted from the output's origin so that any chunking samples the
    same values.
    """

    channel_axis: int | None
    step: int

    def __call__(self, block: np.ndarray, region: tuple[slice, ...]) -> dict[str, Any]:
        """Statistics of ``block``, found at ``region`` of the output: ``{channel: {min, max, bins}}``."""
        if self.channel_axis is None:
            planes, first = block[None], 0
        else:
            planes, first = np.moveaxis(block, self.channel_axis, 0), region[self.channel_axis].start
        offsets = tuple((-region[a].start) % self.step for a in (-2, -1))
        lattice = (Ellipsis, slice(offsets[0], None, self.step), slice(offsets[1], None, self.step))
        return {str(first + c): _measure(plane, plane[lattice]) for c, plane in enumerate(planes)}


def _measure(values: np.ndarray, sample: np.ndarray) -> dict[str, Any]:
    low, high = np.fmin.reduce(values, axis=None), np.fmax.reduce(values, axis=None)  # skip NaN, copy nothing
    if not (np.isfinite(low) and np.isfinite(high)):  # inf, or no number at all: the rare slow path
        finite = values[np.isfinite(values)]
        low, high = (finite.min(), finite.max()) if finite.size else (None, None)
    counts = np.zeros(N_BINS, dtype=np.int64)
    sample = np.ascontiguousarray(sample, dtype=np.float32).ravel()
    for start in range(0, sample.size, PIECE):
        keys = sample[start : start + PIECE].view(np.uint32) >> KEY_SHIFT
        counts += np.bincount(keys.astype(np.intp), minlength=N_BINS)
    keys = np.flatnonzero(counts)
    return {
        "min": None if low is None else float(low),
        "max": None if high is None else float(high),
        "bins": [keys.tolist(), counts[keys].tolist()],
    }


def merge(measures: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Several blocks' measures combined per channel: ``{channel: {"min", "max", "counts"}}``."""
    merged: dict[str, dict[str, Any]] = {}
    for measure in measures:
        for channel, m in measure.items():
            into = merged.setdefault(
                channel, {"min": None, "max": None, "counts": np.zeros(N_BINS, np.int64)}
            )
            if m["min"] is not None:
                into["min"] = m["min"] if into["min"] is None else min(into["min"], m["min"])
                into["max"] = m["max"] if into["max"] is None else max(into["max"], m["max"])
            keys, counts = m["bins"]
            np.add.at(into["counts"], np.asarray(keys, dtype=np.intp), np.asarray(counts, dtype=np.int64))
    return merged


def display_window(merged: dict[str, Any]) -> dict[str, float]:
    """An OME ``omero`` window: ``min``/``max`` of the data, ``start``/``end`` its robust range.

    ``start`` and ``end`` are the outer edges of the bins holding the
    :data:`LOW_PERCENTILE` and :data:`HIGH_PERCENTILE` percentiles of the
    sampled finite values, kept within ``[min, max]``; a constant channel
    gets ``end = start + 1`` so that a viewer's contrast range is never empty.

    Examples
    --------
    >>> values = np.arange(1001, dtype=np.float32)[None]
    >>> measured = BlockMeasure(None, 1)(values, (slice(0, 1), slice(0, 1001)))
    >>> window = display_window(merge([measured])["0"])
    >>> window["min"], window["start"], window["end"], window["max"]
    (0.0, 1.0, 1000.0, 1000.0)
    """
    low, high = merged["min"], merged["max"]
    if low is None:  # no finite value at all
        return {"min": 0.0, "max": 1.0, "start": 0.0, "end": 1.0}
    counts = merged["counts"]
    keys = np.flatnonzero(counts)
    keys = keys[(keys & (SIGN_BIT - 1)) < FINITE_LIMIT]
    start, end = low, high
    if keys.size:
        lower, upper = _bin_edges(keys)
        order = np.argsort(lower, kind="stable")
        cumulative = np.cumsum(counts[keys][order])
        total = cumulative[-1]
        first = np.searchsorted(cumulative, total * LOW_PERCENTILE / 100, side="right")
        last = np.searchsorted(cumulative, total * HIGH_PERCENTILE / 100, side="left")
        start = min(max(float(lower[order][first]), low), high)
        end = max(min(float(upper[order][min(last, keys.size - 1)]), high), low)
    if end <= start:
        start, end = low, high
    if end <= start:
        end = start + 1.0
    return {"min": low, "max": max(high, end), "start": start, "end": end}


def _bin_edges(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The smallest and largest value (as float64) of each bin."""
    magnitude = (keys & (SIGN_BIT - 1)).astype(np.uint32)
    near = (magnitude << KEY_SHIFT).view(np.float32).astype(np.float64)  # edge nearer zero
    far = ((magnitude + 1) << KEY_SHIFT).view(np.float32).astype(np.float64)  # next bin's near edge
    negative = (keys & SIGN_BIT) != 0
    return np.where(negative, -far, near), np.where(negative, -near, far)
