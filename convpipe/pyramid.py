"""The multiscale pyramid: levels ``1..N`` of the output, each the 2 x 2 mean of the level below.

Level ``k`` halves the two spatial axes (the last two axes of the output) of
level ``k - 1``; batch and channel axes are untouched. Sizes are floored, as
ome-zarr-py's ``Scaler`` does: level ``k`` has ``n // 2**k`` pixels along an
axis of ``n``, and an odd last row or column of a level is not part of the
level above it. Every pixel of level ``k`` is thus the mean of a whole 2 x 2
window of level ``k - 1`` as stored: the four values in float64, summed in
the order (0, 0), (0, 1), (1, 0), (1, 1), times 0.25, cast to the output
dtype (an integer output, rounded to the nearest integer, halves to even).
One fixed order makes the levels deterministic and independent of the
chunking.

The levels are built block by block as level 0 is written: a write task
downsamples its own level-0 block. Output blocks (all but the last along y
and x) hold a multiple of ``2**N`` pixels (the planner chooses them so), so a
block's region of level ``k`` starts at its level-0 start divided by ``2**k``
and the level-``k`` chunks (the level-0 block shape divided by ``2**k``) each
come from exactly one block: one writer per stored chunk, at every level.
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
    """The ``output.pyramid`` value: a number of levels ``0..MAX_LEVELS`` or ``"auto"``; ValueError otherwise."""
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


def level_chunks(chunks: tuple[int, ...], block: tuple[int, int], k: int) -> tuple[int, ...]:
    """Chunk shape of level ``k``: level 0's ``chunks``, with y, x the level-0 ``block`` shape divided by ``2**k``."""
    return tuple(chunks[:-2]) + tuple(max(1, b >> k) for b in block)


def pyramid_layout(
    shape: tuple[int, ...], chunks: tuple[int, ...], blocks: tuple[tuple[int, ...], ...], levels: int
) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
    """(shape, chunks) of levels ``1..levels`` of an output of ``shape``, Zarr ``chunks`` and Dask ``blocks``."""
    first_block = (blocks[-2][0], blocks[-1][0])
    return tuple((level_shape(shape, k), level_chunks(chunks, first_block, k)) for k in range(1, levels + 1))


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

    Compiled with Numba on first use (a plain loop, float64 sums in the
    documented order, no ``fastmath``): several times faster than NumPy's
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
    """``out[f, i, j]`` = the float64 mean of ``x[f, 2i:2i+2, 2j:2j+2]`` summed row by row, left to right."""
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
    """Write levels ``1..len(levels)`` of the level-0 ``block`` stored at ``region`` into the arrays ``levels``.

    The block's y and x start must be multiples of ``2**len(levels)`` (the
    planner's blocks are), or its levels would straddle chunks of another block.
    """
    level = block
    for k, array in enumerate(levels, start=1):
        starts = [r.start for r in region[-2:]]
        if any(start % 2**k for start in starts):
            raise ValueError(f"a block starting at (y, x) {tuple(starts)} is not aligned with pyramid level {k}")
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
