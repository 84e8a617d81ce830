"""Independent references for the correlation: a direct loop and SciPy."""

from __future__ import annotations

import numpy as np
from scipy.signal import correlate

SOBEL = np.array(
    [[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]], dtype=np.float64
)[:, None]
"""The Sobel bank (x then y) as (K, C, kh, kw), written out here, not taken from convpipe."""

LAPLACIAN = np.array([[[[0, 1, 0], [1, -4, 1], [0, 1, 0]]]], dtype=np.float64)
"""The 4-neighbour Laplacian as (K, C, kh, kw)."""


def correlate_loop(
    x: np.ndarray, w: np.ndarray, stride: tuple[int, int], dilation: tuple[int, int] = (1, 1)
) -> np.ndarray:
    """The formula, written out: x (..., C, H, W), w (K, C, kh, kw) -> (..., K, Ho, Wo), float64.

    ``out[..., k, i, j] = sum x[..., c, i*sy + u*dy, j*sx + v*dx] * w[k, c, u, v]``.
    """
    k_count, _, kh, kw = w.shape
    (sy, sx), (dy, dx) = stride, dilation
    kh_e, kw_e = dy * (kh - 1) + 1, dx * (kw - 1) + 1
    h, wd = x.shape[-2:]
    ho, wo = (h - kh_e) // sy + 1, (wd - kw_e) // sx + 1
    batch = x.shape[:-3]
    out = np.zeros(batch + (k_count, ho, wo))
    xf = x.astype(np.float64)
    for k in range(k_count):
        for i in range(ho):
            for j in range(wo):
                patch = xf[..., :, i * sy : i * sy + kh_e : dy, j * sx : j * sx + kw_e : dx]
                out[..., k, i, j] = (patch * w[k]).sum(axis=(-3, -2, -1))
    return out


NUMPY_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}
"""``numpy.pad``'s name of each ``padding_mode``."""


def correlate_padded(x, weights, stride, dilation, pads, mode) -> np.ndarray:
    """``x`` (..., H, W) padded by ``numpy.pad`` (top, bottom, left, right), then the direct loop: (..., K, Ho, Wo)."""
    top, bottom, left, right = pads
    batch = [(0, 0)] * (x.ndim - 2)
    padded = np.pad(x, batch + [(top, bottom), (left, right)], mode=NUMPY_MODES[mode])
    return correlate_loop(padded[..., None, :, :], weights, stride, dilation)


def correlate_scipy(x: np.ndarray, w: np.ndarray, stride: tuple[int, int]) -> np.ndarray:
    """``scipy.signal.correlate(mode="valid")[::sy, ::sx]`` summed over channels, float64."""
    sy, sx = stride
    batch = x.shape[:-3]
    flat = x.reshape((-1,) + x.shape[-3:]).astype(np.float64)
    frames = []
    for frame in flat:
        kernels = []
        for kernel in w:
            total = sum(correlate(frame[c], kernel[c], mode="valid") for c in range(w.shape[1]))
            kernels.append(total[::sy, ::sx])
        frames.append(np.stack(kernels))
    out = np.stack(frames)
    return out.reshape(batch + out.shape[1:])


def magnitude(responses: np.ndarray) -> np.ndarray:
    """sqrt of the sum of squares over the kernel axis (-3)."""
    return np.sqrt((responses**2).sum(axis=-3))
