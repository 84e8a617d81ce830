"""The input's axes: what the data says about them, what they are for, and what the output keeps.

An input names its axes in Zarr v3 ``dimension_names``, Zarr v2
``_ARRAY_DIMENSIONS``, OME-NGFF ``axes`` (name, type, unit, with the
dataset's ``scale`` and ``translation``), or by being image files (RGB(A)
samples are a trailing channel axis). :func:`resolve_axes` turns that, plus
the config's ``input.axes`` / ``input.channel_axis``, into :class:`Axes`:
one channel axis at most (named ``c``/``channel``, or of type ``channel``),
two spatial axes (``y``/``x``, or the last two space axes, or the last two
others), every other axis a batch axis keeping its name, type and unit.
Nothing is guessed: an unnamed input whose last axis looks like colour
samples is refused, and an override that contradicts the file's own names
is an error naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from convpipe.errors import ConfigError, InputError
from convpipe.geometry import StackGeometry
from convpipe.metadata import OutputAxis, window_centre_offset

CHANNEL_NAMES = ("c", "channel")
NAME_TYPES = {
    "t": "time",
    "time": "time",
    "c": "channel",
    "channel": "channel",
    "z": "space",
    "y": "space",
    "x": "space",
}
DEFAULT_BATCH_NAMES = ("t", "z")
SAMPLE_LABELS = {2: ("L", "A"), 3: ("R", "G", "B"), 4: ("R", "G", "B", "A")}
AMBIGUOUS_LAST = 4
"""An unnamed input whose last axis has at most this many elements ..."""
AMBIGUOUS_BEFORE = 16
"""... while the axis before it has more than this many is refused as ambiguous (colour or pixels?)."""


@dataclass(frozen=True)
class AxisInfo:
    """What the input itself says about one axis (``name`` None: nothing)."""

    name: str | None = None
    type: str | None = None
    unit: str | None = None
    scale: float = 1.0
    translation: float = 0.0


@dataclass(frozen=True)
class SourceAxes:
    """The input's own description of its axes, and where it came from (None: it names nothing)."""

    axes: tuple[AxisInfo, ...]
    origin: str | None = None
    channel_labels: tuple[str, ...] | None = None

    @property
    def named(self) -> bool:
        return self.origin is not None and any(a.name for a in self.axes)


def unnamed(ndim: int) -> SourceAxes:
    return SourceAxes((AxisInfo(),) * ndim)


def image_axes(ndim: int, samples: int | None) -> SourceAxes:
    """Image files: ``t, y, x``, plus ``c`` for colour samples (labelled R, G, B[, A] or L, A)."""
    names = ("t", "y", "x", "c")[:ndim]
    labels = SAMPLE_LABELS.get(samples) if samples else None
    return SourceAxes(tuple(AxisInfo(n, NAME_TYPES[n]) for n in names), "image files", labels)


def dimension_names(array: Any) -> tuple[str | None, ...] | None:
    """The axis names of a Zarr array: ``dimension_names`` (format 3) or ``_ARRAY_DIMENSIONS`` (format 2)."""
    names = getattr(array.metadata, "dimension_names", None) or array.attrs.get("_ARRAY_DIMENSIONS")
    return None if names is None else tuple(names)


def zarr_axes(array: Any, group: Any = None, array_path: str | None = None) -> SourceAxes:
    """An array's axes: OME-NGFF metadata of the ``group`` holding it at ``array_path``, else its dimension names."""
    ome = _ome_axes(group, array_path, array.ndim) if group is not None else None
    if ome is not None:
        return ome
    names = dimension_names(array)
    if not names or len(names) != array.ndim:
        return unnamed(array.ndim)
    origin = "dimension_names" if array.metadata.zarr_format == 3 else "_ARRAY_DIMENSIONS"
    return SourceAxes(tuple(AxisInfo(str(n) if n else None) for n in names), origin)


def _ome_axes(group: Any, array_path: str | None, ndim: int) -> SourceAxes | None:
    attrs = group.attrs.asdict()
    ome = attrs.get("ome", attrs)
    multiscales = ome.get("multiscales") if isinstance(ome, dict) else None
    if not multiscales or not isinstance(multiscales, list):
        return None
    for multiscale in multiscales:
        axes = multiscale.get("axes") or []
        datasets = [d for d in multiscale.get("datasets", []) if str(d.get("path")) == str(array_path)]
        if not datasets or len(axes) != ndim:
            continue
        scale, translation = [1.0] * ndim, [0.0] * ndim
        for transforms in (
            datasets[0].get("coordinateTransformations") or [],
            multiscale.get("coordinateTransformations") or [],
        ):
            for t in transforms:
                if t.get("type") == "scale" and len(t.get("scale", [])) == ndim:
                    translation = [o * s for o, s in zip(translation, t["scale"])]
                    scale = [a * s for a, s in zip(scale, t["scale"])]
                elif t.get("type") == "translation" and len(t.get("translation", [])) == ndim:
                    translation = [o + d for o, d in zip(translation, t["translation"])]
        infos = []
        for axis, s, o in zip(axes, scale, translation):
            axis = axis if isinstance(axis, dict) else {"name": axis}  # NGFF 0.3 gave plain names
            infos.append(AxisInfo(axis.get("name"), axis.get("type"), axis.get("unit"), float(s), float(o)))
        labels = None
        channels = ome["omero"].get("channels") if isinstance(ome.get("omero"), dict) else None
        if channels and all(isinstance(c, dict) and c.get("label") for c in channels):
            labels = tuple(str(c["label"]) for c in channels)
        return SourceAxes(tuple(infos), "OME-NGFF", labels)
    return None


