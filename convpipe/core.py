"""The convolution core: one block in, one block out, NumPy only (no Dask).

"Convolution" is what CNNs call convolution: valid cross-correlation with a
stride. For a block ``x`` of shape ``(..., C, H, W)`` and a kernel bank ``w``
of shape ``(K, C, kh, kw)``::

    out[..., k, i, j] = sum_c sum_u sum_v x[..., c, i*sy + u, j*sx + v] * w[k, c, u, v]
    for 0 <= i <= (H - kh) // sy  and  0 <= j <= (W - kw) // sx

``combine="magnitude"`` returns ``sqrt(sum_k out[..., k, :, :] ** 2)`` without
the kernel axis.

Every output pixel is summed in one fixed order (``c``, then ``u``, then
``v``; zero weights skipped) in the output dtype, so the value of a pixel does
not depend on which block it was computed in: chunked and unchunked results
are bit-identical. Integer data with integer weights give the exact formula
value as long as the sums are representable in the output dtype.

Two implementations share these semantics: :func:`correlate_block_numpy`
(plain NumPy, one vectorised pass per kernel tap) and the compiled core in
:mod:`convpipe.compiled` (one fused pass per row for the whole bank).
:func:`correlate_block` picks the compiled one when it is available.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Combine = Literal["none", "magnitude"]


def output_shape(
    block_shape: tuple[int, ...],
    kernel_shape: tuple[int, int],
    stride: tuple[int, int],
) -> tuple[int, int]:
    """Spatial shape of the valid, strided output of a block.

    Examples
    --------
    >>> output_shape((4, 4), (3, 3), (1, 1))
    (2, 2)
    >>> output_shape((7, 8), (3, 2), (2, 3))
    (3, 3)
    """
    (h, w), (kh, kw), (sy, sx) = block_shape[-2:], kernel_shape, stride
    return (h - kh) // sy + 1, (w - kw) // sx + 1


def check_block_arguments(
    block: np.ndarray,
    weights: np.ndarray,
    stride: tuple[int, int],
    combine: str,
    dtype: np.dtype,
) -> None:
    """Raise ``ValueError`` for arguments no core can correlate (shared by both cores)."""
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if combine not in ("none", "magnitude"):
        raise ValueError(f"combine must be 'none' or 'magnitude', got {combine!r}")
    if min(stride) < 1:
        raise ValueError(f"stride must be positive integers (sy, sx), got {stride}")
    if weights.ndim != 4 or 0 in weights.shape[2:]:
        raise ValueError(f"weights must have shape (K, C, kh, kw) with kh, kw >= 1, got {weights.shape}")
    if combine == "magnitude" and weights.shape[0] == 0:
        raise ValueError("combine='magnitude' needs at least one kernel, got an empty bank")
    if block.ndim < 3:
        raise ValueError(f"block must have shape (..., C, H, W), got {block.shape}")
    n_channels, kh, kw = weights.shape[1:]
    if block.shape[-3] != n_channels:
        raise ValueError(f"block has {block.shape[-3]} channels, kernel bank has {n_channels}")
    ho, wo = output_shape(block.shape, (kh, kw), stride)
    if ho <= 0 or wo <= 0:
        raise ValueError(f"block {block.shape[-2:]} is smaller than the kernel {(kh, kw)}")


def correlate_block_numpy(
    block: np.ndarray,
    weights: np.ndarray,
    stride: tuple[int, int] = (1, 1),
    combine: Combine = "none",
    dtype: np.dtype | type = np.float32,
) -> np.ndarray:
    """Valid strided cross-correlation of one block with a bank, in NumPy.

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
    check_block_arguments(block, weights, stride, combine, dtype)
    n_kernels, n_channels, kh, kw = weights.shape
    sy, sx = stride
    ho, wo = output_shape(block.shape, (kh, kw), stride)
    batch_shape = block.shape[:-3]
    w = weights.astype(dtype, copy=False)

    responses = np.zeros(batch_shape + (n_kernels, ho, wo), dtype=dtype)
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


def correlate_block(
    block: np.ndarray,
    weights: np.ndarray,
    stride: tuple[int, int] = (1, 1),
    combine: Combine = "none",
    dtype: np.dtype | type = np.float32,
) -> np.ndarray:
    """Valid strided cross-correlation of one block; the fastest exact core.

    Same contract as :func:`correlate_block_numpy`; uses the compiled core of
    :mod:`convpipe.compiled` when Numba is importable.
    """
    try:
        from convpipe.compiled import correlate_block_compiled
    except ImportError:  # Numba missing: the NumPy core gives the same bits
        return correlate_block_numpy(block, weights, stride, combine, dtype)
    return correlate_block_compiled(block, weights, stride, combine, dtype)
