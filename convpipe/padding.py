"""Padding and dilation: parsing their values, and the integer maths around them.

With ``P`` the input padded by ``padding_mode`` and a kernel dilated by
``(dy, dx)`` (taps at ``u*dy, v*dx``, window ``kh_e = dy*(kh - 1) + 1`` rows
by ``kw_e = dx*(kw - 1) + 1`` columns)::

    O[..., k, i, j] = sum_c sum_u sum_v P[..., c, i*sy + u*dy, j*sx + v*dx] * W[k, c, u, v]

The parsers raise ``ValueError`` with a message that leaves the key out;
the config and :func:`convpipe.correlate` put their key in front, so both
say the same thing.
"""

from __future__ import annotations

import itertools
import typing
from typing import Any, Literal

from convpipe.errors import InputError
from convpipe.geometry import StackGeometry, effective_kernel
from convpipe.yamldoc import is_int

#: How the border is filled (PyTorch's names); :data:`NUMPY_PAD_MODES` gives ``numpy.pad``'s.
PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]
PADDING_MODES: tuple[str, ...] = typing.get_args(PaddingMode)
NUMPY_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}

#: ``"valid"``, ``"same"``, or pixels added ``(top, bottom, left, right)``.
Padding = Literal["valid", "same"] | tuple[int, int, int, int]


def parse_padding(value: Any) -> Padding:
    """``"valid"``, ``"same"``, ``p``, ``[py, px]`` or ``[top, bottom, left, right]`` -> :data:`Padding`.

    Examples
    --------
    >>> parse_padding(2), parse_padding([1, 3]), parse_padding("same")
    ((2, 2, 2, 2), (1, 1, 3, 3), 'same')
    """
    if value in ("valid", "same") and isinstance(value, str):
        return value
    if is_int(value) and value >= 0:
        return (int(value),) * 4
    listed = isinstance(value, (list, tuple)) and len(value) in (2, 4)
    if listed and all(is_int(v) and v >= 0 for v in value):
        pads = [int(v) for v in value]
        return (pads[0], pads[0], pads[1], pads[1]) if len(pads) == 2 else tuple(pads)
    raise ValueError(
        "must be valid, same, a non-negative integer p, [py, px] or [top, bottom, left, right], "
        f"got {value!r}"
    )


def parse_padding_mode(value: Any) -> PaddingMode:
    if value not in PADDING_MODES or not isinstance(value, str):
        raise ValueError(f"must be one of {', '.join(PADDING_MODES)}, got {value!r}")
    return value


def parse_dilation(value: Any) -> tuple[int, int]:
    """A positive integer or ``[dy, dx]`` -> ``(dy, dx)``."""
    if is_int(value) and value >= 1:
        return int(value), int(value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(is_int(v) and v >= 1 for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"must be a positive integer or [dy, dx], got {value!r}")


def resolve_padding(
    padding: Padding, shape: tuple[int, int], window: tuple[int, int], stride: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Pixels added ``(top, bottom, left, right)`` to frames of ``shape`` for windows of size ``window``.

    ``"same"`` is the TensorFlow/Keras rule: ``ceil(n / s)`` outputs, total
    padding ``max((out - 1) * s + k - n, 0)``, the odd pixel at the end.

    Examples
    --------
    >>> resolve_padding("same", (10, 7), (3, 4), (1, 2))
    (1, 1, 1, 2)
    >>> resolve_padding("valid", (10, 7), (3, 4), (1, 2))
    (0, 0, 0, 0)
    """
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding != "same":
        return padding
    pads = []
    for n, k, s in zip(shape, window, stride):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


def frame_padding(
    padding: Padding,
    mode: str,
    kernel_shape: tuple[int, int],
    dilation: tuple[int, int],
    shape: tuple[int, int],
    stride: tuple[int, int],
) -> tuple[int, int, int, int]:
    """The padding of frames of ``shape``, checked: :class:`InputError` (with its key) if ``mode``
    cannot pad them so, or the dilated kernel is larger than the padded frames."""
    window = effective_kernel(kernel_shape, dilation)
    pads = resolve_padding(padding, shape, window, stride)
    for name, n, before, after in (("height", shape[0], *pads[:2]), ("width", shape[1], *pads[2:])):
        widest = max(before, after)
        problem = None
        if mode == "reflect" and widest >= n:
            problem = f"reflect needs padding smaller than the frame {name} {n}, got {widest}"
        elif mode == "circular" and widest > n:
            problem = f"circular needs padding at most the frame {name} {n}, got {widest}"
        if problem:
            raise InputError(f"{problem}; use a smaller padding or another padding_mode", key="padding")
    padded = (shape[0] + pads[0] + pads[1], shape[1] + pads[2] + pads[3])
    if window[0] > padded[0] or window[1] > padded[1]:
        frames = f"{shape[0]}x{shape[1]}" + (f", padded to {padded[0]}x{padded[1]}" if any(pads) else "")
        dilated = dilation != (1, 1)
        kernels = f"{window[0]}x{window[1]}{' dilated' if dilated else ''}"
        message = f"the kernels ({kernels}) are larger than the image frames ({frames})"
        raise InputError(message, key="dilation" if dilated else "kernels")
    return pads


def source_chunks(padded: tuple[int, ...], before: int, after: int) -> tuple[int, ...]:
    """Chunks of an unpadded axis whose edges are those of ``padded`` chunks, shifted by the padding.

    Chunks wholly inside the padding are dropped, so a padded array of
    these chunks needs only its first and last chunks merged with the
    padding to have the ``padded`` chunks.

    Examples
    --------
    >>> source_chunks((4, 4, 4), 2, 1)
    (2, 4, 3)
    >>> source_chunks((4, 4), 5, 0)
    (3,)
    """
    n = sum(padded) - before - after
    inner = sorted({min(max(e - before, 0), n) for e in itertools.accumulate(padded, initial=0)})
    return tuple(b - a for a, b in itertools.pairwise(inner))


def unpadded_chunks(geometry: StackGeometry) -> tuple[tuple[int, ...], ...]:
    """Chunks of the input before padding that line up with ``geometry.input_chunks``.

    See :func:`source_chunks`.
    """
    chunks = list(geometry.input_chunks)
    (ay, ax), (top, bottom, left, right) = geometry.spatial_axes, geometry.padding
    chunks[ay] = source_chunks(chunks[ay], top, bottom)
    chunks[ax] = source_chunks(chunks[ax], left, right)
    return tuple(chunks)
