"""Axes and OME-NGFF metadata on their own: roles from names, the kernel axis, scale and translation."""

from __future__ import annotations

import pytest

from convpipe.axes import AxisInfo, SourceAxes, kernel_position, output_axes, resolve_axes, unnamed
from convpipe.errors import ConfigError, InputError
from convpipe.geometry import plan_geometry
from convpipe.metadata import OutputAxis, ome_compatible, ome_multiscales


def named(*names: str, origin: str = "dimension_names", **info) -> SourceAxes:
    return SourceAxes(tuple(AxisInfo(n, **info.get(n, {})) for n in names), origin)


def plan_axes(shape, source=None, combine="none", kernel=(3, 5), stride=(2, 3), **overrides):
    axes = resolve_axes(source or unnamed(len(shape)), shape, **overrides)
    g = plan_geometry(
        shape,
        shape,
        1,
        4,
        axes.channel_axis,
        kernel,
        2,
        stride,
        combine,
        kernel_position=kernel_position(axes, axes.batch_axes),
    )
    return axes, g, output_axes(axes, g, ("gx", "gy"))


@pytest.mark.parametrize(
    ("shape", "source", "overrides", "names", "roles"),
    [
        pytest.param((20, 30), None, {}, ("y", "x"), "ss", id="image"),
        pytest.param((3, 20, 30), None, {}, ("t", "y", "x"), "bss", id="movie"),
        pytest.param((2, 3, 20, 30), None, {}, ("t", "z", "y", "x"), "bbss", id="movie-of-volumes"),
        pytest.param(
            (2, 20, 30, 3), None, {"channel_axis": 3}, ("t", "y", "x", "c"), "bssc", id="channel-last"
        ),
        pytest.param((3, 20, 30), None, {"axes": "zyx"}, ("z", "y", "x"), "bss", id="input-axes"),
        pytest.param(
            (2, 20, 30, 3), named("t", "y", "x", "c"), {}, ("t", "y", "x", "c"), "bssc", id="named-c"
        ),
        pytest.param(
            (3, 20, 30),
            named("channel", "row", "col"),
            {},
            ("channel", "row", "col"),
            "css",
            id="xarray-channel",
        ),
        pytest.param((4, 20, 30), named("z", "y", "x"), {}, ("z", "y", "x"), "bss", id="named-z"),
        pytest.param(
            (2, 4, 20, 30),
            named("t", "ch", "y", "x", ch={"type": "channel"}, origin="OME-NGFF"),
            {},
            ("t", "ch", "y", "x"),
            "bcss",
            id="ome-channel-type",
        ),
    ],
)
def test_roles_follow_the_names(shape, source, overrides, names, roles) -> None:
    axes = resolve_axes(source or unnamed(len(shape)), shape, **overrides)
    assert axes.names == names
    assert "".join(axes.role(a)[0] for a in range(len(shape))) == roles


@pytest.mark.parametrize(
    ("shape", "source", "overrides", "error", "fragment"),
    [
        pytest.param((4, 64, 64, 3), None, {}, InputError, "set input.axes (e.g. tyxc", id="ambiguous"),
        pytest.param(
            (4, 64, 64, 3),
            named("t", "y", "x", "c"),
            {"channel_axis": 1},
            ConfigError,
            "1 contradicts the input's own axis names",
            id="channel-axis-vs-names",
        ),
        pytest.param(
            (4, 64, 64, 3),
            named("t", "y", "x", "c"),
            {"axes": "tyxz"},
            ConfigError,
            "'tyxz' contradicts",
            id="axes-vs-names",
        ),
        pytest.param(
            (4, 64, 64),
            None,
            {"axes": "yx"},
            ConfigError,
            "names 2 axes but the input has 3",
            id="axes-length",
        ),
        pytest.param(
            (20, 30, 4), named("y", "x", "t"), {}, InputError, "must be the last two", id="yx-not-last"
        ),
    ],
)
def test_contradictions_and_ambiguity_are_refused(shape, source, overrides, error, fragment) -> None:
    with pytest.raises(error, match=None) as info:
        resolve_axes(source or unnamed(len(shape)), shape, **overrides)
    assert fragment in str(info.value)
    assert info.value.key in ("input.axes", "input.channel_axis")


def test_an_unnamed_narrow_last_axis_is_fine_once_named_or_long() -> None:
    assert resolve_axes(unnamed(3), (4, 64, 3), axes="tyx").channel_axis is None
    assert (
        resolve_axes(
            unnamed(4),
            (4, 64, 64, 5),
        ).channel_axis
        is None
    )  # 5 > 4: not colour samples
    assert resolve_axes(unnamed(4), (4, 64, 16, 3)).channel_axis is None  # 16 wide: an image, not samples


@pytest.mark.parametrize(
    ("shape", "overrides", "combine", "expected"),
    [
        pytest.param((4, 20, 30), {}, "none", ("t", "c", "y", "x"), id="kernel-axis-before-space"),
        pytest.param((4, 20, 30), {}, "magnitude", ("t", "y", "x"), id="magnitude-has-none"),
        pytest.param(
            (4, 20, 30, 3), {"channel_axis": 3}, "none", ("t", "c", "y", "x"), id="channels-consumed"
        ),
        pytest.param((2, 5, 20, 30), {"axes": "tzyx"}, "none", ("t", "c", "z", "y", "x"), id="before-z"),
    ],
)
def test_output_axis_names(shape, overrides, combine, expected) -> None:
    _, g, out = plan_axes(shape, combine=combine, **overrides)
    assert tuple(a.name for a in out) == expected
    assert len(expected) == len(g.output_shape)


def test_units_scale_and_translation_follow_the_input() -> None:
    source = named(
        "z",
        "y",
        "x",
        origin="OME-NGFF",
        z={"type": "space", "unit": "micrometer", "scale": 2.0, "translation": 5.0},
        y={"type": "space", "unit": "micrometer", "scale": 0.5, "translation": 10.0},
        x={"type": "space", "unit": "micrometer", "scale": 0.25},
    )
    _, _, out = plan_axes((4, 20, 30), source, combine="magnitude", kernel=(3, 5), stride=(2, 3))
    assert [(a.name, a.type, a.unit) for a in out] == [("z", "space", "micrometer")] * 1 + [
        ("y", "space", "micrometer"),
        ("x", "space", "micrometer"),
    ]
    assert [a.scale for a in out] == [2.0, 1.0, 0.75]
    assert [a.translation for a in out] == [5.0, 10.0 + 0.5 * 1, 0.25 * 2]


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (("y", "x"), True),
        (("t", "c", "z", "y", "x"), True),
        (("c", "t", "y", "x"), False),  # OME orders t before c
        (("t", "dim_1", "y", "x"), False),  # an axis without an OME type
        (("t", "c"), False),  # fewer than two spatial axes
    ],
)
def test_ome_compatible(names, expected) -> None:
    types = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    assert ome_compatible(tuple(OutputAxis(n, types.get(n)) for n in names)) is expected


def test_ome_05_multiscales_scale_by_the_stride_and_centre_the_window() -> None:
    _, _, out = plan_axes((4, 20, 30), combine="none", kernel=(3, 5), stride=(2, 3))
    attrs = ome_multiscales(out, "0.5")
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
    _, _, out = plan_axes((4, 20, 30), combine="magnitude")
    attrs = ome_multiscales(out, "0.4")
    assert list(attrs) == ["multiscales"]
    assert attrs["multiscales"][0]["version"] == "0.4"
    assert "omero" not in attrs
