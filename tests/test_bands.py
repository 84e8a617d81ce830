"""Wide frames run in column bands (convpipe.geometry.MAX_BAND_TILES tiles wide): the same bits as the formula.

Each band reads the first columns of the next band as its halo; the
expected output is ``numpy.pad`` + the direct loop (tests/reference.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from helpers import read_output
from reference import SOBEL, correlate_padded

import convpipe
from convpipe.geometry import MAX_BAND_TILES

TILE = 16
WIDTH = 18 * (2 * MAX_BAND_TILES + 3) + 5  # three bands of 16- or 18-wide tiles, the last one narrow, a ragged tile


def _input(path, shape=(2, 41, WIDTH)):
    data = np.random.default_rng(7).integers(0, 4096, size=shape).astype(np.uint16)
    zarr.create_array(str(path), data=data, chunks=(1, 24, 24), dimension_names=["t", "y", "x"])
    return data


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"stride": [2, 3]},
        {"padding": "same"},
        {"padding": [1, 2, 3, 4], "padding_mode": "circular"},
        {"padding": "same", "padding_mode": "reflect", "stride": 2, "dilation": [1, 2]},
        {"combine": "none", "dilation": 2, "padding_mode": "replicate", "padding": 2},
    ],
    ids=["valid", "stride", "same", "circular", "reflect-dilated", "none-replicate"],
)
def test_a_frame_wider_than_a_band_gives_the_formula(tmp_path, options):
    data = _input(tmp_path / "in.zarr")
    config = {
        "input": {"path": str(tmp_path / "in.zarr")},
        "kernels": "sobel",
        "combine": "magnitude",
        "output": {"path": str(tmp_path / "out.zarr"), "dtype": "float64"},
        "compute": {"chunks": [TILE, TILE]},
        **options,
    }
    plan = convpipe.plan(config)
    circular = options.get("padding_mode") == "circular"  # wraps whole rows: one band
    assert len(plan.geometry.slabs()) == 2 if circular else len(plan.geometry.slabs()) >= 2 * 3
    convpipe.run(plan, progress=False)
    g = plan.geometry
    responses = correlate_padded(data, SOBEL, g.stride, g.dilation, g.padding, g.padding_mode)
    want = responses if g.combine == "none" else np.sqrt((responses**2).sum(axis=-3))
    got = read_output(tmp_path / "out.zarr")
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)


def test_bands_give_the_bits_of_the_whole_frame(tmp_path):
    """The banded run and the Python API on the whole array (one graph, no bands) agree bit for bit."""
    data = _input(tmp_path / "in.zarr", (1, 30, WIDTH))
    config = {
        "input": {"path": str(tmp_path / "in.zarr")},
        "kernels": "scharr",
        "stride": [1, 2],
        "combine": "magnitude",
        "output": {"path": str(tmp_path / "out.zarr")},
        "compute": {"chunks": [TILE, TILE]},
    }
    convpipe.run(config, progress=False)
    whole = convpipe.correlate(data, "scharr", stride=(1, 2), combine="magnitude")
    np.testing.assert_array_equal(read_output(tmp_path / "out.zarr"), whole)
