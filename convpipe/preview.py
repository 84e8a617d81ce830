"""Looking at results: one frame of a stack as a labelled 8-bit PNG, optionally beside another.

A *frame* is the ``(y, x)`` plane left after fixing every other axis. Axes
are recognised as convpipe's inputs' (:func:`convpipe.axes.resolve_axes`),
an unnamed 4-D array being ``(t, c, y, x)``. Only the chunks holding the
frame are read. Each frame is contrast-stretched on its own between the
0.5th and 99.5th percentiles of its finite values (one hot pixel does not
turn the rest black) and labelled above with its source, position, channel
and the values shown black and white. Two frames are drawn on the finer
one's grid, through both sources' OME-NGFF scale and translation: a strided
output lies at the input's scale, each pixel over its window's centre.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import zarr

from convpipe.axes import Axes, AxisInfo, SourceAxes, image_axes, resolve_axes, unnamed, zarr_axes
from convpipe.errors import InputError, OutputError, storage_errors
from convpipe.imagefiles import is_image_source, open_image_stack
from convpipe.inputs import enclosing_group, open_zarr_array, pick_array

LOW_PERCENTILE, HIGH_PERCENTILE = 0.5, 99.5
CONSTANT_GREY = 128  # every pixel of a frame without contrast (all finite values equal)
PANEL_GAP, GAP_VALUE = 4, 255  # the white gap between the panels of a comparison
LINE_HEIGHT = 13  # pixels per line of a panel's label (white on black, above the frame)
MAX_PERCENTILE_SAMPLES = 4_000_000  # percentiles of larger frames come from an evenly strided sample
DEFAULT_GROUP_ARRAY = "0"
ARRAY_KEYS = ("path", "array=")  # how errors name the source and the array argument

Index = int | Sequence[int] | None


@dataclass(frozen=True)
class _Source:
    array: Any  # zarr.Array, dask or NumPy array: anything with shape, ndim and slicing
    axes: Axes
    label: str  # for messages
    title: str  # for the panel's label


@dataclass(frozen=True)
class Panel:
    """A rendered frame: its 8-bit image, its label's parts, where its pixels sit along y and x."""

    image: np.ndarray
    label: tuple[str, ...]
    scale: tuple[float, float] = (1.0, 1.0)
    translation: tuple[float, float] = (0.0, 0.0)


def frame_axes(shape: tuple[int, ...], dimension_names: Sequence[str | None] | None = None) -> Axes:
    """Roles and names of an array's axes, from its dimension names (see the module docstring).

    Examples
    --------
    >>> axes = frame_axes((10, 64, 64, 3), ("t", "y", "x", "c"))
    >>> axes.batch_axes, axes.channel_axis, axes.spatial_axes
    ((0,), 3, (1, 2))
    """
    names = tuple(dimension_names or ())
    named = len(names) == len(shape) and any(names)
    infos = tuple(AxisInfo(str(n) if n else None) for n in names)
    return _resolve(tuple(shape), SourceAxes(infos, "dimension names") if named else unnamed(len(shape)))


def _resolve(shape: tuple[int, ...], source: SourceAxes) -> Axes:
    if len(shape) < 2:
        raise InputError(f"cannot preview a {len(shape)}-D array of shape {shape}: it needs y and x axes")
    return resolve_axes(source, shape, axes="tcyx" if len(shape) == 4 and not source.named else None)


def render_panel(
    path_or_array: str | os.PathLike[str] | Any,
    index: Index = None,
    channel: int | None = None,
    array: str | None = None,
) -> Panel:
    """One frame of a stack, contrast-stretched to 8 bits, with its label and the placement of its pixels.

    ``path_or_array``: a Zarr array or group, an image source, or an open
    Zarr, Dask or NumPy array. ``index``: positions along the batch axes (an
    int for the first; negative from the end; default: the first's middle).
    ``channel``: default 0. ``array``: the array in a group (default ``"0"``).
    :class:`InputError` for an unreadable source or a position out of range.
    """
    return _panel(_open_source(path_or_array, array), index, channel)


def render_frame(
    path_or_array: str | os.PathLike[str] | Any,
    index: Index = None,
    channel: int | None = None,
    array: str | None = None,
) -> np.ndarray:
    """The ``(H, W)`` uint8 image of :func:`render_panel`.

    Examples
    --------
    >>> data = np.zeros((3, 2, 4)); data[1, :, 2:] = 1.0
    >>> render_frame(data)
    array([[  0,   0, 255, 255],
           [  0,   0, 255, 255]], dtype=uint8)
    """
    return render_panel(path_or_array, index, channel, array).image


