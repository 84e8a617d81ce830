"""convpipe outputs as napari sees them, through napari-ome-zarr's own reader (no Qt, no viewer).

``napari_get_reader(path)()`` gives the layer data napari would add; each is
split per channel and turned into an ``Image`` layer with napari's own code,
and compared with what the run was: layer shapes, names, colormaps, contrast
limits against the channel's values, and where a pixel lands in world
coordinates against the window centre worked out here from the kernel size,
stride and the input's own scale and translation. Needs the ``viewer``
extra (napari, napari-ome-zarr); skipped without it.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import zarr

import convpipe
from convpipe.sample import sample_stack

pydantic_warnings = pytest.importorskip("pydantic.warnings")
with warnings.catch_warnings():  # napari and npe2 still use pydantic-1 idioms when imported
    warnings.filterwarnings("ignore", category=pydantic_warnings.PydanticDeprecatedSince20)
    napari_ome_zarr = pytest.importorskip("napari_ome_zarr")
    napari_layers = pytest.importorskip("napari.layers")
    from napari.layers.utils.stack_utils import split_channels

FRAMES, HEIGHT, WIDTH = 3, 30, 41
KERNEL = 3  # sobel


@dataclass(frozen=True)
class Case:
    input_dims: tuple[str, ...]  # the input's dimension names (the input is generated from them)
    config: dict  # top-level config keys besides input, kernels, output
    labels: tuple[str, ...]  # expected channel labels (one layer each)
    layer_shape: tuple[int, ...]  # each layer's data shape
    stride: tuple[int, int] = (1, 1)
    ome_scale: tuple[float, ...] | None = None  # input OME scale and translation (physical units)
    ome_translation: tuple[float, ...] | None = None
    extra: dict = field(default_factory=dict)


def out_size(n: int, s: int) -> int:
    return (n - KERNEL) // s + 1


CASES = {
    "magnitude-tyx": Case(
        ("t", "y", "x"),
        {"combine": "magnitude", "stride": [2, 3]},
        ("magnitude",),
        (FRAMES, out_size(HEIGHT, 2), out_size(WIDTH, 3)),
        stride=(2, 3),
    ),
    "none-several-kernels": Case(
        ("t", "y", "x"),
        {"combine": "none", "stride": 2},
        ("sobel-x", "sobel-y"),
        (FRAMES, out_size(HEIGHT, 2), out_size(WIDTH, 2)),
        stride=(2, 2),
    ),
    "2d-input": Case(("y", "x"), {"combine": "none"}, ("sobel-x", "sobel-y"), (HEIGHT - 2, WIDTH - 2)),
    "3d-z-stack-physical": Case(
        ("z", "y", "x"),
        {"combine": "magnitude", "stride": 2},
        ("magnitude",),
        (FRAMES, out_size(HEIGHT, 2), out_size(WIDTH, 2)),
        stride=(2, 2),
        ome_scale=(2.0, 0.5, 0.25),
        ome_translation=(0.0, 10.0, -3.0),
    ),
    "4d-tcyx-channels-each": Case(
        ("t", "c", "y", "x"),
        {"combine": "none", "channels": "each", "stride": [1, 2]},
        ("0/sobel-x", "0/sobel-y", "1/sobel-x", "1/sobel-y", "2/sobel-x", "2/sobel-y"),
        (FRAMES, HEIGHT - 2, out_size(WIDTH, 2)),
        stride=(1, 2),
    ),
    "4d-tzyx-zarr2": Case(
        ("t", "z", "y", "x"),
        {"combine": "none"},
        ("sobel-x", "sobel-y"),
        (2, FRAMES, HEIGHT - 2, WIDTH - 2),
        extra={"format": "zarr2"},
    ),
}


def write_input(path: Path, case: Case) -> None:
    """A uint8 stack with ``case.input_dims``; an OME-NGFF 0.5 image when the case has a physical scale."""
    frames = sample_stack(FRAMES, HEIGHT, WIDTH)
    data = {
        ("y", "x"): frames[0],
        ("t", "y", "x"): frames,
        ("z", "y", "x"): frames,
        ("t", "c", "y", "x"): np.stack([frames, frames[::-1], frames[:, ::-1]], axis=1),
        ("t", "z", "y", "x"): np.stack([frames, frames[::-1]]),
    }[case.input_dims]
    group = zarr.open_group(str(path), mode="w")
    group.create_array("0", data=data, dimension_names=list(case.input_dims))
    if case.ome_scale is not None:
        types = {"t": "time", "c": "channel"}
        axes = [{"name": n, "type": types.get(n, "space"), "unit": "micrometer"} for n in case.input_dims]
        transforms = [
            {"type": "scale", "scale": list(case.ome_scale)},
            {"type": "translation", "translation": list(case.ome_translation)},
        ]
        dataset = {"path": "0", "coordinateTransformations": transforms}
        group.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": [dataset]}]}


def run_case(tmp_path: Path, case: Case) -> tuple[Path, np.ndarray]:
    write_input(tmp_path / "in.zarr", case)
    out = tmp_path / "out.zarr"
    config = {
        "input": {"path": str(tmp_path / "in.zarr")},
        "kernels": "sobel",
        **case.config,
        "output": {"path": str(out), **case.extra},
    }
    convpipe.run(config, progress=False)
    return out, zarr.open_group(str(out), mode="r")["0"][...]


def napari_layers_of(path: Path) -> tuple[list, dict]:
    """The Image layers napari makes of ``path`` with napari-ome-zarr, and the reader's layer metadata."""
    reader = napari_ome_zarr.napari_get_reader(str(path))
    assert reader is not None, f"napari-ome-zarr does not take {path}"
    [(data, metadata, layer_type)] = reader()
    assert layer_type == "image"
    [level] = data  # a single resolution
    meta = dict(metadata)
    channel_axis = meta.pop("channel_axis", None)
    if channel_axis is None:
        return [napari_layers.Image(level, **meta)], metadata
    split = split_channels(level, channel_axis, **meta)
    return [napari_layers.Image(d, **m) for d, m, _ in split], metadata


