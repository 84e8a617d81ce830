"""Edges of an image stack in a notebook: xarray + Dask in, a thresholded edge mask out, all lazy.

Usage: python workflows/edges_in_a_notebook.py [INPUT.zarr] [OUTPUT.zarr]

    INPUT.zarr   a Zarr group holding a (t, y, x) array "0" (default: the
                 repository's data/sample.zarr)
    OUTPUT.zarr  where the edge mask goes (default: out/edge-mask.zarr);
                 replaced if it exists

Each step is what one would type in a notebook cell: open the stack lazily as
a DataArray, take the Sobel edge magnitude with ``convpipe.correlate`` (no
compute yet), threshold it at a fraction of each frame's largest edge, and
write the mask to Zarr, where ``xarray.open_zarr`` finds it with its
coordinates. Only the last step reads the input.
"""

from __future__ import annotations

import sys
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr

import convpipe

REPO = Path(__file__).resolve().parents[1]
THRESHOLD = 0.25
"""A pixel is an edge where the magnitude exceeds this fraction of its frame's maximum."""


def main(input_path: Path, output_path: Path) -> None:
    pixels = da.from_zarr(str(input_path), component="0")
    stack = xr.DataArray(
        pixels,
        dims=("t", "y", "x"),
        coords={"t": np.arange(pixels.shape[0]), "y": np.arange(pixels.shape[1]), "x": np.arange(pixels.shape[2])},
        name="image",
    )

    edges = convpipe.correlate(stack, "sobel", combine="magnitude")  # lazy, exact, float32
    mask = edges > THRESHOLD * edges.max(dim=("y", "x"))  # still lazy
    mask.name = "edges"

    mask.to_dataset().to_zarr(str(output_path), mode="w", consolidated=False)  # the only compute
    fraction = xr.open_zarr(str(output_path), consolidated=False)["edges"].mean(dim=("y", "x")).values
    print(f"edge mask {mask.shape} written to {output_path}")
    print("edge pixels per frame: " + ", ".join(f"{f:.1%}" for f in fraction))


if __name__ == "__main__":
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "data" / "sample.zarr"
    target = Path(sys.argv[2]) if len(sys.argv) > 2 else REPO / "out" / "edge-mask.zarr"
    main(source, target)
