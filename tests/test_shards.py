"""Sharded output (``output.shards``, Zarr v3): exact, one stored object per shard, readable, resumable.

Every shard must be written whole by exactly one task (a write to part of a
shard is a read-modify-write of the whole object, and two tasks doing it race).
The tests check the result against the oracle and the unsharded run bit for
bit, count the stored objects on disk, watch the store for reads of shards
during the writes, open the output with the readers users have, kill a real
run and resume it, and check what sharded inputs do to the resume records.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import signal
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr
from helpers import (
    Stack,
    assert_same_bytes,
    assert_user_error,
    interrupted_run,
    invoke,
    make_config,
    output_record,
    read_output,
    resumed_counts,
    run_config,
    running,
    shared_stack,
    start_convpipe,
    wait_for_markers,
    write_yaml,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import SOBEL, correlate_loop, magnitude

import convpipe
from convpipe.completion import BlockRecorder
from convpipe.geometry import plan_geometry
from convpipe.pipeline import result_array, write_tasks
from convpipe.sample import sample_stack, write_sample
from convpipe.shards import AUTO_MIN_SHARDS, AUTO_SHARD_BYTES, auto_shards, blocks_of_whole_shards

BIG_SHAPE = (1, 768, 768)  # as in test_resume.py: a run long enough to be killed in the middle


def sharded_config(source: Path, out: Path, shards, **options) -> dict:
    """:func:`helpers.run_config` with ``output.shards: shards``."""
    config = run_config(source, out, **options)
    config["output"]["shards"] = shards if isinstance(shards, str) or shards is None else list(shards)
    return config


def sharded_run(tmp_path: Path, shape, shards, name="out.zarr", **options) -> tuple[dict, Path]:
    """A sample input of ``shape`` and its output with ``output.shards: shards``; returns (config, output)."""
    source = tmp_path / "in.zarr"
    if not source.exists():
        write_sample(str(source), *shape)
    out = tmp_path / name
    config = sharded_config(source, out, shards, **options)
    convpipe.run(config, progress=False)
    return config, out


def stored_objects(out: Path) -> list[str]:
    """The stored objects (chunk or shard files) of the result array, as their keys."""
    root = out / "0" / "c"
    return sorted(str(p.relative_to(out / "0")) for p in root.rglob("*") if p.is_file())


def expected_keys(shape: tuple[int, ...], grid: tuple[int, ...]) -> list[str]:
    counts = [-(-n // g) for n, g in zip(shape, grid)]
    return sorted("c/" + "/".join(map(str, index)) for index in itertools.product(*map(range, counts)))


# --------------------------------------------------------------------------- exact, and the files on disk

CASES = {
    # shape, stride, compute.chunks, combine, shards
    "tiles-2x2-chunks": ((3, 96, 128), 1, (32, 32), "magnitude", (1, 64, 64)),
    "frames-and-tiles": ((5, 96, 128), 1, (32, 32), "magnitude", (2, 32, 96)),
    "stride-2": ((4, 97, 131), 2, (32, 32), "magnitude", (3, 32, 48)),
    "stride-3-whole-frames": ((6, 61, 70), 3, None, "magnitude", (4, 20, 23)),
    "kernel-axis": ((3, 64, 80), [1, 2], (32, 40), "none", (2, 2, 64, 40)),
    "larger-than-the-output": ((2, 40, 50), 1, (16, 16), "magnitude", (8, 64, 64)),
    "auto": ((6, 96, 128), 1, (32, 32), "magnitude", "auto"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_sharded_output_equals_the_reference_and_the_unsharded_bits(tmp_path: Path, case) -> None:
    shape, stride, chunks, combine, shards = case
    config, out = sharded_run(tmp_path, shape, shards, stride=stride, chunks=chunks, combine=combine)
    _, plain = sharded_run(tmp_path, shape, None, "plain.zarr", stride=stride, chunks=chunks, combine=combine)

    s = (stride, stride) if isinstance(stride, int) else tuple(stride)
    responses = correlate_loop(sample_stack(*shape)[:, None], SOBEL, s)
    expected = magnitude(responses) if combine == "magnitude" else responses
    got = read_output(out)
    np.testing.assert_allclose(got, expected.astype(np.float32), rtol=1e-6)
    assert_same_bytes(got, read_output(plain))  # sharding changes no bit

    array = zarr.open_group(str(out), mode="r")["0"]
    plain_array = zarr.open_group(str(plain), mode="r")["0"]
    assert array.chunks == plain_array.chunks  # the chunks inside the shards are the unsharded ones
    assert array.shards is not None and all(s % c == 0 for s, c in zip(array.shards, array.chunks))
    if shards != "auto":
        assert array.shards == tuple(min(s, -(-n // c) * c) for s, c, n in zip(shards, array.chunks, array.shape))
    # One stored object per shard, none per inner chunk; the unsharded output has one per chunk.
    assert stored_objects(out) == expected_keys(array.shape, array.shards)
    assert stored_objects(plain) == expected_keys(array.shape, array.chunks)
    assert len(stored_objects(out)) < len(stored_objects(plain))
    # Every block (task) covers whole shards, and the records count blocks.
    chunks_of_blocks = convpipe.plan(config).geometry.output_chunks
    for sizes, shard, n in zip(chunks_of_blocks, array.shards, array.shape):
        edges = np.cumsum(sizes)
        assert all(edge % shard == 0 for edge in edges[:-1]) and edges[-1] == n
    assert len(BlockRecorder(str(out)).done()) == output_record(out)["blocks"] == math.prod(map(len, chunks_of_blocks))
    assert output_record(out)["determined_by"]["output"]["shards"] == list(array.shards)


def test_auto_shards_are_whole_blocks_and_spread_a_small_output(tmp_path: Path) -> None:
    shape = (8, 96, 128)
    config, out = sharded_run(tmp_path, shape, "auto", chunks=(32, 32))
    unsharded = convpipe.plan(config | {"output": {"path": str(tmp_path / "x.zarr")}}).geometry
    array = zarr.open_group(str(out), mode="r")["0"]
    blocks = [c[0] for c in unsharded.output_chunks]
    assert all(s % b == 0 for s, b in zip(array.shards, blocks))  # made of whole processing blocks
    assert array.shards != tuple(blocks)  # more than one block each
    assert math.prod(array.shards) <= math.prod(array.shape) / AUTO_MIN_SHARDS
    assert len(stored_objects(out)) >= AUTO_MIN_SHARDS  # a small output still spreads over many tasks


@pytest.mark.parametrize("shards", [[2, 2, 2, 32, 48], "auto"], ids=["explicit", "auto"])
def test_two_batch_axes_and_a_kernel_axis_between_them(tmp_path: Path, shards) -> None:
    """A (t, z, y, x) stack with ``combine: none``: the output is (t, c, z, y, x), shards in that order."""
    x = (np.random.default_rng(1).random((2, 3, 40, 50)) * 255).astype("uint8")
    source = tmp_path / "in.zarr"
    group = zarr.open_group(str(source), mode="w")
    group.create_array("0", shape=x.shape, chunks=(1, 1, 40, 50), dtype="uint8", dimension_names=["t", "z", "y", "x"])
    group["0"][...] = x
    config = sharded_config(source, tmp_path / "out.zarr", shards, combine="none", chunks=(16, 16))
    convpipe.run(config, progress=False)
    array = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["0"]
    assert array.metadata.dimension_names == ("t", "c", "z", "y", "x")
    assert array.chunks == (1, 2, 1, 16, 16) and array.shards[1] == 2
    expected = np.moveaxis(correlate_loop(x[:, :, None], SOBEL, (1, 1)), 2, 1)  # (t, K, z, y, x)
    np.testing.assert_array_equal(array[...], expected.astype(np.float32))
    assert stored_objects(tmp_path / "out.zarr") == expected_keys(array.shape, array.shards)


@pytest.mark.parametrize(
    "shape",
    [
        (1000, 2048, 2048),  # whole frames per block: shards of many frames
        (50, 8192, 8192),  # tiled frames: shards of whole frames
        (1, 65536, 65536),  # one large image: shards of rows of tiles
    ],
)
def test_auto_shards_hold_about_a_gibibyte_of_whole_blocks(shape) -> None:
    stored = (1, 1024, 1024)
    g = plan_geometry(shape, stored, 2, 4, None, (3, 3), 2, (1, 1), "magnitude")
    shards = auto_shards(g, 4)
    size = math.prod(shards) * 4
    assert AUTO_SHARD_BYTES / 2 < size <= AUTO_SHARD_BYTES
    assert all(s % c[0] == 0 for s, c in zip(shards, g.output_chunks))
    small = plan_geometry((3, 2048, 2048), stored, 2, 4, None, (3, 3), 2, (1, 1), "magnitude")
    assert auto_shards(small, 4) == (1, 2046, 2046)  # capped by the output, one block per shard


@st.composite
def layouts(draw):
    frames, h, w = draw(st.integers(1, 6)), draw(st.integers(5, 70)), draw(st.integers(5, 70))
    k, s = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    chunks = (draw(st.integers(1, 40)), draw(st.integers(1, 40)))
    stored = (draw(st.integers(1, frames)), 16, 16)
    g = plan_geometry((frames, h, w), stored, 1, 4, None, (k, k), 1, (s, s), "magnitude", spatial_chunks=chunks)
    factors = [draw(st.integers(1, 4)) for _ in g.zarr_chunks]
    return g, tuple(c * f for c, f in zip(g.zarr_chunks, factors))


@given(layouts())
@settings(max_examples=200, deadline=None)
def test_enlarged_blocks_cover_whole_shards_and_keep_the_output(layout) -> None:
    g, shards = layout
    enlarged = blocks_of_whole_shards(g, shards)
    assert enlarged.output_shape == g.output_shape
    assert enlarged.zarr_chunks == g.zarr_chunks
    for sizes, shard, n in zip(enlarged.output_chunks, shards, g.output_shape):
        edges = np.cumsum(sizes)
        assert all(edge % shard == 0 for edge in edges[:-1]) and edges[-1] == n
    for axis, k, s in zip(enlarged.spatial_axes, enlarged.kernel_shape, enlarged.stride):
        chunks = enlarged.input_chunks[axis]
        assert all(c % s == 0 for c in chunks[:-1]) and min(chunks) >= k  # what map_overlap needs


# --------------------------------------------------------------------------- no shard is ever read back while written


def test_each_shard_is_stored_once_and_never_read_back(tmp_path: Path) -> None:
    """What the store sees during the writes: one ``set`` per shard, and no read of a stored shard.

    (zarr-python 3.1 asks for a shard before every write to it, even a whole
    one; on a new output that finds nothing. A shard written in parts by two
    tasks would be set twice, the second time after reading the first part back.)
    """
    x = sample_stack(3, 70, 90)
    g = plan_geometry(x.shape, (1, 16, 16), 1, 4, None, (3, 3), 2, (1, 1), "magnitude", spatial_chunks=(16, 16))
    shards = (2, 32, 48)
    enlarged = blocks_of_whole_shards(g, shards)
    calls: list[tuple[str, str]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            match = re.fullmatch(r" Calling LocalStore\.(get|set)\((c/[\d/]+)\)", record.getMessage())
            if match:
                calls.append((match[1], match[2]))

    store = zarr.storage.LoggingStore(zarr.storage.LocalStore(tmp_path / "o.zarr"))
    store.logger.addHandler(Collect())  # beside any handler already there (pytest's)
    target = zarr.create_array(store, shape=g.output_shape, chunks=g.zarr_chunks, shards=shards, dtype="float32")
    stack = da.from_array(x, chunks=enlarged.input_chunks)
    tokens = write_tasks(result_array(stack, enlarged, SOBEL, "float32"), target)
    assert tokens.npartitions > 1
    dask.compute(tokens, scheduler="threads")

    def read_after_stored(calls: list[tuple[str, str]]) -> list[str]:
        stored: set[str] = set()
        found = []
        for method, key in calls:
            if method == "get" and key in stored:
                found.append(key)
            if method == "set":
                stored.add(key)
        return found

    writes = list(calls)
    sets = [key for method, key in writes if method == "set"]
    assert sorted(sets) == expected_keys(g.output_shape, shards)  # every shard once
    assert not read_after_stored(writes)
    np.testing.assert_allclose(target[...], magnitude(correlate_loop(x[:, None], SOBEL, (1, 1))), rtol=1e-6)

    calls.clear()
    target[0, :16, :16] = 0  # the probe sees a read-modify-write: a second write to part of a stored shard
    assert read_after_stored(writes + calls) == ["c/0/0/0"]


def test_write_tasks_refuse_blocks_that_split_a_shard(tmp_path: Path) -> None:
    result = da.zeros((4, 10, 10), chunks=(1, 10, 10), dtype="float32")
    target = zarr.create_array(tmp_path / "o.zarr", shape=(4, 10, 10), chunks=(1, 10, 10), shards=(2, 10, 10),
                               dtype="float32")
    with pytest.raises(ValueError, match="not aligned"):
        write_tasks(result, target)


# --------------------------------------------------------------------------- readers


def test_zarr_xarray_dask_and_napari_read_a_sharded_output(tmp_path: Path) -> None:
    _, out = sharded_run(tmp_path, (4, 64, 80), (2, 64, 80), chunks=(32, 40))
    expected = read_output(out)
    assert not np.isnan(expected).any()
    array = zarr.open_array(str(out / "0"), mode="r")
    assert array.shards == (2, 64, 80) and array.chunks == (1, 32, 40)
    np.testing.assert_array_equal(array[1:3, 10:40, 5:70], expected[1:3, 10:40, 5:70])  # reads across shards

    dataset = xr.open_zarr(out)
    assert dataset["0"].dims == ("t", "y", "x")
    np.testing.assert_array_equal(dataset["0"].values, expected)
    np.testing.assert_array_equal(da.from_zarr(str(out), component="0").compute(), expected)

    napari_ome_zarr = pytest.importorskip("napari_ome_zarr")
    [(data, metadata, kind)] = napari_ome_zarr.napari_get_reader(str(out))(str(out))
    assert kind == "image" and metadata["axis_labels"] == ("t", "y", "x")
    [level] = data
    np.testing.assert_array_equal(np.asarray(level), expected)


# --------------------------------------------------------------------------- interrupted runs


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return shared_stack(tmp_path_factory, BIG_SHAPE)


def test_sigkill_then_resume_gives_the_bytes_of_an_uninterrupted_sharded_run(tmp_path: Path, big: Stack) -> None:
    out, whole = tmp_path / "out.zarr", tmp_path / "whole.zarr"
    config = run_config(big.input, out)
    config["output"]["shards"] = [1, 32, 64]
    config_path = write_yaml(tmp_path / "run.yaml", config)
    blocks = convpipe.plan(config_path).geometry.n_tasks
    with running(start_convpipe(["run", config_path, "--quiet"], tmp_path / "logs")) as proc:
        wait_for_markers(out, 10, proc)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    recorded = BlockRecorder(str(out)).done()
    assert 0 < len(recorded) < blocks, "the run was not killed in the middle"

    result = invoke("run", config_path, "--resume")
    assert result.exit_code == 0, result.output
    assert resumed_counts(result.stderr) == (blocks - len(recorded), blocks)
    assert_same_bytes(read_output(out), big.reference)  # the unsharded run's values

    convpipe.run(config | {"output": config["output"] | {"path": str(whole)}}, progress=False)
    keys = stored_objects(whole)
    assert stored_objects(out) == keys
    for key in keys:  # every shard file byte for byte as an uninterrupted run writes it
        assert (out / "0" / key).read_bytes() == (whole / "0" / key).read_bytes(), key


# --------------------------------------------------------------------------- sharded inputs


def sharded_input(path: Path, x: np.ndarray) -> None:
    group = zarr.open_group(str(path), mode="w")
    array = group.create_array("0", shape=x.shape, chunks=(1, 32, 40), shards=(2, 64, 80), dtype=x.dtype,
                               dimension_names=["t", "y", "x"])
    array[...] = x


def test_a_sharded_input_gives_the_same_output_and_resume_checks_its_shards(tmp_path: Path) -> None:
    x = sample_stack(8, 64, 80)
    source = tmp_path / "in.zarr"
    sharded_input(source, x)
    out = tmp_path / "out.zarr"
    interrupted_run(source, out, recorded=1, chunks=(32, 80))  # blocks of one frame, two frames per shard
    [block] = BlockRecorder(str(out)).done()
    frame = block[0]
    shard = f"c/{frame // 2}/0/0"
    assert set(BlockRecorder(str(out)).read_all({block})[block].inputs) == {shard}  # identities are the shards'

    config_path = make_config(tmp_path / "run.yaml", source, out, chunks=(32, 80))
    neighbour = frame ^ 1  # the other frame of that shard: a chunk the block never read (nor the fingerprint)
    region = (neighbour, slice(32, 64), slice(0, 40))
    zarr.open_group(str(source), mode="r+")["0"][region] = x[region] // 2
    refused = invoke("run", config_path, "--resume")
    assert_user_error(refused, f"input chunk {shard}", "changed after block")

    zarr.open_group(str(source), mode="r+")["0"][region] = x[region]  # the same bytes again, a new identity
    assert invoke("run", config_path, "--overwrite").exit_code == 0
    expected = magnitude(correlate_loop(x[:, None], SOBEL, (1, 1)))
    np.testing.assert_allclose(read_output(out), expected.astype(np.float32), rtol=1e-6)


# --------------------------------------------------------------------------- mistakes

PREFIX = "input:\n  path: in.zarr\nkernels: sobel\ncombine: magnitude\noutput:\n  path: out.zarr\n"  # lines 1-6

BAD = {
    "zarr2": (PREFIX + "  format: zarr2\n  shards: [1, 30, 38]\n", 8, ("output.shards", "needs output.format: zarr3")),
    "not-a-multiple": (PREFIX + "  shards: [1, 31, 38]\n", 7, ("output.shards", "not a multiple", "[1, 30, 38]")),
    "wrong-length": (PREFIX + "  shards: [30, 38]\n", 7, ("output.shards", "has 2 entries", "3 axes (t, y, x)")),
    "zero": (PREFIX + "  shards: [0, 30, 38]\n", 7, ("output.shards", "positive integers", "[0, 30, 38]")),
    "word": (PREFIX + "  shards: big\n", 7, ("output.shards", "null, auto, or a list", "'big'")),
    "empty": (PREFIX + "  shards: []\n", 7, ("output.shards", "one per output axis")),
}


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_bad_shards_are_one_line_naming_the_yaml_line(sample_zarr: Path, command: str, case) -> None:
    text, line, fragments = case
    config = sample_zarr.parent / "bad.yaml"
    config.write_text(text, encoding="utf-8")
    message = assert_user_error(invoke(command, config), *fragments)
    assert message.startswith(f"{config}:{line}: output.shards: "), message
    assert not (sample_zarr.parent / "out.zarr").exists()


def test_shards_too_large_for_memory_are_refused_naming_the_key(tmp_path: Path) -> None:
    source = tmp_path / "in.zarr"  # metadata only: nothing stored, nothing read beyond a few missing chunks
    zarr.open_group(str(source), mode="w").create_array(
        "0", shape=(64, 16384, 16384), chunks=(1, 4096, 4096), dtype="uint16", dimension_names=["t", "y", "x"]
    )
    g = convpipe.plan(run_config(source, tmp_path / "out.zarr", chunks=None)).geometry
    whole = [-(-n // c) * c for n, c in zip(g.output_shape, g.zarr_chunks)]  # the output in one shard
    config = write_yaml(tmp_path / "run.yaml", sharded_config(source, tmp_path / "out.zarr", whole, chunks=None))
    message = assert_user_error(invoke("validate", config), "output.shards", "or smaller output.shards")
    assert message.startswith(f"{config}:")
