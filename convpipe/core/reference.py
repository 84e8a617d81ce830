"""The block contract and its NumPy reference implementation.

"Convolution" is what CNNs call convolution: valid cross-correlation with a
stride and a dilation. For a block ``x`` of shape ``(..., C, H, W)`` and a
kernel bank ``w`` of shape ``(K, C, kh, kw)``::

    out[..., k, i, j] = sum_c sum_u sum_v x[..., c, i*sy + u*dy, j*sx + v*dx] * w[k, c, u, v]
    for 0 <= i < output_length(H, dy*(kh-1) + 1, sy), 0 <= j < output_length(W, dx*(kw-1) + 1, sx)

``combine="magnitude"`` returns ``sqrt(sum_k out[..., k, :, :] ** 2)``,
``combine="direction"`` (two kernels) the angle ``atan2(out_1, out_0)`` in
``(-pi, pi]``, 0 where both are 0, both without the kernel axis. Integer
outputs wrap (the exact sum modulo ``2**bits``; :mod:`convpipe.outtypes`
allows only sums that fit). Every output
pixel is computed in one fixed order, in the output dtype, with one rounding
per operation (the angle: the C library's ``atan2`` in float64, as Numba
calls it; NumPy's ``arctan2`` differs in the last bit; ``+ 0`` makes a -0
+0, as IEEE ``atan2(+0, -0)`` is pi)::

    acc = 0
    for c, u, v (row-major), skipping zero weights:
        acc += dtype(x[c, i*sy + u*dy, j*sx + v*dx]) * w[k, c, u, v]
    magnitude = sqrt(acc_0 * acc_0 + acc_1 * acc_1 + ...)   # left to right
    direction = dtype(math.atan2(float64(acc_1 + 0), float64(acc_0 + 0)))

so the value of a pixel does not depend on which block it was computed in
(chunked and unchunked results are bit-identical), and every backend returns
the same bits. Integer data with integer weights give the exact value of the
formula as long as the sums are representable in the output dtype. Skipping
zero weights also means a NaN or infinite pixel under a zero weight does not
reach the result.
"""

from __future__ import annotations

import math

import numpy as np

from convpipe.geometry import COMBINES, Combine, output_length

OUTPUT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int16), np.dtype(np.int32))


def check_block_arguments(
    block: np.ndarray, weights: np.ndarray, stride: tuple[int, int], combine: str, dtype: np.dtype, dilation=(1, 1)
) -> tuple[int, int]:
    """Raise ``ValueError`` for arguments no backend can correlate; return the output's ``(Ho, Wo)``."""
    if dtype not in OUTPUT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(d.name for d in OUTPUT_DTYPES)}, got {dtype}")
    if combine not in COMBINES:
        raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")
    for name, pair in (("stride", stride), ("dilation", dilation)):
        if len(pair) != 2 or min(pair) < 1:
            raise ValueError(f"{name} must be positive integers, got {pair}")
    if weights.ndim != 4 or 0 in weights.shape[2:]:
        raise ValueError(f"weights must have shape (K, C, kh, kw) with kh, kw >= 1, got {weights.shape}")
    if (combine == "direction" and weights.shape[0] != 2) or (combine == "magnitude" and weights.shape[0] == 0):
        raise ValueError(f"combine={combine!r} cannot combine a bank of {weights.shape[0]} kernels")
    if block.ndim < 3:
        raise ValueError(f"block must have shape (..., C, H, W), got {block.shape}")
    if block.dtype.kind not in "biuf":
        raise TypeError(f"block must hold real numbers, got dtype {block.dtype}")
    if dtype.kind == "i" and (combine != "none" or block.dtype.kind == "f" or np.any(weights % 1 != 0)):
        raise ValueError(f"an {dtype} output needs integer pixels and weights and combine='none'")
    n_channels, kh, kw = weights.shape[1:]
    if block.shape[-3] != n_channels:
        raise ValueError(f"block has {block.shape[-3]} channels, kernel bank has {n_channels}")
    (h, w), (sy, sx), (dy, dx) = block.shape[-2:], stride, dilation
    kh, kw = dy * (kh - 1) + 1, dx * (kw - 1) + 1
    ho, wo = output_length(h, kh, sy), output_length(w, kw, sx)
    if ho <= 0 or wo <= 0:
        raise ValueError(f"block {block.shape[-2:]} is smaller than the kernel {(kh, kw)}")
    return ho, wo


def correlate_block_numpy(
    block: np.ndarray,
    weights: np.ndarray,
    stride: tuple[int, int] = (1, 1),
    combine: Combine = "none",
    dtype: np.dtype | type = np.float32,
    dilation: tuple[int, int] = (1, 1),
) -> np.ndarray:
    """Valid strided, dilated cross-correlation of one block with a bank, in NumPy.

    One vectorised pass per kernel tap: the reference every other backend
    must match bit for bit.

    Parameters
    ----------
    block : ndarray, shape (..., C, H, W)
        Input pixels; any real dtype. Read as they are and converted to
        ``dtype`` tap by tap, so integer inputs never wrap.
    weights : ndarray, shape (K, C, kh, kw)
        The kernel bank, in correlation orientation.
    stride : (sy, sx)
        Step of the kernel in pixels, both >= 1.
    combine : {"none", "magnitude", "direction"}
        ``"none"`` keeps one output channel per kernel (shape
        ``(..., K, Ho, Wo)``); ``"magnitude"`` returns the root of the sum of
        squares over the bank, ``"direction"`` the angle of two responses
        (shape ``(..., Ho, Wo)``).
    dtype : float32, float64, int16 or int32
        Accumulation and output dtype (integers: for integer pixels and weights, ``combine="none"``).
    dilation : (dy, dx)
        Spacing of the kernel's taps in pixels, both >= 1.

    Examples
    --------
    >>> x = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    >>> w = np.ones((1, 1, 3, 3))
    >>> correlate_block_numpy(x, w)
    array([[[45., 54.],
            [81., 90.]]], dtype=float32)
    """
    dtype = np.dtype(dtype)
    ho, wo = check_block_arguments(block, weights, stride, combine, dtype, dilation)
    n_kernels, n_channels, kh, kw = weights.shape
    (sy, sx), (dy, dx) = stride, dilation
    w = weights.astype(dtype, copy=False)

    responses = np.zeros(block.shape[:-3] + (n_kernels, ho, wo), dtype=dtype)
    for k in range(n_kernels):
        acc = responses[..., k, :, :]
        for c, u, v in np.ndindex(n_channels, kh, kw):  # row-major: the contract's order
            weight = w[k, c, u, v]
            if weight == 0:
                continue
            tap = block[..., c, u * dy :: sy, v * dx :: sx][..., :ho, :wo]
            acc += tap.astype(dtype, copy=False) * weight
    return combine_responses(responses, combine)


_ATAN2 = np.frompyfunc(math.atan2, 2, 1)


def combine_responses(responses: np.ndarray, combine: Combine) -> np.ndarray:
    """The output for ``combine`` from responses ``(..., K, Ho, Wo)`` (a direction: ``math.atan2`` per pixel)."""
    if combine == "none":
        return responses
    first = responses[..., 0, :, :]
    if combine == "direction":
        angle = _ATAN2(responses[..., 1, :, :].astype(np.float64) + 0.0, first.astype(np.float64) + 0.0)
        return angle.astype(responses.dtype)
    magnitude = first * first
    for k in range(1, responses.shape[-3]):
        magnitude += responses[..., k, :, :] * responses[..., k, :, :]
    return np.sqrt(magnitude, out=magnitude)