@dataclass(frozen=True)
class Axes:
    """The input's axes resolved: names, roles, types, units and positions."""

    names: tuple[str, ...]
    types: tuple[str | None, ...]
    units: tuple[str | None, ...]
    scale: tuple[float, ...]
    translation: tuple[float, ...]
    channel_axis: int | None
    spatial_axes: tuple[int, int]
    origin: str
    channel_labels: tuple[str, ...] | None = None

    @property
    def batch_axes(self) -> tuple[int, ...]:
        return tuple(a for a in range(len(self.names)) if self.role(a) == "batch")

    def role(self, axis: int) -> str:
        return "channel" if axis == self.channel_axis else "spatial" if axis in self.spatial_axes else "batch"

    def labels(self, channels: int) -> tuple[str, ...]:
        """One label per input channel: the file's (omero labels, RGB samples), else the index."""
        if self.channel_labels and len(self.channel_labels) == channels:
            return self.channel_labels
        return tuple(str(i) for i in range(channels))

    def describe(self, shape: tuple[int, ...]) -> str:
        """``t batch (4)  y spatial (128, 0.5 micrometer)  ...`` with where the names came from."""
        parts = []
        for a, (name, n) in enumerate(zip(self.names, shape)):
            detail = [str(n)]
            if self.units[a] or self.scale[a] != 1:
                detail.append(f"{self.scale[a]:g} {self.units[a] or 'pixel'}")
            parts.append(f"{name} {self.role(a)} ({', '.join(detail)})")
        return "  ".join(parts) + f"   [names from {self.origin}]"


def _canonical(info: AxisInfo) -> str | None:
    """The role letter a name or type commits an axis to (c, t, z, y, x), or None."""
    name = (info.name or "").lower()
    if name in CHANNEL_NAMES or info.type == "channel":
        return "c"
    return name if name in ("t", "z", "y", "x") else None


def resolve_axes(
    source: SourceAxes,
    shape: tuple[int, ...],
    channel_axis: int | None = None,
    axes: str | None = None,
) -> Axes:
    """Roles, names and units of the input's axes; ``channel_axis``/``axes`` are the config's overrides.

    Raises :class:`ConfigError` (key ``input.axes`` or ``input.channel_axis``)
    for an override that contradicts the file's names or does not fit the
    input, and :class:`InputError` for an unnamed input that looks like
    colour samples without saying so.
    """
    ndim = len(shape)
    infos = source.axes
    committed = [_canonical(i) for i in infos] if source.named else [None] * ndim
    said = f"the input's own axis names {[i.name for i in infos]} (from {source.origin})"
    if axes is not None:
        if len(axes) != ndim:
            raise ConfigError(f"{axes!r} names {len(axes)} axes but the input has {ndim}", key="input.axes")
        for letter, file_letter in zip(axes, committed):
            if file_letter is not None and letter != file_letter:
                raise ConfigError(
                    f"{axes!r} contradicts {said}; remove input.axes or make it agree", key="input.axes"
                )
    if channel_axis is not None:
        if not -ndim <= channel_axis < ndim:
            message = f"{channel_axis} is out of range for a {ndim}-D input (valid: {-ndim}..{ndim - 1})"
            raise ConfigError(message, key="input.channel_axis")
        channel_axis %= ndim
        if axes is not None and axes[channel_axis] != "c":
            raise ConfigError(f"{axes!r} must have 'c' at the channel axis {channel_axis}", key="input.axes")
        file_channel = [a for a, c in enumerate(committed) if c == "c"]
        if committed[channel_axis] not in (None, "c") or (file_channel and file_channel != [channel_axis]):
            raise ConfigError(
                f"{channel_axis} contradicts {said}; remove input.channel_axis or make it agree",
                key="input.channel_axis",
            )
    letters = list(axes) if axes is not None else committed
    if channel_axis is None:
        found = [a for a, c in enumerate(letters) if c == "c"]
        if len(found) > 1:
            raise InputError(f"the input has several channel axes {found}; set input.axes", key="input.axes")
        channel_axis = found[0] if found else None
    samples_last = len(shape) >= 3 and shape[-1] <= AMBIGUOUS_LAST and shape[-2] > AMBIGUOUS_BEFORE
    if axes is None and channel_axis is None and not source.named and samples_last:
        raise InputError(
            f"the input {shape} names no axes and its last axis ({shape[-1]}) may be colour channels or pixels; "
            "set input.axes (e.g. tyxc, or tyx) or input.channel_axis",
            key="input.axes",
        )
    others = [a for a in range(ndim) if a != channel_axis]
    if len(others) < 2:
        raise InputError(
            f"the input {shape} has no two spatial axes besides the channel axis", key="input.channel_axis"
        )
    file_types = [
        None if axes is not None else i.type or NAME_TYPES.get((i.name or "").lower()) for i in infos
    ]
    spatial = _spatial_axes(letters, file_types, others)
    names = _names(source, axes, channel_axis, spatial, ndim)
    types = [file_types[a] or NAME_TYPES.get(names[a].lower()) for a in range(ndim)]
    for a in spatial:
        types[a] = types[a] or "space"
    if channel_axis is not None:
        types[channel_axis] = "channel"
    return Axes(
        names,
        tuple(types),
        tuple(i.unit for i in infos),
        tuple(i.scale for i in infos),
        tuple(i.translation for i in infos),
        channel_axis,
        spatial,
        "input.axes" if axes is not None else source.origin or "defaults (the input names none)",
        source.channel_labels,
    )


