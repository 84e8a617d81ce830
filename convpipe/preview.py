"""Looking at results: one frame of a stack as an 8-bit PNG, optionally next to another.

A *frame* is the 2-D ``(y, x)`` plane left after fixing every other axis.
Axes are recognised by their Zarr ``dimension_names`` (format 3) or
``_ARRAY_DIMENSIONS`` attribute (format 2):

* ``y`` and ``x`` are the axes so named, otherwise the last two axes that are
  not the channel axis;
* the channel axis is the one named ``c``; without names, a 4-D array is
  taken as ``(t, c, y, x)`` and arrays of other ranks have no channel axis;
* every other axis is a *leading* axis: ``index`` picks along them in order,
  the first defaulting to its middle and the others to 0.

Only the chunks holding the chosen frame are read. Each frame is
contrast-stretched on its own between the 0.5th and 99.5th percentiles of its
finite values, so one hot pixel does not turn the rest of the picture black.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import zarr

from convpipe.errors import InputError, OutputError, storage_errors
from convpipe.imagefiles import is_image_source, open_image_stack
from convpipe.inputs import dimension_names, open_zarr_array, pick_array

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
CONSTANT_GREY = 128
"""Value of every pixel of a frame without contrast (all finite values equal)."""
PANEL_GAP = 4
"""Width in pixels of the white gap between the panels of a comparison."""
GAP_VALUE = 255
MAX_PERCENTILE_SAMPLES = 4_000_000
"""Percentiles of larger frames are estimated from an evenly strided sample."""
DEFAULT_GROUP_ARRAY = "0"
ARRAY_KEYS = ("path", "array=")
"""How errors name the source and the array argument."""

Index = int | Sequence[int] | None


@dataclass(frozen=True)
class FrameAxes:
    """Roles of the axes of an array, as used to pick a frame.

    Attributes
    ----------
    leading
        Axes fixed by ``index``, in order.
    channel
        The channel axis fixed by ``channel``, or ``None``.
    y, x
        The two axes of the frame.
    names
        One label per axis for messages: the dimension name, or ``dim_<i>``.
    """

    leading: tuple[int, ...]
    channel: int | None
    y: int
    x: int
    names: tuple[str, ...]


@dataclass(frozen=True)
class _Source:
    array: Any  # zarr.Array, dask or NumPy array: anything with shape, ndim and slicing
    names: tuple[str | None, ...] | None
    label: str


def frame_axes(shape: tuple[int, ...], dimension_names: Sequence[str | None] | None = None) -> FrameAxes:
    """Which axes are leading, channel, ``y`` and ``x`` (see the module docstring).

    Examples
    --------
    >>> frame_axes((10, 64, 64, 3), ("t", "y", "x", "c"))
    FrameAxes(leading=(0,), channel=3, y=1, x=2, names=('t', 'y', 'x', 'c'))
    >>> frame_axes((10, 3, 64, 64)).channel
    1
    """
    ndim = len(shape)
    if ndim < 2:
        raise InputError(f"cannot preview a {ndim}-D array of shape {shape}: it needs at least y and x axes")
    names = _normalise_names(dimension_names, ndim)
    if names is None:
        channel = 1 if ndim == 4 else None
    else:
        channel = names.index("c") if "c" in names else None
    if names is not None and "y" in names and "x" in names:
        y, x = names.index("y"), names.index("x")
    else:
        y, x = [axis for axis in range(ndim) if axis != channel][-2:]
    if channel in (y, x):
        raise InputError(f"dimension names {list(names or ())} use one axis for both c and y/x")
    leading = tuple(axis for axis in range(ndim) if axis not in (channel, y, x))
    labels = tuple(name if name else f"dim_{axis}" for axis, name in enumerate(names or (None,) * ndim))
    return FrameAxes(leading, channel, y, x, labels)


def render_frame(
    path_or_array: str | os.PathLike[str] | Any,
    index: Index = None,
    channel: int | None = None,
    array: str | None = None,
) -> np.ndarray:
    """One frame of a stack, contrast-stretched to an 8-bit ``(H, W)`` image.

    Parameters
    ----------
    path_or_array
        Path of a Zarr array or group, or of an image source (see
        :func:`convpipe.imagefiles.is_image_source`); or an open ``zarr.Array``,
        ``zarr.Group``, Dask or NumPy array.
    index
        Position along the leading axes (``t``, ``z``, ...): an int for the
        first one, or one int per leading axis. Default: the middle of the first
        leading axis, 0 on the others. Negative values count from the end.
    channel
        Position along the channel axis; default 0.
    array
        Name of the array inside a group; default ``"0"``.

    Raises
    ------
    InputError
        Missing path, not a Zarr array or group, unknown array name, or an
        index or channel out of range (the message gives the valid range).

    Examples
    --------
    >>> data = np.zeros((3, 2, 4)); data[1, :, 2:] = 1.0
    >>> render_frame(data)
    array([[  0,   0, 255, 255],
           [  0,   0, 255, 255]], dtype=uint8)
    """
    return stretch_to_uint8(_read_frame(_open_source(path_or_array, array), index, channel))


def stretch_to_uint8(frame: np.ndarray) -> np.ndarray:
    """Map a 2-D frame to uint8 by clipping to robust percentiles and scaling to 0..255.

    Values at or below the 0.5th percentile of the finite values become 0, at or
    above the 99.5th become 255, linearly in between. When those percentiles
    are equal (sparse data) the minimum and maximum are used instead; a frame
    with a single finite value becomes :data:`CONSTANT_GREY`. NaN and -inf
    become 0, +inf 255. No warnings, no division by zero.

    Examples
    --------
    >>> stretch_to_uint8(np.array([[0, 0, 0, 5, 5, 5]]))
    array([[  0,   0,   0, 255, 255, 255]], dtype=uint8)
    >>> stretch_to_uint8(np.array([[7.0, np.nan, np.inf]]))
    array([[128,   0, 255]], dtype=uint8)
    """
    values = np.asarray(frame)
    if values.dtype == bool:
        values = values.astype(np.uint8)
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise InputError(f"cannot preview values of dtype {values.dtype}; expected integers or floats")
    step = max(1, values.size // MAX_PERCENTILE_SAMPLES)
    sample = values.ravel()[::step]
    sample = sample[np.isfinite(sample)].astype(np.float64)
    if sample.size == 0:
        return np.where(np.isposinf(values), 255, 0).astype(np.uint8)
    low, high = np.percentile(sample, [LOW_PERCENTILE, HIGH_PERCENTILE])
    if high <= low:
        low, high = sample.min(), sample.max()
    if high <= low:
        grey = np.full(values.shape, CONSTANT_GREY, dtype=np.uint8)
        grey[np.isnan(values) | np.isneginf(values)] = 0
        grey[np.isposinf(values)] = 255
        return grey
    work = np.result_type(values.dtype, np.float32)
    scaled = (values.astype(work) - work.type(low)) * work.type(255.0 / (high - low))
    np.clip(scaled, 0, 255, out=scaled)
    np.nan_to_num(scaled, copy=False, nan=0.0)
    return np.rint(scaled).astype(np.uint8)


def write_preview(
    src: str | os.PathLike[str] | Any,
    out_png: str | os.PathLike[str],
    index: Index = None,
    channel: int | None = None,
    compare_with: str | os.PathLike[str] | Any | None = None,
    array: str | None = None,
) -> Path:
    """Write one frame of ``src`` as an 8-bit greyscale PNG, optionally beside another stack.

    With ``compare_with`` (e.g. the input stack next to the output) the PNG holds
    ``src`` on the left and ``compare_with`` on the right, the same ``index``
    rendered from both, each contrast-stretched on its own, the shorter panel
    padded with black at the bottom and a :data:`PANEL_GAP`-pixel white gap
    between them. ``channel`` applies to ``compare_with`` when it has a channel
    axis of that size; otherwise its channel 0 is shown (so a kernel output
    channel can be set beside a single-channel or RGB input). Likewise it
    applies to ``src`` unless ``src`` has no channel axis and ``compare_with``
    takes the channel (the input on the left, a kernel on the right). ``array`` names
    the array in a ``src`` group; ``compare_with`` groups use their array
    ``"0"``.

    Returns
    -------
    Path
        ``out_png``.

    Raises
    ------
    InputError
        As for :func:`render_frame`, for either source.
    OutputError
        ``out_png`` does not end in .png, its folder does not exist, or it
        cannot be written.
    StorageError
        The storage refused (see :func:`convpipe.errors.storage_errors`).
    """
    with storage_errors(writing=os.fspath(out_png)):
        return _write_preview(src, out_png, index, channel, compare_with, array)


def _write_preview(
    src: Any, out_png: str | os.PathLike[str], index: Index, channel: int | None, compare_with: Any, array: str | None
) -> Path:
    out_path = Path(out_png)
    if out_path.suffix.lower() != ".png":
        raise OutputError(f"preview file must end in .png, got {out_path}")
    if not out_path.parent.is_dir():
        raise OutputError(f"cannot write {out_path}: folder {out_path.parent} does not exist")
    source = _open_source(src, array)
    if compare_with is None:
        image = stretch_to_uint8(_read_frame(source, index, channel))
    else:
        other = _open_source(compare_with, None)
        other_channel = channel if _has_channel(other, channel) else None
        # The channel may name a kernel of the right-hand panel only (the input left,
        # the kernel responses right); the left panel then shows its channel 0.
        source_channel = None if other_channel is not None and _channel_axis(source) is None else channel
        image = side_by_side(
            stretch_to_uint8(_read_frame(source, index, source_channel)),
            stretch_to_uint8(_read_frame(other, index, other_channel)),
        )
    try:
        iio.imwrite(out_path, image, extension=".png", plugin="pillow")
    except OSError as exc:
        raise OutputError(f"cannot write {out_path}: {exc}") from exc
    return out_path


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = PANEL_GAP) -> np.ndarray:
    """Two uint8 images in one: top-aligned, black below the shorter, a white gap between.

    Examples
    --------
    >>> side_by_side(np.zeros((2, 3), np.uint8), np.zeros((4, 1), np.uint8), gap=2).shape
    (4, 6)
    """
    height = max(left.shape[0], right.shape[0])
    width = left.shape[1] + gap + right.shape[1]
    canvas = np.zeros((height, width), dtype=np.uint8)
    canvas[:, left.shape[1] : left.shape[1] + gap] = GAP_VALUE
    canvas[: left.shape[0], : left.shape[1]] = left
    canvas[: right.shape[0], left.shape[1] + gap :] = right
    return canvas


def _open_source(path_or_array: Any, array: str | None) -> _Source:
    if isinstance(path_or_array, zarr.Group):
        label = "the Zarr group"
        node, name = pick_array(
            path_or_array, label, array, default=DEFAULT_GROUP_ARRAY, take_single=False, keys=ARRAY_KEYS
        )
        return _Source(node, dimension_names(node), f"{label}/{name}")
    if isinstance(path_or_array, zarr.Array):
        _refuse_array_name(array, "the Zarr array")
        return _Source(path_or_array, dimension_names(path_or_array), "the Zarr array")
    if not isinstance(path_or_array, (str, os.PathLike)):
        if not hasattr(path_or_array, "shape") or not hasattr(path_or_array, "__getitem__"):
            raise InputError(f"cannot preview an object of type {type(path_or_array).__name__}")
        _refuse_array_name(array, "the array")
        return _Source(path_or_array, None, "the array")

    label = os.fspath(path_or_array)
    if is_image_source(label):
        _refuse_array_name(array, label)
        stack = open_image_stack(label)
        return _Source(stack, ("t", "y", "x", "c")[: stack.ndim], label)
    node, name = open_zarr_array(label, array, default=DEFAULT_GROUP_ARRAY, take_single=False, keys=ARRAY_KEYS)
    return _Source(node, dimension_names(node), label if name is None else f"{label}/{name}")


def _refuse_array_name(array: str | None, label: str) -> None:
    if array is not None:
        raise InputError(f"array={array!r} selects an array inside a group, but {label} is not a group")


def _normalise_names(names: Sequence[str | None] | None, ndim: int) -> tuple[str | None, ...] | None:
    if names is None or len(names) != ndim or not any(names):
        return None
    return tuple(name.lower() if isinstance(name, str) and name else None for name in names)


def _channel_axis(source: _Source) -> int | None:
    return frame_axes(source.array.shape, source.names).channel


def _has_channel(source: _Source, channel: int | None) -> bool:
    axis = _channel_axis(source)
    if channel is None or axis is None:
        return False
    return -source.array.shape[axis] <= channel < source.array.shape[axis]


def _read_frame(source: _Source, index: Index, channel: int | None) -> np.ndarray:
    """Read one ``(y, x)`` plane, slicing the stored array so only its chunks are read."""
    shape = tuple(source.array.shape)
    axes = frame_axes(shape, source.names)
    selection: list[int | slice] = [slice(None)] * len(shape)

    if index is None:
        positions: tuple[int, ...] = (shape[axes.leading[0]] // 2,) if axes.leading else ()
    else:
        positions = (index,) if isinstance(index, (int, np.integer)) else tuple(index)
        if not axes.leading:
            raise InputError(f"index {index} given, but {source.label} of shape {shape} is a single frame")
        if len(positions) > len(axes.leading):
            leading_names = ", ".join(axes.names[a] for a in axes.leading)
            raise InputError(
                f"index {list(positions)} has {len(positions)} values, but {source.label} has "
                f"{len(axes.leading)} leading axis/axes ({leading_names})"
            )
    for axis in axes.leading:
        selection[axis] = 0
    for axis, position in zip(axes.leading, positions, strict=False):
        selection[axis] = _checked_position(
            position, shape[axis], f"index on axis {axes.names[axis]}", source
        )

    if axes.channel is not None:
        selection[axes.channel] = _checked_position(
            0 if channel is None else channel, shape[axes.channel], "channel", source
        )
    elif channel is not None:
        raise InputError(
            f"channel {channel} given, but {source.label} of shape {shape} has no channel axis "
            "(an axis named 'c', or axis 1 of an unnamed 4-D array)"
        )

    frame = np.asarray(source.array[tuple(selection)])
    return frame.T if axes.y > axes.x else frame


def _checked_position(position: Any, size: int, what: str, source: _Source) -> int:
    if not isinstance(position, (int, np.integer)) or isinstance(position, bool):
        raise InputError(f"{what} must be an integer, got {position!r}")
    if not -size <= position < size:
        raise InputError(
            f"{what} {position} is out of range for {source.label}: valid range 0..{size - 1} "
            f"(size {size}; negative values count from the end)"
        )
    return int(position) % size
