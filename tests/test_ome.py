"""OME-NGFF and xarray metadata of the output, read back by the readers people use.

Every output is checked the way napari-ome-zarr and xarray see it: through
the ``ome-zarr`` reader (axes, coordinate transformations, data) and
``xarray.open_zarr`` with every warning an error. Zarr 3 outputs carry
OME-NGFF 0.5 under ``attributes.ome``; ``output.format: zarr2`` outputs carry
NGFF 0.4 ``multiscales`` at the top of the group attributes and
``_ARRAY_DIMENSIONS`` on every array.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from ome_zarr.format import FormatV04, FormatV05
from ome_zarr.io import parse_url
from ome_zarr.reader import Multiscales, Reader

import convpipe
from convpipe.sample import sample_stack

FRAMES, HEIGHT, WIDTH = 3, 20, 26
SPEC_TYPE_ORDER = ("time", "channel", "space")  # NGFF: time, then channel, then space


def write_stack(path: Path, layout: str) -> Path:
    """A small uint8 stack: ``tyx`` (3, 20, 26) or ``tcyx`` (3, 3, 20, 26), array ``0``."""
    if layout == "tyx":
        data = sample_stack(FRAMES, HEIGHT, WIDTH)
    else:
        data = np.stack([sample_stack(FRAMES, HEIGHT, WIDTH, seed=s) for s in range(3)], axis=1)
    zarr.open_group(str(path), mode="w").create_array("0", data=data, chunks=data.shape)
    return path


def run(tmp_path: Path, layout: str = "tyx", axes: str | None = None, **options: object) -> Path:
    """Run a Sobel config on a fresh stack; returns the output group's path."""
    source = write_stack(tmp_path / "in.zarr", layout)
    out = tmp_path / "out.zarr"
    config = {
        "input": {"path": str(source), **({"axes": axes} if axes else {})},
        "kernels": "sobel",
        "stride": options.pop("stride", 1),
        "combine": options.pop("combine", "magnitude"),
        "output": {"path": str(out), "format": options.pop("format", "zarr3")},
    }
    assert not options, options
    convpipe.run(config, progress=False)
    return out


def read_ome(out: Path, zarr_format: int):
    """The image node(s) the ome-zarr reader finds, with every warning an error."""
    fmt = FormatV05() if zarr_format == 3 else FormatV04()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        location = parse_url(str(out), fmt=fmt)
        assert location is not None, f"ome-zarr does not recognise {out}"
        return [node for node in Reader(location)() if node.load(Multiscales)]


def dimension_names(array: zarr.Array) -> tuple[str, ...]:
    if array.metadata.zarr_format == 3:
        return tuple(array.metadata.dimension_names)
    return tuple(array.attrs["_ARRAY_DIMENSIONS"])


@dataclass(frozen=True)
class Case:
    layout: str  # input stack
    axes: str | None  # input.axes
    combine: str
    stride: int | list[int]
    names: tuple[str, ...]  # expected OME axes / output dims
    types: tuple[str, ...]
    scale: tuple[float, ...]


CASES = {
    "default-t-magnitude-stride2": Case(
        "tyx", None, "magnitude", 2, ("t", "y", "x"), ("time", "space", "space"), (1, 2, 2)
    ),
    "tyx-none-stride-2x3": Case(
        "tyx",
        "tyx",
        "none",
        [2, 3],
        ("t", "c", "y", "x"),
        ("time", "channel", "space", "space"),
        (1, 1, 2, 3),
    ),
    "zyx-magnitude-stride2": Case(
        "tyx", "zyx", "magnitude", 2, ("z", "y", "x"), ("space", "space", "space"), (1, 2, 2)
    ),
    "tcyx-none": Case(
        "tcyx", "tcyx", "none", 1, ("t", "c", "y", "x"), ("time", "channel", "space", "space"), (1, 1, 1, 1)
    ),
    "tcyx-magnitude-stride2": Case(
        "tcyx", "tcyx", "magnitude", 2, ("t", "y", "x"), ("time", "space", "space"), (1, 2, 2)
    ),
}


