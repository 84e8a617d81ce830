"""Names and attributes that travel with the output: dimension names,
OME-NGFF multiscales metadata and convpipe's provenance record."""

from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass
from typing import Any

from convpipe.geometry import StackGeometry
from convpipe.pyramid import level_transform


@dataclass(frozen=True)
class OutputAxis:
    """One axis of the output: name, OME type, unit, where its pixels sit, and labels of a channel axis."""

    name: str
    type: str | None
    unit: str | None = None
    scale: float = 1.0
    translation: float = 0.0
    labels: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "labels": None if self.labels is None else list(self.labels)}


def window_centre_offset(geometry: StackGeometry) -> tuple[float, float]:
    """Where output pixel 0 sits, in input pixels along (y, x): the centre of its first window.

    The one place that places the output on the input grid: OME-NGFF
    ``translation`` and xarray coordinates both use it (padding moves it by
    ``-padding_before``; dilation makes the window ``d * (k - 1) + 1`` wide).
    """
    (kh, kw), (top, _, left, _) = geometry.kernel_shape, geometry.padding
    return (kh - 1) / 2 - top, (kw - 1) / 2 - left


def ome_compatible(axes: tuple[OutputAxis, ...]) -> bool:
    """Whether ``axes`` can be OME-NGFF axes: at most one time, then at most one channel, then 2-3 space axes."""
    letters = "".join({"time": "t", "channel": "c", "space": "s"}.get(a.type, "?") for a in axes)
    return re.fullmatch(r"t?c?s{2,3}", letters) is not None


PALETTE = ("FF00FF", "00FF00", "00FFFF", "FFFF00", "FF0000", "FF8000", "0080FF", "FF0080")
"""Channel colours of an output with several channels, in order (then again from the first): distinct on black."""
GREY = "FFFFFF"
"""The colour of an output's only channel (a magnitude, a single kernel)."""
PHYSICAL = "physical"
"""Name that ties the dataset's scale to the multiscale's translation (read by napari-ome-zarr 0.10)."""


def _dataset(axes: tuple[OutputAxis, ...], level: int) -> dict[str, Any]:
    """The ``datasets`` entry of pyramid ``level`` (0: the result itself).

    Its scale, then (levels below 0) its shift from level 0 (half a pixel of
    the level below, per level: :func:`convpipe.pyramid.level_transform`);
    the multiscale's own translation then places level 0.
    """
    scale0, translation0 = [float(a.scale) for a in axes], [float(a.translation) for a in axes]
    scale, translation = level_transform(scale0, translation0, level)
    transforms: list[dict[str, Any]] = [{"type": "scale", "scale": scale, "output": {"name": PHYSICAL}}]
    if level:
        shift = [t - t0 for t, t0 in zip(translation, translation0)]
        transforms.append({"type": "translation", "translation": shift})
    return {"path": str(level), "coordinateTransformations": transforms}


def ome_multiscales(
    axes: tuple[OutputAxis, ...], version: str, single_label: str = "value", levels: int = 0
) -> dict[str, Any]:
    """OME-NGFF image metadata (``version`` "0.5" or "0.4") of the output ``axes`` and its pyramid ``levels``.

    Names, types and units are the input's; ``scale`` and ``translation``
    place every output pixel in the input's physical coordinates (see
    :func:`convpipe.axes.output_axes`). Each dataset carries its scale (and
    a lower level its half-pixel shift), the multiscale an identity scale and
    level 0's translation: valid NGFF 0.4/0.5, and the layout napari-ome-zarr
    0.10 reads both from (the README's reader table says what each reader
    takes). ``omero`` holds one channel per index of the channel axis (or
    one labelled ``single_label``) with a colour; :func:`with_windows` adds
    their windows once the data is written.
    """
    ome_axes = [{"name": a.name, "type": a.type, **({"unit": a.unit} if a.unit else {})} for a in axes]
    multiscale: dict[str, Any] = {
        "name": "convpipe",
        "axes": ome_axes,
        "datasets": [_dataset(axes, k) for k in range(levels + 1)],
        "coordinateTransformations": [
            {"type": "scale", "scale": [1.0] * len(axes)},
            {
                "type": "translation",
                "translation": [float(a.translation) for a in axes],
                "input": {"name": PHYSICAL},
            },
        ],
    }
    labels = next((a.labels for a in axes if a.type == "channel" and a.labels), None) or (single_label,)
    colours = [GREY] if len(labels) == 1 else [PALETTE[i % len(PALETTE)] for i in range(len(labels))]
    omero = {
        "channels": [
            {"label": name, "color": colour, "active": True} for name, colour in zip(labels, colours)
        ],
        "rdefs": {"model": "color"},
    }
    if version == "0.4":
        multiscale["version"] = "0.4"
        return {"multiscales": [multiscale], "omero": omero}
    return {"ome": {"version": "0.5", "multiscales": [multiscale], "omero": omero}}


def with_windows(group_attributes: dict[str, Any], windows: list[dict[str, float]]) -> dict[str, Any]:
    """``group_attributes`` (as :func:`ome_multiscales` made them) with one display window per omero channel.

    A window is ``{"min", "max", "start", "end"}`` (see
    :func:`convpipe.statistics.display_window`).
    """
    attrs = copy.deepcopy(group_attributes)
    channels = attrs.get("ome", attrs)["omero"]["channels"]  # NGFF 0.5 nests it under "ome"
    if len(windows) != len(channels):
        raise ValueError(f"{len(windows)} windows for {len(channels)} omero channels")
    for channel, window in zip(channels, windows):
        channel["window"] = window
    return attrs
