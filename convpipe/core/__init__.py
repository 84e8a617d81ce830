"""The convolution core: one block in, one block out (no Dask).

The contract (formula, summation order, argument checks) and the NumPy
reference are :mod:`convpipe.core.reference`; :mod:`convpipe.core.compiled`
returns the same bits from generated, Numba-compiled loops.
:func:`correlate_block` runs the ``backend`` argument, else the one named by
``$CONVPIPE_CORE``, else ``"compiled"`` (``"numpy"`` is 15-40x slower: it is
the reference, and a baseline for benchmarks).
"""

from __future__ import annotations

import os

import numpy as np

from convpipe.core.reference import check_block_arguments, correlate_block_numpy
from convpipe.geometry import Combine

__all__ = ["BACKENDS", "BACKEND_ENV", "check_block_arguments", "correlate_block", "correlate_block_numpy"]

#: Environment variable naming the default backend.
BACKEND_ENV = "CONVPIPE_CORE"
BACKENDS = ("compiled", "numpy")


def correlate_block(
    block: np.ndarray,
    weights: np.ndarray,
    stride: tuple[int, int] = (1, 1),
    combine: Combine = "none",
    dtype: np.dtype | type = np.float32,
    *,
    dilation: tuple[int, int] = (1, 1),
    backend: str | None = None,
) -> np.ndarray:
    """Valid strided, dilated cross-correlation of one block with a bank.

    Same parameters and result as
    :func:`~convpipe.core.reference.correlate_block_numpy`, computed by
    ``backend`` (``"compiled"`` or ``"numpy"``; default ``$CONVPIPE_CORE``,
    else ``"compiled"``). Every backend returns the same bits.

    Examples
    --------
    >>> x = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    >>> correlate_block(x, np.ones((1, 1, 3, 3)), backend="compiled")
    array([[[45., 54.],
            [81., 90.]]], dtype=float32)
    """
    name = "backend" if backend else BACKEND_ENV
    backend = backend or os.environ.get(BACKEND_ENV) or "compiled"
    if backend not in BACKENDS:
        raise ValueError(f"{name} must be one of {BACKENDS}, got {backend!r}")
    if backend == "numpy":
        return correlate_block_numpy(block, weights, stride, combine, dtype, dilation)
    from convpipe.core.compiled import correlate_block_compiled  # numba loads on first use only

    return correlate_block_compiled(block, weights, stride, combine, dtype, dilation)