@pytest.mark.parametrize("output_format", ["zarr3", "zarr2"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_ome_reader_sees_named_typed_axes_and_the_stride_as_scale(
    tmp_path: Path, case: Case, output_format: str
) -> None:
    out = run(
        tmp_path, case.layout, case.axes, combine=case.combine, stride=case.stride, format=output_format
    )
    group = zarr.open_group(str(out), mode="r")
    array = group["0"]
    zarr_format = 3 if output_format == "zarr3" else 2
    assert array.metadata.zarr_format == zarr_format

    # Where the metadata lives: NGFF 0.5 under `ome` (Zarr 3), NGFF 0.4 at the top (Zarr 2).
    if zarr_format == 3:
        assert "multiscales" not in group.attrs
        assert group.attrs["ome"]["version"] == "0.5"
        multiscale = group.attrs["ome"]["multiscales"][0]
    else:
        assert "ome" not in group.attrs
        multiscale = group.attrs["multiscales"][0]
        assert multiscale["version"] == "0.4"
    assert [d["path"] for d in multiscale["datasets"]] == ["0"]  # a single resolution

    [node] = read_ome(out, zarr_format)
    axes = node.metadata["axes"]
    assert tuple(a["name"] for a in axes) == case.names
    assert tuple(a["type"] for a in axes) == case.types
    types = [a["type"] for a in axes]
    assert types == sorted(types, key=SPEC_TYPE_ORDER.index)  # spec order
    assert types.count("channel") <= 1 and 2 <= types.count("space") <= 3
    assert dimension_names(array) == case.names

    [transforms] = node.metadata["coordinateTransformations"]  # one dataset: its scale
    assert [(t["type"], t["scale"]) for t in transforms] == [("scale", [float(s) for s in case.scale])]
    # The multiscale's translation (after an identity scale) puts output pixel 0 at the centre of its
    # 3x3 input window.
    identity, translation = multiscale["coordinateTransformations"]
    assert identity["type"] == "scale" and set(identity["scale"]) == {1.0}
    assert translation["type"] == "translation"
    assert translation["translation"][-2:] == [1.0, 1.0]
    assert all(v == 0 for v in translation["translation"][:-2])

    [level] = node.data
    assert level.shape == array.shape
    np.testing.assert_array_equal(np.asarray(level), array[...])


def test_kernel_channels_are_labelled_for_viewers(tmp_path: Path) -> None:
    out = run(tmp_path, combine="none")
    [node] = read_ome(out, 3)
    assert node.metadata["channel_names"] == ["sobel-x", "sobel-y"]


def test_zyx_names_the_output_dims(tmp_path: Path) -> None:
    out = run(tmp_path, axes="zyx")
    array = zarr.open_group(str(out), mode="r")["0"]
    assert array.metadata.dimension_names == ("z", "y", "x")
    z_axis = zarr.open_group(str(out), mode="r").attrs["ome"]["multiscales"][0]["axes"][0]
    assert z_axis == {"name": "z", "type": "space"}


def test_z_stack_with_kernel_channels_has_ome_metadata(tmp_path: Path) -> None:
    out = run(tmp_path, axes="zyx", combine="none")
    [node] = read_ome(out, 3)
    assert [a["name"] for a in node.metadata["axes"]] == ["c", "z", "y", "x"]


# --------------------------------------------------------------------------- xarray


@pytest.mark.parametrize("combine", ["none", "magnitude"])
@pytest.mark.parametrize("output_format", ["zarr3", "zarr2"])
def test_xarray_opens_named_dims_without_warnings(tmp_path: Path, output_format: str, combine: str) -> None:
    out = run(tmp_path, combine=combine, stride=2, format=output_format)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = xr.open_zarr(out, consolidated=False)
        values = dataset["0"].values
    result = dataset["0"]
    stored = zarr.open_group(str(out), mode="r")["0"][...]
    np.testing.assert_array_equal(values, stored)
    if combine == "none":
        assert result.dims == ("t", "c", "y", "x")
        assert list(result["c"].values) == ["sobel-x", "sobel-y"]
        assert result.sel(c="sobel-y").shape == (FRAMES, stored.shape[2], stored.shape[3])
        np.testing.assert_array_equal(result.sel(c="sobel-y").values, stored[:, 1])
    else:
        assert result.dims == ("t", "y", "x")
        assert "c" not in dataset.coords and "c" not in dataset.dims
    assert list(dataset.data_vars) == ["0"]  # the labels are a coordinate, not data