def display_range(frame: np.ndarray) -> tuple[float, float] | None:
    """The values shown black and white: 0.5th and 99.5th percentiles of the finite values.

    The minimum and maximum when those are equal (sparse data); None without a finite value.
    """
    values = np.asarray(frame)
    step = max(1, values.size // MAX_PERCENTILE_SAMPLES)
    sample = values.ravel()[::step]
    sample = sample[np.isfinite(sample)].astype(np.float64)
    if sample.size == 0:
        return None
    low, high = np.percentile(sample, [LOW_PERCENTILE, HIGH_PERCENTILE])
    if high <= low:
        low, high = sample.min(), sample.max()
    return float(low), float(high)


def stretch_to_uint8(frame: np.ndarray) -> np.ndarray:
    """Map a 2-D frame to uint8 by clipping to :func:`display_range` and scaling to 0..255.

    A frame with a single finite value becomes :data:`CONSTANT_GREY`. NaN
    and -inf become 0, +inf 255. No warnings, no division by zero.

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
    limits = display_range(values)
    if limits is None or limits[1] <= limits[0]:  # no contrast (or no finite value at all)
        edges = np.where(np.isposinf(values), 255, 0)  # +inf white; NaN and -inf black
        return np.where(np.isfinite(values), CONSTANT_GREY, edges).astype(np.uint8)
    low, high = limits
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
    """Write one labelled frame of ``src`` as an 8-bit greyscale PNG, optionally beside another stack.

    With ``compare_with`` (e.g. the input next to the output) ``src`` is on
    the left, ``compare_with`` on the right, the same ``index`` of both, the
    coarser drawn on the finer one's grid (:func:`on_one_grid`), then
    :func:`labelled`. ``channel`` applies to ``compare_with`` when it has a
    channel axis of that size (else its channel 0 is shown), and to ``src``
    unless ``src`` has none and ``compare_with`` takes it (the input left, a
    kernel right). ``array`` names the array in a ``src`` group. Raises as
    :func:`render_panel`, and :class:`OutputError` when ``out_png`` does not
    end in .png or cannot be written.
    """
    with storage_errors(writing=os.fspath(out_png)):
        out_path = Path(out_png)
        if out_path.suffix.lower() != ".png":
            raise OutputError(f"preview file must end in .png, got {out_path}")
        if not out_path.parent.is_dir():
            raise OutputError(f"cannot write {out_path}: folder {out_path.parent} does not exist")
        source = _open_source(src, array)
        if compare_with is None:
            image = labelled([_panel(source, index, channel)])
        else:
            other = _open_source(compare_with, None)
            axis = other.axes.channel_axis
            size = 0 if axis is None or channel is None else other.array.shape[axis]
            other_channel = channel if -size <= (channel or 0) < size else None
            # A channel only the right-hand panel has (the input left, kernels right): the left shows its 0.
            own = None if other_channel is not None and source.axes.channel_axis is None else channel
            panels = _panel(source, index, own), _panel(other, index, other_channel)
            image = labelled(on_one_grid(*panels))
        try:
            iio.imwrite(out_path, image, extension=".png", plugin="pillow")
        except OSError as exc:
            raise OutputError(f"cannot write {out_path}: {exc}") from exc
        return out_path


def on_one_grid(first: Panel, second: Panel) -> list[Panel]:
    """The two panels with the coarser one resampled (nearest) onto the finer one's pixel grid.

    Panels on the same grid are left as they are. Pixels of the resampled
    panel that fall outside its frame are black.

    Examples
    --------
    >>> fine = Panel(np.zeros((3, 5), np.uint8), ("in",))
    >>> on_one_grid(Panel(np.array([[1, 2]], np.uint8), ("out",), (2.0, 2.0), (1.0, 1.0)), fine)[0].image
    array([[1, 1, 2, 2, 0],
           [1, 1, 2, 2, 0],
           [0, 0, 0, 0, 0]], dtype=uint8)
    """
    if (first.scale, first.translation) == (second.scale, second.translation):
        return [first, second]
    fine, coarse = sorted((first, second), key=lambda p: (np.prod(p.scale), -p.image.size))
    rows, cols = (
        np.floor((t_f + s_f * np.arange(n) - t_c) / s_c + 0.5).astype(np.int64)
        for n, s_f, t_f, s_c, t_c in zip(
            fine.image.shape, fine.scale, fine.translation, coarse.scale, coarse.translation
        )
    )
    inside_rows = (rows >= 0) & (rows < coarse.image.shape[0])
    inside_cols = (cols >= 0) & (cols < coarse.image.shape[1])
    image = np.zeros(fine.image.shape, np.uint8)
    image[np.ix_(inside_rows, inside_cols)] = coarse.image[np.ix_(rows[inside_rows], cols[inside_cols])]
    resampled = Panel(image, coarse.label, fine.scale, fine.translation)
    return [resampled, second] if coarse is first else [first, resampled]


def labelled(panels: list[Panel]) -> np.ndarray:
    """The panels side by side (:func:`side_by_side`), each below its label wrapped to its width."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    wrapped = []
    for panel in panels:  # the label's parts, as many on a line as fit the panel's width
        lines: list[str] = []
        for part in panel.label:
            if lines and font.getlength(f"{lines[-1]}  {part}") <= panel.image.shape[1] - 2:
                lines[-1] += f"  {part}"
            else:
                lines.append(part)
        wrapped.append(lines)
    height = LINE_HEIGHT * max(len(lines) for lines in wrapped)
    images = []
    for panel, lines in zip(panels, wrapped):
        strip = Image.new("L", (panel.image.shape[1], height), 0)
        draw = ImageDraw.Draw(strip)
        for n, line in enumerate(lines):
            draw.text((1, n * LINE_HEIGHT), line, fill=255, font=font)
        images.append(np.vstack([np.asarray(strip, dtype=np.uint8), panel.image]))
    return functools.reduce(side_by_side, images)


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
    title = None
    if isinstance(path_or_array, zarr.Group):
        label = "the Zarr group"
        node, name = pick_array(
            path_or_array, label, array, default=DEFAULT_GROUP_ARRAY, take_single=False, keys=ARRAY_KEYS
        )
        source, label = zarr_axes(node, path_or_array, name), f"{label}/{name}"
    elif not isinstance(path_or_array, (str, os.PathLike)):
        if not hasattr(path_or_array, "shape") or not hasattr(path_or_array, "__getitem__"):
            raise InputError(f"cannot preview an object of type {type(path_or_array).__name__}")
        node, is_zarr = path_or_array, isinstance(path_or_array, zarr.Array)
        label = "the Zarr array" if is_zarr else "the array"
        _refuse_array_name(array, label)
        source = zarr_axes(node) if is_zarr else unnamed(len(node.shape))
    elif is_image_source(label := os.fspath(path_or_array)):
        _refuse_array_name(array, label)
        node, title = open_image_stack(label), Path(label).name
        source = image_axes(node.ndim, node.shape[3] if node.ndim == 4 else None)
    else:
        node, name = open_zarr_array(
            label, array, default=DEFAULT_GROUP_ARRAY, take_single=False, keys=ARRAY_KEYS
        )
        source = zarr_axes(node, *enclosing_group(label, name))
        title = Path(label).name + ("" if name in (None, DEFAULT_GROUP_ARRAY) else f"/{name}")
        label = label if name is None else f"{label}/{name}"
    return _Source(node, _resolve(tuple(node.shape), source), label, title or "array")


def _refuse_array_name(array: str | None, label: str) -> None:
    if array is not None:
        raise InputError(f"array={array!r} selects an array inside a group, but {label} is not a group")


def _panel(source: _Source, index: Index, channel: int | None) -> Panel:
    """Read one ``(y, x)`` plane (only its chunks), stretch it and label it."""
    shape, axes = tuple(source.array.shape), source.axes
    batch = axes.batch_axes
    selection: list[int | slice] = [slice(None)] * len(shape)
    if index is None:
        positions: tuple[int, ...] = (shape[batch[0]] // 2,) if batch else ()
    else:
        positions = (index,) if isinstance(index, (int, np.integer)) else tuple(index)
        if not batch:
            raise InputError(f"index {index} given, but {source.label} of shape {shape} is a single frame")
        if len(positions) > len(batch):
            raise InputError(
                f"index {list(positions)} has {len(positions)} values, but {source.label} has "
                f"{len(batch)} leading axis/axes ({', '.join(axes.names[a] for a in batch)})"
            )
    for n, axis in enumerate(batch):
        position = positions[n] if n < len(positions) else 0
        selection[axis] = _checked_position(
            position, shape[axis], f"index on axis {axes.names[axis]}", source
        )
    label = [source.title] + [f"{axes.names[a]}={selection[a]}" for a in batch]
    if axes.channel_axis is not None:
        c = _checked_position(0 if channel is None else channel, shape[axes.channel_axis], "channel", source)
        selection[axes.channel_axis] = c
        label.append(axes.labels(shape[axes.channel_axis])[c])
    elif channel is not None:
        raise InputError(
            f"channel {channel} given, but {source.label} of shape {shape} has no channel axis "
            "(an axis named 'c' or of OME type channel, or axis 1 of an unnamed 4-D array)"
        )
    elif axes.channel_labels and len(axes.channel_labels) == 1:  # e.g. an output's 'magnitude'
        label.append(axes.channel_labels[0])
    frame = np.asarray(source.array[tuple(selection)])
    limits = display_range(frame) if frame.dtype.kind in "buif" else None
    label.append("no finite value" if limits is None else f"[{limits[0]:.4g}, {limits[1]:.4g}]")
    y, x = axes.spatial_axes
    placement = (axes.scale[y], axes.scale[x]), (axes.translation[y], axes.translation[x])
    return Panel(stretch_to_uint8(frame), tuple(label), *placement)


def _checked_position(position: Any, size: int, what: str, source: _Source) -> int:
    if not isinstance(position, (int, np.integer)) or isinstance(position, bool):
        raise InputError(f"{what} must be an integer, got {position!r}")
    if not -size <= position < size:
        raise InputError(
            f"{what} {position} is out of range for {source.label}: valid range 0..{size - 1} "
            f"(size {size}; negative values count from the end)"
        )
    return int(position) % size
