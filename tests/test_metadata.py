"""Names and OME-NGFF metadata on their own: axis names, the kernel axis, multiscales."""

from __future__ import annotations

import pytest

from convpipe.geometry import plan_geometry
from convpipe.metadata import (
    input_axis_names,
    kernel_axis_position,
    ome_compatible,
    ome_multiscales,
    output_axis_names,
)


def geometry(shape, combine="none", channel_axis=None, kernel=(3, 5), stride=(2, 3), n_kernels=2, names=None):
    others = [a for a in range(len(shape)) if a != channel_axis]
    names = names or input_axis_names(len(shape), channel_axis, None)
    position = kernel_axis_position(tuple(names[a] for a in others[:-2]))
    return plan_geometry(
        shape, shape, 1, 4, channel_axis, kernel, n_kernels, stride, combine, kernel_position=position
    )


@pytest.mark.parametrize(
    ("ndim", "channel_axis", "axes", "expected"),
    [
        pytest.param(2, None, None, ("y", "x"), id="image"),
        pytest.param(3, None, None, ("t", "y", "x"), id="movie"),
        pytest.param(4, None, None, ("t", "z", "y", "x"), id="movie-of-volumes"),
        pytest.param(4, 3, None, ("t", "y", "x", "c"), id="channel-last"),
        pytest.param(5, None, None, ("dim_0", "dim_1", "dim_2", "y", "x"), id="three-batch-axes"),
        pytest.param(3, None, "zyx", ("z", "y", "x"), id="named"),
    ],
)
def test_input_axis_names(ndim, channel_axis, axes, expected) -> None:
    assert input_axis_names(ndim, channel_axis, axes) == expected


@pytest.mark.parametrize(
    ("shape", "channel_axis", "combine", "names", "expected"),
    [
        pytest.param((4, 20, 30), None, "none", None, ("t", "c", "y", "x"), id="kernel-axis-before-space"),
        pytest.param((4, 20, 30), None, "magnitude", None, ("t", "y", "x"), id="magnitude-has-none"),
        pytest.param((4, 20, 30, 3), 3, "none", None, ("t", "c", "y", "x"), id="input-channels-consumed"),
        pytest.param(
            (2, 5, 20, 30), None, "none", ("t", "z", "y", "x"), ("t", "c", "z", "y", "x"), id="before-z"
        ),
    ],
)
def test_output_axis_names(shape, channel_axis, combine, names, expected) -> None:
    names = names or input_axis_names(len(shape), channel_axis, None)
    g = geometry(shape, combine, channel_axis, names=names)
    assert output_axis_names(g, names) == expected
    assert len(expected) == len(g.output_shape)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (("y", "x"), True),
        (("t", "c", "z", "y", "x"), True),
        (("c", "t", "y", "x"), False),  # OME orders t before c
        (("t", "dim_1", "y", "x"), False),  # not an OME axis name
        (("t", "c"), False),  # fewer than two spatial axes
    ],
)
def test_ome_compatible(names, expected) -> None:
    assert ome_compatible(names) is expected


def test_ome_05_multiscales_scale_by_the_stride_and_centre_the_window() -> None:
    g = geometry((4, 20, 30), "none", kernel=(3, 5), stride=(2, 3))
    attrs = ome_multiscales(("t", "c", "y", "x"), g, ("gx", "gy"), "0.5")
    ome = attrs["ome"]
    assert ome["version"] == "0.5" and list(attrs) == ["ome"]
    (multiscale,) = ome["multiscales"]
    assert [(a["name"], a["type"]) for a in multiscale["axes"]] == [
        ("t", "time"),
        ("c", "channel"),
        ("y", "space"),
        ("x", "space"),
    ]
    (dataset,) = multiscale["datasets"]
    assert dataset["path"] == "0"
    scale, translation = dataset["coordinateTransformations"]
    assert scale == {"type": "scale", "scale": [1.0, 1.0, 2.0, 3.0]}
    assert translation == {"type": "translation", "translation": [0.0, 0.0, 1.0, 2.0]}
    assert [c["label"] for c in ome["omero"]["channels"]] == ["gx", "gy"]


def test_ome_04_has_the_version_per_multiscale_and_magnitude_no_channels() -> None:
    g = geometry((4, 20, 30), "magnitude")
    attrs = ome_multiscales(("t", "y", "x"), g, ("gx", "gy"), "0.4")
    assert list(attrs) == ["multiscales"]
    assert attrs["multiscales"][0]["version"] == "0.4"
    assert "omero" not in attrs
