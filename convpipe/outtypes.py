"""The output dtype: a float, or the smallest integer type that holds every response exactly.

With integer pixels, integer weights and ``combine: none`` each response is
an integer whose range follows from the weights and the pixel type alone:
``sum(w * hi for w > 0) + sum(w * lo for w < 0)`` at most, the mirror image at
least. An integer output is allowed only when that whole range fits it, so
it is exact for every input of that type (and so is every partial sum, each
tap adding a term of one sign toward one end of the range). Integers
compress far better than float32 responses of the same values.
"""

from __future__ import annotations

import numpy as np

FLOAT_DTYPES = ("float32", "float64")
INTEGER_DTYPES = ("int16", "int32")
OUTPUT_DTYPES = FLOAT_DTYPES + INTEGER_DTYPES + ("auto",)
"""What ``output.dtype`` accepts; ``auto`` is the smallest exact integer type, else float32."""


def response_range(weights: np.ndarray, pixel_dtype: np.dtype) -> tuple[int, int]:
    """The least and greatest response any kernel of ``weights`` (integers) gives on pixels of ``pixel_dtype``.

    Examples
    --------
    >>> sobel_x = np.array([[[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]]])
    >>> response_range(sobel_x, np.dtype(np.uint8))
    (-1020, 1020)
    """
    info = np.iinfo(np.uint8 if pixel_dtype == np.bool_ else pixel_dtype)
    lo, hi = int(info.min), int(info.max)
    kernels = np.asarray(weights).reshape(len(weights), -1).astype(np.int64).tolist()
    highest = max(sum(w * (hi if w > 0 else lo) for w in kernel) for kernel in kernels)
    lowest = min(sum(w * (lo if w > 0 else hi) for w in kernel) for kernel in kernels)
    return lowest, highest


def output_dtype(requested: str, weights: np.ndarray, pixel_dtype: np.dtype, combine: str) -> tuple[str, str]:
    """``(dtype, problem)`` for ``output.dtype: requested``; ``problem`` is "" or why the request cannot be met.

    Examples
    --------
    >>> sobel_x = np.array([[[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]]], dtype=float)
    >>> output_dtype("auto", sobel_x, np.dtype(np.uint8), "none")
    ('int16', '')
    >>> output_dtype("auto", sobel_x, np.dtype(np.uint16), "none")
    ('int32', '')
    >>> output_dtype("auto", sobel_x, np.dtype(np.float32), "none")
    ('float32', '')
    """
    if requested in FLOAT_DTYPES:
        return requested, ""
    pixel_dtype = np.dtype(pixel_dtype)
    if combine != "none":
        reason = f"combine: {combine} gives non-integer values"
    elif pixel_dtype.kind not in "biu":
        reason = f"the input holds {pixel_dtype} pixels, not integers"
    elif not np.array_equal(weights, np.round(weights)):
        reason = "the kernels have non-integer weights"
    elif pixel_dtype.itemsize > 4:
        reason = f"{pixel_dtype} pixels can exceed every integer output"
    else:
        lowest, highest = response_range(weights, pixel_dtype)
        fitting = [d for d in INTEGER_DTYPES if np.iinfo(d).min <= lowest and highest <= np.iinfo(d).max]
        smallest = (fitting + ["float32"])[0]
        if requested == "auto":
            return smallest, ""
        if requested in fitting:
            return requested, ""
        reason = f"responses on {pixel_dtype} pixels range over {lowest}..{highest}, beyond {requested}"
        return requested, f"{reason}; use {smallest} or auto"
    if requested == "auto":
        return "float32", ""
    return requested, f"{reason}; an integer output needs integer pixels, integer weights and combine: none"
