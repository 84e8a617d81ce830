"""``workflows/edges_in_a_notebook.py`` runs as written and writes the mask its steps describe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr
import zarr
from reference import correlate_scipy, magnitude

from convpipe.sample import write_sample

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "workflows" / "edges_in_a_notebook.py"


def test_notebook_recipe_writes_the_thresholded_sobel_magnitude(tmp_path: Path) -> None:
    source, target = tmp_path / "in.zarr", tmp_path / "mask.zarr"
    write_sample(str(source), frames=3, height=40, width=50)
    result = subprocess.run(
        [sys.executable, str(WORKFLOW), str(source), str(target)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "edge pixels per frame" in result.stdout

    frames = zarr.open_group(str(source), mode="r")["0"][...]
    sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
    bank = np.stack([sobel_x, sobel_x.T])[:, None]
    want = magnitude(correlate_scipy(frames[:, None], bank, (1, 1)))
    want_mask = want > 0.25 * want.max(axis=(-2, -1), keepdims=True)

    mask = xr.open_zarr(str(target), consolidated=False)["edges"]
    assert mask.dims == ("t", "y", "x") and mask.dtype == bool
    np.testing.assert_array_equal(mask["y"].values, np.arange(1, 39))  # window centres of a 3x3 kernel
    disagree = mask.values != want_mask
    assert disagree.mean() < 1e-3  # only pixels within float32 rounding of the threshold may differ
    assert mask.values.any() and not mask.values.all()
