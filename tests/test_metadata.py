"""Axes and OME-NGFF metadata on their own: roles from names, the kernel axis, scale and translation."""

from __future__ import annotations

import pytest
from ome_zarr_models.v04.image import ImageAttrs as ImageAttrs04
from ome_zarr_models.v05.image import ImageAttrs as ImageAttrs05

from convpipe.axes import AxisInfo, SourceAxes, kernel_position, output_axes, resolve_axes, unnamed
from convpipe.errors import ConfigError, InputError
from convpipe.geometry import plan_geometry
from convpipe.metadata import GREY, PALETTE, OutputAxis, ome_compatible, ome_multiscales, with_windows


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


def physical_position(multiscale: dict, index: list[float]) -> list[float]:
    """Where pixel ``index`` of dataset 0 sits: its transformations, then the multiscale's, in order (NGFF 0.4/0.5)."""
    position = list(map(float, index))
    for t in multiscale["datasets"][0]["coordinateTransformations"] + multiscale.get(
        "coordinateTransformations", []
    ):
        if t["type"] == "scale":
            position = [p * s for p, s in zip(position, t["scale"])]
        else:
            position = [p + d for p, d in zip(position, t["translation"])]
    return position


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_ome_multiscales_scale_by_the_stride_and_centre_the_window(version: str) -> None:
    _, _, out = plan_axes((4, 20, 30), combine="none", kernel=(3, 5), stride=(2, 3))
    attrs = ome_multiscales(out, version)
    if version == "0.5":
        assert list(attrs) == ["ome"] and attrs["ome"]["version"] == "0.5"
        ome = attrs["ome"]
    else:
        assert sorted(attrs) == ["multiscales", "omero"] and attrs["multiscales"][0]["version"] == "0.4"
        ome = attrs
    (multiscale,) = ome["multiscales"]
    assert [(a["name"], a["type"]) for a in multiscale["axes"]] == [
        ("t", "time"),
        ("c", "channel"),
        ("y", "space"),
        ("x", "space"),
    ]
    (dataset,) = multiscale["datasets"]
    assert dataset["path"] == "0"
    # Output pixel (y, x) = (0, 0) sits at the centre of its 3 x 5 window, (1, 2); one step is the stride.
    assert physical_position(multiscale, [0, 0, 0, 0]) == [0.0, 0.0, 1.0, 2.0]
    assert physical_position(multiscale, [3, 1, 4, 5]) == [3.0, 1.0, 1.0 + 2 * 4, 2.0 + 3 * 5]
    # napari-ome-zarr 0.10 reads the dataset's first transformation and the multiscale one whose input
    # names that one's output: the scale and the translation.
    [scale] = dataset["coordinateTransformations"]
    [picked] = [
        t
        for t in multiscale["coordinateTransformations"]
        if t.get("input", {}).get("name") == scale.get("output", {}).get("name")
    ]
    assert scale["scale"] == [1.0, 1.0, 2.0, 3.0] and picked["translation"] == [0.0, 0.0, 1.0, 2.0]
    channels = ome["omero"]["channels"]
    assert [c["label"] for c in channels] == ["gx", "gy"]
    assert all(c["active"] for c in channels)
    assert len({c["color"] for c in channels}) == 2


def test_a_translation_alone_on_the_multiscale_is_not_valid_ngff() -> None:
    """Why the multiscale keeps an identity scale before its translation (a layout napari could also read)."""
    _, _, out = plan_axes((4, 20, 30), combine="magnitude")
    ome = with_windows(ome_multiscales(out, "0.5"), [{"min": 0, "max": 1, "start": 0, "end": 1}])["ome"]
    ImageAttrs05.model_validate(ome)
    ome["multiscales"][0]["coordinateTransformations"] = ome["multiscales"][0]["coordinateTransformations"][
        1:
    ]
    with pytest.raises(ValueError, match="coordinateTransformations"):
        ImageAttrs05.model_validate(ome)


@pytest.mark.parametrize("kernels", [1, 2, 8, 9])
def test_omero_colours_are_distinct_and_a_single_channel_is_grey(kernels: int) -> None:
    labels = tuple(f"k{i}" for i in range(kernels))
    axes = (OutputAxis("t", "time"), OutputAxis("c", "channel", labels=labels), OutputAxis("y", "space"))
    axes += (OutputAxis("x", "space"),)
    colours = [c["color"] for c in ome_multiscales(axes, "0.5")["ome"]["omero"]["channels"]]
    assert all(len(c) == 6 and int(c, 16) >= 0 for c in colours)
    if kernels == 1:
        assert colours == [GREY]
    else:
        assert len(set(colours)) == min(kernels, len(PALETTE))
        assert GREY not in colours and "000000" not in colours


def test_magnitude_has_no_channel_axis_but_one_omero_channel() -> None:
    _, _, out = plan_axes((4, 20, 30), combine="magnitude")
    attrs = ome_multiscales(out, "0.4", single_label="magnitude")
    assert "c" not in [a["name"] for a in attrs["multiscales"][0]["axes"]]
    assert attrs["omero"]["channels"] == [{"label": "magnitude", "color": GREY, "active": True}]


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_windows_go_to_their_channels_and_the_result_is_valid_ngff(version: str) -> None:
    _, _, out = plan_axes((4, 20, 30), combine="none")
    windows = [
        {"min": -9.0, "max": 9.0, "start": -4.0, "end": 4.0},
        {"min": -2.0, "max": 3.0, "start": -1.0, "end": 2.0},
    ]
    attrs = with_windows(ome_multiscales(out, version), windows)
    ome = attrs["ome"] if version == "0.5" else attrs
    assert [c["window"] for c in ome["omero"]["channels"]] == windows
    (ImageAttrs05 if version == "0.5" else ImageAttrs04).model_validate(ome)
    with pytest.raises(ValueError, match="1 windows for 2"):
        with_windows(ome_multiscales(out, version), windows[:1])