def channel_values(output: np.ndarray, case: Case) -> list[np.ndarray]:
    """Each channel of the output (the one OME axis of type channel, before z, y, x)."""
    if len(case.labels) == 1:
        return [output]
    axis = 0 if case.input_dims[0] in ("y", "z") else 1
    return [np.take(output, c, axis=axis) for c in range(output.shape[axis])]


def expected_world(case: Case, index: tuple[int, ...]) -> tuple[float, ...]:
    """Where a layer pixel sits: its window's centre in the input's (physical) coordinates."""
    ndim = len(index)
    scale = [1.0] * ndim
    translation = [0.0] * ndim
    if case.ome_scale is not None:
        scale, translation = list(case.ome_scale), list(case.ome_translation)
    world = [translation[a] + scale[a] * index[a] for a in range(ndim - 2)]
    for a, stride in zip((ndim - 2, ndim - 1), case.stride):
        centre = index[a] * stride + (KERNEL - 1) / 2  # in input pixels
        world.append(translation[a] + scale[a] * centre)
    return tuple(world)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_napari_ome_zarr_opens_the_output_with_colours_windows_and_positions(
    tmp_path: Path, case: Case
) -> None:
    out, output = run_case(tmp_path, case)
    layers, metadata = napari_layers_of(out)

    # One layer per channel, named after its kernel (and input channel), of the output's data.
    assert [layer.name for layer in layers] == [f"convpipe: {label}" for label in case.labels]
    if len(case.labels) > 1:
        assert output.shape[metadata["channel_axis"]] == len(case.labels)
    values = channel_values(output, case)
    for layer, channel in zip(layers, values):
        assert layer.data.shape == case.layer_shape == channel.shape
        np.testing.assert_array_equal(np.asarray(layer.data), channel)

    # Colours: grey for a single channel, distinct ones for several.
    colormaps = [layer.colormap.name for layer in layers]
    if len(layers) == 1:
        assert colormaps == ["gray"]
    else:
        colours = [tuple(layer.colormap.colors[-1]) for layer in layers]
        assert len(set(colours)) == len(layers) and (1.0, 1.0, 1.0, 1.0) not in colours

    # Contrast: the channel's robust range, not its extremes.
    for layer, channel in zip(layers, values):
        low, high = layer.contrast_limits
        finite = channel[np.isfinite(channel)]
        assert np.count_nonzero(finite < low) <= 0.001 * finite.size
        assert np.count_nonzero(finite > high) <= 0.001 * finite.size
        assert finite.min() <= low < high <= finite.max()
        assert layer.visible

    # Scale and translation: every pixel at the centre of its window, in the input's coordinates.
    for layer in layers:
        ndim = layer.ndim
        for index in [(0,) * ndim, (1,) * ndim, tuple(n - 1 for n in layer.data.shape)]:
            np.testing.assert_allclose(layer.data_to_world(index), expected_world(case, index), atol=1e-9)
        assert tuple(layer.axis_labels) == tuple(d for d in metadata["axis_labels"])


def test_reading_needs_no_gui(tmp_path: Path) -> None:
    """The reader and the layers come without a Qt binding or a display."""
    out, _ = run_case(tmp_path, CASES["magnitude-tyx"])
    napari_layers_of(out)
    assert not [m for m in sys.modules if m.split(".")[0] in ("PyQt5", "PyQt6", "PySide2", "PySide6")]


def test_the_xarray_coordinates_agree_with_napari(tmp_path: Path) -> None:
    """convpipe.open_output's pixel coordinates (from the provenance record) and napari's world match."""
    case = CASES["none-several-kernels"]
    out, _ = run_case(tmp_path, case)
    result = convpipe.open_output(str(out))
    layers, _ = napari_layers_of(out)
    for layer in layers:
        for i, j in [(0, 0), (3, 5)]:
            world = layer.data_to_world((1, i, j))
            assert world[1:] == pytest.approx((result["y"].values[i], result["x"].values[j]))
