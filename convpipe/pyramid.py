"""The multiscale pyramid: levels ``1..N`` of the output, each the 2 x 2 mean of the level below.

Level ``k`` halves the last two (spatial) axes of level ``k - 1``, floored
as ome-zarr-py's ``Scaler`` does, in one fixed summation order
(:func:`_mean_2x2`): the levels do not depend on the chunking. A write
task downsamples its own level-0 block: blocks hold a multiple of ``2**N``
pixels along y and x (the planner chooses them so), and a level-``k`` chunk
is the block shape divided by ``2**k``, so every stored chunk of every level
comes from exactly one block.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

AUTO = "auto"
AUTO_LARGEST_SIDE = 512
"""``pyramid: auto`` halves until the larger of y, x is at most this many pixels."""
MAX_LEVELS = 30


def parse_pyramid(value: Any) -> int | str:
    """``output.pyramid``: a number of levels ``0..MAX_LEVELS`` or ``"auto"``; ValueError otherwise."""
    if value == AUTO and isinstance(value, str):
        return AUTO
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_LEVELS:
        return value
    raise ValueError(
        f"must be a number of levels below level 0 (0 to {MAX_LEVELS}, 0 = none) or auto, got {value!r}"
    )


def levels_for(setting: int | str, frame: tuple[int, int]) -> int:
    """Levels below level 0 for an output frame of ``frame`` (y, x) pixels.

    ``auto``: halve until the larger side is at most :data:`AUTO_LARGEST_SIDE`
    (never down to an empty side). A number is checked: every level must keep
    at least one pixel along y and x (ValueError otherwise).

    Examples
    --------
    >>> levels_for("auto", (2046, 2046)), levels_for("auto", (512, 300)), levels_for(2, (10, 7))
    (2, 0, 2)
    """
    h, w = frame
    if setting == AUTO:
        levels = 0
        while max(h, w) >> levels > AUTO_LARGEST_SIDE and min(h, w) >> (levels + 1) >= 1:
            levels += 1
        return levels
    if min(h, w) >> setting < 1:
        most = max(0, min(h, w).bit_length() - 1)
        raise ValueError(
            f"{setting} levels would leave level {setting} of the {h} x {w} (y, x) output empty; "
            f"at most {most} fit"
        )
    return int(setting)


def level_shape(shape: tuple[int, ...], k: int) -> tuple[int, ...]:
    """Shape of level ``k`` of an output of ``shape``: the last two axes floored by ``2**k``."""
    return tuple(shape[:-2]) + tuple(n >> k for n in shape[-2:])


def pyramid_layout(
    shape: tuple[int, ...], chunks: tuple[int, ...], blocks: tuple[tuple[int, ...], ...], levels: int
) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
    """(shape, chunks) of levels ``1..levels`` of an output of ``shape``, Zarr ``chunks`` and Dask ``blocks``.

    A level's chunks are level 0's, with y and x the first block's divided by ``2**k``.
    """
    block = (blocks[-2][0], blocks[-1][0])
    return tuple(
        (level_shape(shape, k), tuple(chunks[:-2]) + tuple(max(1, b >> k) for b in block))
        for k in range(1, levels + 1)
    )


def level_transform(scale: list[float], translation: list[float], k: int) -> tuple[list[float], list[float]]:
    """OME-NGFF scale and translation of level ``k`` from level 0's.

    The last two axes get ``2**k`` times the scale; each level moves the
    translation by half a pixel of the level below (the centre of its 2 x 2
    window): ``t_k = t_0 + s_0 * (2**k - 1) / 2``.
    """
    factor = 2**k
    new_scale, new_translation = list(scale), list(translation)
    for axis in (-2, -1):
        new_scale[axis] = scale[axis] * factor
        new_translation[axis] = translation[axis] + scale[axis] * (factor - 1) / 2
    return new_scale, new_translation


def downsample_mean(block: np.ndarray) -> np.ndarray:
    """The 2 x 2 mean of ``block`` over its last two axes (floored sizes), in ``block``'s dtype.

    Compiled with Numba on first use (a plain loop, float64 sums in a
    fixed order, no ``fastmath``): several times faster than NumPy's
    strided slices, and no float64 copy of the block is made.

    Examples
    --------
    >>> downsample_mean(np.arange(12, dtype=np.float32).reshape(3, 4))
    array([[2.5, 4.5]], dtype=float32)
    """
    h, w = block.shape[-2:]
    frames = np.ascontiguousarray(block).reshape(-1, h, w)
    out = np.empty((frames.shape[0], h // 2, w // 2), dtype=block.dtype)
    _compiled_mean()(frames, out, block.dtype.kind in "iu")
    return out.reshape(block.shape[:-2] + out.shape[-2:])


def _mean_2x2(x, out, round_to_integer):
    """``out[f, i, j]`` = ``x[f, 2i:2i+2, 2j:2j+2]`` summed in float64 row by row, left to right, times 0.25.

    An integer ``out`` gets the mean rounded to the nearest integer, halves to even.
    """
    for f in range(out.shape[0]):
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                total = np.float64(x[f, 2 * i, 2 * j]) + np.float64(x[f, 2 * i, 2 * j + 1])
                total += np.float64(x[f, 2 * i + 1, 2 * j])
                total += np.float64(x[f, 2 * i + 1, 2 * j + 1])
                mean = total * 0.25
                out[f, i, j] = np.rint(mean) if round_to_integer else mean


@functools.cache
def _compiled_mean():
    import numba  # only when a pyramid is written: the config and the CLI stay light

    return numba.njit(nogil=True, cache=True)(_mean_2x2)


def write_levels(levels: tuple, block: np.ndarray, region: tuple[slice, ...]) -> None:
    """Write levels ``1..len(levels)`` of the level-0 ``block`` stored at ``region`` into the ``levels``.

    The block's y and x start must be multiples of ``2**len(levels)`` (the
    planner's blocks are), or its levels would straddle chunks of another block.
    """
    starts = [r.start for r in region[-2:]]
    level = block
    for k, array in enumerate(levels, start=1):
        if any(start % 2**k for start in starts):
            raise ValueError(
                f"a block starting at (y, x) {tuple(starts)} is not aligned with pyramid level {k}"
            )
        level = downsample_mean(level)
        if 0 in level.shape[-2:]:
            return  # a last block too thin for this level (and the ones above)
        spatial = tuple(slice(start >> k, (start >> k) + n) for start, n in zip(starts, level.shape[-2:]))
        array[tuple(region[:-2]) + spatial] = level


def pyramid_bytes(block_bytes: int, levels: int) -> int:
    """Peak extra bytes a write task holds for the levels of a level-0 block of ``block_bytes``.

    The levels themselves (a quarter, a sixteenth... of the block: under a
    third of it together), plus a contiguous copy of a block that is a
    transposed view (``combine: none`` with the kernel axis moved).
    """
    if not levels:
        return 0
    return block_bytes + block_bytes // 3 + 1
