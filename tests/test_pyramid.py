"""Multiscale pyramids (``output.pyramid``): every level against the 2 x 2 mean oracle, the readers, resume.

Each level is compared byte for byte with ``reference.downsample_mean`` of
the level below as stored (level 0 read back), for odd and even sizes, 2-D
frames, stacks of frames, z stacks with a kernel axis, strides, chunkings and
both Zarr formats; level 0 itself must be the bytes of the same run without a
pyramid. Interrupted runs (SIGKILL of a real ``convpipe run``, and a crash
injected between two levels of one block) resume to the bytes of an
uninterrupted run at every level.
"""

from __future__ import annotations

import signal
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr
from helpers import (
    assert_same_bytes,
    assert_user_error,
    invoke,
    output_record,
    running,
    start_convpipe,
    wait_for_markers,
    write_yaml,
)
from reference import downsample_mean

import convpipe
import convpipe.pyramid
from convpipe.completion import BlockRecorder
from convpipe.sample import sample_stack


@dataclass(frozen=True)
class Case:
    shape: tuple[int, ...]
    dims: tuple[str, ...]
    levels: int
    options: dict[str, Any] = field(default_factory=dict)
    """Top-level config keys (stride, combine) and ``chunks`` / ``dtype`` / ``format``."""


CASES = {
    "tyx-odd-tiles": Case((3, 41, 37), ("t", "y", "x"), 2, {"chunks": [10, 9]}),
    "tyx-stride2": Case((2, 50, 61), ("t", "y", "x"), 2, {"stride": 2, "chunks": [16, 12]}),
    "yx-2d-float64": Case((67, 53), ("y", "x"), 3, {"chunks": [16, 16], "dtype": "float64"}),
    "yx-whole-frame-odd": Case((45, 39), ("y", "x"), 4, {}),
    "zyx-combine-none": Case((4, 30, 34), ("z", "y", "x"), 1, {"combine": "none", "chunks": [12, 12]}),
    "tzyx-whole-frames": Case((2, 3, 26, 22), ("t", "z", "y", "x"), 2, {}),
    "tyx-combine-none-zarr2": Case(
        (2, 36, 40), ("t", "y", "x"), 3, {"combine": "none", "chunks": [16, 24], "format": "zarr2"}
    ),
    "tyx-one-level": Case((2, 33, 33), ("t", "y", "x"), 1, {"chunks": [10, 10]}),
    "tyx-int16-combine-none": Case(
        (2, 38, 43), ("t", "y", "x"), 2, {"combine": "none", "chunks": [16, 16], "dtype": "int16"}
    ),
}


def write_input(path: Path, shape: tuple[int, ...], dims: tuple[str, ...]) -> Path:
    """A uint8 sample stack of ``shape`` (frames flattened over the batch axes) with named axes."""
    frames = int(np.prod(shape[:-2]))
    data = sample_stack(frames, *shape[-2:]).reshape(shape)
    chunks = (1,) * (len(shape) - 2) + shape[-2:]
    zarr.open_group(str(path), mode="w").create_array("0", data=data, chunks=chunks, dimension_names=list(dims))
    return path


def config_for(source: Path, out: Path, pyramid: Any, options: dict[str, Any]) -> dict[str, Any]:
    options = dict(options)
    output = {"path": str(out), "pyramid": pyramid}
    output.update({key: options.pop(key) for key in ("dtype", "format") if key in options})
    chunks = options.pop("chunks", None)
    return {
        "input": {"path": str(source)},
        "kernels": "sobel",
        "combine": options.pop("combine", "magnitude"),
        **options,
        "output": output,
        "compute": {"chunks": chunks, "scheduler": "threads"},
    }


