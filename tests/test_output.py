"""The written output: readable without convpipe, with names, chunks and provenance."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr
from helpers import run_config
from reference import SOBEL, correlate_loop, magnitude

import convpipe
from convpipe.sample import sample_stack, write_sample


def run(tmp_path, frames=3, height=40, width=50, chunks=None, **options):
    """``convpipe.run`` of ``helpers.run_config`` on a sample stack (sobel, whole frames by default)."""
    source = tmp_path / "in.zarr"
    if not source.exists():
        write_sample(str(source), frames, height, width)
    out = tmp_path / "out.zarr"
    convpipe.run(run_config(source, out, chunks=chunks, **options), progress=False)
    return out, sample_stack(frames, height, width)


def sobel_reference(x, stride=(1, 1)):
    return correlate_loop(x[:, None], SOBEL, stride)


def test_magnitude_output_reads_back_with_zarr_dask_and_xarray(tmp_path):
    out, x = run(tmp_path, chunks=(16, 16))
    expected = magnitude(sobel_reference(x)).astype(np.float32)

    array = zarr.open_group(out, mode="r")["0"]
    assert array.metadata.zarr_format == 3
    assert array.metadata.dimension_names == ("t", "y", "x")
    np.testing.assert_allclose(array[:], expected, rtol=1e-6)

    lazy = da.from_zarr(str(out), component="0")
    np.testing.assert_array_equal(lazy.compute(), array[:])

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = xr.open_zarr(out)  # as a user types it: consolidated metadata is there
    assert dataset["0"].dims == ("t", "y", "x")
    np.testing.assert_array_equal(dataset["0"].values, array[:])


def test_combine_none_has_a_kernel_axis_and_is_exact(tmp_path):
    out, x = run(tmp_path, combine="none", stride=2, chunks=(10, 12))
    array = zarr.open_group(out, mode="r")["0"]
    assert array.metadata.dimension_names == ("t", "c", "y", "x")
    np.testing.assert_array_equal(array[:], sobel_reference(x, (2, 2)).astype(np.float32))


def test_zarr_chunks_match_the_dask_blocks(tmp_path):
    out, _ = run(tmp_path, combine="none", stride=2, chunks=(10, 12))
    array = zarr.open_group(out, mode="r")["0"]
    assert array.chunks == (1, 2, 5, 6)  # one frame per chunk, as the input stores it


def test_provenance_attributes(tmp_path):
    out, _ = run(tmp_path, stride=(1, 2))
    record = zarr.open_group(out, mode="r")["0"].attrs["convpipe"]
    assert record["complete"] is True
    assert record["stride"] == [1, 2]
    assert record["combine"] == "magnitude"
    assert record["kernels"]["names"] == ["sobel-x", "sobel-y"]
    assert np.array(record["kernels"]["weights"]).shape == (2, 1, 3, 3)
    assert record["input"]["shape"] == [3, 40, 50]
    assert record["input"]["path"].endswith("in.zarr")
    assert record["config"]["output"]["dtype"] == "float32"
    assert record["version"]


def test_ome_metadata_scale_reflects_the_stride(tmp_path):
    out, _ = run(tmp_path, combine="none", stride=(2, 3))
    ome = zarr.open_group(out, mode="r").attrs["ome"]
    assert ome["version"] == "0.5"
    multiscale = ome["multiscales"][0]
    assert [a["name"] for a in multiscale["axes"]] == ["t", "c", "y", "x"]
    assert [a["type"] for a in multiscale["axes"]] == ["time", "channel", "space", "space"]
    scale = multiscale["datasets"][0]["coordinateTransformations"][0]
    assert (scale["type"], scale["scale"]) == ("scale", [1.0, 1.0, 2.0, 3.0])
    assert [c["label"] for c in ome["omero"]["channels"]] == ["sobel-x", "sobel-y"]


def test_float64_output(tmp_path):
    out, x = run(tmp_path, dtype="float64", combine="none")
    array = zarr.open_group(out, mode="r")["0"]
    assert array.dtype == np.float64
    np.testing.assert_array_equal(array[:], sobel_reference(x))


@pytest.mark.parametrize("scheduler", ["synchronous", "processes"])
def test_other_local_schedulers_give_the_same_bits(tmp_path, scheduler):
    out, _ = run(tmp_path / "a", chunks=(16, 16), scheduler=scheduler)
    reference, _ = run(tmp_path / "b", chunks=(16, 16))
    a = zarr.open_group(out, mode="r")["0"][:]
    b = zarr.open_group(reference, mode="r")["0"][:]
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("frames", [1, 6], ids=["one-slab", "several-slabs"])
def test_threads_scheduler_uses_every_thread_even_for_a_single_slab(tmp_path, monkeypatch, frames):
    """One large image is a single slab: its tiles still run on every thread, with the same bits."""
    import threading
    import time

    import convpipe.pipeline

    threads = set()
    core = convpipe.pipeline.correlate_block

    def recording_core(*args, **kwargs):
        threads.add(threading.get_ident())
        time.sleep(0.02)  # long enough for the other thread to pick up a task
        return core(*args, **kwargs)

    monkeypatch.setattr(convpipe.pipeline, "correlate_block", recording_core)
    monkeypatch.setattr("convpipe.execution.local_threads", lambda: 2)
    out, x = run(tmp_path, frames=frames, height=64, width=64, chunks=(16, 16))
    assert len(threads) == 2
    expected = magnitude(sobel_reference(x)).astype(np.float32)
    np.testing.assert_allclose(zarr.open_group(out, mode="r")["0"][:], expected, rtol=1e-6)