def _spatial_axes(letters: list, types: list, others: list[int]) -> tuple[int, int]:
    """``y`` and ``x`` if named, else the last two space axes, else the last two non-channel axes."""
    named = [letters.index(n) for n in ("y", "x") if n in letters]
    spaces = [a for a in others if types[a] == "space"]
    chosen = named if len(named) == 2 else spaces[-2:] if len(spaces) >= 2 else others[-2:]
    if list(chosen) != others[-2:]:
        raise InputError(
            f"the spatial axes {chosen} must be the last two axes besides the channel axis; "
            "transpose the input or set input.axes",
            key="input.axes",
        )
    return chosen[0], chosen[1]


def _names(
    source: SourceAxes, axes: str | None, channel_axis: int | None, spatial, ndim: int
) -> tuple[str, ...]:
    if axes is not None:
        return tuple(axes)
    names = [i.name for i in source.axes]
    if channel_axis is not None and not names[channel_axis]:
        names[channel_axis] = "c"
    for a, default in zip(spatial, ("y", "x")):
        names[a] = names[a] or default
    batch = [a for a in range(ndim) if a != channel_axis and a not in spatial]
    for position, a in enumerate(batch):
        default = DEFAULT_BATCH_NAMES[position] if len(batch) <= 2 else f"dim_{position}"
        if not names[a]:
            names[a] = default if default not in names else f"dim_{a}"
    return tuple(names)


def output_axes(
    axes: Axes,
    geometry: StackGeometry,
    kernel_labels: tuple[str, ...],
    batch_labels: dict[int, tuple[str, ...]] | None = None,
) -> tuple[OutputAxis, ...]:
    """The output's axes, in output order: batch axes as the input's, the kernel axis, the spatial axes.

    Spatial axes keep the input's name, type and unit; ``scale`` is the
    input's scale times the stride and ``translation`` the input's
    translation plus its scale times the window-centre offset
    (:func:`convpipe.metadata.window_centre_offset`), so every output pixel
    sits, in the input's units, at the centre of the window it summarises.
    """
    batch_labels = batch_labels or {}

    def kept(a: int) -> OutputAxis:
        info = (axes.names[a], axes.types[a], axes.units[a], axes.scale[a], axes.translation[a])
        return OutputAxis(*info, batch_labels.get(a))

    work = [kept(a) for a in geometry.batch_axes]
    if geometry.has_kernel_axis:
        name = "c" if "c" not in [axes.names[a] for a in geometry.batch_axes] else "kernel"
        work.append(OutputAxis(name, "channel", labels=tuple(kernel_labels)))
    for a, stride, offset in zip(geometry.spatial_axes, geometry.stride, window_centre_offset(geometry)):
        scale, translation = axes.scale[a], axes.translation[a]
        work.append(replace(kept(a), scale=scale * stride, translation=translation + scale * offset))
    return tuple(work[i] for i in geometry.output_order)


def kernel_position(axes: Axes, batch_axes: tuple[int, ...]) -> int:
    """How many batch axes precede the output's channel axis: all but the space ones (OME order t, c, z)."""
    spaces = [p for p, a in enumerate(batch_axes) if axes.types[a] == "space"]
    return spaces[0] if spaces else len(batch_axes)


def moved_channel(axes: Axes) -> tuple[tuple[int, ...], Axes]:
    """``channels: each`` with a combined output: the channel axis becomes a batch axis.

    Returns the transpose that puts it where OME-NGFF wants a channel axis
    (after time, before z and the spatial axes) and the axes in that order,
    without a channel axis.
    """
    batch = list(axes.batch_axes)
    position = kernel_position(axes, tuple(batch))
    order = tuple(batch[:position] + [axes.channel_axis] + batch[position:] + list(axes.spatial_axes))
    fields = ("names", "types", "units", "scale", "translation")
    reordered = {field: tuple(getattr(axes, field)[a] for a in order) for field in fields}
    return order, replace(axes, **reordered, channel_axis=None, spatial_axes=(len(order) - 2, len(order) - 1))