def levels_of(out: Path) -> list[zarr.Array]:
    """The arrays of the output's multiscales datasets, in order."""
    group = zarr.open_group(str(out), mode="r")
    attrs = dict(group.attrs)
    multiscales = (attrs["ome"] if "ome" in attrs else attrs)["multiscales"][0]
    return [group[d["path"]] for d in multiscales["datasets"]]


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_every_level_is_the_2x2_mean_of_the_level_below(tmp_path: Path, case: Case) -> None:
    source = write_input(tmp_path / "in.zarr", case.shape, case.dims)
    out, plain = tmp_path / "out.zarr", tmp_path / "plain.zarr"
    config = config_for(source, out, case.levels, case.options)
    the_plan = convpipe.plan(config)
    assert the_plan.levels == case.levels
    convpipe.run(the_plan, progress=False)
    convpipe.run(config_for(source, plain, 0, case.options), progress=False)

    arrays = levels_of(out)
    assert [a.path.rsplit("/", 1)[-1] for a in arrays] == [str(k) for k in range(case.levels + 1)]
    assert_same_bytes(arrays[0][...], zarr.open_group(str(plain), mode="r")["0"][...])
    blocks = the_plan.geometry.output_chunks
    for axis in (-2, -1):  # every block but the last holds whole level-N windows
        assert all(size % 2**case.levels == 0 for size in blocks[axis][:-1]), blocks
    expected = arrays[0][...]
    for k, array in enumerate(arrays[1:], start=1):
        expected = downsample_mean(expected)
        assert array.shape == arrays[0].shape[:-2] + tuple(n // 2**k for n in arrays[0].shape[-2:])
        assert array.dtype == arrays[0].dtype
        values = array[...]
        unwritten = np.isnan(values) if values.dtype.kind == "f" else values == array.fill_value
        assert not unwritten.any(), f"level {k} has unwritten pixels"
        assert_same_bytes(array[...], expected)
        # One writer per stored chunk: a level-k chunk is the level-0 block shape / 2**k (whole level if one block).
        for axis in (-2, -1):
            assert array.chunks[axis] == max(1, blocks[axis][0] // 2**k)
        assert array.chunks[:-2] == arrays[0].chunks[:-2]


def test_multiscales_list_every_level_with_its_scale_and_translation(tmp_path: Path) -> None:
    """Each level's pixel i sits at dataset scale * i + dataset shift, then the multiscale's translation."""
    source = write_input(tmp_path / "in.zarr", (2, 40, 44), ("t", "y", "x"))
    out = tmp_path / "out.zarr"
    convpipe.run(config_for(source, out, 3, {"stride": [1, 2], "chunks": [16, 16]}), progress=False)
    multiscale = dict(zarr.open_group(str(out), mode="r").attrs)["ome"]["multiscales"][0]
    datasets = multiscale["datasets"]
    assert [d["path"] for d in datasets] == ["0", "1", "2", "3"]
    outer = {t["type"]: t[t["type"]] for t in multiscale["coordinateTransformations"]}
    assert outer["scale"] == [1.0, 1.0, 1.0]

    def placement(dataset):  # (scale, translation) of the whole chain, per axis
        steps = {t["type"]: t[t["type"]] for t in dataset["coordinateTransformations"]}
        shift = steps.get("translation", [0.0] * 3)
        return steps["scale"], [a + b for a, b in zip(shift, outer["translation"])]

    scale0, translation0 = placement(datasets[0])
    assert scale0 == [1.0, 1.0, 2.0]
    for k, dataset in enumerate(datasets):
        scale, translation = placement(dataset)
        assert scale[0] == 1.0 and translation[0] == translation0[0]
        for axis in (1, 2):
            level0_positions = translation0[axis] + scale0[axis] * np.arange(2**k)  # the pixels a level-k pixel averages
            assert scale[axis] == scale0[axis] * 2**k
            assert translation[axis] == pytest.approx(level0_positions.mean(), abs=1e-12)


def test_napari_ome_zarr_reads_every_level_as_one_multiscale_layer(tmp_path: Path) -> None:
    napari_ome_zarr = pytest.importorskip("napari_ome_zarr")
    source = write_input(tmp_path / "in.zarr", (2, 70, 66), ("t", "y", "x"))
    out = tmp_path / "out.zarr"
    convpipe.run(config_for(source, out, 3, {"chunks": [16, 16]}), progress=False)
    layers = napari_ome_zarr.napari_get_reader(str(out))(str(out))
    assert len(layers) == 1
    data, kwargs, kind = layers[0]
    assert kind == "image" and isinstance(data, list)
    stored = levels_of(out)
    assert [tuple(level.shape) for level in data] == [a.shape for a in stored] == [
        (2, 68, 64), (2, 34, 32), (2, 17, 16), (2, 8, 8)
    ]
    for level, array in zip(data, stored):
        assert_same_bytes(np.asarray(level), array[...])
    assert kwargs["axis_labels"] == ("t", "y", "x")


def test_xarray_and_zarr_open_level_0_unchanged(tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.zarr", (3, 48, 40), ("t", "y", "x"))
    with_levels, plain = tmp_path / "pyramid.zarr", tmp_path / "plain.zarr"
    convpipe.run(config_for(source, with_levels, 2, {"combine": "none", "chunks": [16, 16]}), progress=False)
    convpipe.run(config_for(source, plain, 0, {"combine": "none", "chunks": [16, 16]}), progress=False)
    reference = xr.open_zarr(plain)["0"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opened = xr.open_zarr(with_levels, drop_variables=["1", "2"])["0"]
    xr.testing.assert_equal(opened.load(), reference.load())  # the same dims, coordinates and values
    assert opened.attrs["convpipe"]["config"]["output"]["pyramid"] == 2  # the record says how it was made
    assert_same_bytes(zarr.open_group(str(with_levels), mode="r")["0"][...], reference.values)
    api = convpipe.open_output(str(with_levels))
    assert api.dims == ("t", "c", "y", "x") and api.shape == reference.shape
    assert_same_bytes(api.values, reference.values)


# --------------------------------------------------------------------------- how many levels


@pytest.mark.parametrize(
    ("frame", "expected"),
    [((1100, 600), 2), ((1026, 1026), 2), ((1024, 1024), 1), ((512, 512), 0), ((200, 3000), 3), ((1, 5000), 0)],
)
def test_auto_halves_until_the_larger_side_is_at_most_512(frame: tuple[int, int], expected: int) -> None:
    levels = convpipe.pyramid.levels_for("auto", frame)
    assert levels == expected
    assert max(frame) >> levels <= 512 or min(frame) >> (levels + 1) == 0
    assert levels == 0 or max(frame) >> (levels - 1) > 512
    assert min(frame) >> levels >= 1


def test_auto_on_a_run_writes_the_levels_it_needs(tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.zarr", (1, 1102, 602), ("t", "y", "x"))
    out = tmp_path / "out.zarr"
    the_plan = convpipe.plan(config_for(source, out, "auto", {}))  # output 1100 x 600
    assert the_plan.levels == 2
    assert "pyramid   2 level(s) below 0, down to (1, 275, 150)" in str(the_plan)  # what validate prints
    convpipe.run(the_plan, progress=False)
    arrays = levels_of(out)
    assert [a.shape for a in arrays] == [(1, 1100, 600), (1, 550, 300), (1, 275, 150)]
    assert sorted(zarr.open_group(str(out), mode="r").array_keys()) == ["0", "1", "2"]


def test_small_outputs_get_no_levels_with_auto_and_none_by_default(tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.zarr", (2, 40, 40), ("t", "y", "x"))
    for pyramid, name in (("auto", "auto.zarr"), (0, "none.zarr")):
        convpipe.run(config_for(source, tmp_path / name, pyramid, {}), progress=False)
        assert sorted(zarr.open_group(str(tmp_path / name), mode="r").array_keys()) == ["0"]
        assert len(levels_of(tmp_path / name)) == 1


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("-1", "-1"), ("two", "'two'"), ("true", "True"), ("1.5", "1.5"), ("31", "31"), ("[2]", "[2]")],
)
def test_a_bad_pyramid_value_is_one_line_with_its_yaml_line(
    tmp_path: Path, write_config, value: str, fragment: str
) -> None:
    text = f"input:\n  path: in.zarr\nkernels: sobel\noutput:\n  path: out.zarr\n  pyramid: {value}\n"
    config = write_config(tmp_path, text)
    message = assert_user_error(invoke("validate", config), "output.pyramid", "or auto", fragment)
    assert message.startswith(f"{config}:6: output.pyramid: must be a number of levels")


def test_more_levels_than_the_output_holds_is_refused_before_anything_runs(tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.zarr", (1, 20, 40), ("t", "y", "x"))  # output 18 x 38: 4 levels fit
    out = tmp_path / "out.zarr"
    config = write_yaml(tmp_path / "run.yaml", config_for(source, out, 5, {}))
    line = config.read_text().splitlines().index("  pyramid: 5") + 1
    message = assert_user_error(invoke("run", config), "output.pyramid", "at most 4 fit")
    assert message.startswith(f"{config}:{line}: output.pyramid: 5 levels")
    assert not out.exists()


def test_the_planner_counts_the_levels_in_the_memory_of_a_task(tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.zarr", (2, 130, 130), ("t", "y", "x"))
    plain = convpipe.plan(config_for(source, tmp_path / "a.zarr", 0, {"chunks": [64, 64]}))
    levels = convpipe.plan(config_for(source, tmp_path / "b.zarr", 2, {"chunks": [64, 64]}))
    assert plain.geometry.output_chunks == levels.geometry.output_chunks
    level_bytes = (32 * 32 + 16 * 16) * 4  # levels 1 and 2 of a 64 x 64 float32 block
    assert levels.task_memory() - plain.task_memory() >= level_bytes


# --------------------------------------------------------------------------- interrupted runs


def reference_levels(folder: Path, source: Path, levels: int, options: dict[str, Any]) -> list[np.ndarray]:
    out = folder / "reference.zarr"
    convpipe.run(config_for(source, out, levels, options), progress=False)
    return [a[...] for a in levels_of(out)]


def test_sigkill_mid_pyramid_then_resume_gives_the_uninterrupted_bytes_at_every_level(tmp_path: Path) -> None:
    options = {"chunks": [32, 32]}  # 576 blocks in one slab: seconds of writing to interrupt
    source = write_input(tmp_path / "in.zarr", (1, 770, 770), ("t", "y", "x"))
    expected = reference_levels(tmp_path, source, 3, options)
    out = tmp_path / "out.zarr"
    config = write_yaml(tmp_path / "run.yaml", config_for(source, out, 3, options))
    with running(start_convpipe(["run", config, "--quiet"], tmp_path / "logs")) as proc:
        wait_for_markers(out, 10, proc)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    recorded = BlockRecorder(str(out)).done()
    assert 0 < len(recorded) < 576, "the run was not killed in the middle"
    assert output_record(out)["complete"] is False

    result = invoke("run", config, "--resume")
    assert result.exit_code == 0, result.output
    assert output_record(out)["complete"] is True
    for array, reference in zip(levels_of(out), expected, strict=True):
        assert_same_bytes(array[...], reference)


def test_a_block_whose_levels_were_not_all_written_is_computed_again(tmp_path: Path, monkeypatch) -> None:
    options = {"chunks": [16, 16]}
    source = write_input(tmp_path / "in.zarr", (2, 66, 66), ("t", "y", "x"))  # 2 slabs x 16 blocks
    expected = reference_levels(tmp_path, source, 2, options)
    out = tmp_path / "out.zarr"
    calls = []
    original = convpipe.pyramid.downsample_mean

    def crash_at_level_2_of_the_sixth_block(block):
        calls.append(block.shape)
        if len(calls) == 5 * 2 + 2:  # levels 1 and 2 of five blocks, then level 1 and 2 of the sixth
            raise RuntimeError("killed between two levels")
        return original(block)

    config = config_for(source, out, 2, options)
    config["compute"]["scheduler"] = "synchronous"
    monkeypatch.setattr(convpipe.pyramid, "downsample_mean", crash_at_level_2_of_the_sixth_block)
    with pytest.raises(RuntimeError, match="killed between two levels"):
        convpipe.run(config, progress=False)
    monkeypatch.undo()

    recorded = BlockRecorder(str(out)).done()
    assert len(recorded) == 5
    level0, level1, level2 = (a[...] for a in levels_of(out))
    blocks_written = {(t, i, j) for t, i, j in np.ndindex(2, 4, 4) if not np.isnan(level0[t, 16 * i, 16 * j])}
    (half_done,) = blocks_written - recorded  # level 0 and 1 stored, level 2 not, no record
    t, i, j = half_done
    assert not np.isnan(level1[t, 8 * i : 8 * i + 8, 8 * j : 8 * j + 8]).any()
    assert np.isnan(level2[t, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4]).all()

    config["compute"]["scheduler"] = "threads"
    summary = convpipe.run(config, resume=True, progress=False)
    assert summary.blocks_computed == 32 - 5
    for array, reference in zip(levels_of(out), expected, strict=True):
        assert_same_bytes(array[...], reference)


def test_resume_refuses_another_pyramid_setting(tmp_path: Path, monkeypatch) -> None:
    source = write_input(tmp_path / "in.zarr", (2, 40, 40), ("t", "y", "x"))
    out = tmp_path / "out.zarr"
    config = config_for(source, out, 1, {"chunks": [16, 16]})
    config["compute"]["scheduler"] = "synchronous"
    monkeypatch.setattr(convpipe.pyramid, "downsample_mean", lambda block: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        convpipe.run(config, progress=False)
    monkeypatch.undo()
    config["output"]["pyramid"] = 2
    with pytest.raises(convpipe.errors.ResumeError, match="differs in: output"):
        convpipe.run(config, resume=True, progress=False)
