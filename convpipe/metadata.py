"""Names and attributes that travel with the output: dimension names,
OME-NGFF multiscales metadata and convpipe's provenance record."""

from __future__ import annotations

from dataclasses import dataclass
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
        return {
            "name": self.name,
            "type": self.type,
            "unit": self.unit,
            "scale": self.scale,
            "translation": self.translation,
            "labels": None if self.labels is None else list(self.labels),
        }


def window_centre_offset(geometry: StackGeometry) -> tuple[float, float]:
    """Where output pixel 0 sits, in input pixels along (y, x): the centre of its first window.

    The one place that places the output on the input grid: OME-NGFF
    ``translation`` and xarray coordinates both use it (padding moves it by
    ``-padding_before``; dilation makes the window ``d * (k - 1) + 1`` wide).
    """
    (kh, kw), (top, _, left, _) = geometry.kernel_shape, geometry.padding
    return (kh - 1) / 2 - top, (kw - 1) / 2 - left


SPEC_TYPE_ORDER = ("time", "channel", "space")


def ome_compatible(axes: tuple[OutputAxis, ...]) -> bool:
    """Whether ``axes`` can be described as OME-NGFF axes: 2-5 typed axes, time, channel, then 2-3 space."""
    types = [a.type for a in axes]
    if not 2 <= len(types) <= 5 or any(t not in SPEC_TYPE_ORDER for t in types):
        return False
    order = [SPEC_TYPE_ORDER.index(t) for t in types]
    return (
        order == sorted(order)
        and types.count("time") <= 1
        and types.count("channel") <= 1
        and 2 <= types.count("space") <= 3
    )


def _dataset(axes: tuple[OutputAxis, ...], level: int) -> dict[str, Any]:
    """The ``datasets`` entry of pyramid ``level`` (0: the result itself)."""
    scale, translation = level_transform([float(a.scale) for a in axes], [float(a.translation) for a in axes], level)
    return {
        "path": str(level),
        "coordinateTransformations": [
            {"type": "scale", "scale": scale},
            {"type": "translation", "translation": translation},
        ],
    }


def ome_multiscales(axes: tuple[OutputAxis, ...], version: str, levels: int = 0) -> dict[str, Any]:
    """OME-NGFF image metadata (``version`` "0.5" or "0.4") of the output ``axes`` and its pyramid ``levels``.

    Names, types and units are the input's; ``scale`` and ``translation``
    place every output pixel in the input's physical coordinates (see
    :func:`convpipe.axes.output_axes`); levels ``1..levels`` are listed after
    ``0`` with the scale and translation of :func:`convpipe.pyramid.level_transform`.
    The channel axis' labels become ``omero`` channels, each with a colour
    (napari-ome-zarr needs one).
    """
    ome_axes = []
    for a in axes:
        entry = {"name": a.name, "type": a.type}
        if a.unit:
            entry["unit"] = a.unit
        ome_axes.append(entry)
    multiscale: dict[str, Any] = {
        "name": "convpipe",
        "axes": ome_axes,
        "datasets": [_dataset(axes, k) for k in range(levels + 1)],
    }
    labels = next((a.labels for a in axes if a.type == "channel" and a.labels), None)
    omero = None
    if labels:
        omero = {"channels": [{"label": name, "active": True, "color": "FFFFFF"} for name in labels]}
    if version == "0.4":
        multiscale["version"] = "0.4"
        attrs: dict[str, Any] = {"multiscales": [multiscale]}
        if omero:
            attrs["omero"] = omero
        return attrs
    ome: dict[str, Any] = {"version": "0.5", "multiscales": [multiscale]}
    if omero:
        ome["omero"] = omero
    return {"ome": ome}
