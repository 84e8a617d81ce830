"""Kernel banks: the built-in gradient banks and user-supplied ones.

Every bank is stored in *correlation* orientation (the kernel is slid over the
image as it is, never flipped) and unnormalised, as a float64 array of shape
``(K, C, kh, kw)``. Built-in banks have ``C == 1``; a one-channel bank is
applied to every input channel and the products summed (see
:meth:`KernelBank.for_channels`).

The orientation of each built-in bank (the sign of its responses) is in
:data:`BANK_ORIENTATION`, which ``convpipe kernels`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class KernelBank:
    """A named stack of kernels of one shape.

    Attributes
    ----------
    names : tuple of str
        One name per kernel, in output order.
    weights : ndarray, shape (K, C, kh, kw), float64
        The kernels in correlation orientation.
    """

    names: tuple[str, ...]
    weights: np.ndarray

    def __post_init__(self) -> None:
        if self.weights.ndim != 4 or self.weights.shape[0] != len(self.names):
            raise ValueError(f"weights of shape {self.weights.shape} do not match {len(self.names)} names")
        self.weights.setflags(write=False)

    @property
    def kernel_shape(self) -> tuple[int, int]:
        """``(kh, kw)``."""
        return self.weights.shape[2], self.weights.shape[3]

    @property
    def channels(self) -> int:
        """Number of input channels per kernel (1 for 2-D kernels)."""
        return self.weights.shape[1]

    def for_channels(self, channels: int) -> np.ndarray:
        """The ``(K, channels, kh, kw)`` weights for an input with ``channels`` channels.

        A one-channel bank is repeated over the channels (each channel is
        correlated with the same kernel and the results are summed); a bank
        with several channels must match exactly.
        """
        if self.channels == channels:
            return self.weights
        if self.channels == 1:
            return np.repeat(self.weights, channels, axis=1)
        raise ValueError(f"kernels have {self.channels} channels, the input has {channels}")

    def describe(self) -> dict:
        """Plain-JSON description (names and nested weight lists), for attributes."""
        return {"names": list(self.names), "weights": self.weights.tolist()}


def _xy_bank(prefix: str, x_kernel: list[list[float]]) -> KernelBank:
    """An x/y gradient pair: ``x_kernel`` and its transpose."""
    gx = np.asarray(x_kernel, dtype=np.float64)
    return KernelBank((f"{prefix}-x", f"{prefix}-y"), np.stack([gx, gx.T])[:, None])


BUILTIN_BANKS: dict[str, KernelBank] = {
    "sobel": _xy_bank("sobel", [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]),
    "scharr": _xy_bank("scharr", [[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]]),
    "prewitt": _xy_bank("prewitt", [[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]]),
    "roberts": KernelBank(
        ("roberts-d1", "roberts-d2"),
        np.array([[[-1, 0], [0, 1]], [[0, -1], [1, 0]]], dtype=np.float64)[:, None],
    ),
    "laplacian": KernelBank(
        ("laplacian",),
        np.array([[[0, 1, 0], [1, -4, 1], [0, 1, 0]]], dtype=np.float64)[:, None],
    ),
}

_XY_ORIENTATION = "x: + for dark-to-bright left-to-right; y: + for dark-to-bright top-to-bottom"
BANK_ORIENTATION: dict[str, str] = {
    "sobel": _XY_ORIENTATION,
    "scharr": _XY_ORIENTATION,
    "prewitt": _XY_ORIENTATION,
    "roberts": "d1: + when bottom-right is brighter than top-left; d2: + when bottom-left "
    "is brighter than top-right",
    "laplacian": "+ on the dark side of an edge, - on the bright side, 0 on flat areas",
}
"""The sign of each built-in bank's responses; "dark-to-bright left-to-right" is an image dark on the
left and bright on the right."""


def as_bank(kernels: object) -> KernelBank:
    """A :class:`KernelBank` from any of the forms :func:`convpipe.correlate` accepts.

    ``kernels`` is a built-in bank name (``"sobel"``, ...), a ``KernelBank``,
    an array of weights shaped ``(kh, kw)``, ``(K, kh, kw)`` or
    ``(K, C, kh, kw)`` (kernels named ``kernel0``, ``kernel1``, ...), a list of
    ``(name, weights)`` pairs or a mapping ``name -> weights`` (each weights
    ``(kh, kw)`` or ``(C, kh, kw)``). Raises ``TypeError`` or ``ValueError``.

    Examples
    --------
    >>> as_bank("sobel").names
    ('sobel-x', 'sobel-y')
    >>> as_bank({"box": np.ones((3, 3))}).weights.shape
    (1, 1, 3, 3)
    """
    if isinstance(kernels, KernelBank):
        return kernels
    if isinstance(kernels, str):
        if kernels not in BUILTIN_BANKS:
            raise ValueError(f"kernels: unknown bank {kernels!r}; built-in banks: {', '.join(BUILTIN_BANKS)}")
        return BUILTIN_BANKS[kernels]
    if isinstance(kernels, dict):
        pairs = list(kernels.items())
    elif (
        isinstance(kernels, (list, tuple))
        and kernels
        and all(isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) for item in kernels)
    ):
        pairs = list(kernels)
    else:
        weights = _weights_array(kernels, "kernels")
        if weights.ndim not in (2, 3, 4):
            raise ValueError(
                f"kernels: weights of shape {weights.shape}; expected (kh, kw), (K, kh, kw) or (K, C, kh, kw)"
            )
        if weights.ndim < 4:  # (kh, kw) is one kernel, (K, kh, kw) K kernels, of one channel
            weights = weights.reshape((-1, 1) + weights.shape[-2:])
        return KernelBank(tuple(f"kernel{k}" for k in range(weights.shape[0])), weights.copy())
    if not pairs:
        raise ValueError("kernels: the kernel bank is empty; give at least one kernel")
    names, arrays = [], []
    for name, value in pairs:
        if not isinstance(name, str) or not name:
            raise TypeError(f"kernels: kernel names must be non-empty strings, got {name!r}")
        if name in names:
            raise ValueError(f"kernels: duplicate kernel name {name!r}")
        weights = _weights_array(value, f"kernels[{name!r}]")
        if weights.ndim not in (2, 3):
            raise ValueError(
                f"kernels[{name!r}]: weights of shape {weights.shape}; expected (kh, kw) or (C, kh, kw)"
            )
        weights = weights if weights.ndim == 3 else weights[None]
        if arrays and weights.shape != arrays[0].shape:
            raise ValueError(
                f"kernels[{name!r}]: shape {weights.shape} differs from the first kernel's {arrays[0].shape}; "
                "all kernels of a bank must have one shape"
            )
        names.append(name)
        arrays.append(weights)
    return KernelBank(tuple(names), np.stack(arrays))


def _weights_array(value: object, where: str) -> np.ndarray:
    """Real, finite float64 weights with no empty axis, or TypeError/ValueError naming ``where``."""
    try:
        weights = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{where}: weights must be an array of real numbers, got {type(value).__name__}"
        ) from None
    if weights.ndim == 0 or 0 in weights.shape:
        raise ValueError(f"{where}: weights must be a non-empty array, got shape {weights.shape}")
    if not np.isfinite(weights).all():
        raise ValueError(f"{where}: weights must be finite numbers")
    return weights
