"""Names and attributes that travel with the output: dimension names,
OME-NGFF multiscales metadata and convpipe's provenance record."""

from __future__ import annotations

from typing import Any

from convpipe.geometry import StackGeometry

OME_ORDER = ("t", "c", "z", "y", "x")
OME_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
DEFAULT_BATCH_NAMES = ("t", "z")


def input_axis_names(ndim: int, channel_axis: int | None, axes: str | None) -> tuple[str, ...]:
    """One name per input axis: ``axes`` letters, or t/z for batch axes, c, y, x."""
    if axes is not None:
        return tuple(axes)
    names = ["c" if a == channel_axis else "" for a in range(ndim)]
    others = [a for a in range(ndim) if a != channel_axis]
    names[others[-2]], names[others[-1]] = "y", "x"
    batch = others[:-2]
    for position, axis in enumerate(batch):
        names[axis] = DEFAULT_BATCH_NAMES[position] if len(batch) <= 2 else f"dim_{position}"
    return tuple(names)


def kernel_axis_position(batch_names: tuple[str, ...]) -> int:
    """Where the kernel axis goes among the batch axes: before ``z`` (OME order
    t, c, z), otherwise after all of them, just before the spatial axes."""
    return batch_names.index("z") if "z" in batch_names else len(batch_names)


def output_axis_names(geometry: StackGeometry, input_names: tuple[str, ...]) -> tuple[str, ...]:
    """Output dimension names: batch names with ``c`` for the kernel axis, then spatial names."""
    names = [input_names[a] for a in geometry.batch_axes] + ["c"] + [input_names[a] for a in geometry.spatial_axes]
    work_names = names if geometry.has_kernel_axis else names[:-3] + names[-2:]
    return tuple(work_names[a] for a in geometry.output_order)


def ome_compatible(names: tuple[str, ...]) -> bool:
    """Whether ``names`` can be described as OME-NGFF axes (t, c, z, y, x order)."""
    if not 2 <= len(names) <= 5 or any(n not in OME_TYPES for n in names):
        return False
    order = [OME_ORDER.index(n) for n in names]
    spaces = sum(OME_TYPES[n] == "space" for n in names)
    return order == sorted(set(order)) and spaces >= 2


def ome_multiscales(
    names: tuple[str, ...],
    geometry: StackGeometry,
    kernel_names: tuple[str, ...],
    version: str,
) -> dict[str, Any]:
    """OME-NGFF single-resolution image metadata (``version`` "0.5" or "0.4").

    The scale of the spatial axes is the stride (a stride-2 output has pixels
    twice as large as the input's); the translation puts each output pixel at
    the centre of the input window it summarises (in input pixels, so padding
    moves it back: with ``same`` padding at stride 1 it is 0).
    """
    (kh, kw), (sy, sx), (top, _, left, _) = geometry.kernel_shape, geometry.stride, geometry.padding
    scale = [1.0] * len(names)
    translation = [0.0] * len(names)
    scale[-2:] = [float(sy), float(sx)]
    translation[-2:] = [(kh - 1) / 2 - top, (kw - 1) / 2 - left]
    axes = [{"name": n, "type": OME_TYPES[n]} for n in names]
    multiscale: dict[str, Any] = {
        "name": "convpipe",
        "axes": axes,
        "datasets": [
            {
                "path": "0",
                "coordinateTransformations": [
                    {"type": "scale", "scale": scale},
                    {"type": "translation", "translation": translation},
                ],
            }
        ],
    }
    omero = None
    if geometry.has_kernel_axis:
        omero = {"channels": [{"label": name, "active": True} for name in kernel_names]}
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
