"""The block contract and its NumPy reference implementation.

"Convolution" is what CNNs call convolution: valid cross-correlation with a
stride. For a block ``x`` of shape ``(..., C, H, W)`` and a kernel bank ``w``
of shape ``(K, C, kh, kw)``::

    out[..., k, i, j] = sum_c sum_u sum_v x[..., c, i*sy + u, j*sx + v] * w[k, c, u, v]
    for 0 <= i < output_length(H, kh, sy)  and  0 <= j < output_length(W, kw, sx)

``combine="magnitude"`` returns ``sqrt(sum_k out[..., k, :, :] ** 2)`` without
the kernel axis.

Every output pixel is summed in one fixed order, in the output dtype, with
one rounding per operation::

    acc = 0
    for c, u, v (row-major), skipping zero weights:
        acc += dtype(x[c, i*sy + u, j*sx + v]) * w[k, c, u, v]
    magnitude = sqrt(acc_0 * acc_0 + acc_1 * acc_1 + ...)   # left to right

so the value of a pixel does not depend on which block it was computed in
(chunked and unchunked results are bit-identical), and every backend returns
the same bits. Integer data with integer weights give the exact value of the
formula as long as the sums are representable in the output dtype. Skipping
zero weights also means a NaN or infinite pixel under a zero weight does not
reach the result.
"""

from __future__ import annotations

import numpy as np

from convpipe.geometry import COMBINES, Combine, output_length

#: Output (and accumulation) dtypes.
OUTPUT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_block_arguments(
    block: np.ndarray,
    weights: np.ndarray,
    stride: tuple[int, int],
    combine: str,
    dtype: np.dtype,
) -> tuple[int, int]:
    """Raise ``ValueError`` for arguments no backend can correlate; return the output's ``(Ho, Wo)``."""
    if dtype not in OUTPUT_DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if combine not in COMBINES:
        raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")
    if len(stride) != 2 or min(stride) < 1:
        raise ValueError(f"stride must be positive integers (sy, sx), got {stride}")
    if weights.ndim != 4 or 0 in weights.shape[2:]:
        raise ValueError(f"weights must have shape (K, C, kh, kw) with kh, kw >= 1, got {weights.shape}")
    if combine == "magnitude" and weights.shape[0] == 0:
        raise ValueError("combine='magnitude' needs at least one kernel, got an empty bank")
    if block.ndim < 3:
        raise ValueError(f"block must have shape (..., C, H, W), got {block.shape}")
    if block.dtype.kind not in "biuf":
        raise TypeError(f"block must hold real numbers, got dtype {block.dtype}")
    n_channels, kh, kw = weights.shape[1:]
    if block.shape[-3] != n_channels:
        raise ValueError(f"block has {block.shape[-3]} channels, kernel bank has {n_channels}")
    (h, w), (sy, sx) = block.shape[-2:], stride
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
) -> np.ndarray:
    """Valid strided cross-correlation of one block with a bank, in NumPy.

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
    combine : {"none", "magnitude"}
        ``"none"`` keeps one output channel per kernel (shape
        ``(..., K, Ho, Wo)``); ``"magnitude"`` returns the root of the sum of
        squares over the bank (shape ``(..., Ho, Wo)``).
    dtype : float32 or float64
        Accumulation and output dtype.

    Examples
    --------
    >>> x = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    >>> w = np.ones((1, 1, 3, 3))
    >>> correlate_block_numpy(x, w)
    array([[[45., 54.],
            [81., 90.]]], dtype=float32)
    """
    dtype = np.dtype(dtype)
    ho, wo = check_block_arguments(block, weights, stride, combine, dtype)
    n_kernels, n_channels, kh, kw = weights.shape
    sy, sx = stride
    w = weights.astype(dtype, copy=False)

    responses = np.zeros(block.shape[:-3] + (n_kernels, ho, wo), dtype=dtype)
    for k in range(n_kernels):
        acc = responses[..., k, :, :]
        for c in range(n_channels):
            for u in range(kh):
                for v in range(kw):
                    weight = w[k, c, u, v]
                    if weight == 0:
                        continue
                    tap = block[..., c, u : u + (ho - 1) * sy + 1 : sy, v : v + (wo - 1) * sx + 1 : sx]
                    acc += tap.astype(dtype, copy=False) * weight
    if combine == "none":
        return responses
    magnitude = responses[..., 0, :, :] * responses[..., 0, :, :]
    for k in range(1, n_kernels):
        magnitude += responses[..., k, :, :] * responses[..., k, :, :]
    return np.sqrt(magnitude, out=magnitude)
